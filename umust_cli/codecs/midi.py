"""MIDI performances <-> MT3-style event tokens.

The vocabulary follows MT3's ``event_codec``: a list of event ranges, each
owning a block of consecutive ids. In id order::

    shift:0 .. shift:S     absolute time within the segment, in steps (10 ms)
    pitch:0 .. pitch:127   a note-on (velocity > 0) or note-off (velocity 0)
    velocity:0 .. :B       velocity bin of the following pitches; 0 = note-off
    program:0 .. :127      instrument of the following pitches
    program:drum           drum kit (is_drum=True) of the following pitches
    tie                    ends the tie section
    eos                    ends the segment

One segment reads::

    [program pitch]* tie  ( [shift] [program] [velocity] pitch )*  eos

The tie section lists the notes already sounding at the segment start
(program + pitch); then come the events in time order. ``shift:T`` sets the
time to T steps after the segment start (absolute, so it never goes back).
Program and velocity are states: a token is emitted only when they change;
both are unknown at a segment start, and the program of the tie section
carries over into the events.

Conventions of the encoder (the decoder mirrors them):

* Times are quantized to the nearest step; a note shorter than one step gets
  one step.
* Overlapping notes of the same program and pitch: the earlier note ends where
  the later one starts (as a MIDI synthesizer would play them); two notes with
  the same onset step merge into the longer one.
* Instruments with the same program (or two drum kits) merge into one;
  instrument names, drum-kit program numbers, control changes (pedal) and
  pitch bends are dropped.
* At one time step events are grouped by program, note-offs before note-ons
  (so a repeated note works).

The decoder is lenient like MT3's: a token that makes no sense where it stands
(a pitch before any velocity, a shift that goes back, a note-off of a silent
note, ...) is skipped and counted (:attr:`MidiDecodeResult.num_invalid`). Ids
outside the vocabulary raise :class:`MidiError`. Across segments
(:meth:`MidiCodec.decode_segments`), a tied note continues; a sounding note
left out of the next tie section ends at its own segment's end; a tied note
never started gets the segment start and ``default_velocity``. Segment
windows: an onset exactly on a boundary belongs to the later segment, an
offset exactly on it to the earlier one.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from typing import Sequence, Union

import pretty_midi

from umust_cli.codecs.base import Codes, as_codes
from umust_cli.errors import MidiError
from umust_cli.io import require_file

DRUM_PROGRAM = 128  # program index of drum kits in the token stream
MidiSource = Union[str, os.PathLike, pretty_midi.PrettyMIDI]


# ---------------------------------------------------------------------------
# Event ranges
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MidiCodecConfig:
    steps_per_second: int = 100       # 10 ms time steps
    max_shift_seconds: float = 30.0   # longest segment (one score system fits)
    num_velocity_bins: int = 32       # bins 1..N for note-ons, 0 = note-off
    default_velocity: int = 100       # for tied notes whose onset was never seen

    @property
    def max_shift_steps(self) -> int:
        return round(self.max_shift_seconds * self.steps_per_second)


@dataclass(frozen=True)
class Event:
    type: str
    value: int = 0


@dataclass(frozen=True)
class EventRange:
    type: str
    min_value: int
    max_value: int

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1


class EventCodec:
    """Maps events to consecutive ids: each range owns one block of ids."""

    def __init__(self, ranges: Sequence[EventRange]):
        self.ranges = tuple(ranges)
        self._offsets: dict[str, int] = {}
        offset = 0
        for r in self.ranges:
            self._offsets[r.type] = offset
            offset += r.size
        self.num_classes = offset

    def encode_event(self, event: Event) -> int:
        r = self._range(event.type)
        if not r.min_value <= event.value <= r.max_value:
            raise ValueError(f"{event.type} value {event.value} outside [{r.min_value}, {r.max_value}]")
        return int(self._offsets[r.type] + event.value - r.min_value)

    def decode_event_index(self, index: int) -> Event:
        if not 0 <= index < self.num_classes:
            raise MidiError(f"MIDI token id {index} outside [0, {self.num_classes})")
        for r in self.ranges:
            offset = self._offsets[r.type]
            if index < offset + r.size:
                return Event(r.type, r.min_value + index - offset)
        raise AssertionError("unreachable")

    def event_type_range(self, event_type: str) -> tuple[int, int]:
        """First and last id of one event type (inclusive)."""
        offset = self._offsets[self._range(event_type).type]
        return offset, offset + self._range(event_type).size - 1

    def _range(self, event_type: str) -> EventRange:
        for r in self.ranges:
            if r.type == event_type:
                return r
        raise KeyError(f"unknown event type {event_type!r}")


def event_ranges(config: MidiCodecConfig) -> list[EventRange]:
    return [
        EventRange("shift", 0, config.max_shift_steps),
        EventRange("pitch", 0, 127),
        EventRange("velocity", 0, config.num_velocity_bins),
        EventRange("program", 0, DRUM_PROGRAM),
        EventRange("tie", 0, 0),
        EventRange("eos", 0, 0),
    ]


def event_name(event: Event) -> str:
    if event.type in ("tie", "eos"):
        return event.type
    if event.type == "program" and event.value == DRUM_PROGRAM:
        return "program:drum"
    return f"{event.type}:{event.value}"


def velocity_to_bin(velocity: int, num_bins: int) -> int:
    """MIDI velocity 1..127 -> bin 1..num_bins (0 stays 0 = note-off)."""
    return 0 if velocity <= 0 else max(1, min(num_bins, math.ceil(num_bins * velocity / 127)))


def bin_to_velocity(bin_: int, num_bins: int) -> int:
    """Upper edge of the bin, so a note-on never decodes to velocity 0."""
    return max(1, int(127 * bin_ / num_bins)) if bin_ else 0


@dataclass(frozen=True)
class MidiSegment:
    """One window of a performance: absolute start/end (seconds), local ids."""

    start: float
    end: float
    ids: list[int]


@dataclass(frozen=True)
class MidiDecodeResult:
    midi: pretty_midi.PrettyMIDI
    num_invalid: int  # tokens skipped by the lenient decoder


@dataclass(frozen=True, order=True)
class _Note:
    """A quantized note; times in steps from the start of the performance."""

    on: int
    off: int
    program: int  # 0..127, DRUM_PROGRAM for drums
    pitch: int
    velocity: int  # 1..127


# ---------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------

class MidiCodec:
    """MT3-style event codec (see the module docstring for the grammar)."""

    modality = "midi"

    def __init__(self, config: MidiCodecConfig = MidiCodecConfig()):
        self.config = config
        self.events = EventCodec(event_ranges(config))
        self._names = [event_name(self.events.decode_event_index(i))
                       for i in range(self.events.num_classes)]
        self._ids = {name: i for i, name in enumerate(self._names)}

    @property
    def vocab_size(self) -> int:
        return self.events.num_classes

    def token_names(self) -> list[str]:
        return list(self._names)

    def token_id(self, name: str) -> int:
        """Local id of a token name like ``pitch:60``; MidiError if unknown."""
        try:
            return self._ids[name]
        except KeyError:
            raise MidiError(f"unknown MIDI token {name!r}") from None

    def token_name(self, token_id: int) -> str:
        """Name of a local id; MidiError if it is outside the vocabulary."""
        self.events.decode_event_index(int(token_id))  # range check
        return self._names[int(token_id)]

    def _id(self, event_type: str, value: int = 0) -> int:
        return self.events.encode_event(Event(event_type, value))

    # ---- encode -----------------------------------------------------------
    def encode(self, source: MidiSource) -> Codes:
        """The whole performance as one segment starting at t=0."""
        notes = self._load_notes(source)
        end = max((n.off for n in notes), default=0)
        if end > self.config.max_shift_steps:
            raise MidiError(
                f"performance lasts {end / self.config.steps_per_second:.2f} s, longer than one "
                f"segment ({self.config.max_shift_seconds:g} s); use MidiCodec.encode_segments")
        ids = self._encode_window(notes, 0, end)
        return Codes(ids, (len(ids),))

    def _load_notes(self, source: MidiSource) -> list[_Note]:
        return quantize_notes(load_midi(source), self.config)

    def _encode_window(self, notes: Sequence[_Note], start: int, end: int) -> list[int]:
        """Tokens of the window [start, end] (steps); ``notes`` sorted by onset."""
        ids, program = self._encode_ties(notes, start)
        step, velocity = start, None
        for ev_step, ev_program, _, vel_bin, pitch in _window_events(
                notes, start, end, self.config.num_velocity_bins):
            if ev_step != step:
                ids.append(self._id("shift", ev_step - start))
                step = ev_step
            if ev_program != program:
                ids.append(self._id("program", ev_program))
                program = ev_program
            if vel_bin != velocity:
                ids.append(self._id("velocity", vel_bin))
                velocity = vel_bin
            ids.append(self._id("pitch", pitch))
        ids.append(self._id("eos"))
        return ids

    def _encode_ties(self, notes: Sequence[_Note], start: int) -> tuple[list[int], int | None]:
        """Tie section: notes sounding across ``start``; also returns the program state."""
        ids: list[int] = []
        program = None
        for n in sorted(_tied_notes(notes, start), key=lambda n: (n.program, n.pitch)):
            if n.program != program:
                ids.append(self._id("program", n.program))
                program = n.program
            ids.append(self._id("pitch", n.pitch))
        ids.append(self._id("tie"))
        return ids, program

    # ---- decode -----------------------------------------------------------
    def decode(self, codes: Codes | Sequence[int]) -> pretty_midi.PrettyMIDI:
        return self.decode_with_stats(codes).midi

    def decode_with_stats(self, codes: Codes | Sequence[int]) -> MidiDecodeResult:
        """Decode one segment starting at t=0; notes left open end at the last time."""
        decoder = _Decoder(self)
        last = decoder.run_segment(as_codes(codes).ids, 0.0)
        decoder.close_all(last)
        return MidiDecodeResult(notes_to_midi(decoder.notes), decoder.invalid)

    # ---- segments ---------------------------------------------------------
    def encode_segments(self, source: MidiSource, max_seconds: float = 10.0,
                        max_tokens: int | None = None) -> list[MidiSegment]:
        """Cut a performance into windows of at most ``max_seconds`` (and ``max_tokens``)."""
        window = round(max_seconds * self.config.steps_per_second)
        if not 0 < window <= self.config.max_shift_steps:
            raise MidiError(f"max_seconds must be in (0, {self.config.max_shift_seconds:g}], "
                            f"got {max_seconds:g}")
        notes = self._load_notes(source)
        end = max((n.off for n in notes), default=0)
        longest = max((n.off - n.on for n in notes), default=0)
        segments, start = [], 0
        while True:
            stop = min(start + window, end)
            near = _notes_between(notes, start, stop, longest)
            ids = self._encode_window(near, start, stop)
            if max_tokens is not None and len(ids) > max_tokens:
                stop, ids = self._fit_window(near, start, stop, max_tokens)
            segments.append(MidiSegment(self._seconds(start), self._seconds(stop), ids))
            if stop >= end:
                return segments
            start = stop

    def _fit_window(self, notes: Sequence[_Note], start: int, stop: int,
                    max_tokens: int) -> tuple[int, list[int]]:
        """Binary search for the longest window [start, s] whose tokens fit."""
        lo, hi = start, stop  # window ending at hi is known to be too long
        best: list[int] | None = None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ids = self._encode_window(notes, start, mid)
            if len(ids) <= max_tokens:
                lo, best = mid, ids
            else:
                hi = mid
        if best is None:
            need = len(self._encode_window(notes, start, start + 1))
            raise MidiError(f"the segment at {self._seconds(start):.3f} s needs {need} tokens for "
                            f"one time step; raise max_tokens (now {max_tokens})")
        return lo, best

    def decode_segments(self, segments: Sequence[MidiSegment]) -> pretty_midi.PrettyMIDI:
        return self.decode_segments_with_stats(segments).midi

    def decode_segments_with_stats(self, segments: Sequence[MidiSegment]) -> MidiDecodeResult:
        """Join segments; tied notes continue, notes never released end with their segment."""
        decoder = _Decoder(self)
        for seg in segments:
            decoder.run_segment(seg.ids, seg.start, seg.end)
        decoder.close_all(segments[-1].end if segments else 0.0)
        return MidiDecodeResult(notes_to_midi(decoder.notes), decoder.invalid)

    def _seconds(self, step: int) -> float:
        return round(step / self.config.steps_per_second, 6)


# ---------------------------------------------------------------------------
# Encoding helpers
# ---------------------------------------------------------------------------

def load_midi(source: MidiSource) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI as is, or a .mid path read into one (MidiError if unreadable)."""
    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    path = require_file(source)
    try:
        return pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # mido/pretty_midi raise many types for broken files
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise MidiError(f"cannot read MIDI file {path} ({detail})") from e


