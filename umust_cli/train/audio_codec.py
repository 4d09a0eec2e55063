"""Training loop of the audio codec (`umust train codec audio`): DAC with GAN losses.

One step follows DAC's ``scripts/train.py``: the generator reconstructs a
batch of random 0.38 s excerpts; the discriminator (multi-period +
multi-resolution STFT) takes one AdamW step on real vs. reconstructed audio;
then the generator takes one AdamW step on

    15 * mel + 2 * feature matching + 1 * adversarial + 0.25 * commitment + 1 * codebook

(multi-scale STFT and waveform L1 are logged, not optimized, as in DAC).
Both learning rates decay by 0.999996 a step.

Data: the "wav" files of a corpus made by `umust dataset build` (rows of
``manifest.jsonl`` with split "train"; "valid" rows are for evaluation) or every
WAV/FLAC below a plain folder (every 50th kept for evaluation). Each excerpt
comes from a file drawn with probability proportional to its length, at a
uniform offset; near-silent excerpts are redrawn; each is normalized to a
random RMS level in ``loudness_db`` and its polarity flipped at random. The
excerpts of step ``s`` are a pure function of (seed, s), so a resumed run sees
exactly the data of an uninterrupted one.

Precision: bf16 autocast for the convolutions on CUDA (the vector quantizer
and all losses in float32), float32 on CPU.

Checkpoint directory (``umust_cli/checkpoint.py`` layout plus one file)::

    model.safetensors          generator weights (float32; what the codec loads)
    discriminator.safetensors  discriminator weights (float32)
    config.json, vocabulary.json
    train_state.pt             step, both optimizers and LR schedulers, RNG states
    train_log.jsonl            one row per step (+ evaluation rows)

Saving, resuming, stopping and logging are the training engine's
(:mod:`umust_cli.train.engine`): a save is one set, so the generator, the
discriminator and the optimizer states always belong to the same step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from umust_cli import checkpoint as ckpt_io
from umust_cli.codecs.audio import HOP, AudioCodec, load_audio, resample
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.device import resolve_device
from umust_cli.errors import AudioError, BadInputError, CheckpointError
from umust_cli.eval.audio_metrics import reconstruction_scores
from umust_cli.io import atomic_path
from umust_cli.model.dac_codec import (MODEL_KIND, PRESETS, SAMPLE_RATE, DACConfig, DiscriminatorConfig,
                                       Losses, LossConfig, build_discriminator, build_generator,
                                       build_losses)
from umust_cli.train.corpus_files import split_files
from umust_cli.train.engine import RunOptions, TrainResult, fit

DISCRIMINATOR = "discriminator.safetensors"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")  # what libsndfile reads


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the training trajectory (saved; must match on resume)."""

    model: DACConfig = field(default_factory=lambda: PRESETS["small"].generator)
    discriminator: DiscriminatorConfig = field(default_factory=lambda: PRESETS["small"].discriminator)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = 72
    excerpt_seconds: float = 0.38
    lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)
    lr_gamma: float = 0.999996
    grad_clip_generator: float = 1e3
    grad_clip_discriminator: float = 10.0
    loudness_db: tuple[float, float] = (-24.0, -12.0)  # excerpt RMS level range, dBFS
    seed: int = 0

    @property
    def excerpt_samples(self) -> int:
        """Excerpt length rounded up to whole frames (0.38 s -> 33 frames = 16896 samples)."""
        return max(1, math.ceil(self.excerpt_seconds * SAMPLE_RATE / HOP)) * HOP

    def to_dict(self) -> dict:
        rest = {k: v for k, v in self.__dict__.items() if k not in ("model", "discriminator", "loss")}
        rest["betas"], rest["loudness_db"] = list(self.betas), list(self.loudness_db)
        return {"model": self.model.to_dict(), "discriminator": self.discriminator.to_dict(),
                "loss": self.loss.to_dict(), **rest}

    @classmethod
    def from_dict(cls, obj: dict) -> "TrainConfig":
        rest = {k: tuple(v) if k in ("betas", "loudness_db") else v for k, v in obj.items()
                if k not in ("model", "discriminator", "loss")}  # a field saved runs lack takes its default
        return cls(model=DACConfig.from_dict(obj["model"]),
                   discriminator=DiscriminatorConfig.from_dict(obj["discriminator"]),
                   loss=LossConfig.from_dict(obj["loss"]), **rest)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioItem:
    path: Path
    frames: int     # samples at the file's own rate
    rate: int


