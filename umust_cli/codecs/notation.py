"""Notation codec: score files <-> Linearized MusicXML (LMX) tokens.

LMX (Mayer et al., ICDAR 2024) linearizes the ``<part>`` of a MusicXML file
into whitespace-separated tokens, one short token per MusicXML element::

    measure key:fifths:1 time beats:6 beat-type:8 clef:G2 staff:1 clef:F4 staff:2
    G4 voice:1 eighth staff:1 beam:begin G4 eighth sharp ... backup half ...

We use the authors' own implementation (PyPI ``linearized-musicxml``, module
``lmx``) for both directions and only prepare its input, because it expects

* ONE part (a piano grand staff is one part with ``<staves>2</staves>``),
* a ``<type>`` on every note (durations are read from note types, not
  ``<duration>``), and tuplet ratios that are in its vocabulary.

Input that is already like that (MuseScore MusicXML, which the paper used) is
linearized as it is. Anything else (kern, MEI, multi-part MusicXML, music21
objects) is normalized through music21 first: a score written as several staff
parts (two ``**kern`` spines -> two music21 parts) is merged into one part with
staves, chord notes are sorted upwards (LMX's canonical order). In both cases
the part is then made safe for LMX's lossy fields:

* voices are renumbered the MuseScore way (staff 1: voices 1-4, staff 2: 5-8);
* each note's tuplet ratio is the file's <time-modification> when that
  explains the note's duration (as the lmx linearizer reads it), else the one
  its real duration implies (LMX keeps only type, dots and actual:normal, not
  <normal-type>/<normal-dot>);
* an <accidental> is added wherever the lmx decoder, which drops <alter> and
  infers it from key, earlier accidentals and ties, would get it wrong.

Flavors: ``extended`` keeps the slur/articulation/ornament tokens; ``core``
drops them. Both share one vocabulary (the lmx package's ``ALL_TOKENS``).
The codec emits bare token sequences like the lmx package does; ``from_lmx``
also accepts the lmx ``.lmx`` file layout (``version: 1.0`` / ``flavor: ...``
header lines, then ``---``-separated systems, ``#`` comments).
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence, Union

from lmx.linearization.Delinearizer import Delinearizer
from lmx.linearization.Linearizer import Linearizer
from lmx.linearization.vocabulary import (ALL_TOKENS, EXTENDED_FLAVOR_TOKENS, NOTE_TYPE_TO_QUARTER_MULTIPLE,
                                         TIME_MODIFICATION_TOKENS)
from lmx.symbolic.PitchAlternator import PitchAlternator
from lmx.symbolic.part_to_score import part_to_score

from umust_cli.codecs.base import Codes, as_codes
from umust_cli.errors import BadInputError, InputNotFoundError, NotationError

FLAVORS = ("core", "extended")
XML_SUFFIXES = (".musicxml", ".xml", ".mxl")
MUSIC21_SUFFIXES = (".krn", ".mei")
SCORE_SUFFIXES = XML_SUFFIXES + MUSIC21_SUFFIXES
MAX_STAVES = 3  # LMX has staff:1..3 tokens
VOICES_PER_STAFF = 4  # MuseScore numbering: staff s owns voices 4(s-1)+1 .. 4s
MAX_VOICE = 12  # LMX has voice:1..12 tokens

_TOKEN_INDEX = {name: i for i, name in enumerate(ALL_TOKENS)}
_EXTENDED = frozenset(EXTENDED_FLAVOR_TOKENS)

Source = Union[str, Path, Any]  # a score file path or a music21 Score


@dataclass(frozen=True)
class LinearizeResult:
    tokens: list[str]
    warnings: list[str]  # the lmx linearizer's complaints (e.g. chord order)


@dataclass(frozen=True)
class DelinearizeResult:
    musicxml: str
    warnings: list[str]  # the lmx delinearizer's repairs (e.g. dangling tokens)


class NotationCodec:
    """Scores <-> LMX tokens; local ids index the lmx package's vocabulary."""

    modality = "notation"

    def __init__(self, flavor: str = "core") -> None:
        if flavor not in FLAVORS:
            raise BadInputError(f"unknown LMX flavor {flavor!r} (choose from {', '.join(FLAVORS)})")
        self.flavor = flavor

    @property
    def vocab_size(self) -> int:
        return len(ALL_TOKENS)

    def token_names(self) -> list[str]:
        return list(ALL_TOKENS)

    def to_lmx(self, source: Source) -> str:
        """Score file path or music21 Score -> whitespace-separated LMX tokens."""
        return " ".join(linearize(source, self.flavor).tokens)

    def from_lmx(self, text: str) -> str:
        """LMX tokens (bare, or in the .lmx file layout) -> MusicXML text."""
        return delinearize(text).musicxml

    def encode(self, source: Source) -> Codes:
        ids = tokens_to_ids(self.to_lmx(source).split())
        return Codes(ids, (len(ids),))

    def decode(self, codes: Codes | Sequence[int]) -> str:
        """Ids (Codes or a plain sequence) -> MusicXML text."""
        ids, n = as_codes(codes).ids, self.vocab_size
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise NotationError(f"notation ids out of range [0, {n}): {bad[:5]}")
        return self.from_lmx(" ".join(ALL_TOKENS[i] for i in ids))