def quantize_notes(pm: pretty_midi.PrettyMIDI, config: MidiCodecConfig) -> list[_Note]:
    """All notes as steps, sorted by onset, with the overlap rules of the module docstring."""
    by_key: dict[tuple[int, int], dict[int, _Note]] = {}
    for inst in pm.instruments:
        program = DRUM_PROGRAM if inst.is_drum else int(inst.program)  # not numpy ints
        for n in inst.notes:
            note = _quantize(n, program, config)
            same = by_key.setdefault((program, note.pitch), {})
            if note.on not in same or same[note.on].off < note.off:
                same[note.on] = note  # same onset step: keep the longer note
    notes: list[_Note] = []
    for same in by_key.values():
        notes += _cut_overlaps(sorted(same.values()))
    return sorted(notes)


def _quantize(n: pretty_midi.Note, program: int, config: MidiCodecConfig) -> _Note:
    if not 0 <= n.pitch <= 127:
        raise MidiError(f"note pitch {n.pitch} outside 0..127")
    on = max(0, round(n.start * config.steps_per_second))
    off = max(on + 1, round(n.end * config.steps_per_second))
    return _Note(on, off, program, int(n.pitch), max(1, min(127, int(n.velocity))))


def _cut_overlaps(notes: list[_Note]) -> list[_Note]:
    """Notes of one program+pitch sorted by onset: end each where the next begins."""
    out = []
    for note, nxt in zip(notes, notes[1:] + [None]):
        if nxt is not None and note.off > nxt.on:
            note = _Note(note.on, nxt.on, note.program, note.pitch, note.velocity)
        out.append(note)
    return out


