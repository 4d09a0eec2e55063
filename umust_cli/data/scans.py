"""Score pages: pages -> systems (single staves, grand staves, larger systems) -> measure ranges.

The one page detector of umust (translate, retrieve and ``dataset pages`` use it). A page is
binarized (Otsu), deskewed (the angle whose row projection of ink is sharpest), and its
staff lines found as rows whose ink spans a large part of the page or that hold one long
horizontal run (the short staves of a last system of one or two bars); a band of such rows
too thick for one line (beams filling a space join two lines) is cut to its inkiest rows.
Five evenly spaced lines make a staff (extra rows in a cluster, beams or brackets, are left out). Consecutive
staves joined by a vertical line (the system's start line, a brace's line or a barline)
make one system, in reading order; a staff joined to none is a one-staff system when it
has a bar line of its own (title text, vignettes and footnotes have no staves). Systems
carry their staff count; :func:`page_systems` keeps the piano systems (2 staves) unless
told otherwise. A barline is a column whose ink covers the system from the top line of
the first staff to the bottom line of the last; close lines (double bars, repeat signs)
count as one::

    page (H, W) uint8 -> ink (H, W) bool -> staff lines (y) -> staves (5 lines)
         -> systems (1..n staves) -> barlines (x) -> measures per system

Measures per system = barlines right of the system's start line, plus one for
a last measure that runs to the end of the staff without a closing barline.
A repeat-start sign right after the clef and key (at the start of a line) is
not a measure: the narrow first segment before it is dropped. Consecutive systems
of a piece then cover ordinals 1..N in reading order (:func:`assign_measures`),
and per-measure performance times (:func:`measure_times`) give each system its audio.
"""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from umust_cli.data.render import content_divisions
from umust_cli.errors import BadInputError, ImageError
from umust_cli.inputs import load_image


@dataclass(frozen=True)
class ScanConfig:
    page_width_px: int = 2000  # PDF pages are rasterized to this width
    max_skew_deg: float = 2.0  # deskew searches [-max, +max]
    skew_step_deg: float = 0.1
    line_frac: float = 0.4  # a staff-line row holds >= this fraction of the inkiest row's ink
    run_frac: float = 0.1  # ... or one horizontal ink run >= this fraction of the page width
    band_split: float = 0.7  # a band of line rows too thick for a line: its rows with this fraction of
    # its inkiest row's ink are the lines (two lines joined by dense beams between them)
    staff_fit: float = 0.25  # a staff's 5 lines lie within this (spaces) of 5 evenly spaced rows
    staff_gap_ratio: float = 1.4  # the 4 gaps of a staff differ by at most this ratio
    barline_cover: float = 0.9  # a barline column is ink over >= this fraction of the system height
    split_barlines: bool = False  # bar lines need only cross each staff, not the gap between them
    merge_spaces: float = 1.2  # barline runs closer than this (staff spaces) are one barline
    start_spaces: float = 2.5  # barlines this close to the staff start (brace included) are its start line
    header_spaces: float = 16.0  # clef + key + time signature fit in this (staff spaces)
    min_measure_spaces: float = 2.5  # an unclosed tail narrower than this is not a measure
    margin_spaces: float = 0.5  # white border of a crop, staff spaces
    edge_gap_spaces: float = 3.0  # above the first / below the last system, ink ends at a gap this tall


@dataclass(frozen=True)
class Staff:
    lines: tuple[float, ...]  # y of the 5 lines, top to bottom (px)

    @property
    def top(self) -> int:
        return int(round(self.lines[0]))

    @property
    def bottom(self) -> int:
        return int(round(self.lines[-1]))

    @property
    def space(self) -> float:
        return float(np.median(np.diff(self.lines)))


PIANO = (2,)  # staff counts of a piano system (grand staff)


