"""Notation codec: scores <-> Linearized MusicXML (LMX).

The documented-format tests feed hand-written MusicXML/kern fixtures that
recreate the examples of the LMX documentation (ufal/olimpic-icdar24
docs/linearized-musicxml.md, OMR-Research/lmx design notes and test cases) and
compare our output with the documented token sequence, token for token.
"""

from __future__ import annotations

import collections
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from fractions import Fraction
from pathlib import Path

import music21
import pytest
import verovio
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.codecs.base import Codec
from umust_cli.codecs.notation import NotationCodec, linearize, score_to_musicxml
from umust_cli.errors import BadInputError, NotationError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notation"
CORPORA = REPO.parent / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(not CORPORA.is_dir(), reason=f"corpora not found at {CORPORA}")

verovio.enableLog(verovio.LOG_OFF)

# fixture -> the token sequence of the LMX documentation (measure header + documented snippet)
DOCUMENTED = {
    # "A beamed group of 4 eighth notes": G4 eighth beam:begin / A4 eighth / G4 eighth / A4 eighth beam:end
    "beam_eighths.musicxml": "measure key:fifths:0 time beats:2 beat-type:4 clef:G2 "
                             "G4 eighth beam:begin A4 eighth G4 eighth A4 eighth beam:end",
    # "the first two are sixteenth notes and the last two are eighth notes"
    "beam_sixteenths.musicxml": "measure key:fifths:0 time beats:3 beat-type:8 clef:G2 "
                                "G4 16th beam:begin beam:begin A4 16th beam:end G4 eighth A4 eighth beam:end",
    # "There may also be a sixteenth hook"
    "beam_hook.musicxml": "measure key:fifths:0 time beats:1 beat-type:4 clef:G2 "
                          "E5 16th beam:begin beam:forward-hook C5 eighth dot beam:end",
    # "a quarter note triplet would be encoded like this: C4 quarter 3in2" (+ tuplet:start/stop)
    "tuplet_quarters.musicxml": "measure key:fifths:0 time beats:2 beat-type:4 clef:G2 "
                                "C4 quarter 3in2 tuplet:start C4 quarter 3in2 C4 quarter 3in2 tuplet:stop",
    # "forward half forward quarter forward eighth C4 eighth"
    "forward_steps.musicxml": "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 "
                              "E5 whole backup whole forward half forward quarter forward eighth C4 eighth",
    # lmx test case piano-clefs.lmx
    "piano_clefs.musicxml": "measure clef:G2 staff:1 clef:F4 staff:2 "
                            "G4 voice:1 whole staff:1 backup whole F3 voice:5 whole staff:2",
    # lmx test case c-clef-mono.lmx
    "c_clef.musicxml": "measure clef:C3 C4 voice:1 whole",
    # the same grand staff written as two **kern spines (two music21 parts) must merge the same way
    "piano_clefs.krn": "measure clef:G2 staff:1 clef:F4 staff:2 "
                       "G4 voice:1 whole staff:1 backup whole F3 voice:5 whole staff:2",
}


def note_events(score) -> collections.Counter:
    """(measure index, onset in measure, spelled pitch, quarterLength) of every notehead, ties merged."""
    score = score.stripTies()
    events = collections.Counter()
    for part in score.parts:
        for index, measure in enumerate(part.getElementsByClass("Measure")):
            for n in measure.recurse().notes:
                onset = Fraction(n.getOffsetInHierarchy(measure)).limit_denominator(10_000)
                length = Fraction(n.quarterLength).limit_denominator(10_000)
                for p in n.pitches:
                    events[(index, onset, p.nameWithOctave, length)] += 1
    return events


def reparse(xml: str):
    return music21.converter.parse(xml, format="musicxml")


# ---------------------------------------------------------------- vocabulary
def test_vocabulary_is_lmx_superset_and_flavor_independent():
    from lmx.linearization.vocabulary import ALL_TOKENS

    core, extended = NotationCodec("core"), NotationCodec("extended")
    assert isinstance(core, Codec)
    assert core.modality == "notation"
    assert core.token_names() == extended.token_names() == list(ALL_TOKENS)
    assert core.vocab_size == len(core.token_names()) == len(set(core.token_names())) == 224
    for token in ("measure", "key:fifths:-7", "time", "beats:16", "beat-type:16", "clef:F4",
                  "voice:5", "staff:2", "backup", "forward", "chord", "6in4", "rest:measure", "slur:start"):
        assert token in core.token_names()


