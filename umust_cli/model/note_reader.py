"""The note reader: a convolutional-recurrent piano transcriber on the log-mel spectrogram.

The audio -> image direction's transcription reads notes from audio; the audio codec's 4 x 1024
codes keep only part of them (Transkun finds 67% of a clip's notes in the codec's reconstruction,
results.md), so, as the pitch reader reads pixels instead of image codes, this model reads the
samples. It is a small "Onsets and Frames" (Hawthorne et al. 2018): a log-mel front end, a
convolutional stack over (time, mel), a bidirectional GRU over time, and two rolls over the 88
piano keys: where a note starts (onset) and where it sounds (frame; its head also sees the onset
probabilities, as in the paper). ``data.roll.roll_notes`` reads notes from the two rolls.

Shapes: samples (B, N) at ``sample_rate`` -> log-mel (B, T, mels), T = N // hop + 1 (frame f is
centred on f * hop samples) -> (B, 1, T, mels) -> conv, conv, pool mels /2, conv, pool /2 ->
(B, 2c, T, mels // 4) -> (B, T, 2c * mels // 4) -> linear to ``hidden`` -> + BiGRU -> onset logits
(B, T, 88) and frame logits (B, T, 88).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from umust_cli.errors import AudioError, BadInputError
from umust_cli.model.translator import ROLL_PITCHES

MODEL_KIND = "umust-note-reader"
CHUNK_SECONDS = 30.0       # long audio is read in chunks of this many seconds ...
CONTEXT_SECONDS = 2.0      # ... each with this much audio either side, read and dropped


@dataclass(frozen=True)
class NoteReaderConfig:
    """Sizes of a note reader and its front end (saved with its weights)."""

    sample_rate: int = 16000
    n_fft: int = 2048
    hop: int = 320                # 20 ms frames
    mels: int = 229
    fmin: float = 30.0
    fmax: float = 8000.0
    channels: int = 16            # of the first convolutions; the third has twice as many
    hidden: int = 256             # frame features and GRU width (both directions together)
    layers: int = 2               # GRU layers
    dropout: float = 0.2          # on the frame features, in training
    onset_threshold: float = 0.5  # reading (data.roll.roll_notes): a note where onset probability peaks at or
                                  # above this; chosen on the valid split after training (results.md)

    def __post_init__(self) -> None:
        if self.mels < 4 or self.channels < 1 or self.hidden % 2 or self.layers < 1 or self.hop < 1:
            raise BadInputError("a note reader needs mels >= 4, channels, layers and hop >= 1, hidden even")
        if not 0 < self.onset_threshold < 1:
            raise BadInputError("a note reader's onset threshold must be between 0 and 1")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise BadInputError("a note reader needs 0 <= fmin < fmax <= sample_rate / 2")

    @property
    def frame_seconds(self) -> float:
        return self.hop / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "NoteReaderConfig":
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


class LogMel(nn.Module):
    """(B, N) samples -> (B, T, mels) natural log of the mel power spectrogram (floor 1e-5)."""

    def __init__(self, cfg: NoteReaderConfig):
        super().__init__()
        import librosa

        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.mels, fmin=cfg.fmin, fmax=cfg.fmax)
        self.register_buffer("filters", torch.from_numpy(fb.astype(np.float32)), persistent=False)  # (mels, bins)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.n_fft, self.hop = cfg.n_fft, cfg.hop

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(samples, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                               # (B, bins, T)
        return torch.log(torch.matmul(self.filters, power).clamp_min(1e-5)).transpose(1, 2)   # (B, T, mels)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU())


class NoteReader(nn.Module):
    def __init__(self, cfg: NoteReaderConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.front = LogMel(cfg)
        self.norm = nn.BatchNorm2d(1)
        self.convs = nn.Sequential(conv_block(1, c), conv_block(c, c), nn.MaxPool2d((1, 2)),
                                   conv_block(c, 2 * c), nn.MaxPool2d((1, 2)))
        self.proj = nn.Linear(2 * c * (cfg.mels // 4), cfg.hidden)
        self.rnn = nn.GRU(cfg.hidden, cfg.hidden // 2, cfg.layers, batch_first=True, bidirectional=True)
        self.onset = nn.Linear(cfg.hidden, ROLL_PITCHES)
        self.frame = nn.Linear(cfg.hidden + ROLL_PITCHES, ROLL_PITCHES)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, mels) log-mel -> onset and frame logits, each (B, T, 88)."""
        if mel.ndim != 3 or mel.shape[-1] != self.cfg.mels:
            raise AudioError(f"a note reader reads (batch, frames, {self.cfg.mels}) log-mel, not {tuple(mel.shape)}")
        x = self.convs(self.norm(mel.unsqueeze(1)))                          # (B, 2c, T, mels // 4)
        b, ch, t, m = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, ch * m)                      # (B, T, 2c * mels // 4)
        x = F.dropout(F.relu(self.proj(x)), self.cfg.dropout, self.training)   # (B, T, hidden)
        h = x + self.rnn(x)[0]                                               # residual, as the pitch reader
        onset = self.onset(h)                                                # (B, T, 88)
        frame = self.frame(torch.cat([h, torch.sigmoid(onset).detach()], dim=-1))
        return onset, frame

    @torch.no_grad()
    def probabilities(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mono float samples at ``cfg.sample_rate`` -> onset and frame probabilities, each (T, 88),
        read in CHUNK_SECONDS chunks with CONTEXT_SECONDS of audio either side."""
        was = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(device)
            total = x.shape[0] // self.cfg.hop + 1
            chunk, ctx = (round(s * self.cfg.sample_rate / self.cfg.hop) for s in (CHUNK_SECONDS, CONTEXT_SECONDS))
            parts = [self._chunk(x, f, min(total, f + chunk), ctx, total) for f in range(0, total, chunk)]
        finally:
            self.train(was)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _chunk(self, x: torch.Tensor, first: int, last: int, ctx: int,
               total: int) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of frames [first, last) of samples ``x``, read with ``ctx`` frames around."""
        lo, hi = max(0, first - ctx), min(total, last + ctx)
        hop = self.cfg.hop
        mel = self.front(x[lo * hop:(hi - 1) * hop + 1].unsqueeze(0))      # (1, hi - lo, mels)
        onset, frame = self(mel)
        keep = slice(first - lo, last - lo)
        return (torch.sigmoid(onset[0, keep]).float().cpu().numpy(),
                torch.sigmoid(frame[0, keep]).float().cpu().numpy())
