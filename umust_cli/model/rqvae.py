"""RQ-VAE for grayscale score images (U-MusT section III-A-1).

A VQGAN-style convolutional autoencoder (ResNet blocks, no attention) that
compresses an image 16x in each direction, followed by a residual quantizer of
depth 4 with *unshared* codebooks of 1024 codes: every 16x16 patch becomes a
bundle of 4 codes, one per codebook, each quantizing what the previous ones
left over.

Pixel convention (see ``umust_cli.codecs.image``): the network sees *ink*
intensity in [0, 1] -- background 0, black ink 1 -- so that the zero padding
of the convolutions looks like blank paper.

Codebooks are learnt by exponential moving averages (EMA, as in VQ-VAE-2 and
RQ-VAE) rather than by a codebook loss: EMA updates do not depend on the
optimiser's learning rate and are markedly more stable in bf16 autocast. Each
codebook is initialised from residuals of the first training batch and codes
whose usage falls far below average are restarted onto random residuals of the
current batch, which keeps all 4 x 1024 codes alive (a dead code is wasted
vocabulary in the translator). Only the encoder commitment loss is a gradient
term; the straight-through estimator carries the decoder's gradient back to
the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class RQVAEConfig:
    """Architecture of the RQ-VAE; saved with the weights (config.json)."""

    in_channels: int = 1                                 # grayscale
    base_channels: int = 32                              # "model dimension"
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)      # one level each; 4 downsamples
    num_res_blocks: int = 2                              # per encoder level (decoder: +1)
    norm_groups: int = 8                                 # GroupNorm groups
    code_dim: int = 64                                   # latent / code vector size
    num_codebooks: int = 4                               # residual depth d
    codebook_size: int = 1024
    ema_decay: float = 0.99
    dead_ratio: float = 0.03    # restart codes used < dead_ratio x the mean usage

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, obj: dict) -> "RQVAEConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown RQ-VAE config fields: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items()})


PRESETS: dict[str, RQVAEConfig] = {
    # For tests: a few seconds of CPU per hundred steps.
    "tiny": RQVAEConfig(base_channels=8, num_res_blocks=1, norm_groups=2, code_dim=16,
                        codebook_size=32),
    # The shipped default: ~4.2 M parameters, ~8.4 MB as fp16 safetensors.
    "small": RQVAEConfig(base_channels=32, num_res_blocks=2, norm_groups=8, code_dim=64),
    # The paper's size (model dimension 256); needs a GPU.
    "paper": RQVAEConfig(base_channels=256, num_res_blocks=2, norm_groups=32, code_dim=256),
}


# ---------------------------------------------------------------------------
# Convolutional encoder / decoder
# ---------------------------------------------------------------------------

class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C,H/2,W/2)
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C,2H,2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """(B, 1, H, W) -> (B, code_dim, H/16, W/16)."""

    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        layers: list[nn.Module] = []
        c = chans[0]
        for i, c_out in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResnetBlock(c, c_out, g))
                c = c_out
            if i < len(chans) - 1:
                layers.append(Downsample(c))
        layers += [ResnetBlock(c, c, g), ResnetBlock(c, c, g)]  # middle, no attention
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.code_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, code_dim, h, w) -> (B, 1, 16h, 16w)."""

    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        g = cfg.norm_groups
        c = chans[-1]
        self.conv_in = nn.Conv2d(cfg.code_dim, c, 3, padding=1)
        layers: list[nn.Module] = [ResnetBlock(c, c, g), ResnetBlock(c, c, g)]
        for i in reversed(range(len(chans))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResnetBlock(c, chans[i], g))
                c = chans[i]
            if i > 0:
                layers.append(Upsample(c))
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------
# Residual quantizer with EMA codebooks
# ---------------------------------------------------------------------------

