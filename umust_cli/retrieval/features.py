"""Inputs of the retrieval model: log-frequency spectrograms and sheet-image strips, cut into snippets.

Audio (as in the audio-sheet retrieval literature, Dorfer et al. / Carvalho & Widmer):
22.05 kHz mono, STFT of 2048 samples at 20 frames per second, magnitudes pooled by a
triangular filterbank with 16 bands per octave from 30 Hz to 6 kHz (duplicate bands at low
frequencies merged, 92 bands remain), then log10(1 + x). A snippet is 20 frames (1 s).

Sheet: a system image scaled to a fixed height (ink = 1, paper = 0) and cut into
overlapping windows of ``sheet_window`` pixels with a hop of ``sheet_hop`` pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umust_cli import inputs
from umust_cli.errors import AudioError, BadInputError, ImageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SILENCE_PEAK = 1e-4  # an excerpt whose peak stays below this is silent
BLANK_INK = 1e-4  # a sheet whose mean ink stays below this is blank


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 22050
    n_fft: int = 2048
    fps: float = 20.0  # spectrogram frames per second
    fmin: float = 30.0
    fmax: float = 6000.0
    bands_per_octave: int = 16  # 16 bands per octave, 30 Hz - 6 kHz: 92 bands at 22.05 kHz
    snippet_frames: int = 20  # one audio snippet = 1 s
    snippet_hop_frames: int = 10
    sheet_height: int = 96  # px: every system image is scaled to this height
    sheet_window: int = 96  # px: width of one sheet snippet
    sheet_hop: int = 48

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.fps))

    @property
    def n_bins(self) -> int:
        return filterbank(self.sample_rate, self.n_fft, self.fmin, self.fmax, self.bands_per_octave).shape[0]


# ------------------------------------------------------------------ audio
@functools.lru_cache(maxsize=4)
def filterbank(sample_rate: int, n_fft: int, fmin: float, fmax: float, bands_per_octave: int) -> np.ndarray:
    """Triangular log-frequency filters (n_bands, n_fft // 2 + 1), each normalised to sum 1."""
    n_freqs = n_fft // 2 + 1
    step = sample_rate / n_fft  # Hz per FFT bin
    k_lo = int(np.floor(bands_per_octave * np.log2(fmin / 440.0)))
    k_hi = int(np.ceil(bands_per_octave * np.log2(fmax / 440.0)))
    freqs = 440.0 * 2.0 ** (np.arange(k_lo, k_hi + 1) / bands_per_octave)
    freqs = freqs[(freqs >= fmin) & (freqs <= fmax)]
    bins = np.unique(np.round(freqs / step).astype(int))  # merge bands that fall on one FFT bin
    bins = bins[(bins > 0) & (bins < n_freqs - 1)]
    filters = np.zeros((len(bins) - 2, n_freqs), dtype=np.float32)
    for i, (lo, mid, hi) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        filters[i, lo:mid + 1] = np.linspace(0.0, 1.0, mid - lo + 1)
        filters[i, mid:hi + 1] = np.linspace(1.0, 0.0, hi - mid + 1)
        filters[i] /= filters[i].sum()
    return filters


def load_audio(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Mono float32 samples of ``path`` (seconds [start, end)) at ``sample_rate``; AudioError if
    unusable (the checks of the one audio loader, umust_cli.inputs: truncated, too long or short,
    NaN, silent). Resampled with librosa's soxr_mq, as the shipped models were trained."""
    import librosa

    mono, sr = inputs.load_audio(path, None, start, end)
    if sr != sample_rate:
        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate, res_type="soxr_mq")
    return mono.astype(np.float32)


def log_spectrogram(samples: np.ndarray, cfg: FeatureConfig, name: str = "audio") -> np.ndarray:
    """float32 (n_bins, frames): log10(1 + filtered STFT magnitude); AudioError if silent."""
    import librosa

    if samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (peak below {SILENCE_PEAK}); nothing to search with")
    mag = np.abs(librosa.stft(samples, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=True))
    fb = filterbank(cfg.sample_rate, cfg.n_fft, cfg.fmin, cfg.fmax, cfg.bands_per_octave)
    return np.log10(1.0 + fb @ mag).astype(np.float32)


def audio_snippets(spec: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(S, n_bins, snippet_frames) windows of ``spec`` (padded with zeros to one window at least)."""
    return _windows(spec, cfg.snippet_frames, cfg.snippet_hop_frames)


# ------------------------------------------------------------------ sheet
def load_sheet(path: str | Path, cfg: FeatureConfig) -> np.ndarray:
    """uint8 (sheet_height, width) ink image of a system (255 = ink); ImageError if unusable or blank."""
    return sheet_strip(inputs.load_image(path), cfg, name=str(path))


def sheet_strip(gray: np.ndarray, cfg: FeatureConfig, name: str = "image") -> np.ndarray:
    """A grayscale system image (paper white) scaled to ``sheet_height``, inverted to uint8 ink."""
    from PIL import Image

    if gray.ndim != 2 or min(gray.shape) < 4:
        raise ImageError(f"{name} is empty (shape {gray.shape})")
    ink = 255 - gray
    if float(ink.mean()) / 255.0 < BLANK_INK:
        raise ImageError(f"{name} is blank (no ink); expected an image of one score system")
    width = max(1, int(round(gray.shape[1] * cfg.sheet_height / gray.shape[0])))
    scaled = Image.fromarray(ink).resize((width, cfg.sheet_height), Image.Resampling.BILINEAR)
    return np.asarray(scaled, dtype=np.uint8)


def sheet_snippets(strip: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(S, sheet_height, sheet_window) float32 windows of a uint8 strip, ink in [0, 1]."""
    return sheet_ink_windows(strip, cfg).astype(np.float32) / np.float32(255.0)


def sheet_ink_windows(strip: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The windows of :func:`sheet_snippets` as uint8 ink (0..255): ``sheet_snippets`` = this / 255."""
    return _windows(np.asarray(strip, dtype=np.uint8), cfg.sheet_window, cfg.sheet_hop)


def _windows(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(S, rows, size) windows along the last axis of (rows, T), the last one zero-padded."""
    length = x.shape[1]
    count = 1 + max(0, int(np.ceil((length - size) / hop)))
    padded = np.zeros((x.shape[0], (count - 1) * hop + size), dtype=x.dtype)
    padded[:, :length] = x
    return np.stack([padded[:, i * hop: i * hop + size] for i in range(count)])


def stretch_frames(spec: np.ndarray, factor: float) -> np.ndarray:
    """``spec`` resampled along time by ``factor`` (> 1 = longer = slower), linear interpolation."""
    frames = spec.shape[1]
    new = max(1, int(round(frames * factor)))
    pos = np.linspace(0.0, frames - 1, new)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, frames - 1)
    w = (pos - lo).astype(spec.dtype)
    return spec[:, lo] * (1 - w) + spec[:, hi] * w


def kind_of(path: str | Path) -> str:
    """'audio' or 'sheet' from a file's suffix; ImageError/AudioError-free: BadInputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in IMAGE_SUFFIXES:
        return "sheet"
    raise BadInputError(f"{path}: not an audio ({' '.join(AUDIO_SUFFIXES)}) or image "
                        f"({' '.join(IMAGE_SUFFIXES)}) file")