@dataclass(frozen=True)
class ScanSystem:
    """One system of a page: its staves, extent, barlines and crop box (all in page pixels)."""

    page: int
    index: int  # 0-based system number on its page (every system, whatever its staff count)
    staves: tuple[Staff, ...]  # top to bottom
    x0: int  # staff start (system start line)
    x1: int  # staff end
    barlines: tuple[int, ...]  # x of each barline right of the start line
    measures: int
    box: tuple[int, int, int, int]  # crop (left, top, right, bottom), right/bottom exclusive

    @property
    def upper(self) -> Staff:
        return self.staves[0]

    @property
    def lower(self) -> Staff:
        return self.staves[-1]

    @property
    def n_staves(self) -> int:
        return len(self.staves)

    @property
    def space(self) -> float:
        return (self.upper.space + self.lower.space) / 2


# ------------------------------------------------------------------ pages
def rasterize_pdf(path: str | Path, width_px: int) -> list[np.ndarray]:
    """uint8 grayscale (H, width_px) images of every page of a PDF; ImageError if unreadable."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError) as e:
        raise ImageError(f"cannot read PDF {path}: {e}") from e
    pages = []
    try:
        for page in doc:
            scale = width_px / page.get_width()
            pages.append(np.asarray(page.render(scale=scale, grayscale=True).to_pil().convert("L")))
    finally:
        doc.close()
    if not pages:
        raise ImageError(f"PDF {path} has no pages")
    return pages


def load_pages(path: str | Path, width_px: int) -> list[np.ndarray]:
    """Pages of a PDF, or the one page of an image file (through the one validated image
    loader, umust_cli.inputs), as uint8 grayscale arrays."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        return rasterize_pdf(path, width_px)
    return [load_image(path)]


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """bool (H, W): True where a pixel is darker than the Otsu threshold of the page."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    threshold = int(np.nanargmax(between)) if np.isfinite(between).any() else 127
    return gray <= min(threshold, 200)


def estimate_skew(ink: np.ndarray, cfg: ScanConfig) -> float:
    """Degrees to rotate the page (counter-clockwise) so that staff lines are horizontal."""
    ys, xs = np.nonzero(ink[:, :: 2])  # every other column is enough
    if ys.size == 0:
        return 0.0
    xs = xs * 2 - ink.shape[1] / 2
    best, best_score = 0.0, -1.0
    for angle in np.arange(-cfg.max_skew_deg, cfg.max_skew_deg + 1e-9, cfg.skew_step_deg):
        rows = np.round(ys + xs * np.tan(np.radians(angle))).astype(np.int64)
        proj = np.bincount(rows - rows.min())
        score = float(np.dot(proj, proj))  # sharp peaks (straight lines) maximise the energy
        if score > best_score:
            best, best_score = float(angle), score
    return best


def deskew(gray: np.ndarray, angle: float) -> np.ndarray:
    """``gray`` rotated by -``angle`` degrees about its centre (paper-white fill)."""
    from PIL import Image

    if abs(angle) < 1e-6:
        return gray
    # a row y + x tan(a) = const is a staff line: rotating by -a (PIL: counter-clockwise) levels it
    rotated = Image.fromarray(gray).rotate(-angle, resample=Image.Resampling.BILINEAR, fillcolor=255)
    return np.asarray(rotated, dtype=np.uint8)


# ------------------------------------------------------------------ staves
def longest_runs(ink: np.ndarray) -> np.ndarray:
    """(H,) length of the longest horizontal ink run of each row, the row below counted with it
    (a line that steps a row on a slightly tilted page) and gaps of a few px closed."""
    gap = max(1, ink.shape[1] // 800)
    pair = ink | np.vstack([ink[1:], np.zeros((1, ink.shape[1]), dtype=bool)])
    closed = ndimage.binary_closing(pair, structure=np.ones((1, 2 * gap + 1), dtype=bool))
    edges = np.diff(np.pad(closed, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order: the k-th end closes the k-th start
    out = np.zeros(ink.shape[0], dtype=np.int64)
    np.maximum.at(out, rows, ends - starts)
    return out


def find_staves(ink: np.ndarray, cfg: ScanConfig) -> list[Staff]:
    """The staves of a level page, top to bottom: those of the rows with ``line_frac`` of the
    inkiest row's ink, then short ones (a last system of a bar or two) from rows holding one
    run of ``run_frac`` of the width, away from the first (beams and voltas near them)."""
    proj = ink.sum(axis=1).astype(np.float64)  # (H,) ink pixels per row
    staves = group_staves(staff_lines(ink, cfg), cfg, proj)
    if proj.max() <= 0:
        return staves
    runs = _thin_bands(proj, longest_runs(ink) >= cfg.run_frac * ink.shape[1], cfg.band_split)
    free = [y for y in runs if all(y < s.top - 2 * s.space or y > s.bottom + 2 * s.space for s in staves)]
    space = float(np.median([s.space for s in staves])) if staves else None
    short = [s for s in group_staves(free, cfg, proj, space)
             if (space is None or abs(s.space - space) <= 0.2 * space) and _line_contrast(ink, s, cfg)]
    return sorted(staves + short, key=lambda s: s.top)


def _line_contrast(ink: np.ndarray, staff: Staff, cfg: ScanConfig) -> bool:
    """True if ``staff`` spans ``run_frac`` of the width and, along it, its 5 line rows are ink
    in >= 80% of the columns and the rows halfway between them in <= 50% (not noise, not text)."""
    x0, x1 = staff_extent(ink, staff)
    if x1 - x0 < cfg.run_frac * ink.shape[1]:
        return False
    h = ink.shape[0]

    def cover(y: float) -> float:
        r = int(round(y))
        return float(ink[max(0, r - 1): min(h, r + 2), x0: x1 + 1].any(axis=0).mean())

    mids = [(a + b) / 2 for a, b in zip(staff.lines, staff.lines[1:])]
    return min(map(cover, staff.lines)) >= 0.8 and max(map(cover, mids)) <= 0.5


def staff_lines(ink: np.ndarray, cfg: ScanConfig) -> list[float]:
    """y centres of the rows that hold ``line_frac`` of the inkiest row's ink (runs of inky
    rows merged), top to bottom."""
    proj = ink.sum(axis=1).astype(np.float64)  # (H,) ink pixels per row
    if proj.max() <= 0:
        return []
    return _thin_bands(proj, proj >= cfg.line_frac * proj.max(), cfg.band_split)


def _thin_bands(proj: np.ndarray, rows: np.ndarray, split: float) -> list[float]:
    """Centres (ink-weighted) of the runs of True ``rows`` no thicker than 3x their median.

    A thicker run is cut to its rows holding ``split`` of its inkiest row's ink: lines of a
    staff whose spaces are dark with beams (a binarized scan) join into one band, whose peaks
    are the lines. What is still thick (a page edge, a solid bar) is no line."""
    labels, count = ndimage.label(rows)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    widths = ndimage.sum(rows, labels, index)
    limit = max(3.0, 3 * float(np.median(widths)))
    thick = np.concatenate([[False], widths > limit])[labels]  # (H,) rows of thick runs
    peak = np.concatenate([[0.0], ndimage.maximum(proj, labels, index)])[labels]
    rows = rows & (~thick | (proj >= split * peak))
    labels, count = ndimage.label(rows)
    index = np.arange(1, count + 1)
    centres = ndimage.center_of_mass(proj * rows, labels, index)
    widths = ndimage.sum(rows, labels, index)
    return [float(c[0]) for c, w in zip(centres, widths) if w <= limit]


def group_staves(lines: list[float], cfg: ScanConfig, proj: np.ndarray | None = None,
                 space: float | None = None) -> list[Staff]:
    """Staves from staff-line rows: clusters of lines about one staff space apart.

    The staff space is the median gap between lines (four of every five gaps lie
    inside a staff). Lines closer than half a space are one line; a cluster of 5
    lines is a staff, of more than 5 its most evenly spaced 5, of 4 a staff whose
    missing outer line is put on the side with more ink in ``proj`` (rows' ink).
    """
    lines = _merge_close(sorted(lines), proj)
    if len(lines) < 4:
        return []
    space = space or float(np.median(np.diff(lines)))
    clusters, current = [], [lines[0]]
    for y in lines[1:]:
        if y - current[-1] <= cfg.staff_gap_ratio * space:
            current.append(y)
        else:
            clusters.append(current)
            current = [y]
    clusters.append(current)
    staves = [_fit_staff(c, space, cfg, proj) for c in clusters if len(c) >= 4]
    return [s for s in staves if s is not None]


def _merge_close(lines: list[float], proj: np.ndarray | None = None) -> list[float]:
    """Lines closer than half the median gap to the first of their group are one line, at
    the groups' mean weighted by ``proj`` (rows' ink) where given."""
    if not lines:
        return []
    gaps = np.diff(lines)
    limit = 0.5 * float(np.median(gaps)) if gaps.size else 0.0
    merged = [[lines[0]]]
    for y in lines[1:]:
        if y - merged[-1][0] < limit:
            merged[-1].append(y)
        else:
            merged.append([y])
    if proj is None:
        return [float(np.mean(m)) for m in merged]
    weights = [proj[np.clip(np.round(m).astype(np.int64), 0, len(proj) - 1)] + 1e-9 for m in merged]
    return [float(np.average(m, weights=w)) for m, w in zip(merged, weights)]


def _fit_staff(cluster: list[float], space: float, cfg: ScanConfig, proj: np.ndarray | None) -> Staff | None:
    if len(cluster) == 4:  # one outer line too faint: add it where the page has more ink
        up, down = cluster[0] - space, cluster[-1] + space
        if proj is not None and 0 <= up and down < len(proj):
            pick_up = proj[int(round(up))] >= proj[int(round(down))]
        else:
            pick_up = proj is not None and 0 <= up
        cluster = [up, *cluster] if pick_up else [*cluster, down]
    best = _even_five(np.asarray(cluster[:12], dtype=np.float64), space, cfg, proj)
    return None if best is None else Staff(tuple(float(y) for y in best))


def _even_five(ys: np.ndarray, space: float, cfg: ScanConfig, proj: np.ndarray | None) -> np.ndarray | None:
    """The 5 of ``ys`` that lie within ``staff_fit`` spaces of evenly spaced rows about one
    staff space apart; of several such, the inkiest (staff lines run the whole staff, beams
    and brackets in the cluster do not). None if no 5 do."""
    combos = np.asarray(list(itertools.combinations(range(len(ys)), 5)))
    if combos.size == 0:
        return None
    sets = ys[combos]  # (C, 5)
    k = np.arange(5) - 2.0
    slope = sets @ k / 10.0  # least-squares line through (k, y)
    resid = np.abs(sets - sets.mean(axis=1, keepdims=True) - slope[:, None] * k).max(axis=1)
    ok = (slope > 1.5) & (slope >= 0.6 * space) & (slope <= 1.6 * space) & (resid <= cfg.staff_fit * slope)
    if not ok.any():
        return None
    weight = np.zeros(len(combos)) if proj is None else \
        proj[np.clip(np.round(sets).astype(np.int64), 0, len(proj) - 1)].sum(axis=1)
    return sets[int(np.argmax(np.where(ok, weight - resid, -np.inf)))]


def _column_cover(ink: np.ndarray, top: int, bottom: int, slack: int) -> np.ndarray:
    """(W,) fraction of rows top..bottom that are ink within ``slack`` px of each column."""
    band = ink[top: bottom + 1]
    return ndimage.maximum_filter1d(band, size=2 * slack + 1, axis=1).mean(axis=0)


def staff_extent(ink: np.ndarray, staff: Staff) -> tuple[int, int]:
    """(x0, x1): first and last column of the staff's long runs where 4 of its 5 lines are ink."""
    h, reach = ink.shape[0], max(1, int(round(staff.space / 5)))
    rows = [ink[max(0, int(round(y)) - reach): min(h, int(round(y)) + reach + 1)].any(axis=0) for y in staff.lines]
    present = np.sum(rows, axis=0) >= 4  # (W,)
    present = ndimage.binary_closing(present, structure=np.ones(int(staff.space) | 1, dtype=bool))
    labels, count = ndimage.label(present)
    if count == 0:
        return 0, 0
    sizes = ndimage.sum(present, labels, np.arange(1, count + 1))
    long = np.isin(labels, 1 + np.nonzero(sizes >= 8 * staff.space)[0])  # drop specks on the lines
    xs = np.nonzero(long if long.any() else present)[0]
    return int(xs[0]), int(xs[-1])


