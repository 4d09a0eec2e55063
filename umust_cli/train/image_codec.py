"""Training loop of the score-image RQ-VAE (`umust train codec image`).

Resolution-adaptive batches (U-MusT III-A-1): every image falls in a height
bucket that fixes the square random-crop size and the batch size; each step
draws one batch from one bucket. The batch plan and the crop offsets are pure
functions of (seed, step), so a resumed run sees exactly the data it would
have seen without the interruption; model, optimizer and RNG states come back
from ``train_state.pt``. Together: N straight steps == N/2 + kill + N/2.

Precision: bf16 autocast on CUDA, float32 on CPU; the quantizer always runs in
float32 (see ``model/rqvae.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli import checkpoint as ckpt_io
from umust_cli.codecs.image import MODEL_KIND, WHITE, from_ink, load_gray, pad_to_multiple, threshold_white, to_ink
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError, ImageError
from umust_cli.eval.image_metrics import foreground_f1, psnr
from umust_cli.model.rqvae import PRESETS, RQVAE, RQVAEConfig
from umust_cli.train.corpus_files import split_files
from umust_cli.train.engine import ModelAndOptimizerState, RunOptions, TrainResult, fit


@dataclass(frozen=True)
class Bucket:
    """Images with min_height <= height < max_height train on crop x crop crops, batch at a time."""

    min_height: int
    max_height: int
    crop: int
    batch: int


PAPER_BUCKETS = (Bucket(70, 130, 64, 256), Bucket(130, 260, 128, 128),
                 Bucket(260, 360, 256, 32), Bucket(360, 390, 352, 16))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    model: RQVAEConfig = field(default_factory=lambda: PRESETS["small"])
    buckets: tuple[Bucket, ...] = PAPER_BUCKETS
    batch_scale: float = 1.0       # multiplies every bucket's batch size (CPU: ~1/32)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 200
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    commit_weight: float = 0.25
    ink_weight: float = 0.0        # extra L1 weight on pixels that are ink in the target
    blur_weight: float = 0.0       # L2 between Gaussian-blurred recon and target (line position)
    grad_clip: float = 1.0
    seed: int = 0

    def batch_size(self, bucket: Bucket) -> int:
        return max(1, round(bucket.batch * self.batch_scale))

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("model", "buckets")}
        d["betas"] = list(self.betas)
        d["buckets"] = [b.__dict__.copy() for b in self.buckets]
        return {"model": self.model.to_dict(), **d}

    @classmethod
    def from_dict(cls, obj: dict) -> "TrainConfig":
        rest = {k: v for k, v in obj.items() if k not in ("model", "buckets", "betas")}
        return cls(model=RQVAEConfig.from_dict(obj["model"]),
                   buckets=tuple(Bucket(**b) for b in obj["buckets"]),
                   betas=tuple(obj["betas"]), **rest)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageItem:
    path: Path
    height: int
    width: int


def find_images(data_dir: str | Path, include_scans: bool = True) -> tuple[list[ImageItem], list[ImageItem]]:
    """(train, valid) images of a corpus built by `umust dataset build` (its rows' ``png`` and, with
    ``include_scans``, ``scans``) or of a folder of PNGs (see :func:`split_files`)."""
    keys = ("png", "scans") if include_scans else ("png",)
    train, val = split_files(data_dir, keys, (".png",))
    if not train:
        raise BadInputError(f"no training images found in {data_dir}")
    return [_item(p) for p in train], [_item(p) for p in val]


def _item(path: Path) -> ImageItem:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    return ImageItem(path, h, w)


class ImageStore:
    """Thresholded (unpadded) uint8 images, decoded once and kept up to ``budget_mb``."""

    def __init__(self, items: list[ImageItem], budget_mb: float = 2048):
        self.items, self.budget = items, int(budget_mb * 2 ** 20)
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.used = 0

    def __getitem__(self, i: int) -> np.ndarray:
        if i in self.cache:
            self.cache.move_to_end(i)
            return self.cache[i]
        img = threshold_white(load_gray(self.items[i].path))
        self.cache[i] = img
        self.used += img.nbytes
        while self.used > self.budget and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.used -= old.nbytes
        return img


def bucket_of(height: int, buckets: tuple[Bucket, ...]) -> int:
    """Index of the bucket for an image height (below all: first; above all: last)."""
    for i, b in enumerate(buckets):
        if b.min_height <= height < b.max_height:
            return i
    return 0 if height < buckets[0].min_height else len(buckets) - 1


class BatchPlan:
    """Step -> (bucket, image indices); a pure function of the seed and the heights."""

    def __init__(self, heights: list[int], cfg: TrainConfig):
        self.cfg = cfg
        self.members = [[] for _ in cfg.buckets]
        for i, h in enumerate(heights):
            self.members[bucket_of(h, cfg.buckets)].append(i)
        self._epoch, self._batches = -1, []
        self.epoch_len = len(self._epoch_batches(0))

    def _epoch_batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        rng = np.random.default_rng([self.cfg.seed, epoch])
        batches = []
        for b, members in enumerate(self.members):
            if not members:
                continue
            size = self.cfg.batch_size(self.cfg.buckets[b])
            perm = rng.permutation(members).tolist()
            chunks = [perm[i:i + size] for i in range(0, len(perm), size)]
            if len(chunks) > 1 and len(chunks[-1]) < size:
                chunks.pop()  # keep batch shapes fixed where the bucket allows
            batches += [(b, c) for c in chunks]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def batch(self, step: int) -> tuple[int, list[int]]:
        epoch, pos = divmod(step, self.epoch_len)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return self._batches[pos]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size crop (white-padded first if the image is smaller)."""
    h, w = img.shape
    if h < size or w < size:
        img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w))), constant_values=WHITE)
        h, w = img.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return img[y:y + size, x:x + size]


