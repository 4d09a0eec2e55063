"""Training loop of the passage retrieval model: resumable, time-boxed, bf16 on GPU.

Two stages share it: ``passage`` (the RNN model on whole systems, weak alignment) and
``snippet`` (the CNNs alone on aligned snippet pairs, :mod:`umust_cli.retrieval.snippets`),
whose checkpoint ``--init`` turns into RNN-FT, or RNN-FZ with ``freeze_cnn``.

Every step draws its mini-batch from a generator seeded by (seed, step), and
train_state.pt holds model + optimizer state, so a stopped run resumed with the
same command continues exactly as if it had not stopped. The loop, saves, resume,
evaluation and keep-best (``OUTPUT/best``) are the training engine's
(:mod:`umust_cli.train.engine`); this module is the retrieval :class:`RetrievalTask`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError, CheckpointError
from umust_cli.eval.metrics import retrieval_both_directions
from umust_cli.io import atomic_path
from umust_cli.model.retrieval import PRESETS, RetrievalModel, RetrievalModelConfig, cosine_distance, triplet_loss
from umust_cli.retrieval.data import PassageFeatures, batch_tensors, corpus_rows, load_features, passage_groups
from umust_cli.retrieval.embed import KIND, embed_passages, load_retrieval_model, model_config
from umust_cli.retrieval.features import FeatureConfig, stretch_frames
from umust_cli.retrieval.snippets import (middle_points, snippet_eval, snippet_pair, snippet_tensors,
                                          strip_alignments)
from umust_cli.train.engine import ModelAndOptimizerState, RunOptions, TrainResult, check_resumable, fit


STAGES = ("passage", "snippet")


@dataclass(frozen=True)
class RetrievalTrainConfig:
    preset: str = "small"
    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    batch_size: int = 32
    lr: float = 1e-3
    margin: float = 0.7
    seed: int = 0
    tempo_augment: tuple[float, float] = (0.8, 1.25)  # spectrogram time-stretch range (1, 1 = off)
    eq_augment_db: float = 12.0  # random spectral tilt/curvature/gain up to this many dB (timbre variety)
    eq_knots: int = 0  # > 1: also a random piecewise-linear EQ through this many points (+-eq_augment_db / 2)
    reverb_augment_s: float = 0.0  # > 0: half the spectrograms get a random decay tail (time constant up to this)
    freeze_cnn: bool = False  # RNN-FZ: keep the snippet CNNs of --init fixed
    stage: str = "passage"  # "snippet": pre-train the CNNs alone on aligned snippet pairs (needs align.json)
    soundfonts: tuple[str, ...] = ()  # train only on rows made with these ('' = all)
    realscans: bool = False  # also train on the realscan_train rows (real scans, their piece_audio spans)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, obj: dict) -> "RetrievalTrainConfig":
        """The config of a saved run; fields added since it was saved take their defaults."""
        rest = {k: tuple(v) if isinstance(v, list) else v for k, v in obj.items() if k != "model"}
        return cls(model=model_config(obj["model"]), **rest)


def features_for(model: RetrievalModelConfig) -> FeatureConfig:
    """The feature extraction whose snippets fit ``model``'s input shapes."""
    height, width = model.sheet_shape
    return FeatureConfig(sheet_height=height, sheet_window=width, sheet_hop=width // 2,
                         snippet_frames=model.audio_shape[1])


def train_config(preset: str, **overrides) -> RetrievalTrainConfig:
    if preset not in PRESETS:
        raise BadInputError(f"unknown --config {preset!r} (choose from {', '.join(PRESETS)})")
    if overrides.get("stage", "passage") not in STAGES:
        raise BadInputError(f"unknown --stage {overrides['stage']!r} (choose from {', '.join(STAGES)})")
    if overrides.get("realscans") and overrides.get("stage", "passage") == "snippet":
        raise BadInputError("--realscans trains on whole real-scan systems (no onset alignment): not with "
                            "--stage snippet")
    return RetrievalTrainConfig(preset=preset, model=PRESETS[preset], **overrides)