def barline_runs(ink: np.ndarray, upper: Staff, lower: Staff, x0: int, x1: int,
                 cfg: ScanConfig) -> list[tuple[int, int]]:
    """(left, right) of the vertical lines spanning the system in [x0 - 1 space, x1].

    Runs closer than ``merge_spaces`` merge (double bars, repeat signs). A run that
    goes on past the outer staff lines or has note heads beside it is a stem: dropped.
    """
    groups = _spanning_groups(ink, upper, lower, x0, x1, cfg, across_gap=not cfg.split_barlines)
    return [(a, b) for a, b in groups if not _stem_like(ink, upper, lower, a, b)]


def _spanning_groups(ink: np.ndarray, upper: Staff, lower: Staff, x0: int, x1: int,
                     cfg: ScanConfig, across_gap: bool = True) -> list[tuple[int, int]]:
    """Column runs that are ink over the whole system, or (``across_gap=False``) over each
    staff, the gap between them aside (editions that break bar lines between the staves)."""
    space = (upper.space + lower.space) / 2
    slack = max(1, int(round(space / 6)))
    if across_gap:
        cover = _column_cover(ink, upper.top, lower.bottom, slack)
    else:
        cover = np.minimum(_column_cover(ink, upper.top, upper.bottom, slack),
                           _column_cover(ink, lower.top, lower.bottom, slack))
    lo = max(0, int(x0 - space))
    cols = np.nonzero(cover[lo: x1 + 2] >= cfg.barline_cover)[0] + lo
    groups: list[list[int]] = []
    for x in cols:
        if groups and x - groups[-1][1] <= cfg.merge_spaces * space:
            groups[-1][1] = int(x)
        else:
            groups.append([int(x), int(x)])
    return [(a, b) for a, b in groups]


