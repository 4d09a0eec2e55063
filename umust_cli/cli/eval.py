"""`umust eval`: the metrics of the papers on given predictions (no model is run here
except the reference transcriber, the FAD embedding network and the retrieval model).

Two input modes for every per-example command: explicit files (PRED... with --ref or
--ref-dir), or a corpus split (--data CORPUS --split test): the one argument is then
a folder of predictions named ``<piece_id>/<NNN>.<ext>`` after the corpus systems.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli import registry
from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors
from umust_cli.errors import BadInputError
from umust_cli.eval.runner import RunLog, progress_default

app = typer.Typer(help="Score predictions with the papers' metrics (SER, note F1, EMD, retrieval, FAD).",
                  no_args_is_help=True)

REF_HELP = "A reference file (repeat the option, one per prediction)."
REF_DIR_HELP = "Folder of references with the predictions' file stems."
PAIR_HELP = "Pair predictions and references by 'stem', by 'order', or 'auto' (stem when they agree)."
CSV_HELP = "Print the per-example rows as CSV on stdout."
OUT_HELP = "Also write rows.csv, rows.json and summary.json into this folder."
TOL_HELP = "Onset tolerance in ms (repeat for several)."
DEFAULT_TOLS_MS = [50.0, 100.0, 200.0]
DATA_HELP = ("A built corpus: references come from its manifest; the argument is then one folder "
             "of predictions named <piece_id>/<NNN>.<ext> (NNN = system number, 3 digits).")
SPLIT_HELP = ("Corpus split with --data: train, valid or test; realscan_train, realscan_valid or "
              "realscan_test (real scans added by 'umust dataset scans': image and notation only).")
LIMIT_HELP = "With --data: only N systems, spread evenly over the split (the same N each run)."
PROGRESS_HELP = "Progress bar on stderr (default: when stderr is a terminal)."
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
LMX_SUFFIXES = (".lmx", ".txt")
MIDI_SUFFIXES = (".mid", ".midi")


def _inputs(preds: List[Path], refs: Optional[List[Path]], ref_dir: Optional[Path], by: str,
            data: Optional[Path], split: str, limit: Optional[int], ref_key: str,
            pred_suffixes: tuple[str, ...], ref_suffixes: tuple[str, ...], progress: Optional[bool]):
    """(PairSet, RunLog): corpus mode with ``data`` (keep going past bad files), else explicit files."""
    from umust_cli.eval import corpus
    from umust_cli.eval.report import PairSet

    show = progress_default() if progress is None else progress
    if data is None:
        if limit is not None:
            raise BadInputError("--limit needs --data")
        return PairSet.of(_pairs(preds, refs, ref_dir, ref_suffixes, by)), RunLog(progress=show)
    if refs or ref_dir is not None:
        raise BadInputError("--data takes the references from the corpus: drop --ref / --ref-dir")
    if len(preds) != 1:
        raise BadInputError(f"with --data give one folder of predictions, not {len(preds)} paths")
    rows = corpus.split_rows(data, split, limit)
    return corpus.pair_predictions(rows, preds[0], ref_key, pred_suffixes), RunLog(keep_going=True, progress=show)


def _pairs(preds: List[Path], refs: Optional[List[Path]], ref_dir: Optional[Path],
           suffixes: tuple[str, ...], by: str):
    from umust_cli.eval.report import pair_paths

    if by not in ("auto", "stem", "order"):
        raise BadInputError(f"--pair must be auto, stem or order, not {by!r}")
    return pair_paths(preds, refs, ref_dir, suffixes, by)


@app.command("omr")
@handle_errors
def omr(
    preds: List[Path] = typer.Argument(..., help="Predicted LMX files (with --data: their folder)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Symbol Error Rate of LMX predictions, with and without tuplet tokens.

    Predictions and references are bare LMX tokens or the .lmx layout (its version/flavor
    header is checked and is not counted as tokens). A prediction without tokens is bad input
    (exit 2); with --data it is a model's empty output and scores as all deletions (counted
    in empty_predictions), while a missing or unreadable file is listed among the failures.
    """
    from umust_cli.eval import report, tasks

    pairs, log = _inputs(preds, ref, ref_dir, pair, data, split, limit, "lmx", LMX_SUFFIXES, LMX_SUFFIXES,
                         progress)
    result = tasks.omr(pairs, log)
    if data is not None:   # what `umust train promote --scored` checks
        result.summary.update(split=split, limit=limit)
    report.emit(result, as_json, as_csv, out)