def sample_batch(feats: PassageFeatures, groups: list[list[int]], cfg: RetrievalTrainConfig,
                 fcfg: FeatureConfig, step: int):
    """The mini-batch of ``step``: distinct passages (one rendering of each, drawn from its
    ``groups`` entry), spectrograms time-stretched at random. Sheet snippets stay uint8 ink
    (a quarter of the bytes to move); :func:`train_step` scales them to [0, 1] on the device."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = batch_indices(groups, cfg.batch_size, rng)
    lo, hi = np.log(cfg.tempo_augment[0]), np.log(cfg.tempo_augment[1])
    specs = [stretch_frames(feats.specs[i].astype(np.float32), float(np.exp(rng.uniform(lo, hi)))) for i in idx]
    if cfg.reverb_augment_s > 0:
        specs = [random_tail(s, cfg.reverb_augment_s, fcfg.fps, rng) for s in specs]
    if cfg.eq_augment_db > 0:
        specs = [random_eq(s, cfg.eq_augment_db, rng, cfg.eq_knots) for s in specs]
    return batch_tensors([feats.sheets[i] for i in idx], specs, fcfg, sheet_uint8=True)


def sample_snippet_batch(feats: PassageFeatures, groups: list[list[int]], cfg: RetrievalTrainConfig,
                         fcfg: FeatureConfig, step: int):
    """The mini-batch of a snippet-stage ``step``: one aligned (sheet window, 1 s audio) pair from each
    of ``batch_size`` distinct passages, centred on a random onset, audio stretched and augmented."""
    rng = np.random.default_rng([cfg.seed, step])
    lo, hi = np.log(cfg.tempo_augment[0]), np.log(cfg.tempo_augment[1])
    sheets, audios = [], []
    for i in batch_indices(groups, cfg.batch_size, rng):
        x, t = feats.alignments[i]
        j = int(rng.integers(len(x)))
        sheet, audio = snippet_pair(feats.sheets[i], feats.specs[i], (float(x[j]), float(t[j])), fcfg,
                                    float(np.exp(rng.uniform(lo, hi))))
        if cfg.reverb_augment_s > 0:
            audio = random_tail(audio, cfg.reverb_augment_s, fcfg.fps, rng)
        if cfg.eq_augment_db > 0:
            audio = random_eq(audio, cfg.eq_augment_db, rng, cfg.eq_knots)
        sheets.append(sheet)
        audios.append(audio)
    return snippet_tensors(sheets, audios)


class StepBatches(torch.utils.data.Dataset):
    """Mini-batches by step number, for a DataLoader whose workers build them ahead of training;
    each is a function of (seed, step) alone, so they equal :func:`sample_batch`'s in any worker."""

    def __init__(self, feats: PassageFeatures, groups: list[list[int]], cfg: RetrievalTrainConfig,
                 fcfg: FeatureConfig):
        self.feats, self.groups, self.cfg, self.fcfg = feats, groups, cfg, fcfg

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, step: int):
        sample = sample_snippet_batch if self.cfg.stage == "snippet" else sample_batch
        return sample(self.feats, self.groups, self.cfg, self.fcfg, step)


def batches_from(data: StepBatches, start: int, workers: int, pin: bool):
    """Mini-batches of steps ``start``, ``start`` + 1, ...: built here (``workers`` = 0) or by worker processes."""
    if workers <= 0:
        return (data[step] for step in range(start, 2 ** 62))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start, 2 ** 62), num_workers=workers,
                                         pin_memory=pin, prefetch_factor=4)
    return iter(loader)


def batch_indices(groups: list[list[int]], batch_size: int, rng: np.random.Generator) -> list[int]:
    """Rows of one mini-batch: ``batch_size`` distinct passages, one rendering of each drawn at random."""
    chosen = rng.choice(len(groups), size=min(batch_size, len(groups)), replace=False)
    return [groups[g][int(rng.integers(len(groups[g])))] if len(groups[g]) > 1 else groups[g][0] for g in chosen]


def random_eq(spec: np.ndarray, max_db: float, rng: np.random.Generator, knots: int = 0) -> np.ndarray:
    """``spec`` (log10(1 + magnitude)) through a random smooth equaliser: another instrument's timbre.

    The gain in dB over the bands is a random tilt (up to +-max_db at the ends), a random
    curvature (up to +-max_db) and a random overall gain (up to +-max_db / 2); with ``knots`` > 1,
    plus a curve through that many evenly spaced random gains (up to +-max_db / 2 each), linear
    in between: bumps, dips and roll-offs that a quadratic cannot make.
    """
    b = np.linspace(-0.5, 0.5, spec.shape[0])  # band position
    tilt, curve, gain = rng.uniform(-1.0, 1.0, size=3) * max_db
    gain_db = 2.0 * tilt * b + 4.0 * curve * (b ** 2 - 1.0 / 12.0) + 0.5 * gain
    if knots > 1:
        gain_db = gain_db + np.interp(b, np.linspace(-0.5, 0.5, knots), rng.uniform(-0.5, 0.5, knots) * max_db)
    magnitude = np.power(10.0, spec) - 1.0
    return np.log10(1.0 + magnitude * np.power(10.0, gain_db[:, None] / 20.0)).astype(np.float32)


