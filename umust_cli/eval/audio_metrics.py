"""Reconstruction metrics of the audio codec (numpy + librosa's mel filters).

Both compare a reference signal with an estimate (1-D float arrays, same
sample rate). The codec's output is a whole number of frames long, so the
longer signal is cut to the shorter one's length first.

* ``si_sdr``: scale-invariant signal-to-distortion ratio in dB (Le Roux et
  al., 2019): both signals zero-mean; the reference is scaled by the
  least-squares gain ``a = <est, ref> / <ref, ref>``; SI-SDR =
  ``10 log10(|a ref|^2 / |est - a ref|^2)``. A scaled copy scores the same as
  the original; ``inf`` for a perfect (scaled) copy.
* ``mel_distance``: DAC's multi-scale mel distance: for each (window, mel
  bins) pair, the mean absolute difference of ``log10(max(mel, 1e-5))`` of
  the magnitude mel spectrograms (hann window, hop = window / 4), summed over
  the seven scales of DAC's mel loss. 0 for identical signals.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BINS = (5, 10, 20, 40, 80, 160, 320)
CLAMP = 1e-5


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref, np.float64).reshape(-1), np.asarray(est, np.float64).reshape(-1)
    n = min(ref.size, est.size)
    if n == 0:
        raise ValueError("cannot compare empty signals")
    return ref[:n], est[:n]


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR of ``est`` against ``ref`` in dB."""
    ref, est = _pair(ref, est)
    ref, est = ref - ref.mean(), est - est.mean()
    energy = float(ref @ ref)
    if energy == 0.0:
        raise ValueError("the reference signal is silent; SI-SDR is undefined")
    target = (float(est @ ref) / energy) * ref
    noise = float(((est - target) ** 2).sum())
    signal = float((target ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _log_mel(x: np.ndarray, sr: int, window: int, bins: int) -> np.ndarray:
    """(bins, frames) log10 magnitude mel spectrogram."""
    import librosa

    spec = np.abs(librosa.stft(x, n_fft=window, hop_length=window // 4, window="hann",
                               center=True, pad_mode="reflect"))
    with warnings.catch_warnings():  # tiny windows leave some mel filters empty
        warnings.simplefilter("ignore", UserWarning)
        fb = librosa.filters.mel(sr=sr, n_fft=window, n_mels=bins)
    return np.log10(np.maximum(fb @ spec, CLAMP))


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int = 44100,
                 windows: Sequence[int] = MEL_WINDOWS, bins: Sequence[int] = MEL_BINS) -> float:
    """DAC's multi-scale log-mel L1 distance (sum over scales); 0 when identical."""
    ref, est = _pair(ref, est)
    total = 0.0
    for w, b in zip(windows, bins):
        total += float(np.mean(np.abs(_log_mel(est, sample_rate, w, b) -
                                      _log_mel(ref, sample_rate, w, b))))
    return total


def reconstruction_scores(ref: np.ndarray, est: np.ndarray, sample_rate: int = 44100) -> dict:
    """{"si_sdr": dB (capped at 99), "mel_distance": ...} rounded for logs and reports."""
    sdr = si_sdr(ref, est)
    return {"si_sdr": round(min(sdr, 99.0), 3),
            "mel_distance": round(mel_distance(ref, est, sample_rate), 4)}
