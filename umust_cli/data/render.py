"""Engrave a normalized MusicXML score with verovio, one system at a time.

Verovio lays the piece out with automatic system breaks on pages that are
shorter than one system, so that every page holds exactly one system
(``adjustPageHeight`` then shrinks the page to it). Each page's SVG is
rasterized with cairosvg to a grayscale image trimmed to the ink.

The same toolkit gives the score MIDI (``renderToMIDI``) and the timemap
(``renderToTimemap``), both with repeats *not* expanded (``expandNever``), so a
system's measures map to one [start, end) interval of score seconds::

    system k = measures [first_k, first_{k+1})  ->  [t(first_k), t(first_{k+1}))

where t(m) is the timemap's ``measureOn`` time of measure m and the last
system ends at the timemap's final time stamp.
"""

from __future__ import annotations

import base64
import copy
import functools
import io
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import pretty_midi

from umust_cli.errors import RenderError
from umust_cli.io import atomic_path

_MEASURE_RE = re.compile(r'<g id="([^"]+)" class="measure[ "]')
_SYSTEM_RE = re.compile(r'class="system[ "]')
# Text groups whose glyphs cairosvg cannot draw (SMuFL notes inside <text>) or that are not music.
_DROP_RE = re.compile(r'<g id="[^"]*" class="(?:tempo|label|labelAbbr)">.*?</g>', re.DOTALL)
_INK = 250  # a pixel darker than this (0..255) is ink when trimming
_GLYPH_DEF_RE = re.compile(r'<g id="([^"]+)">\s*(<path[^>]*/>)\s*</g>')
_GLYPH_USE_RE = re.compile(r'<use xlink:href="#([^"]+)" transform="([^"]+)"\s*/>')


@dataclass(frozen=True)
class EngraveConfig:
    scale: int = 50  # verovio scale, percent: fixes the staff height (36 px at 50)
    page_width: int = 2200  # verovio page width at scale 100 (the image is page_width * scale / 100 px wide)
    margin_px: int = 8  # white border kept around the system's ink
    font: str = "Leipzig"  # verovio's SMuFL music font (verovio_fonts() lists the installed ones)
    spacing_linear: float = 0.25  # verovio spacingLinear (horizontal spacing, verovio's default)
    spacing_non_linear: float = 0.6  # verovio spacingNonLinear (duration-dependent spacing)
    engraver: str = "verovio"  # who draws the images: "verovio" or "lilypond" (verovio's system breaks)


ENGRAVERS = ("verovio", "lilypond")


@dataclass(frozen=True)
class EngravingVariety:
    """Ranges from which the extra engravings of a piece draw their font and layout (seeded)."""

    fonts: tuple[str, ...] = ()  # () = every font the installed verovio ships
    engravers: tuple[str, ...] = ("verovio",)  # drawn from for each extra engraving
    page_width: tuple[int, int] = (1400, 3200)  # fewer or more measures per system
    scale: tuple[int, int] = (40, 60)  # staff height 29..43 px
    spacing_linear: tuple[float, float] = (0.15, 0.35)
    spacing_non_linear: tuple[float, float] = (0.45, 0.75)


def verovio_fonts() -> tuple[str, ...]:
    """The SMuFL fonts of the installed verovio (folders of its resource path with a glyph table)."""
    from pathlib import Path

    import verovio

    data = Path(verovio.toolkit(False).getResourcePath())
    return tuple(sorted(p.stem for p in data.glob("*.xml") if (data / p.stem).is_dir()))


