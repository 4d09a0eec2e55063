"""Score-image codec: a system image <-> 4 RQ-VAE codes per 16x16 patch.

Pipeline (U-MusT section III-A-1)::

    PNG / uint8 array --load_gray--> (H, W) uint8, 255 = white paper
        --preprocess--> pixels brighter than (median - 20) set to 255,
                        height and width padded with white to multiples of 16
        --to_ink--> (1, 1, H, W) float ink in [0, 1] (0 = paper, 1 = black)
        --RQVAE.encode--> code grid (4, H/16, W/16), codebook k -> row k
        --flatten--> local ids, reading order below

Reading order ("vertical flattening"): patch columns left to right; inside a
column, patches top to bottom; each patch emits its 4 codes in codebook order,
codebook k with code c giving local id ``k * 1024 + c`` (the layout of the
image range in ``vocab.py``). A system of Hp x Wp patches therefore yields
``4 * Hp * Wp`` ids, and every run of ``4 * Hp`` ids is one column.

The height in patches is *not* in the sequence: ``unflatten`` and ``decode``
take it as an argument. The ``.npy`` files of ``umust tokenize image`` store
the code grid itself (so the height travels with it); a translator that
generates image tokens must be told the height of the systems it writes.

Several systems of one page are encoded one by one (``encode_systems``); the
caller joins the per-system lists with the unified vocabulary's [SEP]
(``systems_to_global`` / ``global_to_systems`` do exactly that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.codecs.vocab import CODEBOOK_SIZE, NUM_CODEBOOKS, SEP, Vocabulary, codebook_names
from umust_cli.errors import CheckpointError, ImageError
from umust_cli.inputs import load_image

PATCH = 16               # pixels per patch side (the RQ-VAE's compression)
WHITE = 255
MEDIAN_OFFSET = 20       # pixels > median - 20 become white
SHIFTS_X, SHIFTS_Y = 8, 4  # shift augmentation: 8 x 4 = 32 variants
MODEL_KIND = "umust-rqvae-image"


# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------

def load_gray(source: str | Path | bytes | np.ndarray) -> np.ndarray:
    """A PNG (path or bytes) or an array -> (H, W) uint8, transparency over white.
    Files and bytes go through the one validated image loader (umust_cli.inputs)."""
    if isinstance(source, np.ndarray):
        return _array_to_gray(source)
    return load_image(source)


def _array_to_gray(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        rgb = a[..., :3].astype(np.float32) if a.shape[2] >= 3 else a[..., :1].astype(np.float32)
        gray = rgb.mean(axis=2) if rgb.shape[2] == 1 else rgb @ np.array([0.299, 0.587, 0.114])
        if a.shape[2] == 4:  # composite over white
            alpha = a[..., 3].astype(np.float32) / 255.0
            gray = gray * alpha + 255.0 * (1.0 - alpha)
        a = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if a.ndim != 2:
        raise ImageError(f"expected an (H, W) or (H, W, C) image array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image array, got {a.dtype}")
    return _check_not_empty(a, "array")


def _check_not_empty(gray: np.ndarray, what: str) -> np.ndarray:
    if gray.size == 0:
        raise ImageError(f"image {what} is empty (shape {gray.shape})")
    return gray


def threshold_white(gray: np.ndarray, offset: int = MEDIAN_OFFSET) -> np.ndarray:
    """The paper's contrast step: every pixel brighter than (median - offset) becomes 255."""
    cut = float(np.median(gray)) - offset
    return np.where(gray > cut, np.uint8(WHITE), gray).astype(np.uint8)


def pad_to_multiple(gray: np.ndarray, multiple: int = PATCH) -> np.ndarray:
    """Pad with white at the bottom and right so both sides are multiples of ``multiple``."""
    h, w = gray.shape
    ph, pw = -h % multiple, -w % multiple
    return np.pad(gray, ((0, ph), (0, pw)), constant_values=WHITE) if ph or pw else gray


def preprocess(gray: np.ndarray) -> np.ndarray:
    """Threshold, then pad to multiples of 16. Blank images are refused."""
    out = pad_to_multiple(threshold_white(gray))
    if (out == WHITE).all():
        raise ImageError("image is blank (nothing darker than the paper after thresholding)")
    return out


