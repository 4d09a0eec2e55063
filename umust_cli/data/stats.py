"""Counts of a built corpus: systems, pieces and hours of system audio per split."""

from __future__ import annotations

from pathlib import Path

from umust_cli.data.corpus import SPLITS, read_manifest


def corpus_stats(corpus: Path) -> dict:
    """{"splits": {split: {pieces, systems, hours}}, "total": {...}, "errors": n}."""
    rows = read_manifest(corpus)
    splits = {s: _counts([r for r in rows if r["split"] == s]) for s in SPLITS}
    for other in sorted({r["split"] for r in rows} - set(SPLITS)):
        splits[other] = _counts([r for r in rows if r["split"] == other])
    errors_path = Path(corpus) / "errors.jsonl"
    errors = 0
    if errors_path.is_file():
        errors = sum(1 for line in errors_path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {"splits": splits, "total": _counts(rows), "errors": errors}


def _counts(rows: list[dict]) -> dict:
    return {
        "pieces": len({r["piece_id"] for r in rows}),
        "systems": len(rows),
        "hours": sum(float(r["duration"]) for r in rows) / 3600.0,
    }
