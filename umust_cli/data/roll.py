"""Piano rolls at the audio codec's frame rate: the roll head's training targets and the notes a
roll reads (the audio -> image direction model's transcription reading, ``translate/direct.py``).

A roll is (frames, 2, ROLL_PITCHES): [:, 0, k] piano key k (MIDI pitch ROLL_LOW + k) starts a
note in the frame, [:, 1, k] it sounds there. Frame f covers the audio from f * FRAME_SECONDS
(the codec's hop, 512 samples at 44.1 kHz: 11.6 ms); a note starting at t seconds starts in
frame round(t / FRAME_SECONDS). Corpus audio is rendered from the system's MIDI, so its notes
are the targets of its frames (Hawthorne et al. 2018, "Onsets and Frames", train the same two
rolls).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pretty_midi

from umust_cli.codecs.audio import HOP, SAMPLE_RATE
from umust_cli.codecs.midi import MidiCodec
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.model.translator import PAD, ROLL_LOW, ROLL_PITCHES

FRAME_SECONDS = HOP / SAMPLE_RATE
ONSET_THRESHOLD = 0.5      # reading: an onset where its probability peaks at or above this
SOUNDING_THRESHOLD = 0.5   # ... held while the sounding probability stays at or above this
READ_VELOCITY = 80


def note_roll(notes: Iterable[pretty_midi.Note], frames: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """(frames, 2, ROLL_PITCHES) uint8 roll of ``notes`` (seconds from the first frame) at frames of
    ``frame_seconds``; notes outside the piano's keys or the frames are left out, each sounds at
    least its onset frame."""
    roll = np.zeros((frames, 2, ROLL_PITCHES), dtype=np.uint8)
    for n in notes:
        k, on = n.pitch - ROLL_LOW, int(round(n.start / frame_seconds))
        if not 0 <= k < ROLL_PITCHES or not 0 <= on < frames:
            continue
        off = min(frames, max(on + 1, int(round(n.end / frame_seconds))))
        roll[on, 0, k] = 1
        roll[on:off, 1, k] = 1
    return roll


def roll_notes(onset: np.ndarray, sounding: np.ndarray, start: float = 0.0,
               onset_threshold: float = ONSET_THRESHOLD,
               frame_seconds: float = FRAME_SECONDS) -> list[pretty_midi.Note]:
    """Notes of a roll's probabilities ``onset`` and ``sounding`` (frames, ROLL_PITCHES) at frames of
    ``frame_seconds``: one where a key's onset probability has a local peak >= ``onset_threshold``,
    held until its sounding probability falls below SOUNDING_THRESHOLD or the key's next onset (at
    least one frame); times in seconds from ``start``."""
    frames = onset.shape[0]
    before = np.vstack([np.zeros((1, onset.shape[1])), onset[:-1]])
    after = np.vstack([onset[1:], np.zeros((1, onset.shape[1]))])
    peaks = (onset >= onset_threshold) & (onset > before) & (onset >= after)   # a plateau: its first frame
    notes = []
    for k in range(onset.shape[1]):
        ons = np.flatnonzero(peaks[:, k])
        for i, on in enumerate(ons):
            stop = ons[i + 1] if i + 1 < len(ons) else frames
            off = on + 1
            while off < stop and sounding[off, k] >= SOUNDING_THRESHOLD:
                off += 1
            notes.append(pretty_midi.Note(READ_VELOCITY, ROLL_LOW + k, start + on * frame_seconds,
                                          start + off * frame_seconds))
    return sorted(notes, key=lambda n: (n.start, n.pitch))


class RollTargets:
    """A batch's audio source steps and MIDI target ids -> the roll head's targets aligned with
    the source steps (``Translator.roll_loss``)."""

    def __init__(self, vocab: Vocabulary):
        self.midi, self.offset, self.range = MidiCodec(), vocab.offset("midi"), vocab.range("midi")

    def notes(self, ids: Sequence[int]) -> list[pretty_midi.Note]:
        """Global MIDI ids of one system ([SOS]/[EOS]/[PAD] dropped) -> its notes."""
        local = [i - self.offset for i in ids if i in self.range]
        return [n for inst in self.midi.decode(local).instruments if not inst.is_drum for n in inst.notes]

    def __call__(self, src, tgt_ids):
        """(B, S, 4) audio steps and (B, T) global MIDI ids -> (B, S, 2, ROLL_PITCHES) float targets,
        -1 on the steps that are no frame ([SOS], [EOS], [PAD])."""
        import torch                                # here: the module's readers need no torch

        frame = (src[..., 1] != PAD).cpu()                                  # content steps (B, S)
        out = torch.full((*src.shape[:2], 2, ROLL_PITCHES), -1.0)
        for b, ids in enumerate(tgt_ids.tolist()):
            steps = torch.nonzero(frame[b]).flatten()
            roll = note_roll(self.notes(ids), len(steps))
            out[b, steps] = torch.from_numpy(roll).float()
        return out
