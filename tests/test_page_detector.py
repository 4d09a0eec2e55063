"""The page detector on whole pages engraved by verovio: known systems, in reading order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from umust_cli.data import render, scans
from umust_cli.errors import ImageError

CFG = scans.ScanConfig()
NOTES = ["4c", "4d", "4e", "4f", "4g", "4a", "4b", "4cc"]


def kern(spines: int, measures: int, title: str | None = None) -> str:
    """A 4/4 score of ``spines`` staves and ``measures`` bars of quarter notes."""
    lines = [f"!!!OTL: {title}"] if title else []
    lines += ["\t".join(["**kern"] * spines), "\t".join(["*M4/4"] * spines)]
    for m in range(1, measures + 1):
        lines.append("\t".join([f"={m}"] * spines))
        lines += ["\t".join([NOTES[(m + k) % 8]] * spines) for k in range(4)]
    lines += ["\t".join(["=="] * spines), "\t".join(["*-"] * spines)]
    return "\n".join(lines) + "\n"


def engrave_page(data: str) -> np.ndarray:
    """Page 1 of ``data`` engraved by verovio (title header on), grayscale, 1260 px wide."""
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    tk.setOptions({"scale": 60, "pageWidth": 2100, "pageHeight": 2970, "adjustPageHeight": True,
                   "breaks": "auto", "header": "auto", "footer": "none", "svgFormatRaw": True})
    assert tk.loadData(data) and tk.getPageCount() == 1
    return render.raster(render.inline_glyphs(tk.renderToSVG(1)))


@pytest.fixture(scope="module")
def pages() -> dict[str, np.ndarray]:
    """Grand staves with a title and a one-bar last system (25 bars: 6 a system), single
    staves (17 bars), systems of three staves (13 bars)."""
    return {"piano": engrave_page(kern(2, 25, "A Title Line")), "single": engrave_page(kern(1, 17)),
            "three": engrave_page(kern(3, 13))}


def _spans(systems: list[scans.ScanSystem]) -> list[tuple[int, int]]:
    return [(s.upper.top, s.lower.bottom) for s in systems]


def test_grand_staves_with_a_title_and_a_one_bar_last_system(pages):
    page, found = scans.page_systems(pages["piano"], CFG, staves=None)
    assert [s.n_staves for s in found] == [2] * 5  # the title line is no system
    assert [s.measures for s in found] == [6, 6, 6, 6, 1]
    spans = _spans(found)
    assert spans == sorted(spans) and all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # reading order
    assert found[-1].x1 - found[-1].x0 < 0.3 * page.shape[1]  # the short last system
    ink = scans.ink_mask(page)
    title_rows = np.nonzero(ink[: spans[0][0] - 40].any(axis=1))[0]
    assert title_rows.size  # the page has its title above the first system ...
    assert found[0].box[1] > title_rows[-1]  # ... and the first crop leaves it out
    for s in found:  # every crop holds its staves whole
        left, top, right, bottom = s.box
        assert top < s.upper.top and bottom > s.lower.bottom and left <= s.x0 and right >= s.x1


def test_skewed_copy_splits_the_same(pages):
    # a crisp tilted capture, as a scanner sees a page laid askew; the detector levels it itself
    tilted = np.asarray(Image.fromarray(pages["piano"]).rotate(1.2, resample=Image.Resampling.NEAREST,
                                                                 expand=True, fillcolor=255))
    _, found = scans.page_systems(tilted, CFG, staves=None)
    assert [s.n_staves for s in found] == [2] * 5
    assert [s.measures for s in found] == [6, 6, 6, 6, 1]


def test_single_staff_and_three_staff_systems(pages):
    _, single = scans.page_systems(pages["single"], CFG, staves=None)
    assert [s.n_staves for s in single] == [1, 1, 1]
    assert sum(s.measures for s in single) >= 17 - 1  # verovio's bars, the final one's end line aside
    _, three = scans.page_systems(pages["three"], CFG, staves=None)
    assert [s.n_staves for s in three] == [3, 3, 3]  # joined by the bracket's start line only
    assert all(s.lower.top - s.upper.bottom > 2 * (s.upper.bottom - s.upper.top) for s in three)


def test_piano_systems_are_the_default(pages):
    _, piano = scans.page_systems(pages["piano"], CFG)
    assert len(piano) == 5
    for name in ("single", "three"):  # found, but no piano system among them
        with pytest.raises(ImageError, match="no piano system"):
            scans.page_systems(pages[name], CFG)
    assert [s.n_staves for s in scans.page_systems(pages["three"], CFG, staves=(3,))[1]] == [3, 3, 3]


def test_text_only_page_has_no_system():
    from PIL import ImageDraw

    image = Image.new("L", (1200, 1600), 255)
    draw = ImageDraw.Draw(image)
    for k in range(30):  # lines of text and a rule under a heading
        draw.text((100, 100 + 45 * k), "Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2, fill=0)
    draw.line((100, 80, 1100, 80), fill=0, width=2)
    with pytest.raises(ImageError, match="no system found"):
        scans.detect_systems(np.asarray(image), CFG)


def test_dataset_pages_writes_systems_in_reading_order(pages, tmp_path):
    from typer.testing import CliRunner

    from umust_cli.cli.main import app

    Image.fromarray(pages["piano"]).save(tmp_path / "piano.png")
    Image.fromarray(pages["single"]).save(tmp_path / "single.pdf", resolution=150)
    (tmp_path / "blank.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["dataset", "pages", str(tmp_path / "piano.png"), str(tmp_path / "single.pdf"),
                                      str(tmp_path / "blank.png"), "-o", str(out)])
    assert result.exit_code == 3, result.output  # one input failed, the others were done
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["piece_id"], r["system"], r["staves"]) for r in rows] == \
        [("piano", i, 2) for i in range(5)] + [("single", i, 1) for i in range(3)]
    assert all(r["page"] == 1 and (out / r["png"]).is_file() for r in rows)
    crops = [np.asarray(Image.open(out / r["png"])) for r in rows[:5]]
    assert all(c.shape[1] > 200 and c.shape[0] < 400 for c in crops)
    again = CliRunner().invoke(app, ["dataset", "pages", str(tmp_path / "piano.png"), "-o", str(out), "--staves", "2"])
    assert again.exit_code == 0, again.output


def test_translate_reads_the_one_bar_last_system(pages, tmp_path):
    from umust_cli.translate.symbolic import read_systems

    Image.fromarray(pages["piano"]).save(tmp_path / "page.png")
    systems = read_systems(tmp_path / "page.png")  # the same detector, its piano systems
    assert len(systems) == 5 and systems[-1].shape[1] < 0.4 * systems[0].shape[1]


def beamed_grand_staff(space: int = 10, width: int = 1000) -> tuple[np.ndarray, tuple[int, int]]:
    """A drawn piano system (bilevel, as a binarized scan) whose upper staff's lowest space is
    dark with 16th beams: every row between its 4th and 5th line holds over 40% of the inkiest
    row's ink, so those lines and the beams make one thick band of inky rows. (page, staff tops)."""
    page = np.full((24 * space, width), 255, np.uint8)
    tops = (6 * space, 14 * space)
    for top in tops:
        for k in range(5):
            page[top + k * space: top + k * space + 2, 20: width - 20] = 0
    for x in (20, 270, 520, 770, width - 22):  # start line and barlines over both staves ...
        page[tops[0]: tops[1] + 4 * space + 2, x: x + 2] = 0
        if x > 20:  # ... the barlines broken just above the lower staff, as binarizing breaks them
            page[tops[1] - space + 1: tops[1] - 1, x: x + 2] = 255
    line4 = tops[0] + 3 * space
    for k, x in enumerate(range(30, width - 80, 56)):  # beam groups, alternately high and low in the space
        y = line4 + 1 if k % 2 == 0 else line4 + space // 2
        page[y: y + space // 2, x: x + 50] = 0
        for stem in range(x, x + 50, 12):
            page[y - 3 * space: y, stem: stem + 2] = 0
    return page, tops


def test_staff_lines_joined_by_beams_stay_a_grand_staff():
    # a binarized slide of a score-following video: beams fill the upper staff's lowest space,
    # and its 4th and 5th lines with them made one band, dropped as too thick for a line; the
    # lower staff, its bar lines its own, was then a system of one staff with a box over the whole
    # grand staff (dataset ytsv dropped it for its staff count)
    page, tops = beamed_grand_staff()
    proj = scans.ink_mask(page).sum(axis=1)
    assert (proj[tops[0] + 3 * 10: tops[0] + 4 * 10 + 2] >= CFG.line_frac * proj.max()).all()
    _, found = scans.page_systems(page, CFG, staves=None)
    assert [s.n_staves for s in found] == [2]
    assert [st.top for st in found[0].staves] == list(tops) and found[0].measures == 4
