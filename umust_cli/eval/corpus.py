"""Corpus mode of `umust eval`: references from a built corpus split, predictions from a folder.

A corpus system is one manifest row (``piece_id``, ``system``, ``split`` and the
paths ``png``, ``wav``, ``mid``, ``lmx``, ``musicxml`` relative to the corpus).
Its *key* is ``<piece_id>/<NNN>`` with the system number on three digits, as in
the corpus's own ``pieces/<piece_id>/systems/NNN.<ext>``.

Prediction naming convention (one rule for every task)::

    PRED_DIR/<piece_id>/<NNN>.<ext>      e.g. preds/joplin-maple-leaf/004.lmx

``ext`` is the prediction's type (``.lmx``/``.txt`` for OMR and EMD, ``.mid`` for
AMT, ``.wav``/``.flac``/``.ogg``/``.mp3`` for generated audio). A system of the
split without a prediction is *missing*: it is counted and listed in the
result, never silently dropped. Files of the folder that match no system of the
selection are ignored (they may belong to another split or to a ``--limit``).

``--limit N`` keeps N systems spread evenly over the split (every k-th system in
(piece_id, system) order, so that several pieces and soundfonts are covered),
not the first N: the same N gives the same systems on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.data.corpus import SCAN_SPLITS, SPLITS, system_rows
from umust_cli.errors import BadInputError
from umust_cli.eval.report import PairSet


def system_key(row: dict) -> str:
    """``<piece_id>/<NNN>``: the name of a corpus system in results and prediction folders."""
    return f"{row['piece_id']}/{int(row['system']):03d}"


def spread(rows: Sequence[dict], limit: int | None) -> list[dict]:
    """``limit`` rows spread evenly over ``rows`` (all rows when ``limit`` is None or larger)."""
    rows = list(rows)
    if limit is None or limit >= len(rows):
        return rows
    if limit < 1:
        raise BadInputError(f"--limit must be 1 or more, not {limit}")
    picks = np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))
    return [rows[i] for i in picks]


def split_rows(corpus: Path, split: str, limit: int | None = None) -> list[dict]:
    """The systems of ``split`` in (piece_id, system) order, each with ``root`` = the corpus folder."""
    if split not in SPLITS + SCAN_SPLITS:
        raise BadInputError(f"--split must be one of {', '.join(SPLITS + SCAN_SPLITS)}, not {split!r}")
    rows = system_rows(Path(corpus), [split])
    if not rows:
        raise BadInputError(f"{corpus} has no systems in split {split!r}")
    return spread(rows, limit)


def ref_path(row: dict, key: str) -> Path:
    """Absolute path of a row's ``key`` file (``wav``, ``mid``, ``lmx``, ...); BadInputError when the row
    has none (the real-scan splits have image and notation only)."""
    if not row.get(key):
        raise BadInputError(f"{row.get('piece_id')} system {row.get('system')} (split {row.get('split')}) "
                            f"has no {key} file")
    return Path(row["root"]) / row[key]


def find_prediction(pred_dir: Path, key: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        path = Path(pred_dir) / f"{key}{suffix}"
        if path.is_file():
            return path
    return None


def pair_predictions(rows: Sequence[dict], pred_dir: Path, ref_key: str,
                     pred_suffixes: Sequence[str]) -> PairSet:
    """Pair ``PRED_DIR/<piece_id>/<NNN><suffix>`` with each row's ``ref_key`` file; count the missing."""
    if not Path(pred_dir).is_dir():
        raise BadInputError(f"with --data the prediction argument must be one folder: {pred_dir}")
    pairs, names, missing = [], [], []
    for row in rows:
        key = system_key(row)
        pred = find_prediction(pred_dir, key, pred_suffixes)
        if pred is None:
            missing.append(key)
        else:
            pairs.append((pred, ref_path(row, ref_key)))
            names.append(key)
    if not pairs:
        example = f"{pred_dir}/{system_key(rows[0])}{pred_suffixes[0]}"
        raise BadInputError(f"no prediction in {pred_dir} for the {len(rows)} selected systems "
                            f"(expected names like {example})")
    return PairSet(pairs, names, missing)
