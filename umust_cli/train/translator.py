"""Multi-task training of a translator (`umust train translator`), a task of the training engine.

One model per direction (i2a: OMR, MIDI->audio, image->audio; a2i: transcription,
LMX->image, audio->image), or any tasks given with ``--tasks``; the data side (pairs,
curriculum, token-budget batch plan) is :mod:`umust_cli.data.pairs`. A step is ``accum``
micro-batches per process, each one task, their gradients summed before one AdamW update
(linear warm-up, then cosine decay to ``min_lr_ratio`` of the rate at ``decay_steps``).
Precision: bf16 autocast or fp32; ``auto`` (the default) takes bf16 only where the device
computes it natively (``device.fast_bf16``: an AVX2-only CPU emulates it, several times slower). A fresh run's image/audio code
embeddings start from the shipped codecs' codebooks (``init_from_codebooks``).

Several processes (``torchrun --nproc-per-node N``): DistributedDataParallel over gloo
(CPU) or nccl (CUDA); each rank trains its own micro-batches of the step's plan, rank 0
alone evaluates, logs and saves; the ranks agree on when to stop.

Validation: each task's teacher-forced loss on the valid split and, for OMR, the greedy
SER of a few valid systems; keep-best (``OUTPUT/best``) on ``best_metric``.

Real scans (``realscans``): the systems of the corpus's ``realscan_train`` split (crops of
scanned printed editions with the notation of their bars, `umust dataset scans`; codes from
`umust dataset tokenize --split realscan_train`, in ``realscan_codes`` when they are not with
the other codes) are more image -> notation pairs of the OMR tasks (never of another task),
and ``realscan_valid`` is validated too: ``realscan/loss`` and ``realscan/SER`` beside the
engraved figures (keep-best stays on the engraved ones).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli import registry
from umust_cli.codecs.notation import ChordRule
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.data import corpus as corpus_io
from umust_cli.data import pairs as pairs_io
from umust_cli.data.pairs import Batch, Caps, TaskSpec
from umust_cli.data.roll import RollTargets, roll_notes
from umust_cli.data.staff_order import MARKS, SPELLED_ALTERS, StaffTargets, ctc_classes
from umust_cli.data.tokenize import corpus_vocabulary
from umust_cli.device import fast_bf16, resolve_device
from umust_cli.errors import BadInputError
from umust_cli.eval.metrics import MatchConfig, Notes, match_counts, pooled_prf, pooled_ser, ser_counts
from umust_cli.model.generate import DecodingOptions, generate
from umust_cli.model.translator import (CTC_TARGETS, KEY_FIFTHS, MODEL_KIND, PAD, Translator, TranslatorConfig,
                                        init_from_codebooks, make_config, read_codec_codebooks)
from umust_cli.train.engine import ModelAndOptimizerState, RunOptions, TrainResult, check_resumable, fit

PRECISIONS = ("auto", "bf16", "fp32")   # auto: bf16 where the device computes it natively
METRICS = ("auto", "loss", "ser")
EVAL_PAIRS = 64          # valid pairs per task scored for the teacher-forced loss


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    direction: str = "i2a"
    preset: str = "small"
    image_layout: str = "column"              # measured ahead of grid at equal compute (docs/results.md)
    column_norm: bool = False                 # column layout: LayerNorm on the column content
    token_dropout: float = 0.0                # decoder inputs blanked in training (Translator.forward)
    crops: bool = False                       # train: engraved systems' measure prefixes as OMR pairs too
    guide: float = 0.0                        # weight of the guided-attention loss (model/translator.py)
    ctc: float = 0.0                          # OMR: weight of the CTC loss on each staff's pitches (column layout)
    ctc_target: str = "written"               # ... as written (step + octave), spelled (with the alteration) or marked (with the printed accidental)
    key_loss: float = 0.0                     # OMR: weight of the key-signature head's loss (column layout)
    key_lr_scale: float = 10.0                # ... and its learning rate, times the model's
    ctc_lr_scale: float = 1.0                 # the CTC head's learning rate, times the model's
    roll: float = 0.0                         # transcription: weight of the piano-roll head's loss (audio sources)
    realscans: bool = False                   # OMR: realscan_train systems as pairs, realscan_valid scored
    tasks: tuple[TaskSpec, ...] = ()          # () = the direction's paper tasks
    caps: Caps = field(default_factory=Caps)
    batch_tokens: int = 4096                  # steps per micro-batch, padding included
    accum: int = 1                            # micro-batches per update and process
    world_size: int = 1                       # processes (DistributedDataParallel)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    decay_steps: int = 100_000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"
    codebook_init: bool = True
    scans: bool = True                        # scanned-look copies' codes are image sources too
    best_metric: str = "auto"                 # auto: SER when OMR is trained, else loss
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            object.__setattr__(self, "tasks", pairs_io.parse_tasks(None, self.direction))
        if self.precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}")
        if self.ctc_target not in CTC_TARGETS:
            raise BadInputError(f"unknown --ctc-target {self.ctc_target!r}; choose {' or '.join(CTC_TARGETS)}")
        if self.best_metric not in METRICS:
            raise BadInputError(f"unknown best metric {self.best_metric!r}; choose from {', '.join(METRICS)}")
        if self.batch_tokens < 1 or self.accum < 1 or self.world_size < 1:
            raise BadInputError("--batch-tokens, --accum and the process count must be >= 1")

    def metric(self) -> str:
        if self.best_metric != "auto":
            return self.best_metric
        return "ser" if any(t.name == "omr" for t in self.tasks) else "loss"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "TrainConfig":
        rest = {k: v for k, v in obj.items() if k not in ("tasks", "caps", "betas")}
        rest.setdefault("column_norm", False)          # runs saved before the options
        rest.setdefault("token_dropout", 0.0)
        rest.setdefault("crops", False)
        rest.setdefault("guide", 0.0)
        rest.setdefault("ctc", 0.0)
        rest.setdefault("ctc_target", "written")
        rest.setdefault("key_loss", 0.0)
        rest.setdefault("key_lr_scale", 10.0)
        rest.setdefault("ctc_lr_scale", 1.0)
        rest.setdefault("roll", 0.0)
        rest.setdefault("realscans", False)
        return cls(tasks=tuple(TaskSpec(**t) for t in obj.get("tasks", ())),
                   caps=Caps(**obj.get("caps", {})), betas=tuple(obj.get("betas", (0.9, 0.98))), **rest)


# `umust train translator`'s option of each TrainConfig field it sets: the one table that the
# CLI reads its options through (``config_from_options``) and a resumed background run writes
# its saved config back from (``train.background.config_flags``). Valued options, then switches
# (the flag that sets the field true, the flag that sets it false; None where the CLI has none).
FLAGS = {"direction": "--direction", "preset": "--preset", "image_layout": "--image-layout",
         "tasks": "--tasks", "batch_tokens": "--batch-tokens", "accum": "--accum", "lr": "--lr",
         "warmup_steps": "--warmup-steps", "decay_steps": "--decay-steps", "precision": "--precision",
         "best_metric": "--best-metric", "seed": "--seed", "token_dropout": "--token-dropout",
         "guide": "--guide", "ctc": "--ctc", "ctc_target": "--ctc-target",
         "ctc_lr_scale": "--ctc-lr-scale", "key_loss": "--key-loss", "roll": "--roll"}
SWITCHES = {"column_norm": ("--column-norm", "--no-column-norm"), "codebook_init": (None, "--no-codebook-init"),
            "scans": (None, "--no-scans"), "crops": ("--crops", None), "realscans": ("--realscans", None)}


def _param(flag: str) -> str:
    return flag[2:].replace("-", "_")                  # --image-layout -> image_layout (Typer's name)


def config_from_options(params: dict, world: int) -> TrainConfig:
    """The TrainConfig of `train translator`'s parsed options (``params``: Typer's values by
    parameter name, e.g. ``ctx.params``), for ``world`` processes, through FLAGS and SWITCHES."""
    values = {f: params[_param(flag)] for f, flag in FLAGS.items() if f != "tasks"}
    for f, (on, off) in SWITCHES.items():
        values[f] = bool(params[_param(on)]) if on else not params[_param(off)]
    return TrainConfig(tasks=pairs_io.parse_tasks(params["tasks"], params["direction"]), world_size=world,
                       **values)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``decay_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.decay_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (one: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1):
    gloo on the CPU, nccl on CUDA with one GPU per local rank; the device to train on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return Dist(), dev
    import torch.distributed as tdist

    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=dist.rank, world_size=world)
    return dist, dev


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------

REALSCAN_TRAIN, REALSCAN_VALID = corpus_io.SCAN_SPLITS[:2]


@dataclass
class Data:
    """A split's systems, their sequences and each task's pairs."""

    systems: list
    store: pairs_io.SequenceStore
    pairs: list[list[pairs_io.Pair]]
    too_long: list[int]
    real_from: int            # systems[real_from:] are real scans (none when it is len(systems))

    def real_pairs(self, task: int) -> int:
        return sum(p.system >= self.real_from for p in self.pairs[task])


@dataclass(frozen=True)
class RealScans:
    """A real-scan split to add to a Data's OMR pairs, and the folder of its codes (None: the corpus)."""

    split: str
    codes_dir: Path | None


