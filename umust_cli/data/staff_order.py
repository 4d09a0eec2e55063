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
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

from lmx.linearization.vocabulary import NOTE_TYPE_TO_QUARTER_MULTIPLE as QUARTERS

from umust_cli.codecs.notation import NotationCodec, is_pitch
from umust_cli.model.translator import RHYTHMIC_TARGETS

if TYPE_CHECKING:
    import torch

TUPLET = re.compile(r"^(\d+)in(\d+)$")
MOVES = ("measure", "backup", "forward")
NOTE_PREFIX = ("grace", "grace:slash", "chord")
STAVES = 2  # piano: a third staff's notes are left out of the target
PAD_TARGET = -1


def pitch_names() -> list[str]:
    """The CTC classes: the notation vocabulary's pitch tokens, in its order."""
    return [t for t in NotationCodec().token_names() if is_pitch(t)]


def _items(tokens: Sequence[str]) -> list[tuple[int, list[str]]]:
    """Tokens cut into measure headers, moves and notes (a note: its prefix, pitch or rest,
    attributes), each with the index of its first token."""
    items: list[tuple[int, list[str]]] = []
    open_prefix = False                     # the last item is a note prefix still waiting for its head
    for j, tok in enumerate(tokens):
        head = is_pitch(tok) or tok == "rest"
        if tok in MOVES or (tok in NOTE_PREFIX and not open_prefix) or (head and not open_prefix):
            items.append((j, [tok]))
            open_prefix = tok in NOTE_PREFIX
        elif items:
            items[-1][1].append(tok)
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


@dataclass(frozen=True)
class Placed:
    """One note or rest of LMX tokens where ``walk`` finds it."""

    order: int              # its index among the items (``_items``; a move or measure is an item too)
    start: int              # the index of its first token
    item: list[str]         # its tokens
    staff: int
    voice: int
    measure: int            # from 1 at the first ``measure`` token
    onset: Fraction         # quarters from the measure's start (a chord note: its chord's)
    chord: bool             # a chord note: starts with the note before it
    grace: bool             # takes no time


def walk(tokens: Sequence[str]) -> list[Placed]:
    """Every note and rest of LMX ``tokens`` with its staff, voice, measure and onset (module
    docstring: staff and voice tokens hold until the next ones)."""
    out: list[Placed] = []
    staff, voice, measure, time, onset = 1, 1, 0, Fraction(0), Fraction(0)
    for i, (start, item) in enumerate(_items(tokens)):
        head = item[0]
        if head == "measure":
            measure, time, onset = measure + 1, Fraction(0), Fraction(0)
            continue
        if head in ("backup", "forward"):
            time += _duration(item) * (-1 if head == "backup" else 1)
            continue
        staff = next((int(t.split(":")[1]) for t in item if t.startswith("staff:")), staff)
        voice = next((int(t.split(":")[1]) for t in item if t.startswith("voice:")), voice)
        chord, grace = "chord" in item, any(t.startswith("grace") for t in item)
        if not chord:
            onset = time
            time = time if grace else time + _duration(item)
        out.append(Placed(i, start, item, staff, voice, measure, onset, chord, grace))
    return out


def _staff_notes(tokens: Sequence[str], staves: int = STAVES) -> list[list[tuple[int, int, list[str]]]]:
    """``staves`` lists: each staff's notes with a pitch as (measure, index of the pitch token in
    ``tokens``, the note's tokens), in reading order (module docstring)."""
    found = []   # staff, measure, onset, item, token, note
    for n in walk(tokens):
        at = next((k for k, t in enumerate(n.item) if is_pitch(t)), None)
        if at is not None and n.staff <= staves:
            found.append((n.staff, n.measure, n.onset, n.order, n.start + at, n.item))
    found.sort(key=lambda f: f[:4])
    return [[(m, j, item) for s, m, _, _, j, item in found if s == k] for k in range(1, staves + 1)]