def test_invalid_flavor_is_bad_input():
    with pytest.raises(BadInputError, match="flavor"):
        NotationCodec("fancy")


# ---------------------------------------------------------------- documented format
@pytest.mark.parametrize("fixture", sorted(DOCUMENTED))
def test_matches_documented_lmx(fixture):
    assert NotationCodec("core").to_lmx(FIXTURES / fixture) == DOCUMENTED[fixture]


@pytest.mark.parametrize("fixture", sorted(DOCUMENTED))
def test_documented_examples_decode_back(fixture, tmp_path):
    codec = NotationCodec()
    xml = codec.from_lmx(DOCUMENTED[fixture])
    assert note_events(reparse(xml)) == note_events(music21.converter.parse(FIXTURES / fixture))
    assert verovio.toolkit().loadData(xml)
    decoded = tmp_path / "decoded.musicxml"
    decoded.write_text(xml)
    assert codec.to_lmx(decoded) == DOCUMENTED[fixture]  # LMX -> MusicXML -> LMX is the identity


def test_mxl_container_is_read(tmp_path):
    mxl = tmp_path / "beams.mxl"
    with zipfile.ZipFile(mxl, "w") as archive:
        archive.writestr("META-INF/container.xml",
                         '<container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>')
        archive.writestr("score.xml", (FIXTURES / "beam_eighths.musicxml").read_text())
    assert NotationCodec().to_lmx(mxl) == DOCUMENTED["beam_eighths.musicxml"]


# ---------------------------------------------------------------- normalization
def test_kern_grand_staff_is_merged_and_round_trips():
    path = FIXTURES / "grand_staff.krn"
    tokens = NotationCodec("core").to_lmx(path).split()
    assert tokens[:9] == ["measure", "key:fifths:-1", "time", "beats:3", "beat-type:4",
                          "clef:G2", "staff:1", "clef:F4", "staff:2"]
    assert tokens.count("measure") == 3
    # second staff voices are numbered from 5 (MuseScore), chord notes go upwards
    assert "voice:5" in tokens and "voice:2" not in tokens
    assert " C3 voice:5 quarter staff:2 chord E3 quarter chord G3 quarter " in " ".join(tokens) + " "
    for token in ("tied:start", "tied:stop", "3in2", "tuplet:start", "sharp"):
        assert token in tokens
    xml = NotationCodec().from_lmx(" ".join(tokens))
    assert note_events(reparse(xml)) == note_events(music21.converter.parse(path))


def test_score_object_and_musicxml_helper():
    score = music21.converter.parse(FIXTURES / "grand_staff.krn")
    before = note_events(score)
    codec = NotationCodec()
    assert codec.to_lmx(score) == codec.to_lmx(FIXTURES / "grand_staff.krn")
    assert note_events(score) == before  # the caller's score is left alone
    xml = score_to_musicxml(score)
    assert xml.count("<part ") == 1 and "<staves>2</staves>" in xml
    assert note_events(reparse(xml)) == before


def test_missing_accidental_is_added_for_lmx(tmp_path):
    """B natural in F major needs a natural sign; a file that forgot it still round trips."""
    xml = (FIXTURES / "beam_eighths.musicxml").read_text()
    xml = xml.replace("<fifths>0</fifths>", "<fifths>-1</fifths>")
    xml = xml.replace("<step>A</step>", "<step>B</step>", 1)  # B4 (no <alter>) = B natural
    path = tmp_path / "natural.musicxml"
    path.write_text(xml)
    tokens = NotationCodec().to_lmx(path)
    assert "B4 eighth natural" in tokens
    back = reparse(NotationCodec().from_lmx(tokens))
    assert [p.nameWithOctave for p in back.pitches] == ["G4", "B4", "G4", "A4"]


