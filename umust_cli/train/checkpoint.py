"""Checkpoint directories: atomic, self-describing, checked on load.

Layout of a checkpoint directory::

    model.safetensors   weights and buffers (what inference needs); metadata: step, kind
    config.json         {"kind": ..., "model": <architecture dataclass>, "train": ..., "step": N}
    vocabulary.json     the unified vocabulary the model was trained for
    train_state.pt      resume state only: step, model + optimizer state, RNG states
    train_log.jsonl     one JSON row per logged step (written by the trainer)

Every file is written to a temporary name beside its destination and renamed
over it (as audiocraft's ``write_and_rename``), so a kill leaves either the
old or the new version, never half a file. ``train_state.pt`` carries its own
copy of the weights, so resuming reads one file and can never mix the weights
of one step with the optimizer state of another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from umust_cli.codecs.vocab import Vocabulary
from umust_cli.errors import CheckpointError
from umust_cli.io import atomic_path, write_json_atomic

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCABULARY = "vocabulary.json"
TRAIN_STATE = "train_state.pt"
TRAIN_LOG = "train_log.jsonl"


def save_model(ckpt_dir: str | Path, state: dict[str, torch.Tensor], config: dict,
               vocab: Vocabulary, dtype: torch.dtype | None = None) -> None:
    """Write weights (optionally cast floats to ``dtype``), config and vocabulary."""
    from safetensors.torch import save_file

    ckpt = Path(ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {k: _cast(v, dtype).detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {"kind": str(config.get("kind", "")), "step": str(config.get("step", ""))}
    with atomic_path(ckpt / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_json_atomic(ckpt / CONFIG, config)
    vocab.save(ckpt / VOCABULARY)


def export_fp16(ckpt_dir: str | Path, out_dir: str | Path, vocab: Vocabulary) -> Path:
    """Copy a run's model as a shippable fp16 checkpoint (weights, config, vocabulary; no
    optimizer or discriminator state): the layout of ``umust_cli/weights/*-codec``."""
    weights, config = load_model(ckpt_dir, vocab)
    save_model(out_dir, weights, config, vocab, dtype=torch.float16)
    return Path(out_dir) / WEIGHTS


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def load_model(ckpt_dir: str | Path, vocab: Vocabulary) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in float32, config) of ``ckpt_dir``, after checking its vocabulary."""
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise CheckpointError(f"no checkpoint directory: {ckpt}")
    vocab.check_matches(Vocabulary.load(ckpt / VOCABULARY), what=f"checkpoint {ckpt}")
    config = read_config(ckpt)
    return read_weights(ckpt / WEIGHTS), config


def load_module(ckpt_dir: str | Path, vocab: Vocabulary, kind: str,
                build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """The module of a checkpoint of ``kind``: ``build(config["model"])`` with its weights loaded.

    Raises CheckpointError for another kind of checkpoint or weights that do not fit.
    """
    state, config = load_model(ckpt_dir, vocab)
    if config.get("kind") != kind:
        raise CheckpointError(f"{ckpt_dir} is not a {kind} checkpoint (kind {config.get('kind')!r})")
    try:
        model = build(config["model"])
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"weights in {ckpt_dir} do not fit their config: {e}") from e
    return model


def warm_start(module: torch.nn.Module, init_dir: str | Path, vocab: Vocabulary, kind: str,
               model_config: dict) -> dict:
    """Load the weights of checkpoint ``init_dir`` (e.g. a shipped fp16 codec) into ``module``
    to start a new run from them; returns the training-log row that records it (step 0).

    The checkpoint must be of ``kind``, for the same vocabulary and the same architecture.
    """
    state, config = load_model(init_dir, vocab)
    model_config = json.loads(json.dumps(model_config))  # tuples -> lists, as saved
    if config.get("kind") != kind:
        raise CheckpointError(f"--init {init_dir} is not a {kind} checkpoint (kind {config.get('kind')!r})")
    if config.get("model") != model_config:
        diff = sorted(k for k in set(config.get("model") or {}) | set(model_config)
                      if (config.get("model") or {}).get(k) != model_config.get(k))
        raise CheckpointError(f"--init {init_dir} has another architecture (differs in: {', '.join(diff)}); "
                              "choose the --config it was trained with")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {init_dir} do not fit their config: {e}") from e
    return {"step": 0, "init": str(init_dir), "init_step": int(config.get("step", 0))}


def read_config(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint has no {CONFIG}: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return config


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a state dict on the CPU; a missing or damaged file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint has no weights file: {path}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({e}); "
                              "re-copy it or train again") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# ---------------------------------------------------------------------------
# Resume state
# ---------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    """Atomically write the resume state (a dict of tensors, numbers, strings)."""
    with atomic_path(Path(ckpt_dir) / TRAIN_STATE) as tmp:
        torch.save(state, tmp)


def load_train_state(ckpt_dir: str | Path) -> dict[str, Any] | None:
    """The resume state, or None when ``ckpt_dir`` has none (a fresh run)."""
    path = Path(ckpt_dir) / TRAIN_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged pickle/zip
        raise CheckpointError(f"resume state {path} is truncated or corrupt ({type(e).__name__}: "
                              f"{e}); delete it to start over") from e
