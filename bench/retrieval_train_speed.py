"""Training throughput of the retrieval model: steps per second by preset, batch size and batch workers.

    python bench/retrieval_train_speed.py [--config paper] [--batch 32 --batch 64] [--workers 0 --workers 8]
        [--steps 30] [--device cuda] [--out speed.json]

Synthetic passages of the corpus's typical size (a 160 px system strip is about 730 px wide;
7.7 s of audio is 153 spectrogram frames) with random ink and spectra: the speed does not
depend on the content. Times (1) building one mini-batch with the training augmentations on
one CPU core, (2) the model's step on ``--device`` with batches made in advance, and (3) the
whole loop as `umust train retrieval --workers N` runs it. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_features(n: int, fcfg, seed: int = 0):
    import numpy as np

    from umust_cli.retrieval.data import PassageFeatures

    rng = np.random.default_rng(seed)
    widths = rng.integers(int(3.5 * fcfg.sheet_height), int(5.5 * fcfg.sheet_height), n)
    frames = rng.integers(90, 220, n)
    sheets = [(rng.random((fcfg.sheet_height, w)) < 0.1).astype(np.uint8) * 255 for w in widths]
    specs = [rng.uniform(0.0, 2.0, (92, t)).astype(np.float16) for t in frames]
    rows = [{"piece_id": f"p{i}", "system": 0} for i in range(n)]
    return PassageFeatures(sheets, specs, rows)


def timed_steps(model, optimizer, batches, cfg, device, steps: int) -> float:
    """Seconds per step over ``steps`` steps after 3 warm-up steps."""
    import torch

    from umust_cli.retrieval.train import train_step

    for _ in range(3):
        train_step(model, optimizer, next(batches), cfg.margin, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, next(batches), cfg.margin, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def measure(preset: str, batch: int, workers: list[int], steps: int, device) -> dict:
    import itertools

    import torch

    from umust_cli.model.retrieval import RetrievalModel
    from umust_cli.retrieval.train import (StepBatches, batches_from, features_for, sample_batch,
                                           train_config)

    cfg = train_config(preset, batch_size=batch, eq_knots=8, reverb_augment_s=1.0, eq_augment_db=18.0)
    fcfg = features_for(cfg.model)
    feats = synthetic_features(max(4 * batch, 256), fcfg)
    groups = [[i] for i in range(len(feats))]
    sample_batch(feats, groups, cfg, fcfg, 99)  # warm-up: first-time imports (scipy.signal)
    started = time.perf_counter()
    made = [sample_batch(feats, groups, cfg, fcfg, s) for s in range(8)]
    build_s = (time.perf_counter() - started) / len(made)
    torch.manual_seed(0)
    model = RetrievalModel(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    out = {"preset": preset, "batch": batch, "batch_build_s_one_core": round(build_s, 4),
           "model_step_s": round(timed_steps(model, optimizer, itertools.cycle(made), cfg, device, steps), 4)}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    for n in workers:
        data = StepBatches(feats, groups, cfg, fcfg)
        loop_s = timed_steps(model, optimizer, batches_from(data, 0, n, device.type == "cuda"), cfg, device, steps)
        out[f"loop_s_workers_{n}"] = round(loop_s, 4)
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper")
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--workers", type=int, action="append")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    device = torch.device(a.device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "runs": []}
    for batch in a.batch or [32]:
        results["runs"].append(measure(a.config, batch, a.workers or [0], a.steps, device))
        print(json.dumps(results["runs"][-1]), flush=True)
    text = json.dumps(results, indent=2)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
