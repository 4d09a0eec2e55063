"""Sub-system alignment: where each onset of a system sits in its image.

Verovio's timemap says when every note starts (score seconds) and its SVG says where
that note's head is drawn. The system PNG is the page rastered at one pixel per SVG
pixel and trimmed to the ink with a margin, so a notehead at SVG x lands at::

    x_png = (x + page_margin) * width_px / viewbox_width - (first_ink_column - margin)

Heads that start together (a chord, both staves) become one point at their median x.
A system's alignment is the list of (x px, score seconds) points, increasing in both,
written beside the image as ``systems/NNN.align.json``. Performance time follows from
the row: ``t = score_s / tempo_factor - row["start"]`` (see :mod:`umust_cli.data.perform`).
It is the strong alignment that snippet-level training and the snippet-voting baseline
of the retrieval model need (``umust train retrieval --stage snippet``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from umust_cli.data import corpus as corpus_reader
from umust_cli.data import render
from umust_cli.errors import BadInputError, RenderError
from umust_cli.io import write_json_atomic

SUFFIX = ".align.json"
_WIDTH_RE = re.compile(r'<svg[^>]*?\swidth="([\d.]+)px"')
_VIEWBOX_RE = re.compile(r'class="definition-scale"[^>]*viewBox="0 0 ([\d.]+) ([\d.]+)"')
_MARGIN_RE = re.compile(r'class="page-margin" transform="translate\(([-\d.]+), ([-\d.]+)\)"')
# A note group, then its notehead glyph: a <use> (raw SVG) or a <g> (render.inline_glyphs) with a translate.
_HEAD_RE = re.compile(r'<g id="([^"]+)" class="note[ "][^>]*>\s*<g class="notehead">\s*<(?:use|g)\b[^>]*?'
                      r'transform="translate\(([-\d.]+),')


@dataclass(frozen=True)
class SystemAlignment:
    width: int  # px of the system PNG it belongs to
    height: int
    x: list[float]  # px from the PNG's left edge, increasing
    score_s: list[float]  # score seconds of the onsets at x, increasing

    def performance_times(self, row: dict) -> np.ndarray:
        """Seconds into the row's system audio of each point (the row's tempo factor and start)."""
        return np.asarray(self.score_s) / float(row.get("tempo_factor", 1.0)) - float(row["start"])


def notehead_x(svg: str) -> dict[str, float]:
    """Note id -> x (page pixels) of the left edge of its notehead in a verovio page SVG."""
    width, viewbox, margin = _WIDTH_RE.search(svg), _VIEWBOX_RE.search(svg), _MARGIN_RE.search(svg)
    if not (width and viewbox and margin):
        raise RenderError("the SVG lacks verovio's page size, viewBox or page margin")
    scale = float(width.group(1)) / float(viewbox.group(1))
    offset = float(margin.group(1))
    return {note: (float(x) + offset) * scale for note, x in _HEAD_RE.findall(svg)}


def system_alignment(svg: str, onsets: dict[str, float], image_shape: tuple[int, int],
                     left_px: int) -> SystemAlignment:
    """The alignment of one system page ``svg`` whose trimmed image (``image_shape``) starts at page
    column ``left_px`` (first ink column minus the margin); ``onsets``: note id -> score seconds."""
    by_time: dict[float, list[float]] = {}
    for note, x in notehead_x(svg).items():
        if note in onsets:
            by_time.setdefault(round(onsets[note], 6), []).append(x - left_px)
    xs, ts = [], []
    for t in sorted(by_time):
        x = float(np.median(by_time[t]))
        if not xs or x > xs[-1]:  # keep x increasing (a grace note drawn left of an earlier chord is dropped)
            xs.append(round(x, 2))
            ts.append(t)
    height, width = image_shape
    return SystemAlignment(width=int(width), height=int(height), x=xs, score_s=ts)


def alignment_path(png: str | Path) -> Path:
    """``systems/NNN.png`` -> ``systems/NNN.align.json``."""
    png = Path(png)
    return png.with_name(png.stem + SUFFIX)


def write_alignment(path: Path, alignment: SystemAlignment) -> None:
    write_json_atomic(path, asdict(alignment))


def read_alignment(path: Path) -> SystemAlignment:
    """The alignment saved at ``path``; BadInputError if it is missing or malformed."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        out = SystemAlignment(width=int(d["width"]), height=int(d["height"]), x=[float(v) for v in d["x"]],
                              score_s=[float(v) for v in d["score_s"]])
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: no sub-system alignment (run 'umust dataset align' on the corpus)") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{path}: unreadable alignment ({e})") from e
    if len(out.x) != len(out.score_s):
        raise BadInputError(f"{path}: {len(out.x)} x positions but {len(out.score_s)} times")
    return out


def row_alignment(row: dict) -> SystemAlignment:
    """The alignment of a manifest row's system image (the row needs its corpus ``root``)."""
    return read_alignment(Path(row["root"]) / alignment_path(row["png"]))