def _notes_between(notes: Sequence[_Note], start: int, stop: int, longest: int) -> list[_Note]:
    """The notes sounding somewhere in [start, stop); ``longest`` bounds a note's length."""
    lo = bisect.bisect_left(notes, start - longest, key=lambda n: n.on)
    hi = bisect.bisect_left(notes, stop, key=lambda n: n.on)
    return [n for n in notes[lo:hi] if n.off > start]


def _tied_notes(notes: Sequence[_Note], start: int) -> list[_Note]:
    """Notes sounding across ``start`` (onset before it, offset after it)."""
    before = bisect.bisect_left(notes, start, key=lambda n: n.on)
    return [n for n in notes[:before] if n.off > start]


def _window_events(notes: Sequence[_Note], start: int, end: int, num_bins: int):
    """Sorted (step, program, is_on, velocity_bin, pitch) of the window.

    Onsets in [start, end), offsets in (start, end]: an offset exactly at a
    boundary belongs to the earlier window, an onset to the later one.
    """
    events = []
    stop = bisect.bisect_left(notes, end, key=lambda n: n.on)
    for n in notes[:stop]:
        if n.on >= start:
            events.append((n.on, n.program, 1, velocity_to_bin(n.velocity, num_bins), n.pitch))
        if start < n.off <= end:
            events.append((n.off, n.program, 0, 0, n.pitch))
    return sorted(events)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