def _stem_like(ink: np.ndarray, upper: Staff, lower: Staff, left: int, right: int) -> bool:
    space = (upper.space + lower.space) / 2
    cols = slice(max(0, left - 1), right + 2)
    above = ink[max(0, int(upper.top - space)): int(upper.top - 0.3 * space), cols].any(axis=1)
    below = ink[int(lower.bottom + 0.3 * space): int(lower.bottom + space), cols].any(axis=1)
    protrudes = max(above.mean() if above.size else 0.0, below.mean() if below.size else 0.0) >= 0.9
    band = _without_staff_lines(ink, upper, lower)
    near, far = int(round(0.15 * space)), int(round(0.6 * space))
    side = max(band[:, max(0, left - far): max(0, left - near)].mean() if left > near else 0.0,
               band[:, right + near: right + far].mean() if right + far < ink.shape[1] else 0.0)
    return bool(protrudes or side >= 0.3)


def _without_staff_lines(ink: np.ndarray, upper: Staff, lower: Staff) -> np.ndarray:
    """The system's rows upper.top..lower.bottom with the staff-line rows blanked."""
    band = ink[upper.top: lower.bottom + 1].copy()
    reach = max(1, int(round(upper.space / 6)))
    for y in (*upper.lines, *lower.lines):
        r = int(round(y)) - upper.top
        band[max(0, r - reach): r + reach + 1] = False
    return band


