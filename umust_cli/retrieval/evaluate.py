"""Retrieval scores of a model on a corpus split: every system is one audio/sheet passage pair."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.errors import BadInputError
from umust_cli.eval import tasks
from umust_cli.eval.corpus import spread
from umust_cli.model.retrieval import RetrievalModel
from umust_cli.retrieval.data import corpus_rows, load_features
from umust_cli.retrieval.embed import embed_passages, load_retrieval_model
from umust_cli.retrieval.features import FeatureConfig
from umust_cli.retrieval.snippets import baseline_distances


METHODS = ("rnn", "bl")


def corpus_distances(model: RetrievalModel, fcfg: FeatureConfig, corpus: Path, splits: Sequence[str],
                     image_key: str = "png", cache_dir: Path | None = None, progress: bool = False,
                     limit: int | None = None, method: str = "rnn") -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Audio x sheet and sheet x audio (n, n) ranking keys of the split's passages, and the rows.

    ``method`` "rnn": cosine distances of passage embeddings (the second matrix is the first's
    transpose); "bl": snippet voting with the model's CNNs (:mod:`umust_cli.retrieval.snippets`).
    ``limit``: that many systems spread evenly over the split(s) (``umust eval --limit``).
    """
    rows = spread(corpus_rows(corpus, splits), limit)
    if len(rows) < 2:
        raise BadInputError(f"{corpus} has {len(rows)} system(s) in split(s) {', '.join(splits)}; need 2 or more")
    if method not in METHODS:
        raise BadInputError(f"unknown retrieval method {method!r} (choose from {', '.join(METHODS)})")
    feats = load_features(rows, fcfg, cache_dir, image_key, progress)
    if method == "bl":
        a2s, s2a = baseline_distances(model, feats.sheets, feats.specs, fcfg)
        return a2s, s2a, rows
    audio = embed_passages(model, "audio", feats.specs, fcfg)
    sheet = embed_passages(model, "sheet", feats.sheets, fcfg)
    dist = 1.0 - audio @ sheet.T
    return dist, dist.T, rows


def evaluate_corpus(model: RetrievalModel, fcfg: FeatureConfig, corpus: Path, splits: Sequence[str],
                    image_key: str = "png", cache_dir: Path | None = None, progress: bool = False,
                    limit: int | None = None, method: str = "rnn"):
    """An EvalResult (``umust eval`` style) with R@1/10/25, MRR and median rank in both directions."""
    a2s, s2a, rows = corpus_distances(model, fcfg, corpus, splits, image_key, cache_dir, progress, limit, method)
    result = tasks.retrieval(a2s, dist_s2a=s2a)
    for out, row in zip(result.rows, rows):
        out.update(piece_id=row["piece_id"], system=row["system"])
    result.summary.update(pieces=len({r["piece_id"] for r in rows}), splits=list(splits), images=image_key,
                          method=method)
    return result


def evaluate_checkpoint(ckpt: Path | None, corpus: Path, splits: Sequence[str], image_key: str = "png",
                        progress: bool = False, limit: int | None = None, method: str = "rnn"):
    """:func:`evaluate_corpus` with the model of checkpoint directory ``ckpt`` (None: shipped weights)."""
    model, fcfg, _ = load_retrieval_model(ckpt)
    return evaluate_corpus(model, fcfg, corpus, splits, image_key, progress=progress, limit=limit, method=method)
