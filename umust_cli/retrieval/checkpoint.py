"""Retrieval checkpoints: model.safetensors + config.json (+ train_state.pt to resume).

Uses the atomic layout of :mod:`umust_cli.train.checkpoint`; a retrieval model
has no token vocabulary, so its weights are written here and read with the
same checks (missing/corrupt file -> CheckpointError).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from umust_cli.errors import CheckpointError
from umust_cli.io import atomic_path, write_json_atomic
from umust_cli.model.retrieval import RetrievalModel, RetrievalModelConfig
from umust_cli.retrieval.features import FeatureConfig
from umust_cli.train import checkpoint as ckpt_io

KIND = "retrieval"
SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "retrieval"
# Shipped models by name (see docs/results.md): "rendered" (the default) is the paper-size model,
# trained on engraved systems only; "small" is a CPU-trained RNN-FZ model (snippet pre-trained, frozen CNNs),
# about 5x faster on sheet images on a CPU and less accurate; "scans" is an older small model fine-tuned
# with real scanned systems as well.
SHIPPED_MODELS = {"rendered": SHIPPED, "small": SHIPPED.parent / "retrieval-small",
                  "scans": SHIPPED.parent / "retrieval-scans"}


def resolve(ckpt: Path | str | None) -> Path:
    """A checkpoint folder from a path, a shipped model name ("scans", "shipped:scans") or None (default)."""
    if ckpt is None:
        return SHIPPED
    name = str(ckpt).removeprefix("shipped:")
    if name in SHIPPED_MODELS and not Path(ckpt).exists():
        return SHIPPED_MODELS[name]
    return Path(ckpt)


def shipped_name(ckpt: Path | str | None) -> str | None:
    """"shipped" or "shipped:NAME" when ``ckpt`` names a shipped model, else None."""
    if ckpt is None:
        return "shipped"
    name = str(ckpt).removeprefix("shipped:")
    return f"shipped:{name}" if name in SHIPPED_MODELS and not Path(ckpt).exists() else None


def save_checkpoint(ckpt_dir: Path, model: RetrievalModel, features: FeatureConfig, extra: dict) -> None:
    """Write weights (fp32) and config.json {kind, model, features, **extra} atomically."""
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().float().contiguous().clone() if v.is_floating_point() else v.cpu().clone()
               for k, v in model.state_dict().items()}
    with atomic_path(ckpt_dir / ckpt_io.WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": KIND, "step": str(extra.get("step", ""))})
    write_json_atomic(ckpt_dir / ckpt_io.CONFIG, {"kind": KIND, "model": asdict(model.cfg),
                                                  "features": asdict(features), **extra})


def model_config(d: dict) -> RetrievalModelConfig:
    return RetrievalModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_checkpoint(ckpt_dir: Path | None) -> tuple[RetrievalModel, FeatureConfig, dict]:
    """(model in eval mode on CPU, feature config, config dict); None = the shipped weights,
    "small" / "scans" = the other shipped models (SHIPPED_MODELS)."""
    ckpt_dir = resolve(ckpt_dir)
    if not ckpt_dir.is_dir():
        hint = " (no shipped retrieval weights: train with 'umust train retrieval' and pass --model)"
        raise CheckpointError(f"no checkpoint directory: {ckpt_dir}" + (hint if ckpt_dir in SHIPPED_MODELS.values() else ""))
    config = ckpt_io.read_config(ckpt_dir)
    if config.get("kind") != KIND:
        raise CheckpointError(f"{ckpt_dir} holds a {config.get('kind')!r} checkpoint, not a retrieval model")
    try:
        model = RetrievalModel(model_config(config["model"]))
        features = FeatureConfig(**config["features"])
        model.load_state_dict(ckpt_io.read_weights(ckpt_dir / ckpt_io.WEIGHTS))
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt_dir}: weights do not fit its config.json ({e})") from e
    return model.eval(), features, config


def model_id(config: dict) -> str:
    """A short fingerprint of a checkpoint's architecture, features and step (stored in indexes)."""
    import hashlib
    import json

    key = json.dumps({k: config.get(k) for k in ("model", "features", "step", "run_id")}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def save_resume_state(ckpt_dir: Path, model: RetrievalModel, optimizer: torch.optim.Optimizer, step: int) -> None:
    ckpt_io.save_train_state(ckpt_dir, {"step": step, "model": model.state_dict(),
                                        "optimizer": optimizer.state_dict(), "rng": ckpt_io.rng_state()})


def load_resume_state(ckpt_dir: Path) -> dict | None:
    return ckpt_io.load_train_state(ckpt_dir)