def find_audio(data_dir: str | Path) -> tuple[list[AudioItem], list[AudioItem]]:
    """(train, valid) sound files of a `umust dataset build` corpus (its rows' ``wav``) or of a plain
    folder (see :func:`split_files`); empty files are left out."""
    train, val = split_files(data_dir, ("wav",), AUDIO_SUFFIXES)
    train_items = [it for it in map(_item, train) if it.frames > 0]
    if not train_items:
        raise BadInputError(f"no training audio found in {data_dir}")
    return train_items, [it for it in map(_item, val) if it.frames > 0]


def _item(path: Path) -> AudioItem:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(f"cannot read audio {path}: {e}") from e
    return AudioItem(path, int(info.frames), int(info.samplerate))


class AudioStore:
    """Excerpts of the training files; files at other rates are resampled once and cached."""

    def __init__(self, items: list[AudioItem]):
        self.items = items
        self.lengths = np.array([it.frames * SAMPLE_RATE // it.rate for it in items], np.int64)
        self.cumulative = np.cumsum(self.lengths)  # for drawing files in proportion to length
        self._resampled: dict[int, np.ndarray] = {}

    def excerpt(self, i: int, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) of file ``i`` at 44.1 kHz, zero-padded past its end."""
        import soundfile as sf

        it = self.items[i]
        if it.rate == SAMPLE_RATE:
            x, _ = sf.read(str(it.path), start=start, frames=n, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
        else:
            if i not in self._resampled:
                x, rate = sf.read(str(it.path), dtype="float32", always_2d=True)
                self._resampled[i] = resample(x.mean(axis=1), rate)
            x = self._resampled[i][start:start + n]
        return np.pad(x, (0, n - x.size)) if x.size < n else x


def make_batch(store: AudioStore, cfg: TrainConfig, step: int, tries: int = 10) -> torch.Tensor:
    """(B, 1, excerpt_samples) float32 batch of step ``step`` (a pure function of seed and step)."""
    rng = np.random.default_rng([cfg.seed, 7919, step])
    n, total = cfg.excerpt_samples, int(store.cumulative[-1])
    batch = []
    for _ in range(cfg.batch_size):
        for _ in range(tries):  # redraw near-silent excerpts (the last try is kept anyway)
            i = int(np.searchsorted(store.cumulative, rng.integers(0, total), side="right"))
            x = store.excerpt(i, int(rng.integers(0, max(1, store.lengths[i] - n + 1))), n)
            if np.abs(x).max() > 1e-3:
                break
        batch.append(_level(x, rng, cfg.loudness_db))
    return torch.from_numpy(np.stack(batch))[:, None]


def _level(x: np.ndarray, rng: np.random.Generator, loudness_db: tuple[float, float]) -> np.ndarray:
    """Scale to a random RMS level (dBFS), keep the peak <= 1, flip the polarity at random."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    target = 10 ** (rng.uniform(*loudness_db) / 20)
    x = x * (target / rms) if rms > 1e-6 else x
    peak = float(np.abs(x).max())
    x = x / peak if peak > 1.0 else x
    return (x * (-1.0 if rng.random() < 0.5 else 1.0)).astype(np.float32)


# ---------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------

class Parts(NamedTuple):
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    losses: Losses
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler


def build_parts(cfg: TrainConfig, device: torch.device) -> Parts:
    """Generator, discriminator, losses, AdamW optimizers and ExponentialLR schedules."""
    torch.manual_seed(cfg.seed)
    gen = build_generator(cfg.model).to(device).train()
    disc = build_discriminator(cfg.discriminator, cfg.model.sample_rate).to(device).train()
    opt_g = torch.optim.AdamW(gen.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    return Parts(gen, disc, build_losses(cfg.loss, disc), opt_g, opt_d,
                 torch.optim.lr_scheduler.ExponentialLR(opt_g, cfg.lr_gamma),
                 torch.optim.lr_scheduler.ExponentialLR(opt_d, cfg.lr_gamma))


def generator_forward(gen: torch.nn.Module, x: torch.Tensor, amp: bool):
    """(B, 1, T) audio -> (reconstruction (B, 1, T) float32, commitment, codebook losses).

    Encoder and decoder run under bf16 autocast when ``amp``; the residual
    vector quantizer always runs in float32.
    """
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        z = gen.encoder(x)
    z, _codes, _latents, commitment, codebook = gen.quantizer(z.float())
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        y = gen.decoder(z)
    return y[..., :x.shape[-1]].float(), commitment, codebook


def train_step(parts: Parts, cfg: TrainConfig, x: torch.Tensor) -> dict:
    """One discriminator and one generator update on a (B, 1, T) batch; the loss terms."""
    from audiotools import AudioSignal

    device = next(parts.generator.parameters()).device
    amp = device.type == "cuda"
    x = x.to(device, non_blocking=True)
    recon, commitment, codebook = generator_forward(parts.generator, x, amp)
    fake, real = AudioSignal(recon, cfg.model.sample_rate), AudioSignal(x, cfg.model.sample_rate)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="stft_data changed shape")
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss_d = parts.losses.gan.discriminator_loss(fake, real)
        grad_d = _update(parts.opt_d, parts.sched_d, parts.discriminator, loss_d,
                         cfg.grad_clip_discriminator)
        terms = _generator_terms(parts.losses, fake, real, amp)
    w = cfg.loss
    loss = (w.mel_weight * terms["mel"] + w.feature_weight * terms["feature"]
            + w.adversarial_weight * terms["adversarial"] + w.commitment_weight * commitment
            + w.codebook_weight * codebook)
    if not torch.isfinite(loss) or not torch.isfinite(loss_d):
        raise FloatingPointError("training diverged (non-finite loss); try a lower learning rate")
    lr = parts.opt_g.param_groups[0]["lr"]
    grad_g = _update(parts.opt_g, parts.sched_g, parts.generator, loss, cfg.grad_clip_generator)
    return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()},
            "commitment": commitment.item(), "codebook": codebook.item(),
            "discriminator": loss_d.item(), "grad_norm": grad_g, "grad_norm_d": grad_d, "lr": lr}


