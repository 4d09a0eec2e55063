"""The one training loop of every `umust train` command.

A trainer describes its model as a :class:`Task` (the batch of step N, one
update, evaluation, its resume state, its checkpoint files); :func:`fit` owns
everything around that:

* stop reasons: ``--max-steps``, ``--max-minutes`` (stopping one step early
  rather than late), SIGTERM/SIGINT (the first one saves and stops at once,
  without the final evaluation; a second one interrupts);
* saves every ``save_every`` steps and at the end, as one set: the task's
  files and ``train_state.pt`` are written into ``.saving/``, marked complete,
  then moved into place, so a kill at any moment leaves weights, optimizer
  state and RNG state of one and the same step (a complete set left in
  ``.saving/`` is moved into place when the run resumes);
* resume: the training config is compared through its dataclass
  (``from_dict(saved) == config``, so a field added since the run was saved
  compares with its default), the task's state and the RNG states come back,
  the batches continue at the saved step, and log rows written after the save
  are dropped: N straight steps == N/2 + kill + resume to N, bit for bit;
* ``--init``: a fresh run starts from another checkpoint's weights;
* evaluation every ``eval_every`` steps and at the end, and keep-best:
  when the task scores its evaluations, the best-scoring checkpoint so far
  (the first of ties) is also written to ``OUTPUT/best``;
* the log ``train_log.jsonl`` (training rows every ``log_every`` steps and
  ``{"step", "eval"}`` rows) and the progress bar.

The task owns its optimizer step(s), precision and data parallelism, so a
multi-task, gradient-accumulating or DistributedDataParallel trainer fits
without changes here; with ``main_process=False`` (ranks other than 0) fit
trains but writes nothing.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Protocol

from umust_cli import checkpoint as ckpt_io
from umust_cli.errors import CheckpointError
from umust_cli.io import write_text_atomic

STAGING, COMPLETE, BEST = ".saving", "COMPLETE", "best"


@dataclass(frozen=True)
class RunOptions:
    """How long and where to run; may change between a run and its resumption."""

    max_steps: int | None = None
    max_minutes: float | None = None
    save_every: int = 500
    eval_every: int = 0            # 0: evaluate only when the run ends
    eval_items: int = 8            # validation images / files the codec trainers score
    log_every: int = 1
    device: str = "auto"
    progress: bool = True
    workers: int = 0               # > 0: processes that build the next batches (tasks that support it)


class TrainResult(NamedTuple):
    """What a training call did (every trainer returns this)."""

    step: int
    start_step: int
    stop_reason: str        # "max_steps", "max_minutes", "signal"
    last_loss: float | None
    eval: dict | None       # the task's scores of the last step, if it was evaluated

    def summary(self, checkpoint: Path) -> dict:
        """The JSON summary the training commands print."""
        return {"checkpoint": str(checkpoint), "step": self.step, "start_step": self.start_step,
                "stopped": self.stop_reason, "last_loss": self.last_loss, "eval": self.eval}


class TrainConfigLike(Protocol):
    """A frozen training-config dataclass: everything that shapes the trajectory."""

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, obj: dict) -> "TrainConfigLike": ...


class Task(Protocol):
    """What a model provides to :func:`fit`. ``step`` counts the updates done before this one."""

    name: str  # the progress bar's label

    def batches(self, start: int) -> Iterator[Any]:
        """The batches of steps start, start + 1, ... (a function of the seed and the step)."""

    def train_step(self, batch: Any, step: int) -> dict:
        """One update (the task steps its own optimizers); the log terms, with "loss"."""

    def evaluate(self) -> dict | None:
        """Validation scores of the current weights (None: nothing to score)."""

    def score(self, scores: dict) -> float | None:
        """The number keep-best maximises (None: keep no best checkpoint)."""

    def state_dict(self) -> dict:
        """Resume state beyond step, config and RNG (optimizers, and weights if not in files)."""

    def load_state_dict(self, state: dict, ckpt_dir: Path) -> None:
        """Restore :meth:`state_dict` (and whatever :meth:`save` wrote into ``ckpt_dir``)."""

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        """Write the model's checkpoint files; ``extra`` ({"val": scores}) goes into its config.json."""

    def warm_start(self, init: Path) -> dict:
        """Load ``init``'s weights into a fresh run; the log row that records it."""


class ModelAndOptimizerState:
    """``state_dict``/``load_state_dict`` of a task whose resume state is one module ``model`` and
    one optimizer ``opt``; a ``vocab`` (if not None) is checked against the saved run's first."""

    model: Any
    opt: Any
    vocab: Any = None

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict, ckpt_dir: Path) -> None:
        ckpt_io.check_vocabulary(ckpt_dir, self.vocab)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


