"""Background training on a CPU: one command to start (or resume) a run, its status, and the
deliberate promotion of its best checkpoint into the package's weights.

A background run is a ``umust train translator`` process (or one of a reader's: ``umust train
note-reader|pitch-reader|key-reader``, ``plan_reader``) started detached (its own session,
stdin closed, output appended to ``RUN/background.log``, its id in ``RUN/background.pid``);
each start appends a row to ``RUN/background.jsonl`` (when, what it did, the corpus, the
trainer options, threads, budget, the step it started from), which is what later starts and
the status read:

* ``RUN`` holds a run: resume it with the options it was saved with (its ``config.json``'s
  "train", written back as trainer flags), the last start's corpus and run options unless new
  ones are given;
* else, when the kind's default weights ship: a new run ``--init`` from them, with their
  saved training options as the starting point;
* else a fresh run.

``--save-every`` comes from the run's own pace (steps per minute in its log) so that it saves
about every ``save_minutes``; ``--max-minutes`` is the budget (the engine saves before it ends).
Promotion exports the run's best checkpoint as fp16 into a weights folder only when its
validation metric beats the folder's, and writes the model card's generated part; the commit
stays a human step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from umust_cli import checkpoint as ckpt_io
from umust_cli import registry
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.errors import BadInputError
from umust_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from umust_cli.train.engine import BEST, COMPLETE, STAGING, read_log
from umust_cli.train.translator import FLAGS, SWITCHES, TrainConfig

SESSIONS, LOG, PID = "background.jsonl", "background.log", "background.pid"
CARD = "MODEL_CARD.md"
FIRST_SAVE_EVERY = 50          # steps between saves before the run's pace is known
# Trainer options the background command sets itself (refused among the trainer options).
OWNED = ("-o", "--output", "--data", "--codes", "--direction", "--max-minutes", "--threads", "--json", "--quiet")
# The trainer flag of each TrainConfig field: train.translator.FLAGS and SWITCHES.
ALWAYS = ("direction", "preset", "tasks")   # written even at their defaults (tasks' depend on the direction)


@dataclass(frozen=True)
class BackgroundRequest:
    """What `umust train background translator|KIND` was asked for."""

    run_dir: Path
    data: Path | None = None          # None on resume: the last start's
    codes: Path | None = None
    direction: str | None = None      # None: the run's own, else i2a
    budget_minutes: float = 170.0
    save_minutes: float = 5.0
    threads: int = 0                  # 0: every core this process may use
    extras: tuple[str, ...] = ()      # more trainer options (None given on resume: the last start's)


@dataclass(frozen=True)
class BackgroundPlan:
    """The trainer's command line (after ``umust``) and what it will do."""

    run_dir: Path
    action: str                       # resume, init or fresh
    init: Path | None                 # the shipped weights a new run starts from
    argv: tuple[str, ...]
    saved_train: dict | None          # a resumed run's saved training config
    session: dict                     # the row this start appends to background.jsonl


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a resumable run (or a complete save a kill left staged)."""
    return (run_dir / ckpt_io.TRAIN_STATE).is_file() or (run_dir / STAGING / COMPLETE).is_file()


def sessions(run_dir: Path) -> list[dict]:
    """The rows of ``RUN/background.jsonl``, oldest first."""
    path = run_dir / SESSIONS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plan_translator(req: BackgroundRequest, weights_dir: Path | None = None) -> BackgroundPlan:
    """Resume, --init from the shipped weights of the kind (under ``weights_dir``) or start fresh."""
    run_dir = req.run_dir
    data, codes, extras = _inputs(req)
    if holds_run(run_dir):
        extras = _without(extras, "--init")   # the engine ignores it on resume; its folder may be gone
        action, init, saved, flags = "resume", None, *_resume_flags(run_dir, req.direction)
        flags = _unnamed(flags, _flag_names(extras))   # an option given again is passed once (the trainer
        #                                                refuses it if it changes the saved config)
    else:
        action, init, flags = _new_run(req.direction or "i2a", extras, weights_dir)
        saved = None
    head = ["train", "translator", "--data", str(data), *(["--codes", str(codes)] if codes else []),
            "-o", str(run_dir), *flags, *extras]
    return _plan(req, action, init, saved, head, {"data": str(data), "codes": str(codes) if codes else None,
                                                  "extras": list(extras)})


# The pixel and note readers: `umust train KIND` trainers with --data, -o, --init, --max-minutes,
# --threads, --save-every and --quiet, whose saved config is their options (``ReaderFlags``).
READER_KINDS = registry.READER_KINDS
# The validation figure each reader keeps its best checkpoint on (registry.VALID_FIGURES).
READER_FIGURES = {kind: figure for kind, (figure, _) in registry.VALID_FIGURES.items() if kind != "umust-translator"}
READER_ARCHITECTURE_FLAGS = ("--channels", "--hidden", "--ctc-target", "--frames")   # a new run with these starts fresh
HIGHER_READER_FIGURES = tuple(f.rstrip("/") for f, up in registry.VALID_FIGURES.values() if up)
ReaderFlags = Callable[[str, dict], list[tuple[str, ...]]]   # (kind, saved config) -> options, one tuple each


def plan_reader(kind: str, req: BackgroundRequest, reader_flags: ReaderFlags,
                weights_dir: Path | None = None) -> BackgroundPlan:
    """Resume a reader run with the options of its saved config (``reader_flags``: the CLI's
    map of a config to the trainer's options; one given again among the trainer options is
    passed once), else start one ``--init`` from the kind's default shipped weights (under
    ``weights_dir``), with the options they were trained with, unless the options name an
    ``--init`` or choose an architecture (READER_ARCHITECTURE_FLAGS), else fresh."""
    if kind not in READER_KINDS and kind not in registry.TRAINED_AS:
        raise BadInputError(f"unknown reader {kind!r}; choose {', '.join(READER_KINDS + tuple(registry.TRAINED_AS))}")
    trainer, option, values = registry.TRAINED_AS.get(kind, (kind, "", ()))
    run_dir = req.run_dir
    data, _, extras = _inputs(req)
    if holds_run(run_dir):
        extras, action, init, saved = _without(extras, "--init"), "resume", None, _run_config(run_dir)
        start = saved
    else:
        names = _flag_names(extras)
        given, own = "--init" in names, bool(names & set(READER_ARCHITECTURE_FLAGS))
        init = None if given or own else registry.default_folder(kind, weights_dir)
        action, saved = "init" if given or init else "fresh", None
        start = ckpt_io.read_config(init) if init else {}   # from shipped weights: their options to start with
        extras = _with_option(kind, extras, start, option, values)
    named = _flag_names(extras)
    flags = [w for option in reader_flags(trainer, start) if option[0] not in named for w in option]
    head = ["train", trainer, "--data", str(data), "-o", str(run_dir), *flags, *extras]
    return _plan(req, action, init, saved.get("train") if saved else None, head,
                 {"kind": kind, "data": str(data), "extras": list(extras)})


def _with_option(kind: str, extras: tuple[str, ...], start: dict, option: str,
                 values: tuple[str, ...]) -> tuple[str, ...]:
    """A new run's trainer options with the one its kind sets (``registry.TRAINED_AS``): as given
    (BadInputError unless one of ``values``), else the start weights' (``start``: their config), else
    the first value."""
    if not option:
        return extras
    if option in extras:
        given = extras[extras.index(option) + 1:extras.index(option) + 2]
        if given[0:1] and given[0] in values:
            return extras
        raise BadInputError(f"a {kind} run trains with {option} {' or '.join(values)}")
    field = option.removeprefix("--").replace("-", "_")
    saved = (start.get("model") or {}).get(field)
    return (option, saved if saved in values else values[0], *extras)


def _inputs(req: BackgroundRequest) -> tuple[Path, Path | None, tuple[str, ...]]:
    """(corpus, codes folder, trainer options) of a start: the request's, else the last start's."""
    past = sessions(req.run_dir)
    last = past[-1] if past else {}
    _refuse_owned(req.extras)
    data = req.data.resolve() if req.data else (Path(last["data"]) if last.get("data") else None)
    if data is None:
        raise BadInputError(f"give --data CORPUS ({req.run_dir} has no earlier background start to take it from)")
    codes = req.codes.resolve() if req.codes else (Path(last["codes"]) if last.get("codes") else None)
    return data, codes, req.extras or tuple(last.get("extras", ()))


def _plan(req: BackgroundRequest, action: str, init: Path | None, saved: dict | None, head: list[str],
          session: dict) -> BackgroundPlan:
    """The plan of ``head`` (the trainer's command and options) run for the request's budget, on its
    threads, saving about every ``save_minutes``; ``session``: what its background.jsonl row adds."""
    run_dir, extras = req.run_dir, session["extras"]
    save_every = ([] if "--save-every" in _flag_names(extras)
                  else ["--save-every", str(save_every_for(run_dir, req.save_minutes))])
    threads = req.threads or len(os.sched_getaffinity(0))
    argv = [*head, *(["--init", str(init)] if init else []), "--max-minutes", f"{req.budget_minutes:g}",
            "--threads", str(threads), *save_every, "--quiet"]
    session = {"action": action, "init": str(init) if init else None, **session, "threads": threads,
               "budget_minutes": req.budget_minutes, "start_step": _saved_step(run_dir), "argv": argv}
    return BackgroundPlan(run_dir, action, init, tuple(argv), saved, session)


def _resume_flags(run_dir: Path, direction: str | None) -> tuple[dict, list[str]]:
    """(saved training config, the flags that recreate it) of the run in ``run_dir``."""
    saved = _run_config(run_dir).get("train") or {}
    if direction is not None and direction != saved.get("direction", "i2a"):
        raise BadInputError(f"{run_dir} holds a {saved.get('direction', 'i2a')} run; its direction cannot change")
    return saved, config_flags(saved)


ARCHITECTURE_FLAGS = ("--preset", "--image-layout", "--column-norm")  # a new run with these starts fresh


def _new_run(direction: str, extras: tuple[str, ...], weights_dir: Path | None) -> tuple[str, Path | None, list[str]]:
    """(action, shipped weights to start from, flags) of a new run: from the kind's default
    shipped weights and their training options, unless none ship, the options name an --init,
    or they choose an architecture (ARCHITECTURE_FLAGS: then it starts fresh)."""
    names = _flag_names(extras)
    given = "--init" in names
    own = any(f in names for f in ARCHITECTURE_FLAGS)
    init = None if given or own else registry.default_folder(f"translator-{direction}", weights_dir)
    if init is None:
        return ("init" if given else "fresh"), None, ["--direction", direction]
    return "init", init, config_flags(ckpt_io.read_config(init).get("train") or {})


def config_flags(train: dict) -> list[str]:
    """Trainer flags that recreate a saved training config: its direction, preset and tasks, and
    every other field that differs from TrainConfig's default (fields it lacks keep the defaults)."""
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    changed = {k: v for k, v in train.items() if k in ALWAYS or v != defaults.get(k)}
    out: list[str] = []
    for field, flag in FLAGS.items():
        if field in changed:
            out += [flag, tasks_text(changed[field]) if field == "tasks" else _text(changed[field])]
    for field, (on, off) in SWITCHES.items():
        if field in changed and (on if changed[field] else off):
            out.append(on if changed[field] else off)
    return out


def tasks_text(tasks: list[dict]) -> str:
    """``--tasks`` text of saved task specs (SOURCE>TARGET@START:END*WEIGHT each)."""
    return ",".join(f"{t['source']}>{t['target']}@{t['start']}:{t['end']}*{_text(t['weight'])}" for t in tasks)


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _flag_names(args: tuple[str, ...] | list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("-")}


def _unnamed(flags: list[str], names: set[str]) -> list[str]:
    """``config_flags`` output without the options in ``names`` (a switch when either of its
    two flags is named)."""
    valued = set(FLAGS.values())
    pairs = {f: {on, off} - {None} for on, off in SWITCHES.values() for f in (on, off) if f}
    out, i = [], 0
    while i < len(flags):
        flag, width = flags[i], 2 if flags[i] in valued else 1
        if not (flag in names or pairs.get(flag, set()) & names):
            out += flags[i:i + width]
        i += width
    return out


def _without(args: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """``args`` without ``flag`` and its value (``FLAG VALUE`` or ``FLAG=VALUE``)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return tuple(out)


def _refuse_owned(extras: tuple[str, ...]) -> None:
    owned = sorted(_flag_names(extras) & set(OWNED))
    if owned:
        raise BadInputError(f"give {', '.join(owned)} to the background command itself, not among the "
                            "trainer options")


def _run_config(run_dir: Path) -> dict:
    """The config.json of the run's last save (a complete staged one first: the trainer moves it
    into place when it starts); {} when there is none."""
    for folder in (run_dir / STAGING, run_dir):
        if (folder / ckpt_io.CONFIG).is_file() and (folder is run_dir or (folder / COMPLETE).is_file()):
            return ckpt_io.read_config(folder)
    return {}


def _saved_step(run_dir: Path) -> int:
    """The step of the run's last save (0: none)."""
    return int(_run_config(run_dir).get("step", 0))


def save_every_for(run_dir: Path, minutes: float) -> int:
    """Steps that take about ``minutes`` at the run's pace (its last logged session's), or
    FIRST_SAVE_EVERY when the run has no timed steps yet."""
    spans = segments(read_log(run_dir), {s["start_step"] for s in sessions(run_dir)})
    if not spans or spans[-1][-1]["time_s"] <= 0:
        return FIRST_SAVE_EVERY
    last = spans[-1]
    per_minute = (last[-1]["step"] - last[0]["step"] + 1) * 60.0 / last[-1]["time_s"]
    return max(1, round(per_minute * minutes))


def segments(rows: list[dict], starts: set[int] = frozenset()) -> list[list[dict]]:
    """The timed training rows of a log, one list per training session: a session begins after
    a step in ``starts`` (the recorded start steps) or where ``time_s`` restarts."""
    out: list[list[dict]] = []
    for row in rows:
        if "time_s" not in row or "eval" in row:
            continue
        if not out or row["step"] - 1 in starts or row["time_s"] < out[-1][-1]["time_s"] \
                or row["step"] <= out[-1][-1]["step"]:
            out.append([])
        out[-1].append(row)
    return out


# ---------------------------------------------------------------------------
# Starting and watching
# ---------------------------------------------------------------------------

def running_pid(run_dir: Path) -> int | None:
    """The id of the background process training ``run_dir`` if it is still alive."""
    path = run_dir / PID
    try:
        pid = int(path.read_text(encoding="utf-8").split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    proc = Path(f"/proc/{pid}")
    try:   # Linux: not a zombie, and not a process that got the id later (started after the pid file)
        if "\nState:\tZ" in (proc / "status").read_text(encoding="utf-8", errors="replace"):
            return None
        started = _boot_time() + int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return pid
    return pid if started <= path.stat().st_mtime + 2.0 else None


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def start(plan: BackgroundPlan) -> subprocess.Popen:
    """Start the plan's trainer detached; record the start. The process (for tests to wait on)."""
    run_dir = plan.run_dir
    pid = running_pid(run_dir)
    if pid is not None:
        raise BadInputError(f"{run_dir} is already training (process {pid}); stop it first: kill {pid}")
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(run_dir / LOG, "a", encoding="utf-8") as log:
        log.write(f"=== {stamp} {plan.action}: umust {' '.join(plan.argv)}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "umust_cli", *plan.argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    write_text_atomic(run_dir / PID, f"{proc.pid}\n")
    write_jsonl_atomic(run_dir / SESSIONS, [*sessions(run_dir), {"started": stamp, "pid": proc.pid,
                                                                  **plan.session}])
    return proc


def run_status(run_dir: Path) -> dict:
    """Where a run stands: steps, wall and core hours, last loss, validation rows, best, running."""
    if not any((run_dir / f).is_file() for f in (ckpt_io.CONFIG, ckpt_io.TRAIN_LOG, f"{BEST}/{ckpt_io.CONFIG}")):
        raise BadInputError(f"{run_dir} holds no training run")
    rows, starts = read_log(run_dir), sessions(run_dir)
    spans = segments(rows, {s["start_step"] for s in starts})
    threads = {s["start_step"]: s["threads"] for s in starts}
    core_s = [span[-1]["time_s"] * threads[span[0]["step"] - 1] for span in spans
              if span[0]["step"] - 1 in threads]
    train = [r for r in rows if "loss" in r and "eval" not in r]
    best = None
    if (run_dir / BEST / ckpt_io.CONFIG).is_file():
        best = {k: v for k, v in _scored(run_dir / BEST).items() if k != "train"}
    return {"run": str(run_dir), "running_pid": running_pid(run_dir), "saved_step": _saved_step(run_dir),
            "logged_step": max((r.get("step", 0) for r in rows), default=0), "sessions": len(starts),
            "wall_hours": round(sum(s[-1]["time_s"] for s in spans) / 3600, 3),
            "cpu_hours": round(sum(core_s) / 3600, 3) if len(core_s) == len(spans) else None,
            "session_wall_s": [s[-1]["time_s"] for s in spans],
            "last_loss": train[-1]["loss"] if train else None,
            "evals": [{"step": r["step"], **r["eval"]} for r in rows if "eval" in r], "best": best}


def _scored(ckpt_dir: Path) -> dict:
    """A checkpoint's step and validation scores, with the name of the metric they were scored on:
    the one ``promote --scored`` recorded (``val["metric"]``), else the one its run keeps best on
    (SER when the run trains OMR and the best metric is auto, as the trainer)."""
    config = ckpt_io.read_config(ckpt_dir)
    train, val = config.get("train") or {}, config.get("val") or {}
    if config.get("kind") in READER_FIGURES:   # a reader: the mean of its figure's keys (what it keeps best on)
        figure = READER_FIGURES[config["kind"]]
        values = [v for k, v in val.items() if k == figure or (figure.endswith("/") and k.startswith(figure))]
        return {"step": config.get("step"), "metric": figure.rstrip("/"), "val": val, "train": train,
                "value": round(sum(values) / len(values), 5) if values else None,
                "classes": (config.get("model") or {}).get("ctc_target")}
    metric = train.get("best_metric", "auto")
    if metric == "auto":
        metric = "ser" if any(t.get("name") == "omr" for t in train.get("tasks", ())) else "loss"
    key = val.get("metric") or ("SER" if metric == "ser" else "loss")
    return {"step": config.get("step"), "metric": key, "value": val.get(key), "val": val, "train": train}


# ---------------------------------------------------------------------------
# Promotion
# ---------------------------------------------------------------------------

CARD_BEGIN = "<!-- umust train promote: generated from here to the end marker; edit above or below -->"
CARD_END = "<!-- umust train promote: end of the generated part -->"


def promote(run_dir: Path, dest: Path, scored: dict | None = None, against: dict | None = None,
            last: bool = False) -> dict:
    """Export the run's best checkpoint (``RUN/best``, else or with ``last`` its last save) as fp16 into ``dest``
    when its validation metric beats the one saved in ``dest`` (or ``dest`` holds no model);
    BadInputError with both numbers otherwise. Writes the model card's generated part.
    ``scored``: an `umust eval` result of this checkpoint's predictions on a corpus's valid split
    (``eval_scored``), used (and saved with the weights) instead of the run's own score;
    ``against``: the same evaluation of the model in ``dest``, when its weights record another."""
    source = run_dir / BEST if (run_dir / BEST / ckpt_io.CONFIG).is_file() and not last else run_dir
    new = _scored(source) if scored is None else eval_scored(source, scored)
    if new["value"] is None:
        raise BadInputError(f"{source} has no validation {new['metric']}: train with --eval-every "
                            "(the run keeps its best checkpoint in RUN/best)")
    if against is not None and not (dest / ckpt_io.CONFIG).is_file():
        raise BadInputError(f"--against: {dest} holds no model to compare")
    old = _old_score(dest, against)
    check_better(new, old, dest)
    stage = dest.parent / f".{dest.name}.promoting"
    shutil.rmtree(stage, ignore_errors=True)
    vocab_file = source / ckpt_io.VOCABULARY
    ckpt_io.export_fp16(source, stage, Vocabulary.load(vocab_file) if vocab_file.is_file() else None)
    if scored is not None:   # the shipped config records the figure it was promoted on
        write_json_atomic(stage / ckpt_io.CONFIG, {**ckpt_io.read_config(stage), "val": new["val"]})
    old_card = (dest / CARD).read_text(encoding="utf-8") if (dest / CARD).is_file() else None
    flags = (" --last" if last else "") + (" --scored VALID.json" if scored is not None else "") \
        + (" --against SHIPPED.json" if against is not None else "")
    write_text_atomic(stage / CARD, model_card(run_dir, dest, new, old_card, flags))
    _replace_folder(stage, dest)
    return {"promoted": str(dest), "from": str(source), "metric": new["metric"], "value": new["value"],
            "previous": old["value"] if old else None, "step": new["step"],
            "bytes": (dest / ckpt_io.WEIGHTS).stat().st_size}


def _old_score(dest: Path, against: dict | None) -> dict | None:
    """The shipped model's score: ``against`` (an eval result of it, ``eval_scored``) or its own."""
    if not (dest / ckpt_io.CONFIG).is_file():
        return None
    return eval_scored(dest, against, "--against") if against is not None else _scored(dest)


# `umust eval` results that score a checkpoint: task -> (metric saved with the weights, the
# summary's figure, higher is better). The reading is `eval amt --dtw` of `translate --via midi`.
SCORED_BY = {"omr": ("SER", "SER", False), "amt": ("reading_F1", "onset_F1", True)}


def eval_scored(source: Path, result: dict, option: str = "--scored") -> dict:
    """``_scored`` of ``source`` with the figure of an `umust eval omr` (SER) or `umust eval amt
    --dtw` (the reading's onset F1) JSON result on a corpus's valid split (BadInputError for
    another result, another split or a result with failures)."""
    summary, task = result.get("summary") or {}, result.get("task")
    usage = (f"{option} needs the JSON of `umust eval omr PRED --data CORPUS --split valid [--limit N] --json` or "
             "of `umust eval amt PRED --data CORPUS --split valid --dtw [--limit N] --json` (they record the split)")
    if task not in SCORED_BY or summary.get("split") != "valid" or SCORED_BY[task][1] not in summary:
        raise BadInputError(usage)
    if task == "amt" and not summary.get("dtw"):
        raise BadInputError(f"{usage}: this amt result was scored without --dtw")
    if summary.get("missing") or summary.get("failed"):
        raise BadInputError(f"{option}: {summary.get('missing')} missing and {summary.get('failed')} failed "
                            "predictions; score every system")
    metric, figure, _ = SCORED_BY[task]
    val = {metric: summary[figure], "scored_systems": summary["files"], "scored_by": f"umust eval {task}",
           "limit": summary.get("limit")}
    if task == "amt":
        val.update(metric=metric, onset_tolerance_ms=summary.get("onset_tolerance_ms"))
    return {**_scored(source), "metric": metric, "value": summary[figure], "val": val}


def check_better(new: dict, old: dict | None, dest: Path) -> None:
    """BadInputError unless ``new`` scores better (lower SER or loss, higher reading F1) than
    ``old`` on the same metric and the same number of scored systems."""
    if old is None:
        return
    what = f"valid {new['metric']}"
    if old["value"] is None or old["metric"] != new["metric"]:
        raise BadInputError(f"not promoted: {dest} records no {what} to compare with (it has "
                            f"{old['metric']} {old['value']}); score both the same way")
    own = {f.rstrip("/") for f in READER_FIGURES.values()}      # a reader's figure over its own classes
    if new["metric"] in own and new.get("classes") != old.get("classes"):
        raise BadInputError(f"not promoted: the run reads {new.get('classes')} classes and {dest} "
                            f"{old.get('classes')} ones: their {new['metric']} counts other edits; score both "
                            "on the same predictions (--scored VALID.json --against SHIPPED.json)")
    n_new, n_old = scored_systems(new["val"]), scored_systems(old["val"])
    if new["metric"] != "loss" and n_new != n_old:
        raise BadInputError(f"not promoted: the run's {new['metric']} was scored on {n_new} valid systems, "
                            f"{dest}'s on {n_old}; score both on the same systems")
    if new["val"].get("onset_tolerance_ms") != old["val"].get("onset_tolerance_ms"):
        raise BadInputError("not promoted: the two readings were scored at different onset tolerances")
    higher = new["metric"] in HIGHER_READER_FIGURES or any(m == new["metric"] and up for m, _, up in SCORED_BY.values())
    if not (new["value"] > old["value"] if higher else new["value"] < old["value"]):
        raise BadInputError(f"not promoted: the run's {what} {new['value']} (step {new['step']}) is not better "
                            f"than {dest}'s {old['value']} (step {old['step']})")


def scored_systems(val: dict) -> int | None:
    """How many valid systems a saved score was measured on: ``scored_systems`` (an eval result,
    ``--scored``), else the trainer's own ``ser_systems`` (also what weights promoted before the
    rename recorded for an eval result)."""
    n = val.get("scored_systems", val.get("ser_systems"))
    return None if n is None else int(n)


def _replace_folder(stage: Path, dest: Path) -> None:
    """Put ``stage`` where ``dest`` is, keeping files of ``dest`` that ``stage`` lacks."""
    if dest.is_dir():
        for f in dest.iterdir():
            if f.is_file() and not (stage / f.name).exists():
                shutil.copy2(f, stage / f.name)
        old = dest.parent / f".{dest.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        stage.rename(dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(dest)


def model_card(run_dir: Path, dest: Path, scored: dict, old_card: str | None, flags: str = "") -> str:
    """The model card: ``old_card`` with its generated part replaced (or appended), or a new
    skeleton whose other sections say what a person must still write. ``flags``: the promote
    command's options, for its line in the card."""
    part = "\n".join([CARD_BEGIN, *_card_part(run_dir, dest, scored, flags), CARD_END])
    if old_card and CARD_BEGIN in old_card and CARD_END in old_card:
        head, rest = old_card.split(CARD_BEGIN, 1)
        return head + part + rest.split(CARD_END, 1)[1]
    if old_card:
        return old_card.rstrip("\n") + "\n\n" + part + "\n"
    train = scored["train"]
    what = f"translator {train.get('direction', '')}" if "direction" in train else dest.name
    return "\n".join([
        f"# Model card: {what} (`umust_cli/weights/{dest.name}`)", "",
        "## What it is", "", "TO WRITE: what it translates, how well, the commit that shipped it.", "",
        "## Architecture and size", "",
        (f"The `{train.get('preset')}` preset, image layout `{train.get('image_layout')}` (config.json)."
         if "preset" in train else "TO WRITE (config.json has its dimensions)."), "",
        part, "", "## Known failure modes", "", "TO WRITE.", "",
        "## License of the training material", "",
        "TO WRITE. Beethoven's piano sonatas are held out: never training or tuning material.", ""])


def _card_part(run_dir: Path, dest: Path, scored: dict, flags: str = "") -> list[str]:
    """The generated Training and Metrics sections (placeholders for machine paths)."""
    st, rows, starts = run_status(run_dir), read_log(run_dir), sessions(run_dir)
    data = next((r["data"] for r in rows if "data" in r), {})
    init = next((r["init"] for r in rows if "init" in r), None)
    tasks = ", ".join(f"{t}: {d.get('train')} train / {d.get('valid')} valid pairs" for t, d in data.items()
                      if isinstance(d, dict))
    val = scored["val"]
    n = f" on {scored_systems(val)} valid systems" if scored_systems(val) is not None else ""
    first = starts[0] if starts else {}
    reader = str(_run_config(run_dir).get("kind", "")).removeprefix("umust-")
    kind = first.get("kind") or (reader if reader in READER_KINDS else "translator")
    extras = first.get("extras") or []
    fresh = "random weights" + ("" if kind in READER_KINDS or kind in registry.TRAINED_AS else " (codebook-initialised embeddings)")
    command = [f"umust train background {kind} RUNS/{run_dir.name} --data CORPUS"
               + (" --codes CODES" if first.get("codes") else "")
               + "".join(f" {_placeholder(a)}" for a in (["--", *extras] if extras else [])),
               f"umust train status RUNS/{run_dir.name}",
               f"umust train promote RUNS/{run_dir.name}{flags} --to umust_cli/weights/{dest.name}"]
    return ["## Training", "",
            f"- Data: {tasks or 'see the run log'} (the corpus's train split; the valid split chooses "
            "the checkpoint; Beethoven's piano sonatas are held out).",
            f"- Started from: {Path(init).name if init else fresh}.",
            f"- Compute: {st['logged_step']} steps in {st['sessions'] or 'unrecorded'} background session(s), "
            f"{st['wall_hours']} wall hours, {st['cpu_hours'] if st['cpu_hours'] is not None else 'unrecorded'} "
            "CPU core-hours.",
            f"- Checkpoint: step {scored['step']}, "
            + (f"scored with `{val['scored_by']}` on {scored_systems(val)} valid systems (`--scored`)."
               if val.get("scored_by") else f"the best valid {scored['metric']} of the run."), "",
            "## Metrics", "", f"Valid {scored['metric']} {scored['value']}{n} (step {scored['step']}); "
            f"every validation row: `umust train status RUNS/{run_dir.name}`.", "",
            "```sh", *command, "```"]


def _placeholder(arg: str) -> str:
    """A command-line word fit for the docs: absolute paths become PATH."""
    return "PATH" if arg.startswith("/") else arg


def run_curve(run_dir: Path) -> dict:
    """A run's learning curve from its train_log.jsonl: the train loss of each step (where a
    resumed run logged a step again, its last row), the validation rows, and the weights it
    started from (``--init``). BadInputError for a folder without a log."""
    rows = read_log(run_dir)
    if not rows:
        raise BadInputError(f"{run_dir} has no {ckpt_io.TRAIN_LOG} with rows: not a training run")
    loss = {r["step"]: float(r["loss"]) for r in rows if "loss" in r and "eval" not in r}
    init = next((r for r in rows if "init" in r), None)
    return {"run": run_dir.name, "steps": sorted(loss), "loss": [loss[s] for s in sorted(loss)],
            "evals": [{"step": r["step"], **r["eval"]} for r in rows if isinstance(r.get("eval"), dict)],
            "init": None if init is None else f"{Path(str(init['init'])).name} @ {init.get('init_step', '?')}"}