def tokens_to_ids(tokens: Sequence[str]) -> list[int]:
    unknown = [t for t in tokens if t not in _TOKEN_INDEX]
    if unknown:
        raise NotationError(f"tokens not in the LMX vocabulary: {unknown[:5]}")
    return [_TOKEN_INDEX[t] for t in tokens]


# ---------------------------------------------------------------- score -> LMX
def linearize(source: Source, flavor: str = "core") -> LinearizeResult:
    """Score -> LMX tokens of the given flavor, plus the linearizer's warnings."""
    if flavor not in FLAVORS:
        raise BadInputError(f"unknown LMX flavor {flavor!r} (choose from {', '.join(FLAVORS)})")
    root, where, warnings = load_normalized(source)
    part = root.find("part")
    errout = io.StringIO()
    linearizer = Linearizer(errout=errout, fail_on_unknown_tokens=True)
    try:
        linearizer.process_part(part)
    except (AssertionError, AttributeError, KeyError, TypeError, ValueError) as e:
        measure = getattr(linearizer, "_measure_number", None)
        raise NotationError(f"{where}: cannot linearize measure {measure} to LMX: "
                            f"{e or type(e).__name__}") from e
    tokens = linearizer.output_tokens
    if not tokens:
        raise NotationError(f"{where}: the score has no measures")
    if flavor == "core":
        tokens = [t for t in tokens if t not in _EXTENDED]
    return LinearizeResult(tokens=tokens, warnings=warnings + _lines(errout))


def score_to_musicxml(source: Source) -> str:
    """The normalized single-part MusicXML text that ``to_lmx`` linearizes."""
    root, _, _ = load_normalized(source)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def load_normalized(source: Source) -> tuple[ET.Element, str, list[str]]:
    """Score -> (<score-partwise> root with one LMX-ready part, name for errors, warnings)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        root = _load_path(path)
        where = str(path)
    else:
        root = _music21_to_root(copy.deepcopy(_require_stream(source)), "<music21 score>")
        where = "<music21 score>"
    part = root.find("part")
    try:
        _renumber_voices(part, where)
        _fix_time_modifications(part, where)
        warnings = _add_missing_accidentals(part, where)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError) as e:  # bad numbers in the XML
        raise NotationError(f"{where}: malformed MusicXML content: {e}") from e
    return root, where, warnings


def _load_path(path: Path) -> ET.Element:
    if not path.is_file():
        raise InputNotFoundError(f"no such score file: {path}")
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise NotationError(f"{path}: not a score file (expected one of {', '.join(SCORE_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise NotationError(f"{path}: the file is empty")
    if suffix in XML_SUFFIXES:
        root = _parse_xml(_read_musicxml_bytes(path), path)
        if _is_lmx_ready(root):
            return root
    return _music21_to_root(_music21_parse(path), str(path))


def _read_musicxml_bytes(path: Path) -> bytes:
    if path.suffix.lower() != ".mxl":
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(_mxl_rootfile(archive))
    except (zipfile.BadZipFile, KeyError) as e:
        raise NotationError(f"{path}: not a valid compressed MusicXML (.mxl) file: {e}") from e


def _mxl_rootfile(archive: zipfile.ZipFile) -> str:
    """The score's name inside an .mxl archive (META-INF/container.xml, else the first .xml)."""
    names = archive.namelist()
    if "META-INF/container.xml" in names:
        container = ET.fromstring(archive.read("META-INF/container.xml"))
        for rootfile in container.iter():
            if rootfile.tag.endswith("rootfile") and rootfile.get("full-path"):
                return rootfile.get("full-path")
    for name in names:
        if not name.startswith("META-INF") and name.endswith((".xml", ".musicxml")):
            return name
    raise KeyError("no score inside the archive")


