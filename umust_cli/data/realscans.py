"""Real scanned systems of the printed source editions, paired with the notation of their measures.

For every piece of a built corpus whose source score has a scan of its printed edition
(``<collection>/reference-edition/<stem>.pdf`` beside ``<collection>/kern/<stem>.krn``),
the scan's pages are split into piano systems and their bar lines counted
(:mod:`umust_cli.data.scans`). The print shows each bar once, so the counts are matched
against the piece's *printed* bars (``score.musicxml`` with the bars that a written-out
repeat plays again left out, :func:`printed_order`)::

    scan systems (bars b_1 .. b_n)  ==  printed bars 1..N   (sum b_k == N exactly)
      -> system k = printed bars [b_1 + ... + b_{k-1} + 1, b_1 + ... + b_k]

A piece is paired only when the bar counts agree exactly, with the ordinary bar-line
count or, failing that, one that also counts bar lines broken between the staves; any
other piece is logged with the counts, never guessed. Per paired system the piece folder
gets ``realscans/NNN.png`` (the deskewed crop), ``NNN.musicxml`` and ``NNN.lmx`` (exactly
those bars); its row goes to ``realscans.jsonl`` beside ``manifest.jsonl`` with split
``realscan_<split>``: the piece's own corpus split, so that a piece's rendered and
scanned systems are always on the same side (held-out pieces: ``realscan_test``).
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

from umust_cli.data import corpus as corpus_io
from umust_cli.data import render, scans
from umust_cli.errors import BadInputError, ImageError

FOLDER = "realscans"  # pieces/<id>/realscans/
RESULT = "result.json"  # pieces/<id>/realscans/result.json: the piece's rows and what was not paired


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
    return kept


def printed_root(root: ET.Element, ordinals: list[int]) -> ET.Element:
    """A copy of ``root`` whose part holds only the bars ``ordinals``, in that order."""
    part = root.find("part")
    measures = part.findall("measure")
    out = copy.copy(root)
    out[:] = [child for child in root if child.tag != "part"]
    new_part = ET.SubElement(out, "part", dict(part.attrib))
    new_part.extend(measures[i] for i in ordinals)
    return out


def count_targets(root: ET.Element) -> list[tuple[str, list[int]]]:
    """(name, bar ordinals) the scan's count may match: the printed bars, and every bar of
    the score when that differs (a repeat the print writes out too)."""
    printed = printed_order(root)
    every = list(range(corpus_measures(root)))
    return [("printed", printed)] + ([("all", every)] if every != printed else [])


def corpus_measures(root: ET.Element) -> int:
    return render.measure_count(root)


# ------------------------------------------------------------------ scans
@dataclass(frozen=True)
class ScanPage:
    image: np.ndarray  # the deskewed page, uint8 (H, W)
    systems: list[scans.ScanSystem]
    error: str | None = None  # why no system was found on it


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


def match_counts(counts: list[int], targets: list[tuple[str, list[int]]]) -> tuple[str, list[tuple[int, int]]] | None:
    """(target name, 1-based inclusive bar ranges of the systems) for the first target whose
    bar count equals the scan's exactly; None when none does."""
    for name, ordinals in targets:
        if counts and min(counts) > 0 and sum(counts) == len(ordinals):
            ends = np.cumsum(counts)
            return name, [(int(e - c + 1), int(e)) for c, e in zip(counts, ends)]
    return None


def pair_scan(pdf: Path, targets: list[tuple[str, list[int]]],
              cfg: scans.ScanConfig) -> tuple[list[ScanPage], dict, list[tuple[int, int]] | None]:
    """(pages, how they were counted, bar ranges or None): the ordinary bar-line count first,
    then one that also counts bar lines broken between the staves."""
    modes = (True,) if cfg.split_barlines else (False, True)
    tried, images = {}, scans.load_pages(pdf, cfg.page_width_px)  # ImageError for an unreadable PDF
    for n, split in enumerate(modes):
        pages = scan_pages(images, replace(cfg, split_barlines=split), pdf.name)
        images = [page.image for page in pages]  # deskewed once: the second count skips the skew search
        cfg = replace(cfg, max_skew_deg=0.0) if n == 0 else cfg
        counts = [s.measures for page in pages for s in page.systems]
        tried["split_barlines" if split else "ordinary"] = {"systems": len(counts), "bars": int(sum(counts)),
                                                           "per_page": [[s.measures for s in pg.systems]
                                                                        for pg in pages]}
        found = match_counts(counts, targets)
        if found is not None:
            return pages, {"split_barlines": split, "target": found[0], "tried": tried}, found[1]
    return pages, {"tried": tried}, None


