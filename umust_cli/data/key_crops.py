"""The start of a piano system as the key-signature reader sees it, and those crops of a corpus split.

The image codec's 16x codes blur a key signature's accidentals into blobs (its reconstruction of
five flats cannot be counted), so the key reader reads pixels: the system resized to the codec's
staff spacing (``codecs.image.normalize_scale``), its first CROP_WIDTH columns (brace, clefs, key
and time signatures: the columns the translator's key head reads) centred in CROP_HEIGHT rows.
An image whose staff is not found is taken at its own scale, as `dataset tokenize` takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from umust_cli.codecs import image as image_codec
from umust_cli.codecs.notation import _lmx_tokens
from umust_cli.data import corpus as corpus_io
from umust_cli.data.staff_order import system_key
from umust_cli.errors import ImageError
from umust_cli.inputs import load_lmx

CROP_HEIGHT = 256     # rows: a grand staff at the codec's scale is 200-260 px with its ledger lines
CROP_WIDTH = 192      # columns: 12 image patches, the translator key head's KEY_COLUMNS


def key_crop(gray: np.ndarray) -> np.ndarray:
    """(CROP_HEIGHT, CROP_WIDTH) uint8 (white 255) of a grayscale system image: the first columns at
    the codec's staff scale, centred vertically (cut or padded with white)."""
    try:
        gray = image_codec.normalize_scale(gray)[0]
    except ImageError:
        pass
    gray = gray[:, :CROP_WIDTH]
    out = np.full((CROP_HEIGHT, CROP_WIDTH), 255, np.uint8)
    h = min(CROP_HEIGHT, gray.shape[0])
    top, dst = (gray.shape[0] - h) // 2, (CROP_HEIGHT - h) // 2
    out[dst:dst + h, :gray.shape[1]] = gray[top:top + h]
    return out


class KeyCrops(NamedTuple):
    """A split's crops (N, CROP_HEIGHT, CROP_WIDTH) uint8, their key signatures (N,) in fifths, and
    which copy each is ("engraved" or "scanK")."""

    crops: np.ndarray
    fifths: np.ndarray
    copies: tuple[str, ...]


def split_key_crops(corpus: Path, split: str, scans: bool = True, limit: int | None = None) -> KeyCrops:
    """The crops of ``split``'s systems (and of their scanned-look copies with ``scans``) whose LMX
    has a key signature, in (piece, system) order; ``limit``: the first N systems."""
    crops, fifths, copies = [], [], []
    for row in corpus_io.system_rows(corpus, (split,))[:limit]:
        if not row.get("png") or not row.get("lmx") or not (corpus / row["lmx"]).is_file():
            continue
        key = system_key(_lmx_tokens(load_lmx(corpus / row["lmx"])))
        if key is None:
            continue
        images = [("engraved", row["png"])] + [(f"scan{k}", s) for k, s in enumerate(row.get("scans") or ()) if scans]
        for copy, rel in images:
            if (corpus / rel).is_file():
                crops.append(key_crop(image_codec.load_gray(corpus / rel)))
                fifths.append(key)
                copies.append(copy)
    empty = np.zeros((0, CROP_HEIGHT, CROP_WIDTH), np.uint8)
    return KeyCrops(np.stack(crops) if crops else empty, np.array(fifths, dtype=np.int64), tuple(copies))
