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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli.data import corpus as corpus_io
from umust_cli.data.key_crops import CROP_HEIGHT, CROP_WIDTH, KeyCrops, split_key_crops
from umust_cli.errors import BadInputError
from umust_cli.model.key_reader import MODEL_KIND, KeyReader, KeyReaderConfig, crops_to_ink
from umust_cli.model.translator import KEY_FIFTHS
from umust_cli.train.engine import RunOptions, TrainResult, fit
from umust_cli.train.pixel_reader import ReaderTask, ReaderTrainConfig, jitter


@dataclass(frozen=True)
class TrainConfig(ReaderTrainConfig):
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    scans: bool = True         # scanned-look copies train too
    model: KeyReaderConfig = field(default_factory=KeyReaderConfig)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    decay_steps: int = 4000
    shift_x: int = 12          # largest horizontal shift of a batch, pixels
    shift_y: int = 20          # ... and vertical


def targets(fifths: np.ndarray) -> torch.Tensor:
    """Key signatures in fifths -> class indices of KEY_FIFTHS."""
    return torch.tensor([KEY_FIFTHS.index(int(k)) for k in fifths], dtype=torch.long)


def make_batch(data: KeyCrops, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s augmented ink (B, 1, H, W) and target classes (B,)."""
    rng = np.random.default_rng((cfg.seed, step))
    idx = rng.integers(0, len(data.fifths), cfg.batch_size)
    dx, dy = (int(rng.integers(-s, s + 1)) for s in (cfg.shift_x, cfg.shift_y))
    return jitter(crops_to_ink(data.crops[idx]), rng, dy, dx), targets(data.fifths[idx])


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


class KeyReaderTask(ReaderTask):
    """The key reader as a :class:`umust_cli.train.engine.Task`."""

    name = "key-reader"
    kind = MODEL_KIND

    def __init__(self, corpus: Path, cfg: TrainConfig, run: RunOptions):
        if (cfg.model.height, cfg.model.width) != (CROP_HEIGHT, CROP_WIDTH):
            raise BadInputError(f"a key reader reads {CROP_HEIGHT} x {CROP_WIDTH} crops (data.key_crops)")
        corpus_io.check_training_rows(corpus_io.system_rows(corpus, ("train",)), corpus)
        self.train_data = split_key_crops(corpus, "train", cfg.scans)
        self.valid_data = split_key_crops(corpus, "valid")
        if not len(self.train_data.fifths):
            raise BadInputError(f"{corpus}: no train systems with an image and a key signature")
        self.setup(lambda: KeyReader(cfg.model), cfg, run)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return make_batch(self.train_data, self.cfg, step)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ink, target = batch
        return F.cross_entropy(self.model(ink), target)

    def evaluate(self) -> dict | None:
        return accuracy(self.model, self.valid_data) or None

    def score(self, scores: dict) -> float | None:
        values = [v for k, v in scores.items() if k.startswith("key_accuracy/")]
        return sum(values) / len(values) if values else None


def train_key_reader(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                     init: str | Path | None = None,
                     on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a key reader in ``ckpt_dir`` on ``corpus``'s train split, scored on valid."""
    return fit(KeyReaderTask(Path(corpus), cfg, run), ckpt_dir, cfg, run, init=init, on_step=on_step)
