"""U-MusT's translator: an encoder-decoder Transformer over the unified vocabulary (section IV).

Sequences are *steps* of up to 4 global ids, a LongTensor ``(B, T, 4)`` with [PAD] (0) in
unused slots. An image step is one 16x16 patch and an audio step one codec frame: 4 codes,
one per codebook, whose embeddings are summed. A notation (LMX) or MIDI step is
one token in slot 0. [SOS]_X / [EOS]_X are one-id steps of the sequence they frame.

Positions, ``(B, T, 2)``, are learned per modality: images get (column, row) with row 0 for
the special steps, the others (t, 0) (``generate.step_positions``). A target-modality
embedding is added to every encoder input. Source images have two layouts (``image_layout``): ``grid``
(the paper: one encoder position per patch) and ``column`` (one per patch column: each
row is squeezed to ``row_dim`` and the rows concatenated, then projected to the model width).

The main decoder is autoregressive over steps. For image and audio targets a one-layer
sub-decoder turns each main-decoder state into the 4 codes of the step (input at sub-step k:
the state plus the embedding of code k-1). Output embeddings are tied to the input
embeddings and the softmax only ever sees the target's ids (codebook k at sub-step k) plus
[EOS] at the step's first code. Building steps and batches, and generation, are in
``generate.py``.

This module is below ``codecs`` in the package layers, so it takes the vocabulary's layout
(ranges, [SOS]/[EOS] ids) through ``make_config`` and keeps it in the config.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from umust_cli.checkpoint import WEIGHTS, read_weights
from umust_cli.errors import BadInputError, CheckpointError

MODALITIES = ("image", "audio", "notation", "midi")  # the order of codecs.base.MODALITIES
CODES_PER_STEP = {"image": 4, "audio": 4, "notation": 1, "midi": 1}
SLOTS = 4            # ids per step in the (B, T, 4) layout
CODEBOOK_SIZE = 1024
PAD = 0
LAYOUTS = ("grid", "column")
MODEL_KIND = "umust-translator"
GUIDE_SIGMA = 0.2    # width of the guided-attention diagonal (the TTS paper's g)
CTC_TARGETS = ("written", "spelled", "marked", "notated", "rhythmic", "beamed")
RHYTHMIC_TARGETS = ("rhythmic", "beamed")   # the targets a rhythm reader reads (OMR writes LMX from them)    # data.staff_order.ctc_classes
CTC_FRAMES = 2       # CTC head: frames per image column (a chord needs one frame per note)
CTC_STAVES = 2       # CTC head: one target sequence per staff
KEY_FIFTHS = tuple(range(-7, 8))   # key-signature head: its classes (sharps > 0, flats < 0)
KEY_COUNTS = 8       # ... scored as a count of accidentals (0-7) plus their kind (sharp or flat)
KEY_COLUMNS = 12     # ... reads the first image columns (clef, key signature, time signature)
ROLL_LOW, ROLL_PITCHES = 21, 88   # roll head: piano keys A0..C8, onset and sounding per audio frame


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """The sizes of a model; ``make_config`` adds the vocabulary's layout."""

    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    d_ff: int
    sub_heads: int
    dropout: float
    max_steps: tuple[int, int, int, int]   # per modality (MODALITIES order); image: patches
    max_columns: int = 256                 # image patch columns (2048 px)
    max_rows: int = 32                     # image patch rows (512 px)
    row_dim: int = 32                      # column layout: width of one row before the concat


PRESETS = {
    # Section IV: 12 + 12 layers, width 1024, FFN 4096 (GELU), 16 heads, sub-decoder 8 heads.
    "paper": Preset(1024, 16, 12, 12, 4096, 8, 0.1, (2048, 2048, 2048, 2048), row_dim=64),
    # Trainable on 2 CPU cores, <= 16 MiB in fp16 (see bench/translator_speed.py and the report).
    # d 192 because the tied embedding of the 11.7k-id vocabulary alone is 2.25M parameters:
    # 7.7M in all, 14.7 MiB in fp16; audio up to 1,800 frames (20.9 s).
    "small": Preset(192, 4, 4, 4, 768, 4, 0.1, (1024, 1800, 1024, 1024), max_columns=160,
                    max_rows=28, row_dim=16),
    "tiny": Preset(32, 2, 2, 2, 64, 2, 0.0, (64, 64, 64, 64), max_columns=16, max_rows=8,
                   row_dim=8),
}


