"""Score-image codec: a system image <-> 4 RQ-VAE codes per 16x16 patch.

Pipeline (U-MusT section III-A-1)::

    PNG / uint8 array --load_gray--> (H, W) uint8, 255 = white paper
        --normalize_scale--> resized so that its staff lines are STAFF_SPACING_PX
                        apart, like the training renders (factor ``scale``)
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

Scale: real inputs (scans, photos, PDFs at any DPI, other engravers) never
arrive at the training scale, and the codec reconstructs only what it was
trained on. ``encode`` measures the input's staff-line spacing by the
run-length method (:func:`measure_staff`: the most common vertical black run
is the line thickness, the most common line-to-line distance of thin runs the
spacing) and resizes the image by ``scale = STAFF_SPACING_PX / spacing``
(left at 1 when within SCALE_TOLERANCE). An image without staff lines is an
ImageError ("no staff found") unless the caller passes ``rescale=False``.

The height in patches is *not* in the id sequence: :class:`Codes` carries it
(``shape`` = (Hp, Wp)) with the ``scale`` and the input's ``size``, so
``decode(codes)`` returns an image of the input's size. ``umust tokenize image``
writes the code grid as ``STEM.npy`` and the scale and size beside it in
``STEM.json``; a translator that generates image tokens wraps them as
``Codes(ids, shape=(Hp, Wp))`` and gets an image at the codec's scale.

Several systems of one page are encoded one by one (``encode_systems``); the
caller joins the per-system lists with the unified vocabulary's [SEP]
(``systems_to_global`` / ``global_to_systems`` do exactly that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.checkpoint import load_module
from umust_cli.codecs.base import Codes
from umust_cli.codecs.vocab import (CODEBOOK_SIZE, NUM_CODEBOOKS, SEP, Vocabulary, codebook_names,
                                    default_vocabulary)
from umust_cli.errors import CheckpointError, ImageError
from umust_cli.model.rqvae import RQVAE, RQVAEConfig
from umust_cli.inputs import load_image

PATCH = 16               # pixels per patch side (the RQ-VAE's compression)
WHITE = 255
MEDIAN_OFFSET = 20       # pixels > median - 20 become white
SHIFTS_X, SHIFTS_Y = 8, 4  # shift augmentation: 8 x 4 = 32 variants
MODEL_KIND = "umust-rqvae-image"
STAFF_SPACING_PX = 9.0   # line-to-line distance of the training renders (verovio scale 50)
SCALE_TOLERANCE = 0.04   # a measured spacing within 4% of it is not resampled
MIN_STAFF_COLUMNS = 0.1  # a staff: >= this fraction of the columns cross 5 evenly spaced lines
STAFF_INK_CUT = 224      # staff measurement: pixels darker than this (after threshold_white) are ink


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
# Staff scale
# ---------------------------------------------------------------------------

def staff_ink(gray: np.ndarray, cut: int = STAFF_INK_CUT) -> np.ndarray:
    """bool (H, W) ink for staff measurement: darker than ``cut`` after the paper is whitened
    (thin antialiased staff lines of small renders are light gray, ~170)."""
    return threshold_white(gray) < cut


def _vertical_runs(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every vertical black run as (column, top row, length), column by column, top to bottom."""
    edges = np.diff(np.pad(ink, ((1, 1), (0, 0))).astype(np.int8), axis=0).T  # (W, H + 1)
    col, top = np.nonzero(edges == 1)
    _, bottom = np.nonzero(edges == -1)
    return col, top, bottom - top


def measure_staff(gray: np.ndarray) -> tuple[float, float]:
    """(line thickness, line-to-line spacing) in pixels by the run-length method.

    The most common vertical black run is the staff-line thickness; the
    spacing is the most common distance between the centres of consecutive
    thin runs (at most thickness + 1) of a column, refined to sub-pixel by the
    mean of the distances within one pixel of it. ImageError "no staff found" when
    fewer than MIN_STAFF_COLUMNS of the columns cross five such lines.
    """
    col, top, length = _vertical_runs(staff_ink(gray))
    if length.size < 5:
        raise _no_staff("no staff lines in the image")
    thickness = int(np.bincount(length).argmax())
    thin = length <= thickness + 1
    col, centre = col[thin], top[thin] + (length[thin] - 1) / 2
    same = col[1:] == col[:-1]
    dist = (centre[1:] - centre[:-1])[same]
    if dist.size == 0:
        raise _no_staff("no staff lines in the image")
    mode = int(np.bincount(np.rint(dist).astype(np.int64)).argmax())
    near = np.abs(dist - mode) <= 1
    stave = np.zeros(same.shape, bool)
    stave[same] = near
    four = np.convolve(stave, np.ones(4, int), mode="valid") == 4  # 4 gaps = 5 lines
    columns = np.unique(col[:-1][:four.size][four]).size
    if mode < 2 or columns < MIN_STAFF_COLUMNS * gray.shape[1]:
        raise _no_staff(f"5 evenly spaced lines cross {columns} of {gray.shape[1]} columns")
    return float(thickness), float(dist[near].mean())


