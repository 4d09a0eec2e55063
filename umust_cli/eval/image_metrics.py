"""Reconstruction metrics of the score-image codec (pure numpy).

Both compare a reference image with its reconstruction, as (H, W) uint8
grayscale arrays of the same shape (255 = white paper):

* ``psnr``: peak signal-to-noise ratio in dB, peak 255 (``inf`` when equal).
* ``foreground_f1``: F1 of the *ink* pixels after binarization at
  ``threshold`` (a pixel is ink when darker than it), reference = truth.
"""

from __future__ import annotations

import math

import numpy as np

INK_THRESHOLD = 128


def _check(ref: np.ndarray, hyp: np.ndarray) -> None:
    if ref.shape != hyp.shape:
        raise ValueError(f"images differ in shape: {ref.shape} vs {hyp.shape}")


def psnr(ref: np.ndarray, hyp: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (peak 255)."""
    _check(ref, hyp)
    mse = float(np.mean((ref.astype(np.float64) - hyp.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def foreground_f1(ref: np.ndarray, hyp: np.ndarray, threshold: int = INK_THRESHOLD) -> float:
    """F1 of binarized ink pixels (value < threshold); 1.0 when neither has ink."""
    _check(ref, hyp)
    r, h = ref < threshold, hyp < threshold
    tp = int(np.count_nonzero(r & h))
    n_ref, n_hyp = int(np.count_nonzero(r)), int(np.count_nonzero(h))
    if n_ref == 0 and n_hyp == 0:
        return 1.0
    return 2.0 * tp / (n_ref + n_hyp)