def repeat_dots_right(ink: np.ndarray, staff: Staff, right: int) -> bool:
    """True if the two middle spaces of ``staff`` hold dots just right of x ``right`` (a repeat start)."""
    space, (l0, l1, l2, l3, l4) = staff.space, staff.lines
    window = ink[:, right + 1: int(right + 1.2 * space)].copy()
    window[window.mean(axis=1) >= 0.9] = False  # staff-line rows (wherever the page curves them)

    def inky(y_a: float, y_b: float) -> bool:
        y = (y_a + y_b) / 2
        return bool(window[int(y - 0.2 * space): int(y + 0.2 * space) + 1].sum() >= 2)

    return inky(l1, l2) and inky(l2, l3) and not inky(l0, l1) and not inky(l3, l4)


# ------------------------------------------------------------------ systems
def detect_systems(gray: np.ndarray, cfg: ScanConfig, page: int = 0, name: str = "page") -> list[ScanSystem]:
    """Every system of a deskewed grayscale page in reading order (top to bottom), whatever
    its staff count; ImageError if it holds none."""
    if gray.ndim != 2 or min(gray.shape) < 32:
        raise ImageError(f"{name} is empty or too small (shape {gray.shape})")
    ink = ink_mask(gray)
    if ink.mean() < 1e-4:
        raise ImageError(f"{name} is blank (no ink); expected a page of music")
    staves = find_staves(ink, cfg)
    groups = group_systems(ink, staves, cfg)
    if not groups:
        raise ImageError(f"{name}: no system found ({len(staves)} staves; expected 5-line staves "
                         "joined by bar lines, or single staves with bar lines)")
    systems = []
    for i, (members, x0, x1) in enumerate(groups):
        upper, lower = members[0], members[-1]
        bars, measures = system_measures(ink, upper, lower, x0, x1, cfg)
        above = groups[i - 1][0][-1].bottom if i else None
        below = groups[i + 1][0][0].top if i + 1 < len(groups) else None
        box = crop_box(ink, upper, lower, x0, x1, (above, below), cfg)
        systems.append(ScanSystem(page, i, tuple(members), x0, x1, tuple(bars), measures, box))
    return systems


