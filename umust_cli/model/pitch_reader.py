"""The pitch reader: a convolutional-recurrent CTC model on the pixels of a system image.

The translator's CTC head reads each staff's pitches from image codes; this model reads them
from the image ``data.staff_images.staff_image`` makes (end-to-end OMR as in Calvo-Zaragoza et
al. 2018, "End-to-end neural optical music recognition of monophonic scores", with one CTC
sequence per staff). Its output has the layout of the translator's CTC head: per image code
column (16 px), ``frames`` (CTC_FRAMES unless set) frames for each of CTC_STAVES staves, over the classes of
``data.staff_order.ctc_classes(ctc_target)`` plus the blank, so that the image -> MIDI reading
(``translate.direct``) times its emissions by column exactly as it times the head's.

Shapes: ink (B, 1, H, W) -> four stride-2 stages (the last three with a second, stride-1
convolution) -> (B, 4c, H/16, W/16) -> each column's features (B, W/16, 4c * H/16) -> a linear
map to ``hidden`` -> plus a bidirectional GRU's reading of them over columns (the clefs and
key are far to the left) -> (B, W/16, staves * frames * (n + 1)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from umust_cli.errors import BadInputError, ImageError
from umust_cli.model.translator import (CTC_FRAMES, CTC_STAVES, CTC_TARGETS, RHYTHMIC_TARGETS, column_ctc_emissions,
                                       column_ctc_log_probs)

MODEL_KIND = "umust-pitch-reader"
RHYTHMIC_FRAMES = 4  # frames a column for the rhythmic classes (a note value follows every chord): 2 leave
                     # 3% of the corpus's systems more classes than frames (data.staff_order.staff_groups)
MARGIN = 64          # blank pixels after every image: more than half the receptive field (87 px), so that a
                     # column reads the same alone and beside wider images in a batch (batch norm shifts blank paper)


@dataclass(frozen=True)
class PitchReaderConfig:
    """Sizes of a pitch reader (saved with its weights)."""

    height: int = 288             # image rows (data.staff_images.READ_HEIGHT)
    channels: int = 16            # of the first stage; then x2, x4, x4
    hidden: int = 192             # column features and GRU width (both directions together)
    layers: int = 2               # GRU layers
    ctc_target: str = "notated"   # the classes (data.staff_order.ctc_classes)
    ctc_classes: int = 351        # len(ctc_classes(ctc_target))
    dropout: float = 0.2          # on the column features, in training
    frames: int = 0               # CTC frames per column and staff; 0: the target's (RHYTHMIC_FRAMES for rhythmic,
                                  # which reads a note value after every chord, else CTC_FRAMES)

    def __post_init__(self) -> None:
        if self.height % 16 or self.channels < 1 or self.hidden % 2 or self.layers < 1 or self.frames < 0:
            raise BadInputError("a pitch reader's height must be a multiple of 16, channels and layers >= 1, "
                                "frames >= 0, hidden even")
        if self.ctc_target not in CTC_TARGETS or self.ctc_classes < 1:
            raise BadInputError(f"unknown pitch-reader target {self.ctc_target!r}; choose {' or '.join(CTC_TARGETS)}")


    @property
    def per_column(self) -> int:
        """CTC frames per column and staff: ``frames``, else the target's."""
        return self.frames or (RHYTHMIC_FRAMES if self.ctc_target in RHYTHMIC_TARGETS else CTC_FRAMES)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "PitchReaderConfig":
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


class Stage(nn.Module):
    """A stride-2 3x3 convolution, then (``second``) a stride-1 one, each with batch norm and ReLU."""

    def __init__(self, c_in: int, c_out: int, second: bool):
        super().__init__()
        self.down, self.norm = nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out)
        self.conv = nn.Conv2d(c_out, c_out, 3, 1, 1) if second else None
        self.norm2 = nn.BatchNorm2d(c_out) if second else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.down(x)))                # (B, c_out, H/2, W/2)
        return F.relu(self.norm2(self.conv(x))) if self.conv is not None else x