def _parse_xml(data: bytes, path: Path) -> ET.Element:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise NotationError(f"{path}: malformed MusicXML: {e}") from e
    if root.tag not in ("score-partwise", "score-timewise"):
        raise NotationError(f"{path}: not MusicXML (root element <{root.tag}>)")
    return root


def _is_lmx_ready(root: ET.Element) -> bool:
    """One partwise part whose notes all carry a <type> (or are measure rests)."""
    parts = root.findall("part")
    if root.tag != "score-partwise" or len(parts) != 1:
        return False
    for note in parts[0].iter("note"):
        rest = note.find("rest")
        measure_rest = rest is not None and rest.get("measure") == "yes"
        if note.find("type") is None and not measure_rest:
            return False
    return True


# ------------------------------------------------------------ music21 bridge
def _music21_parse(path: Path) -> Any:
    """music21's reading of a score file; events it could not parse are an error, not a skip."""
    import music21

    complaints = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaints):  # music21 reports skipped events there
            if path.suffix.lower() == ".mei":
                parsed = music21.converter.parseData(_mei_for_music21(path), format="mei")
            else:
                parsed = music21.converter.parse(str(path), forceSource=True)
    except Exception as e:  # music21 raises many unrelated types on bad input
        raise NotationError(f"{path}: cannot read the score: {type(e).__name__}: {e}") from e
    skipped = [line for line in _lines(complaints) if "Error in parsing" in line]
    if skipped:
        raise NotationError(f"{path}: {len(skipped)} unreadable event(s), first: {skipped[0].strip()}")
    sys.stderr.write(complaints.getvalue())  # other music21 warnings pass through
    return _require_stream(parsed, str(path))


_MEI_NS = "http://www.music-encoding.org/ns/mei"
_MEI_CHILD_ATTRS = {"keySig": ("sig", "mode"), "meterSig": ("count", "unit", "sym"),
                    "clef": ("shape", "line", "dis", "dis.place")}
_MEI_PREFIX = {"keySig": "key", "meterSig": "meter", "clef": "clef"}