def test_core_flavor_drops_extended_tokens(tmp_path):
    xml = (FIXTURES / "beam_eighths.musicxml").read_text().replace(
        "<type>eighth</type><beam number=\"1\">begin</beam>",
        "<type>eighth</type><beam number=\"1\">begin</beam>"
        "<notations><slur type=\"start\"/><articulations><staccato/></articulations></notations>", 1)
    path = tmp_path / "slur.musicxml"
    path.write_text(xml)
    core, extended = linearize(path, "core").tokens, linearize(path, "extended").tokens
    assert "slur:start" in extended and "staccato" in extended
    assert "slur:start" not in core and "staccato" not in core
    assert [t for t in extended if t not in ("slur:start", "staccato")] == core


# ---------------------------------------------------------------- tuplets
# The shapes of the LMX authors' tuplet samples (tuplets/simple_67, simple_89), written the way
# MuseScore writes them: 480 divisions a quarter, so a septuplet 16th lasts round(68.57) = 69.
def tuplet_note(kind: str, duration: int, ratio: tuple[int, int] | None = None, dots: int = 0,
                brackets: tuple[str, ...] = (), normal: str = "") -> str:
    tm = "" if ratio is None else (f"<time-modification><actual-notes>{ratio[0]}</actual-notes>"
                                   f"<normal-notes>{ratio[1]}</normal-notes>{normal}</time-modification>")
    notations = "".join(f'<tuplet type="{b.split(":")[0]}" number="{b.split(":")[1]}"/>' for b in brackets)
    return (f"<note><pitch><step>A</step><octave>4</octave></pitch><duration>{duration}</duration>"
            f"<voice>1</voice><type>{kind}</type>{'<dot/>' * dots}{tm}"
            f"{f'<notations>{notations}</notations>' if notations else ''}</note>")


def tuplet_group(count: int, kind: str, durations: list[int], ratio: tuple[int, int] | None) -> str:
    marks = [("start:1",)] + [()] * (count - 2) + [("stop:1",)]
    return "".join(tuplet_note(kind, d, ratio, brackets=m) for d, m in zip(durations, marks))


def tuplet_score(body: str, beats: int = 4, beat_type: int = 4, rest: str = "half", rest_dots: int = 1,
                 rest_duration: int = 1440) -> str:
    rest_note = (f"<note><rest/><duration>{rest_duration}</duration><voice>1</voice><type>{rest}</type>"
                 f"{'<dot/>' * rest_dots}</note>")
    return ('<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list>'
            '<score-part id="P1"><part-name>Piano</part-name></score-part></part-list><part id="P1">'
            '<measure number="1"><attributes><divisions>480</divisions><key><fifths>0</fifths></key>'
            f"<time><beats>{beats}</beats><beat-type>{beat_type}</beat-type></time>"
            f"<clef><sign>G</sign><line>2</line></clef></attributes>{body}{rest_note}</measure></part>"
            "</score-partwise>")


NESTED = (tuplet_note("eighth", 160, (3, 2), brackets=("start:1",))
          + tuplet_note("16th", 53, (9, 4), brackets=("start:2",)) + tuplet_note("16th", 53, (9, 4))
          + tuplet_note("16th", 54, (9, 4), brackets=("stop:2",))
          + tuplet_note("eighth", 160, (3, 2), brackets=("stop:1",)))
DOTTED_NORMAL = "<normal-type>eighth</normal-type><normal-dot/>"
DOTTED = "".join(tuplet_note("eighth", 240, (3, 2), dots=1, normal=DOTTED_NORMAL, brackets=b)
                 for b in (("start:1",), (), ("stop:1",)))