def to_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W) -> float32 ink in [0, 1] (0 = white paper, 1 = black)."""
    return (WHITE - gray.astype(np.float32)) / WHITE


def from_ink(ink: np.ndarray) -> np.ndarray:
    """float ink -> uint8 grayscale (values outside [0, 1] are clipped)."""
    return np.rint(WHITE - np.clip(ink, 0.0, 1.0) * WHITE).astype(np.uint8)


def shift_variants(gray: np.ndarray, n_x: int = SHIFTS_X, n_y: int = SHIFTS_Y) -> list[np.ndarray]:
    """32 shifted copies of an image for token-level augmentation.

    The shifts spread evenly over one patch: dx in 0, 2, ..., 14 px (16 / n_x
    steps) and dy in 0, 4, 8, 12 px, made by padding white on the left/top.
    Variant ``iy * n_x + ix`` is shifted by (dx, dy) = (ix * 16 // n_x, iy * 16 // n_y);
    variant 0 is the image itself.
    """
    out = []
    for iy in range(n_y):
        for ix in range(n_x):
            dx, dy = ix * PATCH // n_x, iy * PATCH // n_y
            out.append(np.pad(gray, ((dy, 0), (dx, 0)), constant_values=WHITE) if dx or dy else gray)
    return out


# ---------------------------------------------------------------------------
# Code grids <-> local id sequences
# ---------------------------------------------------------------------------

def flatten(grid: np.ndarray) -> list[int]:
    """(depth, Hp, Wp) codes -> local ids: columns left to right, top to bottom, 4 per patch.

    Codebook k, code c -> ``k * 1024 + c`` whatever the model's codebook size
    (a smaller model simply leaves the top of each codebook's range unused).
    """
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[0] != NUM_CODEBOOKS:
        raise ValueError(f"expected a ({NUM_CODEBOOKS}, Hp, Wp) code grid, got {grid.shape}")
    if grid.size and (grid.min() < 0 or grid.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes outside [0, {CODEBOOK_SIZE})")
    offsets = np.arange(NUM_CODEBOOKS)[:, None, None] * CODEBOOK_SIZE
    ids = (grid.astype(np.int64) + offsets).transpose(2, 1, 0)  # (Wp, Hp, depth)
    return ids.reshape(-1).tolist()


def unflatten(ids: Sequence[int], height_patches: int) -> np.ndarray:
    """Inverse of :func:`flatten`: local ids -> (depth, Hp, Wp) int64 codes."""
    a = np.asarray(ids, dtype=np.int64)
    per_column = NUM_CODEBOOKS * height_patches
    if height_patches < 1 or a.size == 0 or a.size % per_column:
        raise ValueError(f"{a.size} ids do not make whole columns of {height_patches} patches "
                         f"x {NUM_CODEBOOKS} codes")
    cols = a.reshape(-1, height_patches, NUM_CODEBOOKS)  # (Wp, Hp, depth)
    if (a < 0).any() or (cols // CODEBOOK_SIZE != np.arange(NUM_CODEBOOKS)).any():
        raise ValueError("ids are not in codebook order q0, q1, q2, q3 within each patch")
    return (cols % CODEBOOK_SIZE).transpose(2, 1, 0).copy()


def join_systems(per_system: Sequence[Sequence[int]], sep: int) -> list[int]:
    """[ids of system 1] sep [ids of system 2] sep ... (no trailing sep)."""
    out: list[int] = []
    for i, ids in enumerate(per_system):
        if i:
            out.append(sep)
        out.extend(int(t) for t in ids)
    return out


def split_systems(ids: Sequence[int], sep: int) -> list[list[int]]:
    """Inverse of :func:`join_systems`."""
    out: list[list[int]] = [[]]
    for t in ids:
        if t == sep:
            out.append([])
        else:
            out[-1].append(int(t))
    return out


def systems_to_global(vocab: Vocabulary, per_system: Sequence[Sequence[int]]) -> list[int]:
    """Per-system local ids -> one global sequence with vocab [SEP] between systems."""
    return join_systems([vocab.to_global("image", s) for s in per_system], SEP)


def global_to_systems(vocab: Vocabulary, ids: Sequence[int]) -> list[list[int]]:
    """Inverse of :func:`systems_to_global` (input without [SOS]/[EOS])."""
    return [vocab.to_local("image", s) for s in split_systems(ids, SEP)]


# ---------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------

class ImageCodec:
    """Score-system images <-> local ids in range(4096), backed by a trained RQ-VAE."""

    modality = "image"

    def __init__(self, model, device: str = "cpu"):
        import torch

        cfg = model.cfg
        if cfg.num_codebooks != NUM_CODEBOOKS or cfg.codebook_size > CODEBOOK_SIZE or cfg.in_channels != 1:
            raise CheckpointError(f"the image codec needs {NUM_CODEBOOKS} codebooks of at most "
                                  f"{CODEBOOK_SIZE} codes on grayscale input; got {cfg}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.codebook_size = model.cfg.codebook_size

    @classmethod
    def load(cls, ckpt_dir: str | Path, vocab: Vocabulary | None = None,
             device: str = "cpu") -> "ImageCodec":
        """Weights + config from ``ckpt_dir``; its vocabulary must match ``vocab``
        (default: the shipped vocabulary), else VocabularyMismatchError."""
        from umust_cli.codecs.vocab import default_vocabulary
        from umust_cli.model.rqvae import RQVAE, RQVAEConfig
        from umust_cli.checkpoint import load_module

        model = load_module(ckpt_dir, MODEL_KIND, lambda cfg: RQVAE(RQVAEConfig.from_dict(cfg)),
                            vocab or default_vocabulary())
        return cls(model, device)

    @property
    def vocab_size(self) -> int:
        return NUM_CODEBOOKS * CODEBOOK_SIZE

    def token_names(self) -> list[str]:
        return codebook_names("img")

    # ---- grids ------------------------------------------------------------
    def encode_grid(self, source: str | Path | bytes | np.ndarray) -> np.ndarray:
        """Image -> (4, H/16, W/16) int64 code grid (H, W after padding)."""
        return self.encode_batch(preprocess(load_gray(source))[None])[0]

    def encode_batch(self, grays: np.ndarray) -> np.ndarray:
        """(B, H, W) *preprocessed* uint8 images of one shape -> (B, 4, H/16, W/16) int64 codes."""
        import torch

        x = torch.from_numpy(to_ink(grays))[:, None].to(self.device)  # (B, 1, H, W) ink
        return self.model.encode(x).cpu().numpy()

    def decode_grid(self, grid: np.ndarray) -> np.ndarray:
        """(4, Hp, Wp) codes -> (16 Hp, 16 Wp) uint8 grayscale image."""
        import torch

        g = np.asarray(grid, dtype=np.int64)
        if g.ndim != 3 or g.shape[0] != NUM_CODEBOOKS or g.min() < 0 or g.max() >= self.codebook_size:
            raise ImageError(f"not a valid ({NUM_CODEBOOKS}, Hp, Wp) code grid with codes "
                             f"< {self.codebook_size}: shape {g.shape}")
        ink = self.model.decode_codes(torch.from_numpy(g)[None].to(self.device))
        return from_ink(ink[0, 0].float().cpu().numpy())

    # ---- the Codec protocol ---------------------------------------------------
    def encode(self, source: str | Path | bytes | np.ndarray) -> list[int]:
        """One system image -> local ids in reading order (see module docstring)."""
        return flatten(self.encode_grid(source))

    def decode(self, ids: Sequence[int], height_patches: int | None = None) -> np.ndarray:
        """Local ids of one system -> uint8 image; the height in patches must be given."""
        if height_patches is None:
            raise ImageError("decoding image tokens needs the system height in patches")
        try:
            grid = unflatten(ids, height_patches)
        except ValueError as e:
            raise ImageError(f"cannot decode image tokens: {e}") from e
        return self.decode_grid(grid)

    def encode_systems(self, sources: Sequence) -> list[list[int]]:
        """Several system images (top to bottom on the page) -> one id list each."""
        return [self.encode(s) for s in sources]

    def decode_systems(self, per_system: Sequence[Sequence[int]],
                       heights: Sequence[int]) -> list[np.ndarray]:
        if len(per_system) != len(heights):
            raise ImageError(f"{len(per_system)} systems but {len(heights)} heights")
        return [self.decode(ids, h) for ids, h in zip(per_system, heights)]