def staff_pitch_positions(tokens: Sequence[str], staves: int = STAVES) -> list[list[int]]:
    """``staves`` lists: the indices in ``tokens`` of each staff's pitch tokens, in reading
    order (module docstring)."""
    return [[j for _, j, _ in notes] for notes in _staff_notes(tokens, staves)]


STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
ACCIDENTALS = {"sharp": 1, "flat": -1, "natural": 0, "double-sharp": 2, "flat-flat": -2, "natural-sharp": 1,
               "natural-flat": -1}
SPELLED_ALTERS = (-1, 0, 1)     # the spelled CTC classes: each pitch name flat, natural, sharp
MARKS = (None, 1, -1, 0)        # the marked CTC classes: each pitch name unmarked, or printed with a sharp, flat or natural
TIE = "tie"                     # the notated classes add each name as a tied continuation (held on, not struck) ...
BAR = ("bar", None)             # ... and a bar line (it ends the accidentals of its measure)
NOTATED_MARKS = MARKS + (TIE,)


def key_alters(fifths: int) -> dict[str, int]:
    """The alteration a key signature gives each step (``key:fifths:N``)."""
    if fifths >= 0:
        return {step: 1 for step in "FCGDAEB"[:fifths]}
    return {step: -1 for step in "BEADGCF"[:-fifths]}


def midi_of(name: str, alter: int = 0) -> int:
    """The MIDI pitch of a pitch token (``F4``) with an alteration in semitones."""
    return 12 * (int(name[1:]) + 1) + STEPS[name[0]] + alter


def pitch_alters(tokens: Sequence[str]) -> dict[int, int]:
    """The alteration (semitones) of every pitch token, by its index in ``tokens``: its own
    accidental token, else an accidental earlier in the measure on the same staff, step and
    octave, else the key signature. (LMX writes printed accidentals, not alterations; a tie
    across a barline keeps no accidental here.)"""
    key, measure, staff, out = {}, {}, 1, {}
    for start, item in _items(tokens):
        fifths = [int(t.split(":")[2]) for t in item if t.startswith("key:fifths:")]
        key = key_alters(fifths[-1]) if fifths else key
        if item[0] == "measure":
            measure = {}
            continue
        staff = next((int(t.split(":")[1]) for t in item if t.startswith("staff:")), staff)
        at = next((k for k, t in enumerate(item) if is_pitch(t)), None)
        if at is None:
            continue
        name = item[at]
        alter = next((ACCIDENTALS[t] for t in item if t in ACCIDENTALS), None)
        if alter is not None:
            measure[(staff, name)] = alter
        out[start + at] = measure.get((staff, name), key.get(name[0], 0))
    return out


def printed_accidentals(tokens: Sequence[str]) -> dict[int, int]:
    """The alteration of every pitch token's printed accidental (double ones as single), by
    the pitch token's index in ``tokens``; a note printed without one is not in it."""
    out = {}
    for start, item in _items(tokens):
        at = next((k for k, t in enumerate(item) if is_pitch(t)), None)
        mark = next((ACCIDENTALS[t] for t in item if t in ACCIDENTALS), None)
        if at is not None and mark is not None:
            out[start + at] = max(-1, min(1, mark))
    return out


def system_key(tokens: Sequence[str]) -> int | None:
    """The key signature a system starts in (the fifths of its first ``key:fifths:N``), or None."""
    return next((int(t.split(":")[2]) for t in tokens if t.startswith("key:fifths:")), None)


TYPES = ("whole", "half", "quarter", "eighth", "16th", "32nd", "64th")
GRACE, MEASURE_REST = "grace", "measure"
# note values: type, dots ("."), a triplet ratio ("/3": 3in2); a grace note; a whole-measure rest
VALUES = tuple(t + d for t in TYPES for d in ("", ".", "..")) + tuple(t + "/3" for t in TYPES) + (GRACE, MEASURE_REST)
REST, SAME, VALUE = ("rest", None), ("same", None), "value"   # the classes the rhythmic target adds
JOIN = ("join", None)           # the beamed target adds: a note beamed to the next note of its voice


