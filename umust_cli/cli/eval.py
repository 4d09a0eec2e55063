"""`umust eval`: the metrics of the papers on given predictions (no model is run here
except the reference transcriber and the FAD embedding network)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors

app = typer.Typer(help="Score predictions with the papers' metrics (SER, note F1, EMD, retrieval, FAD).",
                  no_args_is_help=True)

REF_HELP = "A reference file (repeat the option, one per prediction)."
REF_DIR_HELP = "Folder of references with the predictions' file stems."
PAIR_HELP = "Pair predictions and references by 'stem', by 'order', or 'auto' (stem when they agree)."
CSV_HELP = "Print the per-example rows as CSV on stdout."
OUT_HELP = "Also write rows.csv, rows.json and summary.json into this folder."
TOL_HELP = "Onset tolerance in ms (repeat for several)."
DEFAULT_TOLS_MS = [50.0, 100.0, 200.0]


def _pairs(preds: List[Path], refs: Optional[List[Path]], ref_dir: Optional[Path],
           suffixes: tuple[str, ...], by: str):
    from umust_cli.errors import BadInputError
    from umust_cli.eval.report import pair_paths

    if by not in ("auto", "stem", "order"):
        raise BadInputError(f"--pair must be auto, stem or order, not {by!r}")
    return pair_paths(preds, refs, ref_dir, suffixes, by)


@app.command("omr")
@handle_errors
def omr(
    preds: List[Path] = typer.Argument(..., help="Predicted LMX files (from an OMR model)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Symbol Error Rate of LMX predictions, with and without tuplet tokens."""
    from umust_cli.eval import report, tasks

    result = tasks.omr(_pairs(preds, ref, ref_dir, (".lmx", ".txt"), pair))
    report.emit(result, as_json, as_csv, out)


@app.command("amt")
@handle_errors
def amt(
    preds: List[Path] = typer.Argument(..., help="Transcribed MIDI files."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    onset_ms: float = typer.Option(50.0, "--onset-tolerance-ms", help="Onset tolerance in ms."),
    offset_ratio: float = typer.Option(0.2, "--offset-ratio", help="Offset tolerance, share of the duration."),
    offset_min_ms: float = typer.Option(50.0, "--offset-min-ms", help="Smallest offset tolerance in ms."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Note-onset and onset+offset precision, recall and F1 (mir_eval)."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.metrics import MatchConfig

    cfg = MatchConfig(onset_tolerance=onset_ms / 1000, offset_ratio=offset_ratio,
                      offset_min_tolerance=offset_min_ms / 1000)
    result = tasks.amt(_pairs(preds, ref, ref_dir, (".mid", ".midi"), pair), cfg)
    report.emit(result, as_json, as_csv, out)


@app.command("m2a")
@handle_errors
def m2a(
    audio: List[Path] = typer.Argument(..., help="Generated audio files."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="The conditioning MIDI file (repeatable)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    tol_ms: List[float] = typer.Option(DEFAULT_TOLS_MS, "--tol-ms", help=TOL_HELP),
    device: str = typer.Option("cpu", "--device", help="Torch device of the transcriber."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """MIDI-to-audio: transcribe the audio (Transkun) and score it against the MIDI."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.transcribe import TranscriberConfig

    pairs = _pairs(audio, ref, ref_dir, (".mid", ".midi"), pair)
    result = tasks.m2a(pairs, [t / 1000 for t in tol_ms], TranscriberConfig(device=device))
    report.emit(result, as_json, as_csv, out)


@app.command("i2a")
@handle_errors
def i2a(
    gen: List[Path] = typer.Argument(..., help="Generated audio files."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help="Reference audio (repeatable)."),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    dtw: bool = typer.Option(False, "--dtw", help="Also score after DTW alignment of the two transcriptions."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="With --dtw: write piano-roll PNGs here."),
    frame_rate: float = typer.Option(50.0, "--frame-rate", help="DTW piano-roll frames per second."),
    tol_ms: List[float] = typer.Option(DEFAULT_TOLS_MS, "--tol-ms", help=TOL_HELP),
    device: str = typer.Option("cpu", "--device", help="Torch device of the transcriber."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Image/score-to-audio: onset F1 between transcriptions of generated and reference audio."""
    from umust_cli.errors import BadInputError
    from umust_cli.eval import report, tasks
    from umust_cli.eval.metrics import DtwConfig
    from umust_cli.eval.transcribe import TranscriberConfig

    if plot is not None and not dtw:
        raise BadInputError("--plot needs --dtw")
    pairs = _pairs(gen, ref, ref_dir, (".wav", ".flac", ".ogg", ".mp3"), pair)
    dtw_cfg = DtwConfig(frame_rate=frame_rate) if dtw else None
    result = tasks.i2a(pairs, [t / 1000 for t in tol_ms], dtw_cfg, plot, TranscriberConfig(device=device))
    report.emit(result, as_json, as_csv, out)


@app.command("emd")
@handle_errors
def emd(
    preds: List[Path] = typer.Argument(..., help="Predicted LMX files (e.g. from audio-to-image)."),
    ref: Optional[List[Path]] = typer.Option(None, "--ref", help=REF_HELP),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help=REF_DIR_HELP),
    pair: str = typer.Option("auto", "--pair", help=PAIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Earth Mover's Distance of pitch and duration token histograms (LMX)."""
    from umust_cli.eval import report, tasks

    result = tasks.emd(_pairs(preds, ref, ref_dir, (".lmx", ".txt"), pair))
    report.emit(result, as_json, as_csv, out)


@app.command("retrieval")
@handle_errors
def retrieval(
    dist: Path = typer.Argument(..., help="A saved (n, n) .npy distance matrix: audio rows x sheet columns."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    as_csv: bool = typer.Option(False, "--csv", help=CSV_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Recall@1/10/25, MRR and median rank in both directions (query i matches candidate i)."""
    import numpy as np

    from umust_cli.errors import BadInputError
    from umust_cli.eval import report, tasks
    from umust_cli.io import require_file

    try:
        matrix = np.load(require_file(dist), allow_pickle=False)
    except (ValueError, OSError) as e:
        raise BadInputError(f"cannot read a .npy matrix from {dist}: {e}") from e
    report.emit(tasks.retrieval(matrix), as_json, as_csv, out)


@app.command("fad")
@handle_errors
def fad(
    gen_dir: Path = typer.Argument(..., help="Folder of generated clips (audio, or .npy embeddings)."),
    ref_dir: Path = typer.Argument(..., help="Folder of reference clips (audio, or .npy embeddings)."),
    backend: str = typer.Option("auto", "--model",
                                help="Embedding: auto, npy (precomputed), aisfx, clap (needs --checkpoint)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local LAION-CLAP checkpoint."),
    device: str = typer.Option("cpu", "--device", help="Torch device of the embedding network."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP),
) -> None:
    """Fréchet Audio Distance between two folders of clips."""
    from umust_cli.eval import report, tasks
    from umust_cli.eval.embeddings import EmbeddingConfig

    cfg = EmbeddingConfig(backend=backend, checkpoint=checkpoint, device=device)
    report.emit(tasks.fad(gen_dir, ref_dir, cfg), as_json, False, out)