def page_alignment(svg: str, onsets: dict[str, float], margin_px: int) -> tuple[np.ndarray, SystemAlignment]:
    """Raster one system page as the corpus builder does (:func:`render.rasterize`) and align it:
    (the trimmed uint8 image, its alignment)."""
    page = render.raster(svg)
    image = render.trim(page, margin_px)
    return image, system_alignment(svg, onsets, image.shape, render.ink_box(page)[2] - margin_px)


def align_piece(piece_dir: Path, rows: list[dict], engrave) -> int:
    """Write the alignment of every system in ``rows`` (one built piece) by engraving its
    score.musicxml again with the corpus's ``engrave`` config (an extra engraving of
    ``dataset build --engravings``: with the font and layout its rows record; LilyPond's
    are skipped); returns the number written.
    RenderError if the layout does not reproduce the piece's PNGs (another verovio, other options)."""
    musicxml = (piece_dir / "score.musicxml").read_text(encoding="utf-8")
    measures = render.measure_count(ET.fromstring(musicxml.encode("utf-8")))
    offsets = _engraving_offsets(piece_dir)
    written = 0
    for index, group in _by_engraving(alignable(rows)).items():
        config = _engrave_config(group[0], engrave)
        engraving = render.engrave(musicxml, measures, config)
        systems = {s.index + offsets.get(index, 0): s for s in engraving.systems}
        for row in group:
            png = Path(row["root"]) / row["png"]
            image, alignment = page_alignment(systems[int(row["system"])].svg, engraving.note_onsets,
                                              config.margin_px)
            if image.shape != _png_shape(png):
                raise RenderError(f"{png}: engraving again gives a {image.shape[1]}x{image.shape[0]} image, the "
                                  f"corpus has {_png_shape(png)[1]}x{_png_shape(png)[0]} (another verovio?)")
            write_alignment(alignment_path(png), alignment)
            written += 1
    return written


def alignable(rows: list[dict]) -> list[dict]:
    """The rows whose images verovio drew (LilyPond's carry no note ids to align)."""
    return [r for r in rows if r.get("engraving", {}).get("engraver", "verovio") == "verovio"]


def _by_engraving(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(int(row.get("engraving", {}).get("index", 0)), []).append(row)
    return groups


def _engrave_config(row: dict, base: render.EngraveConfig) -> render.EngraveConfig:
    """The config of the row's engraving (engraving 0, or a row from before engravings: ``base``)."""
    record = row.get("engraving")
    if not record or int(record.get("index", 0)) == 0:
        return base
    fields = {k: v for k, v in record.items() if k in render.EngraveConfig.__dataclass_fields__}
    return render.EngraveConfig(**{**fields, "margin_px": base.margin_px})


def _engraving_offsets(piece_dir: Path) -> dict[int, int]:
    """Engraving index -> the system number of its first system (piece.json's system list)."""
    path = piece_dir / "piece.json"
    spans = json.loads(path.read_text(encoding="utf-8")).get("systems", []) if path.is_file() else []
    offsets: dict[int, int] = {}
    for span in spans:
        offsets.setdefault(int(span.get("engraving", 0)), int(span["system"]))
    return offsets


def _png_shape(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def align_corpus(corpus: Path, redo: bool = False, on_piece=None) -> dict:
    """Align every system of a built corpus (pieces whose systems all have an alignment are
    skipped unless ``redo``); keeps going past a piece that fails. Returns {aligned, skipped, failed}."""
    corpus = Path(corpus)
    build_json = corpus / "build.json"
    engrave = render.EngraveConfig(**json.loads(build_json.read_text(encoding="utf-8"))["engrave"]) \
        if build_json.is_file() else render.EngraveConfig()  # BuildConfig's default
    pieces: dict[str, list[dict]] = {}
    for row in corpus_reader.read_manifest(corpus):
        pieces.setdefault(row["piece_id"], []).append(dict(row, root=str(corpus)))
    summary = {"aligned": 0, "skipped": 0, "failed": {}}
    for piece_id, rows in pieces.items():
        if not redo and all((corpus / alignment_path(r["png"])).is_file() for r in alignable(rows)):
            summary["skipped"] += len(rows)
        elif not redo and _link_from_source(corpus, rows):
            summary["aligned"] += len(rows)
        else:
            try:
                summary["aligned"] += align_piece(corpus / "pieces" / piece_id, rows, engrave)
            except (BadInputError, RenderError, OSError, KeyError) as e:
                summary["failed"][piece_id] = f"{type(e).__name__}: {e}"
        if on_piece is not None:
            on_piece(piece_id)
    return summary


def _link_from_source(corpus: Path, rows: list[dict]) -> bool:
    """For a piece of a ``umust dataset resynth`` corpus (same images, other audio) whose source corpus
    is aligned: hard-link (or copy) the source's alignments; False if there are none to link."""
    source = rows[0].get("resynth", {}).get("source")
    pairs = [(Path(source) / alignment_path(r["png"]), corpus / alignment_path(r["png"])) for r in alignable(rows)] \
        if source else []
    if not pairs or not all(src.is_file() for src, _ in pairs):
        return False
    for src, dst in pairs:
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return True
