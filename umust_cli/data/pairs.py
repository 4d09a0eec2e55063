"""Translation pairs of a tokenized corpus, the task curriculum and the batch plan of the
translator trainer (U-MusT section VII).

A *task* is (source modality, target modality) on the corpus's systems: ``omr`` is
image > notation, ``midi2audio`` midi > audio, and so on (:data:`TASKS`); any other pair
is written ``image>midi``. Each task's sampling weight ramps linearly from 0 at step
``start`` to ``weight`` at step ``end`` (``start == end``: a step at ``start``). The
paper's curriculum (:data:`DIRECTIONS`): the auxiliary tasks run from step 0 and the
direct task ramps in (image->audio between 15k and 50k, audio->image between 40k and 70k).

A system gives one sequence per modality it has: the codes of ``NNN.image.npy`` and
``NNN.audio.npy`` written by `umust dataset tokenize` (one shift variant per sample:
a random one on train, variant 0 on valid), the LMX tokens of ``NNN.lmx`` and the MIDI
tokens of ``NNN.mid`` (read through the codecs once per run). With ``scans``, each tokenized
scanned-look copy of a system (``NNN.scanK.image.npy``) is one more image source with the
system's other sequences (never an image target). A task skips the systems
that lack one of its modalities and the pairs over the caps (:class:`Caps`: the paper's
audio <= 20 s, MIDI <= 1,000 tokens, image <= 150 patch columns, and the model's limits).

Batches (:class:`BatchPlan`) are a pure function of (seed, step): the step's micro-batches
each draw a task by its weight at that step, then a window of pairs of similar length
(sorted by length) that fits the token budget (``n * (longest source + longest target)``
steps), and a shift variant per sample. Resuming at step N therefore sees the batches an
uninterrupted run sees; with several processes, each takes its own micro-batches of the
same plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from umust_cli.codecs.audio import HOP, SAMPLE_RATE
from umust_cli.codecs.midi import MidiCodec
from umust_cli.codecs.notation import _lmx_tokens, tokens_to_ids
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.data import corpus as corpus_io
from umust_cli.data.crops import cached_measure_columns
from umust_cli.errors import BadInputError, UmustError
from umust_cli.inputs import load_lmx
from umust_cli.model.generate import batch_steps, step_positions
from umust_cli.model.translator import CODEBOOK_SIZE, PAD, SLOTS, TranslatorConfig

MODALITIES = ("image", "audio", "notation", "midi")
ALIASES = {"lmx": "notation"}
TASKS = {
    "omr": ("image", "notation"), "midi2audio": ("midi", "audio"), "image2audio": ("image", "audio"),
    "transcription": ("audio", "midi"), "lmx2image": ("notation", "image"),
    "audio2image": ("audio", "image"), "midi2lmx": ("midi", "notation"), "lmx2midi": ("notation", "midi"),
}
# direction -> its tasks with the paper's ramps (name, start, end)
DIRECTIONS = {
    "i2a": (("omr", 0, 0), ("midi2audio", 0, 0), ("image2audio", 15000, 50000)),
    "a2i": (("transcription", 0, 0), ("lmx2image", 0, 0), ("audio2image", 40000, 70000)),
}
ROW_KEYS = {"image": "png", "audio": "wav", "notation": "lmx", "midi": "mid"}
CODE_SUFFIX = {"image": ".image.npy", "audio": ".audio.npy"}
_SPEC = re.compile(r"^(?P<name>[a-z0-9_>]+)(?:@(?P<start>\d+):(?P<end>\d+))?(?:\*(?P<weight>[0-9]*\.?[0-9]+))?$")


# ---------------------------------------------------------------------------
# Tasks and the curriculum
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    name: str
    source: str
    target: str
    weight: float = 1.0   # the most sampling weight, reached at step ``end``
    start: int = 0        # the weight is 0 up to this step
    end: int = 0          # ... and rises linearly to ``weight`` at this one

    def weight_at(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if step >= self.end:
            return self.weight
        return self.weight * (step - self.start) / (self.end - self.start)


def parse_tasks(text: str | None, direction: str) -> tuple[TaskSpec, ...]:
    """``--tasks`` (None: the direction's paper tasks and ramps) -> task specs.

    Entries are comma-separated: ``NAME`` (a key of :data:`TASKS`) or ``SOURCE>TARGET``
    (modalities image, audio, notation or lmx, midi), optionally ``@START:END`` (the ramp;
    default: the paper's for the direction's own tasks, else 0:0) and ``*WEIGHT``.
    """
    if direction not in DIRECTIONS:
        raise BadInputError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    ramps = {name: (start, end) for name, start, end in DIRECTIONS[direction]}
    if text is None:
        return tuple(TaskSpec(n, *TASKS[n], start=s, end=e) for n, s, e in DIRECTIONS[direction])
    specs = [_parse_one(part.strip(), ramps) for part in text.split(",") if part.strip()]
    if not specs:
        raise BadInputError("--tasks names no task")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadInputError(f"--tasks names a task twice: {', '.join(names)}")
    return tuple(specs)


def _parse_one(part: str, ramps: dict[str, tuple[int, int]]) -> TaskSpec:
    m = _SPEC.match(part.lower())
    if m is None:
        raise BadInputError(f"bad task {part!r}: write NAME or SOURCE>TARGET, optionally @START:END and *WEIGHT")
    name = m["name"]
    if ">" in name:
        src, _, tgt = name.partition(">")
        src, tgt = ALIASES.get(src, src), ALIASES.get(tgt, tgt)
        if src not in MODALITIES or tgt not in MODALITIES or src == tgt:
            raise BadInputError(f"bad task {part!r}: source and target are two of {', '.join(MODALITIES)}")
        known = [n for n, pair in TASKS.items() if pair == (src, tgt)]
        name, pair = (known[0] if known else f"{src}>{tgt}"), (src, tgt)
    elif name in TASKS:
        pair = TASKS[name]
    else:
        raise BadInputError(f"unknown task {name!r}; choose from {', '.join(TASKS)} or write SOURCE>TARGET")
    start, end = (int(m["start"]), int(m["end"])) if m["start"] else ramps.get(name, (0, 0))
    weight = float(m["weight"]) if m["weight"] else 1.0
    if end < start or weight <= 0:
        raise BadInputError(f"bad task {part!r}: the ramp needs START <= END and the weight must be > 0")
    return TaskSpec(name, *pair, weight=weight, start=start, end=end)


@dataclass(frozen=True)
class Caps:
    """The longest sequences trained on (content steps, without [SOS]/[EOS])."""

    audio_frames: int = int(20 * SAMPLE_RATE / HOP)   # 20 s of codec frames
    midi_tokens: int = 1000
    image_columns: int = 150

    def limit(self, modality: str, cfg: TranslatorConfig) -> int:
        """The longest ``modality`` sequence (steps) under these caps and ``cfg``'s limits."""
        most = cfg.max_steps[cfg.index(modality)]
        if modality == "audio":
            return min(most, self.audio_frames)
        if modality == "midi":
            return min(most, self.midi_tokens)
        return most


# ---------------------------------------------------------------------------
# Systems and their sequences
# ---------------------------------------------------------------------------

@dataclass
class System:
    """One corpus row: where its codes are, its token ids (cached), variant counts and sizes."""

    key: str
    codes: dict[str, Path]          # image / audio -> code file
    tokens: dict[str, list[int]]    # notation / midi -> global ids (without [SOS]/[EOS])
    shape: dict[str, tuple]         # image / audio -> code array shape (V, 4, ...)
    copy: str = ""                  # "": the engraving; "scanK": its K-th scanned-look copy;
                                    # "cropK": its first K measures (image columns and LMX)
    columns: int = 0                # a crop's image code columns (0: all)

    def has(self, modality: str) -> bool:
        return modality in self.codes or modality in self.tokens

    def length(self, modality: str) -> int:
        """Content steps of the modality (variant 0's size; variants differ by one at most)."""
        if modality in self.tokens:
            return len(self.tokens[modality])
        shape = self.shape[modality]
        return shape[2] * shape[3] if modality == "image" else shape[2]

    def variants(self, modality: str) -> int:
        return self.shape[modality][0] if modality in self.shape else 1

    def height(self) -> int:
        return self.shape["image"][2] if "image" in self.shape else 1


def load_systems(corpus: Path, split: str, vocab: Vocabulary, codes_dir: Path | None = None,
                 modalities: Sequence[str] = MODALITIES, scans: bool = False, crops: bool = False,
                 skip_pieces: frozenset[str] = frozenset()) -> tuple[list[System], list[str]]:
    """The systems of ``split`` with the files of ``modalities`` they have, and one line per
    file that could not be read (that modality is then missing for the system).

    ``scans``: each scanned-look copy of a row whose codes were tokenized (``NNN.scanK.png``
    -> ``NNN.scanK.image.npy``, `dataset tokenize --scans`) is one more system with that
    image and the row's other sequences (``copy`` "scanK"). Rows of ``skip_pieces`` are left out."""
    rows = [r for r in corpus_io.system_rows(corpus, (split,)) if r.get("piece_id") not in skip_pieces]
    codes_root, midi = Path(codes_dir or corpus), MidiCodec()
    systems, problems = [], []
    for row in rows:
        sys_ = System(f"{row['piece_id']}/{int(row['system']):03d}", {}, {}, {})
        for m in modalities:
            rel = row.get(ROW_KEYS[m])
            if not rel:
                continue
            try:
                _read_modality(sys_, m, corpus / rel, codes_root / rel, vocab, midi)
            except (UmustError, OSError, ValueError) as e:
                problems.append(f"{sys_.key} {m}: {e}")
        systems.append(sys_)
        if scans and "image" in modalities:
            systems.extend(_scan_copies(sys_, row, codes_root, problems))
        if crops and "image" in sys_.codes and "notation" in sys_.tokens:
            systems.extend(prefix_crops(sys_, corpus / row[ROW_KEYS["image"]], vocab))
    return systems, problems


def prefix_crops(sys_: System, png: Path, vocab: Vocabulary) -> list[System]:
    """The system's prefixes of 1 .. n-1 measures as image + notation systems ("cropK"), where
    the page detector finds its n bar-separated measures (``data/crops.py``); else none."""
    measure = vocab.to_global("notation", tokens_to_ids(["measure"]))[0]
    tokens = sys_.tokens["notation"]
    starts = [i for i, t in enumerate(tokens) if t == measure]
    if len(starts) < 2 or starts[0] != 0:
        return []
    cols = cached_measure_columns(png, sys_.codes["image"], len(starts), sys_.shape["image"][3])
    if not cols:
        return []
    v, k, rows, _ = sys_.shape["image"]
    return [System(f"{sys_.key}/crop{m}", {"image": sys_.codes["image"]}, {"notation": tokens[:starts[m]]},
                   {"image": (v, k, rows, cols[m - 1])}, f"crop{m}", cols[m - 1])
            for m in range(1, len(starts))]


def _scan_copies(sys_: System, row: dict, codes_root: Path, problems: list[str]) -> list[System]:
    """The row's scanned-look copies that have codes, as systems sharing its other sequences."""
    out = []
    for k, rel in enumerate(row.get("scans") or ()):
        copy = System(f"{sys_.key}/scan{k}", {m: p for m, p in sys_.codes.items() if m != "image"},
                      sys_.tokens, {m: s for m, s in sys_.shape.items() if m != "image"}, f"scan{k}")
        try:
            _read_modality(copy, "image", codes_root / rel, codes_root / rel, None, None)
        except (UmustError, OSError, ValueError) as e:
            problems.append(f"{copy.key} image: {e}")
        if "image" in copy.codes:
            out.append(copy)
    return out


def _read_modality(sys_: System, modality: str, path: Path, code_base: Path, vocab: Vocabulary | None,
                   midi: MidiCodec | None) -> None:
    if modality in CODE_SUFFIX:
        code = code_base.with_suffix(CODE_SUFFIX[modality])
        if not code.is_file():
            return
        arr = np.load(code, mmap_mode="r", allow_pickle=False)
        want = 4 if modality == "image" else 3
        if arr.ndim != want or arr.shape[1] != SLOTS or 0 in arr.shape:
            raise BadInputError(f"{code} has shape {arr.shape}; expected (V, 4, {'Hp, Wp' if want == 4 else 'F'})")
        sys_.codes[modality], sys_.shape[modality] = code, tuple(arr.shape)
    elif path.is_file():
        if modality == "notation":
            local = tokens_to_ids(_lmx_tokens(load_lmx(path)))
        else:
            local = list(midi.encode(path).ids)
        sys_.tokens[modality] = vocab.to_global(modality, local)


def variant_of(arr: np.ndarray, v: int) -> np.ndarray:
    """Variant ``v`` of a stacked code array without its -1 padding (int64)."""
    a = np.asarray(arr[v])
    keep = a[0] >= 0
    if keep.ndim == 1:
        return a[:, keep].astype(np.int64)
    rows, cols = int(keep.any(axis=1).sum()), int(keep.any(axis=0).sum())
    return a[:, :rows, :cols].astype(np.int64)


def code_steps(codes: np.ndarray, modality: str, cfg: TranslatorConfig) -> torch.Tensor:
    """(4, Hp, Wp) image or (4, F) audio codes -> (T, 4) steps framed by [SOS]/[EOS] steps
    (image patches column by column, top to bottom: ``codecs.image.flatten``'s order)."""
    lo = cfg.ranges[cfg.index(modality)][0]
    flat = codes.transpose(2, 1, 0).reshape(-1, SLOTS) if codes.ndim == 3 else codes.T
    if flat.size and (flat.min() < 0 or flat.max() >= CODEBOOK_SIZE):
        raise BadInputError(f"{modality} codes outside [0, {CODEBOOK_SIZE})")
    body = torch.from_numpy(flat + lo + np.arange(SLOTS) * CODEBOOK_SIZE)
    return torch.cat([_special(cfg.sos[cfg.index(modality)]), body, _special(cfg.eos[cfg.index(modality)])])


def token_steps(ids: Sequence[int], modality: str, cfg: TranslatorConfig) -> torch.Tensor:
    """Global token ids -> (T, 4) steps framed by [SOS]/[EOS] (one id per step)."""
    m = cfg.index(modality)
    steps = torch.zeros(len(ids) + 2, SLOTS, dtype=torch.long)
    steps[:, 0] = torch.tensor([cfg.sos[m], *ids, cfg.eos[m]], dtype=torch.long)
    return steps


def _special(i: int) -> torch.Tensor:
    s = torch.full((1, SLOTS), PAD, dtype=torch.long)
    s[0, 0] = i
    return s


class SequenceStore:
    """Step tensors of the systems' sequences. A code file is memory-mapped for the one variant
    read and let go (a corpus has more code files than a process may keep open)."""

    def __init__(self, systems: list[System], cfg: TranslatorConfig):
        self.systems, self.cfg = systems, cfg

    def steps(self, i: int, modality: str, variant: int = 0) -> tuple[torch.Tensor, int]:
        """(T, 4) steps of system ``i``'s ``modality`` (shift variant ``variant``) and its
        height in patches (1 for other modalities)."""
        sys_ = self.systems[i]
        if modality in sys_.tokens:
            return token_steps(sys_.tokens[modality], modality, self.cfg), 1
        codes = variant_of(np.load(sys_.codes[modality], mmap_mode="r", allow_pickle=False), variant)
        if modality == "image" and sys_.columns:
            codes = codes[:, :, :sys_.columns]                              # a crop's first columns
        return code_steps(codes, modality, self.cfg), codes.shape[1] if modality == "image" else 1


# ---------------------------------------------------------------------------
# Pairs and batches
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    system: int
    src_len: int   # steps with [SOS]/[EOS]
    tgt_len: int


def task_pairs(systems: list[System], task: TaskSpec, cfg: TranslatorConfig, caps: Caps
               ) -> tuple[list[Pair], int]:
    """The pairs of ``task`` in ``systems`` sorted by length (and index), and how many
    systems that have both modalities were left out for length."""
    pairs, too_long = [], 0
    for i, s in enumerate(systems):
        if not (s.has(task.source) and s.has(task.target)) or (s.copy and task.target == "image"):
            continue                    # scanned-look copies are sources only
        if not (fits(s, task.source, cfg, caps, source=True) and fits(s, task.target, cfg, caps)):
            too_long += 1
            continue
        pairs.append(Pair(i, s.length(task.source) + 2, s.length(task.target) + 2))
    pairs.sort(key=lambda p: (p.src_len + p.tgt_len, p.system))
    return pairs, too_long


def fits(s: System, modality: str, cfg: TranslatorConfig, caps: Caps, source: bool = False) -> bool:
    """Whether every variant of the system's ``modality`` fits the caps and the model. An image
    source in the column layout is one encoder position per column, so only its rows and
    columns are bounded, not their product (the grid layout's positions, and image targets)."""
    slack = 1 if s.variants(modality) > 1 else 0       # a shift may add a row/column/frame
    if modality != "image":
        return s.length(modality) + slack <= caps.limit(modality, cfg)
    _, _, rows, cols = s.shape["image"]
    steps_ok = (source and cfg.image_layout == "column") or \
        (rows + slack) * (cols + slack) <= cfg.max_steps[cfg.index("image")]
    return rows + slack <= cfg.max_rows and cols + slack <= min(cfg.max_columns, caps.image_columns) and steps_ok


def window(pairs: list[Pair], anchor: int, budget: int) -> list[int]:
    """Indices of the pairs around ``anchor`` (upwards first, then downwards) whose padded
    batch fits ``budget`` steps: n * (longest source + longest target); at least the anchor."""
    lo = hi = anchor
    src, tgt = pairs[anchor].src_len, pairs[anchor].tgt_len

    def cost(i: int) -> int:
        return (hi - lo + 2) * (max(src, pairs[i].src_len) + max(tgt, pairs[i].tgt_len))

    while True:
        if hi + 1 < len(pairs) and cost(hi + 1) <= budget:
            hi += 1
            src, tgt = max(src, pairs[hi].src_len), max(tgt, pairs[hi].tgt_len)
        elif lo > 0 and cost(lo - 1) <= budget:
            lo -= 1
            src, tgt = max(src, pairs[lo].src_len), max(tgt, pairs[lo].tgt_len)
        else:
            return list(range(lo, hi + 1))


@dataclass(frozen=True)
class MicroBatch:
    """What one forward pass trains on: a task, its pairs and each side's shift variant."""

    task: int
    pairs: tuple[int, ...]
    src_variants: tuple[int, ...]
    tgt_variants: tuple[int, ...]


class BatchPlan:
    """Step -> micro-batches, a pure function of (seed, step) (see the module docstring)."""

    def __init__(self, tasks: Sequence[TaskSpec], pairs: Sequence[list[Pair]], systems: list[System],
                 budget: int, seed: int, per_step: int):
        self.tasks, self.pairs, self.systems = tuple(tasks), list(pairs), systems
        self.budget, self.seed, self.per_step = budget, seed, per_step

    def weights(self, step: int) -> np.ndarray:
        """Each task's sampling weight at ``step`` (0 for a task without pairs)."""
        return np.array([t.weight_at(step) if p else 0.0 for t, p in zip(self.tasks, self.pairs)])

    def step(self, step: int) -> list[MicroBatch]:
        w = self.weights(step)
        if w.sum() <= 0:
            raise BadInputError(f"no task with training pairs has weight at step {step}; "
                                "check --tasks and their @START:END ramps")
        rng = np.random.default_rng([self.seed, step])
        out = []
        for _ in range(self.per_step):
            t = int(rng.choice(len(w), p=w / w.sum()))
            pairs = self.pairs[t]
            idx = window(pairs, int(rng.integers(len(pairs))), self.budget)
            task = self.tasks[t]
            src = tuple(int(rng.integers(self.systems[pairs[i].system].variants(task.source))) for i in idx)
            tgt = tuple(int(rng.integers(self.systems[pairs[i].system].variants(task.target))) for i in idx)
            out.append(MicroBatch(t, tuple(idx), src, tgt))
        return out


def fixed_batches(pairs: list[Pair], budget: int, limit: int) -> list[tuple[int, ...]]:
    """Validation: the first ``limit`` pairs in length order, cut into batches that fit ``budget``."""
    out, i, pairs = [], 0, pairs[:limit]
    while i < len(pairs):
        idx = [j for j in window(pairs, i, budget) if j >= i]
        out.append(tuple(idx))
        i = idx[-1] + 1
    return out


@dataclass
class Batch:
    """Tensors of one micro-batch (what ``Translator.forward`` takes) and its task."""

    task: int
    src: torch.Tensor       # (B, S, 4)
    src_pos: torch.Tensor   # (B, S, 2)
    tgt: torch.Tensor       # (B, T, 4)
    tgt_pos: torch.Tensor   # (B, T, 2)
    tgt_height: torch.Tensor  # (B,) image targets: patches per column

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.task, *(t.to(device, non_blocking=True) for t in
                                  (self.src, self.src_pos, self.tgt, self.tgt_pos, self.tgt_height)))


def collate(store: SequenceStore, task: int, spec: TaskSpec, systems: Sequence[int],
            src_variants: Sequence[int], tgt_variants: Sequence[int]) -> Batch:
    """The padded step tensors and positions of ``systems``' pairs of ``spec``."""
    src = [store.steps(i, spec.source, v) for i, v in zip(systems, src_variants)]
    tgt = [store.steps(i, spec.target, v) for i, v in zip(systems, tgt_variants)]
    s, t = batch_steps([x for x, _ in src]), batch_steps([x for x, _ in tgt])
    sh, th = torch.tensor([h for _, h in src]), torch.tensor([h for _, h in tgt])
    return Batch(task, s, step_positions(s, spec.source, sh), t, step_positions(t, spec.target, th), th)