def engraving_variant(base: EngraveConfig, variety: EngravingVariety, seed: int) -> EngraveConfig:
    """An engraving config drawn from ``variety`` by ``seed`` (margin kept from ``base``)."""
    rng = np.random.default_rng(seed)
    fonts = sorted(variety.fonts or verovio_fonts())
    return EngraveConfig(
        scale=int(rng.integers(variety.scale[0], variety.scale[1] + 1)),
        page_width=int(rng.integers(variety.page_width[0], variety.page_width[1] + 1) // 10 * 10),
        margin_px=base.margin_px,
        font=fonts[int(rng.integers(len(fonts)))],
        spacing_linear=round(float(rng.uniform(*variety.spacing_linear)), 3),
        spacing_non_linear=round(float(rng.uniform(*variety.spacing_non_linear)), 3),
        engraver=sorted(variety.engravers)[int(rng.integers(len(variety.engravers)))],
    )


@dataclass(frozen=True)
class SystemLayout:
    index: int  # 0-based system number in the piece
    first_measure: int  # ordinal (0-based) of the system's first measure in the part
    end_measure: int  # ordinal one past its last measure
    start_s: float  # score seconds (verovio timemap)
    end_s: float
    svg: str  # the page of this one system


@dataclass(frozen=True)
class Engraving:
    systems: list[SystemLayout]
    midi: pretty_midi.PrettyMIDI  # verovio's score MIDI of the whole piece, repeats not expanded
    duration_s: float  # score seconds at the end of the timemap
    note_onsets: dict[str, float]  # note id (as in the systems' SVG) -> onset, score seconds


@functools.lru_cache(maxsize=4)
def toolkit(config: EngraveConfig):
    """One verovio toolkit per process and config (loading resources takes ~0.1 s)."""
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    tk.setOptions({
        "scale": config.scale,
        "pageWidth": config.page_width,
        "font": config.font,
        "spacingLinear": config.spacing_linear,
        "spacingNonLinear": config.spacing_non_linear,
        "pageHeight": 100,  # shorter than any system: one system per page
        "adjustPageHeight": True,
        "breaks": "auto",
        "header": "none",
        "footer": "none",
        "expandNever": True,  # repeats are not unrolled in the MIDI and timemap
        "svgFormatRaw": True,
    })
    return tk


def engrave(musicxml: str, measure_count: int, config: EngraveConfig) -> Engraving:
    """Lay out ``musicxml`` (one part of ``measure_count`` measures) as single-system pages."""
    tk = toolkit(config)
    if not tk.loadData(musicxml):
        raise RenderError("verovio could not load the MusicXML")
    pages = [tk.renderToSVG(p) for p in range(1, tk.getPageCount() + 1)]
    page_measures = [_MEASURE_RE.findall(svg) for svg in pages]
    for number, svg in enumerate(pages, start=1):
        if len(_SYSTEM_RE.findall(svg)) != 1:
            raise RenderError(f"verovio page {number} does not hold exactly one system")
    found = sum(len(m) for m in page_measures)
    if found != measure_count:
        raise RenderError(f"verovio engraved {found} measures, the MusicXML has {measure_count}")
    timemap = tk.renderToTimemap({"includeMeasures": True, "includeRests": True})
    onsets, end_ms = _measure_onsets(timemap)
    systems, first = [], 0
    for index, (svg, ids) in enumerate(zip(pages, page_measures)):
        systems.append(SystemLayout(index, first, first + len(ids), _start(ids, onsets, index),
                                    0.0, inline_glyphs(_DROP_RE.sub("", svg))))
        first += len(ids)
    ends = [s.start_s for s in systems[1:]] + [end_ms / 1000.0]
    systems = [_with_end(s, e) for s, e in zip(systems, ends)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verovio puts tempo events on every track; pretty_midi complains
        midi = pretty_midi.PrettyMIDI(io.BytesIO(base64.b64decode(tk.renderToMIDI())))
    return Engraving(systems=systems, midi=midi, duration_s=end_ms / 1000.0, note_onsets=note_onsets(timemap))


def note_onsets(timemap: list[dict]) -> dict[str, float]:
    """Note id -> score seconds at which the timemap starts it (tied continuations have none)."""
    return {note: float(event["tstamp"]) / 1000.0 for event in timemap for note in event.get("on", ())}


def _measure_onsets(timemap: list[dict]) -> tuple[dict[str, float], float]:
    """Measure id -> first onset (ms) from the timemap, and the final time stamp (ms)."""
    onsets: dict[str, float] = {}
    for event in timemap:
        if "measureOn" in event:
            onsets.setdefault(event["measureOn"], float(event["tstamp"]))
    if not timemap:
        raise RenderError("verovio's timemap is empty")
    return onsets, float(timemap[-1]["tstamp"])


def _start(ids: list[str], onsets: dict[str, float], index: int) -> float:
    for measure_id in ids:  # a system's first measure may be absent from the timemap (empty)
        if measure_id in onsets:
            return onsets[measure_id] / 1000.0
    raise RenderError(f"system {index} has no measure in verovio's timemap")


def _with_end(system: SystemLayout, end_s: float) -> SystemLayout:
    """The system with its end time; ``end_s == start_s`` marks a system that takes no time."""
    return SystemLayout(system.index, system.first_measure, system.end_measure, system.start_s, end_s, system.svg)


# ------------------------------------------------------------------ images
def inline_glyphs(svg: str) -> str:
    """Replace verovio's ``<use>`` glyph references by the glyph paths (cairosvg draws those ~1.5x faster)."""
    glyphs = dict(_GLYPH_DEF_RE.findall(svg))

    def expand(match: re.Match) -> str:
        path = glyphs.get(match.group(1))
        return match.group(0) if path is None else f'<g transform="{match.group(2)}">{path}</g>'

    return _GLYPH_USE_RE.sub(expand, svg)


def rasterize(svg: str, margin_px: int) -> np.ndarray:
    """SVG -> grayscale uint8 [height, width] on white, trimmed to the ink plus ``margin_px``."""
    return trim(raster(svg), margin_px)


def raster(svg: str) -> np.ndarray:
    """SVG -> grayscale uint8 [height, width] on white at the SVG's own size (1 px per SVG px)."""
    import cairosvg
    from PIL import Image

    try:
        png = cairosvg.svg2png(bytestring=svg.encode("utf-8"), background_color="white")
    except Exception as e:  # cairosvg raises assorted types on odd SVG
        raise RenderError(f"cairosvg could not rasterize the system: {type(e).__name__}: {e}") from e
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the ink of a white-background uint8 image, inclusive."""
    ink = image < _INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise RenderError("the engraved system is blank")
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def trim(image: np.ndarray, margin_px: int) -> np.ndarray:
    """Crop a white-background uint8 image to its ink with a white border of ``margin_px``."""
    top, bottom, left, right = ink_box(image)
    crop = image[top: bottom + 1, left: right + 1]
    return np.pad(crop, margin_px, mode="constant", constant_values=255)


def write_png(path, image: np.ndarray) -> None:
    """Write a grayscale uint8 image atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image, mode="L").save(tmp, format="PNG")


# --------------------------------------------------------------- notation
def measure_count(root: ET.Element) -> int:
    part = root.find("part")
    return 0 if part is None else len(part.findall("measure"))


def overfull_measures(root: ET.Element, tolerance: float = 1.25) -> dict[int, tuple[float, float]]:
    """Measures (0-based index) whose content is longer than their time signature allows.

    Returns ``{index: (content quarters, bar quarters)}``. A measure holding more than
    ``tolerance`` times its bar length is a mis-parsed score (music21's kern reader
    sometimes piles a whole section into one bar after spine splits), and its audio
    would not match its image; pickups (under-full bars) are fine.
    """
    part = root.find("part")
    divisions, bar, found = 1.0, None, {}
    for index, measure in enumerate([] if part is None else part.findall("measure")):
        divisions = float(measure.findtext("attributes/divisions") or divisions)
        beats, beat_type = measure.findtext("attributes/time/beats"), measure.findtext("attributes/time/beat-type")
        if beats and beat_type and beats.isdigit():
            bar = int(beats) * 4.0 / int(beat_type)
        content = content_divisions(measure) / divisions
        if bar and content > tolerance * bar:
            found[index] = (content, bar)
    return found


def content_divisions(measure: ET.Element) -> float:
    """The furthest time any voice reaches in a measure, in divisions."""
    cursor = reach = 0.0
    for element in measure:
        duration = float(element.findtext("duration") or 0)
        if element.tag == "backup":
            cursor -= duration
        elif element.tag == "forward" or (element.tag == "note" and element.find("chord") is None):
            cursor += duration
        reach = max(reach, cursor)
    return reach


def slice_musicxml(root: ET.Element, first: int, end: int) -> str:
    """MusicXML text of measures [first, end) of a one-part score.

    The attributes in force at ``first`` (divisions, key, time, staves, clefs)
    are restated in the first kept measure so the excerpt reads on its own.
    """
    part = root.find("part")
    measures = part.findall("measure")
    if not 0 <= first < end <= len(measures):
        raise RenderError(f"measure range [{first}, {end}) outside 0..{len(measures)}")
    out = copy.copy(root)
    out[:] = [copy.deepcopy(child) for child in root if child.tag != "part"]
    new_part = ET.SubElement(out, "part", dict(part.attrib))
    kept = [copy.deepcopy(m) for m in measures[first:end]]
    _restate_attributes(kept[0], _attributes_before(measures[:first]))
    new_part.extend(kept)
    return ET.tostring(out, encoding="unicode", xml_declaration=True)


_ATTRIBUTE_ORDER = ("divisions", "key", "time", "staves", "clef")


def _attributes_before(measures: list[ET.Element]) -> dict[tuple[str, str], ET.Element]:
    """(tag, staff number) -> the last such attribute element in ``measures``."""
    state: dict[tuple[str, str], ET.Element] = {}
    for measure in measures:
        for attributes in measure.findall("attributes"):
            for child in attributes:
                if child.tag in _ATTRIBUTE_ORDER:
                    state[(child.tag, child.get("number", ""))] = child
    return state


def _restate_attributes(measure: ET.Element, state: dict[tuple[str, str], ET.Element]) -> None:
    """Put the carried-over attributes missing from ``measure``'s first <attributes> into it."""
    if not state:
        return
    attributes = _leading_attributes(measure)
    if attributes is None:
        attributes = ET.Element("attributes")
        measure.insert(0, attributes)
    present = {(c.tag, c.get("number", "")) for c in attributes}
    merged = list(attributes) + [copy.deepcopy(e) for k, e in state.items() if k not in present]
    order = {tag: i for i, tag in enumerate(_ATTRIBUTE_ORDER)}
    attributes[:] = sorted(merged, key=lambda e: order.get(e.tag, len(order)))  # stable: keeps staff order


def _leading_attributes(measure: ET.Element) -> ET.Element | None:
    """The measure's <attributes> that comes before its first note, if any."""
    for child in measure:
        if child.tag == "attributes":
            return child
        if child.tag in ("note", "backup", "forward"):
            return None
    return None
