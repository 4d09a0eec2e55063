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

import json
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli.codecs.image import MODEL_KIND, WHITE, load_gray, pad_to_multiple, threshold_white, to_ink
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.errors import BadInputError, CheckpointError, HeldOutRepertoireError, ImageError
from umust_cli.eval.image_metrics import foreground_f1, psnr
from umust_cli.model.rqvae import PRESETS, RQVAE, RQVAEConfig
from umust_cli.train import checkpoint as ckpt_io
from umust_cli.train.loop import StopOnSignal, TrainResult, resolve_device, truncate_log


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


@dataclass(frozen=True)
class RunOptions:
    """How long and where to run; may change between a run and its resumption."""

    max_steps: int | None = None
    max_minutes: float | None = None
    save_every: int = 500
    eval_every: int = 0            # 0: evaluate only when the run ends
    eval_images: int = 8
    device: str = "auto"
    progress: bool = True


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageItem:
    path: Path
    height: int
    width: int


def find_images(data_dir: str | Path, include_scans: bool = True) -> tuple[list[ImageItem], list[ImageItem]]:
    """(train, val) images of a corpus built by `umust dataset build` or of a folder of PNGs.

    Manifest rows: ``png`` (and optionally ``scans``) paths relative to the
    corpus, ``split`` in train/val/test; test rows are never used. A plain
    folder: every PNG below it, every 50th (sorted) kept aside for validation.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise BadInputError(f"no such data folder: {root}")
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        train, val = _manifest_paths(root, manifest, include_scans)
    else:
        pngs = sorted(root.rglob("*.png"))
        val = pngs[::50] if len(pngs) >= 10 else []
        held = set(val)
        train = [p for p in pngs if p not in held]
    if not train:
        raise BadInputError(f"no training images found in {root}")
    for p in train + val:
        if "beethoven" in str(p).lower():
            raise HeldOutRepertoireError(f"held-out repertoire (Beethoven) in the training data: {p}")
    return [_item(p) for p in train], [_item(p) for p in val]


def _manifest_paths(root: Path, manifest: Path, include_scans: bool) -> tuple[list[Path], list[Path]]:
    train, val = [], []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{manifest}:{n} is not JSON: {e}") from e
        pngs = row.get("png") or []
        pngs = [pngs] if isinstance(pngs, str) else list(pngs)
        if include_scans:
            pngs += list(row.get("scans") or [])
        split = row.get("split", "train")
        target = val if split in ("val", "valid", "validation") else train if split == "train" else None
        if target is not None:
            target.extend(root / p for p in pngs)
    return train, val


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
    from umust_cli.codecs.image import from_ink

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
    return {"kind": MODEL_KIND, "format": 1, "step": step,
            "model": train.pop("model"), "train": train}


def save_checkpoint(ckpt_dir: Path, model: RQVAE, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    vocab: Vocabulary, step: int) -> None:
    ckpt_io.save_train_state(ckpt_dir, {
        "step": step, "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": ckpt_io.rng_state()})
    ckpt_io.save_model(ckpt_dir, model.state_dict(), _model_config(cfg, step), vocab)


def resume(ckpt_dir: Path, model: RQVAE, opt: torch.optim.Optimizer, cfg: TrainConfig,
           vocab: Vocabulary) -> int:
    """Restore a run from ``ckpt_dir``; returns its step (0 for a fresh directory)."""
    state = ckpt_io.load_train_state(ckpt_dir)
    if state is None:
        return 0
    # Through from_dict: a run saved before a field existed compares with that field's default.
    saved = json.loads(json.dumps(TrainConfig.from_dict(json.loads(state["config"])).to_dict()))
    wanted = json.loads(json.dumps(cfg.to_dict(), sort_keys=True))
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise CheckpointError(f"{ckpt_dir} holds a run with another training config (differs in: "
                              f"{', '.join(diff)}); train into a new directory")
    if (ckpt_dir / ckpt_io.VOCABULARY).is_file():
        vocab.check_matches(Vocabulary.load(ckpt_dir / ckpt_io.VOCABULARY), what=str(ckpt_dir))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    ckpt_io.set_rng_state(state["rng"])
    truncate_log(ckpt_dir / ckpt_io.TRAIN_LOG, int(state["step"]))
    return int(state["step"])


def start_run(ckpt_dir: Path, model: RQVAE, opt: torch.optim.Optimizer, cfg: TrainConfig,
              vocab: Vocabulary, init: str | Path | None) -> tuple[int, dict | None]:
    """(step, log row): resume ``ckpt_dir``; a fresh run starts from ``init``'s weights if given."""
    step = resume(ckpt_dir, model, opt, cfg, vocab)
    if step or init is None:
        return step, None
    return 0, ckpt_io.warm_start(model, init, vocab, MODEL_KIND, cfg.model.to_dict())