@dataclass(frozen=True)
class Group:
    """What one voice starts at one onset of one staff."""

    pitches: tuple[tuple[str, int | str | None], ...]   # (name, printed accidental, TIE or None) upwards; () a rest
    value: str                                           # one of VALUES
    same: bool = False                                   # starts with the group before it
    joined: bool | None = None                           # beamed to the next note of its voice (None: unknown)


def value_of(item: Sequence[str]) -> str:
    """The note value (VALUES) of an LMX note's tokens; a ratio other than 3in2 is left out."""
    if any(t.startswith("grace") for t in item):
        return GRACE
    if "rest:measure" in item:
        return MEASURE_REST
    kind = next((t for t in item if t in QUARTERS), "quarter")
    kind = kind if kind in TYPES else ("whole" if QUARTERS[kind] > 4 else "64th")
    if "3in2" in item:
        return kind + "/3"
    return kind + "." * min(2, sum(t == "dot" for t in item))


def value_quarters(value: str) -> Fraction:
    """The time a note value takes, in quarters (a grace note none; a measure rest: 0, set by the measure)."""
    if value in (GRACE, MEASURE_REST):
        return Fraction(0)
    kind, dots = value.rstrip("./3"), value.count(".")
    base = QUARTERS[kind] * (2 - Fraction(1, 2 ** dots))
    return base * Fraction(2, 3) if value.endswith("/3") else base


def staff_groups(tokens: Sequence[str], staves: int = STAVES) -> list[list[Group | tuple]]:
    """``staves`` lists: each staff's groups (and BAR between measures) in reading order (module
    docstring); a group's staff is its first note's."""
    marks, found = printed_accidentals(tokens), []   # (staff, measure, onset, not grace, voice, order, value,
    last, before, depth = None, None, {}             #  joined, group notes)
    for n in walk(tokens):
        at = next((k for k, t in enumerate(n.item) if is_pitch(t)), None)
        note = None if at is None else (n.item[at], TIE if "tied:stop" in n.item else marks.get(n.start + at))
        if n.chord and last is not None and before == n.order - 1:   # a chord note right after its chord
            last[-1].append(note)
        else:
            beams = sum(t == "beam:begin" for t in n.item) - sum(t == "beam:end" for t in n.item)
            depth[n.voice] = max(0, depth.get(n.voice, 0) + beams)       # open beams of the voice after it
            last = [n.staff, n.measure, n.onset, not n.grace, n.voice, len(found), value_of(n.item),
                    note is not None and depth[n.voice] > 0, [] if note is None else [note]]
            found.append(last)
        before = n.order
    return _ordered(found, staves, sum(t == "measure" for t in tokens))


def _ordered(found: list[list], staves: int, measures: int) -> list[list[Group | tuple]]:
    """The groups ``staff_groups`` found, per staff in reading order, with the bar lines."""
    out = []
    for k in range(1, staves + 1):
        seq, bar, prev = [], 1, None
        for staff, measure, onset, struck, voice, _, value, joined, notes in sorted(f for f in found if f[0] == k):
            seq.extend([BAR] * max(0, measure - bar))
            if measure != bar:
                prev = None
            bar = max(bar, measure)
            same = struck and prev is not None and prev == onset
            seq.append(Group(tuple(notes), value, same, joined))
            prev = onset if struck else prev
        out.append(seq + [BAR] * max(0, measures - bar))
    return out



def ctc_classes(target: str) -> list[tuple[str, int | str | None]]:
    """The CTC head's classes as (pitch name, alteration): ``written``, the pitch names read
    without alteration; ``spelled``, each name flat, natural and sharp (SPELLED_ALTERS);
    ``marked``, each name as printed: without an accidental (alteration None: the key's, or an
    earlier accidental's in the measure) or with a sharp, flat or natural sign (MARKS);
    ``notated``, the marked classes, each name as a tied continuation (TIE) and the bar line (BAR);
    ``rhythmic``, the notated classes, a rest (REST), a group at the onset of the one before
    (SAME) and each note value (VALUE, VALUES): ``staff_groups``; ``beamed``, the rhythmic
    classes and a note beamed to the next one of its voice (JOIN)."""
    return list(_ctc_classes(target))


