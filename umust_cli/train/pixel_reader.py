"""What the trainers of the readers share (``train.key_reader``, ``train.pitch_reader`` and, but for
the ink, ``train.note_reader``).

Each reads a corpus's systems into memory once, draws each step's batch as a pure function of
(seed, step) (so a resumed run sees what an uninterrupted run sees), the pixel readers jitter its
ink (a whole-batch move, per-image contrast and noise), and each trains one module with AdamW under the translator's
learning-rate schedule (``train.translator.lr_at``) on the one engine (``train.engine.fit``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli import checkpoint as ckpt_io
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError
from umust_cli.train.engine import ModelAndOptimizerState, RunOptions
from umust_cli.train.translator import lr_at


@dataclass(frozen=True)
class ReaderTrainConfig:
    """The fields every reader's TrainConfig has (each subclass adds ``model`` and its own)."""

    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    decay_steps: int = 4000
    min_lr_ratio: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.lr <= 0:
            raise BadInputError("--batch-size must be >= 1 and --lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> Any:
        model_cls = type(cls.__dataclass_fields__["model"].default_factory())
        rest = {k: v for k, v in obj.items() if k != "model"}
        return cls(model=model_cls.from_dict(obj.get("model") or {}), **rest)


def shift(ink: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, 1, H, W) ink moved down ``dy`` and right ``dx`` pixels; what comes in is blank paper."""
    h, w = ink.shape[-2:]
    padded = F.pad(ink, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def jitter(ink: torch.Tensor, rng: np.random.Generator, dy: int, dx: int) -> torch.Tensor:
    """``ink`` (B, 1, H, W) moved by (``dy``, ``dx``), each image's contrast scaled by 0.7-1.3 and
    Gaussian noise of up to 0.05 added (draws from ``rng``, in this order)."""
    ink = shift(ink, dy, dx)
    n = ink.shape[0]
    contrast = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal(ink.shape).astype(np.float32)) * 0.05
    noise *= torch.from_numpy(rng.uniform(0, 1, (n, 1, 1, 1)).astype(np.float32))
    return ink * contrast + noise


class ReaderTask(ModelAndOptimizerState):
    """A reader as a :class:`umust_cli.train.engine.Task`: a subclass sets ``name``, ``kind`` (its
    checkpoint kind) and ``grad_clip``, and gives ``make_batch(step)``, ``loss(batch)``,
    ``evaluate`` and ``score``."""

    name = "reader"
    kind = ""
    grad_clip: float | None = None

    def setup(self, build: Callable[[], torch.nn.Module], cfg: Any, run: RunOptions) -> None:
        """The run's device, then the model ``build`` makes under the config's seed, and its AdamW."""
        self.device = resolve_device(run.device)
        torch.manual_seed(cfg.seed)
        self.model = build().to(self.device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.cfg = cfg

    def batches(self, start: int) -> Iterator[Any]:
        return (self.make_batch(step) for step in count(start))

    def train_step(self, batch: Any, step: int) -> dict:
        lr = lr_at(self.cfg, step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self.loss(tuple(t.to(self.device) for t in batch))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        return {"loss": round(loss.item(), 5), "lr": lr}

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        train = self.cfg.to_dict()
        config = {"kind": self.kind, "format": 1, "step": step, "model": train.pop("model"), "train": train}
        ckpt_io.save_model(ckpt_dir, self.model.state_dict(), {**config, **extra})

    def warm_start(self, init: Path) -> dict:
        return ckpt_io.warm_start(self.model, init, self.kind, self.cfg.model.to_dict())
