"""`umust train`: training commands (codecs now; translators and retrieval later)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli import registry
from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors, print_json
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError, InputNotFoundError
from umust_cli.io import require_file

app = typer.Typer(help="Train the codecs, the retrieval model and the translators; background runs, their "
                  "status and the promotion of their weights.", no_args_is_help=True)
codec_app = typer.Typer(help="Train a modality codec (tokenizer).", no_args_is_help=True)
app.add_typer(codec_app, name="codec")

INIT_HELP = ("Start a new run from these weights: a shipped model's name (e.g. small) or a checkpoint "
             "folder; ignored when --output already holds a run.")
IMAGE_CONFIG_HELP = "Model size: tiny (tests), small (shipped default, ~8 MB fp16) or paper (GPU)."


@codec_app.command("image")
@handle_errors
def image(
    data: Path = typer.Option(..., "--data", help="Corpus of `umust dataset build` or a folder of PNGs."),
    output: Path = typer.Option(..., "-o", "--output", help="Checkpoint directory (resumed if it holds a run)."),
    config: str = typer.Option("small", "--config", help=IMAGE_CONFIG_HELP),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Save and stop after this long."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop at this total step count."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on cuda)."),
    batch_scale: Optional[float] = typer.Option(
        None, "--batch-scale", help="Multiply the paper's batch sizes (default: 1 on cuda, 1/32 on cpu)."),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate."),
    ink_weight: float = typer.Option(0.0, "--ink-weight", min=0.0,
                                     help="Extra L1 weight on the target's ink pixels (thin lines)."),
    blur_weight: float = typer.Option(0.0, "--blur-weight", min=0.0,
                                      help="Weight of an L2 term between Gaussian-blurred output and target."),
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help=INIT_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the data order."),
    save_every: int = typer.Option(500, "--save-every", help="Checkpoint every N steps."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate on validation images every N steps."),
    export: Optional[Path] = typer.Option(None, "--export", help="Also write the model as an fp16 codec directory here."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the score-image RQ-VAE; rerun the same command to resume after a stop."""
    from umust_cli.checkpoint import export_fp16
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.model.rqvae import PRESETS
    from umust_cli.train.engine import RunOptions
    from umust_cli.train.image_codec import TrainConfig, train_image_codec

    dev = _setup(config, PRESETS, max_steps, max_minutes, threads, device)
    scale = batch_scale if batch_scale is not None else (1.0 if dev.type == "cuda" else 1 / 32)
    cfg = TrainConfig(model=PRESETS[config], batch_scale=scale, lr=lr, seed=seed, ink_weight=ink_weight,
                      blur_weight=blur_weight)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every,
                     eval_every=eval_every, device=str(dev), progress=not quiet and not as_json)
    vocab = default_vocabulary()
    result = train_image_codec(data, output, cfg, run, vocab, init=_init("image-codec", init))
    exported = str(export_fp16(output, export, vocab)) if export is not None else None
    ev = result.eval
    _report(result, output, as_json, f", val PSNR {ev['psnr']:.2f} dB, ink F1 {ev['f1']:.3f}" if ev else "",
            {"exported": exported})


def _init(kind: str, init: str | None) -> Path | None:
    """--init NAME|PATH: a shipped model of ``kind`` by name, or a checkpoint folder (registry.resolve)."""
    return registry.resolve(kind, init) if init is not None else None


def _setup(config: str, presets: dict, max_steps: int | None, max_minutes: float | None, threads: int,
           device: str):
    """Check the options every training command shares, set torch's threads; the torch.device."""
    import torch

    if config not in presets:
        raise BadInputError(f"unknown --config {config!r} (choose from {', '.join(presets)})")
    if max_steps is None and max_minutes is None:
        raise BadInputError("give --max-steps or --max-minutes (or both)")
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device)


def _report(result, output: Path, as_json: bool, score: str, exported: dict | None = None) -> None:
    """Print a training result: its summary (plus ``exported``: {"exported": path or None} of the
    codecs) as JSON, or one line."""
    if as_json:
        print_json({**result.summary(output), **(exported or {})})
        return
    path = (exported or {}).get("exported")
    typer.echo(f"step {result.step} ({result.stop_reason}); saved {output}{score}"
               + (f"; exported {path}" if path else ""))


AUDIO_CONFIG_HELP = "Model size: tiny (tests), small (shipped default, ~13 MiB fp16) or paper (DAC widths, GPU)."


