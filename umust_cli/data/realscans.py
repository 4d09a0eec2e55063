"""Real scanned systems of the printed source editions, paired with the notation of their bars.

For every piece of a built corpus whose source score has a scan of its printed edition
(``<collection>/reference-edition/<stem>.pdf`` beside ``<collection>/kern/<stem>.krn``),
the scan's pages are split into piano systems and their bar lines counted
(:mod:`umust_cli.data.scans`). The print shows each bar once, so scans are matched against
the piece's *printed* bars: ``score.musicxml`` without the bars that a written-out repeat
plays again (:func:`printed_order`). Two ways, both exact, never a guess:

* **lines** -- the kern records where the edition's lines break (``!!LO:LB:g=original``;
  :func:`edition_lines`). When the scan has as many systems as the edition has lines,
  system k is paired with line k if its bar count is that line's (ordinary count, else one
  that also counts bar lines broken between the staves); each other system is logged.
* **total** -- without recorded line breaks: every system, when the scan's bar count equals
  the piece's printed bar count exactly; consecutive systems take consecutive bars::

      system k = printed bars [b_1 + ... + b_{k-1} + 1, b_1 + ... + b_k]

  Not for a score of repeated sections (a kern expansion list playing a section twice,
  ``*>[A,B,B,C]``; :func:`repeat_sections`): a print may order or cut such sections otherwise
  and still have the same total (a by-eye check found one such Chopin mazurka), and then every
  system after the difference is shifted.

Per paired system the piece folder gets ``realscans/NNN.png`` (the deskewed crop),
``NNN.musicxml`` and ``NNN.lmx`` (exactly those bars); its row goes to ``realscans.jsonl``
beside ``manifest.jsonl`` with split ``realscan_<split>``: the piece's own corpus split, so that
a piece's rendered and scanned systems are always on the same side (held-out pieces:
``realscan_test``). ``realscans_errors.jsonl`` lists every piece or system not paired, with why.
"""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from umust_cli.codecs.notation import NotationCodec
from umust_cli.data import corpus as corpus_io
from umust_cli.data import render, scans, sources
from umust_cli.errors import BadInputError, ImageError
from umust_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

FOLDER = "realscans"  # pieces/<id>/realscans/
RESULT = "result.json"  # pieces/<id>/realscans/result.json: the piece's rows and what was not paired
INDEX_EVERY = 10  # pieces between rewrites of the indexes
REPEAT_SECTIONS = "no recorded lines, and repeated sections: no total-count pairing"


@dataclass(frozen=True)
class RealScanConfig:
    scan: scans.ScanConfig = field(default_factory=scans.ScanConfig)
    flavor: str = "core"  # LMX flavor of the .lmx files
    redo: bool = False  # pair pieces again that have a result


# ------------------------------------------------------------------ sources
def find_pdf(row: dict, scores: list[Path]) -> Path | None:
    """The scan of a corpus piece's printed edition, or None.

    With ``scores`` (collection folders holding ``reference-edition/``): the PDF whose
    ``<folder name>-<stem>`` is the piece id. Without: ``../reference-edition/<stem>.pdf``
    beside the piece's source file (its ``source`` field)."""
    if scores:
        for folder in scores:
            for pdf in sorted(Path(folder).glob("reference-edition/*.pdf")):
                if _piece_id(folder, pdf.stem) == row["piece_id"]:
                    return pdf
        return None
    source = Path(str(row.get("source", "")))
    pdf = source.parent.parent / "reference-edition" / f"{source.stem}.pdf"
    return pdf if source.name and pdf.is_file() else None