class EMACodebook(nn.Module):
    """One codebook of K vectors of size D, learnt by EMA of assigned inputs."""

    def __init__(self, size: int, dim: int, decay: float, dead_ratio: float):
        super().__init__()
        self.decay, self.dead_ratio, self.eps = decay, dead_ratio, 1e-5
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, r: torch.Tensor) -> torch.Tensor:
        """(N, D) residuals -> (N,) index of the closest code (squared L2)."""
        d = (r.pow(2).sum(1, keepdim=True) - 2 * r @ self.embed.t()
             + self.embed.pow(2).sum(1)[None, :])
        return d.argmin(1)

    @torch.no_grad()
    def init_from(self, r: torch.Tensor) -> None:
        """Initialise every code with a random residual of the first batch."""
        picks = torch.randint(0, r.shape[0], (self.embed.shape[0],), device=r.device)
        self.embed.copy_(r[picks])
        self.embed_sum.copy_(r[picks])
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, r: torch.Tensor, idx: torch.Tensor) -> None:
        """EMA step on (N, D) residuals assigned to (N,) codes, then dead-code restarts."""
        onehot = F.one_hot(idx, self.embed.shape[0]).type(r.dtype)  # (N, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ r, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.embed.shape[0] * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.dead_ratio * self.cluster_size.mean()
        n_dead = int(dead.sum())
        if n_dead:
            picks = torch.randint(0, r.shape[0], (n_dead,), device=r.device)
            level = self.cluster_size.mean()
            self.embed[dead] = r[picks]
            self.embed_sum[dead] = r[picks] * level
            self.cluster_size[dead] = level


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor   # (N, D), straight-through: gradient flows to the input
    codes: torch.Tensor       # (N, depth) int64
    commit_loss: torch.Tensor  # scalar
    usage: torch.Tensor       # (depth,) perplexity of each codebook on this batch


class ResidualQuantizer(nn.Module):
    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.codebooks = nn.ModuleList(
            EMACodebook(cfg.codebook_size, cfg.code_dim, cfg.ema_decay, cfg.dead_ratio)
            for _ in range(cfg.num_codebooks))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """(N, D) float32 vectors -> quantized sum of depth codes per vector."""
        residual, total = z.detach(), torch.zeros_like(z)
        codes, commit, usage = [], z.new_zeros(()), []
        for cb in self.codebooks:
            if self.training and not bool(cb.initialized):
                cb.init_from(residual)
            idx = cb.nearest(residual)
            q = cb.embed[idx]  # a copy: the EMA update below does not change it
            if self.training:
                cb.update(residual, idx)
            total = total + q
            residual = residual - q
            commit = commit + F.mse_loss(z, total.detach())  # RQ-VAE: every partial sum
            codes.append(idx)
            usage.append(_perplexity(idx, cb.embed.shape[0]))
        quantized = z + (total - z).detach()
        return QuantizerOutput(quantized, torch.stack(codes, 1), commit / len(self.codebooks),
                               torch.stack(usage))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, depth) codes -> (N, D) sum of the code vectors."""
        return sum(cb.embed[codes[:, k]] for k, cb in enumerate(self.codebooks))


def _perplexity(idx: torch.Tensor, size: int) -> torch.Tensor:
    p = torch.bincount(idx, minlength=size).float() / max(idx.numel(), 1)
    return torch.exp(-(p * torch.log(p + 1e-10)).sum())


# ---------------------------------------------------------------------------
# The full model
# ---------------------------------------------------------------------------

class RQOutput(NamedTuple):
    recon: torch.Tensor        # (B, 1, H, W) ink in ~[0, 1] (not clamped)
    codes: torch.Tensor        # (B, depth, H/16, W/16) int64
    commit_loss: torch.Tensor  # scalar
    usage: torch.Tensor        # (depth,) codebook perplexities


class RQVAE(nn.Module):
    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualQuantizer(cfg)

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """(B, D, h, w) latents -> quantized latents of the same shape (fp32, no autocast)."""
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
            out = self.quantizer(flat)
        zq = out.quantized.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return zq, out

    def forward(self, x: torch.Tensor) -> RQOutput:
        """(B, 1, H, W) ink, H and W multiples of 16."""
        self._check_shape(x)
        zq, q = self._quantize(self.encoder(x))
        b, _, h, w = zq.shape
        codes = q.codes.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return RQOutput(self.decoder(zq), codes, q.commit_loss, q.usage)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) ink -> (B, depth, H/16, W/16) int64 codes."""
        self._check_shape(x)
        z = self.encoder(x)
        b, d, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
            codes = []
            for cb in self.quantizer.codebooks:
                idx = cb.nearest(flat)
                flat = flat - cb.embed[idx]
                codes.append(idx)
        return torch.stack(codes, 1).reshape(b, h, w, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, depth, h, w) codes -> (B, 1, 16h, 16w) ink."""
        b, depth, h, w = codes.shape
        flat = codes.permute(0, 2, 3, 1).reshape(-1, depth)
        z = self.quantizer.lookup(flat).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.decoder(z)

    def _check_shape(self, x: torch.Tensor) -> None:
        f = self.cfg.downsample
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"expected (B, {self.cfg.in_channels}, H, W) with H, W multiples "
                             f"of {f}; got {tuple(x.shape)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
