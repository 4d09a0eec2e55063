"""Real-scan split: a scanned page's systems paired with the notation of their bars.

The "scan" is a page engraved by verovio from a known score and saved as a PDF, so the
test knows which bars each system holds (verovio's own system breaks).
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data import corpus as corpus_io
from umust_cli.data import realscans
from umust_cli.errors import BadInputError

BARS = 14
STEPS = "CDEFGAB"


def _score(bars: int) -> str:
    """A piano score (one part, two staves) whose bar k holds a whole note of its own pitch per staff."""
    measures = []
    for k in range(bars):
        attributes = ("<attributes><divisions>1</divisions><key><fifths>0</fifths></key><time><beats>4</beats>"
                      "<beat-type>4</beat-type></time><staves>2</staves><clef number='1'><sign>G</sign><line>2"
                      "</line></clef><clef number='2'><sign>F</sign><line>4</line></clef></attributes>") if k == 0 else ""
        notes = "".join(f"<note><pitch><step>{STEPS[(k + s) % 7]}</step><octave>{4 - s}</octave></pitch><duration>4"
                        f"</duration><voice>{1 + s}</voice><type>whole</type><staff>{1 + s}</staff></note>"
                        + ("<backup><duration>4</duration></backup>" if s == 0 else "") for s in (0, 1))
        measures.append(f"<measure number='{k + 1}'>{attributes}{notes}</measure>")
    return ("<?xml version='1.0' encoding='UTF-8'?><score-partwise version='3.1'><part-list><score-part id='P1'>"
            f"<part-name>Piano</part-name></score-part></part-list><part id='P1'>{''.join(measures)}</part>"
            "</score-partwise>")


def _engraved_pdf(musicxml: str, path: Path) -> list[int]:
    """Engrave ``musicxml`` on one A4-like page as a PDF; returns the bars of each system."""
    import cairosvg
    import verovio
    from PIL import Image

    tk = verovio.toolkit()
    tk.setOptions({"pageWidth": 1200, "pageHeight": 1700, "scale": 40, "breaks": "auto", "header": "none",
                   "footer": "none", "systemMaxPerPage": 8})
    assert tk.loadData(musicxml) and tk.getPageCount() == 1
    svg = tk.renderToSVG(1)
    systems = svg.split('class="system"')[1:]
    bars = [len(re.findall(r'class="measure[ "]', s)) for s in systems]
    png = cairosvg.svg2png(bytestring=svg.encode("utf-8"), background_color="white", output_width=1400)
    Image.open(io.BytesIO(png)).convert("L").save(path, format="PDF", resolution=150)
    return bars


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """(corpus folder, bars per system): a one-piece corpus whose source has a scanned edition."""
    root = tmp_path_factory.mktemp("realscans")
    (root / "coll" / "kern").mkdir(parents=True)
    (root / "coll" / "reference-edition").mkdir()
    source = root / "coll" / "kern" / "piece.musicxml"
    source.write_text(_score(BARS), encoding="utf-8")
    bars = _engraved_pdf(_score(BARS), root / "coll" / "reference-edition" / "piece.pdf")
    assert len(bars) >= 3 and sum(bars) == BARS
    corpus = root / "corpus"
    _one_piece_corpus(corpus, "coll-piece", source, _score(BARS), "train")
    return corpus, bars


def _one_piece_corpus(corpus: Path, piece_id: str, source: Path, score: str, split: str) -> None:
    (corpus / "pieces" / piece_id).mkdir(parents=True)
    (corpus / "pieces" / piece_id / "score.musicxml").write_text(score, encoding="utf-8")
    row = {"piece_id": piece_id, "source": str(source), "split": split, "system": 0, "png": "x.png",
           "duration": 1.0, "measures": [1, 1]}
    (corpus / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")


def test_scanned_systems_get_the_notation_of_their_bars(scanned):
    corpus, bars = scanned
    summary = realscans.pair_corpus(corpus, [], realscans.RealScanConfig(redo=True))
    rows = corpus_io.rows(corpus, ["realscan_train"])
    assert summary["total"]["scan_systems"] == summary["total"]["paired_systems"] == len(bars) == len(rows)
    first = 1
    for row, n in zip(rows, bars):
        assert row["measures"] == [first, first + n - 1] and row["split"] == "realscan_train"
        part = ET.parse(corpus / row["musicxml"]).getroot().find("part")
        numbers = [int(m.get("number")) for m in part.findall("measure")]
        assert numbers == list(range(first, first + n))  # exactly the bars the crop shows
        pitches = re.findall(r"\b(?:[A-G])\d\b|pitch", (corpus / row["lmx"]).read_text(encoding="utf-8"))
        assert pitches  # LMX written from that excerpt
        assert (corpus / row["png"]).is_file() and row["scan"]["page"] == 1
        first += n
    assert first == BARS + 1


def test_bar_count_mismatch_is_logged_not_guessed(scanned, tmp_path):
    corpus, _ = scanned
    other = tmp_path / "corpus"
    source = Path(corpus_io.rows(corpus)[0]["source"])
    _one_piece_corpus(other, "coll-piece", source, _score(BARS - 1), "test")  # one bar fewer than printed
    summary = realscans.pair_corpus(other, [], realscans.RealScanConfig())
    assert summary["total"]["paired_systems"] == 0 and summary["total"]["scan_systems"] > 0
    assert summary["unpaired"] == {"coll-piece": "bar count mismatch"}
    assert corpus_io.rows(other, ["realscan_test"]) == []
    error = json.loads((other / "realscans_errors.jsonl").read_text(encoding="utf-8"))
    assert error["method"] == "total" and error["unpaired"]["printed_bars"] == BARS - 1
    assert error["unpaired"]["scan_bars"]["ordinary"] == BARS


def _kern(lines: list[int]) -> str:
    """A one-staff kern of sum(lines) whole-note bars with the edition's line breaks after each line."""
    out, bar = ["**kern", "*M4/4"], 1
    for k, n in enumerate(lines):
        if k:
            out.append("!!LO:LB:g=original")
        for _ in range(n):
            out += [f"={bar}", "1c"]
            bar += 1
    return "\n".join(out + ["==", "*-"]) + "\n"


