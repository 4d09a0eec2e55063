"""Several engravings per piece in `umust dataset build --engravings N` (verovio fonts and layouts, LilyPond)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data import align, lilypond, render, scans

from .test_render import kern_piece

runner = CliRunner()
OPTIONS = ["--soundfont", "timgm6mb", "--seed", "5"]


def build(src: Path, out: Path, *extra: str):
    return runner.invoke(app, ["dataset", "build", str(src), "-o", str(out), *OPTIONS, *extra])


def manifest(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]


def barline_measures(png: Path) -> int:
    """Measures of a system image counted from its bar lines (the real-scan detector)."""
    page = np.pad(np.asarray(Image.open(png).convert("L")), 60, constant_values=255)
    (system,) = scans.detect_systems(page, scans.ScanConfig())
    return system.measures


@pytest.fixture(scope="module")
def score(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "piece.krn"
    path.write_text(kern_piece(16, seed=4), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(score, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    result = build(score, out, "--engravings", "3")
    assert result.exit_code == 0, result.output
    return out


def test_variant_is_seeded_and_inside_the_ranges():
    variety = render.EngravingVariety(engravers=("verovio", "lilypond"))
    drawn = [render.engraving_variant(render.EngraveConfig(), variety, seed) for seed in range(40)]
    assert drawn[7] == render.engraving_variant(render.EngraveConfig(), variety, 7)
    assert {d.font for d in drawn} == set(render.verovio_fonts()) and len(render.verovio_fonts()) >= 3
    assert {d.engraver for d in drawn} == {"verovio", "lilypond"}
    assert all(1400 <= d.page_width <= 3200 and 40 <= d.scale <= 60 for d in drawn)
    assert len({d.page_width for d in drawn}) > 20


def test_each_engraving_covers_the_piece_with_its_own_systems(corpus):
    rows = manifest(corpus)
    by_engraving: dict[int, list[dict]] = {}
    for row in rows:
        by_engraving.setdefault(row["engraving"]["index"], []).append(row)
    assert sorted(by_engraving) == [0, 1, 2]
    assert [r["system"] for r in rows] == list(range(len(rows)))  # unique system numbers, unique files
    assert len({r["png"] for r in rows}) == len(rows) and len({r["split"] for r in rows}) == 1
    assert by_engraving[0][0]["engraving"] == {"index": 0, "engraver": "verovio", "font": "Leipzig",
                                               "scale": 50, "page_width": 2200, "spacing_linear": 0.25,
                                               "spacing_non_linear": 0.6}
    for group in by_engraving.values():
        starts = [r["measures"][0] for r in group]
        ends = [r["measures"][1] for r in group]
        assert starts[0] == 1 and ends[-1] == 16 and starts[1:] == [e + 1 for e in ends[:-1]]
        assert group[0]["start"] == 0.0 and all(a["end"] == b["start"] for a, b in zip(group, group[1:]))
        assert (corpus / group[0]["png"]).with_suffix(".align.json").is_file()
    breaks = {k: [r["measures"][1] for r in g] for k, g in by_engraving.items()}
    assert len({tuple(b) for b in breaks.values()}) > 1  # other page widths, other system breaks
    piece = json.loads((corpus / "pieces" / rows[0]["piece_id"] / "piece.json").read_text())
    assert [e["index"] for e in piece["engravings"]] == [0, 1, 2] and len(piece["systems"]) == len(rows)


def test_the_same_measures_at_the_same_seconds_in_every_engraving(corpus):
    rows = manifest(corpus)
    ends = {}  # last measure of a system -> its end second, whichever engraving
    for row in rows:
        assert ends.setdefault(row["measures"][1], row["end"]) == pytest.approx(row["end"], abs=1e-6)
    for row in rows:  # every engraving's noteheads sit in its image at the seconds of its row's audio
        alignment = align.read_alignment(align.alignment_path(corpus / row["png"]))
        seconds = alignment.performance_times(row)
        assert len(seconds) >= row["measures"][1] - row["measures"][0] + 1  # every 4/4 bar has onsets
        assert seconds[0] == pytest.approx(0.0, abs=1e-3) and seconds[-1] < row["duration"]
        assert alignment.x[-1] < alignment.width == Image.open(corpus / row["png"]).width
    leipzig = [r for r in rows if r["engraving"]["index"] == 0 and r["measures"][1] > r["measures"][0]]
    for row in leipzig:  # and the images hold the measures of their rows (the real-scan bar line finder)
        assert barline_measures(corpus / row["png"]) == row["measures"][1] - row["measures"][0] + 1


def test_dataset_align_aligns_every_engraving_again(corpus, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    aligned = sorted(copy.rglob("*.align.json"))
    before = {p: p.read_text() for p in aligned}
    for path in aligned:
        path.unlink()
    result = runner.invoke(app, ["dataset", "align", str(copy)])
    assert result.exit_code == 0, result.output
    assert {p: p.read_text() for p in aligned} == before and len(aligned) == len(manifest(copy))


def test_an_older_corpus_resumes_and_refuses_other_engravings(score, tmp_path):
    out = tmp_path / "c"
    assert build(score, out).exit_code == 0
    options = json.loads((out / "build.json").read_text())
    assert options["engravings"] == 1
    old = {k: v for k, v in options.items() if k not in ("engravings", "variety")}
    old["engrave"] = {k: old["engrave"][k] for k in ("scale", "page_width", "margin_px")}
    (out / "build.json").write_text(json.dumps(old))  # as built before --engravings existed
    resumed = build(score, out)
    assert resumed.exit_code == 0 and "0 built, 1 already done" in resumed.output
    refused = build(score, out, "--engravings", "3")
    assert refused.exit_code == 2 and "engravings" in refused.output


def test_unknown_engraver_is_a_usage_error(score, tmp_path):
    result = build(score, tmp_path / "c", "--engravings", "2", "--engraver", "finale")
    assert result.exit_code == 2 and "finale" in result.output
    assert not (tmp_path / "c" / "manifest.jsonl").exists()


@pytest.mark.skipif(not lilypond.available(), reason="LilyPond is not installed")
def test_lilypond_engraves_each_system_on_one_line_with_its_measures(score, tmp_path):
    out = tmp_path / "c"
    result = build(score, out, "--engravings", "2", "--engraver", "lilypond", "--scan-copies", "1")
    assert result.exit_code == 0, result.output
    rows = [r for r in manifest(out) if r["engraving"]["index"] == 1]
    assert rows and all(r["engraving"]["engraver"] == "lilypond" and r["engraving"]["font"] == "Emmentaler"
                        for r in rows)
    for row in rows:
        png = out / row["png"]
        assert barline_measures(png) == row["measures"][1] - row["measures"][0] + 1
        assert not png.with_suffix(".align.json").exists()  # no notehead ids to align
        assert (out / row["scans"][0]).is_file() and (out / row["wav"]).is_file()
        image = np.asarray(Image.open(png))
        staff = scans.detect_systems(np.pad(image, 60, constant_values=255), scans.ScanConfig())[0]
        expected = 9.0 * row["engraving"]["scale"] / 50  # verovio's staff space at that scale
        assert 0.85 * expected < staff.space < 1.15 * expected
    aligned = runner.invoke(app, ["dataset", "align", str(out)])  # LilyPond's rows are left out, not failed
    assert aligned.exit_code == 0 and not list(out.rglob("*.align.json"))[len(manifest(out)) - len(rows):]