@dataclass(frozen=True)
class TranslatorConfig:
    vocab_size: int
    ranges: tuple[tuple[int, int], ...]    # [start, stop) of each modality's ids
    sos: tuple[int, ...]
    eos: tuple[int, ...]
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    d_ff: int
    sub_heads: int
    dropout: float
    max_steps: tuple[int, ...]
    max_columns: int
    max_rows: int
    row_dim: int
    image_layout: str = "grid"
    column_norm: bool = False              # column layout: LayerNorm on the mixed column (content)
    ctc_classes: int = 0                   # > 0: a CTC head over image columns (training aid; ctc_loss)
    ctc_target: str = "written"            # its classes: pitch names (step + octave), or names x flat/natural/sharp, or x printed sign
    key_head: bool = False                 # a key-signature classifier on the first columns (key_loss)
    roll_head: bool = False                # audio sources: a piano roll (onsets, sounding notes) per frame (roll_loss)

    def __post_init__(self) -> None:
        if self.image_layout not in LAYOUTS:
            raise BadInputError(f"unknown image layout {self.image_layout!r}; "
                                f"choose one of {', '.join(LAYOUTS)}")
        if self.d_model % self.n_heads or self.d_model % self.sub_heads:
            raise CheckpointError(f"d_model {self.d_model} is not a multiple of the heads")
        if self.ctc_target not in CTC_TARGETS:
            raise BadInputError(f"unknown CTC target {self.ctc_target!r}; choose {' or '.join(CTC_TARGETS)}")
        if (self.ctc_classes or self.key_head) and self.image_layout != "column":
            raise BadInputError("the CTC and key heads read image columns: they need the column layout")

    def index(self, modality: str) -> int:
        return MODALITIES.index(modality)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "TranslatorConfig":
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [n for n in required if n not in obj]
        if missing:
            raise CheckpointError(f"translator config lacks {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: _tuples(v) for k, v in obj.items() if k in names})


def _tuples(v: Any) -> Any:
    """JSON lists back to the config's (nested) tuples."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def make_config(preset: str, vocab: Any, image_layout: str = "grid", column_norm: bool = False,
                ctc_classes: int = 0, ctc_target: str = "written", key_head: bool = False,
                roll_head: bool = False) -> TranslatorConfig:
    """A preset's sizes with ``vocab``'s layout (a codecs.vocab.Vocabulary). The defaults of
    ``image_layout``, ``column_norm``, ``ctc_classes``, ``key_head`` and ``roll_head`` are those of checkpoints
    saved before the options."""
    if preset not in PRESETS:
        raise BadInputError(f"unknown translator preset {preset!r}; choose one of "
                            f"{', '.join(PRESETS)}")
    ranges = tuple((vocab.range(m).start, vocab.range(m).stop) for m in MODALITIES)
    for m, (lo, hi) in zip(MODALITIES, ranges):
        if CODES_PER_STEP[m] == 4 and hi - lo != 4 * CODEBOOK_SIZE:
            raise CheckpointError(f"{m} range has {hi - lo} ids, expected 4 x {CODEBOOK_SIZE}")
    return TranslatorConfig(len(vocab), ranges, tuple(vocab.sos(m) for m in MODALITIES),
                            tuple(vocab.eos(m) for m in MODALITIES),
                            image_layout=image_layout, column_norm=column_norm, ctc_classes=ctc_classes,
                            ctc_target=ctc_target, key_head=key_head, roll_head=roll_head,
                            **asdict(PRESETS[preset]))


# ---------------------------------------------------------------------------
# The allowed output ids
# ---------------------------------------------------------------------------

def allowed_ids(cfg: TranslatorConfig, modality: str, sub: int) -> tuple[int, int, int | None]:
    """(start, stop, eos or None): the ids the softmax sees for ``modality`` at sub-step ``sub``."""
    lo, hi = cfg.ranges[cfg.index(modality)]
    eos = cfg.eos[cfg.index(modality)]
    if CODES_PER_STEP[modality] == 1:
        return lo, hi, eos
    return lo + sub * CODEBOOK_SIZE, lo + (sub + 1) * CODEBOOK_SIZE, eos if sub == 0 else None


def ids_to_classes(ids: torch.Tensor, allowed: tuple[int, int, int | None]) -> torch.Tensor:
    """Global ids -> class indices of ``allowed`` ([PAD] -> -100, ignored by the loss)."""
    lo, hi, eos = allowed
    cls = ids - lo
    if eos is not None:
        cls = torch.where(ids == eos, hi - lo, cls)
    cls = torch.where(ids == PAD, -100, cls)
    bad = (cls != -100) & ((cls < 0) | (cls >= hi - lo + (eos is not None)))
    if bool(bad.any()):
        raise BadInputError(f"target ids outside [{lo}, {hi}) + [EOS]: "
                            f"{ids[bad][:5].tolist()}")
    return cls


def classes_to_ids(cls: torch.Tensor, allowed: tuple[int, int, int | None]) -> torch.Tensor:
    lo, hi, eos = allowed
    return torch.where(cls == hi - lo, eos if eos is not None else PAD, cls + lo)


# ---------------------------------------------------------------------------
# Layers (pre-LN; scaled_dot_product_attention everywhere)
# ---------------------------------------------------------------------------

class KVCache:
    """Keys and values of one self-attention layer, in a buffer grown by doubling."""

    def __init__(self, capacity: int = 64):
        self.capacity, self.n = capacity, 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, t, dh = k.shape                                   # (B, H, T_new, dh)
        if self.k is None or self.n + t > self.k.shape[2]:
            size = max(self.capacity, 2 * (self.n + t))
            k_buf, v_buf = k.new_empty(b, h, size, dh), v.new_empty(b, h, size, dh)
            if self.k is not None:
                k_buf[:, :, :self.n], v_buf[:, :, :self.n] = self.k[:, :, :self.n], self.v[:, :, :self.n]
            self.k, self.v = k_buf, v_buf
        self.k[:, :, self.n:self.n + t], self.v[:, :, self.n:self.n + t] = k, v
        self.n += t
        return self.k[:, :, :self.n], self.v[:, :, :self.n]

    def clear(self) -> None:
        """Forget the cached positions and keep the buffers (the sub-decoder's, every step)."""
        self.n = 0

    def select(self, rows: torch.Tensor) -> None:
        """Keep the rows ``rows`` (B',) of the batch, in that order (beam search reorders)."""
        if self.k is not None:                                  # the filled positions only
            self.k[:, :, :self.n] = self.k[rows, :, :self.n]
            self.v[:, :, :self.n] = self.v[rows, :, :self.n]


def key_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """(B, S) validity -> the (B, 1, 1, S) attention mask of SDPA, or None when nothing is
    padded (lets SDPA take its fastest kernel)."""
    return None if bool(valid.all()) else valid[:, None, None, :]


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, d = x.shape                                            # (B, T, d) -> (B, H, T, dh)
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    b, h, t, dh = y.shape                                        # (B, H, T, dh) -> (B, T, d)
    return y.transpose(1, 2).reshape(b, t, h * dh)


class SelfAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:                                    # new steps see all cached ones
            k, v = cache.append(k, v)
            causal = causal and q.shape[2] > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge(y))

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Generation: one new position per row (x: (B, 1, d)) after the cached ones; the same
        kernels as ``forward`` without its module calls."""
        b = x.shape[0]
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).view(b, 3, self.n_heads, 1, -1).unbind(1)
        k, v = cache.append(k, v)
        return F.linear(_merge(F.scaled_dot_product_attention(q, k, v)), self.out.weight, self.out.bias)


class CrossAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.kv, self.out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def memory(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder output, computed once per source; contiguous per head
        (every generated step reads them)."""
        k, v = self.kv(xa).chunk(2, -1)
        return _heads(k, self.n_heads).contiguous(), _heads(v, self.n_heads).contiguous()

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """With ``weights``, the attention is computed explicitly and its (B, H, T, S)
        probabilities are appended there (the guided-attention loss reads them)."""
        q = _heads(self.q(x), self.n_heads)
        p = self.dropout if self.training else 0.0
        if weights is None:
            return self.out(_merge(F.scaled_dot_product_attention(q, *kv, attn_mask=mask, dropout_p=p)))
        logits = q @ kv[0].transpose(-1, -2) / math.sqrt(q.shape[-1])           # (B, H, T, S)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        probs = logits.softmax(-1)
        weights.append(probs)
        return self.out(_merge(F.dropout(probs, p, self.training) @ kv[1]))

    def step(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
             mask: torch.Tensor | None) -> torch.Tensor:
        """``forward`` in inference without module calls."""
        q = _heads(F.linear(x, self.q.weight, self.q.bias), self.n_heads)
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask)
        return F.linear(_merge(y), self.out.weight, self.out.bias)