@codec_app.command("audio")
@handle_errors
def audio(
    data: Path = typer.Option(..., "--data", help="Corpus of `umust dataset build` or a folder of WAV/FLAC files."),
    output: Path = typer.Option(..., "-o", "--output", help="Checkpoint directory (resumed if it holds a run)."),
    config: str = typer.Option("small", "--config", help=AUDIO_CONFIG_HELP),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Save and stop before this much time has passed."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop at this total step count."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on cuda)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Excerpts per step (default: 72 on cuda as DAC, 2 on cpu)."),
    excerpt_seconds: float = typer.Option(0.38, "--excerpt-seconds", help="Length of each training excerpt."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate of both networks."),
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help=INIT_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the data order."),
    save_every: int = typer.Option(1000, "--save-every", help="Checkpoint every N steps."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate on validation audio every N steps."),
    export: Optional[Path] = typer.Option(None, "--export", help="Also write the generator as an fp16 codec directory here."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the DAC audio codec (GAN); rerun the same command to resume after a stop."""
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.model.dac_codec import PRESETS
    from umust_cli.train.audio_codec import TrainConfig, export_codec, train_audio_codec
    from umust_cli.train.engine import RunOptions

    dev, vocab = _setup(config, PRESETS, max_steps, max_minutes, threads, device), default_vocabulary()
    preset = PRESETS[config]
    cfg = TrainConfig(model=preset.generator, discriminator=preset.discriminator,
                      batch_size=batch_size or (72 if dev.type == "cuda" else 2),
                      excerpt_seconds=excerpt_seconds, lr=lr, seed=seed)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every,
                     eval_every=eval_every, device=str(dev), progress=not quiet and not as_json)
    result = train_audio_codec(data, output, cfg, run, vocab, init=_init("audio-codec", init))
    exported = str(export_codec(output, export, vocab)) if export is not None else None
    ev = result.eval
    _report(result, output, as_json,
            f", val SI-SDR {ev['si_sdr']:.2f} dB, mel distance {ev['mel_distance']:.3f}" if ev else "",
            {"exported": exported})


@app.command("retrieval")
@handle_errors
def retrieval(
    data: List[Path] = typer.Option(..., "--data", help="Corpus of `umust dataset build` (its train split is "
                                    "used); repeatable: renderings of the same systems by `umust dataset "
                                    "resynth` give each system several timbres."),
    output: Path = typer.Option(..., "-o", "--output", help="Checkpoint directory (resumed if it holds a run)."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="Corpus whose valid split (else all rows) "
                                                                     "is scored during and after training."),
    config: str = typer.Option("small", "--config", help="Model size: tiny (tests), small (CPU), paper (GPU)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Save and stop after this long."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop at this total step count."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, help="Passage pairs per step (the negatives)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    margin: float = typer.Option(0.7, "--margin", help="Triplet loss margin on cosine distance."),
    soundfont: List[str] = typer.Option([], "--soundfont", help="Train only on rows made with this soundfont "
                                                                "(repeatable; default: all)."),
    stage: str = typer.Option("passage", "--stage", help="passage (the RNN model), or snippet: pre-train the "
                              "CNNs alone on aligned snippet pairs (needs 'umust dataset align'); --init from "
                              "it then gives RNN-FT, or RNN-FZ with --freeze-cnn."),
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH",
                                       help="Start from this checkpoint, a shipped model's name or a folder "
                                       "(fine-tune: RNN-FT)."),
    freeze_cnn: bool = typer.Option(False, "--freeze-cnn", help="With --init: keep the snippet CNNs fixed (RNN-FZ)."),
    no_tempo_augment: bool = typer.Option(False, "--no-tempo-augment", help="No random spectrogram stretching."),
    eq_db: float = typer.Option(12.0, "--eq-augment-db", min=0.0, help="Random spectral EQ range in dB "
                                                                          "(timbre variety; 0: off)."),
    eq_knots: int = typer.Option(0, "--eq-knots", min=0, help="With --eq-augment-db: also a random EQ curve "
                                 "through this many points (bumps, dips, roll-offs; 0: off)."),
    reverb_s: float = typer.Option(0.0, "--reverb-augment", min=0.0, help="Random decay tail (time constant up "
                                   "to this many seconds) on half the training spectrograms; 0: off."),
    realscans: bool = typer.Option(False, "--realscans", help="Also train on the real scans of each --data corpus "
                                   "(its realscan_train rows, 'umust dataset scans'), each with its span of the "
                                   "piece's audio; saved in the run's config."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the batches."),
    save_every: int = typer.Option(200, "--save-every", min=1, help="Checkpoint every N steps."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, help="Score --val-data every N steps (0: at the end)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (bf16 autocast on cuda)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: torch's default)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes that build mini-batches ahead of the "
                                "model (0: in the training process); the batches are the same either way."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the audio <-> sheet passage retrieval model; rerun the same command to resume.

    With --val-data and --eval-every, the checkpoint with the best validation MRR so far
    is also kept in OUTPUT/best."""
    from umust_cli.model.retrieval import PRESETS
    from umust_cli.retrieval.train import train_config, train_retrieval
    from umust_cli.train.engine import RunOptions

    if freeze_cnn and init is None:
        raise BadInputError("--freeze-cnn needs --init (a checkpoint whose CNNs to keep)")
    dev = _setup(config, PRESETS, max_steps, max_minutes, threads, device)
    tempo = (1.0, 1.0) if no_tempo_augment else (0.8, 1.25)
    cfg = train_config(config, batch_size=batch_size, lr=lr, margin=margin, seed=seed, freeze_cnn=freeze_cnn,
                       soundfonts=tuple(soundfont), eq_augment_db=eq_db, tempo_augment=tempo,
                       eq_knots=eq_knots, reverb_augment_s=reverb_s, stage=stage, realscans=realscans)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every, eval_every=eval_every,
                     log_every=10, device=str(dev), progress=not quiet and not as_json, workers=workers)
    result = train_retrieval(data, output, cfg, run, val_data, _init("retrieval", init))
    ev, what = result.eval, "snippet MRR" if stage == "snippet" else "MRR"
    _report(result, output, as_json,
            f", val {what} audio->sheet {ev['A2S_MRR']:.3f}, sheet->audio {ev['S2A_MRR']:.3f}" if ev else "")


TASKS_HELP = ("Comma-separated tasks: omr, midi2audio, image2audio, transcription, lmx2image, audio2image, "
              "midi2lmx, lmx2midi or SOURCE>TARGET (image, audio, notation|lmx, midi); each optionally "
              "@START:END (its weight ramps from 0 to full between these steps) and *WEIGHT. "
              "Default: the direction's three tasks with the paper's curriculum.")


# Options the reader trainers share (key-reader, pitch-reader)
READER_DATA = typer.Option(..., "--data", help="Corpus of `umust dataset build` (its system PNGs, scanned-look "
                           "copies and LMX).")
READER_OUTPUT = typer.Option(..., "-o", "--output", help="Checkpoint directory (resumed if it holds a run).")
READER_MAX_MINUTES = typer.Option(None, "--max-minutes", help="Save and stop after this long.")
READER_MAX_STEPS = typer.Option(None, "--max-steps", help="Stop at this total step count.")
READER_DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
READER_NO_SCANS = typer.Option(False, "--no-scans", help="Train on the engravings only.")
READER_SEED = typer.Option(0, "--seed", help="Seed of the initial weights, the batches and their shifts.")
READER_EVAL_EVERY = typer.Option(0, "--eval-every", help="Score the valid split every N steps (and at the end).")
READER_THREADS = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default).")
READER_QUIET = typer.Option(False, "--quiet", help="No progress bar.")


@app.command("key-reader")
@handle_errors
def key_reader(
    data: Path = READER_DATA,
    output: Path = READER_OUTPUT,
    max_minutes: Optional[float] = READER_MAX_MINUTES,
    max_steps: Optional[int] = READER_MAX_STEPS,
    device: str = READER_DEVICE,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per step."),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW peak learning rate."),
    warmup_steps: int = typer.Option(100, "--warmup-steps", min=0, help="Linear warm-up steps."),
    decay_steps: int = typer.Option(4000, "--decay-steps", min=1, help="Cosine decay to 5% of --lr by this step."),
    channels: int = typer.Option(16, "--channels", min=1, help="Width of the first convolution (then x2, x4, x4)."),
    no_scans: bool = READER_NO_SCANS,
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help=INIT_HELP),
    seed: int = READER_SEED,
    save_every: int = typer.Option(500, "--save-every", help="Checkpoint every N steps."),
    eval_every: int = READER_EVAL_EVERY,
    threads: int = READER_THREADS,
    quiet: bool = READER_QUIET,
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the key-signature reader: a small CNN on the first columns of each system image, read
    by OMR and the image -> MIDI reading instead of the translator's key head (results.md)."""
    from umust_cli.model.key_reader import KeyReaderConfig
    from umust_cli.train.engine import RunOptions
    from umust_cli.train.key_reader import TrainConfig, train_key_reader

    dev = _setup("small", {"small": None}, max_steps, max_minutes, threads, device)
    cfg = TrainConfig(model=KeyReaderConfig(channels=channels), batch_size=batch_size, lr=lr,
                      warmup_steps=warmup_steps, decay_steps=decay_steps, scans=not no_scans, seed=seed)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every,
                     eval_every=eval_every, device=str(dev), progress=not quiet and not as_json)
    result = train_key_reader(data, output, cfg, run, init=_init("key-reader", init))
    ev = result.eval or {}
    score = ", ".join(f"{k.split('/')[1]} {v:.1%}" for k, v in ev.items() if k.startswith("key_accuracy/"))
    _report(result, output, as_json, f", valid keys right: {score}" if score else "")