def train_image_codec(data_dir: str | Path, ckpt_dir: str | Path, cfg: TrainConfig,
                      run: RunOptions, vocab: Vocabulary,
                      on_step: Callable[[int, dict], None] | None = None,
                      init: str | Path | None = None) -> TrainResult:
    """Train (or resume) the image RQ-VAE in ``ckpt_dir`` on the images of ``data_dir``.

    ``init``: weights to start a fresh run from (ignored when ``ckpt_dir`` holds a run).
    """
    device, ckpt_dir = resolve_device(run.device), Path(ckpt_dir)
    train_items, val_items = find_images(data_dir)
    store, plan = ImageStore(train_items), BatchPlan([it.height for it in train_items], cfg)
    torch.manual_seed(cfg.seed)
    model = RQVAE(cfg.model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    start, init_row = start_run(ckpt_dir, model, opt, cfg, vocab, init)
    step = start
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    reason, row, saved_at, t0 = "done", None, step, time.monotonic()
    with StopOnSignal() as stop, _progress(run, step) as bar, \
            open(ckpt_dir / ckpt_io.TRAIN_LOG, "a", encoding="utf-8") as log:
        if init_row:
            _log(log, init_row)
        while True:
            reason = _why_stop(run, step, t0, stop)
            if reason:
                break
            x, crop = make_batch(store, plan, step)
            row = {"step": step + 1, **train_step(model, opt, cfg, x, step), "crop": crop,
                   "batch": int(x.shape[0]), "time_s": round(time.monotonic() - t0, 3)}
            step += 1
            _log(log, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", crop=crop, refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(step, row)
            if step % run.save_every == 0:
                save_checkpoint(ckpt_dir, model, opt, cfg, vocab, step)
                saved_at = step
            if run.eval_every and step % run.eval_every == 0:
                _log(log, {"step": step, "eval": evaluate(model, val_items, run.eval_images)})
        if step != saved_at or not (ckpt_dir / ckpt_io.WEIGHTS).is_file():
            save_checkpoint(ckpt_dir, model, opt, cfg, vocab, step)
        final = evaluate(model, val_items, run.eval_images) if step > start else None
        if final is not None:
            _log(log, {"step": step, "eval": final})
    return TrainResult(step, start, reason, row["loss"] if row else None, final)


def _why_stop(run: RunOptions, step: int, t0: float, stop: StopOnSignal) -> str:
    if stop.requested:
        return "signal"
    if run.max_steps is not None and step >= run.max_steps:
        return "max_steps"
    if run.max_minutes is not None and time.monotonic() - t0 >= run.max_minutes * 60:
        return "max_minutes"
    return ""


def _log(log, row: dict) -> None:
    log.write(json.dumps(row) + "\n")
    log.flush()


def _progress(run: RunOptions, step: int):
    from tqdm import tqdm

    return tqdm(total=run.max_steps, initial=step, disable=not run.progress, file=sys.stderr,
                dynamic_ncols=True, unit="step", desc="rqvae")