@lru_cache(maxsize=None)
def _ctc_classes(target: str) -> tuple[tuple[str, int | str | None], ...]:
    """``ctc_classes``, built once per target."""
    if target == "spelled":
        return tuple((n, a) for n in pitch_names() for a in SPELLED_ALTERS)
    if target == "marked":
        return tuple((n, m) for n in pitch_names() for m in MARKS)
    if target == "notated":
        return tuple((n, m) for n in pitch_names() for m in NOTATED_MARKS) + (BAR,)
    if target == "rhythmic":
        return _ctc_classes("notated") + (REST, SAME) + tuple((VALUE, v) for v in VALUES)
    if target == "beamed":
        return _ctc_classes("rhythmic") + (JOIN,)
    return tuple((n, 0) for n in pitch_names())


def ctc_class_pitches(target: str) -> list[int | None]:
    """The MIDI pitch of each CTC class (``ctc_classes``; an unmarked or tied class: its name's;
    the bar line, a rest and the rhythm classes: None)."""
    return [midi_of(n, a if isinstance(a, int) else 0) if is_pitch(n) else None for n, a in ctc_classes(target)]


def staff_pitch_sequences(tokens: Sequence[str], staves: int = STAVES) -> list[list[str]]:
    """``staves`` lists: each staff's pitch tokens in reading order (module docstring)."""
    return [[tokens[j] for j in staff] for staff in staff_pitch_positions(tokens, staves)]


