"""Each staff's pitches in reading order: an auxiliary OMR target read from LMX tokens.

LMX writes a measure voice by voice (``backup`` returns to the measure's start), so its pitch
tokens run left to right only within a voice. An image is read left to right per staff. This
module puts each staff's pitch tokens (step + octave, e.g. ``F4``; alterations are separate
tokens) in the image's order: by measure, then onset in the measure, then LMX's order (chord
notes upwards). The translator trainer's ``--ctc`` uses it as a CTC target over the encoder's
image columns (hybrid CTC/attention: Watanabe et al. 2017), one sequence per staff.

Onsets come from the tokens alone: a note advances the time by its type (``NOTE_TYPE_TO_
QUARTER_MULTIPLE``), dots and tuplet ratio; a chord note starts with the note before it; a
grace note takes no time; ``backup``/``forward`` move by their own types. A staff token
(``staff:N``, written when the staff changes) holds until the next one.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

import torch
from lmx.linearization.vocabulary import NOTE_TYPE_TO_QUARTER_MULTIPLE as QUARTERS

from umust_cli.codecs.notation import NotationCodec, is_pitch

TUPLET = re.compile(r"^(\d+)in(\d+)$")
MOVES = ("measure", "backup", "forward")
NOTE_PREFIX = ("grace", "grace:slash", "chord")
STAVES = 2  # piano: a third staff's notes are left out of the target
PAD_TARGET = -1


def pitch_names() -> list[str]:
    """The CTC classes: the notation vocabulary's pitch tokens, in its order."""
    return [t for t in NotationCodec().token_names() if is_pitch(t)]


def _items(tokens: Sequence[str]) -> list[list[str]]:
    """Tokens cut into measure headers, moves and notes (a note: its prefix, pitch or rest, attributes)."""
    items: list[list[str]] = []
    open_prefix = False                     # the last item is a note prefix still waiting for its head
    for tok in tokens:
        head = is_pitch(tok) or tok == "rest"
        if tok in MOVES or (tok in NOTE_PREFIX and not open_prefix) or (head and not open_prefix):
            items.append([tok])
            open_prefix = tok in NOTE_PREFIX
        elif items:
            items[-1].append(tok)
            open_prefix = open_prefix and not head
    return items


def _duration(item: Sequence[str]) -> Fraction:
    """Quarters of a note or move: its type, dots and tuplet ratio (0 without a type)."""
    base = next((QUARTERS[t] for t in item if t in QUARTERS), Fraction(0))
    dots = sum(t == "dot" for t in item)
    value = base * (2 - Fraction(1, 2 ** dots))
    for t in item:
        m = TUPLET.match(t)
        if m:
            value = value * int(m.group(2)) / int(m.group(1))
    return value


def staff_pitch_sequences(tokens: Sequence[str], staves: int = STAVES) -> list[list[str]]:
    """``staves`` lists: each staff's pitch tokens in reading order (module docstring)."""
    found: list[tuple[int, int, Fraction, int, str]] = []   # staff, measure, onset, index, pitch
    staff, measure, time, onset = 1, 0, Fraction(0), Fraction(0)
    for i, item in enumerate(_items(tokens)):
        head = item[0]
        if head == "measure":
            measure, time, onset = measure + 1, Fraction(0), Fraction(0)
            continue
        if head in ("backup", "forward"):
            time += _duration(item) * (-1 if head == "backup" else 1)
            continue
        staff = next((int(t.split(":")[1]) for t in item if t.startswith("staff:")), staff)
        chord, grace = "chord" in item, any(t.startswith("grace") for t in item)
        if not chord:
            onset = time
            time = time if grace else time + _duration(item)
        pitch = next((t for t in item if is_pitch(t)), None)
        if pitch is not None and staff <= staves:
            found.append((staff, measure, onset, i, pitch))
    found.sort()
    return [[p for s, _, _, _, p in found if s == k] for k in range(1, staves + 1)]


class StaffTargets:
    """Global notation ids of a batch -> padded CTC targets ``(B, staves, L)`` of pitch classes."""

    def __init__(self, names_by_global: dict[int, str], staves: int = STAVES):
        self.names = names_by_global               # every notation id of the vocabulary -> token
        self.classes = {p: i for i, p in enumerate(pitch_names())}
        self.staves = staves

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) global ids ([SOS]/[EOS]/[PAD] ignored) -> (B, staves, L) class ids, PAD_TARGET-padded."""
        rows = []
        for seq in ids.tolist():
            tokens = [self.names[i] for i in seq if i in self.names]
            rows.append([[self.classes[p] for p in s] for s in staff_pitch_sequences(tokens, self.staves)])
        width = max((len(s) for r in rows for s in r), default=0)
        out = torch.full((len(rows), self.staves, max(width, 1)), PAD_TARGET, dtype=torch.long)
        for b, r in enumerate(rows):
            for k, s in enumerate(r):
                out[b, k, :len(s)] = torch.tensor(s, dtype=torch.long)
        return out