def random_tail(spec: np.ndarray, max_tau_s: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Half the time, ``spec`` with a random exponential decay tail added to every band: a longer
    release, more pedal or a bigger room. Time constant 0.05 s .. ``max_tau_s``, tail level 0 .. 1."""
    from scipy.signal import lfilter

    tau, mix, coin = rng.uniform(0.05, max(max_tau_s, 0.05)), rng.uniform(0.0, 1.0), rng.uniform()
    if coin < 0.5:
        return spec
    decay = float(np.exp(-1.0 / (tau * fps)))  # per frame
    magnitude = np.power(10.0, spec.astype(np.float32)) - 1.0
    tail = lfilter([1.0 - decay], [1.0, -decay], magnitude, axis=1)  # leaky running mean over time
    return np.log10(1.0 + magnitude + mix * tail).astype(np.float32)


def train_step(model: RetrievalModel, optimizer: torch.optim.Optimizer, batch, margin: float,
               device: torch.device, freeze_cnn: bool = False, snippets: bool = False) -> float:
    """One Adam step on the triplet loss of passage embeddings (or, with ``snippets``, of the CNNs'
    snippet embeddings of one-snippet passages: the snippet stage)."""
    audio, audio_len, sheet, sheet_len = batch
    sheet = sheet.to(device, non_blocking=True)
    if sheet.dtype == torch.uint8:  # ink bytes -> [0, 1], as features.sheet_snippets scales them
        sheet = sheet.float() / 255.0
    model.train()
    if freeze_cnn:  # RNN-FZ: the pre-trained snippet CNNs keep their batch-norm statistics too
        model.audio.cnn.eval()
        model.sheet.cnn.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        if snippets:
            a = model.encode_snippets("audio", audio.to(device)[:, 0])
            s = model.encode_snippets("sheet", sheet[:, 0])
        else:
            a = model.encode("audio", audio.to(device), audio_len)
            s = model.encode("sheet", sheet, sheet_len)
    loss = triplet_loss(a.float(), s.float(), margin)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class RetrievalTask(ModelAndOptimizerState):
    """The passage (or snippet-stage) retrieval model as a :class:`umust_cli.train.engine.Task`."""

    name = "train retrieval"

    def __init__(self, corpora: list[Path], ckpt_dir: Path, cfg: RetrievalTrainConfig, run: RunOptions,
                 val_data: Path | None = None):
        self.device, self.fcfg = resolve_device(run.device), features_for(cfg.model)
        self.cfg, self.workers = cfg, run.workers
        self.feats, self.groups = _train_features(corpora, cfg, self.fcfg, ckpt_dir, run.progress)
        self.val = _val_features(val_data, self.fcfg, ckpt_dir, run.progress, cfg.stage) if val_data else None
        torch.manual_seed(cfg.seed)
        self.model = RetrievalModel(cfg.model)
        params = [p for n, p in self.model.named_parameters() if not (cfg.freeze_cnn and ".cnn." in f".{n}")]
        if cfg.freeze_cnn:
            for p in self.model.cnn_parameters():
                p.requires_grad_(False)
        self.model.to(self.device)
        self.opt = torch.optim.Adam(params, lr=cfg.lr)

    def batches(self, start: int) -> Iterator:
        data = StepBatches(self.feats, self.groups, self.cfg, self.fcfg)
        return batches_from(data, start, self.workers, self.device.type == "cuda")

    def train_step(self, batch, step: int) -> dict:
        return {"loss": train_step(self.model, self.opt, batch, self.cfg.margin, self.device,
                                   self.cfg.freeze_cnn, self.cfg.stage == "snippet")}

    def evaluate(self) -> dict | None:
        return validate(self.model, self.val, self.fcfg) if self.val is not None else None

    def score(self, scores: dict) -> float | None:
        return val_score(scores)

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        config = {"kind": KIND, "model": asdict(self.model.cfg), "features": asdict(self.fcfg),
                  "train": self.cfg.to_dict(), "step": step, **extra}
        ckpt_io.save_model(ckpt_dir, self.model.state_dict(), config)

    def warm_start(self, init: Path) -> dict:
        """RNN-FT / RNN-FZ: start from (pre-)trained weights of the same architecture."""
        net, _, config = load_retrieval_model(init)
        ckpt_io.load_state(self.model, net.state_dict(), init)
        return {"step": 0, "init": str(init), "init_step": int(config.get("step", 0))}


def train_retrieval(data: Path | Sequence[Path], ckpt_dir: Path, cfg: RetrievalTrainConfig, run: RunOptions,
                    val_data: Path | None = None, init: Path | None = None,
                    on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) the model on the train split of ``data`` (one corpus, or several renderings
    of the same systems: each step uses one rendering per system); checkpoints go to ``ckpt_dir``,
    and with ``val_data`` and ``run.eval_every`` the best-scoring one so far also to ``ckpt_dir/best``."""
    ckpt_dir = Path(ckpt_dir)
    check_resumable(ckpt_dir, cfg)  # before the features are loaded: fail early
    corpora = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    return fit(RetrievalTask(corpora, ckpt_dir, cfg, run, val_data), ckpt_dir, cfg, run, init=init, on_step=on_step)


def val_score(ev: dict) -> float:
    """The number a checkpoint is chosen by: the mean of both directions' MRR."""
    return 0.5 * (ev["A2S_MRR"] + ev["S2A_MRR"])


def _train_features(corpora: list[Path], cfg: RetrievalTrainConfig, fcfg: FeatureConfig, ckpt_dir: Path,
                    progress: bool) -> tuple[PassageFeatures, list[list[int]]]:
    """The train split's features (with alignments for the snippet stage) and its passage groups."""
    splits = ("train", "realscan_train") if cfg.realscans else ("train",)
    rows = [row for corpus in corpora for row in corpus_rows(corpus, splits, cfg.soundfonts)]
    alignments = None
    if cfg.stage == "snippet":  # only systems with an aligned onset make snippet pairs
        rows, alignments = _aligned(rows, fcfg)
    groups = passage_groups(rows)
    if len(groups) < 2:
        raise BadInputError(f"{', '.join(map(str, corpora))}: {len(groups)} train passage(s) for soundfonts "
                            f"{list(cfg.soundfonts) or 'all'}; need at least 2")
    _check_same_data(ckpt_dir, corpora)
    feats = load_features(rows, fcfg, ckpt_dir / "cache", progress=progress)
    feats.alignments = alignments
    return feats, groups


def _aligned(rows: list[dict], fcfg: FeatureConfig) -> tuple[list[dict], list]:
    alignments = strip_alignments(rows, fcfg)
    keep = [i for i, (x, _) in enumerate(alignments) if len(x) > 0]
    return [rows[i] for i in keep], [alignments[i] for i in keep]


def _val_features(val_data: Path, fcfg: FeatureConfig, ckpt_dir: Path, progress: bool,
                  stage: str = "passage") -> PassageFeatures:
    rows = (corpus_rows(val_data, ("valid",)) or corpus_rows(val_data))[:300]
    alignments = None
    if stage == "snippet":
        rows, alignments = _aligned(rows, fcfg)
    feats = load_features(rows, fcfg, ckpt_dir / "cache", progress=progress)
    feats.alignments = alignments
    return feats


def validate(model: RetrievalModel, feats: PassageFeatures, fcfg: FeatureConfig) -> dict:
    """Validation scores: of passages, or (features with alignments: the snippet stage) of one aligned
    snippet pair per passage, the onset nearest its middle."""
    if feats.alignments is None:
        return evaluate_features(model, feats, fcfg)
    return snippet_eval(model, feats.sheets, feats.specs, middle_points(feats.alignments, feats.rows), fcfg)


def evaluate_features(model: RetrievalModel, feats: PassageFeatures, fcfg: FeatureConfig) -> dict:
    """Both directions' R@k / MRR / median rank of the passages in ``feats`` (query i matches i)."""
    a = torch.from_numpy(embed_passages(model, "audio", feats.specs, fcfg))
    s = torch.from_numpy(embed_passages(model, "sheet", feats.sheets, fcfg))
    dist = cosine_distance(a, s).numpy()
    return {"n": len(feats), **retrieval_both_directions(dist)}


def _check_same_data(ckpt_dir: Path, corpora: list[Path]) -> None:
    """Refuse to resume a run on other --data folders (or the same in another order: other batches);
    a new run records its folders in data.json."""
    path, now = ckpt_dir / "data.json", [str(c.resolve()) for c in corpora]
    if path.is_file() and (ckpt_dir / "config.json").is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != now:
            raise CheckpointError(f"{ckpt_dir} holds a run on other --data folders ({', '.join(saved)}); "
                                  "give the same folders in the same order to resume, or use a new directory")
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(now, indent=1), encoding="utf-8")
