"""A system image as the pitch reader sees it, and those images of a corpus split with their targets.

The image codec's 16x codes place a notehead within a patch only as far as a code can say, and
the translator's CTC head misreads about half the pitches from them (results.md, "Reading
pitches"), so the pitch reader reads pixels: the system resized to the codec's staff spacing
(``codecs.image.normalize_scale``) and padded to whole patches as `dataset tokenize` pads it, so
that its columns are the codes' columns (the timing of ``translate.direct.column_notes``), then
centred in READ_HEIGHT rows (cut or padded with white). An image whose staff is not found is
taken at its own scale, as `dataset tokenize` takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from umust_cli.codecs import image as image_codec
from umust_cli.codecs.notation import _lmx_tokens
from umust_cli.data import corpus as corpus_io
from umust_cli.data.staff_order import STAVES, staff_classes
from umust_cli.errors import ImageError
from umust_cli.inputs import load_lmx

READ_HEIGHT = 288    # rows: a grand staff at the codec's scale is 176-271 px with its ledger lines
PATCH = 16           # columns per image code column


def staff_image(gray: np.ndarray, height: int = READ_HEIGHT) -> np.ndarray:
    """(height, 16 k) uint8 (white 255) of a grayscale system image: at the codec's staff scale,
    thresholded and padded as the codec pads (``codecs.image.preprocess``), centred vertically."""
    try:
        gray = image_codec.normalize_scale(gray)[0]
    except ImageError:
        pass
    gray = image_codec.preprocess(gray)
    out = np.full((height, gray.shape[1]), 255, np.uint8)
    h = min(height, gray.shape[0])
    top, dst = (gray.shape[0] - h) // 2, (height - h) // 2
    out[dst:dst + h] = gray[top:top + h]
    return out


class StaffImages(NamedTuple):
    """A split's reader images (each (READ_HEIGHT, 16 k) uint8), each staff's CTC classes of
    every image (``data.staff_order.staff_classes``), and which copy each is ("engraved" or "scanK")."""

    images: list[np.ndarray]
    targets: list[list[list[int]]]
    copies: tuple[str, ...]


def split_staff_images(corpus: Path, split: str, target: str, scans: bool = True,
                       limit: int | None = None, height: int = READ_HEIGHT) -> StaffImages:
    """The reader images of ``split``'s systems (and of their scanned-look copies with ``scans``)
    that have an LMX file, with the CTC classes of ``target``, in (piece, system) order;
    ``limit``: the first N systems."""
    images, targets, copies = [], [], []
    for row in corpus_io.system_rows(corpus, (split,))[:limit]:
        if not row.get("png") or not row.get("lmx") or not (corpus / row["lmx"]).is_file():
            continue
        classes = staff_classes(_lmx_tokens(load_lmx(corpus / row["lmx"])), target, STAVES)
        files = [("engraved", row["png"])] + [(f"scan{k}", s) for k, s in enumerate(row.get("scans") or ()) if scans]
        for copy, rel in files:
            if (corpus / rel).is_file():
                try:
                    images.append(staff_image(image_codec.load_gray(corpus / rel), height))
                except ImageError:
                    continue
                targets.append(classes)
                copies.append(copy)
    return StaffImages(images, targets, tuple(copies))
