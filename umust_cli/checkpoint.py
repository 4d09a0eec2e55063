"""Checkpoint directories: atomic, self-describing, checked on load (every model kind).

Layout of a checkpoint directory::

    model.safetensors   weights and buffers (what inference needs); metadata: step, kind
    config.json         {"kind": ..., "model": <architecture dataclass>, "train": ..., "step": N, ...}
    vocabulary.json     the token vocabulary the model was trained for (token models only)
    train_state.pt      resume state only: step, model + optimizer state, RNG states
    train_log.jsonl     one JSON row per logged step (written by the training engine)

Every file is written to a temporary name beside its destination and renamed
over it (as audiocraft's ``write_and_rename``), so a kill leaves either the
old or the new version, never half a file. ``train_state.pt`` carries its own
copy of the weights, so resuming reads one file and can never mix the weights
of one step with the optimizer state of another.

A vocabulary is any object with ``save(path)``, ``check_matches(other, what=)``
and a class method ``load(path)`` (:class:`umust_cli.codecs.vocab.Vocabulary`);
this module sits below the codecs and does not import them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from umust_cli.errors import CheckpointError
from umust_cli.io import atomic_path, write_json_atomic

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCABULARY = "vocabulary.json"
TRAIN_STATE = "train_state.pt"
TRAIN_LOG = "train_log.jsonl"


def save_model(ckpt_dir: str | Path, state: dict[str, torch.Tensor], config: dict,
               vocab: Any = None, dtype: torch.dtype | None = None) -> None:
    """Write weights (optionally cast floats to ``dtype``), config and, if given, the vocabulary."""
    from safetensors.torch import save_file

    ckpt = Path(ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {k: _cast(v, dtype).detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {"kind": str(config.get("kind", "")), "step": str(config.get("step", ""))}
    with atomic_path(ckpt / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_json_atomic(ckpt / CONFIG, config)
    if vocab is not None:
        vocab.save(ckpt / VOCABULARY)


def export_fp16(ckpt_dir: str | Path, out_dir: str | Path, vocab: Any = None) -> Path:
    """Copy a run's model as a shippable fp16 checkpoint (weights, config, vocabulary; no
    optimizer or discriminator state): the layout of ``umust_cli/weights/*``."""
    weights, config = load_model(ckpt_dir, vocab)
    save_model(out_dir, weights, config, vocab, dtype=torch.float16)
    return Path(out_dir) / WEIGHTS


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def load_model(ckpt_dir: str | Path, vocab: Any = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in float32, config) of ``ckpt_dir``; its vocabulary is checked against
    ``vocab`` when both the folder and the caller have one."""
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise CheckpointError(f"no checkpoint directory: {ckpt}")
    check_vocabulary(ckpt, vocab)
    config = read_config(ckpt)
    return read_weights(ckpt / WEIGHTS), config


def check_vocabulary(ckpt_dir: str | Path, vocab: Any = None) -> None:
    """VocabularyMismatchError unless ``ckpt_dir``'s vocabulary (if it has one) is ``vocab`` (if given)."""
    path = Path(ckpt_dir) / VOCABULARY
    if vocab is not None and path.is_file():
        vocab.check_matches(type(vocab).load(path), what=f"checkpoint {ckpt_dir}")


def load_module(ckpt_dir: str | Path, kind: str, build: Callable[[dict], torch.nn.Module],
                vocab: Any = None) -> torch.nn.Module:
    """The module of a checkpoint of ``kind``: ``build(config["model"])`` with its weights loaded.

    Raises CheckpointError (one line) for another kind of checkpoint or weights that do not fit.
    """
    state, config = load_model(ckpt_dir, vocab)
    check_kind(ckpt_dir, config, kind)
    try:
        model = build(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir}: its {CONFIG} does not describe a {kind} model "
                              f"({type(e).__name__}: {e})") from e
    load_state(model, state, ckpt_dir)
    return model


def check_kind(ckpt_dir: str | Path, config: dict, kind: str) -> None:
    if config.get("kind") != kind:
        raise CheckpointError(f"{ckpt_dir} is not a {kind} checkpoint (kind {config.get('kind')!r})")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """``module.load_state_dict(state)``; a mismatch is one CheckpointError line that says how
    many tensors are missing, unexpected or of another shape (and names the first of each)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{len(items)} {what} (first: {items[0]})"
             for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
             if items]
    if parts:
        raise CheckpointError(f"weights in {where} do not fit their config: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def warm_start(module: torch.nn.Module, init_dir: str | Path, kind: str, model_config: dict,
               vocab: Any = None, normalize: Callable[[dict], dict] | None = None,
               fresh: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> dict:
    """Load the weights of checkpoint ``init_dir`` (e.g. a shipped fp16 model) into ``module``
    to start a new run from them; returns the training-log row that records it (step 0).

    The checkpoint must be of ``kind``, for the same vocabulary and the same architecture
    (its saved model config passed through ``normalize`` first, e.g. the config class's
    round trip, so that fields added since it was saved take their defaults; ``normalize``
    may also copy the run's value of a field that only adds a training head). Tensors whose
    names start with a ``fresh`` prefix and that the checkpoint lacks keep their new values;
    those starting with a ``drop`` prefix are not taken from it (a head of other classes).
    """
    state, config = load_model(init_dir, vocab)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    for name, value in module.state_dict().items():
        if fresh and name.startswith(fresh) and name not in state:
            state[name] = value
    model_config = json.loads(json.dumps(model_config))  # tuples -> lists, as saved
    if config.get("kind") != kind:
        raise CheckpointError(f"--init {init_dir} is not a {kind} checkpoint (kind {config.get('kind')!r})")
    saved = config.get("model") or {}
    if normalize is not None:
        try:
            saved = json.loads(json.dumps(normalize(saved)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"--init {init_dir}: unreadable model config ({e})") from e
    if saved != model_config:
        diff = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
        raise CheckpointError(f"--init {init_dir} has another architecture (differs in: {', '.join(diff)}); "
                              "choose the --config it was trained with")
    load_state(module, state, init_dir)
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


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a float32 state dict on the CPU; a missing or damaged file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
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
    """The torch (and CUDA) generator states; Python's and numpy's travel as tensors/lists too."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": torch.from_numpy(_numpy_state()),
                             "python": torch.tensor(_python_state(), dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:  # runs saved before numpy's state was kept lack it
        keys = state["numpy"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys[:-1], int(keys[-1])))
    if "python" in state:
        random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def _numpy_state() -> np.ndarray:
    _, keys, pos, *_ = np.random.get_state()
    return np.append(keys.astype(np.int64), pos)


def _python_state() -> list[int]:
    return list(random.getstate()[1])


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