@app.command("pitch-reader")
@handle_errors
def pitch_reader(
    data: Path = READER_DATA,
    output: Path = READER_OUTPUT,
    max_minutes: Optional[float] = READER_MAX_MINUTES,
    max_steps: Optional[int] = READER_MAX_STEPS,
    device: str = READER_DEVICE,
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="System images per step."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate."),
    warmup_steps: int = typer.Option(200, "--warmup-steps", min=0, help="Linear warm-up steps."),
    decay_steps: int = typer.Option(20000, "--decay-steps", min=1, help="Cosine decay to 5% of --lr by this step."),
    channels: int = typer.Option(16, "--channels", min=1, help="Width of the first convolution (then x2, x4, x4)."),
    hidden: int = typer.Option(192, "--hidden", min=2, help="Column features and GRU width (even)."),
    target: str = typer.Option("notated", "--ctc-target", help="The classes read: written, spelled, marked "
                               "(each pitch name as printed: unmarked, sharp, flat or natural) or notated (marked, "
                               "plus each name as a tied continuation and the bar line; --init from a marked reader "
                               "gives the classes they share their rows), rhythmic (notated, plus rests, note "
                               "values and voices at one onset: what OMR writes LMX from) or beamed (rhythmic, plus "
                               "a note beamed to the next one of its voice)."),
    frames: int = typer.Option(0, "--frames", min=0, help="CTC frames per 16-px column and staff (0: the "
                               "target's: 4 for rhythmic and beamed, which read a class per note value too; else 2)."),
    no_scans: bool = READER_NO_SCANS,
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help=INIT_HELP),
    seed: int = READER_SEED,
    save_every: int = typer.Option(250, "--save-every", help="Checkpoint every N steps."),
    eval_every: int = READER_EVAL_EVERY,
    threads: int = READER_THREADS,
    quiet: bool = READER_QUIET,
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the pitch reader: a convolutional-recurrent CTC model reading each staff's pitches from
    the pixels of a system image, read by the image -> MIDI reading instead of the translator's CTC
    head (results.md)."""
    from umust_cli.data.staff_order import ctc_classes
    from umust_cli.model.pitch_reader import PitchReaderConfig
    from umust_cli.model.translator import CTC_TARGETS
    from umust_cli.train.engine import RunOptions
    from umust_cli.train.pitch_reader import TrainConfig, train_pitch_reader

    if target not in CTC_TARGETS:
        raise BadInputError(f"unknown --ctc-target {target!r}; choose {' or '.join(CTC_TARGETS)}")
    dev = _setup("small", {"small": None}, max_steps, max_minutes, threads, device)
    model = PitchReaderConfig(channels=channels, hidden=hidden, ctc_target=target, ctc_classes=len(ctc_classes(target)),
                              frames=frames)
    cfg = TrainConfig(model=model, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                      decay_steps=decay_steps, scans=not no_scans, seed=seed)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every,
                     eval_every=eval_every, device=str(dev), progress=not quiet and not as_json)
    result = train_pitch_reader(data, output, cfg, run, init=_init("pitch-reader", init))
    ev = result.eval or {}
    score = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in ev.items() if k.startswith("staff_error_rate/"))
    _report(result, output, as_json, f", valid staff error rate: {score}" if score else "")


@app.command("note-reader")
@handle_errors
def note_reader(
    data: Path = typer.Option(..., "--data", help="Corpus of `umust dataset build` (its system WAVs and MIDI)."),
    output: Path = READER_OUTPUT,
    max_minutes: Optional[float] = READER_MAX_MINUTES,
    max_steps: Optional[int] = READER_MAX_STEPS,
    device: str = READER_DEVICE,
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Audio crops per step."),
    lr: float = typer.Option(6e-4, "--lr", help="AdamW peak learning rate."),
    warmup_steps: int = typer.Option(200, "--warmup-steps", min=0, help="Linear warm-up steps."),
    decay_steps: int = typer.Option(20000, "--decay-steps", min=1, help="Cosine decay to 5% of --lr by this step."),
    crop_seconds: float = typer.Option(5.0, "--crop-seconds", help="Seconds of audio per crop."),
    channels: int = typer.Option(16, "--channels", min=1, help="Width of the first convolutions (the third: x2)."),
    hidden: int = typer.Option(256, "--hidden", min=2, help="Frame features and GRU width (even)."),
    onset_threshold: float = typer.Option(0.5, "--onset-threshold", help="Onset probability a note needs in the "
                                          "reading the valid split is scored on (saved with the weights; the "
                                          "shipped reader's was chosen on valid: bench/note_threshold.py)."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (bf16 where the device has native bf16, else fp32), bf16 or fp32."),
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help=INIT_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, the crops and their gains."),
    save_every: int = typer.Option(250, "--save-every", help="Checkpoint every N steps."),
    eval_every: int = READER_EVAL_EVERY,
    threads: int = READER_THREADS,
    quiet: bool = READER_QUIET,
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train the note reader: a convolutional-recurrent piano transcriber on the log-mel spectrogram
    (onset and frame rolls), the audio -> MIDI engine of `--transcriber umust` (results.md)."""
    from umust_cli.model.note_reader import NoteReaderConfig
    from umust_cli.train.engine import RunOptions
    from umust_cli.train.note_reader import TrainConfig, train_note_reader

    dev = _setup("small", {"small": None}, max_steps, max_minutes, threads, device)
    model = NoteReaderConfig(channels=channels, hidden=hidden, onset_threshold=onset_threshold)
    cfg = TrainConfig(model=model, batch_size=batch_size, lr=lr,
                      warmup_steps=warmup_steps, decay_steps=decay_steps, crop_seconds=crop_seconds,
                      precision=precision, seed=seed)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every,
                     eval_every=eval_every, device=str(dev), progress=not quiet and not as_json)
    result = train_note_reader(data, output, cfg, run, init=_init("note-reader", init))
    ev = result.eval or {}
    _report(result, output, as_json, f", valid onset F1 {ev['onset_f1']:.3f}" if "onset_f1" in ev else "")