def group_systems(ink: np.ndarray, staves: list[Staff], cfg: ScanConfig) -> list[tuple[list[Staff], int, int]]:
    """(staves, x0, x1) of each system: runs of consecutive staves each joined to the next by
    a vertical line spanning both (start line, brace or bracket line, barline). A staff joined
    to neither neighbour is a system alone only if it has a bar line of its own."""
    extents = [staff_extent(ink, s) for s in staves]
    groups: list[list[int]] = []
    for k in range(len(staves)):
        if groups and _joined(ink, staves[k - 1], staves[k], extents[k - 1], extents[k], cfg):
            groups[-1].append(k)
        else:
            groups.append([k])
    out = []
    for members in groups:
        x0, x1 = min(extents[k][0] for k in members), max(extents[k][1] for k in members)
        first = staves[members[0]]
        if x1 <= x0 or (len(members) == 1 and not barline_runs(ink, first, first, x0, x1, cfg)):
            continue  # an ossia fragment, a vignette or a rule: no system
        out.append(([staves[k] for k in members], x0, x1))
    return out


def _joined(ink: np.ndarray, upper: Staff, lower: Staff, a: tuple[int, int], b: tuple[int, int],
            cfg: ScanConfig) -> bool:
    x0, x1 = min(a[0], b[0]), max(a[1], b[1])
    near = lower.top - upper.bottom <= 3 * (upper.bottom - upper.top)
    return bool(near and x1 > x0 and _spanning_groups(ink, upper, lower, x0, x1, cfg))


def system_measures(ink: np.ndarray, upper: Staff, lower: Staff, x0: int, x1: int,
                    cfg: ScanConfig) -> tuple[list[int], int]:
    """(x of the barlines right of the start line, measure count) of one system.

    Each barline closes one measure; a tail wider than ``min_measure_spaces`` after the
    last barline is one more (a measure broken across lines). A first barline that is
    a repeat start (heavy, dots on its right) within ``header_spaces`` of the staff
    start follows only clef, key and time signature: it closes no measure.
    """
    space = (upper.space + lower.space) / 2
    groups = [g for g in barline_runs(ink, upper, lower, x0, x1, cfg) if g[0] > x0 + cfg.start_spaces * space]
    if groups and _line_start_repeat(ink, upper, lower, x0, groups[0], cfg):
        groups = groups[1:]
    bars = [int(round((a + b) / 2)) for a, b in groups]
    tail = (x1 - groups[-1][1]) if groups else (x1 - x0)
    return bars, len(bars) + int(tail > cfg.min_measure_spaces * space)