class _Decoder:
    """A lenient state machine over one or more segments; collects finished notes."""

    def __init__(self, codec: MidiCodec):
        self.codec = codec
        self.steps_per_second = codec.config.steps_per_second
        self.active: dict[tuple[int, int], tuple[float, int]] = {}  # (program, pitch) -> (onset s, velocity)
        self.notes: list[tuple[int, int, int, float, float]] = []   # program, pitch, velocity, on, off
        self.invalid = 0
        self.prev_end: float | None = None

    def run_segment(self, ids: Sequence[int], start: float, end: float | None = None) -> float:
        """Decode one segment starting at ``start`` seconds; returns the last time reached."""
        events = [self.codec.events.decode_event_index(int(i)) for i in ids]
        self.start, self.step, self.program, self.velocity = start, 0, None, None
        self.in_tie, self.tied = True, set()
        for ev in events:
            if ev.type == "eos":
                break
            if self.in_tie and ev.type not in ("program", "pitch", "tie"):
                self.invalid += 1  # the tie token is missing
                self._end_ties()
            getattr(self, f"_on_{ev.type}")(ev.value)
        if self.in_tie:
            self._end_ties()
        self.prev_end = end
        return self._now()

    def close_all(self, time: float) -> None:
        for key in list(self.active):
            self._close(key, time)

    def _now(self) -> float:
        return self.start + self.step / self.steps_per_second

    def _end_ties(self) -> None:
        """Notes not listed in the tie section ended; listed ones go on (or start now)."""
        self.in_tie = False
        for key in [k for k in self.active if k not in self.tied]:
            self._close(key, self.start if self.prev_end is None else self.prev_end)
        for key in self.tied:
            self.active.setdefault(key, (self.start, self.codec.config.default_velocity))

    def _close(self, key: tuple[int, int], time: float) -> None:
        onset, velocity = self.active.pop(key)
        offset = max(time, onset + 1 / self.steps_per_second)  # at least one step
        self.notes.append((key[0], key[1], velocity, onset, offset))

    # One handler per event type.
    def _on_tie(self, _: int) -> None:
        if self.in_tie:
            self._end_ties()
        else:
            self.invalid += 1

    def _on_program(self, value: int) -> None:
        self.program = value

    def _on_velocity(self, value: int) -> None:
        self.velocity = value

    def _on_shift(self, value: int) -> None:
        if value < self.step:
            self.invalid += 1  # time never goes back within a segment
        else:
            self.step = value

    def _on_pitch(self, pitch: int) -> None:
        if self.program is None or (self.velocity is None and not self.in_tie):
            self.invalid += 1
        elif self.in_tie:
            self.tied.add((self.program, pitch))
        elif self.velocity == 0:
            self._note_off((self.program, pitch))
        else:
            self._note_on((self.program, pitch))

    def _note_off(self, key: tuple[int, int]) -> None:
        if key in self.active:
            self._close(key, self._now())
        else:
            self.invalid += 1

    def _note_on(self, key: tuple[int, int]) -> None:
        now = self._now()
        if key in self.active:
            if self.active[key][0] >= now:
                self.invalid += 1  # a second onset at the same time: keep the first
                return
            self._close(key, now)  # a new onset ends the sounding note
        num_bins = self.codec.config.num_velocity_bins
        self.active[key] = (now, bin_to_velocity(self.velocity, num_bins))


