"""The translator's own tasks (route ``direct``, or a ``umust`` step of a cascade).

Each step encodes its source with the modality's codec (the image codec normalizes the
staff scale), wraps the local ids with the unified vocabulary's [SOS]/[EOS], lets the
direction model generate the target's ids (``model.generate``; greedy unless the run
samples) and decodes them with the target's codec. Sources longer than the model takes
are cut and the pieces' outputs joined in order:

* image systems one by one (a page was split into systems before);
* audio in windows of at most AUDIO_WINDOW_S seconds and the model's audio steps;
* MIDI in segments of at most MIDI_WINDOW_S seconds and the model's MIDI steps;
* LMX at measure boundaries, at most the model's notation steps a piece.

A generated image is cut to whole patch columns (the system's height is
IMAGE_HEIGHT_PATCHES, or the model's most rows); a piece whose model output is empty
is a TranslationError.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
import pretty_midi
import torch

from umust_cli.codecs.audio import HOP, SAMPLE_RATE as AUDIO_RATE, flatten as flatten_audio, resample
from umust_cli.codecs.base import Codes
from umust_cli.codecs.midi import MidiCodec, MidiSegment
from umust_cli.codecs.notation import NotationCodec, is_pitch, tokens_to_ids
from umust_cli.errors import BadInputError, ImageError, TranslationError
from umust_cli.model.generate import generate_from_memory, step_positions, to_steps
from umust_cli.data.staff_order import (BAR, GRACE, MARKS, TIE, Group, ctc_class_pitches, ctc_classes, key_alters,
                                        midi_of, read_pitches, value_quarters)
from umust_cli.data.key_crops import key_crop
from umust_cli.data.measure_fit import FitOptions, fit_staff, read_meter
from umust_cli.data.rhythm import (header_tokens, meter, placed_measures, read_groups, time_signature, with_time,
                                  write_reading)
from umust_cli.data.staff_images import staff_image
from umust_cli.data.roll import roll_notes
from umust_cli.model.translator import CTC_FRAMES, PAD, RHYTHMIC_TARGETS, SLOTS, Translator
from umust_cli.translate.engines import Engines
from umust_cli.translate.values import Notation, lmx_tokens

SAMPLE_RATE = 44100
AUDIO_WINDOW_S = 10.0        # audio sources are translated in windows of at most this
MIDI_WINDOW_S = 10.0         # MIDI sources in segments of at most this
IMAGE_HEIGHT_PATCHES = 14    # height of a generated system image (224 px): the median corpus system at the codec's scale (11-20 rows)
COLUMN_SECONDS = 0.12        # image -> MIDI reading: time per image patch column (16 px)
SYSTEM_GAP_COLUMNS = 4       # ... and the silence between two systems, in columns
READING_VELOCITY = 80
QUARTER_SECONDS = 0.5        # rhythmic image -> MIDI reading: a quarter note's time (120 a minute)


def translate_ids(engines: Engines, source: str, target: str, local_ids: Sequence[int],
                  src_height: int | None = None, tgt_height: int | None = None, piece: int = 0,
                  fifths: int | None = None, pixel: Reading | None = None) -> list[int]:
    """Local ids of one source piece -> the local ids the direction model generates (OMR: with
    the key signature ``fifths`` where the key reader read one and the pitch reader's ``pixel``
    reading where it read one, ``read_staff_pitches``)."""
    model = engines.translator(source, target)
    steps = to_steps(engines.vocab.wrap(source, list(local_ids)), source, model.cfg)[None].to(engines.device)
    with torch.inference_mode():
        memory, mask = model.encode(steps, step_positions(steps, source, src_height), source, target)
    out = generate_from_memory(model, memory, mask, target, engines.decoding(target, piece), height=tgt_height,
                               rule=engines.rule(target))
    if (source, target) == ("image", "notation"):
        out = read_staff_pitches(engines, model, memory, mask, out, [fifths], [pixel])
    return engines.vocab.to_local(target, out[0])


def read_staff_pitches(engines: Engines, model: Translator, memory: torch.Tensor, mask: torch.Tensor | None,
                       ids: list[list[int]], fifths: Sequence[int | None] | None = None,
                       pixels: Sequence[Reading | None] | None = None) -> list[list[int]]:
    """OMR outputs (global notation ids per source image, decoded from the encoder's ``memory``
    and ``mask``) with each staff's pitch tokens taken from the pitch reader's reading
    (``pixels``, one per image or None) or else the model's CTC head, where they align with the
    decoded notes (``data.staff_order.read_pitches``), or, from a rhythm reader's reading, the
    LMX it writes opened by the decoded clefs and time (``rhythm_tokens``); the first key signature from
    ``fifths`` (the key reader's, one per image or None) or else its key head; unchanged for a
    model without them or with ``RunConfig.ctc_pitches`` off. Measured on valid systems:
    results.md, "CTC pitch reading", "Key signatures" and "Pitch reader"."""
    read = list(fifths) if fifths is not None else [None] * len(ids)
    pixels = list(pixels) if pixels is not None else [None] * len(ids)
    if not (engines.config.ctc_pitches and (model.cfg.ctc_classes or model.cfg.key_head or any(read)
                                            or any(p is not None for p in pixels))):
        return ids
    names, out = NotationCodec().token_names(), []
    readings = [with_readers(r, k, p) for r, k, p in zip(column_reading(model, memory, mask), read, pixels)]
    for seq, reading in zip(ids, readings):
        tokens = [names[t] for t in engines.vocab.to_local("notation", seq)]
        if reading.target in RHYTHMIC_TARGETS:
            tokens = rhythm_tokens(reading, header_tokens(tokens), FitOptions() if engines.config.fit_measures else None)
        elif model.cfg.ctc_classes or reading.target:
            class_names = [n for n, _ in ctc_classes(reading.target or model.cfg.ctc_target)]
            staves = [[class_names[c] for _, c in staff if class_names[c] != BAR[0]] for staff in reading.staves]
            tokens, _ = read_pitches(tokens, staves)
        out.append(engines.vocab.to_global("notation", tokens_to_ids(with_key(tokens, reading.fifths))))
    return out


def rhythm_tokens(reading: Reading, header: list[str], fit: FitOptions | None = FitOptions()) -> list[str]:
    """The LMX a rhythmic reading writes (``data.rhythm.write_lmx``), ``header`` opening it (the
    decoded system's clefs, key and time signature: ``data.rhythm.header_tokens``); with ``fit``,
    its time signature the one the reading's measures fit (``data.measure_fit.read_meter``) and
    each staff's measures fitted to it (``fit_staff``; where the reading has its frame scores)."""
    classes = ctc_classes(reading.target)
    staves = [[c for _, c in staff] for staff in reading.staves]
    if fit is None:
        return write_reading(staves, header, reading.target)
    read = read_meter([[classes[c] for c in staff] for staff in staves], time_signature(header))
    header = with_time(header, *read) if read is not None else header
    length, _ = meter(header)
    if length and reading.scores is not None:
        staves = [fit_staff(ids, [p for p, _ in staff], scores, length, reading.frames, fit, reading.target)
                  for ids, staff, scores in zip(staves, reading.staves, reading.scores)]
    return write_reading(staves, header, reading.target)


def with_key(tokens: list[str], fifths: int | None) -> list[str]:
    """LMX ``tokens`` with their first key signature read as ``fifths`` (None: unchanged; a
    system without one is left as it is)."""
    at = next((i for i, t in enumerate(tokens) if t.startswith("key:fifths:")), None)
    if fifths is None or at is None:
        return tokens
    return tokens[:at] + [f"key:fifths:{fifths}"] + tokens[at + 1:]


class Reading(NamedTuple):
    """One image's reading by the OMR model's heads, without decoding."""

    columns: int                           # the image's patch columns
    staves: list[list[tuple[float, int]]]  # per staff the CTC head's (position in columns, class) emissions
    fifths: int | None                     # the key signature the key head reads (None without one)
    target: str | None = None              # the classes of ``staves`` where not the translator's CTC head's
                                           # (a pitch reader's ctc_target)
    frames: int = CTC_FRAMES               # CTC frames a column (a pitch reader's ``frames``)
    scores: list[np.ndarray] | None = None # a rhythm reader's CTC frame log-probabilities per staff
                                           # (``data.measure_fit``)


def encode_images(model: Translator, src: torch.Tensor, src_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's memory (B, S', d) and mask of a batch of image steps, as OMR reads them."""
    with torch.inference_mode():
        return model.encode(src, src_pos, "image", "notation")


def column_reading(model: Translator, memory: torch.Tensor, mask: torch.Tensor | None) -> list[Reading]:
    """The CTC and key heads' reading of a batch of encoded images (``encode_images``;
    ``Translator.ctc_emissions``, ``Translator.read_keys``), one :class:`Reading` per image."""
    with torch.inference_mode():
        emissions = model.ctc_emissions(memory, mask) if model.cfg.ctc_classes else [[]] * len(memory)
        keys = model.read_keys(memory, mask) if model.cfg.key_head else [None] * len(memory)
    cols = mask[:, 0, 0].sum(-1).tolist() if mask is not None else [memory.shape[1]] * len(memory)
    return [Reading(*r) for r in zip(cols, emissions, keys)]


def chord_columns(staff: Sequence[tuple[float, int]], frames: int = CTC_FRAMES) -> list[float]:
    """The onset column of each note of one staff's CTC reading (position, MIDI pitch), in order.

    A chord is read upwards (``data.staff_order``), one note per CTC frame, and a column has only
    ``frames`` frames: a chord of more notes runs on into the next column's frames. Notes of
    rising pitch written back to back (one frame apart, no blank between) are taken as one chord,
    sounding at the mean of their columns; every other note at its own column. Chosen on the
    valid split, results.md ("Chord columns")."""
    cols, first = [float(int(pos)) for pos, _ in staff], 0
    step = 1.0 / frames
    for j in range(1, len(staff) + 1):
        if (j < len(staff) and abs(staff[j][0] - staff[j - 1][0] - step) < 1e-6
                and staff[j][1] > staff[j - 1][1]):
            continue
        cols[first:j] = [sum(cols[first:j]) / (j - first)] * (j - first)
        first = j
    return cols


class Sounding(NamedTuple):
    """One note of a staff's reading (``staff_notes``)."""

    position: float      # the emitting CTC frame's, in columns (Reading.staves)
    pitch: int           # MIDI
    tied: bool           # a tied continuation of the staff's last note of this pitch name: held, not struck


def staff_notes(staff: Sequence[tuple[float, int]], target: str, fifths: int | None) -> list[Sounding]:
    """One staff's CTC reading (position, class of ``ctc_classes(target)``) as the notes it plays.

    Each class sounds as ``reading_pitches`` says; a target with bar lines (``notated``) also
    carries a printed accidental to the later unmarked notes of its name (step and octave) up to
    the next bar line, which it drops, and plays a tied continuation at the pitch of the last note
    of its name on the staff (a tie with none before is struck)."""
    classes, table = ctc_classes(target), reading_pitches(target, fifths)
    barred = BAR in classes
    carried: dict[str, int] = {}     # name -> MIDI pitch an accidental gave it in this measure
    last: dict[str, int] = {}        # name -> MIDI pitch of its last note on the staff
    out = []
    for pos, cls in staff:
        name, mark = classes[cls]
        if (name, mark) == BAR:
            carried = {}
        if table[cls] is None:          # the bar line; a rhythmic reading's rests, voices and note values
            continue
        tied = mark == TIE and name in last
        pitch = last[name] if tied else carried.get(name, table[cls]) if mark in (None, TIE) else table[cls]
        if barred and mark in MARKS[1:]:
            carried[name] = pitch
        last[name] = pitch
        out.append(Sounding(pos, pitch, tied))
    return out


def column_notes(staves: Sequence[Sequence[Sounding]], start: float = 0.0,
                 column_seconds: float = COLUMN_SECONDS, frames: int = CTC_FRAMES) -> list[pretty_midi.Note]:
    """Notes of one system's reading (``staff_notes`` of each staff): each struck note at
    ``start + column * column_seconds``, its column that of its chord (``chord_columns``), held
    to the staff's next onset (one column at the end); a tied continuation holds the staff's
    last note of its pitch on to the continuation's next onset instead."""
    notes = []
    for staff in staves:
        cols = chord_columns([(s.position, s.pitch) for s in staff], frames)
        onsets = sorted(set(cols))
        following = dict(zip(onsets, onsets[1:] + [onsets[-1] + 1] if onsets else []))
        sounding: dict[int, pretty_midi.Note] = {}
        for col, s in zip(cols, staff):
            end = start + following[col] * column_seconds
            if s.tied and s.pitch in sounding:
                sounding[s.pitch].end = max(sounding[s.pitch].end, end)
                continue
            sounding[s.pitch] = pretty_midi.Note(READING_VELOCITY, s.pitch, start + col * column_seconds, end)
            notes.append(sounding[s.pitch])
    return sorted(notes, key=lambda n: (n.start, n.pitch))


@lru_cache(maxsize=64)
def reading_pitches(ctc_target: str, fifths: int | None) -> tuple[int | None, ...]:
    """The MIDI pitch of each class of a CTC head of ``ctc_target``: a written head's names
    altered by the key signature ``fifths`` where a key head read one (no accidentals: measured
    in results.md, "Key signatures"); a marked or notated head's unmarked (and tied) names the
    same way and its marked ones by their sign; a spelled head's classes carry their own
    alteration; the bar line and a rhythmic head's rests and note values None (``staff_notes`` reads what an
    accidental and a tie carry)."""
    if ctc_target == "spelled" or fifths is None:
        return tuple(ctc_class_pitches(ctc_target))
    alters, marks = key_alters(fifths), ctc_target in ("marked", "notated", *RHYTHMIC_TARGETS)
    return tuple(midi_of(name, alter if marks and isinstance(alter, int) else alters.get(name[0], 0))
                 if is_pitch(name) else None for name, alter in ctc_classes(ctc_target))


def rhythm_notes(reading: Reading, start: float = 0.0,
                 quarter_seconds: float = QUARTER_SECONDS) -> tuple[list[pretty_midi.Note], float]:
    """The notes of a rhythmic reading (``data.rhythm``: groups placed in voices, measure by
    measure) at their notated onsets and values, a quarter ``quarter_seconds``, from ``start``;
    pitches as ``staff_notes`` reads them (accidentals to the bar line, ties held); a grace note
    a 32nd long at the onset of its note. Returns the notes and the system's end."""
    classes, sounding = ctc_classes(reading.target), {}
    staves = [read_groups([classes[c] for _, c in staff]) for staff in reading.staves]
    for groups, staff in zip(staves, reading.staves):
        played = iter(staff_notes(staff, reading.target, reading.fifths))
        sounding.update({id(g): [next(played) for _ in g.pitches] for g in groups if isinstance(g, Group)})
    notes, held, t0 = [], {}, start
    for voices in placed_measures(staves):
        length = float(max((v.end for _, v in voices), default=0))
        for _, voice in voices:
            for onset, g in voice.groups:
                on = t0 + float(onset) * quarter_seconds
                off = on + (float(value_quarters(g.value)) if g.value != GRACE else 0.125) * quarter_seconds
                for s in sounding[id(g)]:
                    if s.tied and s.pitch in held:
                        held[s.pitch].end = max(held[s.pitch].end, off)
                        continue
                    held[s.pitch] = pretty_midi.Note(READING_VELOCITY, s.pitch, on, off)
                    notes.append(held[s.pitch])
        t0 += length * quarter_seconds
    return sorted(notes, key=lambda n: (n.start, n.pitch)), t0


def reading_midi(systems: Sequence[Reading], ctc_target: str | None = None) -> pretty_midi.PrettyMIDI:
    """One piano track of the systems' readings (``column_reading``), one system after another;
    each reading's classes are its ``target``, else ``ctc_target`` (the translator head's)."""
    midi, piano, start = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(program=0, name="piano"), 0.0
    for reading in systems:
        target = reading.target or ctc_target
        if not target:
            raise ValueError("reading_midi: a reading without its classes' name (Reading.target or ctc_target)")
        if target in RHYTHMIC_TARGETS:
            notes, end = rhythm_notes(reading, start)
            piano.notes.extend(notes)
            start = end + SYSTEM_GAP_COLUMNS * COLUMN_SECONDS
            continue
        staves = [staff_notes(s, target, reading.fifths) for s in reading.staves]
        piano.notes.extend(column_notes(staves, start, frames=reading.frames))
        start += (reading.columns + SYSTEM_GAP_COLUMNS) * COLUMN_SECONDS
    midi.instruments.append(piano)
    return midi


def _limit(engines: Engines, source: str, target: str, modality: str) -> int:
    cfg = engines.translator(source, target).cfg
    return cfg.max_steps[cfg.index(modality)]


def _image_height(engines: Engines, source: str) -> int:
    return min(IMAGE_HEIGHT_PATCHES, engines.translator(source, "image").cfg.max_rows)


# ------------------------------------------------------------------ from images
def image_to_audio(systems: list[np.ndarray], engines: Engines) -> np.ndarray:
    codec, pieces = engines.image_codec(), []
    for i, gray in enumerate(systems):
        codes = codec.encode(gray)
        ids = translate_ids(engines, "image", "audio", codes.ids, src_height=codes.shape[0], piece=i)
        ids = ids[: len(ids) - len(ids) % SLOTS]
        if not ids:
            raise TranslationError(f"system {i + 1}: the model generated no audio")
        pieces.append(engines.audio_codec().decode(ids))
    return np.concatenate(pieces)


def image_to_midi(systems: list[np.ndarray], engines: Engines) -> pretty_midi.PrettyMIDI:
    """Every system's pitches read by the pitch reader where one is installed, else by the OMR
    model's CTC head, timed by image column (``reading_midi``), its key signature from the key
    reader where one is installed, else from the model's key head: no decoding, so no rhythm;
    measured against the notation cascade on the same judge in results.md. The translator is
    loaded and run only for systems that a reader did not read."""
    keys, pixels, readings = reader_keys(engines, systems), pixel_readings(engines, systems), []
    for gray, fifths, pixel in zip(systems, keys, pixels):
        own = readers_reading(fifths, pixel)
        readings.append(own if own is not None else with_readers(head_reading(engines, gray), fifths, pixel))
    midi = reading_midi(readings)
    if not midi.instruments[0].notes:
        raise TranslationError("the model read no notes in the image")
    return midi


def head_reading(engines: Engines, gray: np.ndarray) -> Reading:
    """The image -> MIDI translator's reading of one grayscale system (``column_reading``), its
    classes named (``Reading.target``)."""
    model, codes = engines.translator("image", "midi"), engines.image_codec().encode(gray)
    steps = to_steps(engines.vocab.wrap("image", list(codes.ids)), "image", model.cfg)[None].to(engines.device)
    (reading,) = column_reading(model, *encode_images(model, steps, step_positions(steps, "image", codes.shape[0])))
    return reading._replace(target=model.cfg.ctc_target)


def readers_reading(fifths: int | None, pixel: Reading | None) -> Reading | None:
    """A system's reading by the readers alone where both read it (the pitch reader's ``pixel``
    staves in the key reader's key ``fifths``), else None: the translator's heads read it
    (``with_readers``)."""
    return pixel._replace(fifths=fifths) if fifths is not None and pixel is not None else None


def with_readers(reading: Reading, fifths: int | None, pixel: Reading | None) -> Reading:
    """The translator's ``reading`` of a system with the key reader's key signature ``fifths`` and
    the pitch reader's columns and staves (``pixel``) where they read one."""
    if pixel is not None:
        reading = reading._replace(columns=pixel.columns, staves=pixel.staves, target=pixel.target,
                                   frames=pixel.frames, scores=pixel.scores)
    return reading if fifths is None else reading._replace(fifths=fifths)


def pixel_readings(engines: Engines, systems: Sequence[np.ndarray], omr: bool = False) -> list[Reading | None]:
    """The pitch reader's reading of each grayscale system image (``data.staff_images.staff_image``;
    no key signature); for ``omr``, the rhythm reader's where the run has one (``Engines.rhythm_reader``:
    OMR writes its LMX from it, ``read_staff_pitches``); Nones where the run has no such reader
    (``Engines.pitch_reader``) and for blank images."""
    reader = (omr and engines.rhythm_reader()) or engines.pitch_reader()
    if reader is None or not systems:
        return [None] * len(systems)
    images = [_staff_image_or_none(g, reader.cfg.height) for g in systems]
    present = [img for img in images if img is not None]
    if reader.cfg.ctc_target in RHYTHMIC_TARGETS:     # the frame scores fit its measures (rhythm_tokens)
        read = iter(reader.read_scored(present))
    else:
        read = iter((cols, staves, None) for cols, staves in reader.read(present))
    out = []
    for img in images:
        cols, staves, scores = next(read) if img is not None else (None, None, None)
        out.append(None if img is None else Reading(cols, staves, None, reader.cfg.ctc_target, reader.cfg.per_column,
                                                    scores))
    return out


def _staff_image_or_none(gray: np.ndarray, height: int) -> np.ndarray | None:
    """The pitch reader's image of a system (``staff_image``); None for a blank one (ImageError:
    the translator's CTC head reads it, as its codes were made)."""
    try:
        return staff_image(gray, height)
    except ImageError:
        return None


def reader_keys(engines: Engines, systems: Sequence[np.ndarray]) -> list[int | None]:
    """The key reader's key signature of each grayscale system image (``data.key_crops.key_crop``);
    Nones where the run has no key reader (``Engines.key_reader``)."""
    reader = engines.key_reader()
    if reader is None or not systems:
        return [None] * len(systems)
    return [k for k, _ in reader.read(np.stack([key_crop(g) for g in systems]))]


def image_to_notation(systems: list[np.ndarray], engines: Engines) -> Notation:
    """OMR: the LMX tokens of every system, one after another (consecutive measures)."""
    codec, names, tokens = engines.image_codec(), NotationCodec().token_names(), []
    read = zip(systems, reader_keys(engines, systems), pixel_readings(engines, systems, omr=True))
    for i, (gray, fifths, pixel) in enumerate(read):
        codes = codec.encode(gray)
        ids = translate_ids(engines, "image", "notation", codes.ids, src_height=codes.shape[0], piece=i,
                            fifths=fifths, pixel=pixel)
        tokens.extend(names[t] for t in ids)
    return Notation(lmx=tuple(tokens))


# ------------------------------------------------------------------ from audio
def audio_windows(samples: np.ndarray, engines: Engines, target: str) -> list[tuple[float, float, list[int]]]:
    """(start s, end s, local audio ids) of windows of at most AUDIO_WINDOW_S and the model's steps."""
    frames = min(_limit(engines, "audio", target, "audio"), round(AUDIO_WINDOW_S * SAMPLE_RATE / HOP))
    codes = engines.audio_codec().encode_codes(samples)            # (4, total frames)
    out = []
    for lo in range(0, codes.shape[1], frames):
        hi = min(codes.shape[1], lo + frames)
        out.append((lo * HOP / SAMPLE_RATE, min(hi * HOP, len(samples)) / SAMPLE_RATE, flatten_audio(codes[:, lo:hi])))
    return out


def audio_to_midi(samples: np.ndarray, engines: Engines) -> pretty_midi.PrettyMIDI:
    """Transcription: each window's notes from the model's roll head where it has one (and
    ``RunConfig.roll_reading``), else the MIDI tokens it decodes."""
    model = engines.translator("audio", "midi")
    if model.cfg.roll_head and engines.config.roll_reading:
        return roll_midi(engines, model, audio_windows(samples, engines, "midi"))
    segments = [MidiSegment(round(a, 6), round(b, 6), translate_ids(engines, "audio", "midi", ids, piece=i))
                for i, (a, b, ids) in enumerate(audio_windows(samples, engines, "midi"))]
    return MidiCodec().decode_segments(segments)


def read_notes(samples: np.ndarray, engines: Engines) -> pretty_midi.PrettyMIDI:
    """Transcription by the note reader (``--transcriber note-reader``): one piano track of the
    notes its onset and frame rolls read (``data.roll.roll_notes``) from 44.1 kHz ``samples``."""
    reader = engines.note_reader()
    onset, frame = reader.probabilities(resample(samples, AUDIO_RATE, reader.cfg.sample_rate))
    midi, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(program=0, name="piano")
    piano.notes.extend(roll_notes(onset, frame, onset_threshold=reader.cfg.onset_threshold,
                                  frame_seconds=reader.cfg.frame_seconds))
    midi.instruments.append(piano)
    return midi


def roll_midi(engines: Engines, model: Translator, windows: Sequence[tuple[float, float, list[int]]]
              ) -> pretty_midi.PrettyMIDI:
    """One piano track of the roll head's reading (``data.roll.roll_notes``) of audio ``windows``
    (``audio_windows``), each timed from its start."""
    midi, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(program=0, name="piano")
    for start, _, ids in windows:
        steps = to_steps(engines.vocab.wrap("audio", ids), "audio", model.cfg)[None].to(engines.device)
        piano.notes.extend(pretty_midi.Note(n.velocity, n.pitch, n.start + start, n.end + start)
                           for n in read_rolls(model, steps)[0])
    midi.instruments.append(piano)
    return midi


def read_rolls(model: Translator, src: torch.Tensor) -> list[list[pretty_midi.Note]]:
    """The roll head's notes of a batch of audio steps (B, S, 4), in seconds from each one's first frame."""
    with torch.inference_mode():
        memory, _ = model.encode(src, step_positions(src, "audio"), "audio", "midi")
        probs = model.roll_logits(memory).float().sigmoid().cpu().numpy()     # (B, S, 2, keys)
    frames = (src[..., 1] != PAD).cpu().numpy()
    return [roll_notes(p[f, 0], p[f, 1]) for p, f in zip(probs, frames)]


def audio_to_image(samples: np.ndarray, engines: Engines) -> list[np.ndarray]:
    h = _image_height(engines, "audio")
    ids = [translate_ids(engines, "audio", "image", w, tgt_height=h, piece=i)
           for i, (_, _, w) in enumerate(audio_windows(samples, engines, "image"))]
    return _decode_systems(ids, h, engines)


# ------------------------------------------------------------------ from MIDI and notation
def midi_to_audio(midi: pretty_midi.PrettyMIDI, engines: Engines) -> np.ndarray:
    """Each MIDI segment's generated audio, concatenated."""
    most = _limit(engines, "midi", "audio", "midi")
    segments = MidiCodec().encode_segments(midi, max_seconds=MIDI_WINDOW_S, max_tokens=most)
    pieces = []
    for i, seg in enumerate(segments):
        ids = translate_ids(engines, "midi", "audio", seg.ids, piece=i)
        ids = ids[: len(ids) - len(ids) % SLOTS]
        if ids:
            pieces.append(engines.audio_codec().decode(ids))
    if not pieces:
        raise TranslationError("the model generated no audio")
    return np.concatenate(pieces)


def notation_to_image(notation: Notation, engines: Engines) -> list[np.ndarray]:
    h = _image_height(engines, "notation")
    chunks = measure_chunks(lmx_tokens(notation), _limit(engines, "notation", "image", "notation"))
    ids = [translate_ids(engines, "notation", "image", tokens_to_ids(c), tgt_height=h, piece=i)
           for i, c in enumerate(chunks)]
    return _decode_systems(ids, h, engines)


def measure_chunks(tokens: Sequence[str], limit: int) -> list[list[str]]:
    """LMX tokens cut before ``measure`` tokens into pieces of at most ``limit`` tokens."""
    measures: list[list[str]] = []
    for t in tokens:
        if t == "measure" or not measures:
            measures.append([])
        measures[-1].append(t)
    chunks: list[list[str]] = [[]]
    for m in measures:
        if len(m) > limit:
            raise BadInputError(f"a measure of {len(m)} LMX tokens is longer than the model takes ({limit})")
        if len(chunks[-1]) + len(m) > limit:
            chunks.append([])
        chunks[-1].extend(m)
    return [c for c in chunks if c]


def _decode_systems(per_piece: list[list[int]], height: int, engines: Engines) -> list[np.ndarray]:
    """Generated image ids (whole columns of ``height`` patches kept) -> system images."""
    column = SLOTS * height
    systems = []
    for ids in per_piece:
        ids = ids[: len(ids) - len(ids) % column]
        if ids:
            systems.append(engines.image_codec().decode(Codes(ids, (height, len(ids) // column))))
    if not systems:
        raise TranslationError("the model generated no image columns")
    return systems
