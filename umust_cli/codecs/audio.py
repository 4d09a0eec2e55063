"""Audio codec: 44.1 kHz mono audio <-> 4 DAC codes per 512-sample frame.

Pipeline (U-MusT section III-A-2)::

    WAV/FLAC/OGG file or float array --load_audio--> (samples,) float32 mono, 44.1 kHz
        (other rates resampled with soxr; multichannel averaged to mono)
        --zero-pad to a multiple of 512--> DAC encoder + residual VQ
        --> codes (4, frames), frames = ceil(samples / 512), codebook k -> row k
        --flatten--> local ids, frame by frame

Token order: frame t emits its 4 codes in codebook order, codebook k with
code c giving local id ``k * 1024 + c`` (the audio range of ``vocab.py``).
A clip of ``frames`` frames is ``4 * frames`` ids (86.13 frames a second).
``decode`` returns ``frames * 512`` samples of float32 audio at 44.1 kHz
(the input's zero padding is not removed: the ids do not carry the length).

Long inputs are encoded and decoded in chunks of ``chunk_frames`` frames with
``CONTEXT_FRAMES`` frames of real context on each side (wider than the
encoder's and decoder's receptive fields), so chunking does not change the
codes beyond floating-point rounding.

Shift augmentation (``shift_variants``): 9 copies of a clip shifted by
-20, -15, ..., +20 samples; a positive shift delays the audio (zeros in
front), a negative one advances it (the first samples dropped).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli import inputs
from umust_cli.checkpoint import load_module
from umust_cli.codecs.base import Codes, as_codes
from umust_cli.codecs.vocab import CODEBOOK_SIZE, NUM_CODEBOOKS, Vocabulary, codebook_names, default_vocabulary
from umust_cli.errors import AudioError, CheckpointError
from umust_cli.model.dac_codec import MODEL_KIND, SAMPLE_RATE, DACConfig, build_generator

HOP = 512                                 # samples per frame
SHIFTS = tuple(range(-20, 21, 5))         # shift augmentation offsets in samples
SILENCE_DBFS = -80.0                      # a clip whose peak is below this is "silent"
CONTEXT_FRAMES = 16                       # context on each side of a chunk (> receptive field)
CHUNK_FRAMES = 1024                       # frames per chunk (~11.9 s)


# ---------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------

def load_audio(source: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """A sound file or an array -> (samples,) float32 mono at 44.1 kHz.

    ``sample_rate`` is the rate of an array source (default 44.1 kHz); files
    carry their own. Unreadable, truncated, empty or silent audio raises
    AudioError.
    """
    if isinstance(source, np.ndarray):
        x, rate, what = _array_to_mono(source), sample_rate or SAMPLE_RATE, "array"
    else:
        (x, rate), what = _read_file(Path(source)), str(source)
    if rate != SAMPLE_RATE:
        x = resample(x, rate, SAMPLE_RATE)
    return check_audio(x, what)


def _array_to_mono(a: np.ndarray) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.floating):
        raise AudioError(f"expected a float audio array, got {a.dtype}")
    if a.ndim == 2:
        a = a.mean(axis=1)  # (samples, channels) -> (samples,)
    if a.ndim != 1:
        raise AudioError(f"expected a (samples,) or (samples, channels) array, got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    """The one validated audio loader (umust_cli.inputs): mono samples at the file's rate."""
    return inputs.load_audio(path)


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D float signal with soxr (high quality)."""
    import soxr

    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    return soxr.resample(x, rate, target, quality="HQ").astype(np.float32, copy=False)


def check_audio(x: np.ndarray, what: str = "audio") -> np.ndarray:
    """Refuse empty, non-finite or silent (peak below -80 dBFS) signals."""
    if x.size == 0:
        raise AudioError(f"{what} holds no samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{what} holds NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak <= 10 ** (SILENCE_DBFS / 20):
        raise AudioError(f"{what} is silent (peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS)")
    return x


def frames_for(samples: int) -> int:
    return -(-samples // HOP)


def shift_variants(audio: np.ndarray, shifts: Sequence[int] = SHIFTS) -> list[np.ndarray]:
    """Copies of ``audio`` shifted by each of ``shifts`` samples (variant 4 = the original)."""
    out = []
    for s in shifts:
        out.append(np.pad(audio, (s, 0)) if s > 0 else audio[-s:] if s < 0 else audio)
    return out


# ---------------------------------------------------------------------------
# Codes <-> local id sequences
# ---------------------------------------------------------------------------

def flatten(codes: np.ndarray) -> list[int]:
    """(4, frames) codes -> local ids, frame by frame, ``k * 1024 + c`` per code."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != NUM_CODEBOOKS:
        raise ValueError(f"expected ({NUM_CODEBOOKS}, frames) codes, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes outside [0, {CODEBOOK_SIZE})")
    offsets = np.arange(NUM_CODEBOOKS)[:, None] * CODEBOOK_SIZE
    return (codes.astype(np.int64) + offsets).T.reshape(-1).tolist()