@app.command("translator")
@handle_errors
def translator(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Corpus of `umust dataset build`, tokenized by `umust dataset tokenize`."),
    output: Path = typer.Option(..., "-o", "--output", help="Checkpoint directory (resumed if it holds a run)."),
    direction: str = typer.Option("i2a", "--direction", help="i2a (OMR, MIDI->audio, image->audio) or a2i "
                                  "(transcription, LMX->image, audio->image)."),
    preset: str = typer.Option("small", "--preset", help="Model size: tiny (tests), small (CPU) or paper (GPU)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help=TASKS_HELP),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Save and stop before this much time has passed."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop at this total step count."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: each rank its GPU)."),
    image_layout: str = typer.Option("column", "--image-layout", help="Source images: column (one position per "
                                     "patch column; measured ahead at equal compute, docs/results.md) or grid (a "
                                     "position per patch, the paper's)."),
    column_norm: bool = typer.Option(False, "--column-norm/--no-column-norm", help="Column layout: LayerNorm on "
                                     "each mixed column before its position is added (results.md)."),
    token_dropout: float = typer.Option(0.0, "--token-dropout", min=0.0, max=0.9, help="Fraction of the decoder's "
                                        "input steps blanked to [PAD] in training, so that it reads the source."),
    crops: bool = typer.Option(False, "--crops", help="OMR: each engraved train system's prefixes of 1..n-1 "
                               "measures as more pairs (bar lines by the page detector; cached as NNN.bars.json)."),
    guide: float = typer.Option(0.0, "--guide", min=0.0, help="Weight of the guided-attention loss (cross-attention "
                                "kept near the source/target diagonal; results.md)."),
    ctc: float = typer.Option(0.0, "--ctc", min=0.0, help="OMR, column layout: weight of a CTC loss that reads "
                              "each staff's pitches from the encoder's image columns, left to right (a "
                              "training aid; results.md)."),
    ctc_target: str = typer.Option("written", "--ctc-target", help="With --ctc: the classes it reads, written "
                                   "(step + octave), spelled (step + octave + flat/natural/sharp, the key "
                                   "signature and accidentals applied) or marked (step + octave + the printed "
                                   "accidental: none/sharp/flat/natural; the key from the key head) or notated "
                                   "(marked, tied continuations and bar lines)."),
    ctc_lr_scale: float = typer.Option(1.0, "--ctc-lr-scale", min=0.0, help="With --ctc: the CTC head's learning "
                                       "rate, times the model's (a head of new classes on a trained encoder: "
                                       "--ctc-target marked from a written head)."),
    key_loss: float = typer.Option(0.0, "--key-loss", min=0.0, help="OMR, column layout: weight of the loss of a "
                                   "key-signature head on the first image columns (the image -> MIDI reading "
                                   "applies the key it reads to a written CTC head's pitches; results.md)."),
    roll: float = typer.Option(0.0, "--roll", min=0.0, help="Transcription (audio > midi): weight of the loss of a "
                               "piano-roll head (onsets and sounding notes per audio frame) on the encoder; "
                               "'translate' reads MIDI from it without decoding (results.md)."),
    realscans: bool = typer.Option(False, "--realscans", help="OMR: the corpus's realscan_train systems (real "
                                   "scans, 'umust dataset scans', tokenized) as more pairs; realscan_valid "
                                   "validated too (realscan/loss, realscan/SER)."),
    realscan_codes: Optional[Path] = typer.Option(None, "--realscan-codes", help="With --realscans: folder of the "
                                                  "real scans' code files (default: --codes, else the corpus)."),
    init: Optional[str] = typer.Option(None, "--init", metavar="NAME|PATH", help="Start a new run from these "
                                       "translator weights: a shipped model's name (e.g. small, of the direction's "
                                       "kind) or a checkpoint folder (fine-tuning, e.g. with --tasks omr); ignored "
                                       "when --output holds a run."),
    batch_tokens: int = typer.Option(4096, "--batch-tokens", min=1, help="Steps per micro-batch, padding included."),
    accum: int = typer.Option(1, "--accum", min=1, help="Micro-batches per update (gradient accumulation)."),
    precision: str = typer.Option("auto", "--precision",
                                   help="auto (bf16 where the device has native bf16, else fp32), bf16 or fp32."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (CUDA only)."),
    lr: float = typer.Option(3e-4, "--lr", help="AdamW peak learning rate."),
    warmup_steps: int = typer.Option(1000, "--warmup-steps", min=1, help="Linear warm-up steps."),
    decay_steps: int = typer.Option(100_000, "--decay-steps", min=1, help="Cosine decay ends here (fixed, so "
                                    "that a run resumed with a larger --max-steps keeps its schedule)."),
    no_codebook_init: bool = typer.Option(False, "--no-codebook-init", help="Random code embeddings instead of "
                                          "the shipped codecs' codebooks."),
    best_metric: str = typer.Option("auto", "--best-metric", help="Keep-best metric: ser (OMR), loss (mean "
                                    "valid loss) or auto (ser when OMR is trained)."),
    no_scans: bool = typer.Option(False, "--no-scans", help="Engraved images only (default: the tokenized "
                                  "scanned-look copies are image sources too)."),
    add_train: List[Path] = typer.Option([], "--add-train", help="Another tokenized corpus (codes in it) whose "
                                         "train split is added to the training pairs, less its pieces whose score "
                                         "file is named like a valid or test piece of --data (another edition of a "
                                         "held-back work); repeatable. Validation stays on --data's valid split."),
    codes: Optional[Path] = typer.Option(None, "--codes", help="Folder of the code files if `dataset tokenize` "
                                         "wrote them elsewhere (default: the corpus)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the batch plan."),
    save_every: int = typer.Option(500, "--save-every", min=1, help="Checkpoint every N steps."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, help="Validate every N steps (0: at the end)."),
    eval_items: int = typer.Option(8, "--eval-items", min=0, help="Valid systems decoded for the OMR SER."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: torch's default)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Train a translator on several tasks with a curriculum; rerun the same command to resume.

    Several processes: torchrun --nproc-per-node N -m umust_cli train translator ..."""
    import torch

    from umust_cli.data.tokenize import corpus_vocabulary
    from umust_cli.train.engine import RunOptions
    from umust_cli.train.translator import finish_distributed, init_distributed, train_translator

    if max_steps is None and max_minutes is None:
        raise BadInputError("give --max-steps or --max-minutes (or both)")
    if threads > 0:
        torch.set_num_threads(threads)
    dist, dev = init_distributed(device)
    cfg = _translator_config(ctx.params, dist.world)
    init_dir = _init(f"translator-{direction}", init)
    run = RunOptions(max_steps=max_steps, max_minutes=max_minutes, save_every=save_every, eval_every=eval_every,
                     eval_items=eval_items, device=str(dev), progress=not quiet and not as_json)
    try:
        result = train_translator(data, output, cfg, run, corpus_vocabulary(data), init=init_dir, codes_dir=codes,
                                  compile=compile_model, dist=dist, realscan_codes=realscan_codes,
                                  more_train=add_train)
    finally:
        finish_distributed(dist)
    if dist.main:
        ev = result.eval or {}
        keys = ("loss", "SER", "realscan/loss", "realscan/SER")
        score = "".join(f", val {k} {ev[k]:.4f}" for k in keys if k in ev)
        _report(result, output, as_json, score)


def _translator_config(params: dict, world: int):
    """The TrainConfig of `train translator`'s parsed options (``params``: the command's
    ``ctx.params``), for ``world`` processes; BadInputError for a bad preset or task list."""
    from umust_cli.model.translator import PRESETS
    from umust_cli.train.translator import config_from_options

    if params["preset"] not in PRESETS:
        raise BadInputError(f"unknown --preset {params['preset']!r} (choose from {', '.join(PRESETS)})")
    return config_from_options(params, world)


background_app = typer.Typer(help="Start a detached training run that resumes where the last one stopped.",
                             no_args_is_help=True)
app.add_typer(background_app, name="background")
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@background_app.command("translator", context_settings=EXTRA_ARGS)
@handle_errors
def background_translator(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder: resumed if it holds a run; else a new "
                                   "run from the direction's shipped weights, or a fresh one."),
    data: Optional[Path] = typer.Option(None, "--data", help="Tokenized corpus (default on resume: the last "
                                        "start's)."),
    codes: Optional[Path] = typer.Option(None, "--codes", help="Folder of the code files (default on resume: "
                                         "the last start's)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="i2a or a2i (default: the run's, else i2a)."),
    budget_minutes: float = typer.Option(170.0, "--budget-minutes", min=1.0, help="Train this long (the run "
                                         "saves before the budget ends); loading and the last validation come "
                                         "on top."),
    save_minutes: float = typer.Option(5.0, "--save-minutes", min=0.1, help="Save about this often (--save-every "
                                       "from the run's own pace; 50 steps until it is known)."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: every core this process may use)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and print the trainer's command; start nothing."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Start `umust train translator` in the background for a wall-clock budget.

    Trainer options go after `--` (e.g. `-- --tasks omr --eval-every 400`); a resumed run keeps
    the options it was saved with, and the last start's trainer options unless new ones are given.
    The log is RUN/background.log; stop the run with `kill $(cat RUN/background.pid)` (it saves first)."""
    from umust_cli.train import background

    req = background.BackgroundRequest(run_dir, data, codes, direction, budget_minutes, save_minutes, threads,
                                       tuple(ctx.args))
    plan = background.plan_translator(req)
    _check_trainer_options(plan)
    _start_background(plan, dry_run, as_json)


def _reader_background(kind: str):
    """`umust train background KIND`: the background command of one reader trainer."""

    @background_app.command(kind, context_settings=EXTRA_ARGS)
    @handle_errors
    def command(
        ctx: typer.Context,
        run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder: resumed if it holds a run; else a new "
                                       "run from the reader's shipped weights, or a fresh one."),
        data: Optional[Path] = typer.Option(None, "--data", help="Corpus (default on resume: the last start's)."),
        budget_minutes: float = typer.Option(170.0, "--budget-minutes", min=1.0, help="Train this long (the run "
                                             "saves before the budget ends); loading comes on top."),
        save_minutes: float = typer.Option(5.0, "--save-minutes", min=0.1, help="Save about this often."),
        threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0: every core this process may use)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check and print the trainer's command; start nothing."),
        as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    ) -> None:
        from umust_cli.train import background

        req = background.BackgroundRequest(run_dir, data, None, None, budget_minutes, save_minutes, threads,
                                           tuple(ctx.args))
        plan = background.plan_reader(kind, req, reader_flags)
        _parse_trainer_options(plan.argv[1], plan.argv[2:])
        _start_background(plan, dry_run, as_json)

    trainer, option, values = registry.TRAINED_AS.get(kind, (kind, "", ()))
    named = f" {option} {'|'.join(values)}" if option else ""
    command.__doc__ = (f"Start `umust train {trainer}{named}` in the background for a wall-clock budget.\n\n"
                       "Trainer options go after `--` (e.g. `-- --eval-every 1000 --decay-steps 15000`); a resumed "
                       "run keeps its saved options, and the last start's other trainer options unless new ones "
                       "are given. The log is RUN/background.log; stop the run with `kill $(cat "
                       "RUN/background.pid)` (it saves first).")
    return command


