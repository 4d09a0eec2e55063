"""A retrieval index: passage embeddings plus what each points to, saved as one .npz file.

Entries are dicts: ``kind`` (sheet | audio), ``file``, and where known ``piece_id``,
``system``, ``page``, ``measures`` and ``start``/``end`` (seconds in the recording).
Systems found on score pages (a PDF, or page images with ``pages=True``) carry ``page``
and ``system`` counted from 1 on that page, their ``box`` (left, top, right, bottom px of
the page rasterized at ``ScanConfig.page_width_px``) and the number of ``bars`` seen.
A query of one modality is searched against the entries of the other.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.data import scans
from umust_cli.data.corpus import MANIFEST, PIECES
from umust_cli.errors import BadInputError, ImageError, InputNotFoundError
from umust_cli.io import atomic_path
from umust_cli.model.retrieval import RetrievalModel
from umust_cli.retrieval.data import corpus_rows, load_features
from umust_cli.retrieval.embed import cut_spectrogram, embed_passages, window_spans
from umust_cli.retrieval.features import (FeatureConfig, kind_of, load_audio, load_sheet, log_spectrogram,
                                          sheet_strip)

FORMAT = "umust-retrieval-index/1"


@dataclass(frozen=True)
class WindowConfig:
    window_s: float = 8.0  # audio is cut into passages of this length ...
    hop_s: float = 4.0  # ... every hop_s seconds (a recording no longer than 1.5 windows stays whole)


@dataclass
class RetrievalIndex:
    embeddings: np.ndarray  # (n, d) float32 unit vectors
    entries: list[dict]
    model: dict  # {"id": fingerprint, "path": checkpoint, "step": n}

    def save(self, path: Path) -> None:
        meta = {"format": FORMAT, "model": self.model, "entries": self.entries}
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:  # a file object: numpy would add .npz to a name
                np.savez(f, embeddings=self.embeddings.astype(np.float32), meta=np.array(json.dumps(meta)))

    @staticmethod
    def load(path: Path) -> "RetrievalIndex":
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"no such index file: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                emb, meta = z["embeddings"], json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise BadInputError(f"{path} is not a retrieval index, or is truncated ({e})") from e
        if meta.get("format") != FORMAT or len(meta["entries"]) != len(emb):
            raise BadInputError(f"{path} is not a {FORMAT} file")
        return RetrievalIndex(emb, meta["entries"], meta["model"])


# ------------------------------------------------------------------ building
def embed_files(model: RetrievalModel, fcfg: FeatureConfig, paths: Sequence[Path],
                windows: WindowConfig, pages: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Embeddings and entries of system images (one each), recordings (one per window) and
    score pages (PDFs always, images when ``pages``: one per piano system found)."""
    embs, entries = [], []
    for path in paths:
        if Path(path).suffix.lower() == ".pdf" or (pages and kind_of(path) == "sheet"):
            e, rows = embed_pages(model, fcfg, Path(path))
            embs.append(e)
            entries.extend(rows)
        elif kind_of(path) == "sheet":
            embs.append(embed_passages(model, "sheet", [load_sheet(path, fcfg)], fcfg))
            entries.append({"kind": "sheet", "file": str(path), "page": None, "system": None})
        else:
            spec = log_spectrogram(load_audio(path, fcfg.sample_rate), fcfg, name=str(path))
            spans = window_spans(spec.shape[1] / fcfg.fps, windows.window_s, windows.hop_s)
            embs.append(embed_passages(model, "audio", cut_spectrogram(spec, spans, fcfg.fps), fcfg))
            entries.extend({"kind": "audio", "file": str(path), "start": round(a, 3), "end": round(b, 3)}
                           for a, b in spans)
    return np.concatenate(embs), entries


def embed_pages(model: RetrievalModel, fcfg: FeatureConfig, path: Path) -> tuple[np.ndarray, list[dict]]:
    """Every piano system (grand staff) found on the pages of a PDF or a page image.
    Pages without one (title pages, text) are skipped; ImageError if no page has any."""
    cfg = scans.ScanConfig()
    strips, entries = [], []
    for p, page in enumerate(scans.load_pages(path, cfg.page_width_px)):
        try:
            page, found = scans.page_systems(page, cfg, p, f"{path.name} page {p + 1}")
        except ImageError:
            continue
        for n, system in enumerate(found):
            strips.append(sheet_strip(scans.crop(page, system), fcfg, name=f"{path.name} page {p + 1}"))
            entries.append({"kind": "sheet", "file": str(path), "page": p + 1, "system": n + 1,
                            "box": [int(v) for v in system.box], "bars": int(system.measures)})
    if not strips:
        raise ImageError(f"no piano systems (two staves joined by bar lines) found in {path}")
    return embed_passages(model, "sheet", strips, fcfg), entries


def embed_corpus(model: RetrievalModel, fcfg: FeatureConfig, corpus: Path, splits: Sequence[str],
                 modalities: Sequence[str], progress: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Embeddings and entries of a built corpus's systems (sheet and/or audio passages)."""
    rows = corpus_rows(corpus, splits)
    if not rows:
        raise BadInputError(f"{corpus} has no systems in split(s) {', '.join(splits)}")
    feats = load_features(rows, fcfg, progress=progress)
    embs, entries = [], []
    for kind in modalities:
        embs.append(embed_passages(model, kind, feats.sheets if kind == "sheet" else feats.specs, fcfg))
        entries.extend(_corpus_entry(r, kind) for r in rows)
    return np.concatenate(embs), entries


def _corpus_entry(row: dict, kind: str) -> dict:
    root = Path(row["root"])
    return {"kind": kind, "file": str(root / (row["png"] if kind == "sheet" else row["wav"])),
            "piece_id": row["piece_id"], "system": row["system"], "page": None, "measures": row["measures"],
            "recording": str(root / row["piece_audio"]), "start": row["start"], "end": row["end"]}


def is_corpus(path: Path) -> bool:
    return path.is_dir() and ((path / MANIFEST).is_file() or (path / PIECES).is_dir())


# ------------------------------------------------------------------ searching
def search(index: RetrievalIndex, queries: np.ndarray, query_kind: str, k: int) -> list[list[dict]]:
    """Per query: the ``k`` nearest entries of the other modality, by cosine distance, nearest first."""
    target = "sheet" if query_kind == "audio" else "audio"
    candidates = np.array([i for i, e in enumerate(index.entries) if e["kind"] == target], dtype=int)
    if len(candidates) == 0:
        raise BadInputError(f"the index holds no {target} entries to match a {query_kind} query against")
    dist = 1.0 - queries @ index.embeddings[candidates].T  # (q, n) cosine distances
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return [[{"rank": r + 1, "distance": float(dist[q, j]), **index.entries[candidates[j]]}
             for r, j in enumerate(order[q])] for q in range(len(queries))]


def embed_query(model: RetrievalModel, fcfg: FeatureConfig, path: Path,
                windows: WindowConfig) -> tuple[str, np.ndarray, list[dict]]:
    """(kind, (q, d) embeddings, what each query passage is) of an image or a recording."""
    embs, entries = embed_files(model, fcfg, [path], windows)
    return entries[0]["kind"], embs, entries