def unflatten(ids: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`flatten`: local ids -> (4, frames) int64 codes."""
    a = np.asarray(ids, dtype=np.int64)
    if a.ndim != 1 or a.size == 0 or a.size % NUM_CODEBOOKS:
        raise ValueError(f"{a.size} ids are not whole frames of {NUM_CODEBOOKS} codes")
    frames = a.reshape(-1, NUM_CODEBOOKS)  # (frames, 4)
    if (a < 0).any() or (frames // CODEBOOK_SIZE != np.arange(NUM_CODEBOOKS)).any():
        raise ValueError("ids are not in codebook order q0, q1, q2, q3 within each frame")
    return (frames % CODEBOOK_SIZE).T.copy()


def chunk_spans(frames: int, chunk: int, context: int) -> list[tuple[int, int, int, int]]:
    """(lo, hi, keep_from, keep_to) frame spans: run on [lo, hi), keep [keep_from, keep_to)."""
    spans = []
    for start in range(0, frames, chunk):
        stop = min(frames, start + chunk)
        spans.append((max(0, start - context), min(frames, stop + context), start, stop))
    return spans


# ---------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------

class AudioCodec:
    """44.1 kHz mono audio <-> local ids in range(4096), backed by a trained DAC."""

    modality = "audio"

    def __init__(self, model, device: str = "cpu", chunk_frames: int = CHUNK_FRAMES):
        import torch

        if (model.n_codebooks != NUM_CODEBOOKS or model.codebook_size > CODEBOOK_SIZE
                or int(model.hop_length) != HOP or model.sample_rate != SAMPLE_RATE):
            raise CheckpointError(
                f"the audio codec needs {NUM_CODEBOOKS} codebooks of at most {CODEBOOK_SIZE} codes, "
                f"hop {HOP} and {SAMPLE_RATE} Hz; got {model.n_codebooks} x {model.codebook_size}, "
                f"hop {model.hop_length}, {model.sample_rate} Hz")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.codebook_size = model.codebook_size
        self.chunk_frames = chunk_frames

    @classmethod
    def load(cls, ckpt_dir: str | Path, vocab: Vocabulary | None = None,
             device: str = "cpu") -> "AudioCodec":
        """Weights + config from ``ckpt_dir``; its vocabulary must match ``vocab``
        (default: the shipped vocabulary), else VocabularyMismatchError."""
        model = load_module(ckpt_dir, MODEL_KIND, lambda cfg: build_generator(DACConfig.from_dict(cfg)),
                            vocab or default_vocabulary())
        return cls(model, device)

    @property
    def vocab_size(self) -> int:
        return NUM_CODEBOOKS * CODEBOOK_SIZE

    def token_names(self) -> list[str]:
        return codebook_names("aud")

    # ---- codes -------------------------------------------------------------
    def encode_codes(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Audio -> (4, ceil(samples / 512)) int64 codes."""
        return self.encode_batch(load_audio(source, sample_rate)[None])[0]

    def encode_batch(self, audio: np.ndarray) -> np.ndarray:
        """(B, samples) float32 clips of one length at 44.1 kHz -> (B, 4, ceil(samples / 512)) int64."""
        import torch

        frames = frames_for(audio.shape[1])
        padded = np.pad(np.asarray(audio, np.float32), ((0, 0), (0, frames * HOP - audio.shape[1])))
        x = torch.from_numpy(padded)
        out = np.empty((audio.shape[0], NUM_CODEBOOKS, frames), np.int64)
        with torch.inference_mode():
            for lo, hi, a, b in chunk_spans(frames, self.chunk_frames, CONTEXT_FRAMES):
                seg = x[:, lo * HOP:hi * HOP].to(self.device)[:, None]  # (B, 1, samples)
                codes = self.model.encode(seg)[1]                      # (B, 4, hi - lo)
                out[:, :, a:b] = codes[:, :, a - lo:b - lo].cpu().numpy()
        return out

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """(4, frames) codes -> (frames * 512,) float32 audio at 44.1 kHz."""
        import torch

        c = np.asarray(codes, dtype=np.int64)
        if (c.ndim != 2 or c.shape[0] != NUM_CODEBOOKS or c.shape[1] == 0
                or c.min() < 0 or c.max() >= self.codebook_size):
            raise AudioError(f"not a valid ({NUM_CODEBOOKS}, frames) code array with codes "
                             f"< {self.codebook_size}: shape {c.shape}")
        frames = c.shape[1]
        out = np.empty(frames * HOP, np.float32)
        with torch.inference_mode():
            for lo, hi, a, b in chunk_spans(frames, self.chunk_frames, CONTEXT_FRAMES):
                z = self.model.quantizer.from_codes(torch.from_numpy(c[None, :, lo:hi]).to(self.device))[0]
                y = self.model.decode(z)[0, 0]                          # ((hi - lo) * 512,)
                out[a * HOP:b * HOP] = y[(a - lo) * HOP:(b - lo) * HOP].float().cpu().numpy()
        return out

    # ---- the Codec protocol --------------------------------------------------
    def encode(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> Codes:
        """Audio file or float array -> local ids, frame by frame (module docstring);
        the Codes' shape is (frames,)."""
        codes = self.encode_codes(source, sample_rate)
        return Codes(flatten(codes), (codes.shape[1],))

    def decode(self, codes: Codes | Sequence[int]) -> np.ndarray:
        """Local ids (Codes or a plain sequence) -> float32 mono audio at 44.1 kHz,
        512 samples per 4 ids."""
        try:
            grid = unflatten(as_codes(codes).ids)
        except ValueError as e:
            raise AudioError(f"cannot decode audio tokens: {e}") from e
        return self.decode_codes(grid)