@app.command("amt")
@handle_errors
def amt(
    preds: List[Path] = typer.Argument(..., help="Transcribed MIDI files (with --data: their folder)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    onset_ms: float = typer.Option(50.0, "--onset-tolerance-ms", help="Onset tolerance in ms."),
    offset_ratio: float = typer.Option(0.2, "--offset-ratio", help="Offset tolerance, share of the duration."),
    offset_min_ms: float = typer.Option(50.0, "--offset-min-ms", help="Smallest offset tolerance in ms."),
    dtw: bool = typer.Option(False, "--dtw", help="Map each estimate to its reference's time axis through one "
                             "DTW path first (MIDI without the reference's timing, e.g. `translate --via midi`)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Note-onset and onset+offset precision, recall and F1 (mir_eval)."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.metrics import DtwConfig, MatchConfig

    cfg = MatchConfig(onset_tolerance=onset_ms / 1000, offset_ratio=offset_ratio,
                      offset_min_tolerance=offset_min_ms / 1000)
    pairs, log = _inputs(preds, ref, ref_dir, pair, data, split, limit, "mid", MIDI_SUFFIXES, MIDI_SUFFIXES,
                         progress)
    result = tasks.amt(pairs, cfg, log, DtwConfig() if dtw else None)
    if data is not None:   # what `umust train promote --scored` checks
        result.summary.update(split=split, limit=limit, dtw=dtw, onset_tolerance_ms=onset_ms)
    report.emit(result, as_json, as_csv, out)


@app.command("m2a")
@handle_errors
def m2a(
    audio: List[Path] = typer.Argument(..., help="Generated audio files (with --data: their folder)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="The conditioning MIDI file (repeatable)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP + " References: the system MIDI."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    tol_ms: List[float] = typer.Option(DEFAULT_TOLS_MS, "--tol-ms", help=TOL_HELP),
    device: str = typer.Option("cpu", "--device", help="Torch device of the transcriber."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """MIDI-to-audio: transcribe the audio (Transkun) and score it against the MIDI."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.transcribe import TranscriberConfig

    pairs, log = _inputs(audio, ref, ref_dir, pair, data, split, limit, "mid", AUDIO_SUFFIXES, MIDI_SUFFIXES,
                         progress)
    result = tasks.m2a(pairs, [t / 1000 for t in tol_ms], TranscriberConfig(device=device), log)
    report.emit(result, as_json, as_csv, out)


@app.command("i2a")
@handle_errors
def i2a(
    gen: List[Path] = typer.Argument(..., help="Generated audio files (with --data: their folder)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="Reference audio (repeatable)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP + " References: the system audio."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    dtw: bool = typer.Option(False, "--dtw", help="Also score after DTW alignment of the two transcriptions."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="With --dtw: write piano-roll PNGs here."),
    floor: bool = typer.Option(False, "--floor", help="Also the wrong-system floor, same judge: each reference "
                               "against the audio of the next system of its piece (with --data; else the "
                               "next reference of the set)."),
    frame_rate: float = typer.Option(50.0, "--frame-rate", help="DTW piano-roll frames per second."),
    tol_ms: List[float] = typer.Option(DEFAULT_TOLS_MS, "--tol-ms", help=TOL_HELP),
    device: str = typer.Option("cpu", "--device", help="Torch device of the transcriber."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Image/score-to-audio: onset F1 between transcriptions of generated and reference audio."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.metrics import DtwConfig
    from umust_cli.eval.transcribe import TranscriberConfig

    if plot is not None and not dtw:
        raise BadInputError("--plot needs --dtw")
    pairs, log = _inputs(gen, ref, ref_dir, pair, data, split, limit, "wav", AUDIO_SUFFIXES, AUDIO_SUFFIXES,
                         progress)
    dtw_cfg = DtwConfig(frame_rate=frame_rate) if dtw else None
    result = tasks.i2a(pairs, [t / 1000 for t in tol_ms], dtw_cfg, plot, TranscriberConfig(device=device), log,
                       floor=floor)
    report.emit(result, as_json, as_csv, out)


@app.command("emd")
@handle_errors
def emd(
    preds: List[Path] = typer.Argument(..., help="Predicted LMX files, e.g. from audio-to-image (with --data: "
                                                 "their folder)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Earth Mover's Distance of pitch and duration token histograms (LMX)."""
    from umust_cli.eval import report, tasks

    pairs, log = _inputs(preds, ref, ref_dir, pair, data, split, limit, "lmx", LMX_SUFFIXES, LMX_SUFFIXES,
                         progress)
    report.emit(tasks.emd(pairs, log=log), as_json, as_csv, out)


@app.command("retrieval")
@handle_errors
def retrieval(
    dist: Optional[Path] = typer.Argument(None, help="A saved (n, n) .npy distance matrix: audio rows x sheet "
                                                     "columns (or --data to embed a corpus split)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A built corpus: embed its split's systems with "
                                                             "--model and score every audio/sheet pair."),
    split: List[str] = typer.Option(["test"], "--split", help=SPLIT_HELP + " Repeat to pool several splits."),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME|PATH",
                                        help=f"A shipped retrieval model ({registry.describe('retrieval')}) "
                                             "or a checkpoint folder."),
    images: str = typer.Option("png", "--images", help="Sheet images: png, or scanK (K-th scanned-look copy)."),
    method: str = typer.Option("rnn", "--method", help="With --data: rnn (passage embeddings), or bl: the "
                               "snippet-voting baseline with the model's CNNs (a --stage snippet checkpoint)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Recall@1/10/25, MRR and median rank in both directions (query i matches candidate i)."""
    from umust_cli.eval import report, tasks

    if (dist is None) == (data is None):
        raise BadInputError("give either a distance matrix file or --data CORPUS (not both)")
    if data is None:
        if model is not None or limit is not None or method != "rnn":
            raise BadInputError("--model, --limit and --method need --data")
        result = tasks.retrieval(_load_matrix(dist))
    else:
        from umust_cli.eval.corpus import split_rows
        from umust_cli.retrieval.evaluate import evaluate_checkpoint

        for name in split:
            split_rows(data, name)  # each split exists and is not empty
        show = progress_default() if progress is None else progress
        result = evaluate_checkpoint(model, data, list(dict.fromkeys(split)), images, progress=show, limit=limit,
                                     method=method)
    report.emit(result, as_json, as_csv, out)


def _load_matrix(path: Path):
    from umust_cli.inputs import load_array

    return load_array(path, "distance matrix", "iuf", (2,))


@app.command("fad")
@handle_errors
def fad(
    gen_dir: Path = typer.Argument(..., help="Folder of generated clips (audio, or .npy embeddings)."),
    ref_dir: Optional[Path] = typer.Argument(None, help="Folder of reference clips (audio, or .npy "
                                                        "embeddings); with --data: the split's system audio."),
    data: Optional[Path] = typer.Option(None, "--data", help="A built corpus: the references are its split's "
                                                             "system audio; GEN_DIR holds <piece_id>/<NNN>.wav."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    backend: str = typer.Option("auto", "--model",
                                help="Embedding: auto, npy (precomputed), aisfx, clap (needs --checkpoint)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local LAION-CLAP checkpoint."),
    device: str = typer.Option("cpu", "--device", help="Torch device of the embedding network."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Fréchet Audio Distance between two folders of clips (or generated clips and a corpus split)."""
    from umust_cli.eval import corpus, report, tasks
    from umust_cli.eval.embeddings import EmbeddingConfig

    cfg = EmbeddingConfig(backend=backend, checkpoint=checkpoint, device=device)
    if (ref_dir is None) == (data is None):
        raise BadInputError("give either REF_DIR or --data CORPUS (not both)")
    if data is None:
        result = tasks.fad(gen_dir, ref_dir, cfg)
    else:
        rows = corpus.split_rows(data, split, limit)
        found = corpus.pair_predictions(rows, gen_dir, "wav", AUDIO_SUFFIXES)
        refs = [corpus.ref_path(r, "wav") for r in rows]
        result = tasks.fad_files([p for p, _ in found.pairs], refs, cfg, found.missing)
    report.emit(result, as_json, False, out)


@app.command("reference")
@handle_errors
def reference(
    data: Path = typer.Option(..., "--data", help="A built corpus."),
    split: str = typer.Option("test", "--split", help=SPLIT_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    audio_codec: Optional[str] = typer.Option(None, "--audio-codec", metavar="NAME|PATH",
                                              help="Audio codec of the DAC reconstruction rows: a shipped one "
                                                   f"({registry.describe('audio-codec')}) or a checkpoint folder."),
    with_dac: bool = typer.Option(True, "--dac/--no-dac", help="Compute the DAC reconstruction rows."),
    soundfont: Optional[str] = typer.Option(None, "--soundfont", help="Soundfont of the second rendering "
                                            "(fluidr3, timgm6mb, musescore; default: the next after the system's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random pairing of the EMD row."),
    with_fad: bool = typer.Option(True, "--fad/--no-fad", help="Compute the FAD row (aiSFX embedding)."),
    tol_ms: List[float] = typer.Option(DEFAULT_TOLS_MS, "--tol-ms", help=TOL_HELP),
    device: str = typer.Option("cpu", "--device", help="Torch device of the transcriber and codec."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP + " Also examples.csv (per system) and "
                                       "the other-soundfont renderings."),
) -> None:
    """Reference rows of the papers' tables on a corpus split (FluidSynth, other soundfont, DAC, EMD, FAD)."""
    from umust_cli.eval import report
    from umust_cli.eval.corpus import split_rows
    from umust_cli.eval.embeddings import EmbeddingConfig
    from umust_cli.eval.reference import ReferenceConfig
    from umust_cli.eval.reference import reference as run_reference
    from umust_cli.eval.transcribe import TranscriberConfig

    rows = split_rows(data, split, limit)
    codec = None
    if with_dac:
        from umust_cli.codecs.audio import AudioCodec

        codec = AudioCodec.load(registry.resolve("audio-codec", audio_codec), device=device)
    cfg = ReferenceConfig(tolerances=tuple(t / 1000 for t in tol_ms), seed=seed, alt_soundfont=soundfont,
                          fad=with_fad, transcriber=TranscriberConfig(device=device),
                          embedding=EmbeddingConfig(device=device))
    log = RunLog(keep_going=True, progress=progress_default() if progress is None else progress)
    result = run_reference(rows, cfg, codec, log, out)
    report.emit(result, as_json, as_csv, out)
