"""The rhythm of a system as an image shows it: each staff's note groups in reading order, and
back to LMX.

A *group* is what one voice starts at one onset on one staff: a chord (its notes as the
``notated`` CTC classes name them, ``data.staff_order``) or a rest, and one note value (type,
dots, a triplet ratio; a slashed grace note; a whole-measure rest). The ``rhythmic`` CTC target
writes each staff as its groups in reading order (measure, onset, grace notes first, voice),
each group as ``[SAME] pitches-or-REST VALUE``, with the bar lines between measures (``BAR``);
``SAME`` marks a group that starts with the one before it (another voice at the same onset).

``write_lmx`` goes back: it gives the groups onsets and voices (a group follows the voice that
ends first; a ``SAME`` group joins the onset before it in another voice), then writes LMX the
way ``lmx``'s linearizer does (voice by voice, ``backup`` to the measure start between voices;
staff 1 voices 1-4, staff 2 voices 5-8), with the tokens an engraving implies by rule: beams
over the notes of one beat, triplet brackets over three notes' worth, ``tied:start`` before a
tied continuation. Stems, slurs and articulations are not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Sequence

from lmx.linearization.vocabulary import NOTE_TYPE_TO_QUARTER_MULTIPLE as QUARTERS

from umust_cli.data.staff_order import (BAR, GRACE, JOIN, MEASURE_REST, REST, SAME, TIE, TYPES, VALUE, Group, ctc_classes,
                                        value_quarters)

MARK_TOKENS = {1: "sharp", -1: "flat", 0: "natural"}
VOICE_BASE = {1: 1, 2: 5}                        # the first voice of each staff (MuseScore numbering)

def read_groups(classes: Sequence[tuple], joins: bool = False) -> list[Group | tuple]:
    """One staff's rhythmic classes as a reader emits them (``staff_order.ctc_classes``, rhythmic or
    with ``joins`` beamed) -> its groups and bar lines: a note value closes the notes (or rest)
    before it, a JOIN after it beams the group to the next; notes left without a value at a bar
    line or the end are a quarter's chord; a value with neither is dropped."""
    out: list[Group | tuple] = []
    notes, rest, same = [], False, False
    def close(value: str) -> None:
        nonlocal notes, rest, same
        if notes or rest:
            out.append(Group(tuple(notes), value, same, False if joins else None))
        notes, rest, same = [], False, False
    for c in classes:
        if c == SAME:
            close("quarter")
            same = True
        elif c == REST:
            rest = True
        elif c == BAR:
            close("quarter")
            out.append(BAR)
        elif c == JOIN:
            if joins and not (notes or rest) and out and isinstance(out[-1], Group) and out[-1].pitches:
                out[-1] = replace(out[-1], joined=True)
        elif c[0] == VALUE:
            close(c[1])
        else:
            notes.append(c)
    close("quarter")
    return out


ATTRIBUTE_PREFIXES = ("key:", "time", "beats:", "beat-type:", "clef:", "staff:")


def header_tokens(tokens: Sequence[str]) -> list[str]:
    """The attribute tokens (key, time, clefs with their staves) that open the first measure."""
    out, seen = [], False
    for tok in tokens:
        if tok == "measure" and seen:
            break
        seen = seen or tok == "measure"
        if tok != "measure" and not tok.startswith(ATTRIBUTE_PREFIXES):
            break
        out.extend([tok] if tok != "measure" else [])
    return out


def time_signature(header: Sequence[str]) -> tuple[int, int] | None:
    """(beats, beat type) of ``header``'s time signature (``header_tokens``), or None."""
    beats = next((int(t.split(":")[1]) for t in header if t.startswith("beats:")), None)
    kind = next((int(t.split(":")[1]) for t in header if t.startswith("beat-type:")), None)
    return None if beats is None or kind is None else (beats, kind)