def is_omr(task: TaskSpec) -> bool:
    return task.source == "image" and task.target == "notation"


def load_data(corpus: Path, split: str | None, cfg: TrainConfig, model_cfg: TranslatorConfig, vocab: Vocabulary,
              codes_dir: Path | None, real: RealScans | None = None,
              more: dict[Path, frozenset[str]] | None = None) -> Data:
    """The pairs of ``split`` (None: none) of ``corpus`` and of each corpus of ``more`` (with
    their codes in them; less the pieces it maps them to), and, with ``real``, the real scans
    of ``real.split`` as more pairs of the OMR tasks only."""
    wanted = sorted({m for t in cfg.tasks for m in (t.source, t.target)})
    sources = [(corpus, codes_dir, frozenset()), *((m, None, skip) for m, skip in (more or {}).items())]
    systems = []
    for root, codes, skip in sources if split is not None else []:
        systems += pairs_io.load_systems(root, split, vocab, codes, wanted, scans=cfg.scans,
                                         crops=cfg.crops and split == "train", skip_pieces=skip)[0]
    _check_unique_keys(systems)
    base = len(systems)
    if real is not None:
        systems = systems + real_scan_systems(corpus, real, vocab)
    found = [pairs_io.task_pairs(systems if is_omr(t) else systems[:base], t, model_cfg, cfg.caps)
             for t in cfg.tasks]
    return Data(systems, pairs_io.SequenceStore(systems, model_cfg), [p for p, _ in found],
                [n for _, n in found], base)


