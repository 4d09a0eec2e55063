"""The one reader of a built corpus: manifest rows, splits and the held-out check.

Used by the corpus builder's commands (stats, resynth, align, tokenize), the
trainers, eval and retrieval, so that a corpus is read, split and checked for
held-out repertoire the same way everywhere. A row is one system (see
``umust_cli.data.build``); paths in it are relative to the corpus folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from umust_cli.data import sources
from umust_cli.errors import BadInputError, HeldOutRepertoireError, InputNotFoundError

SPLITS = ("train", "valid", "test")
# Real scanned systems of the printed editions (umust_cli.data.realscans), each piece on the side of
# its corpus split; their rows live in REALSCAN_MANIFEST and are read only when one of these is asked for.
SCAN_SPLITS = ("realscan_train", "realscan_valid", "realscan_test")
MANIFEST = "manifest.jsonl"
REALSCAN_MANIFEST = "realscans.jsonl"
PIECES, DONE, PIECE_ROWS = "pieces", "done", "rows.jsonl"


def read_manifest(corpus: Path) -> list[dict]:
    """The rows of ``corpus``/manifest.jsonl, in file order; BadInputError for a missing folder or
    manifest and for a line that is not a JSON object (named as file:line)."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise InputNotFoundError(f"no such corpus folder: {corpus}")
    path = corpus / MANIFEST
    if not path.is_file():
        raise InputNotFoundError(f"{corpus} is not a built corpus (no {MANIFEST}); "
                                 "make one with 'umust dataset build'")
    return read_jsonl(path)


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of the non-blank lines of ``path``; BadInputError names file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read ({e})") from e
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}:{number}: not JSON: {e}") from e
        if not isinstance(row, dict):
            raise BadInputError(f"{path}:{number}: not a JSON object")
        out.append(row)
    return out


def finished_rows(corpus: Path) -> list[dict]:
    """The rows of the finished pieces of a corpus (``pieces/<id>/done``), in piece order:
    what manifest.jsonl holds once the build ends."""
    rows = []
    for done in sorted(Path(corpus, PIECES).glob(f"*/{DONE}")):
        rows.extend(read_jsonl(done.parent / PIECE_ROWS))
    return rows


def rows(corpus: Path, splits: Iterable[str] | None = None) -> list[dict]:
    """The rows of ``corpus`` in ``splits`` (None or empty: all of manifest.jsonl), in manifest order. A
    corpus still being built (no manifest yet, but pieces/) gives the rows of its finished pieces. The
    real-scan splits (SCAN_SPLITS) come from realscans.jsonl, after the others, only when named."""
    corpus = Path(corpus)
    wanted = check_splits(splits)
    if not (corpus / MANIFEST).is_file() and (corpus / PIECES).is_dir():
        found = finished_rows(corpus)
    else:
        found = read_manifest(corpus)
    if set(wanted) & set(SCAN_SPLITS) and (corpus / REALSCAN_MANIFEST).is_file():
        found = found + read_jsonl(corpus / REALSCAN_MANIFEST)
    return [r for r in found if not wanted or r.get("split") in wanted]


def system_rows(corpus: Path, splits: Iterable[str] | None = None) -> list[dict]:
    """:func:`rows`, each with ``root`` = the corpus folder (to find its files: ``Path(row["root"]) / row["png"]``),
    in (piece_id, system) order."""
    found = [dict(r, root=str(corpus)) for r in rows(corpus, splits)]
    return sorted(found, key=lambda r: (r["piece_id"], int(r["system"])))


def check_splits(splits: Iterable[str] | None) -> tuple[str, ...]:
    """``splits`` as a tuple; BadInputError for a name not in SPLITS or SCAN_SPLITS."""
    wanted = tuple(splits or ())
    unknown = sorted(set(wanted) - set(SPLITS) - set(SCAN_SPLITS))
    if unknown:
        raise BadInputError(f"unknown split(s) {', '.join(unknown)} (choose from {', '.join(SPLITS + SCAN_SPLITS)})")
    return wanted


def is_held_out(row: dict) -> bool:
    """Whether a row is held-out material without reading files (see :func:`check_training_rows`):
    marked so (``held_out``, as `umust dataset import` writes for test-only datasets), or held-out
    repertoire by its origin (``source``) under the rule of :mod:`umust_cli.data.sources`."""
    return bool(row.get("held_out")) or sources.origin_held_out_reason(str(row.get("source", ""))) is not None


def check_training_rows(rows: Iterable[dict], corpus: Path) -> None:
    """HeldOutRepertoireError when a row of ``corpus`` offered for training is held-out
    repertoire: by its origin, or by the composer record of its piece's score.musicxml."""
    seen: set[tuple[str, str]] = set()
    for row in rows:
        piece, origin = str(row.get("piece_id", "")), str(row.get("source", ""))
        if (piece, origin) in seen:
            continue
        seen.add((piece, origin))
        score = Path(corpus, PIECES, piece, "score.musicxml") if piece else None
        reason = "marked held_out" if row.get("held_out") else sources.origin_held_out_reason(origin, score)
        if reason:
            raise HeldOutRepertoireError(f"{corpus}: piece {piece or '?'} ({origin or 'unknown source'}) "
                                         f"is held-out test repertoire ({reason}) and cannot be trained on")
