"""Benchmark the corpus builder on ../shared/corpora (Mozart, Joplin, Chopin kern scores).

    python bench/build_corpus.py [--limit 15] [--workers 2] [--out DIR]

Prints one JSON object: pieces built/failed, systems, hours of system audio,
wall time, systems per minute, audio hours per minute, and the time the whole
corpus would take at the measured rate. ``--limit`` picks pieces round-robin
from the three collections so a subset mixes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLLECTIONS = ("mozart-piano-sonatas", "joplin", "chopin-mazurkas")


def round_robin(groups: list[list], limit: int | None) -> list:
    """Items taken one per group in turn, at most ``limit``."""
    out, k = [], 0
    while any(k < len(g) for g in groups):
        out.extend(g[k] for g in groups if k < len(g))
        k += 1
    return out[:limit] if limit else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--limit", type=int, default=None, help="pieces (round-robin over the collections)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scan-copies", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="corpus folder (default: a temporary one, removed)")
    args = parser.parse_args()

    from umust_cli.data.build import BuildConfig, build_corpus
    from umust_cli.data.sources import find_sources

    folders = [args.corpora / c / "kern" for c in COLLECTIONS if (args.corpora / c / "kern").is_dir()]
    if not folders:
        sys.exit(f"no kern folders under {args.corpora}")
    everything = [find_sources([str(f)]) for f in folders]
    pieces = round_robin(everything, args.limit)
    out = args.out or Path(tempfile.mkdtemp(prefix="umust-bench-")) / "corpus"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    summary = build_corpus(pieces, out, BuildConfig(scan_copies=args.scan_copies), workers=args.workers)
    wall = time.perf_counter() - started
    total = sum(len(group) for group in everything)
    minutes = wall / 60.0
    print(json.dumps({
        "pieces_attempted": len(pieces), "pieces_built": summary.built, "pieces_failed": summary.failed,
        "pieces_already_done": summary.skipped, "systems": summary.systems,
        "audio_hours": round(summary.hours, 4), "wall_s": round(wall, 1), "workers": args.workers,
        "cpus": os.cpu_count(), "load_average_before": round(load_before, 2),
        "seconds_per_piece": round(wall / max(len(pieces), 1), 2),
        "systems_per_minute": round(summary.systems / minutes, 1),
        "audio_hours_per_minute": round(summary.hours / minutes, 4),
        "corpus_pieces": total,
        "extrapolated_full_corpus_minutes": round(minutes * total / max(len(pieces), 1), 1),
        "errors_file": str(out / "errors.jsonl") if args.out else None,
    }, indent=2))
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