def same_works(corpus: Path, extra: Path) -> frozenset[str]:
    """The pieces of ``extra`` whose score file has the name of a valid or test piece's of
    ``corpus`` (another edition of the same work, e.g. music21's Chopin mazurka of a test piece):
    never trained on."""
    def name(row: dict) -> str:
        return Path(str(row.get("source", "")).split(":", 1)[-1]).stem.lower()

    held = {name(r) for r in corpus_io.rows(corpus, ("valid", "test"))} - {""}
    return frozenset(r["piece_id"] for r in corpus_io.rows(extra) if name(r) in held)


def _check_unique_keys(systems: list) -> None:
    seen: set[tuple[str, str]] = set()
    for s in systems:
        if (s.key, s.copy) in seen:
            raise BadInputError(f"system {s.key} is in two of the training corpora (the same piece twice?)")
        seen.add((s.key, s.copy))


def real_scan_systems(corpus: Path, real: RealScans, vocab: Vocabulary) -> list:
    """The image + notation systems of a real-scan split (marked ``copy`` "realscan": sources only)."""
    systems, _ = pairs_io.load_systems(corpus, real.split, vocab, real.codes_dir, ("image", "notation"))
    for s in systems:
        s.key, s.copy = f"{s.key}/realscan", "realscan"
    return systems


