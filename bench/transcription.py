"""Transcription side by side: umust's note reader and the reference transcriber (Transkun) on the
same systems, in the same run, with the same threads: onset F1 and how fast.

    python bench/transcription.py --data CORPUS [--split test] [--limit 36] [--threads 1]
                                  [--note-reader NAME|PATH] [--engines note-reader,transkun] [--json OUT]

Each system's WAV goes through `umust translate`'s audio -> MIDI step of each engine (read from
the file at 44.1 kHz, as `translate` reads it) and is scored against the system's MIDI as
`umust eval amt` scores it (mir_eval: onset and pitch, offsets ignored; pooled over notes) at 50
and 100 ms. Speed: seconds of audio per wall second of the engine's step alone (reading the file
and scoring not counted), after one warm-up system per engine that is not timed. The systems are
the ones `umust eval amt --data CORPUS --split SPLIT --limit N` scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from umust_cli.eval.corpus import split_rows  # noqa: E402
from umust_cli.eval.metrics import Notes, onset_f1_at, pooled_prf  # noqa: E402
from umust_cli.inputs import load_midi  # noqa: E402
from umust_cli.translate import direct, symbolic  # noqa: E402
from umust_cli.translate.engines import Engines, RunConfig  # noqa: E402

STEPS = {"note-reader": direct.read_notes, "transkun": symbolic.transcribe_audio}
TOLERANCES = (0.05, 0.1)


def measure(name: str, rows: list[dict], engines: Engines) -> dict:
    """Onset P/R/F1 at TOLERANCES and seconds of audio per wall second of engine ``name``."""
    step, counts, audio_s, wall_s = STEPS[name], {t: [] for t in TOLERANCES}, 0.0, 0.0
    for i, row in enumerate([rows[0], *rows]):
        samples = symbolic.read_input(Path(row["root"], row["wav"]), "audio")
        start = time.perf_counter()
        midi = step(samples, engines)
        if i == 0:
            continue                                   # warm-up: loading the model, first-call costs
        wall_s += time.perf_counter() - start
        audio_s += len(samples) / symbolic.SAMPLE_RATE
        ref = Notes.from_pretty_midi(load_midi(Path(row["root"], row["mid"])))
        for tol, c in onset_f1_at(Notes.from_pretty_midi(midi), ref, TOLERANCES).items():
            counts[tol].append(c)
    scores = {f"onset_f1@{round(t * 1000)}": round(pooled_prf(c)[2], 4) for t, c in counts.items()}
    p, r, _ = pooled_prf(counts[0.05])
    return {"engine": name, "systems": len(rows), "audio_s": round(audio_s, 1), "wall_s": round(wall_s, 1),
            "x_realtime": round(audio_s / wall_s, 2), "onset_precision@50": round(p, 4),
            "onset_recall@50": round(r, 4), **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=36)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note-reader", default="auto")
    ap.add_argument("--engines", default="note-reader,transkun")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = split_rows(args.data, args.split, args.limit)
    engines = Engines(RunConfig(device="cpu", note_reader=args.note_reader))
    table = [measure(name, rows, engines) for name in args.engines.split(",")]
    for row in table:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "limit": args.limit, "threads": args.threads,
                                         "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
