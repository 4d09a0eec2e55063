"""Check a corpus's sub-system alignment (``systems/NNN.align.json``) against its own files.

    python bench/alignment.py CORPUS [--every 1] [--out results.json]

For every system (or every N-th): how many aligned onsets it has; how far each aligned
time (``score_s / tempo_factor - start``) is from the nearest onset of the system's
performed MIDI (which carries 10 ms onset jitter); what share of the MIDI's onsets have an
aligned point within 50 ms; and whether the aligned x positions sit on noteheads: the
dark pixels per column in the 8 columns right of each x, over the image's mean per column
(and the same 14-22 px further right, between noteheads, for contrast).
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def system_checks(corpus: Path, row: dict) -> dict:
    import pretty_midi
    from PIL import Image

    from umust_cli.data.align import row_alignment

    a = row_alignment(dict(row, root=str(corpus)))
    t = a.performance_times(row)
    midi = pretty_midi.PrettyMIDI(str(corpus / row["mid"]))
    onsets = np.array(sorted(n.start for inst in midi.instruments for n in inst.notes))
    image = np.asarray(Image.open(corpus / row["png"]).convert("L"))
    dark = (image < 128).sum(axis=0).astype(float)
    if len(t) == 0 or len(onsets) == 0:
        return {"points": len(t), "midi_onsets": len(onsets)}
    return {
        "points": len(t), "midi_onsets": len(onsets),
        "errors_s": np.abs(t[:, None] - onsets[None, :]).min(axis=1).tolist(),
        "covered": float((np.abs(onsets[:, None] - t[None, :]).min(axis=1) < 0.05).mean()),
        "ink_at": float(np.mean([dark[int(x): int(x) + 8].mean() for x in a.x]) / dark.mean()),
        "ink_beside": float(np.mean([dark[int(x) + 14: int(x) + 22].mean() for x in a.x]) / dark.mean()),
    }


def summary(checks: list[dict]) -> dict:
    scored = [c for c in checks if "errors_s" in c]
    errors = np.concatenate([c["errors_s"] for c in scored]) * 1000.0
    return {
        "systems": len(checks), "systems_without_points": len(checks) - len(scored),
        "points_per_system_mean": round(float(np.mean([c["points"] for c in checks])), 1),
        "time_error_ms_p50_p95_p99_max": [round(float(v), 1) for v in np.percentile(errors, [50, 95, 99, 100])],
        "points_within_50ms": round(float((errors < 50).mean()), 4),
        "midi_onsets_covered_mean_min": [round(float(np.mean([c["covered"] for c in scored])), 4),
                                         round(float(np.min([c["covered"] for c in scored])), 4)],
        "ink_ratio_at_x_mean_min": [round(float(np.mean([c["ink_at"] for c in scored])), 2),
                                    round(float(np.min([c["ink_at"] for c in scored])), 2)],
        "ink_ratio_beside_mean": round(float(np.mean([c["ink_beside"] for c in scored])), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--every", type=int, default=1, help="check every N-th system")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from umust_cli.data.corpus import read_manifest

    rows = read_manifest(args.corpus)[:: args.every]
    out = {"corpus": str(args.corpus), **summary([system_checks(args.corpus, r) for r in rows])}
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