def _no_staff(detail: str) -> ImageError:
    return ImageError(f"no staff found ({detail}); encode with rescale=False (umust tokenize image "
                      f"--no-rescale) to take the pixels as they are")


def resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W) -> (height, width), antialiased (PIL Lanczos)."""
    from PIL import Image

    if gray.shape == (height, width):
        return gray
    out = Image.fromarray(gray).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.uint8)


def staff_scale(gray: np.ndarray, spacing: float = STAFF_SPACING_PX,
                tolerance: float = SCALE_TOLERANCE) -> float:
    """The factor that brings the image's staff spacing to ``spacing`` (1.0 within ``tolerance``)."""
    factor = spacing / measure_staff(gray)[1]
    return 1.0 if abs(factor - 1.0) <= tolerance else factor


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """(H, W) of an image of ``size`` resized by ``scale`` (at least 1 x 1)."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def normalize_scale(gray: np.ndarray, spacing: float = STAFF_SPACING_PX) -> tuple[np.ndarray, float]:
    """The image resized to the codec's staff spacing, and the factor used."""
    scale = staff_scale(gray, spacing)
    return resize(gray, *scaled_size(gray.shape, scale)), scale


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
    def encode(self, source: str | Path | bytes | np.ndarray, rescale: bool = True) -> Codes:
        """One system image -> Codes: ids in reading order (module docstring), shape (Hp, Wp),
        the factor it was resized by to the training staff spacing, and its (H, W).
        ``rescale=False`` encodes the pixels as they are (scale 1, no staff needed)."""
        return self.encode_variants(source, rescale=rescale)[0]

    def decode(self, codes: Codes) -> np.ndarray:
        """Codes of one system -> uint8 image of the encoded input's size (``codes.size``;
        without it, the codec's (16 Hp, 16 Wp) at the training scale)."""
        if not isinstance(codes, Codes):
            raise ImageError("decoding image tokens needs their patch grid: "
                             "pass Codes(ids, shape=(Hp, Wp))")
        return restore_size(self.decode_grid(grid_of(codes)), codes.scale, codes.size)

    def encode_variants(self, source: str | Path | bytes | np.ndarray, shifts: bool = False,
                        rescale: bool = True) -> list[Codes]:
        """``encode(source)``, then (``shifts``) the 32 shift variants of the rescaled image."""
        gray = load_gray(source)
        scaled, scale = normalize_scale(gray) if rescale else (gray, 1.0)
        out = []
        for n, img in enumerate(shift_variants(scaled) if shifts else [scaled]):
            size = gray.shape if n == 0 else (round(img.shape[0] / scale), round(img.shape[1] / scale))
            out.append(codes_of(self.encode_grid(img), scale, size))
        return out

    def encode_systems(self, sources: Sequence) -> list[Codes]:
        """Several system images (top to bottom on the page) -> one Codes each."""
        return [self.encode(s) for s in sources]

    def decode_systems(self, per_system: Sequence[Codes]) -> list[np.ndarray]:
        return [self.decode(codes) for codes in per_system]


def restore_size(image: np.ndarray, scale: float, size: Sequence[int] | None) -> np.ndarray:
    """A decoded (padded, rescaled) image back to the input's ``size``: crop the padding of
    the rescaled input, then resize by 1 / ``scale``. ``size`` None: the image as it is."""
    if size is None:
        return image
    h, w = scaled_size(size, scale)
    canvas = np.full((h, w), WHITE, np.uint8)
    hh, ww = min(h, image.shape[0]), min(w, image.shape[1])
    canvas[:hh, :ww] = image[:hh, :ww]
    return resize(canvas, int(size[0]), int(size[1]))


def grid_of(codes: Codes) -> np.ndarray:
    """The (4, Hp, Wp) code grid of image Codes (ImageError when they are not one)."""
    if len(codes.shape) != 2:
        raise ImageError(f"image codes need a (Hp, Wp) patch shape, got {codes.shape}")
    try:
        grid = unflatten(codes.ids, codes.shape[0])
    except ValueError as e:
        raise ImageError(f"cannot decode image tokens: {e}") from e
    if grid.shape[1:] != codes.shape:
        raise ImageError(f"{len(codes)} image ids are {grid.shape[1:]} patches, not {codes.shape}")
    return grid


def codes_of(grid: np.ndarray, scale: float = 1.0, size: Sequence[int] | None = None) -> Codes:
    """A (4, Hp, Wp) code grid (and how its image was scaled) as Codes."""
    try:
        return Codes(flatten(grid), np.shape(grid)[1:], scale, size)
    except ValueError as e:
        raise ImageError(f"not an image code grid: {e}") from e