def _mei_for_music21(path: Path) -> str:
    """MEI text with <keySig>/<meterSig>/<clef> children of staffDef/scoreDef restated as the
    parent's key.sig / meter.count / clef.shape attributes: music21's MEI reader only reads
    the attribute form (MEI 3), so key and time signatures of MEI 4/5 files (verovio's
    output, for one) were silently lost."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        raise NotationError(f"{path}: malformed MEI: {e}") from e
    for tag in ("staffDef", "scoreDef"):
        for parent in tree.getroot().iter(f"{{{_MEI_NS}}}{tag}"):
            for child in list(parent):
                name = child.tag.split("}")[-1]
                for attr in _MEI_CHILD_ATTRS.get(name, ()):
                    key = f"{_MEI_PREFIX[name]}.{attr}"
                    if child.get(attr) is not None and parent.get(key) is None:
                        parent.set(key, child.get(attr))
    _drop_redundant_gestural_naturals(tree.getroot())
    ET.register_namespace("", _MEI_NS)
    return ET.tostring(tree.getroot(), encoding="unicode")


def _key_alterations(sig: str) -> dict[str, str]:
    """MEI key.sig ("0", "2s", "3f") -> {pname: "s" | "f"} of the altered steps."""
    count, kind = (int(sig[:-1]), sig[-1]) if sig[-1:] in ("s", "f") else (0, "s")
    order = "fcgdaeb" if kind == "s" else "beadgcf"
    return {p: kind for p in order[:count]}


def _drop_redundant_gestural_naturals(root: ET.Element) -> None:
    """Remove accid.ges="n" on steps the key signature leaves unaltered (verovio writes
    accid.ges on every note): music21 prints such gestural naturals as written ones.
    Gestural sharps and flats stay: music21 needs them for the pitch."""
    altered: dict[str, str] = {}
    for element in root.iter():
        if element.get("key.sig") is not None:
            altered = _key_alterations(element.get("key.sig"))
        if element.tag == f"{{{_MEI_NS}}}note" and element.get("accid") is None:
            implied = altered.get(element.get("pname", ""), "n")
            if element.get("accid.ges") == "n" and implied == "n":
                del element.attrib["accid.ges"]


def _require_stream(obj: Any, where: str = "<music21 score>") -> Any:
    from music21 import stream

    if isinstance(obj, stream.Opus):
        if not obj.scores:
            raise NotationError(f"{where}: the file holds no score")
        obj = obj.scores[0]
    if not isinstance(obj, stream.Stream):
        raise NotationError(f"{where}: expected a score file path or a music21 Score, got {type(obj).__name__}")
    if isinstance(obj, stream.Score):
        return obj
    score = stream.Score()
    score.insert(0, obj if isinstance(obj, stream.Part) else stream.Part(obj.elements))
    return score


def _music21_to_root(score: Any, where: str) -> ET.Element:
    """music21 Score (staff parts) -> MusicXML root with one part of N staves.

    Does what music21's GeneralObjectExporter does (fill gaps with hidden rests,
    makeNotation, export) but IN PLACE: music21 would deep-copy the score first,
    which costs as much as the export; callers pass a score they own.
    """
    from music21 import chord
    from music21.musicxml.m21ToXml import ScoreExporter

    parts = list(score.parts)
    if not parts or not any(True for _ in score.recurse().notes):
        raise NotationError(f"{where}: the score contains no notes")
    if len(parts) > MAX_STAVES:
        raise NotationError(f"{where}: {len(parts)} staves/parts; LMX encodes one piano part "
                            f"of at most {MAX_STAVES} staves")
    try:
        _start_voices_at_measure_start(score)
        grouped = _as_staff_group(parts)
        grouped.makeRests(refStreamOrTimeRange=[0.0, grouped.highestTime], fillGaps=True,
                          inPlace=True, hideRests=True, timeRangeFromBarDuration=True)
        for c in grouped.recurse().getElementsByClass(chord.Chord):
            c.sortAscending(inPlace=True)  # LMX's canonical chord order: lowest note first
        grouped.makeNotation(inPlace=True)
        exporter = ScoreExporter(grouped, makeNotation=True)
        exporter.parse()
        data = exporter.asBytes()
    except Exception as e:  # music21 export fails with assorted types
        raise NotationError(f"{where}: cannot write the score as MusicXML: {type(e).__name__}: {e}") from e
    root = ET.fromstring(data)
    if len(root.findall("part")) != 1:
        raise NotationError(f"{where}: could not merge the staves into one part")
    return root


def _start_voices_at_measure_start(score: Any) -> None:
    """Move a Voice that begins mid-measure to offset 0, shifting its notes instead.

    music21's MusicXML writer ignores a Voice's own offset (kern spine splits
    create such voices), which would move those notes to the measure start;
    with the shift, makeRests fills the voice's lead-in with hidden rests.
    """
    from music21 import stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        for voice in measure.voices:
            shift = measure.elementOffset(voice)
            if shift:
                voice.shiftElements(shift)
                measure.setElementOffset(voice, 0.0)


def _as_staff_group(parts: list) -> Any:
    """Parts -> a Score of PartStaffs joined by a StaffGroup (exported as one part)."""
    from music21 import layout, stream

    score = stream.Score()
    staves = []
    for i, part in enumerate(parts):
        staff = stream.PartStaff(id=f"staff{i + 1}")
        for el in part.elements:
            staff.coreInsert(part.elementOffset(el), el)
        staff.coreElementsChanged()
        staves.append(staff)
        score.insert(0, staff)
    if len(staves) > 1:
        score.insert(0, layout.StaffGroup(staves, symbol="brace"))
    return score


# ----------------------------------------------------- MusicXML clean-ups
def _renumber_voices(part: ET.Element, where: str) -> None:
    """Per measure: voices of staff s, in order of appearance -> 4(s-1)+1, 4(s-1)+2, ..."""
    for measure in part.findall("measure"):
        mapping: dict[tuple[str, str], str] = {}
        used: dict[str, int] = {}
        for el in measure:
            voice = el.find("voice")
            if voice is None or not (voice.text or "").strip():
                continue
            staff_el = el.find("staff")
            staff = staff_el.text.strip() if staff_el is not None and staff_el.text else "1"
            key = (staff, voice.text.strip())
            if key not in mapping:
                used[staff] = used.get(staff, 0) + 1
                number = VOICES_PER_STAFF * (int(staff) - 1) + used[staff]
                if number > MAX_VOICE:
                    raise NotationError(f"{where}: measure {measure.get('number')} needs voice "
                                        f"{number}; LMX has voices 1-{MAX_VOICE}")
                mapping[key] = str(number)
            voice.text = mapping[key]


_ACCIDENTAL_OF_ALTER = {-2: "flat-flat", -1: "flat", 0: "natural", 1: "sharp", 2: "double-sharp"}
_BEFORE_ACCIDENTAL = ("grace", "chord", "pitch", "rest", "unpitched", "duration", "tie",
                      "instrument", "voice", "type", "dot")  # <note> children that precede it
_BEFORE_TIME_MODIFICATION = _BEFORE_ACCIDENTAL + ("accidental",)


def _fix_time_modifications(part: ET.Element, where: str) -> None:
    """Make every note's <time-modification> a ratio LMX has a token for and that gives its length.

    LMX keeps a note's type, dots and actual:normal ratio only (the lmx
    linearizer copies <actual-notes>/<normal-notes> into a token like ``7in4``),
    so the written ratio is kept whenever it explains the note's <duration> up
    to the rounding of writers with few divisions (MuseScore: 480 a quarter, so
    a septuplet 16th lasts 69, not 68.57). A ratio that leans on
    <normal-type>/<normal-dot> (kern tuplets over dotted values) or a tuplet
    note without one is set from the duration instead, and dropped when it is 1.
    """
    divisions = None
    for measure in part.findall("measure"):
        for element in measure:
            if element.tag == "attributes" and element.find("divisions") is not None:
                divisions = int(element.find("divisions").text)
            if element.tag != "note" or element.find("grace") is not None:
                continue
            note_type, duration = element.find("type"), element.find("duration")
            if divisions is None or note_type is None or duration is None \
                    or note_type.text not in NOTE_TYPE_TO_QUARTER_MULTIPLE:
                continue
            dots = len(element.findall("dot"))
            nominal = NOTE_TYPE_TO_QUARTER_MULTIPLE[note_type.text] * (2 - Fraction(1, 2 ** dots)) * divisions
            ratio = _tuplet_ratio(element, nominal, int(duration.text), where, measure.get("number"))
            _set_time_modification(element, ratio)


def _written_ratio(note: ET.Element) -> Fraction | None:
    """actual:normal of the note's <time-modification>, None without a usable one."""
    actual, normal = note.findtext("time-modification/actual-notes"), note.findtext("time-modification/normal-notes")
    try:
        return Fraction(int(actual), int(normal)) if actual and normal else None
    except (ValueError, ZeroDivisionError):
        return None


