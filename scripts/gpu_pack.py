"""Pack a carryable training set for the codecs out of a built corpus (device calls carry <= 64 MiB).

    python scripts/gpu_pack.py CORPUS OUT [--audio-hours 1.1] [--image-mb 16] [--seed 0]

The corpus WAVs (5 h of train audio, 2 GB) cannot travel to a GPU machine, and it has no
FluidSynth or Verovio to rebuild them. This draws a random subset of the *train* split:
system PNGs copied as they are into OUT/images/, and system audio re-encoded as Ogg Opus
(48 kHz, about 58 kbit/s, waveform SNR about 24 dB) into OUT/audio/. Both trainers read
plain folders (every 50th file becomes validation). Held-out repertoire is refused.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

OPUS_RATE, OPUS_LEVEL = 48000, 0.8


def train_rows(corpus: Path) -> list[dict]:
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == "train"]
    for r in rows:
        if "beethoven" in str(r.get("source", "")).lower():
            raise SystemExit(f"held-out repertoire in the train split: {r['source']}")
    return rows


def to_opus(job: tuple[str, str]) -> int:
    import soundfile as sf
    import soxr

    src, dst = job
    x, rate = sf.read(src, dtype="float32", always_2d=True)
    y = soxr.resample(x.mean(axis=1), rate, OPUS_RATE)
    sf.write(dst, y, OPUS_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    return Path(dst).stat().st_size


def pick(rows: list[dict], key, budget: float) -> list[dict]:
    chosen, total = [], 0.0
    for r in rows:
        if total >= budget:
            break
        chosen.append(r)
        total += key(r)
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--audio-hours", type=float, default=1.1)
    ap.add_argument("--image-mb", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    rows = train_rows(a.corpus)
    random.Random(a.seed).shuffle(rows)
    audio = pick([r for r in rows if r.get("wav")], lambda r: r["duration"] / 3600, a.audio_hours)
    images = pick(rows, lambda r: (a.corpus / r["png"]).stat().st_size / 2**20, a.image_mb)
    (a.out / "audio").mkdir(parents=True, exist_ok=True)
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    for r in images:
        shutil.copyfile(a.corpus / r["png"], a.out / "images" / f"{r['piece_id']}-{r['system']:03d}.png")
    jobs = [(str(a.corpus / r["wav"]), str(a.out / "audio" / f"{r['piece_id']}-{r['system']:03d}.ogg"))
            for r in audio]
    with ProcessPoolExecutor(a.workers) as pool:
        size = sum(pool.map(to_opus, jobs, chunksize=8))
    print(f"{len(images)} images, {len(audio)} audio files "
          f"({sum(r['duration'] for r in audio) / 3600:.2f} h, {size / 2**20:.1f} MiB) -> {a.out}")


if __name__ == "__main__":
    main()