class TranslatorTask(ModelAndOptimizerState):
    """A translator as a :class:`umust_cli.train.engine.Task` (resume state: model + optimizer)."""

    name = "translator"

    def __init__(self, corpus: Path, cfg: TrainConfig, run: RunOptions, vocab: Vocabulary,
                 codes_dir: Path | None = None, dist: Dist = Dist(), compile: bool = False,
                 realscan_codes: Path | None = None, more_train: Sequence[Path] = ()):
        self.cfg, self.vocab, self.dist, self.run = cfg, vocab, dist, run
        self.left_out = {Path(m): same_works(corpus, Path(m)) for m in more_train}   # --add-train corpus -> pieces
        self.device = resolve_device(run.device)
        if compile and self.device.type != "cuda":
            raise BadInputError("--compile needs a CUDA device (torch.compile's CPU backend builds C++ "
                                "for minutes and is not supported here)")
        self.model_cfg = make_config(cfg.preset, vocab, cfg.image_layout, cfg.column_norm,
                                     _ctc_classes(cfg), cfg.ctc_target, cfg.key_loss > 0, cfg.roll > 0)
        self.staff_targets = _staff_targets(vocab, cfg.ctc_target) if cfg.ctc > 0 or cfg.key_loss > 0 else None
        self.roll_targets = RollTargets(vocab) if cfg.roll > 0 else None
        real_codes = realscan_codes or codes_dir
        self.train_data = load_data(corpus, "train", cfg, self.model_cfg, vocab, codes_dir,
                                    RealScans(REALSCAN_TRAIN, real_codes) if cfg.realscans else None, self.left_out)
        self.valid_data = load_data(corpus, "valid", cfg, self.model_cfg, vocab, codes_dir)
        self.real_valid = (load_data(corpus, None, cfg, self.model_cfg, vocab, codes_dir,
                                     RealScans(REALSCAN_VALID, real_codes)) if cfg.realscans else None)
        if not any(self.train_data.pairs):
            raise BadInputError(f"{corpus}: no training pairs for {', '.join(t.name for t in cfg.tasks)}; "
                                "tokenize the corpus first (umust dataset tokenize) and check its rows' files")
        if cfg.realscans:
            _check_real_pairs(corpus, cfg, self.train_data, real_codes)
        self.plan = pairs_io.BatchPlan(cfg.tasks, self.train_data.pairs, self.train_data.systems,
                                       cfg.batch_tokens, cfg.seed, cfg.accum * cfg.world_size)
        torch.manual_seed(cfg.seed)
        self.model = Translator(self.model_cfg)
        self.codebooks = _init_codebooks(self.model, cfg) if cfg.codebook_init else None
        self.model.to(self.device).train()
        self.ddp = self._ddp()
        self.net = torch.compile(self.ddp or self.model) if compile else (self.ddp or self.model)
        self.opt = torch.optim.AdamW(_param_groups(self.model, cfg), lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)

    def _ddp(self) -> torch.nn.Module | None:
        """The model in DistributedDataParallel when several processes train (tasks differ
        between ranks, so some parameters are unused on some of them)."""
        if self.dist.world == 1:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    # ---- data ---------------------------------------------------------
    def batches(self, start: int) -> Iterator[list[Batch]]:
        return (self.micro_batches(step) for step in count(start))

    def micro_batches(self, step: int) -> list[Batch]:
        """This process's share of the step's plan, as tensors."""
        plan = self.plan.step(step)
        mine = plan[self.dist.rank * self.cfg.accum:(self.dist.rank + 1) * self.cfg.accum]
        out = []
        for mb in mine:
            spec, pairs = self.cfg.tasks[mb.task], self.train_data.pairs[mb.task]
            systems = [pairs[i].system for i in mb.pairs]
            out.append(pairs_io.collate(self.train_data.store, mb.task, spec, systems,
                                        mb.src_variants, mb.tgt_variants))
        return out

    # ---- training -----------------------------------------------------
    def _autocast(self):
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and fast_bf16(self.device))
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _loss(self, net: torch.nn.Module, b: Batch) -> torch.Tensor:
        spec = self.cfg.tasks[b.task]
        b = b.to(self.device)
        targets = keys = rolls = None
        if self.staff_targets is not None and (spec.source, spec.target) == ("image", "notation"):
            targets = self.staff_targets(b.tgt[..., 0]).to(self.device) if self.cfg.ctc > 0 else None
            keys = _key_targets(self.staff_targets.keys(b.tgt[..., 0])).to(self.device)
        if self.roll_targets is not None and (spec.source, spec.target) == ("audio", "midi"):
            rolls = self.roll_targets(b.src, b.tgt[..., 0]).to(self.device)
        with self._autocast():
            return net(b.src, b.src_pos, b.tgt, b.tgt_pos, spec.source, spec.target, self.cfg.token_dropout,
                       self.cfg.guide, self.cfg.ctc, targets, self.cfg.key_loss, keys, self.cfg.roll, rolls).float()

    def train_step(self, batch: list[Batch], step: int) -> dict:
        lr = lr_at(self.cfg, step)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.opt.zero_grad(set_to_none=True)
        sums = torch.zeros(2, len(self.cfg.tasks), dtype=torch.float64)   # loss sum, count per task
        for i, b in enumerate(batch):
            last = i == len(batch) - 1
            with contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                loss = self._loss(self.net, b)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged at step {step + 1} "
                                             f"({self.cfg.tasks[b.task].name} loss {loss.item()}); try a lower --lr")
                (loss / len(batch)).backward()
            sums[0, b.task] += loss.item()
            sums[1, b.task] += 1
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        terms = _terms(self._all_sum(sums), self.cfg.tasks, lr, float(grad_norm))
        return {**terms, **self.summary()} if step == 0 else terms

    def _all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.dist.world > 1:
            import torch.distributed as tdist

            t = t.to(self.device)
            tdist.all_reduce(t)
        return t.cpu()

    def agree_stop(self, reason: str) -> str:
        """The stop reason every process acts on: rank 0's (its clock; a signal to any rank)."""
        if self.dist.world == 1:
            return reason
        import torch.distributed as tdist

        codes = ("", "max_steps", "max_minutes", "signal")
        mine = torch.tensor([codes.index(reason) if self.dist.main else 0,
                             1 if reason == "signal" else 0], device=self.device)
        tdist.all_reduce(mine)
        return "signal" if int(mine[1]) else codes[int(mine[0])]

    # ---- evaluation ---------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        real = self.real_valid is not None and any(self.real_valid.pairs)
        if not self.dist.main or not (any(self.valid_data.pairs) or real):
            return None
        self.model.eval()
        try:
            out = self._scores(self.valid_data)
            if out.get("loss") is None:
                out.pop("loss", None)
            if real:
                out.update({f"realscan/{k}": v for k, v in self._scores(self.real_valid).items() if v is not None})
        finally:
            self.model.train()
        return out or None

    def _scores(self, data: Data) -> dict:
        """Per-task valid losses, their mean ("loss") and, with an OMR task, its SER on ``data``."""
        out = {f"loss/{t.name}": v for t, v in zip(self.cfg.tasks, self._valid_losses(data)) if v is not None}
        out["loss"] = round(sum(out.values()) / len(out), 5) if out else None
        omr = [i for i, t in enumerate(self.cfg.tasks) if is_omr(t)]
        if omr and data.pairs[omr[0]] and self.run.eval_items > 0:
            out.update(self._omr_ser(omr[0], data))
        amt = [i for i, t in enumerate(self.cfg.tasks) if (t.source, t.target) == ("audio", "midi")]
        if amt and data.pairs[amt[0]] and self.roll_targets is not None:
            out.update(self._roll_f1(amt[0], data))
        return out

    def _valid_batches(self, data: Data, t: int, limit: int) -> Iterator[Batch]:
        """Task ``t``'s first ``limit`` pairs of ``data`` (length order), variant 0, in fixed batches."""
        spec, pairs = self.cfg.tasks[t], data.pairs[t]
        for idx in pairs_io.fixed_batches(pairs, self.cfg.batch_tokens, limit):
            yield pairs_io.collate(data.store, t, spec, [pairs[i].system for i in idx], [0] * len(idx),
                                   [0] * len(idx))

    def _valid_losses(self, data: Data) -> list[float | None]:
        out = []
        for t in range(len(self.cfg.tasks)):
            total, n = 0.0, 0
            for b in self._valid_batches(data, t, EVAL_PAIRS):
                total, n = total + self._loss(self.model, b).item() * len(b.src), n + len(b.src)
            out.append(round(total / n, 5) if n else None)
        return out

    def _omr_ser(self, t: int, data: Data) -> dict:
        """Greedy-decoded SER of the first ``eval_items`` OMR pairs of ``data`` (length order)."""
        spec, pairs = self.cfg.tasks[t], data.pairs[t][:self.run.eval_items]
        counts = []
        for p in pairs:
            b = pairs_io.collate(data.store, t, spec, [p.system], [0], [0]).to(self.device)
            most = self.model_cfg.max_steps[self.model_cfg.index("notation")]
            with self._autocast():
                ids = generate(self.model, b.src, b.src_pos, "image", "notation",
                               DecodingOptions(max_steps=min(most, 2 * p.tgt_len)), rule=ChordRule(1))[0]
            names, off = self.vocab.names("notation"), self.vocab.offset("notation")
            ref = [names[i - off] for i in data.systems[p.system].tokens["notation"]]
            counts.append(ser_counts([names[i - off] for i in ids], ref))
        return {"SER": round(pooled_ser(counts), 5), "ser_systems": len(counts), **self._key_accuracy(t, data)}

    def _roll_f1(self, t: int, data: Data) -> dict:
        """Onset F1 (50 ms, pooled) of the roll head's reading (``data.roll.roll_notes``) of the
        first EVAL_PAIRS transcription pairs of ``data`` against their MIDI."""
        counts, onset_only = [], MatchConfig(offset_ratio=None)
        for b in self._valid_batches(data, t, EVAL_PAIRS):
            b = b.to(self.device)
            with self._autocast():
                memory, _ = self.model.encode(b.src, b.src_pos, "audio", "midi")
                probs = self.model.roll_logits(memory).float().sigmoid().cpu().numpy()
            frames = (b.src[..., 1] != PAD).cpu().numpy()
            for p, f, ids in zip(probs, frames, b.tgt[..., 0].tolist()):
                est = roll_notes(p[f, 0], p[f, 1])
                counts.append(match_counts(_notes(est), _notes(self.roll_targets.notes(ids)), onset_only))
        return {"roll_onset_F1": round(pooled_prf(counts)[2], 5), "roll_systems": len(counts)}

    def _key_accuracy(self, t: int, data: Data) -> dict:
        """With a key head: the share of ``data``'s OMR pairs (all of them) whose key signature it reads."""
        if not self.model_cfg.key_head:
            return {}
        right, n = 0, 0
        for b in self._valid_batches(data, t, len(data.pairs[t])):
            b = b.to(self.device)
            with self._autocast():
                read = self.model.read_keys(*self.model.encode(b.src, b.src_pos, "image", "notation"))
            truth = self.staff_targets.keys(b.tgt[..., 0])
            right, n = right + sum(r == k for r, k in zip(read, truth)), n + len(read)
        return {"key_accuracy": round(right / n, 5), "key_systems": n}

    def score(self, scores: dict) -> float | None:
        metric = "SER" if self.cfg.metric() == "ser" else "loss"
        value = scores.get(metric)
        return None if value is None or math.isnan(value) else -float(value)

    # ---- files --------------------------------------------------------
    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        config = {"kind": MODEL_KIND, "format": 1, "step": step, "direction": self.cfg.direction,
                  "tasks": [t.name for t in self.cfg.tasks], "model": self.model_cfg.to_dict(),
                  "train": self.cfg.to_dict(), **extra}
        ckpt_io.save_model(ckpt_dir, self.model.state_dict(), config, self.vocab)

    def warm_start(self, init: Path) -> dict:
        def normalize(saved: dict) -> dict:   # the CTC, key and roll heads are added heads: an init may lack them
            return dict(TranslatorConfig.from_dict(saved).to_dict(), ctc_classes=self.model_cfg.ctc_classes,
                        ctc_target=self.model_cfg.ctc_target, key_head=self.model_cfg.key_head,
                        roll_head=self.model_cfg.roll_head)

        saved = TranslatorConfig.from_dict(ckpt_io.read_config(init).get("model") or {})
        other_head = (saved.ctc_classes, saved.ctc_target) != (self.model_cfg.ctc_classes, self.model_cfg.ctc_target)
        drop = ((("ctc.",) if other_head else ()) + (("key.",) if saved.key_head != self.model_cfg.key_head else ())
                + (("roll.",) if saved.roll_head != self.model_cfg.roll_head else ()))
        row = ckpt_io.warm_start(self.model, init, MODEL_KIND, self.model_cfg.to_dict(), self.vocab,
                                 normalize=normalize, fresh=("ctc.", "key.", "roll."), drop=drop)
        variants = {"spelled": (len(SPELLED_ALTERS), SPELLED_ALTERS.index(0)), "marked": (len(MARKS), 0)}
        if other_head and saved.ctc_classes and saved.ctc_target == "written" and self.model_cfg.ctc_target in variants:
            state, _ = ckpt_io.load_model(init, self.vocab)      # the written head spells the new one's start
            self.model.spell_ctc_head(state["ctc.weight"], state["ctc.bias"], *variants[self.model_cfg.ctc_target])
            row["ctc_head"] = f"{self.model_cfg.ctc_target} from the init's written head"
        return row

    def summary(self) -> dict:
        """What the run trains on (in the log row of step 1): pairs per task and split (with
        real scans: how many of the train pairs are real scans, and the realscan_valid pairs),
        pairs left out for length, the codecs whose codebooks initialised the embeddings, and
        per --add-train corpus the pieces left out as valid or test works of the corpus."""
        data = {t.name: {"train": len(p), "valid": len(v), "too_long": n}
                for t, p, v, n in zip(self.cfg.tasks, self.train_data.pairs, self.valid_data.pairs,
                                      self.train_data.too_long)}
        if self.real_valid is not None:
            for i, t in enumerate(self.cfg.tasks):
                if is_omr(t):
                    data[t.name].update(realscan_train=self.train_data.real_pairs(i),
                                        realscan_valid=len(self.real_valid.pairs[i]))
        out = {"data": data, "codebooks": self.codebooks}
        if self.left_out:
            out["add_train"] = {str(m): sorted(pieces) for m, pieces in self.left_out.items()}
        return out