def _ratio_token(ratio: Fraction) -> str | None:
    """The LMX token of a ratio: ``AinN`` in lowest terms or a multiple (6in4, 10in8), else None."""
    for k in range(1, 9):
        token = f"{ratio.numerator * k}in{ratio.denominator * k}"
        if token in _TOKEN_INDEX:
            return token
    return None


def _tuplet_ratio(note: ET.Element, nominal: Fraction, duration: int, where: str,
                  measure: str | None) -> Fraction:
    """nominal length / real length of a note: the written ratio when it fits the duration
    (within a tick of rounding), else the duration's own, else the LMX ratio nearest to it."""
    written = _written_ratio(note)
    if written is not None and abs(nominal / written - duration) < 1 and _ratio_token(written):
        return written
    exact = nominal / duration if duration > 0 else Fraction(1)
    if exact == 1 or _ratio_token(exact):
        return exact
    near = [r for r in map(_token_ratio, TIME_MODIFICATION_TOKENS) if abs(nominal / r - duration) < 1]
    if not near:
        raise NotationError(f"{where}: measure {measure}: tuplet ratio {exact.numerator}:"
                            f"{exact.denominator} has no LMX token")
    return min(near, key=lambda r: abs(nominal / r - duration))


def _token_ratio(token: str) -> Fraction:
    actual, normal = token.split("in")
    return Fraction(int(actual), int(normal))


