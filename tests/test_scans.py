"""Scanned-page analysis: staves, piano systems, barlines, measure ranges and times."""

from __future__ import annotations

import numpy as np
import pytest

from umust_cli.data import scans
from umust_cli.errors import BadInputError, ImageError

SPACE = 12  # px between staff lines
CFG = scans.ScanConfig()


def _staff(page: np.ndarray, top: int, x0: int, x1: int) -> None:
    for k in range(5):
        page[top + k * SPACE: top + k * SPACE + 2, x0:x1] = 0


def _system(page: np.ndarray, top: int, bars: list[int], x0: int = 100, x1: int = 1500, gap: int = 80,
            broken: bool = False) -> None:
    """A grand staff: staves at top and top + 4 spaces + gap, a start line, barlines, a few note heads.

    ``broken``: the barlines (not the start line) stop at each staff, leaving the gap white."""
    _staff(page, top, x0, x1)
    lower = top + 4 * SPACE + gap
    _staff(page, lower, x0, x1)
    bottom = lower + 4 * SPACE + 2
    page[top:bottom, x0: x0 + 3] = 0
    for x in bars:
        if broken:
            page[top: top + 4 * SPACE + 2, x: x + 3] = 0
            page[lower:bottom, x: x + 3] = 0
        else:
            page[top:bottom, x: x + 3] = 0
    for x in range(x0 + 60, x1 - 40, 90):  # note heads with short stems, inside one staff each
        if min(abs(x + 7 - b) for b in bars) < 30:
            continue  # music keeps clear of barlines
        page[top + 2 * SPACE: top + 3 * SPACE, x: x + 14] = 0
        page[top - SPACE: top + 2 * SPACE, x + 12: x + 14] = 0
        page[lower + SPACE: lower + 2 * SPACE, x: x + 14] = 0


def synthetic_page() -> tuple[np.ndarray, list[list[int]]]:
    page = np.full((1400, 1600), 255, dtype=np.uint8)
    bars = [[400, 700, 1000, 1497], [350, 620, 900, 1180, 1497]]
    _system(page, 200, bars[0])
    _system(page, 700, bars[1])
    return page, bars


def test_synthetic_page_systems_and_barlines():
    page, bars = synthetic_page()
    systems = scans.detect_systems(page, CFG)
    assert [s.measures for s in systems] == [4, 5]
    for s, want in zip(systems, bars):
        assert len(s.barlines) == len(want)
        assert np.allclose(s.barlines, [x + 1 for x in want], atol=3)
        assert s.upper.top == pytest.approx(s.upper.lines[0], abs=1) and s.space == pytest.approx(SPACE, abs=0.5)
        assert s.x0 == pytest.approx(100, abs=3) and s.x1 == pytest.approx(1499, abs=3)
    assert systems[0].upper.top == pytest.approx(200, abs=2) and systems[1].upper.top == pytest.approx(700, abs=2)
    left, top, right, bottom = systems[0].box
    assert top < 200 - SPACE and bottom > 200 + 8 * SPACE + 80 and bottom <= (systems[1].upper.top + 336) // 2 + 1
    assert scans.crop(page, systems[0]).shape == (bottom - top, right - left)


def test_barlines_broken_between_the_staves():
    page = np.full((800, 1600), 255, dtype=np.uint8)
    _system(page, 200, [400, 700, 1000, 1497], broken=True)
    assert [s.measures for s in scans.detect_systems(page, CFG)] == [1]  # only the unclosed tail
    split = scans.detect_systems(page, scans.ScanConfig(split_barlines=True))
    assert [s.measures for s in split] == [4]
    assert np.allclose(split[0].barlines, [401, 701, 1001, 1498], atol=3)
    whole, _ = synthetic_page()  # barlines through the gap are found in both modes
    assert [s.measures for s in scans.detect_systems(whole, scans.ScanConfig(split_barlines=True))] == [4, 5]


def test_skewed_page_is_levelled():
    from PIL import Image

    page, _ = synthetic_page()
    tilted = np.asarray(Image.fromarray(page).rotate(0.8, resample=Image.Resampling.BILINEAR, fillcolor=255))
    angle = scans.estimate_skew(scans.ink_mask(tilted), CFG)
    assert angle == pytest.approx(0.8, abs=0.15)
    _, systems = scans.page_systems(tilted, CFG)
    assert [s.measures for s in systems] == [4, 5]