@pytest.mark.parametrize("kern_lines,paired", [("truth", "all"), ("shifted", "first")])
def test_each_system_checked_against_the_editions_line(scanned, tmp_path, kern_lines, paired):
    corpus, bars = scanned
    source = Path(corpus_io.rows(corpus)[0]["source"])
    lines = bars if kern_lines == "truth" else [bars[0], bars[1] - 1, bars[2] + 1]  # lines 2 and 3 disagree
    (source.parent / "piece.krn").write_text(_kern(lines), encoding="utf-8")
    try:
        other = tmp_path / "corpus"
        _one_piece_corpus(other, "coll-piece", source, _score(BARS), "train")
        result = realscans.pair_piece(other, corpus_io.rows(other)[0], source.parents[1] / "reference-edition" /
                                      "piece.pdf", realscans.RealScanConfig())
    finally:
        (source.parent / "piece.krn").unlink()
    assert result["method"] == "lines" and result["edition_lines"] == len(bars)
    if paired == "all":
        assert [r["measures"] for r in result["rows"]] == [[1, bars[0]], [bars[0] + 1, bars[0] + bars[1]], [bars[0] + bars[1] + 1, BARS]] and result["unpaired"] is None
    else:  # the first system only; the others are logged with their counts
        assert [r["measures"] for r in result["rows"]] == [[1, bars[0]]]
        assert set(result["unpaired"]["systems"]) == {1, 2}


@pytest.mark.parametrize("expansion,paired", [("*>[A,B,B]", False), ("*>[A,B]", True)])
def test_total_count_not_used_for_repeated_sections(scanned, tmp_path, expansion, paired):
    # the print of a score that repeats sections may arrange them otherwise with the same total
    corpus, bars = scanned
    source = Path(corpus_io.rows(corpus)[0]["source"])
    kern = source.parent / "piece.krn"  # no recorded lines: the total rule's case
    kern.write_text("\n".join(["**kern", expansion, "*>norep[A,B]", "*>A", "=1", "1c", "*>B", "=2", "1d", "==",
                               "*-"]) + "\n", encoding="utf-8")
    try:
        assert realscans.repeat_sections(kern) is not paired
        other = tmp_path / "corpus"
        _one_piece_corpus(other, "coll-piece", source, _score(BARS), "train")
        result = realscans.pair_piece(other, corpus_io.rows(other)[0], source.parents[1] / "reference-edition" /
                                      "piece.pdf", realscans.RealScanConfig())
    finally:
        kern.unlink()
    assert result["scan_systems"] == len(bars)  # the scan is still counted
    if paired:
        assert result["method"] == "total" and len(result["rows"]) == len(bars) and result["unpaired"] is None
    else:
        assert result["method"] == "none" and result["rows"] == []
        assert result["unpaired"] == {"reason": realscans.REPEAT_SECTIONS}