def fit(task: Task, ckpt_dir: str | Path, config: TrainConfigLike, run: RunOptions,
        init: str | Path | None = None, on_step: Callable[[int, dict], None] | None = None,
        main_process: bool = True) -> TrainResult:
    """Train (or resume) ``task`` in ``ckpt_dir`` until ``run``'s limits or a signal."""
    ckpt_dir = Path(ckpt_dir)
    start, first_rows = _start(task, ckpt_dir, config, init, main_process)
    loop = _Loop(task, ckpt_dir, config, run, main_process, start)
    with StopOnSignal() as stop, _progress(task.name, run, start, main_process) as bar, \
            _open_log(ckpt_dir, main_process) as log:
        for row in first_rows:
            log(row)
        reason = loop.train(stop, bar, log, on_step)
        loop.finish(log, evaluate=reason != "signal")
    return TrainResult(loop.step, start, reason, loop.last_loss, loop.eval)


class _Loop:
    def __init__(self, task: Task, ckpt_dir: Path, config: TrainConfigLike, run: RunOptions,
                 main_process: bool, start: int):
        self.task, self.ckpt_dir, self.config, self.run = task, ckpt_dir, config, run
        self.main, self.start, self.step = main_process, start, start
        self.last_loss: float | None = None
        self.eval: dict | None = None

    def train(self, stop: "StopOnSignal", bar, log, on_step) -> str:
        """Steps until a stop reason; returns it."""
        run, batches, t0 = self.run, self.task.batches(self.start), time.monotonic()
        while not (reason := self._agreed(_why_stop(run, self.step, self.start, t0, stop))):
            terms = self.task.train_step(next(batches), self.step)
            self.step += 1
            row = {"step": self.step, **terms, "time_s": round(time.monotonic() - t0, 3)}
            self.last_loss, self.eval = terms.get("loss"), None
            if self.step % max(1, run.log_every) == 0:
                log(row)
            bar.set_postfix(loss=f"{self.last_loss:.4f}" if self.last_loss is not None else "-", refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(self.step, row)
            if run.eval_every and self.step % run.eval_every == 0:
                self._evaluate(log)
            if self.step % run.save_every == 0:
                self._save(self.ckpt_dir)
        return reason

    def _agreed(self, reason: str) -> str:
        """The stop reason every process acts on: a data-parallel task's ``agree_stop(reason)``
        (processes whose clocks or signals differ must stop at the same step), else ``reason``."""
        agree = getattr(self.task, "agree_stop", None)
        return agree(reason) if agree is not None else reason

    def finish(self, log, evaluate: bool = True) -> None:
        """The final evaluation (unless the last step was just scored, or ``evaluate`` is False:
        a signal asks for a prompt stop, and a translator's greedy decoding can take minutes)
        and save."""
        if evaluate and self.step > self.start and self.eval is None:
            self._evaluate(log)
        if self.step > self.start or not (self.ckpt_dir / ckpt_io.WEIGHTS).is_file():
            self._save(self.ckpt_dir)

    def _evaluate(self, log) -> None:
        self.eval = self.task.evaluate()
        if self.eval is None:
            return
        log({"step": self.step, "eval": self.eval})
        if self.run.eval_every and self.main:
            keep_if_best(self.task, self.ckpt_dir / BEST, self.step, self.eval)

    def _save(self, ckpt_dir: Path) -> None:
        if self.main:
            save(self.task, ckpt_dir, self.config, self.step, self.eval)


# ---------------------------------------------------------------------------
# Saving, resuming, keep-best
# ---------------------------------------------------------------------------

def save(task: Task, ckpt_dir: Path, config: TrainConfigLike, step: int, scores: dict | None = None) -> None:
    """Write the task's files and the resume state as one set (see the module docstring)."""
    stage = ckpt_dir / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    task.save(stage, step, {"val": scores} if scores else {})
    ckpt_io.save_train_state(stage, {"step": step, "config": config_json(config),
                                     "rng": ckpt_io.rng_state(), **task.state_dict()})
    (stage / COMPLETE).write_text(str(step), encoding="utf-8")
    finish_interrupted_save(ckpt_dir)


def finish_interrupted_save(ckpt_dir: Path) -> None:
    """Move a complete staged save into place; drop an incomplete one."""
    stage = ckpt_dir / STAGING
    if not stage.is_dir():
        return
    if (stage / COMPLETE).is_file():
        for f in sorted(stage.iterdir()):
            if f.name != COMPLETE:
                f.replace(ckpt_dir / f.name)
    shutil.rmtree(stage, ignore_errors=True)


def keep_if_best(task: Task, best_dir: Path, step: int, scores: dict) -> None:
    """Save the model to ``best_dir`` when ``scores`` beat the scores saved there (ties: the first)."""
    score = task.score(scores)
    if score is None:
        return
    if (best_dir / ckpt_io.CONFIG).is_file():
        saved = ckpt_io.read_config(best_dir).get("val")
        if saved and task.score(saved) >= score:
            return
    task.save(best_dir, step, {"val": scores})


def config_json(config: TrainConfigLike) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def check_config(ckpt_dir: Path, config: TrainConfigLike, saved: dict) -> None:
    """CheckpointError unless ``saved`` (a run's training config) is ``config``; compared through
    ``from_dict``, so fields added since the run was saved take their defaults."""
    now = json.loads(config_json(config))
    try:
        same = type(config).from_dict(saved) == config
        saved = json.loads(config_json(type(config).from_dict(saved)))
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise CheckpointError(f"{ckpt_dir} holds a run with another training config (differs in: "
                              f"{', '.join(diff) or 'types'}); use the same options to resume, "
                              "or train into a new directory")


def saved_config(ckpt_dir: Path, state: dict) -> dict | None:
    """The training config a run was saved with (runs of older retrieval trainers kept it only in
    config.json's "train")."""
    if "config" in state:
        return json.loads(state["config"])
    if (ckpt_dir / ckpt_io.CONFIG).is_file():
        return ckpt_io.read_config(ckpt_dir).get("train")
    return None


def check_resumable(ckpt_dir: str | Path, config: TrainConfigLike, main_process: bool = True) -> dict | None:
    """The resume state of ``ckpt_dir`` (None for a fresh run) after checking its config; a trainer
    may call this before it loads its data, to fail early. Only the main process finishes a save
    that a kill interrupted."""
    ckpt_dir = Path(ckpt_dir)
    if main_process:
        finish_interrupted_save(ckpt_dir)
    state = ckpt_io.load_train_state(ckpt_dir)
    if state is not None and (saved := saved_config(ckpt_dir, state)) is not None:
        check_config(ckpt_dir, config, saved)
    return state


def _start(task: Task, ckpt_dir: Path, config: TrainConfigLike, init: str | Path | None,
           main_process: bool) -> tuple[int, list[dict]]:
    """(step, log rows to write first): resume ``ckpt_dir``, or start fresh (from ``init``)."""
    state = check_resumable(ckpt_dir, config, main_process)
    step = 0
    if state is not None:
        task.load_state_dict(state, ckpt_dir)
        if "rng" in state:
            ckpt_io.set_rng_state(state["rng"])
        step = int(state["step"])
    if main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        truncate_log(ckpt_dir / ckpt_io.TRAIN_LOG, step if state is not None else -1)
    if state is None and init is not None:
        return 0, [task.warm_start(Path(init))]
    return step, []


# ---------------------------------------------------------------------------
# Stopping, logging, progress
# ---------------------------------------------------------------------------

def _why_stop(run: RunOptions, step: int, start: int, t0: float, stop: "StopOnSignal") -> str:
    """Why to stop before the next step ("" to go on); the time budget keeps one step in hand."""
    if stop.requested:
        return "signal"
    if run.max_steps is not None and step >= run.max_steps:
        return "max_steps"
    if run.max_minutes is not None:
        elapsed = time.monotonic() - t0
        per_step = elapsed / (step - start) if step > start else 0.0
        if elapsed + per_step >= run.max_minutes * 60:
            return "max_minutes"
    return ""


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


class _open_log:
    """A callable that appends one JSON row to the run's log (a no-op off the main process)."""

    def __init__(self, ckpt_dir: Path, enabled: bool):
        self.path, self.enabled, self.file = ckpt_dir / ckpt_io.TRAIN_LOG, enabled, None

    def __enter__(self) -> "_open_log":
        if self.enabled:
            self.file = open(self.path, "a", encoding="utf-8")
        return self

    def __call__(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()


def _progress(name: str, run: RunOptions, step: int, main_process: bool):
    from tqdm import tqdm

    return tqdm(total=run.max_steps, initial=step, disable=not (run.progress and main_process),
                file=sys.stderr, dynamic_ncols=True, unit="step", desc=name)


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


def read_log(ckpt_dir: str | Path) -> list[dict]:
    """The rows of a run's train_log.jsonl (training rows and evaluation rows)."""
    path = Path(ckpt_dir) / ckpt_io.TRAIN_LOG
    if not path.is_file():
        return []
    rows = (_parse_row(line) for line in path.read_text(encoding="utf-8").splitlines())
    return [r for r in rows if r is not None]