def _line_start_repeat(ink: np.ndarray, upper: Staff, lower: Staff, x0: int, group: tuple[int, int],
                       cfg: ScanConfig) -> bool:
    space = (upper.space + lower.space) / 2
    left, right = group
    heavy = right - left >= 0.3 * space
    early = left - x0 <= cfg.header_spaces * space
    return heavy and early and (repeat_dots_right(ink, upper, right) or repeat_dots_right(ink, lower, right))


def crop_box(ink: np.ndarray, upper: Staff, lower: Staff, x0: int, x1: int,
             neighbours: tuple[int | None, int | None], cfg: ScanConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) around the system's ink, not past halfway to its neighbours.
    Where it has no neighbour (above the first system, below the last) the ink ends at the
    first white gap of ``edge_gap_spaces`` (a title, a footnote, a page number stay out)."""
    h, w = ink.shape
    space = (upper.space + lower.space) / 2
    reach = 12 * space  # ledger lines and dynamics stay within this of the staves
    above, below = neighbours
    lo = int(max(0, upper.top - reach, (above + upper.top) / 2 if above is not None else 0))
    hi = int(min(h, lower.bottom + reach, (lower.bottom + below) / 2 if below is not None else h))
    left, right = max(0, int(x0 - 2 * space)), min(w, int(x1 + space))
    inky = ink[lo:hi, left:right].sum(axis=1) >= 2
    gap = max(1, int(round(cfg.edge_gap_spaces * space)))
    if above is None:
        n = max(0, upper.top - lo)
        inky[: n - _gap_edge(inky[:n][::-1], gap).size] = False
    if below is None:
        start = min(len(inky), lower.bottom - lo + 1)
        inky[start + _gap_edge(inky[start:], gap).size:] = False
    rows = np.nonzero(inky)[0] + lo
    margin = int(round(cfg.margin_spaces * space))
    top = max(0, min(int(rows[0]), upper.top) - margin) if rows.size else upper.top - margin
    bottom = min(h, max(int(rows[-1]), lower.bottom) + margin + 1) if rows.size else lower.bottom + margin
    return left, top, right, bottom


def _gap_edge(inky: np.ndarray, gap: int) -> np.ndarray:
    """``inky`` (rows, going away from the staves) up to the first run of ``gap`` white rows."""
    white = np.concatenate([~inky, [True] * gap]).astype(np.int64)
    runs = np.convolve(white, np.ones(gap, dtype=np.int64), mode="valid")  # white rows in each window
    return inky[: int(np.argmax(runs >= gap))]


def crop(gray: np.ndarray, system: ScanSystem) -> np.ndarray:
    left, top, right, bottom = system.box
    return gray[top:bottom, left:right]


def page_systems(gray: np.ndarray, cfg: ScanConfig, page: int = 0, name: str = "page",
                 staves: tuple[int, ...] | None = PIANO) -> tuple[np.ndarray, list[ScanSystem]]:
    """(deskewed page, its systems in reading order): :func:`detect_systems` after :func:`deskew`,
    the one page detector. ``staves``: the staff counts kept (default: piano systems; None:
    all); ImageError if none is left."""
    if gray.ndim == 2 and gray.size and ink_mask(gray).any():
        gray = deskew(gray, estimate_skew(ink_mask(gray), cfg))
    found = detect_systems(gray, cfg, page, name)
    kept = [s for s in found if staves is None or s.n_staves in staves]
    if not kept:
        counts = ", ".join(str(s.n_staves) for s in found)
        raise ImageError(f"{name}: no piano system found (systems of {counts} staves; expected "
                         "two 5-line staves joined by bar lines)")
    return gray, kept


# ------------------------------------------------------------------ measures and time
def assign_measures(counts: list[int], total: int, tolerance: int) -> list[tuple[int, int]]:
    """1-based inclusive (first, last) measure ordinals of consecutive systems with ``counts`` measures.

    Counting starts at measure 1 with the first system. The scan's count may differ
    from the score's ``total`` (a final partial bar the score splits off, a missed
    barline): within ``tolerance`` ranges are clipped to 1..total and the last system
    ends at ``total``; beyond it BadInputError.
    """
    found = int(sum(counts))
    if found == 0 or abs(found - total) > tolerance:
        raise BadInputError(f"scan has {found} measures, the score {total} (tolerance {tolerance})")
    ends = np.minimum(np.cumsum(counts), total)  # (n,) last measure of each system
    ends[-1] = total
    starts = np.concatenate([[1], ends[:-1] + 1])
    return [(int(min(a, total)), int(max(min(a, total), b))) for a, b in zip(starts, ends)]


def measure_quarters(musicxml: str | Path) -> np.ndarray:
    """(N,) length in quarter notes of each measure of a one-part score (its furthest voice)."""
    part = ET.parse(str(musicxml)).getroot().find("part")
    divisions, out = 1.0, []
    for measure in [] if part is None else part.findall("measure"):
        divisions = float(measure.findtext("attributes/divisions") or divisions)
        out.append(content_divisions(measure) / divisions)
    return np.asarray(out, dtype=np.float64)


def printed_measures(musicxml: str | Path) -> list[int]:
    """0-based ordinals, in the score, of the first performance of each printed bar, in print order.

    A score whose repeats are written out (a kern expansion list such as
    ``*>[A,B,B1,B,B2,C]``) plays some bars twice, and their MusicXML ``number`` repeats
    with them. The print shows each bar once, in order of first appearance. Without
    repeated numbers this is 0, 1, ..., N - 1; unnumbered measures count as printed.
    """
    part = ET.parse(str(musicxml)).getroot().find("part")
    first: dict[str, int] = {}
    for i, measure in enumerate([] if part is None else part.findall("measure")):
        first.setdefault(measure.get("number") or f"#{i}", i)
    return list(first.values())


def printed_span(times: np.ndarray, printed: list[int], first: int, last: int) -> tuple[float, float] | None:
    """Performance seconds of printed bars ``first``..``last`` (1-based, inclusive); None when their
    performance is not one stretch (a repeat goes back inside them)."""
    ordinals = printed[first - 1: last]
    if any(b != a + 1 for a, b in zip(ordinals, ordinals[1:])):
        return None
    return float(times[ordinals[0]]), float(times[ordinals[-1] + 1])


def measure_times(systems: list[dict], quarters: np.ndarray) -> np.ndarray:
    """(N + 1,) performance seconds at which each measure starts (and the last one ends).

    ``systems``: the corpus piece's rendered systems (``start``, ``end`` seconds and
    1-based inclusive ``measures``); a system's span is shared among its measures in
    proportion to their length in quarters. Boundaries no system covers are interpolated.
    """
    n = len(quarters)
    times = np.full(n + 1, np.nan)
    weights = np.maximum(quarters, 1e-3)
    for s in systems:
        first, last = s["measures"]
        w = weights[first - 1: last]
        cum = np.concatenate([[0.0], np.cumsum(w)]) / w.sum()
        times[first - 1: last + 1] = s["start"] + cum * (s["end"] - s["start"])
    known = np.nonzero(np.isfinite(times))[0]
    if known.size < 2:
        raise BadInputError("the piece has no timed systems")
    return np.interp(np.arange(n + 1), known, times[known])


def piece_measure_times(piece_dir: str | Path) -> np.ndarray:
    """:func:`measure_times` of a built corpus piece (pieces/<id>/piece.json and score.musicxml)."""
    piece_dir = Path(piece_dir)
    meta = json.loads((piece_dir / "piece.json").read_text(encoding="utf-8"))
    return measure_times(meta["systems"], measure_quarters(piece_dir / "score.musicxml"))