def meter(header: Sequence[str]) -> tuple[Fraction | None, Fraction]:
    """(measure length or None where the header has no time signature, beamed beat) in quarters:
    a compound meter (6/8, 9/8, 12/8) beams by dotted quarters, 3/8 by the measure, x/2 by
    halves, else by quarters."""
    signature = time_signature(header)
    if signature is None:
        return None, Fraction(1)
    beats, kind = signature
    length = Fraction(4 * beats, kind)
    if kind == 8 and beats % 3 == 0:
        return length, Fraction(3, 2) if beats > 3 else length
    return length, Fraction(2) if kind == 2 else Fraction(1)


def with_time(header: Sequence[str], beats: int, beat_type: int) -> list[str]:
    """``header`` (``header_tokens``) with its time signature set to ``beats``/``beat_type``
    (written after the key signature where it has none)."""
    out = [t for t in header if t != "time" and not t.startswith(("beats:", "beat-type:"))]
    at = next((i + 1 for i, t in enumerate(out) if t.startswith("key:")), 0)
    return out[:at] + ["time", f"beats:{beats}", f"beat-type:{beat_type}"] + out[at:]


@dataclass
class Voice:
    """One voice of one staff in one measure, as ``write_lmx`` places it."""

    number: int
    end: Fraction = Fraction(0)
    groups: list = field(default_factory=list)     # (onset, Group)


def place(groups: Sequence[Group], measure_length: Fraction, base: int) -> list[Voice]:
    """One staff's groups of one measure in voices (numbered from ``base``) with onsets: a group
    follows the voice that ends first after the last onset; a SAME group joins the last onset
    in another voice that is free then (or a new one); grace notes go before the next group."""
    voices: list[Voice] = []
    graces: list[Group] = []
    onset, current = None, None
    for g in groups:
        if g.value == GRACE:
            graces.append(g)
            continue
        if g.same and current is not None:
            free = [v for v in voices if v is not current and v.end <= onset]
            voice = free[0] if free else None
        else:
            later = [v for v in voices if onset is None or v.end > onset] or voices
            voice = min(later, key=lambda v: v.end) if later else None
            onset = voice.end if voice is not None else Fraction(0)
        if voice is None:
            voice = Voice(base + len(voices))
            voices.append(voice)
        voice.groups.extend((onset, x) for x in graces + [g])
        graces = []
        voice.end = onset + (value_quarters(g.value) or measure_length)
        current = voice
    if graces:
        voices = voices or [Voice(base)]
        voices[-1].groups.extend((voices[-1].end, x) for x in graces)
    return voices


def move_tokens(kind: str, quarters: Fraction) -> list[str]:
    """``backup`` or ``forward`` by ``quarters`` as LMX writes it: one move per note type,
    largest first, down to a 32nd (the move is rounded to 32nds first: a triplet's remainder,
    which no type makes, is dropped)."""
    out, quarters = [], Fraction(round(quarters * 8), 8)
    for name in sorted(QUARTERS, key=QUARTERS.get, reverse=True):
        if QUARTERS[name] <= quarters:
            out += [kind, name]
            quarters -= QUARTERS[name]
    return out


def beam_level(value: str) -> int:
    """How many beams a note value has (eighth 1, 16th 2, ...; none for quarters and longer)."""
    kind = value.rstrip("./3")
    return TYPES.index(kind) - 2 if kind in TYPES[3:] else 0


def beams(voice: Voice, beat: Fraction) -> dict[int, list[str]]:
    """Beam tokens by index in ``voice.groups``: where the groups say which notes are beamed to
    the next (``Group.joined``), those runs, else the beamable notes of one beat (rests between
    them do not break a run), beamed at each level their values share, a note alone at a level
    with a hook."""
    known = any(g.joined is not None for _, g in voice.groups)
    out: dict[int, list[str]] = {}
    for run in (r for r in (_joined_runs(voice) if known else _beat_runs(voice, beat)) if len(r) > 1):
        for lev in range(1, max(level for _, level in run) + 1):
            members = [k for k, level in run if level >= lev]
            for piece in _consecutive(members, [k for k, _ in run]):
                if len(piece) == 1:
                    out.setdefault(piece[0], []).append("beam:forward-hook")
                else:
                    out.setdefault(piece[0], []).append("beam:begin")
                    out.setdefault(piece[-1], []).append("beam:end")
    return out


