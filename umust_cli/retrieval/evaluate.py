"""Retrieval scores of a model on a corpus split: every system is one audio/sheet passage pair."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.errors import BadInputError
from umust_cli.model.retrieval import RetrievalModel
from umust_cli.retrieval.data import corpus_rows, load_features
from umust_cli.retrieval.embed import embed_passages
from umust_cli.retrieval.features import FeatureConfig


def corpus_distances(model: RetrievalModel, fcfg: FeatureConfig, corpus: Path, splits: Sequence[str],
                     image_key: str = "png", cache_dir: Path | None = None,
                     progress: bool = False, limit: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """(n, n) cosine distances, audio passages (rows) x sheet passages (columns), and the rows.

    ``limit``: that many systems spread evenly over the split(s) (``umust eval --limit``).
    """
    from umust_cli.eval.corpus import spread

    rows = spread(corpus_rows(corpus, splits), limit)
    if len(rows) < 2:
        raise BadInputError(f"{corpus} has {len(rows)} system(s) in split(s) {', '.join(splits)}; need 2 or more")
    feats = load_features(rows, fcfg, cache_dir, image_key, progress)
    audio = embed_passages(model, "audio", feats.specs, fcfg)
    sheet = embed_passages(model, "sheet", feats.sheets, fcfg)
    return 1.0 - audio @ sheet.T, rows


def evaluate_corpus(model: RetrievalModel, fcfg: FeatureConfig, corpus: Path, splits: Sequence[str],
                    image_key: str = "png", cache_dir: Path | None = None, progress: bool = False,
                    limit: int | None = None):
    """An EvalResult (``umust eval`` style) with R@1/10/25, MRR and median rank in both directions."""
    from umust_cli.eval import tasks

    dist, rows = corpus_distances(model, fcfg, corpus, splits, image_key, cache_dir, progress, limit)
    result = tasks.retrieval(dist)
    for out, row in zip(result.rows, rows):
        out.update(piece_id=row["piece_id"], system=row["system"])
    result.summary.update(pieces=len({r["piece_id"] for r in rows}), splits=list(splits), images=image_key)
    return result


def evaluate_checkpoint(ckpt: Path | None, corpus: Path, splits: Sequence[str], image_key: str = "png",
                        progress: bool = False, limit: int | None = None):
    """:func:`evaluate_corpus` with the model of checkpoint directory ``ckpt`` (None: shipped weights)."""
    from umust_cli.retrieval.checkpoint import load_checkpoint

    model, fcfg, _ = load_checkpoint(ckpt)
    return evaluate_corpus(model, fcfg, corpus, splits, image_key, progress=progress, limit=limit)