def test_edition_lines_of_a_kern_file(tmp_path):
    kern = tmp_path / "x.krn"
    kern.write_text("\n".join(["**kern", "4c", "=1", "1d", "!!LO:LB:g=original", "=2", "2e", "!!LO:LB:g=original",
                               "2f", "=3", "1g", "!!LO:LB:g=z", "=4", "1a", "==", "*-"]) + "\n", encoding="utf-8")
    lines = realscans.edition_lines(kern)  # pickup + bar 1 | bar 2 (broken) | bar 2 again, 3, 4
    assert lines.bars == 5 and lines.broken == {2} and lines.lines == [[0, 1], [2], [2, 3, 4]]
    kern.write_text("**kern\n=1\n1c\n=2\n1d\n==\n*-\n", encoding="utf-8")
    assert realscans.edition_lines(kern) is None  # no original line breaks


def test_pdf_found_through_scores_folders(scanned):
    corpus, _ = scanned
    row = corpus_io.rows(corpus)[0]
    collection = Path(row["source"]).parents[1]
    assert realscans.find_pdf(row, [collection]) == collection / "reference-edition" / "piece.pdf"
    assert realscans.find_pdf(row, [collection.parent]) is None
    assert realscans.find_pdf({**row, "source": str(collection / "kern" / "other.krn")}, []) is None


def test_real_scan_rows_only_when_asked_for(scanned):
    corpus, _ = scanned
    realscans.pair_corpus(corpus, [], realscans.RealScanConfig())  # resumes from result.json
    assert {r["split"] for r in corpus_io.rows(corpus)} == {"train"}  # the built splits, as before
    assert {r["split"] for r in corpus_io.rows(corpus, ["train", "realscan_train"])} == {"train", "realscan_train"}
    with pytest.raises(BadInputError):
        corpus_io.rows(corpus, ["realscan_bogus"])


def test_held_out_piece_goes_to_the_real_scan_test_split(scanned):
    corpus, _ = scanned
    row = {"piece_id": "p", "source": "beethoven/kern/sonata01-1.krn", "split": "train", "piece_audio": None}
    made = realscans._row(corpus, row, 0, corpus / "pieces" / "p" / "realscans" / "000", (1, 2), [0, 1], None)
    assert made["split"] == "realscan_test" and made["held_out"] and corpus_io.is_held_out(made)


def test_printed_order_leaves_out_written_out_repeats():
    def order(numbers, tail=""):
        measures = "".join(f'<measure number="{n}"><note><pitch/></note></measure>' for n in numbers) + tail
        return realscans.printed_order(ET.fromstring(f"<score-partwise><part>{measures}</part></score-partwise>"))

    assert order(["0", "1", "2", "1", "2", "3", "0"]) == [0, 1, 2, 5, 6]  # pickup and last partial bar kept
    assert order(["1", "2", "0", "1", "2", "0", "3"]) == [0, 1, 2, 6]  # a split bar inside the repeat goes too
    assert order(["1", "0", "0", "2"]) == [0, 1, 2, 3]  # unnumbered bars are all printed
    rests = '<measure number="0"><note><rest/></note></measure>'  # music21's bar after the final bar line
    assert order(["1", "2"], tail=rests) == [0, 1] and order(["1", "2", "0"]) == [0, 1, 2]


def test_cli_reports_paired_counts(scanned):
    corpus, bars = scanned
    result = CliRunner().invoke(app, ["dataset", "scans", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["splits"] == {"realscan_train": len(bars)}


def test_eval_omr_scores_a_real_scan_split(scanned, tmp_path):
    corpus, bars = scanned
    realscans.pair_corpus(corpus, [], realscans.RealScanConfig())
    for row in corpus_io.rows(corpus, ["realscan_train"]):  # predictions = the references: no error
        pred = tmp_path / row["piece_id"] / f"{row['system']:03d}.lmx"
        pred.parent.mkdir(exist_ok=True)
        pred.write_text((corpus / row["lmx"]).read_text(encoding="utf-8"), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "omr", str(tmp_path), "--data", str(corpus),
                                      "--split", "realscan_train", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["files"] == len(bars) and summary["SER"] == 0.0
    (tmp_path / "coll-piece" / "000.mid").write_bytes(b"")  # a prediction whose reference does not exist
    amt = CliRunner().invoke(app, ["eval", "amt", str(tmp_path), "--data", str(corpus), "--split", "realscan_train"])
    assert amt.exit_code == 2 and "has no mid file" in amt.output