def test_repeat_start_after_clef_is_no_measure():
    page = np.full((700, 1600), 255, dtype=np.uint8)
    _system(page, 200, [260, 700, 1497])
    page[200:200 + 8 * SPACE + 82, 266:272] = 0  # thick line of the repeat sign beside the thin one at 260
    for top in (200, 200 + 4 * SPACE + 80):  # its dots in the two middle spaces
        for k in (1, 2):
            y = top + k * SPACE + SPACE // 2
            page[y - 2: y + 3, 278:283] = 0
    (system,) = scans.detect_systems(page, CFG)
    assert system.measures == 2


def test_blank_and_non_music_pages_are_image_errors():
    with pytest.raises(ImageError, match="blank"):
        scans.detect_systems(np.full((800, 600), 255, dtype=np.uint8), CFG)
    rng = np.random.default_rng(0)
    photo = (rng.random((800, 600)) * 255).astype(np.uint8)
    with pytest.raises(ImageError, match="no system found"):
        scans.detect_systems(photo, CFG)
    with pytest.raises(ImageError):
        scans.detect_systems(np.zeros((5, 5), dtype=np.uint8), CFG)


def test_single_staves_are_not_systems():
    page = np.full((800, 1600), 255, dtype=np.uint8)
    _staff(page, 200, 100, 1500)
    _staff(page, 500, 100, 1500)
    with pytest.raises(ImageError, match="2 staves"):
        scans.detect_systems(page, CFG)


def test_assign_measures():
    assert scans.assign_measures([4, 5, 3], 12, 0) == [(1, 4), (5, 9), (10, 12)]
    assert scans.assign_measures([4, 5, 3], 13, 1) == [(1, 4), (5, 9), (10, 13)]  # a final bar split off
    assert scans.assign_measures([4, 5, 4], 12, 1) == [(1, 4), (5, 9), (10, 12)]
    with pytest.raises(BadInputError, match="tolerance"):
        scans.assign_measures([4, 5, 3], 20, 2)


def test_measure_times_share_spans_by_length():
    systems = [{"start": 0.0, "end": 6.0, "measures": [1, 2]}, {"start": 10.0, "end": 12.0, "measures": [4, 4]}]
    quarters = np.array([1.0, 2.0, 3.0, 3.0])  # a pickup of one quarter, then bars of 2 and 3
    times = scans.measure_times(systems, quarters)
    assert np.allclose(times, [0.0, 2.0, 6.0, 10.0, 12.0])  # measure 3 (no system) interpolated


def test_unreadable_pdf_is_image_error(tmp_path):
    bad = tmp_path / "x.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(ImageError):
        scans.load_pages(bad, 800)


def test_real_scan_page(corpora):
    pdf = corpora / "chopin-mazurkas" / "reference-edition" / "mazurka06-2.pdf"
    if not pdf.is_file():
        pytest.skip(f"{pdf} not found")
    page = scans.load_pages(pdf, CFG.page_width_px)[0]
    _, systems = scans.page_systems(page, CFG)
    assert [s.measures for s in systems] == [5, 6, 6, 6, 6, 7]  # counted by hand on the print


def test_cross_staff_stem_is_no_barline():
    page = np.full((700, 1600), 255, dtype=np.uint8)
    _system(page, 200, [400, 700, 1497])
    bottom = 200 + 8 * SPACE + 82
    page[200 - SPACE: bottom + 2 * SPACE, 1200:1202] = 0  # a stem from above the upper staff to below the lower
    page[bottom + SPACE: bottom + 2 * SPACE, 1188:1202] = 0  # its note head on a ledger line
    (system,) = scans.detect_systems(page, CFG)
    assert system.measures == 3 and len(system.barlines) == 3


def test_printed_bars_of_a_score_with_written_out_repeats(tmp_path):
    numbers = ["1", "2", "3", "2", "3", "4", ""]  # bars 2-3 repeated; one unnumbered bar
    measures = "".join(f'<measure number="{n}"/>' for n in numbers)
    path = tmp_path / "s.musicxml"
    path.write_text(f"<score-partwise><part id='P1'>{measures}</part></score-partwise>", encoding="utf-8")
    printed = scans.printed_measures(path)
    assert printed == [0, 1, 2, 5, 6]  # print order: 1 2 3 4 and the unnumbered bar
    times = np.arange(len(numbers) + 1, dtype=float)  # measure i plays [i, i + 1) s
    assert scans.printed_span(times, printed, 1, 3) == (0.0, 3.0)  # first time through bars 1-3
    assert scans.printed_span(times, printed, 4, 5) == (5.0, 7.0)
    assert scans.printed_span(times, printed, 3, 4) is None  # the repeat goes back between bars 3 and 4
    assert scans.printed_span(times, list(range(len(numbers))), 3, 4) == (2.0, 4.0)  # as performed
