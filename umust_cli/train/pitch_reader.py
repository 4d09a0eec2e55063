"""Training of the pitch reader (`umust train pitch-reader`) on a corpus's system images.

The reader images (``data.staff_images``) of the train split's engravings and scanned-look
copies, with each staff's CTC classes from the system's LMX, are read once into memory (~300 KB
an image). Each step draws a batch, pads it to its widest image, moves it up or down as a whole
by a random offset and scales each image's ink contrast and adds noise; the batch and the
offsets are pure functions of (seed, step), so a resumed run sees what an uninterrupted run sees.
Validation: each staff's best path against its classes, the pooled staff error rate (edits per
target class) of the valid split, engraved and scanned-look apart; keep-best minimises their mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli.data import corpus as corpus_io
from umust_cli.data.staff_images import StaffImages, split_staff_images
from umust_cli.data.staff_order import PAD_TARGET, STAVES, ctc_classes
from umust_cli.errors import BadInputError
from umust_cli.eval.metrics import edit_distance
from umust_cli.model.pitch_reader import MODEL_KIND, PitchReader, PitchReaderConfig, images_to_ink
from umust_cli.model.translator import CTC_FRAMES, column_ctc_loss, remap_ctc_head
from umust_cli.train.engine import RunOptions, TrainResult, fit
from umust_cli.train.pixel_reader import ReaderTask, ReaderTrainConfig, jitter

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]     # ink (B, 1, H, W), columns (B,), targets (B, staves, L)


@dataclass(frozen=True)
class TrainConfig(ReaderTrainConfig):
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    scans: bool = True         # scanned-look copies train too
    model: PitchReaderConfig = field(default_factory=PitchReaderConfig)
    warmup_steps: int = 200
    decay_steps: int = 20000
    shift_y: int = 12          # largest vertical move of a batch, pixels


def pad_targets(targets: list[list[list[int]]]) -> torch.Tensor:
    """Each image's per-staff classes -> (B, STAVES, L) long, PAD_TARGET-padded."""
    width = max((len(s) for t in targets for s in t), default=0)
    out = torch.full((len(targets), STAVES, max(width, 1)), PAD_TARGET, dtype=torch.long)
    for b, staves in enumerate(targets):
        for k, s in enumerate(staves):
            out[b, k, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def make_batch(data: StaffImages, cfg: TrainConfig, step: int) -> Batch:
    """Step ``step``'s augmented ink, valid columns and targets."""
    rng = np.random.default_rng((cfg.seed, step))
    idx = rng.integers(0, len(data.images), cfg.batch_size).tolist()
    images = [data.images[i] for i in idx]
    ink = jitter(images_to_ink(images), rng, int(rng.integers(-cfg.shift_y, cfg.shift_y + 1)), 0)
    cols = torch.tensor([img.shape[1] // 16 for img in images])
    return ink, cols, pad_targets([data.targets[i] for i in idx])


def error_rates(model: PitchReader, data: StaffImages) -> dict:
    """Pooled staff error rate (edits of each staff's best path per target class) of ``data``,
    engraved and scanned-look copies apart."""
    edits: dict[str, list[int]] = {"engraved": [0, 0], "scanned": [0, 0]}
    for (_, staves), ref, copy in zip(model.read(data.images), data.targets, data.copies):
        tally = edits["engraved" if copy == "engraved" else "scanned"]
        for hyp, r in zip(staves, ref):
            tally[0] += edit_distance([p for _, p in hyp], r)
            tally[1] += len(r)
    return {f"staff_error_rate/{name}": round(e / n, 5) for name, (e, n) in edits.items() if n}


class PitchReaderTask(ReaderTask):
    """The pitch reader as a :class:`umust_cli.train.engine.Task`."""

    name = "pitch-reader"
    kind = MODEL_KIND
    grad_clip = 1.0

    def __init__(self, corpus: Path, cfg: TrainConfig, run: RunOptions):
        if cfg.model.ctc_classes != len(ctc_classes(cfg.model.ctc_target)):
            raise BadInputError(f"a {cfg.model.ctc_target} pitch reader has {len(ctc_classes(cfg.model.ctc_target))} "
                                f"classes, not {cfg.model.ctc_classes}")
        corpus_io.check_training_rows(corpus_io.system_rows(corpus, ("train",)), corpus)
        target, height = cfg.model.ctc_target, cfg.model.height
        self.train_data = split_staff_images(corpus, "train", target, cfg.scans, height=height)
        self.valid_data = split_staff_images(corpus, "valid", target, height=height)
        if not self.train_data.images:
            raise BadInputError(f"{corpus}: no train systems with an image and LMX")
        self.setup(lambda: PitchReader(cfg.model), cfg, run)

    def make_batch(self, step: int) -> Batch:
        return make_batch(self.train_data, self.cfg, step)

    def loss(self, batch: Batch) -> torch.Tensor:
        ink, cols, targets = batch
        return column_ctc_loss(self.model(ink, cols), cols, targets, self.cfg.model.per_column)

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        classes = [list(c) for c in ctc_classes(self.cfg.model.ctc_target)]     # checked on load (engines)
        super().save(ckpt_dir, step, {"classes": classes, **extra})

    def warm_start(self, init: Path) -> dict:
        """Start from ``init``'s weights; an init of other classes (e.g. ``marked`` for a ``notated``
        run) gives its head's rows to the classes they share (``model.translator.remap_ctc_head``)."""
        saved = ckpt_io.read_config(init).get("model") or {}
        old_target = saved.get("ctc_target", self.cfg.model.ctc_target)
        old_frames = PitchReaderConfig.from_dict(saved).per_column if saved else CTC_FRAMES
        if (old_target, old_frames) == (self.cfg.model.ctc_target, self.cfg.model.per_column):
            # frames compare by what they mean (0: the target's; a config saved before the field had none)
            def same(model: dict) -> dict:
                return dict(PitchReaderConfig.from_dict(model).to_dict(), frames=self.cfg.model.frames)
            return ckpt_io.warm_start(self.model, init, self.kind, self.cfg.model.to_dict(), normalize=same)
        def normalize(model: dict) -> dict:    # the head's classes are the run's: remapped below
            return dict(model, ctc_target=self.cfg.model.ctc_target, ctc_classes=self.cfg.model.ctc_classes,
                        frames=self.cfg.model.frames)

        row = ckpt_io.warm_start(self.model, init, self.kind, self.cfg.model.to_dict(), normalize=normalize,
                                 fresh=("ctc.",), drop=("ctc.",))     # checks the init's kind and body first
        state, _ = ckpt_io.load_model(init)
        weight, bias = remap_ctc_head(state["ctc.weight"], state["ctc.bias"], ctc_classes(old_target),
                                      ctc_classes(self.cfg.model.ctc_target), per_column=self.cfg.model.per_column,
                                      old_per_column=old_frames)
        self.model.ctc.weight.data.copy_(weight)
        self.model.ctc.bias.data.copy_(bias)
        return {**row, "ctc_head": f"{self.cfg.model.ctc_target} ({self.cfg.model.per_column} frames a column) from "
                                   f"the init's {old_target} head"}

    def evaluate(self) -> dict | None:
        return error_rates(self.model, self.valid_data) if self.valid_data.images else None

    def score(self, scores: dict) -> float | None:
        values = [v for k, v in scores.items() if k.startswith("staff_error_rate/")]
        return -sum(values) / len(values) if values else None


def train_pitch_reader(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                       init: str | Path | None = None,
                       on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a pitch reader in ``ckpt_dir`` on ``corpus``'s train split, scored on valid."""
    return fit(PitchReaderTask(Path(corpus), cfg, run), ckpt_dir, cfg, run, init=init, on_step=on_step)
