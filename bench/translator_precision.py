"""bf16 autocast vs fp32 for translator training on the CPU: loss after N steps and time per step.

Trains the same run (tiny preset by default, the fixture corpus of tests/test_translator_train.py,
random codes and tokens) twice, once per precision, and prints the mean training loss of the
last 10 steps and the seconds per step of each::

    python bench/translator_precision.py --steps 150 --preset tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_translator_train import make_corpus  # noqa: E402
from umust_cli.codecs.vocab import default_vocabulary  # noqa: E402
from umust_cli.data.pairs import parse_tasks  # noqa: E402
from umust_cli.train.engine import RunOptions, read_log  # noqa: E402
from umust_cli.train.translator import TrainConfig, train_translator  # noqa: E402


def run(corpus: Path, out: Path, precision: str, args: argparse.Namespace) -> dict:
    cfg = TrainConfig(direction=args.direction, preset=args.preset, precision=precision, lr=args.lr,
                      tasks=parse_tasks(args.tasks, args.direction), batch_tokens=args.batch_tokens,
                      accum=args.accum, warmup_steps=20, decay_steps=args.steps, codebook_init=False)
    opts = RunOptions(max_steps=args.steps, save_every=10 ** 6, device="cpu", progress=False)
    t0 = time.perf_counter()
    train_translator(corpus, out, cfg, opts, default_vocabulary())
    seconds = time.perf_counter() - t0
    rows = [r for r in read_log(out) if "eval" not in r and "loss" in r]
    last = rows[-10:]
    return {"precision": precision, "steps": len(rows), "final_loss": round(sum(r["loss"] for r in last) / len(last), 4),
            "s_per_step": round(seconds / len(rows), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--direction", default="i2a")
    p.add_argument("--tasks", default="omr,midi2audio,image2audio@0:0")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "corpus")
        for precision in ("fp32", "bf16"):
            print(json.dumps(run(corpus, Path(tmp) / precision, precision, args)), flush=True)


if __name__ == "__main__":
    main()
