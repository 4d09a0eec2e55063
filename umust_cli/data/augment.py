"""Scanned-look distortions of engraved system images (cf. GrandStaff's "distorted" set).

One call draws every parameter from ``numpy.random.default_rng(seed)`` and
applies, in order:

1. a small rotation and a smooth elastic warp (one resampling, white fill),
2. optional binarisation (a photocopied/binarised scan),
3. paper and ink tones (white is not quite white, black not quite black),
4. Gaussian blur, 5. Gaussian pixel noise, 6. a JPEG round trip.

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

    pil = _rotate_and_warp(Image.fromarray(image), angle, warp, config.warp_cell, rng)
    pil = pil.point(_tone_lut(paper, ink, threshold if binarize else None))
    if sigma > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=sigma))
    img = np.asarray(pil)
    if noise > 0:
        noisy = rng.standard_normal(img.shape, dtype=np.float32)
        noisy *= noise
        noisy += img
        img = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    return _jpeg(img, quality)


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