def _piece_id(folder: Path, stem: str) -> str:
    """The corpus builder's id of <folder>/kern/<stem>.krn (umust_cli.data.sources)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(folder).resolve().name}-{stem}").strip("._")


# ------------------------------------------------------------------ notation
def printed_order(root: ET.Element) -> list[int]:
    """0-based ordinals of the bars of a one-part score as printed, in order.

    A bar whose number was seen before is a written-out repeat (kern expansion lists) and
    is left out; unnumbered bars (number "0" or none: pickups, bars split by a repeat
    sign) are printed, unless the bar before them was left out (they belong to the repeat).
    """
    part = root.find("part")
    seen: set[str] = set()
    kept, previous_kept = [], True
    for i, measure in enumerate([] if part is None else part.findall("measure")):
        number = (measure.get("number") or "0").strip()
        if number in ("", "0"):
            keep = previous_kept
        else:
            keep = number not in seen
            seen.add(number)
        if keep:
            kept.append(i)
        previous_kept = keep
    if kept and _empty_tail(part.findall("measure"), kept[-1]):
        kept.pop()  # an unnumbered bar of rests after the final bar line (music21's kern reader adds one)
    return kept


def _empty_tail(measures: list[ET.Element], i: int) -> bool:
    m = measures[i]
    return i == len(measures) - 1 and i > 0 and (m.get("number") or "0") == "0" and all(
        n.find("rest") is not None for n in m.findall("note"))


def printed_root(root: ET.Element, ordinals: list[int]) -> ET.Element:
    """A copy of ``root`` whose part holds only the bars ``ordinals``, in that order."""
    part = root.find("part")
    measures = part.findall("measure")
    out = copy.copy(root)
    out[:] = [child for child in root if child.tag != "part"]
    new_part = ET.SubElement(out, "part", dict(part.attrib))
    new_part.extend(measures[i] for i in ordinals)
    return out


# ------------------------------------------------------------------ the edition's lines
_BREAK = re.compile(r"^!!LO:(?:LB|PB):.*\bg=original\b")


@dataclass(frozen=True)
class EditionLines:
    """The printed edition's systems as the kern records them (``!!LO:LB:g=original`` before a
    line's first bar): the 0-based bar (segment) indexes each line shows, in print order."""

    lines: list[list[int]]
    broken: set[int]  # bars that a line break cuts in two (shown on two lines)
    bars: int  # bars in the kern (segments between bar lines that hold data)


def edition_lines(kern: Path) -> EditionLines | None:
    """:class:`EditionLines` of a kern file with original line breaks; None without any."""
    try:
        text = Path(kern).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    starts, broken, line, seg, pending = [], set(), 0, None, False  # seg: the open bar's line, None if empty
    for raw in text.splitlines():
        if _BREAK.match(raw):
            pending = True
        elif raw.startswith("="):
            if seg is not None:
                starts.append(seg)
            seg, line, pending = None, line + int(pending and bool(starts)), False
        elif raw.strip() and not raw.startswith(("*", "!")):
            if pending:  # a break inside a bar: the bar is on two lines
                line, pending = line + int(bool(starts) or seg is not None), False
                broken.update({len(starts)} if seg is not None else set())
            seg = line if seg is None else seg
    if seg is not None:
        starts.append(seg)
    if line == 0:
        return None
    lines: list[list[int]] = [[] for _ in range(line + 1)]
    for j, k in enumerate(starts):
        lines[k].append(j)
        if j in broken and k + 1 < len(lines):
            lines[k + 1].append(j)
    return EditionLines([sorted(x) for x in lines if x], broken, len(starts))


def repeat_sections(kern: Path) -> bool:
    """True if the kern file's expansion list (``*>[A,B,B,C]``) plays a section more than once."""
    try:
        text = Path(kern).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for raw in text.splitlines():
        found = _EXPANSION.match(raw)
        labels = found.group(1).split(",") if found else []
        if len(labels) != len(set(labels)):
            return True
    return False


_EXPANSION = re.compile(r"^\*>\[([^\]]*)\]")


# ------------------------------------------------------------------ scans
@dataclass(frozen=True)
class ScanPage:
    image: np.ndarray  # the deskewed page, uint8 (H, W)
    systems: list[scans.ScanSystem]
    error: str | None = None  # why no system was found on it


@dataclass(frozen=True)
class Paired:
    page: ScanPage
    system: scans.ScanSystem
    bars: tuple[int, int]  # 1-based inclusive printed bars
    split_barlines: bool  # counted with bar lines broken between the staves


