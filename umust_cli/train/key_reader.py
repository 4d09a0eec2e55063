"""Training of the key-signature reader (`umust train key-reader`) on a corpus's system images.

The crops (``data.key_crops``) of the train split's engravings and scanned-look copies, with the
key signature of each system's LMX, are read once into memory (~50 KB a crop). Each step draws a
batch and shifts it as a whole by a random offset (the brace and clefs do not start at the same
column in every edition) and scales its ink contrast and adds noise per image; the batch and the
offsets are pure functions of (seed, step), so a resumed run sees what an uninterrupted run sees.
Validation: the share of the valid split's crops read right, engraved and scanned-look apart;
keep-best maximises their mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli import checkpoint as ckpt_io
from umust_cli.data import corpus as corpus_io
from umust_cli.data.key_crops import CROP_HEIGHT, CROP_WIDTH, KeyCrops, split_key_crops
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError
from umust_cli.model.key_reader import MODEL_KIND, KeyReader, KeyReaderConfig, crops_to_ink
from umust_cli.model.translator import KEY_FIFTHS
from umust_cli.train.engine import ModelAndOptimizerState, RunOptions, TrainResult, fit
from umust_cli.train.translator import lr_at


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    model: KeyReaderConfig = field(default_factory=KeyReaderConfig)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    decay_steps: int = 4000
    min_lr_ratio: float = 0.05
    shift_x: int = 12          # largest horizontal shift of a batch, pixels
    shift_y: int = 20          # ... and vertical
    scans: bool = True         # scanned-look copies train too
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.lr <= 0:
            raise BadInputError("--batch-size must be >= 1 and --lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "TrainConfig":
        rest = {k: v for k, v in obj.items() if k != "model"}
        return cls(model=KeyReaderConfig.from_dict(obj.get("model") or {}), **rest)


def targets(fifths: np.ndarray) -> torch.Tensor:
    """Key signatures in fifths -> class indices of KEY_FIFTHS."""
    return torch.tensor([KEY_FIFTHS.index(int(k)) for k in fifths], dtype=torch.long)


def make_batch(data: KeyCrops, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s augmented ink (B, 1, H, W) and target classes (B,)."""
    rng = np.random.default_rng((cfg.seed, step))
    idx = rng.integers(0, len(data.fifths), cfg.batch_size)
    dx, dy = (int(rng.integers(-s, s + 1)) for s in (cfg.shift_x, cfg.shift_y))
    ink = shift(crops_to_ink(data.crops[idx]), dy, dx)
    contrast = torch.from_numpy(rng.uniform(0.7, 1.3, (len(idx), 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal(ink.shape).astype(np.float32)) * 0.05
    noise *= torch.from_numpy(rng.uniform(0, 1, (len(idx), 1, 1, 1)).astype(np.float32))
    return ink * contrast + noise, targets(data.fifths[idx])


def shift(ink: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, 1, H, W) ink moved down ``dy`` and right ``dx`` pixels; what comes in is blank paper."""
    h, w = ink.shape[-2:]
    padded = F.pad(ink, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def accuracy(model: KeyReader, data: KeyCrops, batch: int = 64) -> dict:
    """Share of ``data``'s crops read right, engraved and scanned-look copies apart."""
    right = np.array([r == k for (r, _), k in zip(
        (x for lo in range(0, len(data.fifths), batch) for x in model.read(data.crops[lo:lo + batch])),
        data.fifths)], dtype=bool)
    copies = np.array(data.copies)
    out = {}
    for name, sel in (("engraved", copies == "engraved"), ("scanned", copies != "engraved")):
        if sel.any():
            out[f"key_accuracy/{name}"], out[f"key_systems/{name}"] = round(float(right[sel].mean()), 5), int(sel.sum())
    return out


def _model_config(cfg: TrainConfig, step: int) -> dict:
    train = cfg.to_dict()
    return {"kind": MODEL_KIND, "format": 1, "step": step, "model": train.pop("model"), "train": train}


class KeyReaderTask(ModelAndOptimizerState):
    """The key reader as a :class:`umust_cli.train.engine.Task`."""

    name = "key-reader"

    def __init__(self, corpus: Path, cfg: TrainConfig, run: RunOptions):
        if (cfg.model.height, cfg.model.width) != (CROP_HEIGHT, CROP_WIDTH):
            raise BadInputError(f"a key reader reads {CROP_HEIGHT} x {CROP_WIDTH} crops (data.key_crops)")
        rows = corpus_io.system_rows(corpus, ("train",))
        corpus_io.check_training_rows(rows, corpus)
        self.train_data = split_key_crops(corpus, "train", cfg.scans)
        self.valid_data = split_key_crops(corpus, "valid")
        if not len(self.train_data.fifths):
            raise BadInputError(f"{corpus}: no train systems with an image and a key signature")
        self.device = resolve_device(run.device)
        torch.manual_seed(cfg.seed)
        self.model = KeyReader(cfg.model).to(self.device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.cfg = cfg

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (make_batch(self.train_data, self.cfg, step) for step in count(start))

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict:
        lr = lr_at(self.cfg, step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        ink, target = (t.to(self.device) for t in batch)
        loss = F.cross_entropy(self.model(ink), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": round(loss.item(), 5), "lr": lr}

    def evaluate(self) -> dict | None:
        return accuracy(self.model, self.valid_data) or None

    def score(self, scores: dict) -> float | None:
        values = [v for k, v in scores.items() if k.startswith("key_accuracy/")]
        return sum(values) / len(values) if values else None

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        ckpt_io.save_model(ckpt_dir, self.model.state_dict(), {**_model_config(self.cfg, step), **extra})

    def warm_start(self, init: Path) -> dict:
        return ckpt_io.warm_start(self.model, init, MODEL_KIND, self.cfg.model.to_dict())


def train_key_reader(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                     init: str | Path | None = None,
                     on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a key reader in ``ckpt_dir`` on ``corpus``'s train split, scored on valid."""
    return fit(KeyReaderTask(Path(corpus), cfg, run), ckpt_dir, cfg, run, init=init, on_step=on_step)