def reader_flags(kind: str, saved: dict) -> list[tuple[str, ...]]:
    """The options of `umust train KIND` that recreate a saved reader config (its "train" and
    "model" fields under the options' names; ``--no-X`` for a switched-off X): one tuple per
    option whose value is not the option's default."""
    fields = {**(saved.get("model") or {}), **(saved.get("train") or {})}
    out: list[tuple[str, ...]] = []
    for param in typer.main.get_command(app).commands[kind].params:
        flag = next((o for o in param.opts if o.startswith("--")), None)
        name = (flag or "")[2:].replace("-", "_")
        if flag and name.startswith("no_") and name[3:] in fields:
            if fields[name[3:]] is False:
                out.append((flag,))
        elif flag and name in fields and fields[name] != param.default:
            out.append((flag, repr(fields[name]) if isinstance(fields[name], float) else str(fields[name])))
    return out


def _parse_trainer_options(kind: str, args) -> dict:
    """The trainer command's options parsed as `umust train KIND` would (BadInputError if it
    would refuse them; InputNotFoundError for a --data that is not a folder)."""
    from typer._click.exceptions import ClickException

    try:
        params = typer.main.get_command(app).commands[kind].make_context(kind, list(args)).params
    except ClickException as e:
        raise BadInputError(f"trainer options: {e.format_message()}") from e
    if not params["data"].is_dir():
        raise InputNotFoundError(f"--data {params['data']} is not a folder")
    return params


