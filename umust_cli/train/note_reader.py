"""Training of the note reader (`umust train note-reader`) on a corpus's system audio.

Each train system's WAV is read at the reader's sample rate, turned into its log-mel spectrogram
by the model's own front end once (fp16 in memory, ~460 bytes a frame) and paired with the
onset and frame rolls of the system's MIDI (``data.roll.note_roll``; the corpus renders the audio
from that MIDI). Each step draws ``batch_size`` systems and a crop of ``crop_seconds`` of each
(shorter systems padded with silence and empty rolls), and moves each crop's level by up to
``gain_db``; the draws are pure functions of (seed, step), so a resumed run sees what an
uninterrupted run sees. Loss: binary cross-entropy of the onset roll plus that of the frame roll.
Validation: the valid split's notes read by ``data.roll.roll_notes`` against the system's MIDI,
onset F1 at 50 ms pooled over notes (mir_eval, offsets ignored); keep-best maximises it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from umust_cli.data import corpus as corpus_io
from umust_cli.data.roll import note_roll, roll_notes
from umust_cli.device import fast_bf16
from umust_cli.errors import BadInputError
from umust_cli.eval.metrics import MatchConfig, Notes, match_counts, pooled_prf
from umust_cli.inputs import load_audio, load_midi
from umust_cli.model.note_reader import MODEL_KIND, NoteReader, NoteReaderConfig
from umust_cli.train.engine import RunOptions, TrainResult, fit
from umust_cli.train.pixel_reader import ReaderTask, ReaderTrainConfig
from umust_cli.train.translator import PRECISIONS

Batch = tuple[torch.Tensor, torch.Tensor]     # log-mel (B, T, mels), rolls (B, T, 2, 88)
SILENCE = math.log(1e-5)                      # the log-mel floor (model.note_reader.LogMel)


@dataclass(frozen=True)
class TrainConfig(ReaderTrainConfig):
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    model: NoteReaderConfig = field(default_factory=NoteReaderConfig)
    batch_size: int = 8
    lr: float = 6e-4
    warmup_steps: int = 200
    decay_steps: int = 20000
    crop_seconds: float = 5.0
    gain_db: float = 6.0       # largest level change of a crop, either way
    precision: str = "auto"    # bf16 autocast where the device computes it natively (train.translator)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_seconds <= 0 or self.gain_db < 0:
            raise BadInputError("--crop-seconds must be > 0 and --gain-db >= 0")
        if self.precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}")


class NoteData(NamedTuple):
    """One split's systems: log-mel (T, mels) fp16, rolls (T, 2, 88) uint8, reference notes."""

    mels: list[np.ndarray]
    rolls: list[np.ndarray]
    notes: list[Notes]


@torch.no_grad()
def split_note_data(corpus: Path, split: str, model: NoteReader) -> NoteData:
    """Every system of ``split`` with a WAV and a MIDI file, read by ``model``'s front end."""
    cfg, data = model.cfg, NoteData([], [], [])
    for row in corpus_io.system_rows(corpus, (split,)):
        if not row.get("wav") or not row.get("mid"):
            continue
        samples, _ = load_audio(Path(corpus, row["wav"]), cfg.sample_rate)
        mel = model.front(torch.from_numpy(samples).unsqueeze(0))[0]                  # (T, mels)
        pm = load_midi(Path(corpus, row["mid"]))
        notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
        data.mels.append(mel.numpy().astype(np.float16))
        data.rolls.append(note_roll(notes, mel.shape[0], cfg.frame_seconds))
        data.notes.append(Notes.from_pretty_midi(pm))
    return data


def make_batch(data: NoteData, cfg: TrainConfig, step: int) -> Batch:
    """Step ``step``'s crops (random systems, offsets and gains) and their rolls."""
    rng = np.random.default_rng((cfg.seed, step))
    frames = round(cfg.crop_seconds / cfg.model.frame_seconds)
    mel = np.full((cfg.batch_size, frames, cfg.model.mels), SILENCE, np.float32)
    roll = np.zeros((cfg.batch_size, frames, 2, data.rolls[0].shape[-1]), np.float32)
    for b, i in enumerate(rng.integers(0, len(data.mels), cfg.batch_size).tolist()):
        first = int(rng.integers(0, max(1, data.mels[i].shape[0] - frames + 1)))
        part = data.mels[i][first:first + frames]
        gain = rng.uniform(-cfg.gain_db, cfg.gain_db) * math.log(10) / 10     # dB of power, as a log offset
        mel[b, :len(part)] = np.maximum(part.astype(np.float32) + gain, SILENCE)
        roll[b, :len(part)] = data.rolls[i][first:first + frames]
    return torch.from_numpy(mel), torch.from_numpy(roll)


def onset_f1(model: NoteReader, data: NoteData, onset_threshold: float | None = None) -> dict:
    """Pooled onset precision, recall and F1 (50 ms, offsets ignored) of ``data`` read by ``model``
    (notes where onset probability peaks at ``onset_threshold``, default: the model's)."""
    onset_threshold = onset_threshold or model.cfg.onset_threshold
    was, counts, match = model.training, [], MatchConfig(offset_ratio=None)
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            for mel, ref in zip(data.mels, data.notes):
                x = torch.from_numpy(mel.astype(np.float32))[None].to(device)
                onset, frame = (torch.sigmoid(t[0]).cpu().numpy() for t in model(x))
                est = roll_notes(onset, frame, onset_threshold=onset_threshold, frame_seconds=model.cfg.frame_seconds)
                counts.append(match_counts(Notes.from_arrays([n.start for n in est], [n.end for n in est],
                                                             [n.pitch for n in est]), ref, match))
    finally:
        model.train(was)
    p, r, f = pooled_prf(counts)
    return {"onset_precision": round(p, 5), "onset_recall": round(r, 5), "onset_f1": round(f, 5)}


class NoteReaderTask(ReaderTask):
    """The note reader as a :class:`umust_cli.train.engine.Task`."""

    name = "note-reader"
    kind = MODEL_KIND
    grad_clip = 3.0

    def __init__(self, corpus: Path, cfg: TrainConfig, run: RunOptions):
        corpus_io.check_training_rows(corpus_io.system_rows(corpus, ("train",)), corpus)
        self.setup(lambda: NoteReader(cfg.model), cfg, run)
        front = NoteReader(cfg.model)       # a CPU copy for reading the corpus (its front end has no weights)
        self.train_data = split_note_data(corpus, "train", front)
        self.valid_data = split_note_data(corpus, "valid", front)
        if not self.train_data.mels:
            raise BadInputError(f"{corpus}: no train systems with audio and MIDI")

    def make_batch(self, step: int) -> Batch:
        return make_batch(self.train_data, self.cfg, step)

    def loss(self, batch: Batch) -> torch.Tensor:
        mel, roll = batch
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and fast_bf16(self.device))
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            onset, frame = self.model(mel)
        return (F.binary_cross_entropy_with_logits(onset.float(), roll[:, :, 0])
                + F.binary_cross_entropy_with_logits(frame.float(), roll[:, :, 1]))

    def evaluate(self) -> dict | None:
        return onset_f1(self.model, self.valid_data) if self.valid_data.mels else None

    def score(self, scores: dict) -> float | None:
        return scores.get("onset_f1")


def train_note_reader(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                      init: str | Path | None = None,
                      on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) a note reader in ``ckpt_dir`` on ``corpus``'s train split, scored on valid."""
    return fit(NoteReaderTask(Path(corpus), cfg, run), ckpt_dir, cfg, run, init=init, on_step=on_step)