def _set_time_modification(note: ET.Element, ratio: Fraction) -> None:
    """Write ``ratio`` as the note's <time-modification> (kept as written when it already says
    it, e.g. 6in4 rather than 3in2), or remove it when the ratio is 1."""
    tm = note.find("time-modification")
    if ratio == 1:
        if tm is not None:
            note.remove(tm)
        return
    if tm is not None and _written_ratio(note) == ratio \
            and f"{tm.findtext('actual-notes')}in{tm.findtext('normal-notes')}" in _TOKEN_INDEX:
        return
    if tm is None:
        tm = ET.Element("time-modification")
        position = max((i + 1 for i, c in enumerate(note) if c.tag in _BEFORE_TIME_MODIFICATION), default=0)
        note.insert(position, tm)
    actual, normal = _ratio_token(ratio).split("in")
    tm[:] = [ET.Element("actual-notes"), ET.Element("normal-notes")]
    tm[0].text, tm[1].text = actual, normal


def _add_missing_accidentals(part: ET.Element, where: str) -> list[str]:
    """Write an <accidental> wherever LMX's decoder would otherwise get <alter> wrong.

    LMX drops <alter>; its decoder (lmx PitchAlternator) infers it from the key
    signature, earlier accidentals in the measure and ties. music21 sometimes
    leaves a needed accidental undisplayed (e.g. a new tie start right after a
    tied note of the same pitch), so we run that same inference on each measure
    and add the first accidental it misses until nothing is missed.
    """
    warnings: list[str] = []
    alternator = PitchAlternator()
    for measure in part.findall("measure"):
        notes, added = measure.findall("note"), set()
        while True:
            trial = _clone_alternator(alternator)
            guess = copy.deepcopy(measure)
            for pitch in guess.iter("pitch"):
                for alter in pitch.findall("alter"):
                    pitch.remove(alter)
            trial.process_measure(guess)
            wrong = [i for i, (n, g) in enumerate(zip(notes, guess.findall("note")))
                     if _alter(n) != _alter(g)]
            todo = [i for i in wrong if i not in added and round(_alter(notes[i])) in _ACCIDENTAL_OF_ALTER]
            if not todo:
                break
            added.add(todo[0])
            _set_accidental(notes[todo[0]], _ACCIDENTAL_OF_ALTER[round(_alter(notes[todo[0]]))])
        alternator = trial
        if wrong:
            warnings.append(f"{where}: measure {measure.get('number')}: the lmx decoder will infer a "
                            f"wrong <alter> for {len(wrong)} note(s) (e.g. D and D# in one chord)")
    return warnings


def _clone_alternator(alternator: PitchAlternator) -> PitchAlternator:
    """A copy whose tie bookkeeping (dicts the alternator mutates) is not shared."""
    clone = copy.copy(alternator)
    clone._tie_starts = dict(alternator._tie_starts)
    clone._previous_tie_starts = dict(alternator._previous_tie_starts)
    return clone


def _alter(note: ET.Element) -> float:
    alter = note.find("pitch/alter")
    return float(alter.text) if alter is not None and alter.text else 0.0


def _set_accidental(note: ET.Element, name: str) -> None:
    accidental = note.find("accidental")
    if accidental is None:
        accidental = ET.Element("accidental")
        position = max((i + 1 for i, child in enumerate(note) if child.tag in _BEFORE_ACCIDENTAL), default=0)
        note.insert(position, accidental)
    accidental.text = name