def _terms(sums: torch.Tensor, tasks: tuple[TaskSpec, ...], lr: float, grad_norm: float) -> dict:
    per_task = {f"loss/{t.name}": round(float(sums[0, i] / sums[1, i]), 5)
                for i, t in enumerate(tasks) if sums[1, i] > 0}
    loss = float(sums[0].sum() / sums[1].sum().clamp_min(1))
    return {"loss": loss, **per_task, "lr": lr, "grad_norm": round(grad_norm, 4)}


def _check_real_pairs(corpus: Path, cfg: TrainConfig, data: Data, codes_dir: Path | None) -> None:
    """BadInputError when ``realscans`` is asked for and no real scan became an OMR pair."""
    omr = [i for i, t in enumerate(cfg.tasks) if is_omr(t)]
    if not omr:
        raise BadInputError("--realscans adds image -> notation pairs: it needs an OMR task (--tasks omr,...)")
    if not data.real_pairs(omr[0]):
        raise BadInputError(f"--realscans: no {REALSCAN_TRAIN} system of {corpus} has image codes in "
                            f"{codes_dir or corpus} and notation; pair the scans (umust dataset scans) and "
                            f"tokenize them (umust dataset tokenize --split {REALSCAN_TRAIN}; "
                            "--realscan-codes where their codes are)")


