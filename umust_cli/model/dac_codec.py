"""The audio codec's networks: Descript Audio Codec (DAC), configured and built here.

U-MusT (section III-A-2) tokenizes audio with DAC at 44.1 kHz mono. The
released DAC weights use 9 codebooks and cannot be fetched here, so we train
our own DAC with 4 codebooks of 1024 codes and a hop of 512 samples (encoder
strides 2 * 4 * 8 * 8): 86.13 frames a second, 4 codes a frame.

This module is the one place where configuration becomes objects: frozen
dataclasses in, ``dac.model.DAC`` / ``dac.model.Discriminator`` and the
package's own losses (``dac.nn.loss``) out. Presets:

==========  =========================================  =================
name        generator (encoder_dim / decoder_dim)      fp16 weights
==========  =========================================  =================
``tiny``    4 / 16, tiny discriminator (tests, CPU)    ~0.3 MB
``small``   24 / 384 (shipped default)                 ~14 MB
``paper``   64 / 1536 (DAC's base.yml, 4 codebooks)    ~150 MB
==========  =========================================  =================

Loss weights and optimizer settings follow DAC's ``conf/base.yml`` and
``scripts/train.py``: mel 15, feature matching 2, adversarial 1, commitment
0.25, codebook 1; AdamW(lr 1e-4, betas 0.8/0.99) with ExponentialLR(0.999996);
gradient norm clipped at 1e3 (generator) and 10 (discriminator).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch

SAMPLE_RATE = 44100
MODEL_KIND = "umust-dac-audio"
DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


@dataclass(frozen=True)
class DACConfig:
    """Arguments of ``dac.model.DAC`` (the generator: encoder, RVQ, decoder)."""

    sample_rate: int = SAMPLE_RATE
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: float = 0.0   # fraction of a batch trained with fewer codebooks

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_rates"], d["decoder_rates"] = list(self.encoder_rates), list(self.decoder_rates)
        return d

    @classmethod
    def from_dict(cls, obj: dict) -> "DACConfig":
        return cls(**{**obj, "encoder_rates": tuple(obj["encoder_rates"]),
                      "decoder_rates": tuple(obj["decoder_rates"])})


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Arguments of ``dac.model.Discriminator`` (multi-period + multi-resolution STFT)."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    fft_sizes: tuple[int, ...] = (2048, 1024, 512)
    rates: tuple[int, ...] = ()            # multi-scale (MSD) rates; DAC uses none
    bands: tuple[tuple[float, float], ...] = DAC_BANDS

    def to_dict(self) -> dict:
        return {"periods": list(self.periods), "fft_sizes": list(self.fft_sizes),
                "rates": list(self.rates), "bands": [list(b) for b in self.bands]}

    @classmethod
    def from_dict(cls, obj: dict) -> "DiscriminatorConfig":
        return cls(periods=tuple(obj["periods"]), fft_sizes=tuple(obj["fft_sizes"]),
                   rates=tuple(obj["rates"]), bands=tuple(tuple(b) for b in obj["bands"]))


@dataclass(frozen=True)
class LossConfig:
    """DAC's loss setup (conf/base.yml) and weights (``lambdas``)."""

    stft_windows: tuple[int, ...] = (2048, 512)
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    mel_bins: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    mel_weight: float = 15.0
    feature_weight: float = 2.0
    adversarial_weight: float = 1.0
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("stft_windows", "mel_windows", "mel_bins"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, obj: dict) -> "LossConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()})


@dataclass(frozen=True)
class CodecPreset:
    generator: DACConfig
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


PRESETS: dict[str, CodecPreset] = {
    # Tests: ~140k parameters, one cheap STFT discriminator (no period discriminator).
    "tiny": CodecPreset(DACConfig(encoder_dim=4, decoder_dim=16),
                        DiscriminatorConfig(periods=(), fft_sizes=(128,))),
    # Shipped default: ~7M generator parameters (<= 16 MiB in fp16), DAC's discriminator.
    "small": CodecPreset(DACConfig(encoder_dim=24, decoder_dim=384)),
    # DAC's own widths (76M generator parameters) with U-MusT's 4 codebooks.
    "paper": CodecPreset(DACConfig(encoder_dim=64, decoder_dim=1536, quantizer_dropout=1.0)),
}


class Losses(NamedTuple):
    stft: torch.nn.Module       # dac.nn.loss.MultiScaleSTFTLoss
    mel: torch.nn.Module        # dac.nn.loss.MelSpectrogramLoss
    waveform: torch.nn.Module   # dac.nn.loss.L1Loss (logged, weight 0 as in DAC)
    gan: torch.nn.Module        # dac.nn.loss.GANLoss (holds the discriminator)


def build_generator(cfg: DACConfig):
    """A freshly initialised ``dac.model.DAC`` (weights drawn from torch's global RNG)."""
    from dac.model import DAC

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return DAC(encoder_dim=cfg.encoder_dim, encoder_rates=list(cfg.encoder_rates),
                   decoder_dim=cfg.decoder_dim, decoder_rates=list(cfg.decoder_rates),
                   n_codebooks=cfg.n_codebooks, codebook_size=cfg.codebook_size,
                   codebook_dim=cfg.codebook_dim, quantizer_dropout=cfg.quantizer_dropout,
                   sample_rate=cfg.sample_rate)


def build_discriminator(cfg: DiscriminatorConfig, sample_rate: int = SAMPLE_RATE):
    from dac.model import Discriminator

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return Discriminator(rates=list(cfg.rates), periods=list(cfg.periods),
                             fft_sizes=list(cfg.fft_sizes), sample_rate=sample_rate,
                             bands=[list(b) for b in cfg.bands])


def build_losses(cfg: LossConfig, discriminator: torch.nn.Module) -> Losses:
    from dac.nn.loss import GANLoss, L1Loss, MelSpectrogramLoss, MultiScaleSTFTLoss

    n = len(cfg.mel_windows)
    mel = MelSpectrogramLoss(n_mels=list(cfg.mel_bins), window_lengths=list(cfg.mel_windows),
                             mel_fmin=[0.0] * n, mel_fmax=[None] * n, pow=1.0,
                             clamp_eps=1e-5, mag_weight=0.0)
    return Losses(stft=MultiScaleSTFTLoss(window_lengths=list(cfg.stft_windows)), mel=mel,
                  waveform=L1Loss(), gan=GANLoss(discriminator))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
