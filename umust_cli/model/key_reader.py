"""The key-signature reader: a small CNN on the pixels of a system's first columns.

OMR reads pitch names from image codes (the translator's CTC head); the key signature decides
how most of them sound, and the codes blur its accidentals (``data/key_crops.py``). This model
reads it from the crop ``data.key_crops.key_crop`` makes: four stride-2 3x3 convolutions with
batch norm, then one linear map of the whole feature grid to the translator key head's scores
(the count of accidentals plus, unless none, their kind: rare keys share with common ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from umust_cli.errors import BadInputError, ImageError
from umust_cli.model.translator import KEY_COUNTS, KEY_FIFTHS, key_scores_to_logits

MODEL_KIND = "umust-key-reader"


@dataclass(frozen=True)
class KeyReaderConfig:
    """Sizes of a key reader (saved with its weights)."""

    height: int = 256       # crop rows (data.key_crops.CROP_HEIGHT)
    width: int = 192        # crop columns (data.key_crops.CROP_WIDTH)
    channels: int = 16      # of the first convolution; then x2, x4, x4
    dropout: float = 0.3    # on the feature grid, in training

    def __post_init__(self) -> None:
        if self.height % 16 or self.width % 16 or self.channels < 1:
            raise BadInputError("a key reader's crop sides must be multiples of 16 and channels >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "KeyReaderConfig":
        return cls(**{k: obj[k] for k in ("height", "width", "channels", "dropout") if k in obj})


class KeyReader(nn.Module):
    def __init__(self, cfg: KeyReaderConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        chans = (1, c, 2 * c, 4 * c, 4 * c)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.out = nn.Linear(4 * c * (cfg.height // 16) * (cfg.width // 16), KEY_COUNTS + 2)

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        """(B, 1, height, width) ink in [0, 1] (1 = black) -> (B, len(KEY_FIFTHS)) logits."""
        x = ink
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))                                    # (B, C', H/2^k, W/2^k)
        x = F.dropout(x.flatten(1), self.cfg.dropout, self.training)     # (B, 4c * H/16 * W/16)
        return key_scores_to_logits(self.out(x))

    @torch.no_grad()
    def read(self, crops: np.ndarray) -> list[tuple[int, float]]:
        """(N, height, width) uint8 crops (white 255) -> per crop (fifths, its probability)."""
        if crops.ndim != 3 or crops.shape[1:] != (self.cfg.height, self.cfg.width):
            raise ImageError(f"key reader crops must be (N, {self.cfg.height}, {self.cfg.width}), not {crops.shape}")
        was = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            probs = self(crops_to_ink(crops).to(device)).softmax(-1).cpu()
        finally:
            self.train(was)
        best = probs.max(-1)
        return [(KEY_FIFTHS[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist())]


def crops_to_ink(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 (white 255) -> (N, 1, H, W) float ink (black 1)."""
    return torch.from_numpy(255 - crops.astype(np.float32)).div_(255.0)[:, None]