def scan_pages(images: list[np.ndarray], cfg: scans.ScanConfig, name: str) -> list[ScanPage]:
    """Every page with its systems (``images``: rasterized pages of the PDF ``name``); a page
    without systems (a title, a blank) is kept with its reason."""
    pages = []
    for p, gray in enumerate(images):
        try:
            image, found = scans.page_systems(gray, cfg, p, f"{name} page {p + 1}")
        except ImageError as e:
            pages.append(ScanPage(gray, [], str(e)))
        else:
            pages.append(ScanPage(image, found))
    return pages


class Counts:
    """A PDF's pages counted the ordinary way, and (on first use) with bar lines broken between the
    staves counted too, on the same deskewed pages."""

    def __init__(self, pdf: Path, cfg: scans.ScanConfig) -> None:
        self.pdf, self.cfg = pdf, cfg
        self.ordinary = scan_pages(scans.load_pages(pdf, cfg.page_width_px), cfg, pdf.name)  # ImageError
        self._split: list[ScanPage] | None = None

    @property
    def split(self) -> list[ScanPage]:
        if self._split is None:
            cfg = replace(self.cfg, split_barlines=True, max_skew_deg=0.0)  # pages are deskewed already
            self._split = scan_pages([p.image for p in self.ordinary], cfg, self.pdf.name)
        return self._split

    def systems(self, split: bool) -> list[tuple[ScanPage, scans.ScanSystem]]:
        return [(page, s) for page in (self.split if split else self.ordinary) for s in page.systems]


def pair_by_lines(counts: Counts, lines: EditionLines) -> tuple[list[Paired], dict]:
    """Scan system k <-> the edition's line k (same number of systems), paired when its bar count
    (ordinary, else with broken bar lines) is the line's; (pairs, what was not paired and why)."""
    ordinary, split = counts.systems(False), None
    if len(ordinary) != len(lines.lines):
        return [], {"reason": "system count mismatch", "scan_systems": len(ordinary),
                    "edition_lines": len(lines.lines)}
    pairs, missed = [], {}
    for k, ((page, system), bars) in enumerate(zip(ordinary, lines.lines)):
        if lines.broken & set(bars):
            missed[k] = "a bar of this line is broken across lines"
            continue
        found = (page, system) if system.measures == len(bars) else None
        if found is None:
            split = split if split is not None else counts.systems(True)
            alt = split[k] if len(split) == len(ordinary) else None
            found = alt if alt is not None and alt[1].measures == len(bars) else None
            if found is None:
                missed[k] = f"{system.measures} bars counted, the edition's line has {len(bars)}"
                continue
        pairs.append(Paired(found[0], found[1], (bars[0] + 1, bars[-1] + 1), found[0] is not page))
    return pairs, {"reason": "bar count mismatch on some systems", "systems": missed} if missed else {}


def pair_by_total(counts: Counts, printed: int) -> tuple[list[Paired], dict]:
    """Without the edition's lines: every system, when the scan's bar count is the piece's printed
    bar count exactly (ordinary, else with broken bar lines); none otherwise."""
    tried = {}
    for split in (False, True):
        systems = counts.systems(split)
        bars = [s.measures for _, s in systems]
        tried["split_barlines" if split else "ordinary"] = int(sum(bars))
        if systems and min(bars) > 0 and sum(bars) == printed:
            ends = np.cumsum(bars)
            return [Paired(page, s, (int(e - c + 1), int(e)), split)
                    for (page, s), c, e in zip(systems, bars, ends)], {}
    return [], {"reason": "bar count mismatch", "scan_bars": tried, "printed_bars": printed}


