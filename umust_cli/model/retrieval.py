"""Audio <-> sheet passage embeddings (Carvalho & Widmer, ISMIR 2023, "RNN" model).

Two pathways of the same shape. Each cuts its passage into snippets (1 s of
spectrogram, or one window of the system image), encodes every snippet with a
VGG-style CNN (3x3 conv blocks with batch norm, ELU and max-pooling, a 1x1 conv
to 32 channels and a dense layer to 32), runs a GRU over the snippet sequence
and maps its last state to an L2-normalised passage embedding. Training pulls
matching audio/sheet passages together with a triplet (hinge) loss on cosine
distance, the other passages of the mini-batch being the negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class RetrievalModelConfig:
    channels: tuple[int, ...] = (24, 48, 96, 96)  # conv blocks; each ends with 2x2 max-pooling
    convs_per_block: int = 1  # the paper's VGG blocks have 2; 1 keeps CPU training practical
    snippet_dim: int = 32  # 1x1 conv channels and snippet embedding size
    rnn_hidden: int = 128
    embed_dim: int = 64
    audio_shape: tuple[int, int] = (92, 20)  # (bins, frames) of one audio snippet
    sheet_shape: tuple[int, int] = (96, 96)  # (height, width) px of one sheet snippet


PRESETS = {
    "tiny": RetrievalModelConfig(channels=(4, 8, 8, 8), snippet_dim=8, rnn_hidden=16, embed_dim=16,
                                 sheet_shape=(32, 32)),
    "small": RetrievalModelConfig(channels=(16, 32, 64, 64), sheet_shape=(80, 80)),  # CPU training
    "paper": RetrievalModelConfig(convs_per_block=2, sheet_shape=(160, 180)),  # the paper's CNN (GPU)
}


class SnippetCNN(nn.Module):
    """(N, 1, H, W) snippets -> (N, snippet_dim) snippet embeddings."""

    def __init__(self, cfg: RetrievalModelConfig, shape: tuple[int, int]):
        super().__init__()
        layers, c_in = [], 1
        for c_out in cfg.channels:
            for _ in range(cfg.convs_per_block):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ELU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers += [nn.Conv2d(c_in, cfg.snippet_dim, 1, bias=False), nn.BatchNorm2d(cfg.snippet_dim), nn.ELU()]
        self.features = nn.Sequential(*layers)
        h, w = shape
        for _ in cfg.channels:
            h, w = -(-h // 2), -(-w // 2)  # ceil-mode pooling
        self.fc = nn.Linear(cfg.snippet_dim * h * w, cfg.snippet_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.fc(self.features(x).flatten(1)))


class PassageEncoder(nn.Module):
    """(B, S, H, W) padded snippet sequences + lengths (B,) -> (B, embed_dim) unit vectors."""

    def __init__(self, cfg: RetrievalModelConfig, shape: tuple[int, int]):
        super().__init__()
        self.cnn = SnippetCNN(cfg, shape)
        self.rnn = nn.GRU(cfg.snippet_dim, cfg.rnn_hidden, batch_first=True)
        self.proj = nn.Linear(cfg.rnn_hidden, cfg.embed_dim)

    def forward(self, snippets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, s, h, w = snippets.shape
        valid = torch.arange(s, device=snippets.device)[None, :] < lengths.to(snippets.device)[:, None]  # (B, S)
        codes = self.cnn(snippets[valid].unsqueeze(1))  # (N, D): only real snippets
        seq = codes.new_zeros(b, s, codes.shape[-1])
        seq[valid] = codes.to(seq.dtype)
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.rnn(packed)  # (1, B, hidden): the state after each sequence's last snippet
        return F.normalize(self.proj(last[0]).float(), dim=-1)


class RetrievalModel(nn.Module):
    def __init__(self, cfg: RetrievalModelConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = PassageEncoder(cfg, cfg.audio_shape)
        self.sheet = PassageEncoder(cfg, cfg.sheet_shape)

    def encode(self, kind: str, snippets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return (self.audio if kind == "audio" else self.sheet)(snippets, lengths)

    def encode_snippets(self, kind: str, snippets: torch.Tensor) -> torch.Tensor:
        """(N, H, W) single snippets -> (N, snippet_dim) unit vectors of the CNN alone: the snippet
        model of snippet-level pre-training and of the snippet-voting baseline (BL)."""
        cnn = (self.audio if kind == "audio" else self.sheet).cnn
        return F.normalize(cnn(snippets.unsqueeze(1)).float(), dim=-1)

    def cnn_parameters(self) -> list[nn.Parameter]:
        return [*self.audio.cnn.parameters(), *self.sheet.cnn.parameters()]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) x (m, d) unit vectors -> (n, m) cosine distances in [0, 2]."""
    return 1.0 - a @ b.T


def triplet_loss(audio: torch.Tensor, sheet: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge max(0, margin + d(a_i, s_i) - d(a_i, s_j)) over i != j, in both directions."""
    dist = cosine_distance(audio, sheet)  # (B, B); the diagonal holds the matching pairs
    pos = dist.diag()
    off = ~torch.eye(len(dist), dtype=torch.bool, device=dist.device)
    a2s = F.relu(margin + pos[:, None] - dist)[off]  # audio anchors, other sheets as negatives
    s2a = F.relu(margin + pos[None, :] - dist)[off]  # sheet anchors, other audios as negatives
    return 0.5 * (a2s.mean() + s2a.mean())
