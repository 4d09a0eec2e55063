"""Benchmark the image (RQ-VAE) and audio (DAC) codecs: throughput and reconstruction quality.

    python bench/codecs.py --corpus CORPUS --throughput [--device cpu --device cuda] [--threads 2]
        [--images 24] [--audio-seconds 60] [--batch-size 8]
    python bench/codecs.py --corpus CORPUS --image-codec CKPT [--images 64] [--picture OUT.png]
    python bench/codecs.py --corpus CORPUS --audio-codec CKPT [--clips 16] [--no-transcribe]

Throughput uses *untrained* ``small`` presets (the shipped size): weights do
not change the amount of arithmetic, so the speed of a trained codec is the
same. Images are system PNGs of the corpus (any split); encoding includes
thresholding and padding and runs in batches of equal-shape images, as
``umust dataset tokenize`` does; decoding rebuilds the same systems from
their codes. Audio clips are the corpus's system WAVs.

Quality takes a checkpoint and held-out systems (valid + test splits):
image PSNR (dB, peak 255) and ink-pixel F1 of the reconstruction against the
codec's own input (thresholded at median - 20, original size), plus a picture
of inputs above their reconstructions; audio multi-scale mel distance and
SI-SDR, and the upper-bound row of U-MusT: note-onset F1 at 50/100/200 ms
between Transkun's transcriptions of the original and of the reconstruction.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELD_OUT = ("valid", "test")
TOLERANCES = (0.05, 0.1, 0.2)


def manifest(corpus: Path, splits: tuple[str, ...] | None, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows of the chosen splits, drawn with a fixed seed (all splits when None)."""
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if splits is None or r["split"] in splits]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[object, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------

def image_throughput(corpus: Path, device: str, n: int, batch_size: int) -> dict:
    """Systems a second: encode (preprocess + RQ-VAE + RVQ) and decode, small preset, untrained."""
    import torch

    from umust_cli.codecs.image import ImageCodec, load_gray, preprocess
    from umust_cli.model.rqvae import PRESETS, RQVAE

    torch.manual_seed(0)
    codec = ImageCodec(RQVAE(PRESETS["small"]), device)
    grays = [load_gray(corpus / r["png"]) for r in manifest(corpus, None, n)]
    codec.encode_batch(preprocess(grays[0])[None])  # warm-up (kernels, allocator)

    def encode() -> list[np.ndarray]:
        groups = defaultdict(list)
        for g in grays:
            p = preprocess(g)
            groups[p.shape].append(p)
        return [c for imgs in groups.values() for s in range(0, len(imgs), batch_size)
                for c in codec.encode_batch(np.stack(imgs[s:s + batch_size]))]

    def decode(grids: list[np.ndarray]) -> None:
        groups = defaultdict(list)
        for g in grids:
            groups[g.shape].append(g)
        with torch.inference_mode():
            for same in groups.values():
                for s in range(0, len(same), batch_size):
                    codes = torch.from_numpy(np.stack(same[s:s + batch_size])).to(device)
                    codec.model.decode_codes(codes).cpu()

    grids, t_enc = _timed(encode, device)
    _, t_dec = _timed(lambda: decode(grids), device)
    pixels = sum(g.size for g in grays)
    return {"systems": len(grays), "mean_size_px": [int(np.mean([g.shape[0] for g in grays])),
                                                    int(np.mean([g.shape[1] for g in grays]))],
            "batch_size": batch_size, "encode_systems_per_s": round(len(grays) / t_enc, 3),
            "decode_systems_per_s": round(len(grays) / t_dec, 3),
            "encode_mpx_per_s": round(pixels / t_enc / 1e6, 3),
            "train_systems_per_s_with_32_shifts": round(len(grays) / t_enc / 32, 4)}


def audio_throughput(corpus: Path, device: str, seconds: float) -> dict:
    """Seconds of audio a second: encode and decode system WAVs one by one, small preset, untrained."""
    import torch

    from umust_cli.codecs.audio import AudioCodec, load_audio
    from umust_cli.model.dac_codec import PRESETS, SAMPLE_RATE, build_generator

    torch.manual_seed(0)
    codec = AudioCodec(build_generator(PRESETS["small"].generator), device)
    clips, total = [], 0.0
    for r in manifest(corpus, None, 10_000):
        if total >= seconds:
            break
        clips.append(load_audio(corpus / r["wav"]))
        total += clips[-1].size / SAMPLE_RATE
    codec.encode_codes(clips[0][:SAMPLE_RATE])  # warm-up
    codes, t_enc = _timed(lambda: [codec.encode_codes(c) for c in clips], device)
    _, t_dec = _timed(lambda: [codec.decode_codes(c) for c in codes], device)
    return {"clips": len(clips), "audio_s": round(total, 2),
            "encode_audio_s_per_s": round(total / t_enc, 3), "decode_audio_s_per_s": round(total / t_dec, 3),
            "train_clips_audio_s_per_s_with_9_shifts": round(total / t_enc / 9, 4)}


def throughput(args) -> list[dict]:
    rows = []
    for device in args.device:
        if device.startswith("cuda") and not _cuda():
            rows.append({"device": device, "skipped": "no CUDA GPU on this machine"})
            continue
        row = {"device": device, "threads": _threads(), "weights": "untrained small presets (speed only)"}
        row["image"] = image_throughput(args.corpus, device, args.images, args.batch_size)
        row["audio"] = audio_throughput(args.corpus, device, args.audio_seconds)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------

def image_quality(corpus: Path, ckpt: Path, device: str, n: int, picture: Path | None) -> dict:
    """Mean PSNR and ink F1 of reconstructions of ``n`` held-out systems (+ a side-by-side PNG)."""
    from umust_cli.codecs.image import ImageCodec, load_gray, preprocess
    from umust_cli.eval.image_metrics import foreground_f1, psnr

    codec = ImageCodec.load(ckpt, device=device)
    rows, scores, shown = manifest(corpus, HELD_OUT, n), [], []
    for r in rows:
        gray = load_gray(corpus / r["png"])
        target = preprocess(gray)
        recon = codec.decode_grid(codec.encode_batch(target[None])[0])
        h, w = gray.shape
        target, recon = target[:h, :w], recon[:h, :w]
        scores.append((min(psnr(target, recon), 99.0), foreground_f1(target, recon)))
        if len(shown) < 4:
            shown.append((target, recon))
    if picture is not None:
        save_side_by_side(picture, shown)
    p, f = np.array(scores).T
    return {"checkpoint": str(ckpt), "systems": len(rows), "splits": list(HELD_OUT),
            "psnr_db": round(float(p.mean()), 3), "ink_f1": round(float(f.mean()), 4),
            "psnr_db_min": round(float(p.min()), 3), "ink_f1_min": round(float(f.min()), 4),
            "picture": str(picture) if picture else None}


def save_side_by_side(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Each input above its reconstruction, pairs stacked top to bottom with grey rules."""
    from PIL import Image

    from umust_cli.io import atomic_path

    width = max(a.shape[1] for a, _ in pairs)
    rule = np.full((6, width), 128, np.uint8)
    parts = []
    for a, b in pairs:
        for img in (a, b):
            parts.append(np.pad(img, ((0, 2), (0, width - img.shape[1])), constant_values=255))
        parts.append(rule)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(parts[:-1])).save(tmp)


def audio_quality(corpus: Path, ckpt: Path, device: str, n: int, transcribe: bool) -> dict:
    """Mel distance and SI-SDR of ``n`` held-out clips; Transkun onset F1 original vs reconstruction."""
    from umust_cli.codecs.audio import AudioCodec, load_audio
    from umust_cli.errors import AudioError
    from umust_cli.eval.audio_metrics import reconstruction_scores

    codec = AudioCodec.load(ckpt, device=device)
    scores, pairs = [], []
    for r in manifest(corpus, HELD_OUT, n):
        try:
            x = load_audio(corpus / r["wav"])
        except AudioError:
            continue
        y = codec.decode_codes(codec.encode_codes(x))[:x.size]
        scores.append(reconstruction_scores(x, y))
        pairs.append((x, y))
    out = {"checkpoint": str(ckpt), "clips": len(scores), "splits": list(HELD_OUT),
           "audio_s": round(sum(x.size for x, _ in pairs) / 44100, 2),
           "mel_distance": round(float(np.mean([s["mel_distance"] for s in scores])), 4),
           "si_sdr_db": round(float(np.mean([s["si_sdr"] for s in scores])), 3)}
    if transcribe:
        out["transkun_onset_f1"] = transkun_upper_bound(pairs, device)
    return out


def transkun_upper_bound(pairs: list[tuple[np.ndarray, np.ndarray]], device: str) -> dict:
    """Pooled note-onset F1 (pitch + onset) of transcribe(reconstruction) against transcribe(original)."""
    from umust_cli.eval.metrics import Notes, PrfCounts, onset_f1_at
    from umust_cli.eval.transcribe import TranscriberConfig, transcribe

    totals = {tol: [0, 0, 0] for tol in TOLERANCES}
    cfg, t0 = TranscriberConfig(device=device), time.perf_counter()
    for x, y in pairs:
        ref = Notes.from_pretty_midi(transcribe(x, 44100, cfg))
        est = Notes.from_pretty_midi(transcribe(np.clip(y, -1.0, 1.0), 44100, cfg))
        for tol, c in onset_f1_at(est, ref, TOLERANCES).items():
            totals[tol] = [totals[tol][0] + c.matched, totals[tol][1] + c.n_est, totals[tol][2] + c.n_ref]
    out = {}
    for tol, (m, e, r) in totals.items():
        p, rec, f = PrfCounts(m, e, r).prf()
        out[f"{int(tol * 1000)}ms"] = {"f1": round(f, 4), "precision": round(p, 4), "recall": round(rec, 4)}
    out["notes_in_originals"] = totals[TOLERANCES[0]][2]
    out["transcribe_s"] = round(time.perf_counter() - t0, 1)
    return out


# ---------------------------------------------------------------------------

def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus built by 'umust dataset build'")
    parser.add_argument("--throughput", action="store_true", help="time untrained small presets")
    parser.add_argument("--image-codec", type=Path, help="image codec checkpoint to score")
    parser.add_argument("--audio-codec", type=Path, help="audio codec checkpoint to score")
    parser.add_argument("--device", action="append", default=None, help="cpu / cuda (repeatable; default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--images", type=int, default=24, help="systems (throughput / image quality)")
    parser.add_argument("--audio-seconds", type=float, default=60.0, help="audio timed for throughput")
    parser.add_argument("--clips", type=int, default=16, help="held-out clips for audio quality")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--picture", type=Path, default=None, help="input vs reconstruction PNG")
    parser.add_argument("--no-transcribe", action="store_true", help="skip the Transkun upper-bound row")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.device = args.device or ["cpu"]
    if not (args.throughput or args.image_codec or args.audio_codec):
        parser.error("nothing to do: give --throughput, --image-codec and/or --audio-codec")

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result: dict = {"machine": machine(), "corpus": str(args.corpus)}
    if args.throughput:
        result["throughput"] = throughput(args)
    quality_device = args.device[0]
    if args.image_codec:
        result["image_quality"] = image_quality(args.corpus, args.image_codec, quality_device, args.images,
                                                args.picture)
    if args.audio_codec:
        result["audio_quality"] = audio_quality(args.corpus, args.audio_codec, quality_device, args.clips,
                                                not args.no_transcribe)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from umust_cli.io import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