# ------------------------------------------------------------------ one piece
def pair_piece(corpus: Path, row: dict, pdf: Path, cfg: RealScanConfig) -> dict:
    """Pair one piece's scan with its notation, write its files; returns (and saves as
    realscans/result.json) {"rows": [...], "unpaired": {...} | None, "scan_systems": n, ...}."""
    piece_dir = Path(corpus, corpus_io.PIECES, row["piece_id"])
    root = ET.parse(piece_dir / "score.musicxml").getroot()
    printed = printed_order(root)
    kern = pdf.parent.parent / "kern" / f"{pdf.stem}.krn"
    lines = edition_lines(kern)
    usable = lines is not None and lines.bars == len(printed)
    sections = not usable and repeat_sections(kern)  # no total rule for them
    out = {"piece_id": row["piece_id"], "pdf": str(pdf), "printed_measures": len(printed),
           "edition_lines": len(lines.lines) if lines else None, "kern_bars": lines.bars if lines else None,
           "method": "lines" if usable else "none" if sections else "total", "rows": [], "unpaired": None}
    try:
        counts = Counts(pdf, cfg.scan)
    except BadInputError as e:  # an unreadable PDF
        out.update(scan_systems=0, unpaired={"reason": f"{type(e).__name__}: {e}"})
    else:
        pairs, unpaired = _pair(counts, lines if usable else None, sections, len(printed))
        out.update(scan_systems=len(counts.systems(False)), unpaired=unpaired or None,
                   per_page=[[s.measures for s in page.systems] for page in counts.ordinary],
                   pages_without_systems={i + 1: p.error for i, p in enumerate(counts.ordinary) if p.error})
        out["rows"] = _write_systems(corpus, row, pdf, pairs, printed_root(root, printed), printed, cfg)
    write_json_atomic(piece_dir / FOLDER / RESULT, out)
    return out


def _pair(counts: Counts, lines: EditionLines | None, sections: bool, printed: int) -> tuple[list[Paired], dict]:
    """By the edition's lines where the kern records them, else by the total bar count unless
    the score repeats sections (then nothing)."""
    if lines is not None:
        return pair_by_lines(counts, lines)
    if sections:
        return [], {"reason": REPEAT_SECTIONS}
    return pair_by_total(counts, printed)


def _write_systems(corpus: Path, row: dict, pdf: Path, pairs: list[Paired], printed: ET.Element,
                   ordinals: list[int], cfg: RealScanConfig) -> list[dict]:
    piece_dir = Path(corpus, corpus_io.PIECES, row["piece_id"])
    times = _measure_times(piece_dir)
    codec = NotationCodec(cfg.flavor)
    out = []
    for k, pair in enumerate(pairs):
        stem, (first, last), system = piece_dir / FOLDER / f"{k:03d}", pair.bars, pair.system
        render.write_png(stem.with_suffix(".png"), scans.crop(pair.page.image, system))
        write_text_atomic(stem.with_suffix(".musicxml"), render.slice_musicxml(printed, first - 1, last))
        write_text_atomic(stem.with_suffix(".lmx"), codec.to_lmx(stem.with_suffix(".musicxml")) + "\n")
        out.append(_row(corpus, row, k, stem, (first, last), ordinals, times)
                   | {"scan": {"pdf": str(pdf), "page": system.page + 1, "system_on_page": system.index + 1,
                               "box": [int(v) for v in system.box], "barlines": [int(x) for x in system.barlines],
                               "split_barlines": pair.split_barlines}})
    return out


def _row(corpus: Path, row: dict, k: int, stem: Path, bars: tuple[int, int], ordinals: list[int],
         times: np.ndarray | None) -> dict:
    """The manifest row of one paired system (the corpus's row format; no MIDI or WAV of its own:
    ``start``/``end`` locate its bars in the piece's ``piece_audio`` when they are one stretch)."""
    first, last = bars
    span = scans.printed_span(times, ordinals, first, last) if times is not None else None
    rel = {kind: stem.with_suffix(f".{kind}").relative_to(corpus).as_posix() for kind in ("png", "musicxml", "lmx")}
    split = "realscan_test" if corpus_io.is_held_out(row) else f"realscan_{row['split']}"
    return {"piece_id": row["piece_id"], "source": row.get("source", ""), "split": split, "system": k, **rel,
            "piece_audio": row.get("piece_audio"), "start": round(span[0], 6) if span else None,
            "end": round(span[1], 6) if span else None, "duration": round(span[1] - span[0], 6) if span else 0.0,
            "measures": [first, last], "score_measures": [ordinals[first - 1] + 1, ordinals[last - 1] + 1],
            **({"held_out": True} if corpus_io.is_held_out(row) else {})}


def _measure_times(piece_dir: Path) -> np.ndarray | None:
    try:
        return scans.piece_measure_times(piece_dir)
    except (BadInputError, OSError, KeyError, ValueError):
        return None


