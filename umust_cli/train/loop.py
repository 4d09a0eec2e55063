"""Pieces every training loop shares: device choice, clean stops on signals, the loss log."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import NamedTuple

import torch

from umust_cli.errors import BadInputError
from umust_cli.io import write_text_atomic
from umust_cli.train import checkpoint as ckpt_io


class TrainResult(NamedTuple):
    """What a codec training call did (the image and the audio trainer return the same)."""

    step: int
    start_step: int
    stop_reason: str        # "max_steps", "max_minutes", "signal", "done"
    last_loss: float | None
    eval: dict | None       # held-out scores of the trainer ({"psnr", "f1", "images"} / {"si_sdr", ...})

    def summary(self, checkpoint: Path) -> dict:
        """The JSON summary the training commands print."""
        return {"checkpoint": str(checkpoint), "step": self.step, "start_step": self.start_step,
                "stopped": self.stop_reason, "last_loss": self.last_loss, "eval": self.eval}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise BadInputError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint (the steps a kill threw away)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if (row := _parse_row(line)) is not None and row.get("step", 0) <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def _parse_row(line: str) -> dict | None:
    """A log row, or None for a blank or half-written line (a kill mid-write)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


class StopOnSignal:
    """First SIGINT/SIGTERM asks the loop to save and stop; a second one interrupts."""

    def __init__(self) -> None:
        self.requested, self._old = False, {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def read_log(ckpt_dir: str | Path) -> list[dict]:
    """The rows of a run's train_log.jsonl (training rows and evaluation rows)."""
    path = Path(ckpt_dir) / ckpt_io.TRAIN_LOG
    if not path.is_file():
        return []
    rows = (_parse_row(line) for line in path.read_text(encoding="utf-8").splitlines())
    return [r for r in rows if r is not None]
