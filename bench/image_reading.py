"""Pitch readers side by side on the image -> MIDI reading of a split, per collection and paired.

    python bench/image_reading.py --data CORPUS --pitch-reader small --pitch-reader RUN/best
                                  [--split valid] [--limit N] [--copy engraved|scan0] [--json OUT]

Each system image is read as `umust translate --via midi` reads it (``translate.direct.
image_to_midi``: the pitch reader's staves at their image columns, the key reader's key) by every
``--pitch-reader``, and scored against the system's MIDI as `umust eval amt --dtw
--onset-tolerance-ms 100` scores it (one DTW path, then onset + pitch within 100 ms, pooled over
notes), over the split and per collection (the piece id's first word). The first two readers are
compared system by system: how many systems each reads better, and a paired bootstrap of the
pooled F1's difference (10,000 resamples of systems, 95% interval). Valid is the split to choose
on; the test split is measured once, after the choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from umust_cli.codecs.image import load_gray  # noqa: E402
from umust_cli.eval.corpus import split_rows  # noqa: E402
from umust_cli.eval.metrics import Notes, PrfCounts, dtw_aligned, onset_f1_at, pooled_prf  # noqa: E402
from umust_cli.inputs import load_midi  # noqa: E402
from umust_cli.translate import direct  # noqa: E402
from umust_cli.translate.engines import Engines, RunConfig  # noqa: E402

TOLERANCE_S = 0.1
RESAMPLES = 10_000


def system_counts(gray: np.ndarray, ref: Notes, engines: Engines) -> PrfCounts:
    """Onset match counts of one system's image -> MIDI reading against its MIDI, after DTW."""
    gen = Notes.from_pretty_midi(direct.image_to_midi([gray], engines))
    return onset_f1_at(dtw_aligned(gen, ref), ref, [TOLERANCE_S])[TOLERANCE_S]


def paired(a: list[PrfCounts], b: list[PrfCounts], seed: int = 0) -> dict:
    """B's pooled F1 less A's, its 95% bootstrap interval over systems, and systems up / down."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(RESAMPLES):
        idx = rng.integers(0, len(a), len(a))
        diffs.append(pooled_prf([b[i] for i in idx])[2] - pooled_prf([a[i] for i in idx])[2])
    fa, fb = [c.prf()[2] for c in a], [c.prf()[2] for c in b]
    return {"change": round(pooled_prf(b)[2] - pooled_prf(a)[2], 4),
            "interval95": [round(float(np.percentile(diffs, q)), 4) for q in (2.5, 97.5)],
            "systems_up": sum(y > x for x, y in zip(fa, fb)), "systems_down": sum(y < x for x, y in zip(fa, fb))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--pitch-reader", action="append", required=True, help="NAME|PATH; give two to compare")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--copy", default="engraved", help="engraved, or a scanned-look copy (scan0)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = split_rows(args.data, args.split, args.limit)
    counts: dict[str, list[PrfCounts]] = {}
    for name in args.pitch_reader:
        engines = Engines(RunConfig(pitch_reader=name))
        counts[name] = []
        for row in rows:
            png = row["png"] if args.copy == "engraved" else row["scans"][int(args.copy.removeprefix("scan"))]
            gray = load_gray(Path(row["root"], png))
            counts[name].append(system_counts(gray, Notes.from_pretty_midi(load_midi(Path(row["root"], row["mid"]))),
                                              engines))
    out = {"split": args.split, "copy": args.copy, "systems": len(rows), "tolerance_ms": round(TOLERANCE_S * 1000)}
    for name, c in counts.items():
        groups = defaultdict(list)
        for row, x in zip(rows, c):
            groups[row["piece_id"].split("-")[0]].append(x)
        out[name] = {"all": round(pooled_prf(c)[2], 4),
                     **{g: round(pooled_prf(x)[2], 4) for g, x in sorted(groups.items())}}
    if len(args.pitch_reader) > 1:
        out["paired"] = paired(counts[args.pitch_reader[0]], counts[args.pitch_reader[1]])
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