def _start_background(plan, dry_run: bool, as_json: bool) -> None:
    """Print the plan's command (``dry_run``) or start it and say how to watch and stop it."""
    from umust_cli.train import background

    command = "umust " + " ".join(plan.argv)
    if dry_run:
        print_json({"action": plan.action, "command": list(plan.argv)}) if as_json else typer.echo(command)
        return
    pid = background.start(plan).pid
    info = {"action": plan.action, "pid": pid, "log": str(plan.run_dir / background.LOG),
            "command": list(plan.argv), "stop": f"kill {pid}"}
    if as_json:
        print_json(info)
        return
    typer.echo(f"{plan.action}: {command}\nprocess {pid}; log {info['log']}; status: umust train status "
               f"{plan.run_dir}; stop (saves first): kill {pid}")


for _kind in registry.READER_KINDS + tuple(registry.TRAINED_AS):
    _reader_background(_kind)


def _check_trainer_options(plan) -> None:
    """Parse the plan's trainer command as `train translator` would, before anything starts: bad
    options, a config a resumed run would refuse, an --init that does not resolve."""
    from umust_cli.train.engine import check_config

    params = _parse_trainer_options("translator", plan.argv[2:])
    cfg = _translator_config(params, 1)
    if plan.saved_train is not None:
        check_config(plan.run_dir, cfg, plan.saved_train)
    elif params["init"] is not None:
        _init(f"translator-{params['direction']}", params["init"])


