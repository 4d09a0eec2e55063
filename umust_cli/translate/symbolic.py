"""Steps without a translator: reading inputs, engraving, performing, synthesis, transcription
by the reference transcriber, and quantizing MIDI into notation.

* ``verovio``: notation -> system images (``data.render``, one system a page, as the corpus).
* ``perform``: notation -> performance MIDI (verovio's score MIDI, then ``data.perform``
  at the score's tempo with the run's seed).
* ``fluidsynth``: MIDI -> audio (``data.synth``; the run's soundfont).
* ``transkun``: audio -> MIDI (``eval.transcribe``, the reference transcriber).
* ``quantize``: MIDI -> notation (``quantize_midi``): the notes split into two hands at
  middle C, written at the tempo (given, or estimated: ``estimate_tempo``) so that a beat
  is a quarter, and read back by music21 with its quantization
  (sixteenths); the notation codec then merges the hands into one
  piano part. On corpus systems (their performance MIDI against their MusicXML, first
  onsets aligned; 2026-11-29): minuet + 4 Joplin rags (86 systems, 6,628 notes) keep the
  onset of 83.6% of the notes and onset and duration of 70.8% with the estimated tempo
  (82.5% / 69.9% with the true one); 2 Chopin mazurkas (37 systems) 70.5% / 62.7%
  (80.6% / 72.7% with the true tempo, ``--tempo``).
"""

from __future__ import annotations

import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pretty_midi

from umust_cli.codecs.notation import NotationCodec, score_to_musicxml
from umust_cli.data import render, scans
from umust_cli.data.perform import PerformanceConfig, perform
from umust_cli.data.synth import synthesize
from umust_cli.errors import ImageError, NotationError, TranslationError
from umust_cli.eval.transcribe import TranscriberConfig, transcribe
from umust_cli.inputs import (MAX_SYSTEM_PIXELS, check_pixels, load_audio, load_image, load_lmx, load_midi,
                              require_input_file)
from umust_cli.translate.engines import Engines
from umust_cli.translate.values import Notation, musicxml_of

SAMPLE_RATE = 44100
SPLIT_PITCH = 60                       # quantize: notes from middle C up go to the upper staff
TEMPO_RANGE = (60.0, 160.0)            # estimate_tempo searches this (BPM, steps of 0.25)
QUARTER_DIVISORS = (4,)                # music21 quantization grid: sixteenths (triplet grids gave music21
                                       # tuplets such as 12:7 that LMX cannot hold)
TEMPO_SLACK = 0.08                     # estimate_tempo: fits this close to the best (sixteenths) count as equal
ENGRAVE = render.EngraveConfig()


# ------------------------------------------------------------------ inputs
def read_input(path: Path, modality: str):
    """The value of an input file (see pipeline's module docstring), validated by umust_cli.inputs."""
    if modality == "image":
        return read_systems(path)
    if modality == "audio":
        return load_audio(path, SAMPLE_RATE)[0]
    if modality == "midi":
        return load_midi(path, require_notes=True)
    if path.suffix.lower() == ".lmx":
        return Notation(musicxml=NotationCodec().from_lmx(load_lmx(path)))
    return Notation(musicxml=score_to_musicxml(require_input_file(path, "score file")))


def read_systems(path: Path) -> list[np.ndarray]:
    """The piano systems of a PDF (every page) or of a page image, in reading order; an image
    in which the detector does not find two or more systems is taken as one system."""
    cfg, pdf = scans.ScanConfig(), path.suffix.lower() == ".pdf"
    pages = scans.load_pages(require_input_file(path, "PDF"), cfg.page_width_px) if pdf else [load_image(path)]
    systems = []
    for number, page in enumerate(pages):
        try:
            page_upright, found = scans.page_systems(page, cfg, number, f"{path.name} page {number + 1}")
        except ImageError:
            found = []
        if len(found) >= 2 or (pdf and found):
            systems.extend(scans.crop(page_upright, s) for s in found)
        elif not pdf:
            systems.append(page)
    if not systems:
        raise ImageError(f"no piano systems (two staves joined by bar lines) found in {path}")
    for i, s in enumerate(systems):
        check_pixels(s.shape[0], s.shape[1], f"{path} system {i + 1}", MAX_SYSTEM_PIXELS)
    return systems