# ---------------------------------------------------------------- LMX -> score
def delinearize(text: str) -> DelinearizeResult:
    """LMX text -> MusicXML text (one piano part), plus the delinearizer's warnings."""
    tokens = _lmx_tokens(text)
    unknown = [(i + 1, t) for i, t in enumerate(tokens) if t not in _TOKEN_INDEX]
    if unknown:
        shown = ", ".join(f"{t!r} at {i}" for i, t in unknown[:5])
        raise NotationError(f"LMX text has {len(unknown)} unknown token(s): {shown}")
    if "measure" not in tokens:
        raise NotationError("LMX text has no 'measure' token" if tokens else "LMX text is empty")
    errout = io.StringIO()
    try:
        part = Delinearizer(errout=errout).process_text(" ".join(tokens))
    except (AssertionError, AttributeError, IndexError, KeyError, ValueError, ZeroDivisionError) as e:
        raise NotationError(f"cannot turn the LMX tokens into MusicXML: {e or type(e).__name__}") from e
    for number, measure in enumerate(part.findall("measure"), start=1):
        measure.set("number", str(number))
    root = part_to_score(part, part_id="P1").getroot()
    xml = ET.tostring(root, encoding="unicode", xml_declaration=True)
    return DelinearizeResult(musicxml=xml, warnings=_lines(errout))


LMX_FILE_VERSION = "1.0"


def lmx_file_text(lmx: str, flavor: str = "core") -> str:
    """Bare LMX tokens -> the ``.lmx`` file layout of the lmx package (``LmxFile``):
    a ``version``/``flavor`` header, ``---``, then the tokens of the (one) system."""
    return f"version: {LMX_FILE_VERSION}\nflavor: {flavor}\n---\n{lmx.strip()}\n"


def _lmx_tokens(text: str) -> list[str]:
    """Tokens of bare LMX, or of the lmx file layout (header, '---' system separators)."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    if any(line.strip() == "---" for line in lines):
        first = next(i for i, line in enumerate(lines) if line.strip() == "---")
        lines = [line for line in lines[first + 1:] if line.strip() != "---"]
    return " ".join(lines).split()


def _lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# A decoding rule of the LMX grammar
# ---------------------------------------------------------------------------

MAX_CHORD_NOTES = 6  # the corpora's largest chord in one voice has 5 notes


def is_pitch(token: str) -> bool:
    """An LMX pitch token: step and octave (``C4``; accidentals are tokens of their own)."""
    return len(token) == 2 and token[0] in "ABCDEFG" and token[1].isdigit()


class ChordRule:
    """LMX grammar for ``model.generate`` (a ``StepRule``): a chord (a note and the ``chord``
    notes after it) never holds the same pitch token twice and has at most ``max_notes`` notes.

    Without it a weak OMR model can loop on ``chord E4 eighth chord E4 eighth ...`` until the
    length limit. Classes are local LMX ids ([EOS] the last class); one state per batch row.
    """

    def __init__(self, batch: int, max_notes: int = MAX_CHORD_NOTES, names: Sequence[str] | None = None):
        names = list(names) if names is not None else NotationCodec().token_names()
        self.chord = names.index("chord")
        self.is_pitch = [is_pitch(n) for n in names]
        self.ends = {names.index(n) for n in ("measure", "backup", "forward", "rest") if n in names}
        self.max_notes = max_notes
        self.group: list[list[int]] = [[] for _ in range(batch)]   # pitch ids of the open chord
        self.after_chord = [False] * batch                            # last token was `chord`

    def mask(self, logits: Any) -> None:
        """(B, classes) logits: -inf on a repeated pitch after `chord`, and on `chord` once full."""
        for row, group in enumerate(self.group):
            if self.after_chord[row] and group:
                logits[row, group] = float("-inf")
            if len(group) >= self.max_notes:
                logits[row, self.chord] = float("-inf")

    def select(self, rows: Sequence[int]) -> None:
        """Keep the states of ``rows``, in that order (beam search copies and reorders rows)."""
        self.group = [list(self.group[r]) for r in rows]
        self.after_chord = [self.after_chord[r] for r in rows]

    def update(self, classes: Any) -> None:
        for row, c in enumerate(classes.tolist()):
            if c < len(self.is_pitch) and self.is_pitch[c]:
                if self.after_chord[row]:
                    self.group[row].append(c)
                else:
                    self.group[row] = [c]
            elif c in self.ends:
                self.group[row] = []
            self.after_chord[row] = c == self.chord