def _generator_terms(losses: Losses, fake, real, amp: bool) -> dict[str, torch.Tensor]:
    terms = {"mel": losses.mel(fake, real), "stft": losses.stft(fake, real),
             "waveform": losses.waveform(fake, real)}
    with torch.autocast(device_type=fake.audio_data.device.type, dtype=torch.bfloat16, enabled=amp):
        adversarial, feature = losses.gan.generator_loss(fake, real)
    return {**terms, "adversarial": adversarial.float(), "feature": feature.float()}


def _update(opt, sched, module: torch.nn.Module, loss: torch.Tensor, clip: float) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()
    sched.step()
    return float(norm)


@torch.no_grad()
def evaluate(gen: torch.nn.Module, items: list[AudioItem], files: int, seconds: float) -> dict | None:
    """Mean SI-SDR (dB) and mel distance of codec round trips of the first ``seconds`` of up to
    ``files`` held-out files."""
    if not items or files <= 0:
        return None
    device = next(gen.parameters()).device
    codec, scores = AudioCodec(gen, str(device)), []
    n = int(seconds * SAMPLE_RATE)
    for it in items[:files]:
        try:
            x = load_audio(it.path)[:n]
        except AudioError:
            continue  # a silent validation clip says nothing about reconstruction
        scores.append(reconstruction_scores(x, codec.decode_codes(codec.encode_codes(x))))
    gen.train()
    if not scores:
        return None
    return {"si_sdr": round(float(np.mean([s["si_sdr"] for s in scores])), 3),
            "mel_distance": round(float(np.mean([s["mel_distance"] for s in scores])), 4),
            "files": len(scores)}


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

def _model_config(cfg: TrainConfig, step: int) -> dict:
    train = cfg.to_dict()
    return {"kind": MODEL_KIND, "format": 1, "step": step, "model": train.pop("model"), "train": train}


def save_checkpoint(ckpt_dir: Path, parts: Parts, cfg: TrainConfig, vocab: Vocabulary, step: int,
                    extra: dict | None = None) -> None:
    """Write the generator (model.safetensors, config.json, vocabulary.json) and the discriminator."""
    from safetensors.torch import save_file

    ckpt_io.save_model(ckpt_dir, parts.generator.state_dict(), {**_model_config(cfg, step), **(extra or {})},
                       vocab)
    disc = {k: v.detach().cpu().contiguous().clone() for k, v in parts.discriminator.state_dict().items()}
    with atomic_path(ckpt_dir / DISCRIMINATOR) as tmp:
        save_file(disc, str(tmp), metadata={"kind": MODEL_KIND, "step": str(step)})