# ------------------------------------------------------------------ the corpus
def pair_corpus(corpus: Path, scores: list[Path], cfg: RealScanConfig,
                on_piece: Callable[[dict], None] | None = None) -> dict:
    """Pair every piece of ``corpus`` that has a scan; resumable (a piece with a result is kept
    unless ``cfg.redo``). Pieces go in a seeded shuffled order and realscans.jsonl and
    realscans_errors.jsonl are rewritten every ``INDEX_EVERY`` pieces, so that a run stopped early
    leaves indexes of a sample of every collection; returns the summary."""
    corpus = Path(corpus)
    pieces = sorted(_corpus_pieces(corpus), key=lambda r: sources.stable_unit(f"realscans:{r['piece_id']}"))
    if not pieces:
        raise BadInputError(f"{corpus} has no pieces in its manifest")
    results: dict[str, dict] = {}
    for n, row in enumerate(pieces, start=1):
        results[row["piece_id"]] = _piece_result(corpus, row, scores, cfg)
        if on_piece is not None:
            on_piece(results[row["piece_id"]])
        if n % INDEX_EVERY == 0 or n == len(pieces):
            write_indexes(corpus, [results[k] for k in sorted(results)])
    return summarize([results[k] for k in sorted(results)])


def _corpus_pieces(corpus: Path) -> list[dict]:
    """One row per piece of the corpus's built splits (its first system's row), in id order."""
    first: dict[str, dict] = {}
    for row in corpus_io.rows(corpus, corpus_io.SPLITS):
        first.setdefault(row["piece_id"], row)
    return [first[k] for k in sorted(first)]


def _piece_result(corpus: Path, row: dict, scores: list[Path], cfg: RealScanConfig) -> dict:
    cached = Path(corpus, corpus_io.PIECES, row["piece_id"], FOLDER, RESULT)
    if cached.is_file() and not cfg.redo:
        return json.loads(cached.read_text(encoding="utf-8"))
    pdf = find_pdf(row, scores)
    if pdf is None:
        return {"piece_id": row["piece_id"], "pdf": None, "rows": [], "scan_systems": 0,
                "unpaired": {"reason": "no scan of the printed edition"}}
    return pair_piece(corpus, row, pdf, cfg)


def write_indexes(corpus: Path, results: list[dict]) -> None:
    """realscans.jsonl (the rows) and realscans_errors.jsonl (every piece not paired, with why)."""
    rows = [r for result in results for r in result["rows"]]
    errors = [{k: v for k, v in result.items() if k != "rows"} for result in results if result["unpaired"]]
    write_jsonl_atomic(corpus / corpus_io.REALSCAN_MANIFEST, rows)
    write_jsonl_atomic(corpus / "realscans_errors.jsonl", errors)


def collection(piece_id: str) -> str:
    """The collection part of a piece id (``joplin-cleopha`` -> ``joplin``; the corpora's folder names)."""
    for name in ("chopin-mazurkas", "mozart-piano-sonatas", "joplin"):
        if piece_id.startswith(name + "-"):
            return name
    return piece_id.rsplit("-", 1)[0]


def summarize(results: list[dict]) -> dict:
    """Per collection and in total: pieces, pieces with a scan, paired pieces, scanned systems found,
    paired systems; plus paired systems per split."""
    table: dict[str, dict] = {}
    for result in results:
        c = table.setdefault(collection(result["piece_id"]), dict.fromkeys(
            ("pieces", "scanned_pieces", "paired_pieces", "scan_systems", "paired_systems"), 0))
        c["pieces"] += 1
        c["scanned_pieces"] += int(result.get("pdf") is not None)
        c["paired_pieces"] += int(bool(result["rows"]))
        c["scan_systems"] += int(result.get("scan_systems", 0))
        c["paired_systems"] += len(result["rows"])
    total = {k: sum(c[k] for c in table.values()) for k in next(iter(table.values()), {})}
    splits: dict[str, int] = {}
    for r in (r for result in results for r in result["rows"]):
        splits[r["split"]] = splits.get(r["split"], 0) + 1
    return {"collections": table, "total": total, "splits": dict(sorted(splits.items())),
            "unpaired": {r["piece_id"]: r["unpaired"]["reason"] for r in results if r["unpaired"]}}
