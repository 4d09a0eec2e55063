"""`umust dataset pages`: score pages and PDFs split into their systems, one PNG per system.

Every page goes through the one page detector (:func:`umust_cli.data.scans.page_systems`,
as ``umust translate`` and ``umust retrieve index`` use it). The systems of an input are
written in reading order (page by page, top to bottom)::

    DIR/pieces/<id>/systems/NNN.png    the crop of each system (NNN counts over the whole input)
    DIR/manifest.jsonl                 one image-only row per system

A row has the keys of ``umust dataset build``'s rows where they overlap (``piece_id``,
``source``, ``split``, ``system``, ``png``, ``start``/``end``/``duration`` 0 as imported image
rows) plus ``dataset`` ("pages"), ``held_out``, ``page`` (1-based), ``page_system`` (its place
on the page, every system counted), ``staves``, ``bars`` (bar lines counted) and ``box``
(left, top, right, bottom in the page rasterized ``page_width_px`` wide and levelled). The
id is the input's file name without its suffix. Re-running replaces the rows and PNGs of
the inputs given and keeps those of other inputs already in DIR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from umust_cli.data import render, scans
from umust_cli.data.corpus import MANIFEST, read_jsonl
from umust_cli.data.sources import origin_held_out_reason
from umust_cli.errors import BadInputError, ImageError
from umust_cli.io import write_jsonl_atomic


@dataclass(frozen=True)
class PagesConfig:
    scan: scans.ScanConfig = field(default_factory=scans.ScanConfig)
    staves: tuple[int, ...] | None = None  # staff counts of the systems kept; None: every system
    split: str = "test"  # the rows' split (held-out repertoire is test whatever this says)


def piece_id(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem).strip("._") or "page"


def split_document(path: Path, out: Path, cfg: PagesConfig) -> list[dict]:
    """Write the systems of one PDF or page image under ``out``; their manifest rows. Pages
    without a system (title pages, text) are skipped; ImageError when no page has one."""
    path, pid = Path(path), piece_id(path)
    held_out = origin_held_out_reason(str(path)) is not None
    folder = out / "pieces" / pid / "systems"
    for old in folder.glob("*.png") if folder.is_dir() else []:
        old.unlink()  # a redone input: no PNG of its previous run stays behind
    rows: list[dict] = []
    for number, gray in enumerate(scans.load_pages(path, cfg.scan.page_width_px)):
        try:
            page, found = scans.page_systems(gray, cfg.scan, number, f"{path.name} page {number + 1}", cfg.staves)
        except ImageError:
            continue
        for system in found:
            png = f"pieces/{pid}/systems/{len(rows):03d}.png"
            render.write_png(out / png, scans.crop(page, system))
            rows.append({"dataset": "pages", "piece_id": pid, "source": str(path),
                         "split": "test" if held_out else cfg.split, "held_out": held_out,
                         "system": len(rows), "page": number + 1, "page_system": system.index,
                         "staves": system.n_staves, "bars": system.measures,
                         "box": [int(v) for v in system.box], "png": png,
                         "start": 0.0, "end": 0.0, "duration": 0.0})
    if not rows:
        kind = "system" if cfg.staves is None else f"system of {' or '.join(map(str, cfg.staves))} staves"
        raise ImageError(f"no {kind} found on any page of {path}")
    return rows


def write_pages(paths: list[Path], out: Path, cfg: PagesConfig,
                on_input: Callable[[Path], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Split every input into ``out`` and rewrite its manifest; (rows written, failures with
    ``input`` and ``error``). A bad input is listed and the others go on."""
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for path in paths:
        try:
            rows.extend(split_document(path, out, cfg))
        except BadInputError as e:
            failed.append({"input": str(path), "error": str(e)})
        if on_input is not None:
            on_input(path)
    redone = {piece_id(p) for p in paths}
    kept = [r for r in read_jsonl(out / MANIFEST) if r.get("piece_id") not in redone] \
        if (out / MANIFEST).is_file() else []
    write_jsonl_atomic(out / MANIFEST, kept + rows)
    return rows, failed
