"""Running a route: read the input, run each step, write the output atomically.

Values travel between steps in memory, one type per modality:

* image: system images (uint8 gray) in reading order; a page or a PDF is split into its
  piano systems by the detector ``retrieve index score.pdf`` uses (``data.scans``);
* audio: float32 mono samples at 44.1 kHz;
* midi: a ``pretty_midi.PrettyMIDI``;
* notation: ``values.Notation``, MusicXML text and/or LMX tokens.

Each step of a route is one function of ``STEPS`` (``direct`` for the translator's tasks,
``symbolic`` for the rest). The output is written by suffix: ``.wav`` (16-bit, 44.1 kHz),
``.png`` (the systems stacked top to bottom), ``.musicxml``/``.xml``, ``.lmx`` (the lmx
file layout), ``.mid``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from umust_cli.codecs.notation import lmx_file_text
from umust_cli.data.render import write_png
from umust_cli.data.synth import write_wav
from umust_cli.errors import TranslationError
from umust_cli.io import atomic_path, write_text_atomic
from umust_cli.translate import direct, symbolic
from umust_cli.translate.engines import Engines
from umust_cli.translate.routes import Route
from umust_cli.translate.values import lmx_tokens, musicxml_of

SAMPLE_RATE = 44100
SYSTEM_GAP_PX = 24           # white rows between stacked system images

Step = Callable[[Any, Engines], Any]
STEPS: dict[tuple[str, str, str], Step] = {
    ("image", "audio", "umust"): direct.image_to_audio,
    ("image", "notation", "umust"): direct.image_to_notation,
    ("image", "midi", "umust"): direct.image_to_midi,
    ("midi", "audio", "umust"): direct.midi_to_audio,
    ("audio", "midi", "umust"): direct.audio_to_midi,
    ("audio", "image", "umust"): direct.audio_to_image,
    ("notation", "image", "umust"): direct.notation_to_image,
    ("notation", "image", "verovio"): symbolic.engrave_systems,
    ("notation", "midi", "perform"): symbolic.perform_midi,
    ("midi", "audio", "fluidsynth"): symbolic.synthesize_audio,
    ("audio", "midi", "transkun"): symbolic.transcribe_audio,
    ("audio", "midi", "note-reader"): direct.read_notes,
    ("midi", "notation", "quantize"): symbolic.quantize_midi,
}


def run_route(route: Route, source: Path, dest: Path, engines: Engines) -> dict:
    """Translate the file ``source`` along ``route`` into ``dest``; a summary of the output."""
    torch.manual_seed(engines.config.seed)
    value = symbolic.read_input(source, route.source)
    for a, b, engine in route.steps():
        value = STEPS[(a, b, engine)](value, engines)
    return write_output(dest, route.target, value)


def write_output(dest: Path, modality: str, value: Any) -> dict:
    """Write ``value`` in the format of ``dest``'s suffix; the summary of what was written."""
    if modality == "audio":
        write_wav(dest, value, SAMPLE_RATE)
        seconds = len(value) / SAMPLE_RATE
        return {"seconds": round(seconds, 3), "summary": f"{seconds:.2f} s"}
    if modality == "image":
        page = stack_systems(value)
        write_png(dest, page)
        return {"systems": len(value), "size": [int(n) for n in page.shape],
                "summary": f"{len(value)} system(s), {page.shape[1]} x {page.shape[0]} px"}
    if modality == "midi":
        with atomic_path(dest) as tmp:
            value.write(str(tmp))
        notes = sum(len(i.notes) for i in value.instruments)
        return {"notes": notes, "summary": f"{notes} notes, {value.get_end_time():.2f} s"}
    if dest.suffix.lower() == ".lmx":
        tokens = lmx_tokens(value)
        write_text_atomic(dest, lmx_file_text(" ".join(tokens)))
        return {"tokens": len(tokens), "summary": f"{len(tokens)} LMX tokens"}
    xml = musicxml_of(value)
    write_text_atomic(dest, xml)
    measures = xml.count("<measure ")
    return {"measures": measures, "summary": f"{measures} measures"}


def stack_systems(systems: list[np.ndarray]) -> np.ndarray:
    """System images top to bottom on one white page (left-aligned, SYSTEM_GAP_PX apart)."""
    if not systems:
        raise TranslationError("no system image to write")
    width = max(s.shape[1] for s in systems)
    rows = []
    for i, s in enumerate(systems):
        if i:
            rows.append(np.full((SYSTEM_GAP_PX, width), 255, np.uint8))
        rows.append(np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=255))
    return np.concatenate(rows, axis=0)