def _param_groups(model: Translator, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: the key-signature head (a linear classifier started fresh on a
    trained encoder: with the model's learning rate it stayed far from what the same features
    allow) at ``key_lr_scale`` times the learning rate, the CTC head at ``ctc_lr_scale`` times
    it (a group of its own only when that is not 1: runs saved before the option resume with
    their optimizer's groups), the rest at it."""
    scales = {"key.": cfg.key_lr_scale, **({"ctc.": cfg.ctc_lr_scale} if cfg.ctc_lr_scale != 1.0 else {})}
    groups = {prefix: [p for n, p in model.named_parameters() if n.startswith(prefix)] for prefix in scales}
    rest = [p for n, p in model.named_parameters() if not n.startswith(tuple(scales))]
    return [{"params": rest}] + [{"params": groups[k], "lr_scale": s} for k, s in scales.items() if groups[k]]


def _notes(notes: Sequence) -> Notes:
    """pretty_midi notes -> the metrics' Notes."""
    return Notes.from_arrays([n.start for n in notes], [n.end for n in notes], [n.pitch for n in notes])


def _key_targets(keys: Sequence[int | None]) -> torch.Tensor:
    """Key signatures (fifths; None unknown or beyond 7) -> the key head's targets (B,), -1 unknown."""
    return torch.tensor([KEY_FIFTHS.index(k) if k in KEY_FIFTHS else -1 for k in keys], dtype=torch.long)


def _ctc_classes(cfg: TrainConfig) -> int:
    """The CTC head's classes of ``--ctc`` (0: no head) and ``--ctc-target``."""
    if cfg.ctc <= 0:
        return 0
    return len(ctc_classes(cfg.ctc_target))


def _staff_targets(vocab: Vocabulary, target: str) -> StaffTargets:
    """The CTC targets of ``--ctc``: every notation id of ``vocab`` named by its LMX token."""
    local = vocab.names("notation")
    return StaffTargets(dict(zip(vocab.to_global("notation", range(len(local))), local)), target=target)


def _init_codebooks(model: Translator, cfg: TrainConfig) -> dict:
    """Code embeddings from the shipped codecs' codebooks; the folders used (for the log)."""
    image, audio = registry.resolve("image-codec", None), registry.resolve("audio-codec", None)
    init_from_codebooks(model, *read_codec_codebooks(image, audio), seed=cfg.seed)
    return {"image": registry.shipped_name("image-codec", image) or str(image),
            "audio": registry.shipped_name("audio-codec", audio) or str(audio)}


def make_task(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions, vocab: Vocabulary,
              codes_dir: str | Path | None = None, compile: bool = False, dist: Dist = Dist(),
              realscan_codes: str | Path | None = None, more_train: Sequence[str | Path] = ()) -> TranslatorTask:
    """The task of a run in ``ckpt_dir`` after the checks that need no data: held-out rows,
    the vocabulary of ``more_train``'s corpora, the process count, the config of a run already there."""
    corpus, more = Path(corpus), tuple(Path(m) for m in more_train)
    splits = ("train", "valid", REALSCAN_TRAIN, REALSCAN_VALID) if cfg.realscans else ("train", "valid")
    corpus_io.check_training_rows(corpus_io.rows(corpus, splits), corpus)
    for extra in more:
        if extra.resolve() == corpus.resolve():
            raise BadInputError(f"--add-train {extra} is --data itself: its systems would be in two of the "
                                "training corpora")
        corpus_io.check_training_rows(corpus_io.rows(extra, ("train",)), extra)
        if corpus_vocabulary(extra) != vocab:
            raise BadInputError(f"{extra}: its vocabulary (LMX flavor) differs from {corpus}'s")
    if cfg.world_size != dist.world:
        raise BadInputError(f"the config says {cfg.world_size} processes, {dist.world} are running")
    if dist.main:
        check_resumable(ckpt_dir, cfg)   # fail early; finish a staged save before other ranks look
    _barrier(dist)
    return TranslatorTask(corpus, cfg, run, vocab, Path(codes_dir) if codes_dir else None, dist, compile,
                          Path(realscan_codes) if realscan_codes else None, more)


def train_translator(corpus: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                     vocab: Vocabulary, init: str | Path | None = None, codes_dir: str | Path | None = None,
                     compile: bool = False, on_step: Callable[[int, dict], None] | None = None,
                     dist: Dist = Dist(), realscan_codes: str | Path | None = None,
                     more_train: Sequence[str | Path] = ()) -> TrainResult:
    """Train (or resume) a translator in ``ckpt_dir`` on ``corpus``'s train split (and those of
    ``more_train``, tokenized corpora with their codes in them; validation stays on ``corpus``).

    ``init``: weights to start a fresh run from (ignored when ``ckpt_dir`` holds a run).
    ``realscan_codes``: where the real scans' codes are (``cfg.realscans``; default ``codes_dir``).
    """
    task = make_task(corpus, ckpt_dir, cfg, run, vocab, codes_dir, compile, dist, realscan_codes, more_train)
    return fit(task, ckpt_dir, cfg, run, init=init, on_step=on_step, main_process=dist.main)


def finish_distributed(dist: Dist) -> None:
    """Leave the process group (after training under torchrun)."""
    if dist.world > 1:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