# name -> (MusicXML, the tuplet's LMX note tokens, its notes' real lengths in quarters)
TUPLET_SHAPES = {
    "sextuplet": (tuplet_score(tuplet_group(6, "16th", [80] * 6, (6, 4))), "16th 6in4", [Fraction(1, 6)] * 6),
    "septuplet": (tuplet_score(tuplet_group(7, "16th", [69] * 7, (7, 4))), "16th 7in4", [Fraction(1, 7)] * 7),
    "octuplet": (tuplet_score(tuplet_group(8, "32nd", [60] * 8, None)), "32nd", [Fraction(1, 8)] * 8),
    "nonuplet": (tuplet_score(tuplet_group(9, "32nd", [53] * 9, (9, 8))), "32nd 9in8", [Fraction(1, 9)] * 9),
    "nested": (tuplet_score(NESTED, 2, 4, "quarter", 0, 480), "16th 9in4",
               [Fraction(1, 3)] + [Fraction(1, 9)] * 3 + [Fraction(1, 3)]),
    "dotted": (tuplet_score(DOTTED, 6, 8, "quarter", 1, 720), "eighth 3in2 dot", [Fraction(1, 2)] * 3),
}


@pytest.mark.parametrize("shape", sorted(TUPLET_SHAPES))
def test_tuplet_shapes_match_the_lmx_linearizer_and_round_trip(shape, tmp_path):
    """The written <time-modification> is what LMX gets (7in4, 9in8), as the lmx package's own
    linearizer does, not a ratio of rounded durations (40:23 before); decoding gives it back."""
    from lmx.linearization.Linearizer import Linearizer

    xml, expected, lengths = TUPLET_SHAPES[shape]
    src = tmp_path / f"{shape}.musicxml"
    src.write_text(xml)
    reference = Linearizer(errout=io.StringIO())
    reference.process_part(ET.fromstring(xml).find("part"))
    lmx = NotationCodec().to_lmx(src)
    assert lmx == " ".join(reference.output_tokens)
    assert f" {expected} " in f" {lmx} " and "tuplet:start" in lmx
    decoded = tmp_path / "decoded.musicxml"
    decoded.write_text(NotationCodec().from_lmx(lmx))
    assert NotationCodec().to_lmx(decoded) == lmx
    notes = [n.quarterLength for n in reparse(decoded.read_text()).flatten().notes]
    assert [Fraction(q).limit_denominator(100) for q in notes] == lengths


def test_tuplet_ratio_without_a_fitting_written_one_comes_from_the_duration(tmp_path):
    # no <time-modification> on septuplet 16ths, and an octuplet in the time of 6 (8in6: no token)
    septuplet = tuplet_group(7, "16th", [69] * 7, None)
    octuplet = tuplet_group(8, "16th", [90] * 8, (8, 6))
    src = tmp_path / "t.musicxml"
    src.write_text(tuplet_score(septuplet + octuplet, rest="quarter", rest_dots=0, rest_duration=480))
    tokens = NotationCodec().to_lmx(src).split()
    assert tokens.count("7in4") == 7 and tokens.count("4in3") == 8
    src.write_text(tuplet_score(tuplet_group(11, "16th", [44] * 11, (11, 4))))  # 11in4: no LMX ratio
    with pytest.raises(NotationError, match="tuplet ratio 30:11 has no LMX token"):
        NotationCodec().to_lmx(src)


# ---------------------------------------------------------------- ids and text
def test_encode_decode_ids():
    codec = NotationCodec()
    ids = codec.encode(FIXTURES / "tuplet_quarters.musicxml")
    assert all(0 <= i < codec.vocab_size for i in ids)
    assert " ".join(codec.token_names()[i] for i in ids) == DOCUMENTED["tuplet_quarters.musicxml"]
    xml = codec.decode(ids)
    assert [(n.nameWithOctave, n.quarterLength) for n in reparse(xml).flatten().notes] == \
        [("C4", Fraction(2, 3))] * 3
    with pytest.raises(NotationError, match="out of range"):
        codec.decode([0, codec.vocab_size])


def test_lmx_file_layout_with_header_is_accepted():
    text = ("version: 1.0\nflavor: core\n---\n"
            "measure clef:G2 G4 whole  # first system\n---\nmeasure A4 whole\n")
    back = reparse(NotationCodec().from_lmx(text))
    assert [p.nameWithOctave for p in back.pitches] == ["G4", "A4"]


