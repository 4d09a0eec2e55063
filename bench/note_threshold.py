"""The note reader's onset threshold: onset F1 of a split's reading at several thresholds.

    python bench/note_threshold.py --data CORPUS --model RUN_OR_NAME [--split valid]
                                   [--thresholds 0.2,0.3,0.4,0.5,0.6] [--threads 2] [--json OUT]

Each system's WAV is read once by the note reader (as `umust train note-reader` validates:
the corpus's audio at the reader's sample rate through its front end) and its rolls decoded at
each threshold (``data.roll.roll_notes``); pooled onset precision, recall and F1 at 50 ms
against the system's MIDI (mir_eval, offsets ignored). The shipped reader's
``onset_threshold`` (its config) is the valid split's best here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from umust_cli import registry  # noqa: E402
from umust_cli.data.roll import roll_notes  # noqa: E402
from umust_cli.eval.metrics import MatchConfig, Notes, match_counts, pooled_prf  # noqa: E402
from umust_cli.train.note_reader import split_note_data  # noqa: E402
from umust_cli.translate.engines import load_note_reader  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_note_reader(registry.resolve("note-reader", args.model)).eval()
    data = split_note_data(args.data, args.split, model)
    with torch.no_grad():
        probs = [tuple(torch.sigmoid(t[0]).numpy() for t in model(torch.from_numpy(m.astype(np.float32))[None]))
                 for m in data.mels]
    rows, match = [], MatchConfig(offset_ratio=None)
    for th in (float(t) for t in args.thresholds.split(",")):
        counts = []
        for (onset, frame), ref in zip(probs, data.notes):
            est = roll_notes(onset, frame, onset_threshold=th, frame_seconds=model.cfg.frame_seconds)
            counts.append(match_counts(Notes.from_arrays([n.start for n in est], [n.end for n in est],
                                                         [n.pitch for n in est]), ref, match))
        p, r, f = pooled_prf(counts)
        rows.append({"threshold": th, "onset_precision": round(p, 4), "onset_recall": round(r, 4),
                     "onset_f1": round(f, 4)})
        print(json.dumps(rows[-1]))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "systems": len(probs), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