def aligned_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """The (i, j) pairs a Levenshtein alignment of ``a`` and ``b`` matches or substitutes
    (insertions and deletions pair nothing); among equal-cost paths, substitutions first."""
    m, n = len(a), len(b)
    d = [[i + j if i == 0 or j == 0 else 0 for j in range(n + 1)] for i in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    i, j, out = m, n, []
    while i > 0 and j > 0:
        if d[i][j] == d[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            out.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def read_pitches(tokens: Sequence[str], staff_pitches: Sequence[Sequence[str]]) -> tuple[list[str], int]:
    """Decoded LMX ``tokens`` with their pitch tokens replaced by another reading of each
    staff's pitches (``staff_pitches``, reading order; e.g. the translator's CTC head) where
    the two align (``aligned_pairs``); everything else, the rhythm and the note count
    included, stays. Returns the tokens and how many pitch tokens changed."""
    out, changed = list(tokens), 0
    for positions, reading in zip(staff_pitch_positions(tokens, len(staff_pitches)), staff_pitches):
        for i, j in aligned_pairs([out[p] for p in positions], reading):
            if out[positions[i]] != reading[j]:
                out[positions[i]] = reading[j]
                changed += 1
    return out, changed


def staff_spelled_sequences(tokens: Sequence[str], staves: int = STAVES) -> list[list[tuple[str, int]]]:
    """``staves`` lists: each staff's (pitch name, alteration) in reading order (``pitch_alters``)."""
    alters = pitch_alters(tokens)
    return [[(tokens[j], alters[j]) for j in staff] for staff in staff_pitch_positions(tokens, staves)]


def staff_marked_sequences(tokens: Sequence[str], staves: int = STAVES) -> list[list[tuple[str, int | None]]]:
    """``staves`` lists: each staff's (pitch name, printed accidental or None) in reading order
    (``printed_accidentals``)."""
    marks = printed_accidentals(tokens)
    return [[(tokens[j], marks.get(j)) for j in staff] for staff in staff_pitch_positions(tokens, staves)]


def staff_notated_sequences(tokens: Sequence[str], staves: int = STAVES) -> list[list[tuple[str, int | str | None]]]:
    """``staves`` lists: each staff's notated classes in reading order: (pitch name, TIE) for a
    tied continuation (``tied:stop``), else (pitch name, printed accidental or None), and BAR at
    every bar line between the system's first and last measure (a measure without notes on a
    staff still has its bar lines there)."""
    marks, measures = printed_accidentals(tokens), sum(t == "measure" for t in tokens)
    out = []
    for notes in _staff_notes(tokens, staves):
        seq: list[tuple[str, int | str | None]] = []
        bar = 1
        for measure, j, item in notes:
            seq.extend([BAR] * max(0, measure - bar))
            bar = max(bar, measure)
            seq.append((tokens[j], TIE if "tied:stop" in item else marks.get(j)))
        out.append(seq + [BAR] * max(0, measures - bar))
    return out


def rhythmic_sequence(staff: Sequence[Group | tuple], joins: bool = False) -> list[tuple]:
    """One staff's groups (``staff_groups``) as rhythmic classes: per group [SAME] its notes (or
    REST), then (VALUE, its value), with ``joins`` (the beamed classes) then JOIN where it is
    beamed to its voice's next note; BAR as it is; double accidentals as single ones."""
    out: list[tuple] = []
    for g in staff:
        if not isinstance(g, Group):
            out.append(g)
            continue
        notes = [(n, max(-1, min(1, m)) if isinstance(m, int) else m) for n, m in g.pitches]
        out += ([SAME] if g.same else []) + (notes or [REST]) + [(VALUE, g.value)]
        out += [JOIN] if joins and g.joined else []
    return out


def staff_classes(tokens: Sequence[str], target: str = "written", staves: int = STAVES,
                  classes: dict | None = None) -> list[list[int]]:
    """``staves`` lists: each staff's CTC classes (``ctc_classes(target)``) in reading order;
    spelled, marked and notated: double alterations count as single ones."""
    classes = classes if classes is not None else {c: i for i, c in enumerate(ctc_classes(target))}
    if target == "spelled":
        return [[classes[(n, max(-1, min(1, a)))] for n, a in s] for s in staff_spelled_sequences(tokens, staves)]
    if target == "marked":
        return [[classes[c] for c in s] for s in staff_marked_sequences(tokens, staves)]
    if target == "notated":
        return [[classes[c] for c in s] for s in staff_notated_sequences(tokens, staves)]
    if target in RHYTHMIC_TARGETS:
        return [[classes[c] for c in rhythmic_sequence(s, target == "beamed")] for s in staff_groups(tokens, staves)]
    return [[classes[(p, 0)] for p in s] for s in staff_pitch_sequences(tokens, staves)]


class StaffTargets:
    """Global notation ids of a batch -> padded CTC targets ``(B, staves, L)`` of the classes of
    ``ctc_classes(target)`` (spelled, marked and notated: double alterations count as single ones)."""

    def __init__(self, names_by_global: dict[int, str], staves: int = STAVES, target: str = "written"):
        self.names = names_by_global               # every notation id of the vocabulary -> token
        self.classes = {c: i for i, c in enumerate(ctc_classes(target))}
        self.staves, self.target = staves, target

    def _rows(self, tokens: list[str]) -> list[list[int]]:
        return staff_classes(tokens, self.target, self.staves, self.classes)

    def tokens(self, ids: torch.Tensor) -> list[list[str]]:
        """(B, T) global ids -> each row's LMX tokens ([SOS]/[EOS]/[PAD] dropped)."""
        return [[self.names[i] for i in seq if i in self.names] for seq in ids.tolist()]

    def keys(self, ids: torch.Tensor) -> list[int | None]:
        """(B, T) global ids -> each row's key signature (``system_key``)."""
        return [system_key(tokens) for tokens in self.tokens(ids)]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) global ids ([SOS]/[EOS]/[PAD] ignored) -> (B, staves, L) class ids, PAD_TARGET-padded."""
        import torch                                # here: eval's pitch metric reads this module too
        rows = [self._rows(tokens) for tokens in self.tokens(ids)]
        width = max((len(s) for r in rows for s in r), default=0)
        out = torch.full((len(rows), self.staves, max(width, 1)), PAD_TARGET, dtype=torch.long)
        for b, r in enumerate(rows):
            for k, s in enumerate(r):
                out[b, k, :len(s)] = torch.tensor(s, dtype=torch.long)
        return out
