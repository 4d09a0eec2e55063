"""Notation codec: scores <-> Linearized MusicXML (LMX).

The documented-format tests feed hand-written MusicXML/kern fixtures that
recreate the examples of the LMX documentation (ufal/olimpic-icdar24
docs/linearized-musicxml.md, OMR-Research/lmx design notes and test cases) and
compare our output with the documented token sequence, token for token.
"""

from __future__ import annotations

import collections
import json
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
