"""Where each measure of an engraved corpus system ends, in image code columns.

The translator trainer's ``crops`` option (``umust train translator --crops``) adds, for each
engraved system, its prefixes of 1 .. n-1 measures as extra image -> notation pairs: the
first columns of the system's image codes with the LMX of its first measures. Short pairs
that start with the clef, key and time signature are an alignment curriculum: a decoder that
has learnt the notation's grammar has few columns to search for the notes of a measure.

The bar lines come from the page detector (``data/scans.py``) on the system's PNG; a system
is used only when the detector finds exactly one system with as many measures as its LMX
(else no crops: nothing is guessed). Results are cached beside the image codes as
``NNN.bars.json`` (``{"measures": n, "columns": [...]}`` or ``{"columns": null}``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from umust_cli.codecs.image import load_gray
from umust_cli.data.scans import ScanConfig, detect_systems
from umust_cli.errors import UmustError
from umust_cli.io import write_json_atomic

PATCH = 16
BARS_SUFFIX = ".bars.json"


def measure_columns(png: Path, n_measures: int, code_columns: int) -> list[int] | None:
    """For measures 1 .. n-1: the code column (exclusive) where the measure ends: the column
    that holds its bar line is the last; None when the detector does not find the system's ``n_measures`` measures."""
    try:
        gray = load_gray(png)
        systems = detect_systems(gray, ScanConfig(), name=str(png))
    except (UmustError, OSError, ValueError):
        return None
    if len(systems) != 1 or systems[0].measures != n_measures or len(systems[0].barlines) < n_measures - 1:
        return None
    scale = code_columns * PATCH / gray.shape[1]          # the codec pads the width to a multiple of 16
    cols = [min(code_columns, math.floor(x * scale / PATCH) + 1) for x in systems[0].barlines[:n_measures - 1]]
    return cols if all(a < b for a, b in zip(cols, cols[1:])) else None


def cached_measure_columns(png: Path, codes: Path, n_measures: int, code_columns: int) -> list[int] | None:
    """:func:`measure_columns`, read from / written to ``codes``' ``NNN.bars.json``."""
    cache = Path(str(codes).removesuffix(".image.npy") + BARS_SUFFIX)
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("measures") == n_measures and saved.get("code_columns") == code_columns:
            return saved["columns"]
    except (OSError, ValueError, AttributeError):
        pass
    cols = measure_columns(png, n_measures, code_columns)
    write_json_atomic(cache, {"measures": n_measures, "code_columns": code_columns, "columns": cols})
    return cols