def make_batch(store: ImageStore, plan: BatchPlan, step: int) -> tuple[torch.Tensor, int]:
    """(B, 1, crop, crop) ink tensor for ``step`` and its crop size."""
    b, members = plan.batch(step)
    crop = plan.cfg.buckets[b].crop
    rng = np.random.default_rng([plan.cfg.seed, 7919, step])
    crops = np.stack([random_crop(store[i], crop, rng) for i in members])
    return torch.from_numpy(to_ink(crops))[:, None], crop


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def train_step(model: RQVAE, opt: torch.optim.Optimizer, cfg: TrainConfig, x: torch.Tensor,
               step: int) -> dict:
    """One optimizer update on a (B, 1, S, S) ink batch; returns the loss terms."""
    device = next(model.parameters()).device
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    for group in opt.param_groups:
        group["lr"] = lr
    x = x.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(x)
    recon = out.recon.float()
    l1, l2 = (recon - x).abs().mean(), (recon - x).pow(2).mean()
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.commit_weight * out.commit_loss
    loss = loss + _line_terms(cfg, recon, x)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training diverged at step {step + 1} (loss {loss.item()}); "
                                 "try a lower learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return {"loss": loss.item(), "l1": l1.item(), "l2": l2.item(),
            "commit": out.commit_loss.item(), "grad_norm": grad_norm.item(), "lr": lr,
            "perplexity": [round(p, 2) for p in out.usage.tolist()]}


def _blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian blur of a (B, 1, H, W) batch (reflect-padded)."""
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def _line_terms(cfg: TrainConfig, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Terms that keep one-pixel staff lines and stems: L1 and L2 alone let a decoder that is
    unsure of a thin line's exact row paint background, which loses the line."""
    extra = recon.new_zeros(())
    if cfg.ink_weight:
        ink = (x > 0.25).float()
        extra = extra + cfg.ink_weight * ((recon - x).abs() * ink).sum() / ink.sum().clamp_min(1.0)
    if cfg.blur_weight:
        extra = extra + cfg.blur_weight * (_blur(recon) - _blur(x)).pow(2).mean()
    return extra


@torch.no_grad()
def evaluate(model: RQVAE, items: list[ImageItem], limit: int, max_width: int = 1024) -> dict | None:
    """Mean PSNR (dB) and ink F1 of full-height reconstructions of up to ``limit`` images."""
    if not items or limit <= 0:
        return None
    device = next(model.parameters()).device
    was_training, scores = model.training, []
    model.eval()
    for it in items[:limit]:
        gray = pad_to_multiple(threshold_white(load_gray(it.path))[:, :max_width])
        x = torch.from_numpy(to_ink(gray))[None, None].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=device.type == "cuda"):
            recon = model.decode_codes(model.encode(x))
        out = from_ink(recon[0, 0].float().cpu().numpy())
        scores.append((psnr(gray, out), foreground_f1(gray, out)))
    model.train(was_training)
    p, f = np.array(scores).T
    return {"psnr": round(float(np.mean(np.minimum(p, 99.0))), 3), "f1": round(float(f.mean()), 4),
            "images": len(scores)}


def _model_config(cfg: TrainConfig, step: int) -> dict:
    train = cfg.to_dict()
    return {"kind": MODEL_KIND, "format": 1, "step": step, "model": train.pop("model"), "train": train}


class ImageCodecTask(ModelAndOptimizerState):
    """The image RQ-VAE as a :class:`umust_cli.train.engine.Task`."""

    name = "rqvae"

    def __init__(self, data_dir: str | Path, cfg: TrainConfig, run: RunOptions, vocab: Vocabulary):
        device = resolve_device(run.device)
        train_items, self.val_items = find_images(data_dir)
        self.store, self.plan = ImageStore(train_items), BatchPlan([it.height for it in train_items], cfg)
        torch.manual_seed(cfg.seed)
        self.model = RQVAE(cfg.model).to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.cfg, self.vocab, self.eval_items = cfg, vocab, run.eval_items

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, int]]:
        return (make_batch(self.store, self.plan, step) for step in count(start))

    def train_step(self, batch: tuple[torch.Tensor, int], step: int) -> dict:
        x, crop = batch
        return {**train_step(self.model, self.opt, self.cfg, x, step), "crop": crop, "batch": int(x.shape[0])}

    def evaluate(self) -> dict | None:
        return evaluate(self.model, self.val_items, self.eval_items)

    def score(self, scores: dict) -> float | None:
        return None  # no keep-best for the codecs

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        ckpt_io.save_model(ckpt_dir, self.model.state_dict(), {**_model_config(self.cfg, step), **extra},
                           self.vocab)

    def warm_start(self, init: Path) -> dict:
        return ckpt_io.warm_start(self.model, init, MODEL_KIND, self.cfg.model.to_dict(), self.vocab)


def train_image_codec(data_dir: str | Path, ckpt_dir: str | Path, cfg: TrainConfig,
                      run: RunOptions, vocab: Vocabulary,
                      on_step: Callable[[int, dict], None] | None = None,
                      init: str | Path | None = None) -> TrainResult:
    """Train (or resume) the image RQ-VAE in ``ckpt_dir`` on the images of ``data_dir``.

    ``init``: weights to start a fresh run from (ignored when ``ckpt_dir`` holds a run).
    """
    return fit(ImageCodecTask(data_dir, cfg, run, vocab), ckpt_dir, cfg, run, init=init, on_step=on_step)