@app.command("status")
@handle_errors
def status(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder of a `umust train` run."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Where a run stands: steps, wall and CPU hours, last loss, validations, best, running or not."""
    from umust_cli.train.background import run_status

    st = run_status(run_dir)
    if as_json:
        print_json(st)
        return
    state = f"running (process {st['running_pid']})" if st["running_pid"] else "not running"
    cpu = f"{st['cpu_hours']} CPU core-hours" if st["cpu_hours"] is not None else "CPU hours not recorded"
    typer.echo(f"{run_dir}: {state}; saved at step {st['saved_step']} (logged {st['logged_step']}); "
               f"{st['sessions']} background start(s), {st['wall_hours']} wall hours, {cpu}; last train loss "
               f"{st['last_loss']}")
    for row in st["evals"]:
        typer.echo("  valid " + ", ".join(f"{k} {v}" for k, v in row.items() if not isinstance(v, dict)))
    if st["best"]:
        b = st["best"]
        typer.echo(f"  best: step {b['step']}, valid {b['metric']} {b['value']} (RUN/best)")


@app.command("curves")
@handle_errors
def curves(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN...", help="Run folders of `umust train` runs."),
    output: Path = typer.Option(..., "-o", "--output", help="PNG to write (one panel per run)."),
    window: int = typer.Option(100, "--window", min=1, help="Steps in the running mean of the train loss."),
) -> None:
    """Learning curves of runs: train loss and its running mean, valid loss and the validation figures (SER,
    onset F1, staff error rates, key accuracies), one panel each."""
    from umust_cli.eval.plots import plot_training_curves
    from umust_cli.train.background import run_curve

    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise InputNotFoundError(f"no run folder {run_dir}")
    dest = plot_training_curves([run_curve(r) for r in run_dirs], output, window)
    typer.echo(f"wrote {dest} ({len(run_dirs)} run(s))")


@app.command("promote")
@handle_errors
def promote(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder (its best/ checkpoint, else its last save)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="translator-i2a, translator-a2i, note-reader, "
                                       "pitch-reader, rhythm-reader or key-reader (default: the run's; a pitch "
                                       "reader of rhythmic classes is a rhythm reader)."),
    name: str = typer.Option("small", "--name", help="Model name of the kind (its folder comes from "
                             "umust_cli/registry.py)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Weights folder to write (default: the package's folder "
                                      "of KIND NAME)."),
    scored: Optional[Path] = typer.Option(None, "--scored", help="The JSON of `umust eval omr PRED --data CORPUS "
                                          "--split valid [--limit N] --json` on this checkpoint's predictions (its "
                                          "validation SER), or of `umust eval amt PRED --data CORPUS --split valid "
                                          "--dtw --json` on its `translate --via midi` reading (onset F1, higher is "
                                          "better): saved with the weights, used instead of the run's score."),
    against: Optional[Path] = typer.Option(None, "--against", help="The same evaluation of the shipped model, "
                                           "when its weights record another metric than --scored's."),
    last: bool = typer.Option(False, "--last", help="Ship the run's last save, not RUN/best (the run's own "
                              "keep-best metric; e.g. when --scored scored the last save)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Ship a run's best checkpoint (fp16) only if it beats the shipped model's validation metric.

    Writes the weights folder and the model card's generated part; committing stays a human step."""
    from umust_cli.checkpoint import read_config
    from umust_cli.train.background import promote as promote_run

    kind = kind or run_kind(read_config(run_dir))
    dest = to if to is not None else registry.WEIGHTS_DIR / registry.folder_name(kind, name)
    out = promote_run(run_dir, dest, _json_object(scored) if scored is not None else None,
                      _json_object(against) if against is not None else None, last)
    if as_json:
        print_json(out)
        return
    before = f" (was {out['previous']})" if out["previous"] is not None else " (nothing there before)"
    typer.echo(f"promoted {out['from']} step {out['step']}: valid {out['metric']} {out['value']}{before} -> "
               f"{dest} ({out['bytes'] / 2**20:.1f} MiB). Review {dest}/MODEL_CARD.md, list it in "
               "umust_cli/registry.py if it is new, then commit.")


def run_kind(config: dict) -> str:
    """The registry kind a run's saved config trains: a reader's, a pitch reader of rhythmic
    classes as ``rhythm-reader``, else the translator of its direction."""
    reader = str(config.get("kind", "")).removeprefix("umust-")
    if reader == "pitch-reader" and (config.get("model") or {}).get("ctc_target") in registry.TRAINED_AS["rhythm-reader"][2]:
        return "rhythm-reader"
    return reader if reader in registry.READER_KINDS else f"translator-{config.get('direction', 'i2a')}"


def _json_object(path: Path) -> dict:
    """A JSON file holding an object; BadInputError (one line) otherwise."""
    import json

    try:
        obj = json.loads(require_file(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise BadInputError(f"{path} does not hold a JSON object")
    return obj