def test_unknown_lmx_tokens_are_rejected():
    with pytest.raises(NotationError, match=r"unknown token.*'H4' at 2"):
        NotationCodec().from_lmx("measure H4 quarter")
    with pytest.raises(NotationError, match="empty"):
        NotationCodec().from_lmx("  \n")
    with pytest.raises(NotationError, match="no 'measure'"):
        NotationCodec().from_lmx("G4 quarter")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("name, content, message", [
    ("broken.musicxml", "<score-partwise><part id='P1'><measure>", "malformed MusicXML"),
    ("empty.krn", "", "empty"),
    ("garbage.krn", "this is not\tkern at all\n@@@ ### \n", "cannot read|no notes"),
    ("bad_token.krn", "**kern\n*M2/4\n=1\n4c\n4zz\n*-\n", "unreadable event"),
    ("notes.txt", "hello", "not a score file"),
    ("html.xml", "<html><body/></html>", "not MusicXML"),
])
def test_bad_score_files_raise_notation_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(NotationError, match=message) as info:
        NotationCodec().to_lmx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- real corpus pieces
CORPUS_EXCERPTS = [
    ("joplin", "antoinette.krn"),
    ("joplin", "elite.krn"),
    ("mozart-piano-sonatas", "sonata01-1.krn"),
    ("mozart-piano-sonatas", "sonata05-2.krn"),
    ("chopin-mazurkas", "mazurka06-1.krn"),
    ("chopin-mazurkas", "mazurka17-4.krn"),
]


@needs_corpora
@pytest.mark.parametrize("corpus, name", CORPUS_EXCERPTS)
def test_corpus_excerpt_round_trip(corpus, name):
    """First 12 measures passed as a music21 Score (as the corpus builder does)."""
    path = CORPORA / corpus / "kern" / name
    if not path.is_file():
        pytest.skip(f"{path} not in this corpus copy")
    excerpt = music21.converter.parse(path).measures(0, 12)
    codec = NotationCodec()
    xml = codec.from_lmx(codec.to_lmx(excerpt))
    expected = note_events(excerpt)
    assert sum(expected.values()) > 20
    assert note_events(reparse(xml)) == expected
    assert verovio.toolkit().loadData(xml)


@needs_corpora
@pytest.mark.slow
def test_corpus_whole_piece_round_trip():
    path = CORPORA / "chopin-mazurkas" / "kern" / "mazurka07-5.krn"
    if not path.is_file():
        pytest.skip(f"{path} not in this corpus copy")
    codec = NotationCodec("extended")
    xml = codec.from_lmx(codec.to_lmx(path))
    assert note_events(reparse(xml)) == note_events(music21.converter.parse(path))
    assert verovio.toolkit().loadData(xml)


# ---------------------------------------------------------------- CLI
def test_cli_prints_writes_and_decodes(tmp_path):
    runner = CliRunner()
    src = FIXTURES / "grand_staff.krn"
    printed = runner.invoke(app, ["tokenize", "notation", str(src)])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.split() == NotationCodec().to_lmx(src).split()

    lmx_file, xml_file = tmp_path / "x.lmx", tmp_path / "y.musicxml"
    written = runner.invoke(app, ["tokenize", "notation", str(src), "-o", str(lmx_file)])
    assert written.exit_code == 0, written.output
    header, body = lmx_file.read_text().split("---\n", 1)
    assert header.splitlines() == ["version: 1.0", "flavor: core"]
    assert body.split() == printed.stdout.split()
    from lmx.linearization.LmxFile import LmxFile  # the authors' reader accepts our file

    assert LmxFile.load(str(lmx_file)).systems == [printed.stdout.split()]

    decoded = runner.invoke(app, ["tokenize", "notation", "--decode", str(lmx_file), "-o", str(xml_file)])
    assert decoded.exit_code == 0, decoded.output
    assert note_events(music21.converter.parse(xml_file)) == note_events(music21.converter.parse(src))