# ------------------------------------------------------------------ notation -> image, MIDI
def _engrave(notation: Notation) -> render.Engraving:
    xml = musicxml_of(notation)
    root = ET.fromstring(xml.encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pretty_midi chatter about verovio's MIDI
        return render.engrave(xml, render.measure_count(root), ENGRAVE)


def engrave_systems(notation: Notation, engines: Engines) -> list[np.ndarray]:  # noqa: ARG001 - step signature
    return [render.rasterize(s.svg, ENGRAVE.margin_px) for s in _engrave(notation).systems]


def perform_midi(notation: Notation, engines: Engines) -> pretty_midi.PrettyMIDI:
    """verovio's score MIDI performed at the score's tempo (velocity curve and onset jitter
    drawn with the run's seed)."""
    config = PerformanceConfig(tempo_range=(1.0, 1.0))
    return perform(_engrave(notation).midi, config, engines.config.seed).midi


# ------------------------------------------------------------------ MIDI <-> audio
def synthesize_audio(midi: pretty_midi.PrettyMIDI, engines: Engines) -> np.ndarray:
    if not any(i.notes for i in midi.instruments):
        raise TranslationError("the MIDI step made no notes: nothing to synthesize")
    return synthesize(midi, engines.soundfont(), SAMPLE_RATE)


def transcribe_audio(samples: np.ndarray, engines: Engines) -> pretty_midi.PrettyMIDI:
    return transcribe(samples, SAMPLE_RATE, TranscriberConfig(device=str(engines.device)))


# ------------------------------------------------------------------ MIDI -> notation
def estimate_tempo(midi: pretty_midi.PrettyMIDI) -> float:
    """The tempo (BPM, in TEMPO_RANGE) at which the onsets read most simply; 120 with fewer
    than 4 onsets.

    Candidates are the tempos whose sixteenth grid, started at the first onset, the onsets
    fit within TEMPO_SLACK (mean distance in sixteenths) of the best fit. A tempo, its half
    and 3/2 of it often fit alike (eighths become sixteenths, quarters dotted quarters), so
    among the candidates the one whose inter-onset intervals are most often plain note
    values (1, 2, 4, 8 or 16 sixteenths, not dotted ones) wins, the fastest on a tie.
    """
    onsets = np.unique(np.round([n.start for i in midi.instruments for n in i.notes], 2))
    if onsets.size < 4:
        return 120.0
    bpms = np.arange(TEMPO_RANGE[0], TEMPO_RANGE[1] + 0.25, 0.25)
    sixteenths = (onsets - onsets[0])[None, :] * bpms[:, None] / 60.0 * 4   # (tempos, onsets)
    grid = np.round(sixteenths)
    fit = np.abs(sixteenths - grid).mean(axis=1)
    plain = np.isin(np.diff(grid, axis=1), (1, 2, 4, 8, 16)).mean(axis=1)
    plain = np.where(fit <= fit.min() + TEMPO_SLACK, plain, -1.0)
    return float(bpms[np.flatnonzero(plain >= plain.max() - 1e-9)[-1]])


def quantize_midi(midi: pretty_midi.PrettyMIDI, engines: Engines) -> Notation:
    """A performance as a two-staff piano score (module docstring)."""
    import music21

    notes = sorted((n for i in midi.instruments if not i.is_drum for n in i.notes), key=lambda n: (n.start, n.pitch))
    if not notes:
        raise TranslationError("the transcription holds no notes: nothing to write as notation")
    bpm = engines.config.tempo or estimate_tempo(midi)
    hands = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    upper, lower = pretty_midi.Instrument(0, name="upper"), pretty_midi.Instrument(0, name="lower")
    first = notes[0].start                 # the first onset is beat 1 (leading silence dropped)
    for n in notes:
        (upper if n.pitch >= SPLIT_PITCH else lower).notes.append(
            pretty_midi.Note(n.velocity, n.pitch, n.start - first, n.end - first))
    hands.instruments = [i for i in (upper, lower) if i.notes]
    with tempfile.TemporaryDirectory(prefix="umust-quantize-") as tmp:
        path = Path(tmp) / "hands.mid"
        hands.write(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = music21.converter.parse(str(path), quantizePost=True, quarterLengthDivisors=QUARTER_DIVISORS)
    try:
        return Notation(musicxml=score_to_musicxml(score))
    except NotationError as e:
        raise TranslationError(f"the quantized score is not writable as LMX-ready MusicXML: {e}") from e