def load_weights(ckpt_dir: Path, parts: Parts, vocab: Vocabulary, step: int) -> None:
    """Generator and discriminator weights of ``ckpt_dir``, which must both be of ``step``."""
    weights, config = ckpt_io.load_model(ckpt_dir, vocab)
    disc_weights, disc_step = _read_discriminator(ckpt_dir / DISCRIMINATOR)
    if int(config.get("step", -1)) != step or disc_step != step:
        raise CheckpointError(f"{ckpt_dir} mixes steps (generator {config.get('step')}, "
                              f"discriminator {disc_step}, optimizer {step}); train into a new directory")
    parts.generator.load_state_dict(weights)
    parts.discriminator.load_state_dict(disc_weights)


def _read_discriminator(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint has no discriminator weights: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            step = int((f.metadata() or {}).get("step", -1))
        return load_file(str(path), device="cpu"), step
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"discriminator weights {path} are truncated or corrupt ({e})") from e


def export_codec(ckpt_dir: str | Path, out_dir: str | Path, vocab: Vocabulary) -> Path:
    """Copy a run's generator as a shippable fp16 codec (weights, config, vocabulary only)."""
    return ckpt_io.export_fp16(ckpt_dir, out_dir, vocab)


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------

def _optimizers(parts: Parts) -> dict:
    """The resume state's names of the optimizers and learning-rate schedules."""
    return {"optimizer_g": parts.opt_g, "optimizer_d": parts.opt_d,
            "scheduler_g": parts.sched_g, "scheduler_d": parts.sched_d}


class AudioCodecTask:
    """The DAC codec (generator + discriminator) as a :class:`umust_cli.train.engine.Task`. Its
    resume state holds the optimizers and schedulers; the weights are read from the saved files."""

    name = "dac"

    def __init__(self, data_dir: str | Path, cfg: TrainConfig, run: RunOptions, vocab: Vocabulary,
                 eval_seconds: float = 5.0):
        device = resolve_device(run.device)
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick kernels
        train_items, self.val_items = find_audio(data_dir)
        self.store, self.parts = AudioStore(train_items), build_parts(cfg, device)
        self.cfg, self.vocab, self.eval_files, self.eval_seconds = cfg, vocab, run.eval_items, eval_seconds

    def batches(self, start: int) -> Iterator[torch.Tensor]:
        return (make_batch(self.store, self.cfg, step) for step in count(start))

    def train_step(self, batch: torch.Tensor, step: int) -> dict:
        return train_step(self.parts, self.cfg, batch)

    def evaluate(self) -> dict | None:
        return evaluate(self.parts.generator, self.val_items, self.eval_files, self.eval_seconds)

    def score(self, scores: dict) -> float | None:
        return None  # no keep-best for the codecs

    def state_dict(self) -> dict:
        return {name: obj.state_dict() for name, obj in _optimizers(self.parts).items()}

    def load_state_dict(self, state: dict, ckpt_dir: Path) -> None:
        load_weights(ckpt_dir, self.parts, self.vocab, int(state["step"]))
        for name, obj in _optimizers(self.parts).items():
            obj.load_state_dict(state[name])

    def save(self, ckpt_dir: Path, step: int, extra: dict) -> None:
        save_checkpoint(ckpt_dir, self.parts, self.cfg, self.vocab, step, extra)

    def warm_start(self, init: Path) -> dict:
        """The generator from ``init`` (an exported codec: no discriminator, which starts from scratch)."""
        return ckpt_io.warm_start(self.parts.generator, init, MODEL_KIND, self.cfg.model.to_dict(), self.vocab)


def train_audio_codec(data_dir: str | Path, ckpt_dir: str | Path, cfg: TrainConfig, run: RunOptions,
                      vocab: Vocabulary, on_step: Callable[[int, dict], None] | None = None,
                      init: str | Path | None = None, eval_seconds: float = 5.0) -> TrainResult:
    """Train (or resume) the audio codec in ``ckpt_dir`` on the sound files of ``data_dir``.

    ``init``: generator weights to start a fresh run from (ignored when ``ckpt_dir`` holds a run).
    """
    task = AudioCodecTask(data_dir, cfg, run, vocab, eval_seconds)
    return fit(task, ckpt_dir, cfg, run, init=init, on_step=on_step)