def test_cli_json_and_extended_flavor():
    result = CliRunner().invoke(app, ["tokenize", "notation", str(FIXTURES / "c_clef.musicxml"),
                                      "--flavor", "extended", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["tokens"] == DOCUMENTED["c_clef.musicxml"].split()
    assert payload["flavor"] == "extended"


def test_cli_malformed_file_exits_2(tmp_path):
    bad = tmp_path / "bad.musicxml"
    bad.write_text("<score-partwise><part>")
    result = CliRunner().invoke(app, ["tokenize", "notation", str(bad)])
    assert result.exit_code == 2
    assert "malformed MusicXML" in result.output


def test_mei_keeps_key_time_and_pitches_like_the_kern_it_came_from(tmp_path):
    """verovio writes MEI 4/5 (<keySig>/<meterSig> elements, gestural accidentals on every
    note); music21 alone loses the key and time signatures and prints gestural naturals."""
    import verovio

    krn = Path(__file__).resolve().parents[1] / "examples" / "minuet-in-g.krn"
    tk = verovio.toolkit()
    assert tk.loadFile(str(krn))
    mei = tmp_path / "minuet.mei"
    mei.write_text(tk.getMEI())
    from_mei = NotationCodec().to_lmx(mei).split()
    assert from_mei[:6] == ["measure", "key:fifths:1", "time", "beats:3", "beat-type:4", "clef:G2"]
    assert from_mei == NotationCodec().to_lmx(krn).split()


def test_chord_rule_forbids_a_repeated_pitch_and_a_seventh_chord_note():
    import torch

    from umust_cli.codecs.notation import MAX_CHORD_NOTES, ChordRule, NotationCodec

    names = NotationCodec().token_names()
    ids = {n: names.index(n) for n in ("chord", "E4", "G4", "C4", "eighth", "measure")}
    rule = ChordRule(batch=2)
    feed = [["C4", "C4"], ["eighth", "eighth"], ["chord", "measure"], ["E4", "E4"], ["eighth", "eighth"],
            ["chord", "chord"]]
    for step in feed:
        rule.update(torch.tensor([ids[t] for t in step]))
    logits = torch.zeros(2, len(names) + 1)
    rule.mask(logits)
    banned = [{names[i] for i in (logits[r] == float("-inf")).nonzero()[:, 0].tolist()} for r in range(2)]
    assert banned[0] == {"C4", "E4"}          # row 0: C4 + chord E4 + chord -> no C4 or E4 again
    assert banned[1] == {"E4"}                # row 1: the measure closed C4's chord; E4 + chord
    for pitch in ("G4", "A4", "B4", "D5"):     # row 0's chord grows to MAX_CHORD_NOTES = 6 notes
        rule.update(torch.tensor([names.index(pitch), ids["eighth"]]))
        logits = torch.zeros(2, len(names) + 1)
        rule.mask(logits)
        assert logits[0, ids["chord"]] == (float("-inf") if pitch == "D5" else 0)
        rule.update(torch.tensor([ids["chord"] if pitch != "D5" else ids["eighth"], ids["eighth"]]))
    assert MAX_CHORD_NOTES == 6 and rule.group[0] == [names.index(p) for p in ("C4", "E4", "G4", "A4", "B4", "D5")]
    assert logits[1, ids["chord"]] == 0        # row 1's chord has one note
    rule.update(torch.tensor([ids["measure"], ids["measure"]]))
    assert rule.group == [[], []]


def test_chord_rule_rows_are_copied_and_reordered_for_beam_search():
    import torch

    from umust_cli.codecs.notation import ChordRule, NotationCodec

    names = NotationCodec().token_names()
    rule = ChordRule(batch=2)
    for step in (["C4", "G4"], ["eighth", "quarter"], ["chord", "measure"]):
        rule.update(torch.tensor([names.index(t) for t in step]))
    rule.select([1, 0, 0])                    # row 0 <- old row 1; rows 1, 2 <- old row 0
    assert rule.group == [[], [names.index("C4")], [names.index("C4")]]
    assert rule.after_chord == [False, True, True]
    rule.update(torch.tensor([names.index(t) for t in ("E4", "E4", "measure")]))
    assert rule.group == [[names.index("E4")], [names.index("C4"), names.index("E4")], []]   # copies, not shared
    logits = torch.zeros(3, len(names) + 1)
    rule.mask(logits)
    assert not bool(torch.isinf(logits).any())   # no row is right after `chord` now