class Dropout(nn.Dropout):
    """nn.Dropout that is no operation at all outside training (one op less per use when
    generating step by step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.training and self.p > 0 else x


class MLP(nn.Module):
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__()
        self.fc, self.proj, self.drop = nn.Linear(d, d_ff), nn.Linear(d_ff, d), Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(x, self.fc.weight, self.fc.bias)), self.proj.weight,
                        self.proj.bias)


def _norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


class EncoderBlock(nn.Module):
    """Self-attention + MLP; also the sub-decoder's one layer (with ``causal``)."""

    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), SelfAttention(d, n_heads, dropout)
        self.ln2, self.mlp = nn.LayerNorm(d), MLP(d, d_ff, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask, causal, cache))
        return x + self.mlp(self.ln2(x))

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Generation (causal, no padding): one new position per row after the cached ones."""
        x = x + self.attn.step(_norm(x, self.ln1), cache)
        return x + self.mlp.step(_norm(x, self.ln2))


class DecoderBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), SelfAttention(d, n_heads, dropout)
        self.ln2, self.cross = nn.LayerNorm(d), CrossAttention(d, n_heads, dropout)
        self.ln3, self.mlp = nn.LayerNorm(d), MLP(d, d_ff, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                src_mask: torch.Tensor | None, cache: KVCache | None = None,
                weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), causal=True, cache=cache))
        x = x + self.drop(self.cross(self.ln2(x), kv, src_mask, weights))
        return x + self.mlp(self.ln3(x))

    def step(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
             src_mask: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
        """Generation: one new step per row (x: (B, 1, d)) after the cached ones."""
        x = x + self.attn.step(_norm(x, self.ln1), cache)
        x = x + self.cross.step(_norm(x, self.ln2), kv, src_mask)
        return x + self.mlp.step(_norm(x, self.ln3))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

class Translator(nn.Module):
    def __init__(self, cfg: TranslatorConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok = nn.Embedding(cfg.vocab_size, d, padding_idx=PAD)   # tied to the outputs
        self.pos = nn.ModuleDict({m: nn.Embedding(n + 2, d) for m, n in zip(MODALITIES, cfg.max_steps)
                                  if m != "image"})
        self.image_col = nn.Embedding(cfg.max_columns + 1, d)
        self.image_row = nn.Embedding(cfg.max_rows + 1, d)
        self.target = nn.Embedding(len(MODALITIES), d)
        if cfg.image_layout == "column":
            self.row_in = nn.Linear(d, cfg.row_dim)
            self.column_mix = nn.Linear((cfg.max_rows + 1) * cfg.row_dim, d)
            # Without it the mixed content is ~1/4 of the positions' size after two 0.02-init maps,
            # and a decoder learns the notation's grammar long before it reads the image.
            self.column_ln = nn.LayerNorm(d) if cfg.column_norm else nn.Identity()
        if cfg.ctc_classes:   # per column: CTC_FRAMES frames of each staff, classes + blank
            self.ctc = nn.Linear(d, CTC_STAVES * CTC_FRAMES * (cfg.ctc_classes + 1))
        if cfg.key_head:      # the first KEY_COLUMNS columns, side by side -> accidental count + kind
            self.key = nn.Linear(KEY_COLUMNS * d, KEY_COUNTS + 2)
        if cfg.roll_head:     # per audio frame: onset and sounding logits of every piano key
            self.roll = nn.Linear(d, 2 * ROLL_PITCHES)
        blocks = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(*blocks) for _ in range(cfg.n_encoder_layers))
        self.decoder = nn.ModuleList(DecoderBlock(*blocks) for _ in range(cfg.n_decoder_layers))
        self.enc_ln, self.dec_ln = nn.LayerNorm(d), nn.LayerNorm(d)
        self.sub = EncoderBlock(d, cfg.sub_heads, cfg.d_ff, cfg.dropout)
        self.sub_pos = nn.Embedding(SLOTS, d)
        self.sub_ln = nn.LayerNorm(d)
        self.drop = Dropout(cfg.dropout)
        self.apply(_init_weights)

    # ---- embeddings ---------------------------------------------------
    def embed(self, steps: torch.Tensor, pos: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, T, 4) ids + (B, T, 2) positions -> (B, T, d): summed codes + learned positions.
        Positions must lie within the model's tables (``check_positions``)."""
        x = self.tok(steps).sum(-2)                                      # [PAD] embeds as zeros
        if modality == "image":
            return x + self.image_col(pos[..., 0]) + self.image_row(pos[..., 1])
        return x + self.pos[modality](pos[..., 0])

    def check_positions(self, pos: torch.Tensor, modality: str) -> None:
        """BadInputError unless every position fits the model's tables."""
        cfg = self.cfg
        if modality == "image":
            limits = ((pos[..., 0], cfg.max_columns, "image patch column"),
                      (pos[..., 1], cfg.max_rows, "image patch row"))
        else:
            limits = ((pos[..., 0], cfg.max_steps[cfg.index(modality)] + 1, f"{modality} step"),)
        for p, most, what in limits:
            if p.numel() and int(p.max()) > most:
                raise BadInputError(f"sequence too long: {what} {int(p.max())} (counting from 0, "
                                    f"with [SOS]/[EOS]); this model takes at most {most}")

    def _columns(self, src: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Column layout: (B, S, 4) image steps -> (B, C, d) one vector per patch column."""
        b = src.shape[0]
        rows, dim = self.cfg.max_rows + 1, self.cfg.row_dim
        self.check_positions(pos, "image")
        valid = src[..., 0] != PAD                                        # (B, S)
        e = self.row_in(self.tok(src).sum(-2)) * valid[..., None]         # (B, S, row_dim)
        col, row = pos[..., 0] * valid, pos[..., 1] * valid
        n_cols = int(col.max()) + 1
        idx = (col * rows + row)[..., None].expand(-1, -1, dim)
        grid = e.new_zeros(b, n_cols * rows, dim).scatter_add_(1, idx, e)  # (B, C*R, row_dim)
        used = valid.new_zeros(b, n_cols, dtype=torch.long).scatter_add_(1, col, valid.long()) > 0
        cols = torch.arange(n_cols, device=src.device)
        content = self.column_ln(self.column_mix(grid.view(b, n_cols, rows * dim)))  # (B, C, d)
        return content + self.image_col(cols), used

    # ---- encoder / decoder --------------------------------------------
    def encode(self, src: torch.Tensor, src_pos: torch.Tensor, src_modality: str,
               tgt_modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory (B, S', d) and its attention mask (``key_mask``; S' = columns in the column
        layout)."""
        if src_modality == "image" and self.cfg.image_layout == "column":
            x, valid = self._columns(src, src_pos)
        else:
            self.check_positions(src_pos, src_modality)
            x, valid = self.embed(src, src_pos, src_modality), src[..., 0] != PAD
        x = self.drop(x + self.target.weight[self.cfg.index(tgt_modality)])
        mask = key_mask(valid)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_ln(x), mask

    def memory(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every decoder layer (once per source)."""
        return [block.cross.memory(memory) for block in self.decoder]

    def decode(self, tgt: torch.Tensor, tgt_pos: torch.Tensor, tgt_modality: str,
               kv: list[tuple[torch.Tensor, torch.Tensor]], src_mask: torch.Tensor | None,
               caches: list[KVCache] | None = None, weights: list[torch.Tensor] | None = None
               ) -> torch.Tensor:
        """(B, T, 4) target steps (new ones only with ``caches``) -> main-decoder states (B, T, d).
        The caller checks the positions (``check_positions``). ``weights`` collects each
        layer's cross-attention probabilities (training)."""
        x = self.drop(self.embed(tgt, tgt_pos, tgt_modality))
        if caches is not None and x.shape[1] == 1 and not self.training:   # generation
            for i, block in enumerate(self.decoder):
                x = block.step(x, kv[i], src_mask, caches[i])
            return _norm(x, self.dec_ln)
        for i, block in enumerate(self.decoder):
            x = block(x, kv[i], src_mask, caches[i] if caches is not None else None, weights)
        return self.dec_ln(x)

    def sub_decode(self, h: torch.Tensor, prev: torch.Tensor, cache: KVCache | None = None
                   ) -> torch.Tensor:
        """Sub-decoder: states (N, d) and the codes before each sub-step (N, K) -> (N, K, d).

        Sub-step k reads the state plus code k-1 (prev[:, k]; [PAD] at k = 0). With a
        ``cache``, ``prev`` holds only the new sub-steps, which continue the cached ones.
        """
        start = cache.n if cache is not None else 0
        k = prev.shape[1]
        x = h[:, None, :] + self.tok(prev) + self.sub_pos.weight[start:start + k]
        if cache is not None and k == 1 and not self.training:            # generation
            return _norm(self.sub.step(x, cache), self.sub_ln)
        return self.sub_ln(self.sub(x, causal=True, cache=cache))

    def logits(self, h: torch.Tensor, tgt_modality: str, sub: int = 0) -> torch.Tensor:
        """States (..., d) -> logits over ``allowed_ids`` (tied output embeddings)."""
        lo, hi, eos = allowed_ids(self.cfg, tgt_modality, sub)
        out = F.linear(h, self.tok.weight[lo:hi])
        if eos is None:
            return out
        return torch.cat([out, F.linear(h, self.tok.weight[eos:eos + 1])], -1)

    def logit_weights(self, tgt_modality: str) -> list[torch.Tensor]:
        """Generation: per sub-step the output embeddings ``logits`` multiplies by, the [EOS]
        row appended (one matrix product a sub-step). A copy: take it again after training."""
        out = []
        for sub in range(CODES_PER_STEP[tgt_modality]):
            lo, hi, eos = allowed_ids(self.cfg, tgt_modality, sub)
            rows = [self.tok.weight[lo:hi]] + ([self.tok.weight[eos:eos + 1]] if eos is not None else [])
            out.append(torch.cat(rows).contiguous())
        return out

    # ---- training -----------------------------------------------------
    def forward(self, src: torch.Tensor, src_pos: torch.Tensor, tgt: torch.Tensor,
                tgt_pos: torch.Tensor, src_modality: str, tgt_modality: str,
                token_dropout: float = 0.0, guide: float = 0.0, ctc: float = 0.0,
                ctc_targets: torch.Tensor | None = None, key: float = 0.0,
                key_targets: torch.Tensor | None = None, roll: float = 0.0,
                roll_targets: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced mean cross-entropy over the target's codes.

        ``tgt`` is the whole target, [SOS] step .. [EOS] step (then [PAD] steps): the decoder
        reads ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``. In training, ``token_dropout`` of the
        steps the decoder reads (never [SOS]) are blanked to [PAD], so that it cannot predict
        from the target's own history alone and has to read the source. ``guide`` > 0 adds
        that multiple of :func:`guided_attention_loss` (training only), and ``ctc`` > 0 that
        multiple of :meth:`ctc_loss` on ``ctc_targets`` (training only; an image source), and
        ``key`` > 0 that multiple of :meth:`key_loss` on ``key_targets`` (the same), and ``roll``
        > 0 that multiple of :meth:`roll_loss` on ``roll_targets`` (training only; an audio source).
        """
        memory, mask = self.encode(src, src_pos, src_modality, tgt_modality)
        self.check_positions(tgt_pos, tgt_modality)
        inputs = tgt[:, :-1]
        if self.training and token_dropout > 0:
            blank = torch.rand(inputs.shape[:2], device=inputs.device) < token_dropout   # (B, T)
            blank[:, 0] = False
            inputs = inputs.masked_fill(blank[..., None], PAD)
        weights = [] if self.training and guide > 0 else None
        h = self.decode(inputs, tgt_pos[:, :-1], tgt_modality, self.memory(memory), mask, weights=weights)
        extra = 0.0
        if weights:
            src_valid = mask[:, 0, 0] if mask is not None else memory.new_ones(memory.shape[:2], dtype=torch.bool)
            extra = guide * guided_attention_loss(weights, tgt[:, :-1, 0] != PAD, src_valid)
        if self.training and ctc > 0 and ctc_targets is not None:
            extra = extra + ctc * self.ctc_loss(memory, mask, ctc_targets)
        if self.training and key > 0 and key_targets is not None:
            extra = extra + key * self.key_loss(memory, mask, key_targets)
        if self.training and roll > 0 and roll_targets is not None:
            extra = extra + roll * self.roll_loss(memory, roll_targets)
        return self._target_loss(h, tgt[:, 1:], tgt_modality) + extra

    def ctc_loss(self, memory: torch.Tensor, mask: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """CTC of the encoder's image columns (B, C, d) against each staff's pitch classes
        ``targets`` (B, CTC_STAVES, L; -1 pads; ``data.staff_order``): :func:`column_ctc_loss`
        of the head's logits."""
        if not self.cfg.ctc_classes:
            raise CheckpointError("this model has no CTC head (ctc_classes = 0)")
        return column_ctc_loss(self.ctc(memory), _mask_columns(memory, mask), targets)

    @torch.no_grad()
    def spell_ctc_head(self, weight: torch.Tensor, bias: torch.Tensor, alters: int, keep: int,
                       offset: float = 2.0) -> None:
        """Start a spelled or marked CTC head (each written class times ``alters`` variants, variant
        ``keep`` the plain name: spelled natural, marked unmarked) from a written head's ``weight``
        and ``bias``: every variant of a name gets the name's row, all but ``keep`` ``offset``
        lower in bias; the blank keeps its row."""
        d, n = weight.shape[-1], weight.shape[0] // (CTC_STAVES * CTC_FRAMES)      # n = written classes + blank
        w, b = weight.view(CTC_STAVES, CTC_FRAMES, n, d), bias.view(CTC_STAVES, CTC_FRAMES, n)
        ws = w[:, :, :-1].repeat_interleave(alters, dim=2)                          # (staves, frames, n' , d)
        bs = b[:, :, :-1].repeat_interleave(alters, dim=2) - offset
        bs[:, :, keep::alters] += offset                                           # the plain names
        new_w = torch.cat([ws, w[:, :, -1:]], 2).reshape(-1, d)
        new_b = torch.cat([bs, b[:, :, -1:]], 2).reshape(-1)
        if new_w.shape != self.ctc.weight.shape:
            raise CheckpointError(f"a written CTC head of {n - 1} classes does not spell into {self.cfg.ctc_classes}")
        self.ctc.weight.copy_(new_w)
        self.ctc.bias.copy_(new_b)

    def ctc_emissions(self, memory: torch.Tensor, mask: torch.Tensor | None) -> list[list[list[tuple[float, int]]]]:
        """The CTC head's best path per staff of the encoder's image columns (B, C, d):
        :func:`column_ctc_emissions` of its logits."""
        if not self.cfg.ctc_classes:
            raise CheckpointError("this model has no CTC head (ctc_classes = 0)")
        return column_ctc_emissions(self.ctc(memory), _mask_columns(memory, mask))

    def ctc_paths(self, memory: torch.Tensor, mask: torch.Tensor | None) -> list[list[list[int]]]:
        """:meth:`ctc_emissions` without the columns: [example][staff] pitch classes, in reading order."""
        return [[[p for _, p in staff] for staff in staves] for staves in self.ctc_emissions(memory, mask)]

    def key_logits(self, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The key-signature head on the encoder's first KEY_COLUMNS image columns (B, C, d)
        (padding and missing columns as zeros) -> (B, len(KEY_FIFTHS)) logits: the score of the
        count of accidentals plus, unless none, the score of their kind. The count and the kind
        are each learnt from every key that has them (rare keys share with common ones)."""
        if not self.cfg.key_head:
            raise CheckpointError("this model has no key-signature head (key_head = false)")
        b, c, d = memory.shape
        first = memory[:, :KEY_COLUMNS]
        if mask is not None:
            first = first * mask[:, 0, 0, :KEY_COLUMNS, None]
        first = F.pad(first, (0, 0, 0, KEY_COLUMNS - first.shape[1]))             # (B, KEY_COLUMNS, d)
        return key_scores_to_logits(self.key(first.reshape(b, KEY_COLUMNS * d)))  # (B, KEY_COUNTS + 2) -> (B, 15)

    def key_loss(self, memory: torch.Tensor, mask: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of :meth:`key_logits` on ``targets`` (B,): the index in KEY_FIFTHS of
        each image's key signature, -1 where unknown (0 when no target is known)."""
        logits = self.key_logits(memory, mask).float()
        if not bool((targets >= 0).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, targets, ignore_index=-1)

    def read_keys(self, memory: torch.Tensor, mask: torch.Tensor | None) -> list[int]:
        """The key signature (fifths: sharps > 0, flats < 0) the head reads in each image."""
        return [KEY_FIFTHS[i] for i in self.key_logits(memory, mask).argmax(-1).tolist()]

    def roll_logits(self, memory: torch.Tensor) -> torch.Tensor:
        """The roll head on the encoder's audio steps (B, S, d) -> (B, S, 2, ROLL_PITCHES) logits:
        [..., 0, k] a note of piano key k starts in the step's frame, [..., 1, k] it sounds there."""
        if not self.cfg.roll_head:
            raise CheckpointError("this model has no piano-roll head (roll_head = false)")
        return self.roll(memory).view(*memory.shape[:2], 2, ROLL_PITCHES)

    def roll_loss(self, memory: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of :meth:`roll_logits` on ``targets`` (B, S, 2, ROLL_PITCHES) of 0/1,
        -1 on the steps that are no audio frame ([SOS], [EOS], [PAD]): summed over the keys and
        both kinds, averaged over the frames (``data.roll.RollTargets``)."""
        logits = self.roll_logits(memory).float()
        valid = targets >= 0
        loss = F.binary_cross_entropy_with_logits(logits, targets.clamp_min(0).float(), reduction="none")
        frames = valid[..., 0, 0].sum().clamp_min(1)
        return (loss * valid).sum() / frames

    def _target_loss(self, h: torch.Tensor, labels: torch.Tensor, tgt_modality: str) -> torch.Tensor:
        """Mean cross-entropy of the main-decoder states ``h`` (B, T, d) on ``labels`` (B, T, 4)."""
        if CODES_PER_STEP[tgt_modality] == 1:
            cls = ids_to_classes(labels[..., 0], allowed_ids(self.cfg, tgt_modality, 0))
            return F.cross_entropy(self.logits(h, tgt_modality).flatten(0, 1), cls.flatten())
        b, t, d = h.shape
        prev = F.pad(labels[..., :SLOTS - 1], (1, 0), value=PAD)           # code k-1 at sub-step k
        states = self.sub_decode(h.reshape(b * t, d), prev.reshape(b * t, SLOTS))
        total, count = h.new_zeros(()), h.new_zeros(())
        for k in range(SLOTS):
            cls = ids_to_classes(labels[..., k].reshape(-1), allowed_ids(self.cfg, tgt_modality, k))
            logits = self.logits(states[:, k], tgt_modality, k)
            total = total + F.cross_entropy(logits, cls, reduction="sum")
            count = count + (cls != -100).sum()
        return total / count.clamp_min(1)


def _mask_columns(memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) valid image columns of an encoder memory (B, C, d) and its attention mask."""
    if mask is None:
        return memory.new_full((memory.shape[0],), memory.shape[1], dtype=torch.long)
    return mask[:, 0, 0].sum(-1).long()


def column_ctc_loss(logits: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                    per_column: int = CTC_FRAMES) -> torch.Tensor:
    """CTC of per-column logits (B, C, CTC_STAVES * per_column * n; n = classes + blank, the blank
    last) against each staff's classes ``targets`` (B, CTC_STAVES, L; -1 pads), ``cols`` (B,) valid
    columns each. Each column gives ``per_column`` frames per staff. Mean over sequences of the
    loss per target token; a sequence no alignment fits adds 0 (``zero_infinity``)."""
    b, c, width = logits.shape
    n = width // (CTC_STAVES * per_column)
    frames = logits.float().view(b, c, CTC_STAVES, per_column, n)
    frames = frames.permute(2, 1, 3, 0, 4).reshape(CTC_STAVES, c * per_column, b, n).log_softmax(-1)
    lengths = cols.long() * per_column
    total = logits.new_zeros((), dtype=torch.float32)
    for k in range(CTC_STAVES):
        tgt = targets[:, k]
        total = total + F.ctc_loss(frames[k], tgt.clamp_min(0), lengths, (tgt >= 0).sum(-1), blank=n - 1,
                                   reduction="mean", zero_infinity=True)
    return total / CTC_STAVES


def column_ctc_emissions(logits: torch.Tensor, cols: torch.Tensor,
                         per_column: int = CTC_FRAMES) -> list[list[list[tuple[float, int]]]]:
    """The best path per staff of per-column CTC logits (B, C, CTC_STAVES * per_column * n), as
    (position, class) of every emission (argmax frames, repeats merged, blanks dropped, only the
    first ``cols`` (B,) columns): [example][staff], in reading order. The position is the
    emitting frame's, in columns: column + frame / per_column (its integer part is the column;
    emissions one frame apart were written back to back, no blank between)."""
    b, c, width = logits.shape
    blank = width // (CTC_STAVES * per_column) - 1
    best = logits.view(b, c, CTC_STAVES, per_column, blank + 1).argmax(-1)   # (B, C, staves, frames)
    out = []
    for i, n_cols in enumerate(cols.tolist()):
        staves = []
        for k in range(CTC_STAVES):
            path = best[i, :n_cols, k].reshape(-1).tolist()                     # (C * frames,)
            staves.append([(j / per_column, p) for j, p in enumerate(path)
                           if p != blank and (j == 0 or p != path[j - 1])])
        out.append(staves)
    return out


def column_ctc_log_probs(logits: torch.Tensor, cols: torch.Tensor,
                         per_column: int = CTC_FRAMES) -> list[list[np.ndarray]]:
    """Per-column CTC logits (B, C, CTC_STAVES * per_column * n) as each staff's frame
    log-probabilities, (cols[i] * per_column, n) float32 with the blank last: [example][staff];
    frame ``j`` is the one ``column_ctc_emissions`` places at position ``j / per_column``."""
    b, c, width = logits.shape
    n = width // (CTC_STAVES * per_column)
    lp = logits.float().view(b, c, CTC_STAVES, per_column, n).log_softmax(-1)
    return [[lp[i, :k, s].reshape(-1, n).cpu().numpy() for s in range(CTC_STAVES)]
            for i, k in enumerate(cols.tolist())]


@torch.no_grad()
def remap_ctc_head(weight: torch.Tensor, bias: torch.Tensor, old: Sequence[tuple], new: Sequence[tuple],
                   offset: float = 2.0, per_column: int = CTC_FRAMES,
                   old_per_column: int = CTC_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """A CTC head's ``weight`` (CTC_STAVES * old_per_column * (len(old) + 1), d) and ``bias``
    over the classes ``old`` (``data.staff_order.ctc_classes``; blank last) remapped to the classes
    ``new``: a class in both keeps its row; a new variant of a name (e.g. a tied continuation)
    starts from the name's unmarked row (its class (name, None)), ``offset`` lower in bias; any
    other new class (the bar line) from zero weights and the blank's bias less ``offset``; the
    blank keeps its row. A head of ``old_per_column`` frames per column becomes one of
    ``per_column``: each new frame starts as the old frame at its place in the column."""
    d, n = weight.shape[-1], len(old) + 1
    if weight.shape[0] != CTC_STAVES * old_per_column * n:
        raise CheckpointError(f"a CTC head of {weight.shape[0]} rows is not one over {len(old)} classes "
                              f"({old_per_column} frames a column)")
    w, b = weight.view(CTC_STAVES, old_per_column, n, d), bias.view(CTC_STAVES, old_per_column, n)
    place = [f * old_per_column // per_column for f in range(per_column)]
    w, b = w[:, place], b[:, place]                                   # (staves, per_column, n, d)
    index = {tuple(c): i for i, c in enumerate(old)}
    new_w = w.new_zeros(CTC_STAVES, per_column, len(new) + 1, d)
    new_b = b[:, :, -1:].repeat(1, 1, len(new) + 1) - offset
    for k, c in enumerate(list(map(tuple, new)) + [None]):
        src = n - 1 if c is None else index.get(c, index.get((c[0], None)))
        if src is not None:
            new_w[:, :, k], new_b[:, :, k] = w[:, :, src], b[:, :, src] - (offset if c is not None and c not in index else 0)
    return new_w.reshape(-1, d), new_b.reshape(-1)


def key_scores_to_logits(scores: torch.Tensor) -> torch.Tensor:
    """(B, KEY_COUNTS + 2) scores -> (B, len(KEY_FIFTHS)) logits: the count's score plus, unless
    none, the kind's (sharp or flat)."""
    fifths = torch.tensor(KEY_FIFTHS, device=scores.device)
    kind = scores[:, KEY_COUNTS + (fifths > 0).long()] * (fifths != 0)
    return scores[:, fifths.abs()] + kind


def guided_attention_loss(weights: list[torch.Tensor], tgt_valid: torch.Tensor, src_valid: torch.Tensor,
                          sigma: float = GUIDE_SIGMA) -> torch.Tensor:
    """Mean cross-attention mass far from the diagonal (Tachibana et al. 2018, "guided
    attention", for TTS): target step t of T attending source step s of S costs
    1 - exp(-(s/S - t/T)^2 / (2 sigma^2)). Each layer's (B, H, T, S) probabilities; ``tgt_valid``
    (B, T) and ``src_valid`` (B, S) mark the real steps. A score and its image run left to
    right at the measure level, so a broad diagonal is a prior that holds; without it the
    cross-attention of a small model stays uniform for thousands of steps (results.md)."""
    t_len = tgt_valid.sum(1, keepdim=True).clamp_min(1).float()                 # (B, 1)
    s_len = src_valid.sum(1, keepdim=True).clamp_min(1).float()
    t = torch.arange(tgt_valid.shape[1], device=tgt_valid.device)[None] / t_len   # (B, T)
    s = torch.arange(src_valid.shape[1], device=src_valid.device)[None] / s_len   # (B, S)
    cost = 1 - torch.exp(-(s[:, None, :] - t[:, :, None]) ** 2 / (2 * sigma ** 2))  # (B, T, S)
    cost = cost * tgt_valid[:, :, None]
    total = sum((w * cost[:, None]).sum() for w in weights)
    return total / (len(weights) * weights[0].shape[1] * tgt_valid.sum().clamp_min(1))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------
# Code embeddings from the codecs' codebooks
# ---------------------------------------------------------------------------

def init_from_codebooks(model: Translator, image_codebooks: torch.Tensor | None,
                        audio_codebooks: torch.Tensor | None, seed: int = 0) -> None:
    """Set the image / audio code embeddings from codec codebooks, (4, 1024, D_codec) each.

    The 4096 codes of a modality are centred, put on their principal axes (all of them when
    D_codec <= d_model, the top d_model otherwise), rotated into the model width by a random
    orthonormal map and scaled to the embeddings' init std: distances between codes are
    kept up to scale (exactly when D_codec <= d_model).
    """
    for modality, books in (("image", image_codebooks), ("audio", audio_codebooks)):
        if books is None:
            continue
        if books.dim() != 3 or books.shape[:2] != (SLOTS, CODEBOOK_SIZE):
            raise CheckpointError(f"{modality} codebooks have shape {tuple(books.shape)}, "
                                  f"expected ({SLOTS}, {CODEBOOK_SIZE}, D)")
        lo, hi = model.cfg.ranges[model.cfg.index(modality)]
        emb = project_codebooks(books.detach().float().cpu(), model.cfg.d_model, seed)
        with torch.no_grad():
            model.tok.weight[lo:hi] = emb.to(model.tok.weight)


def project_codebooks(books: torch.Tensor, d_model: int, seed: int = 0) -> torch.Tensor:
    """(4, 1024, D) codebooks -> (4096, d_model) embeddings in the vocabulary's order."""
    x = books.reshape(-1, books.shape[-1])
    x = x - x.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)                 # (D, D)
    r = min(x.shape[1], d_model)
    gen = torch.Generator().manual_seed(seed)
    rot = torch.linalg.qr(torch.randn(d_model, r, generator=gen))[0].T  # (r, d) orthonormal rows
    e = (x @ vh[:r].T) @ rot
    return e * (0.02 / e.std().clamp_min(1e-12))


def read_codec_codebooks(image_ckpt: str | Path, audio_ckpt: str | Path
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The codebooks of an image RQ-VAE and an audio DAC checkpoint folder (e.g. the shipped
    ``weights/image-codec`` and ``weights/audio-codec``): (4, 1024, 64) and (4, 1024, 384).

    The RQ-VAE's codes are its EMA codebook vectors (``quantizer.codebooks.K.embed``); a DAC
    code's vector is what it adds to the latent: the weight-normed ``out_proj`` of its 8-d
    ``codebook`` entry, plus the bias.
    """
    image = read_weights(Path(image_ckpt) / WEIGHTS)
    audio = read_weights(Path(audio_ckpt) / WEIGHTS)
    try:
        img = torch.stack([image[f"quantizer.codebooks.{k}.embed"] for k in range(SLOTS)])
        aud = torch.stack([_dac_code_vectors(audio, f"quantizer.quantizers.{k}") for k in range(SLOTS)])
    except KeyError as e:
        raise CheckpointError(f"not an image RQ-VAE / audio DAC codec pair: no tensor {e}") from e
    return img, aud


def _dac_code_vectors(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    v, g = state[f"{prefix}.out_proj.weight_v"], state[f"{prefix}.out_proj.weight_g"]  # (D, 8, 1), (D, 1, 1)
    w = (g * v / v.norm(dim=(1, 2), keepdim=True))[..., 0]                            # (D, 8)
    return state[f"{prefix}.codebook.weight"] @ w.T + state[f"{prefix}.out_proj.bias"]  # (1024, D)
