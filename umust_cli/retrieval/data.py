"""Passage pairs of a built corpus: rows, cached features, and padded snippet batches.

A passage pair is one manifest row: the system image and the system's audio
(the corpus builder's per-system time span: weak alignment only). A corpus
still being built has no manifest.jsonl yet; its finished pieces are read instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from umust_cli.data.corpus import system_rows
from umust_cli.errors import BadInputError
from umust_cli.io import atomic_path
from umust_cli.retrieval.features import (FeatureConfig, audio_snippets, load_audio, load_sheet,
                                          log_spectrogram, sheet_ink_windows, sheet_snippets)


def corpus_rows(corpus: Path, splits: Sequence[str] = (), soundfonts: Sequence[str] = ()) -> list[dict]:
    """Rows of ``corpus`` in ``splits`` made with ``soundfonts`` (empty = all), each with a ``root``,
    in (piece_id, system) order (:func:`umust_cli.data.corpus.system_rows`)."""
    return [r for r in system_rows(Path(corpus), splits) if not soundfonts or r.get("soundfont") in soundfonts]


def passage_groups(rows: list[dict]) -> list[list[int]]:
    """Indices of ``rows`` grouped by passage (piece_id, system): one group per system, in first-seen order.

    Corpora re-rendered with ``umust dataset resynth`` hold the same systems with other
    timbres; their rows fall into one group, so a mini-batch never pits a passage against
    itself as a negative. A real-scan row (numbered on its own) is its own passage.
    """
    groups: dict[tuple[str, bool, int], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row["piece_id"], is_realscan(row), int(row["system"])), []).append(i)
    return list(groups.values())


def is_realscan(row: dict) -> bool:
    """Whether ``row`` is a real scanned system (a realscan_* split row of ``umust dataset scans``)."""
    return str(row.get("split", "")).startswith("realscan_")


@dataclass
class PassageFeatures:
    """Per passage: a uint8 sheet strip (H, W_i) and a float16 spectrogram (bins, T_i); for snippet
    training also its aligned onsets (strip x, audio seconds), see :mod:`umust_cli.retrieval.snippets`."""

    sheets: list[np.ndarray]
    specs: list[np.ndarray]
    rows: list[dict]
    alignments: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.rows)


def image_of(row: dict, image_key: str) -> str:
    """The row's image path: ``png``, or ``scanK`` for its K-th scanned-look copy."""
    if image_key.startswith("scan"):
        scans = row.get("scans") or []
        k = int(image_key[4:] or 0)
        if k >= len(scans):
            raise BadInputError(f"{row['png']} has {len(scans)} scanned copies (build with --scan-copies)")
        return scans[k]
    return row[image_key]


def audio_of(row: dict) -> tuple[str, float, float | None]:
    """The row's audio as (path, start, end): its system ``wav`` whole, or, for a row without one (a real
    scan of ``umust dataset scans``), its span ``start``..``end`` of the piece's ``piece_audio``."""
    if row.get("wav"):
        return row["wav"], 0.0, None
    if row.get("piece_audio") and row.get("end") is not None:
        return row["piece_audio"], float(row.get("start", 0.0)), float(row["end"])
    raise BadInputError(f"{row.get('png', row.get('piece_id', '?'))}: the row has no audio (no wav, no "
                        "piece_audio span)")


def row_features(row: dict, cfg: FeatureConfig, image_key: str = "png") -> tuple[np.ndarray, np.ndarray]:
    root = Path(row["root"])
    strip = load_sheet(root / image_of(row, image_key), cfg)
    path, start, end = audio_of(row)
    spec = log_spectrogram(load_audio(root / path, cfg.sample_rate, start, end), cfg, name=path)
    return strip, spec.astype(np.float16)


def load_features(rows: list[dict], cfg: FeatureConfig, cache_dir: Path | None = None,
                  image_key: str = "png", progress: bool = False) -> PassageFeatures:
    """Features of every row; with ``cache_dir``, each row's are kept in (and read from) one small file."""
    sheets, specs = [], []
    for row in _maybe_progress(rows, progress, "features"):
        strip, spec = _cached_row_features(row, cfg, image_key, cache_dir)
        sheets.append(strip)
        specs.append(spec)
    return PassageFeatures(sheets, specs, rows)


def cache_path(cache_dir: Path, row: dict, cfg: FeatureConfig, image_key: str = "png") -> Path:
    """The file in ``cache_dir`` that holds ``row``'s features (a function of the corpus path, the row's
    image and audio, and ``cfg``)."""
    path, start, end = audio_of(row)
    audio = path if end is None else [path, start, end]  # a whole system wav keeps its old key
    key = json.dumps([asdict(cfg), str(Path(row["root"]).resolve()), image_of(row, image_key), audio])
    return Path(cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def write_cached_features(path: Path, strip: np.ndarray, spec: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, sheet=strip, spec=spec)


def _cached_row_features(row: dict, cfg: FeatureConfig, image_key: str,
                         cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    if cache_dir is None:
        return row_features(row, cfg, image_key)
    path = cache_path(cache_dir, row, cfg, image_key)
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["sheet"], z["spec"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: compute it again
    strip, spec = row_features(row, cfg, image_key)
    write_cached_features(path, strip, spec)
    return strip, spec


def _maybe_progress(items: list, on: bool, desc: str):
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def pad_snippets(seqs: list[np.ndarray], dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i, H, W) -> padded (B, S_max, H, W) of ``dtype`` and lengths (B,) int64."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.zeros(len(seqs), int(lengths.max()), *seqs[0].shape[1:], dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(np.asarray(s)).to(dtype)
    return out, lengths


def batch_tensors(sheets: list[np.ndarray], specs: list[np.ndarray], cfg: FeatureConfig, sheet_uint8: bool = False):
    """(audio snippets, audio lengths, sheet snippets, sheet lengths) of strips and spectrograms;
    with ``sheet_uint8`` the sheet snippets are the strips' uint8 ink (0..255) rather than [0, 1] floats."""
    audio, audio_len = pad_snippets([audio_snippets(s.astype(np.float32), cfg) for s in specs])
    if sheet_uint8:
        sheet, sheet_len = pad_snippets([sheet_ink_windows(s, cfg) for s in sheets], torch.uint8)
    else:
        sheet, sheet_len = pad_snippets([sheet_snippets(s, cfg) for s in sheets])
    return audio, audio_len, sheet, sheet_len
