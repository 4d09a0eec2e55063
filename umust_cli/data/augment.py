"""Scanned-look distortions of engraved system images (cf. GrandStaff's "distorted" set).

One call draws every parameter from ``numpy.random.default_rng(seed)`` and
applies, in order:

1. a small rotation and a smooth elastic warp (one resampling, white fill),
2. optional binarisation (a photocopied/binarised scan),
3. paper and ink tones (white is not quite white, black not quite black),
4. Gaussian blur, 5. Gaussian pixel noise, 6. a JPEG round trip.

Printed-page degradations, each off unless its range says otherwise (``PRINT_LOOK`` turns
them all on): ink spread (strokes thickened before anything else), bleed-through (the
mirrored, blurred ink of a "verso" shows faintly), page curl (lines bend towards one side
edge, which is shaded, as a page lifting from the scanner glass), paper texture (grain and
blotches) and uneven ink (smoothly varying ink darkness) after the tones, then after the
noise an optional black-and-white scan (thresholded: noise becomes specks) and a
low-resolution re-sampling (down and up again). Their parameters come from a second
generator, so with them off the output is the classic look's, pixel for pixel.

Input and output are uint8 grayscale [H, W] with a white background.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class ScanLookConfig:
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # px
    noise_std: tuple[float, float] = (0.0, 12.0)  # gray levels
    max_rotation_deg: float = 1.0
    warp_strength: float = 2.0  # px, largest displacement of the smooth elastic warp
    binarize_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)
    warp_cell: int = 128  # px between control points of the warp (its smoothness)
    paper_tone: tuple[int, int] = (225, 255)  # gray level that white becomes
    ink_tone: tuple[int, int] = (0, 50)  # gray level that black becomes
    binarize_threshold: tuple[int, int] = (128, 192)  # pixels darker than this become ink
    ink_spread: tuple[float, float] = (0.0, 0.0)  # px that strokes grow by (ink soaking into paper)
    bleed_through: tuple[float, float] = (0.0, 0.0)  # opacity of the mirrored ink of the other side
    page_curl: tuple[float, float] = (0.0, 0.0)  # px that lines bend by at the curled side edge
    paper_texture: tuple[float, float] = (0.0, 0.0)  # relative darkening by paper grain and blotches
    ink_unevenness: tuple[float, float] = (0.0, 0.0)  # fraction of ink darkness lost where it is thinnest
    resolution: tuple[float, float] = (1.0, 1.0)  # scan resolution factor (< 1: re-sampled down and up)
    bitonal_prob: float = 0.0  # chance of a black-and-white scan (thresholded after the noise)
    bitonal_threshold: tuple[int, int] = (150, 200)  # gray levels darker than this become ink


# The printed-page look: the classic distortions plus every printed-page degradation, mostly (80%)
# as black-and-white scans with dark ink and light JPEG loss, like the reference editions' scans
# (tuned on image statistics of PDFs other than those bench/scan_look_stats.py reports on).
PRINT_LOOK = ScanLookConfig(ink_spread=(0.3, 0.9), bleed_through=(0.0, 0.15), page_curl=(0.0, 4.0),
                            paper_texture=(0.0, 0.04), ink_unevenness=(0.0, 0.2), resolution=(0.75, 1.0),
                            bitonal_prob=0.8, ink_tone=(0, 25), jpeg_quality=(60, 95))
SCAN_LOOKS = {"classic": ScanLookConfig(), "print": PRINT_LOOK}


_MESH = 64  # px between the output points where the rotation + warp map is evaluated exactly


def scan_look(image: np.ndarray, config: ScanLookConfig, seed: int) -> np.ndarray:
    """uint8 grayscale [H, W] -> uint8 grayscale [H, W] that looks scanned; deterministic per seed."""
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty uint8 [H, W] image, got {image.dtype} {image.shape}")
    rng = np.random.default_rng(seed)
    # draw every parameter up front, in a fixed order
    angle = np.deg2rad(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    warp = rng.uniform(0.0, config.warp_strength)
    binarize = rng.random() < config.binarize_prob
    threshold = rng.uniform(*config.binarize_threshold)
    paper, ink = rng.uniform(*config.paper_tone), rng.uniform(*config.ink_tone)
    sigma = rng.uniform(*config.blur_sigma)
    noise = rng.uniform(*config.noise_std)
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    printed = _PrintDraw.draw(config, np.random.default_rng([seed, 1]))

    pil = _rotate_and_warp(Image.fromarray(_before_scan(image, printed)), angle, warp, config.warp_cell, rng)
    if printed.curl > 0:
        pil = Image.fromarray(_curl(np.asarray(pil), printed.curl, printed.curl_left))
    pil = pil.point(_tone_lut(paper, ink, threshold if binarize else None))
    if printed.texture > 0 or printed.uneven > 0 or printed.curl > 0:
        pil = Image.fromarray(_paper_and_ink(np.asarray(pil), paper, ink, printed))
    if sigma > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=sigma))
    img = np.asarray(pil)
    if noise > 0:
        noisy = rng.standard_normal(img.shape, dtype=np.float32)
        noisy *= noise
        noisy += img
        img = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    if printed.resolution < 0.99:
        img = _resample(img, printed.resolution)
    if printed.bitonal is not None:  # a black-and-white scan: noise becomes specks, edges go ragged
        img = np.where(img < printed.bitonal, np.uint8(ink), np.uint8(255))
    return _jpeg(img, quality)


def _resample(img: np.ndarray, factor: float) -> np.ndarray:
    """Down to ``factor`` of the size (area average) and back up (bilinear): a low-resolution scan."""
    pil = Image.fromarray(img)
    w, h = pil.size
    small = pil.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def _tone_lut(paper: float, ink: float, threshold: float | None) -> list[int]:
    """256-entry gray map: optional binarisation at ``threshold``, then 0 -> ink and 255 -> paper."""
    levels = np.arange(256, dtype=np.float32)
    if threshold is not None:
        levels = np.where(levels < threshold, 0.0, 255.0)
    return np.clip(ink + (paper - ink) / 255.0 * levels + 0.5, 0, 255).astype(np.uint8).tolist()


def _rotate_and_warp(
    img: Image.Image, angle: float, strength: float, cell: int, rng: np.random.Generator
) -> Image.Image:
    """Resample once (bilinear, white fill): rotation about the centre plus a smooth displacement.

    The map is evaluated on a mesh of output points every _MESH px and PIL interpolates
    bilinearly inside each mesh cell (the displacement is smooth over ``cell`` px, so
    the piecewise-bilinear mesh is indistinguishable from the exact map).
    """
    w, h = img.size
    ys = np.unique(np.r_[np.arange(0, h, _MESH), h]).astype(np.float32)  # [My] mesh rows (pixel edges)
    xs = np.unique(np.r_[np.arange(0, w, _MESH), w]).astype(np.float32)  # [Mx]
    dy = _smooth_field(ys, xs, h, w, cell, strength, rng)  # [My, Mx] px
    dx = _smooth_field(ys, xs, h, w, cell, strength, rng)
    yy, xx = ys[:, None] - h / 2, xs[None, :] - w / 2
    cos, sin = np.cos(angle), np.sin(angle)
    src_x = cos * xx + sin * yy + w / 2 + dx  # [My, Mx]
    src_y = -sin * xx + cos * yy + h / 2 + dy
    mesh = []
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]  # PIL order: NW, SW, SE, NE
            quad = [float(v) for a, b in corners for v in (src_x[a, b], src_y[a, b])]
            mesh.append(((int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])), quad))
    return img.transform(img.size, Image.Transform.MESH, mesh, resample=Image.Resampling.BILINEAR, fillcolor=255)


def _smooth_field(
    ys: np.ndarray, xs: np.ndarray, h: int, w: int, cell: int, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Random smooth field at the points ys x xs, max |value| = strength; knots every ~``cell`` px."""
    knots = rng.standard_normal((h // cell + 2, w // cell + 2))
    if strength <= 0:
        return np.zeros((len(ys), len(xs)))
    field = _bspline_matrix(ys / max(h, 1), knots.shape[0]) @ knots @ _bspline_matrix(xs / max(w, 1), knots.shape[1]).T
    peak = float(np.abs(field).max())
    return field * (strength / peak) if peak > 0 else field


def _bspline_matrix(u: np.ndarray, n_knots: int) -> np.ndarray:
    """[len(u), n_knots] cubic B-spline weights of positions u in [0, 1] on evenly spread knots."""
    d = np.abs(u[:, None] * (n_knots - 1) - np.arange(n_knots)[None, :])
    weights = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    return weights / weights.sum(axis=1, keepdims=True)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode/decode round trip of a uint8 [H, W] image."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.array(Image.open(buf).convert("L"))


# ------------------------------------------------------------ printed-page degradations
@dataclass(frozen=True)
class _PrintDraw:
    """One draw of the printed-page degradations (0 / 1.0 = off)."""

    spread: float
    bleed: float
    curl: float
    curl_left: bool
    texture: float
    uneven: float
    resolution: float
    bitonal: float | None  # threshold of a black-and-white scan
    seed: int  # of the noise fields

    @staticmethod
    def draw(config: ScanLookConfig, rng: np.random.Generator) -> "_PrintDraw":
        return _PrintDraw(spread=rng.uniform(*config.ink_spread), bleed=rng.uniform(*config.bleed_through),
                          curl=rng.uniform(*config.page_curl), curl_left=bool(rng.random() < 0.5),
                          texture=rng.uniform(*config.paper_texture), uneven=rng.uniform(*config.ink_unevenness),
                          resolution=rng.uniform(*config.resolution),
                          bitonal=(rng.uniform(*config.bitonal_threshold)
                                   if rng.random() < config.bitonal_prob else None),
                          seed=int(rng.integers(2**31)))


def _before_scan(image: np.ndarray, p: _PrintDraw) -> np.ndarray:
    """Ink spread, then bleed-through: the printed page before it is scanned."""
    img = image
    if p.spread > 0.05:  # blur, then let any ink the blur reached count twice as dark
        blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=p.spread)), np.float32)
        img = np.minimum(img, np.clip(255.0 - 2.0 * (255.0 - blurred), 0, 255)).astype(np.uint8)
    if p.bleed > 0.005:  # the other side's ink, mirrored, shifted and soft, darkens the paper a little
        rng = np.random.default_rng([p.seed, 0])
        h, w = img.shape
        verso = np.roll(img[:, ::-1], (int(rng.integers(-h // 4 - 1, h // 4 + 1)), int(rng.integers(w))), (0, 1))
        verso = np.asarray(Image.fromarray(np.ascontiguousarray(verso)).filter(ImageFilter.GaussianBlur(2.0)))
        img = (img * (1.0 - p.bleed * (255.0 - verso) / 255.0)).astype(np.uint8)
    return img


def _curl(img: np.ndarray, amount: float, left: bool) -> np.ndarray:
    """Columns shifted down by ``amount`` * (distance from the flat side)^2: lines bend towards one edge."""
    from scipy.ndimage import map_coordinates

    h, w = img.shape
    u = np.linspace(1.0, 0.0, w) if left else np.linspace(0.0, 1.0, w)  # 1 at the curled edge
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys -= (amount * u**2)[None, :].astype(np.float32)
    return map_coordinates(img, [ys, xs], order=1, mode="constant", cval=255.0).astype(np.uint8)


def _paper_and_ink(img: np.ndarray, paper: float, ink: float, p: _PrintDraw) -> np.ndarray:
    """Paper grain and blotches, uneven ink and the shadow of a curled edge, on a toned image."""
    rng = np.random.default_rng([p.seed, 1])
    h, w = img.shape
    out = img.astype(np.float32)
    if p.texture > 0:
        from scipy.ndimage import gaussian_filter

        grain = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 0.8)
        blotch = _smooth_field(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), h, w, 48, 1.0, rng)
        field = 0.5 * np.abs(blotch) + 0.25 * np.clip(grain / (grain.std() + 1e-6), -2, 2)
        out *= 1.0 - p.texture * field.astype(np.float32)
    if p.uneven > 0:
        inkness = np.clip((paper - img.astype(np.float32)) / max(paper - ink, 1.0), 0, 1)
        thin = _smooth_field(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), h, w, 96, 1.0, rng)
        out += inkness * (p.uneven * (thin + 1.0) / 2.0).astype(np.float32) * (paper - ink)
    if p.curl > 0 and p.bitonal is None:  # a black-and-white scan's threshold takes the shadow away
        u = np.linspace(1.0, 0.0, w) if p.curl_left else np.linspace(0.0, 1.0, w)
        out *= (1.0 - 0.25 * (p.curl / 6.0) * u**4)[None, :].astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