def _level(g: Group) -> int:
    """The beams of a group's notes (a rest or grace note: none)."""
    return 0 if (g.value == GRACE or not g.pitches) else beam_level(g.value)


def _beat_runs(voice: Voice, beat: Fraction) -> list[list[tuple[int, int]]]:
    """(index, beam level) runs of a voice's beamable notes by beat (``beams``)."""
    runs, run, beat_of = [], [], None
    for k, (onset, g) in enumerate(voice.groups):
        level, here = _level(g), int(onset // beat)
        if run and (here != beat_of or (g.pitches and not level) or g.value == GRACE):
            runs.append(run)
            run = []
        if level:
            run.append((k, level))
            beat_of = here
    return runs + [run]


def _joined_runs(voice: Voice) -> list[list[tuple[int, int]]]:
    """(index, beam level) runs of a voice's beamable notes each beamed to the next (``beams``)."""
    runs, run = [], []
    for k, (_, g) in enumerate(voice.groups):
        if not g.pitches and g.value != GRACE:
            continue                                  # a rest under a beam does not break it
        if _level(g):
            run.append((k, _level(g)))
        if not _level(g) or not g.joined:
            runs.append(run)
            run = []
    return runs + [run]


def _consecutive(members: list[int], order: list[int]) -> list[list[int]]:
    """``members`` cut into runs that are consecutive in ``order``."""
    pos, out = {k: i for i, k in enumerate(order)}, []
    for k in members:
        if out and pos[k] == pos[out[-1][-1]] + 1:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def tuplets(voice: Voice) -> dict[int, list[str]]:
    """Triplet brackets by index in ``voice.groups``: from a triplet note until three of its
    type's worth of triplet notes."""
    out: dict[int, list[str]] = {}
    open_at, total, want = None, Fraction(0), Fraction(0)
    for k, (_, g) in enumerate(voice.groups):
        if not g.value.endswith("/3"):
            open_at = None
            continue
        nominal = value_quarters(g.value) * Fraction(3, 2)
        if open_at is None:
            open_at, total, want = k, Fraction(0), 3 * nominal
            out.setdefault(k, []).append("tuplet:start")
        total += nominal
        if total >= want:
            out.setdefault(k, []).append("tuplet:stop")
            open_at = None
    return out


def tie_starts(staves: Sequence[Sequence[Group | tuple]]) -> set[tuple[int, int, int]]:
    """(staff, item, note) of every note that a later tied continuation of its name on its staff holds on."""
    out = set()
    for s, staff in enumerate(staves):
        last: dict[str, tuple[int, int, int]] = {}
        for i, g in enumerate(staff):
            for n, (name, mark) in enumerate(g.pitches if isinstance(g, Group) else ()):
                if mark == TIE and name in last:
                    out.add(last[name])
                last[name] = (s, i, n)
    return out


def note_tokens(g: Group, voice: int, staff: int, state: list, extra: Sequence[str], ties: Sequence[bool]) -> list[str]:
    """LMX of one group in the linearizer's order: [grace] [chord] pitch|rest [voice] type [ratio]
    [dots] [accidental] [staff] [beams, tuplet marks of the first note] [ties]; ``state`` is the
    [voice, staff] written last (updated)."""
    out = []
    kind = "eighth" if g.value == GRACE else g.value.rstrip("./3")
    for n, (name, mark) in enumerate(g.pitches or (("rest", None),)):
        out += ["grace", "grace:slash"] if g.value == GRACE else []
        out += ["chord"] if n else []
        out.append(name)
        if state[0] != voice:
            out.append(f"voice:{voice}")
            state[0] = voice
        out.append("rest:measure" if g.value == MEASURE_REST else kind)
        out += ["3in2"] if g.value.endswith("/3") else []
        out += ["dot"] * g.value.count(".")
        out += [MARK_TOKENS[mark]] if mark in MARK_TOKENS else []
        if state[1] != staff:
            out.append(f"staff:{staff}")
            state[1] = staff
        beam = [t for t in extra if t.startswith("beam:")] if n == 0 else []
        out += beam + (["tied:stop"] if mark == TIE else []) + (["tied:start"] if ties[n] else [])
        out += [t for t in extra if t.startswith("tuplet:")] if n == 0 else []
    return out


def measures_of(staff: Sequence[Group | tuple]) -> list[list[Group]]:
    """One staff's items cut at its bar lines."""
    out = [[]]
    for item in staff:
        if isinstance(item, Group):
            out[-1].append(item)
        else:
            out.append([])
    return out


def placed_measures(staves: Sequence[Sequence[Group | tuple]],
                    length: Fraction | None = None) -> list[list[tuple[int, Voice]]]:
    """A system read as groups (``staff_groups``'s layout) cut at its bar lines, each measure's
    (staff, voice) pairs placed (``place``; a measure rest lasts ``length``, else the longest
    value of the measure's staves, else a whole); a reader's bar line after the last notes opens
    no measure."""
    cut = [measures_of(staff) for staff in staves]
    filled = [m for c in cut for m, groups in enumerate(c) if groups]
    out = []
    for m in range(max(filled, default=0) + 1):
        staff_groups = [measures[m] if m < len(measures) else [] for measures in cut]
        fill = length or max((value_quarters(g.value) for gs in staff_groups for g in gs), default=0) or Fraction(4)
        out.append([(s + 1, v) for s, groups in enumerate(staff_groups)
                    for v in place(groups, fill, VOICE_BASE.get(s + 1, 4 * s + 1))])
    return out


def write_lmx(staves: Sequence[Sequence[Group | tuple]], header: Sequence[str] = ()) -> list[str]:
    """LMX tokens of a system read as groups (``staff_groups``'s layout, one list per staff),
    ``header`` (``header_tokens``) opening the first measure; its time signature sets the beat
    the beams group by and the length of a measure rest (module docstring)."""
    length, beat = meter(header)
    starts = tie_starts(staves)
    index = {id(g): (s, i) for s, staff in enumerate(staves) for i, g in enumerate(staff)}
    out: list[str] = []
    for m, voices in enumerate(placed_measures(staves, length)):
        out += ["measure"] + (list(header) if m == 0 else [])
        state = [None, None]
        for k, (staff, voice) in enumerate(voices):
            out += _voice_tokens(voice, staff, beat, state, starts, index)
            if k + 1 < len(voices):
                out += move_tokens("backup", voice.end)
                state = [None, None]
    return out


def _voice_tokens(voice: Voice, staff: int, beat: Fraction, state: list, starts: set, index: dict) -> list[str]:
    """The LMX of one placed voice (``write_lmx``): its groups, forward over the gaps."""
    out, time = [], Fraction(0)
    marks = beams(voice, beat)
    for k, extra in tuplets(voice).items():
        marks.setdefault(k, []).extend(extra)
    for k, (onset, g) in enumerate(voice.groups):
        if onset > time:
            out += move_tokens("forward", onset - time)
        s, i = index[id(g)]
        ties = [(s, i, n) in starts for n in range(max(1, len(g.pitches)))]
        out += note_tokens(g, voice.number, staff, state, marks.get(k, []), ties)
        time = max(time, onset + value_quarters(g.value))
    return out


def write_reading(staves: Sequence[Sequence[int]], header: Sequence[str] = (), target: str = "rhythmic") -> list[str]:
    """LMX of a reader's class ids (``ctc_classes(target)``, rhythmic or beamed), one list per
    staff (``read_groups``, then ``write_lmx`` opened by ``header``)."""
    classes = ctc_classes(target)
    return write_lmx([read_groups([classes[c] for c in staff], target == "beamed") for staff in staves], header)
