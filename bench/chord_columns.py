"""Which emissions of a staff's CTC reading sound as one chord? Rules side by side, per collection.

    python bench/chord_columns.py --data CORPUS [--split valid] [--pitch-reader NAME|PATH] [--json OUT]

The pitch reader writes a chord upwards, one note per CTC frame, and a column has CTC_FRAMES
(2) frames, so a chord of three or more notes in a staff runs on into the next column and its
notes would sound a column (0.12 s) apart. Each rule gives every emission an onset column; the
image -> MIDI reading made with it (the key reader's key, as `translate` reads it) is scored
against the system's MIDI like `umust eval amt --dtw --onset-tolerance-ms 100` (one DTW path,
onset + pitch within 100 ms), pooled over the split and per collection (the piece id's first
word). Rules:

* ``column``: every emission at its own column (before 7cdd5ed);
* ``rising-in-a-column``: rising emissions within one column of the group's first (7cdd5ed);
* ``back-to-back``: rising emissions in consecutive frames, no blank between (``translate.direct.
  chord_columns``, the shipped rule).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pretty_midi  # noqa: E402
import torch  # noqa: E402

from umust_cli.codecs.image import load_gray  # noqa: E402
from umust_cli.data import corpus as corpus_io  # noqa: E402
from umust_cli.eval.metrics import Notes, dtw_aligned, onset_f1_at, pooled_prf  # noqa: E402
from umust_cli.translate import direct  # noqa: E402
from umust_cli.translate.engines import Engines, RunConfig  # noqa: E402

TOLERANCE_S = 0.1


def column(staff) -> list[float]:
    return [float(int(pos)) for pos, _ in staff]


def rising_in_a_column(staff) -> list[float]:
    cols, first = column(staff), 0
    for j in range(1, len(staff) + 1):
        if j < len(staff) and cols[j] - cols[first] <= 1 and staff[j][1] > staff[j - 1][1]:
            continue
        cols[first:j] = [sum(cols[first:j]) / (j - first)] * (j - first)
        first = j
    return cols


RULES = {"column": column, "rising-in-a-column": rising_in_a_column, "back-to-back": direct.chord_columns}


def notes_of(reading: direct.Reading, rule) -> Notes:
    """The reading's struck notes (``direct.staff_notes``; tied continuations are not struck) with
    onsets by ``rule``, each held to its staff's next onset."""
    on, off, pitch = [], [], []
    for emissions in reading.staves:
        staff = [(s.position, s.pitch) for s in direct.staff_notes(emissions, reading.target, reading.fifths)
                 if not s.tied]
        cols = rule(staff)
        onsets = sorted(set(cols))
        following = dict(zip(onsets, onsets[1:] + onsets[-1:]))
        for col, (_, p) in zip(cols, staff):
            on.append(col * direct.COLUMN_SECONDS)
            off.append((following[col] + (following[col] == col)) * direct.COLUMN_SECONDS)
            pitch.append(p)
    return Notes.from_arrays(on, off, pitch)


def score(reading: direct.Reading, ref: Notes, rule):
    return onset_f1_at(dtw_aligned(notes_of(reading, rule), ref), ref, [TOLERANCE_S])[TOLERANCE_S]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--pitch-reader", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    engines = Engines(RunConfig(pitch_reader=args.pitch_reader))
    counts = {name: defaultdict(list) for name in RULES}
    for row in corpus_io.system_rows(args.data, [args.split]):
        gray = load_gray(args.data / row["png"])
        (pixel,), (fifths,) = direct.pixel_readings(engines, [gray]), direct.reader_keys(engines, [gray])
        reading = pixel._replace(fifths=fifths)
        ref = Notes.from_pretty_midi(pretty_midi.PrettyMIDI(str(args.data / row["mid"])))
        for name, rule in RULES.items():
            c = score(reading, ref, rule)
            counts[name]["all"].append(c)
            counts[name][row["piece_id"].split("-")[0]].append(c)
    out = {name: {group: {"systems": len(c), "F1": round(pooled_prf(c)[2], 4)} for group, c in sorted(by.items())}
           for name, by in counts.items()}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