# ------------------------------------------------------------------ one piece
def pair_piece(corpus: Path, row: dict, pdf: Path, cfg: RealScanConfig) -> dict:
    """Pair one piece's scan with its notation, write its files; returns (and saves as
    realscans/result.json) {"rows": [...], "unpaired": {...} | None, "scan_systems": n, ...}."""
    from umust_cli.io import write_json_atomic

    piece_dir = Path(corpus, corpus_io.PIECES, row["piece_id"])
    root = ET.parse(piece_dir / "score.musicxml").getroot()
    targets = count_targets(root)
    out = {"piece_id": row["piece_id"], "pdf": str(pdf), "printed_measures": len(targets[0][1]),
           "score_measures": corpus_measures(root), "rows": [], "unpaired": None}
    try:
        pages, how, ranges = pair_scan(pdf, targets, cfg.scan)
    except BadInputError as e:  # an unreadable PDF
        out.update(scan_systems=0, unpaired={"reason": f"{type(e).__name__}: {e}"})
    else:
        out.update(scan_systems=sum(len(p.systems) for p in pages), count=how,
                   pages_without_systems={i + 1: p.error for i, p in enumerate(pages) if p.error})
        if ranges is None:
            out["unpaired"] = {"reason": "bar count mismatch", "scan_bars": {k: v["bars"] for k, v in
                                                                               how["tried"].items()},
                               "score_bars": {name: len(o) for name, o in targets}}
        else:
            ordinals = dict(targets)[how["target"]]
            out["rows"] = _write_systems(corpus, row, pdf, pages, ranges, printed_root(root, ordinals),
                                         ordinals, how["split_barlines"], cfg)
    write_json_atomic(piece_dir / FOLDER / RESULT, out)
    return out


def _write_systems(corpus: Path, row: dict, pdf: Path, pages: list[ScanPage], ranges: list[tuple[int, int]],
                   printed: ET.Element, ordinals: list[int], split_barlines: bool, cfg: RealScanConfig) -> list[dict]:
    from umust_cli.codecs.notation import NotationCodec
    from umust_cli.io import write_text_atomic

    piece_dir = Path(corpus, corpus_io.PIECES, row["piece_id"])
    times = _measure_times(piece_dir)
    codec = NotationCodec(cfg.flavor)
    systems = [(p, page, s) for p, page in enumerate(pages) for s in page.systems]
    out = []
    for k, ((p, page, system), (first, last)) in enumerate(zip(systems, ranges)):
        stem = piece_dir / FOLDER / f"{k:03d}"
        render.write_png(stem.with_suffix(".png"), scans.crop(page.image, system))
        write_text_atomic(stem.with_suffix(".musicxml"), render.slice_musicxml(printed, first - 1, last))
        write_text_atomic(stem.with_suffix(".lmx"), codec.to_lmx(stem.with_suffix(".musicxml")) + "\n")
        out.append(_row(corpus, row, k, stem, (first, last), ordinals, times)
                   | {"scan": {"pdf": str(pdf), "page": p + 1, "system_on_page": system.index + 1,
                               "box": [int(v) for v in system.box], "barlines": [int(x) for x in system.barlines],
                               "split_barlines": split_barlines}})
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
    unless ``cfg.redo``). Rewrites realscans.jsonl and realscans_errors.jsonl; returns the summary."""
    corpus = Path(corpus)
    pieces = _corpus_pieces(corpus)
    if not pieces:
        raise BadInputError(f"{corpus} has no pieces in its manifest")
    results = []
    for row in pieces:
        result = _piece_result(corpus, row, scores, cfg)
        results.append(result)
        if on_piece is not None:
            on_piece(result)
    write_indexes(corpus, results)
    return summarize(results)


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
    from umust_cli.io import write_text_atomic

    rows = [r for result in results for r in result["rows"]]
    errors = [{k: v for k, v in result.items() if k != "rows"} for result in results if result["unpaired"]]
    write_text_atomic(corpus / corpus_io.REALSCAN_MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    write_text_atomic(corpus / "realscans_errors.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))


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