def notes_to_midi(notes: Sequence[tuple[int, int, int, float, float]]) -> pretty_midi.PrettyMIDI:
    """(program, pitch, velocity, onset, offset) -> PrettyMIDI, one instrument per program."""
    pm = pretty_midi.PrettyMIDI(resolution=500, initial_tempo=120.0)  # 1 tick = 1 ms
    for program in sorted({n[0] for n in notes}):
        drum = program == DRUM_PROGRAM
        inst = pretty_midi.Instrument(program=0 if drum else program, is_drum=drum)
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=on, end=off)
                      for prog, p, v, on, off in sorted(notes, key=lambda n: (n[3], n[1]))
                      if prog == program]
        pm.instruments.append(inst)
    return pm


# ---------------------------------------------------------------------------
# Text format: one segment a line, "@START END tok tok ..."
# ---------------------------------------------------------------------------

def segments_to_text(codec: MidiCodec, segments: Sequence[MidiSegment]) -> str:
    lines = []
    for seg in segments:
        toks = [codec.token_name(i) for i in seg.ids]
        lines.append(" ".join([f"@{seg.start:.3f}", f"{seg.end:.3f}", *toks]))
    return "".join(line + "\n" for line in lines)


def text_to_segments(codec: MidiCodec, text: str) -> list[MidiSegment]:
    """Parse :func:`segments_to_text` output; blank lines are skipped."""
    segments = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            segments.append(_parse_line(codec, line, lineno))
    return segments


def _parse_line(codec: MidiCodec, line: str, lineno: int) -> MidiSegment:
    fields = line.split()
    if len(fields) < 2 or not fields[0].startswith("@"):
        raise MidiError(f"line {lineno}: expected '@START END tokens...', got {line[:60]!r}")
    try:
        start, end = float(fields[0][1:]), float(fields[1])
    except ValueError:
        raise MidiError(f"line {lineno}: START and END must be seconds, got "
                        f"{fields[0]!r} {fields[1]!r}") from None
    if not 0 <= start <= end or not math.isfinite(end):
        raise MidiError(f"line {lineno}: need 0 <= START <= END, got {start} {end}")
    try:
        ids = [codec.token_id(name) for name in fields[2:]]
    except MidiError as e:
        raise MidiError(f"line {lineno}: {e}") from None
    return MidiSegment(start, end, ids)
