"""Passage embeddings with a trained model: strips and spectrograms -> unit vectors."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli import registry
from umust_cli.errors import CheckpointError
from umust_cli.model.retrieval import RetrievalModel, RetrievalModelConfig
from umust_cli.retrieval.data import pad_snippets
from umust_cli.retrieval.features import FeatureConfig, audio_snippets, sheet_snippets

KIND = "retrieval"


def load_retrieval_model(model: str | Path | None) -> tuple[RetrievalModel, FeatureConfig, dict]:
    """(model in eval mode on the CPU, its feature config, its config.json) of a checkpoint folder or
    a shipped model name (None: the default; see :mod:`umust_cli.registry`)."""
    folder = registry.resolve(KIND, model)
    state, config = ckpt_io.load_model(folder)
    ckpt_io.check_kind(folder, config, KIND)
    try:
        net = RetrievalModel(model_config(config["model"]))
        features = FeatureConfig(**config["features"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder}: its config.json does not describe a retrieval model ({e})") from e
    ckpt_io.load_state(net, state, folder)
    return net.eval(), features, config


def model_config(d: dict) -> RetrievalModelConfig:
    """A saved architecture (lists for tuples) as a RetrievalModelConfig."""
    known = {f.name for f in fields(RetrievalModelConfig)}
    if set(d) - known:
        raise ValueError(f"unknown retrieval model fields: {sorted(set(d) - known)}")
    return RetrievalModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def model_id(config: dict) -> str:
    """A short fingerprint of a checkpoint's architecture, features and step (stored in indexes)."""
    import hashlib
    import json

    key = json.dumps({k: config.get(k) for k in ("model", "features", "step", "run_id")}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@torch.no_grad()
def embed_passages(model: RetrievalModel, kind: str, items: Sequence[np.ndarray], cfg: FeatureConfig,
                   batch_size: int = 64) -> np.ndarray:
    """(n, embed_dim) float32 unit vectors of sheet strips or spectrograms (``kind``: sheet|audio)."""
    cut = sheet_snippets if kind == "sheet" else audio_snippets
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(items), batch_size):
        snippets, lengths = pad_snippets([cut(np.asarray(x, dtype=np.float32) if kind == "audio" else x, cfg)
                                          for x in items[start: start + batch_size]])
        out.append(model.encode(kind, snippets.to(device), lengths).float().cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, model.cfg.embed_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def window_spans(duration: float, window_s: float, hop_s: float) -> list[tuple[float, float]]:
    """[start, end) seconds of windows covering ``duration``; one span if it is short."""
    if duration <= window_s * 1.5:
        return [(0.0, duration)]
    starts = np.arange(0.0, max(duration - window_s, 0.0) + 1e-9, hop_s)
    spans = [(float(s), float(min(s + window_s, duration))) for s in starts]
    if spans[-1][1] < duration - 1e-6:  # cover the tail with one last full window
        spans.append((max(duration - window_s, 0.0), duration))
    return spans


def cut_spectrogram(spec: np.ndarray, spans: list[tuple[float, float]], fps: float) -> list[np.ndarray]:
    return [spec[:, int(round(a * fps)): max(int(round(b * fps)), int(round(a * fps)) + 1)] for a, b in spans]