class PitchReader(nn.Module):
    def __init__(self, cfg: PitchReaderConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        chans = (1, c, 2 * c, 4 * c, 4 * c)
        self.stages = nn.ModuleList(Stage(a, b, k > 0) for k, (a, b) in enumerate(zip(chans, chans[1:])))
        self.proj = nn.Linear(4 * c * (cfg.height // 16), cfg.hidden)
        self.rnn = nn.GRU(cfg.hidden, cfg.hidden // 2, cfg.layers, batch_first=True, bidirectional=True)
        self.ctc = nn.Linear(cfg.hidden, CTC_STAVES * cfg.per_column * (cfg.ctc_classes + 1))

    def forward(self, ink: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, height, 16 C) ink in [0, 1] (1 = black), ``cols`` (B,) valid columns each (None:
        all) -> (B, C, CTC_STAVES * frames * (classes + 1)) CTC logits."""
        if ink.shape[-2] != self.cfg.height or ink.shape[-1] % 16:
            raise ImageError(f"a pitch reader reads {self.cfg.height}-row images of whole 16-px columns, "
                             f"not {tuple(ink.shape[-2:])}")
        x = ink
        for stage in self.stages:
            x = stage(x)                                                   # (B, c', H/2^k, W/2^k)
        b, ch, h, c = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, c, ch * h)                  # (B, C, 4c * H/16)
        x = F.dropout(F.relu(self.proj(x)), self.cfg.dropout, self.training)   # (B, C, hidden)
        if cols is not None and bool((cols < c).any()):
            packed = nn.utils.rnn.pack_padded_sequence(x, cols.cpu(), batch_first=True, enforce_sorted=False)
            context = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=c)[0]
        else:
            context = self.rnn(x)[0]                                       # (B, C, hidden)
        return self.ctc(x + context)                                       # residual: the column's own features too

    @torch.no_grad()
    def read(self, images: list[np.ndarray]) -> list[tuple[int, list[list[tuple[int, int]]]]]:
        """Reader images (``data.staff_images.staff_image``: (height, 16 k) uint8, white 255) ->
        per image (its columns, each staff's (column, class) emissions in reading order)."""
        return [(int(cols[0]), column_ctc_emissions(logits, cols, self.cfg.per_column)[0])
                for cols, logits in self._logits(images)]

    @torch.no_grad()
    def read_scored(self, images: list[np.ndarray]) -> list[tuple[int, list, list[np.ndarray]]]:
        """``read``, with each staff's CTC frame log-probabilities (``column_ctc_log_probs``)."""
        return [(int(cols[0]), column_ctc_emissions(logits, cols, self.cfg.per_column)[0],
                 column_ctc_log_probs(logits, cols, self.cfg.per_column)[0]) for cols, logits in self._logits(images)]

    def _logits(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(columns (1,), CTC logits (1, C, width)) of each image, read one at a time in eval mode."""
        was, out = self.training, []
        self.eval()
        try:
            device = next(self.parameters()).device
            for img in images:
                cols = torch.tensor([img.shape[1] // 16])
                out.append((cols, self(images_to_ink([img]).to(device))))
        finally:
            self.train(was)
        return out


def images_to_ink(images: list[np.ndarray]) -> torch.Tensor:
    """Reader images (each (H, 16 k) uint8, white 255; one H) -> (N, 1, H, 16 max k + MARGIN) float
    ink (black 1; blank paper on the right of each)."""
    if not images or len({img.shape[0] for img in images}) != 1:
        raise ImageError("pitch-reader images must be one height")
    width = max(img.shape[1] for img in images) + MARGIN
    ink = np.zeros((len(images), 1, images[0].shape[0], width), np.float32)
    for i, img in enumerate(images):
        ink[i, 0, :, :img.shape[1]] = (255.0 - img) / 255.0
    return torch.from_numpy(ink)
