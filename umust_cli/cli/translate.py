"""`umust translate`: file -> tokens -> model -> tokens -> file, along a named route."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli.cli._common import JSON_OPTION_HELP, check_distinct_outputs, finish_batch, handle_errors, print_json
from umust_cli.errors import BadInputError, UmustError
from umust_cli.translate.routes import (SYNTHS, TASKS, TRANSCRIBERS, VIAS, Options, Route, choose_route,
                                       plan_jobs, task_name)

@handle_errors
def translate(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Score images (PNG/JPG, a page or a PDF), audio "
                                                  "(WAV/FLAC/MP3/OGG), MIDI (.mid) or notation "
                                                  "(.musicxml/.krn/.mei/.lmx)."),
    output: Path = typer.Option(..., "-o", "--output", help="The output file (its suffix names the task: "
                                ".wav .png .musicxml .lmx .mid), or a folder for several inputs (with --task)."),
    task: Optional[str] = typer.Option(None, "--task", help=f"The task, explicitly: {', '.join(TASKS)} "
                                       "(i image, a audio, n notation, m MIDI; omr = i2n, amt = a2m)."),
    via: str = typer.Option("auto", "--via", help=f"Route: {', '.join(VIAS)}. auto: direct when a translator "
                            "model is installed for the task, else the cascade or render route that exists (score "
                            "images to audio: through MIDI, the OMR model's CTC reading, before notation)."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME|PATH",
                                        help="The direction model (translator-i2a / translator-a2i): a "
                                        "registered name or a checkpoint folder."),
    transcriber: str = typer.Option("auto", "--transcriber", help=f"Transcription engine of audio -> MIDI and of "
                                    f"cascades from audio: {', '.join(TRANSCRIBERS)} (auto: transkun, with --data "
                                    "the a2i model; umust: the a2i model's audio->MIDI task; note-reader: umust's "
                                    "piano transcriber on the spectrogram)."),
    synth: str = typer.Option("fluidsynth", "--synth", help=f"MIDI -> audio in cascades: {', '.join(SYNTHS)} "
                              "(neural: the i2a model's MIDI->audio task)."),
    soundfont: Optional[str] = typer.Option(None, "--soundfont", help="FluidSynth soundfont name "
                                            "(fluidr3, timgm6mb, musescore, ...; default fluidr3)."),
    tempo: Optional[float] = typer.Option(None, "--tempo", min=20.0, max=400.0,
                                          help="Quantizing MIDI into notation: the tempo in BPM (default: estimated)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="Sampling temperature; 0 = "
                                                "greedy (default: image and audio outputs of a model sampled at "
                                                "1.0, notation and MIDI greedy)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling probability."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and of performance MIDI."),
    grammar: bool = typer.Option(True, "--grammar/--no-grammar", help="Notation outputs: decode under the LMX "
                                 "chord rule (no pitch twice in a chord, at most 6 notes)."),
    ctc_pitches: bool = typer.Option(True, "--ctc-pitches/--no-ctc-pitches", help="OMR with a model that has "
                                     "a CTC head: each staff's pitches from the CTC reading where it aligns with "
                                     "the decoded notes, and with a key head its key signature (measured "
                                     "better: docs/results.md)."),
    key_reader: str = typer.Option("auto", "--key-reader", metavar="auto|none|NAME|PATH", help="OMR and image -> "
                                   "MIDI: the key signature from this key-signature reader (a CNN on the "
                                   "system's first columns; auto: the shipped one where installed), none: from "
                                   "the translator's key head."),
    pitch_reader: str = typer.Option("auto", "--pitch-reader", metavar="auto|none|NAME|PATH", help="Image -> "
                                     "MIDI and audio: each staff's pitches from this pitch reader (a CNN + GRU on "
                                     "the system's pixels; auto: the shipped one where installed), none: from "
                                     "the translator's CTC head."),
    rhythm_reader: str = typer.Option("auto", "--rhythm-reader", metavar="auto|none|NAME|PATH", help="OMR: write "
                                      "each system's LMX from this rhythm reader's notes, rests and note values "
                                      "(a pitch reader of rhythmic classes; auto: the shipped one where installed), "
                                      "the decoded clefs and time signature and the key reader's key; none: the "
                                      "decoded notes with the pitch reader's pitches."),
    fit_measures: bool = typer.Option(True, "--fit-measures/--no-fit-measures", help="OMR with a rhythm reader: "
                                      "where a staff's measure does not add up to the time signature, the "
                                      "likeliest change of at most two note values or same-onset marks that "
                                      "makes it (measured better: docs/results.md)."),
    note_reader: str = typer.Option("auto", "--note-reader", metavar="auto|NAME|PATH", help="The note reader of "
                                    "--transcriber note-reader (auto: the shipped one where installed)."),
    roll_reading: bool = typer.Option(True, "--roll-reading/--no-roll-reading", help="Audio -> MIDI with a "
                                      "model that has a piano-roll head: the notes it reads per audio frame, "
                                      "without decoding MIDI tokens."),
    beam_size: int = typer.Option(1, "--beam-size", min=1, max=32, help="Notation and MIDI outputs of a "
                                  "model (OMR, transcription): beam search with this many hypotheses (1: greedy; "
                                  "not with --temperature)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when there is one), cpu, cuda or cuda:N."),
    data: Optional[Path] = typer.Option(None, "--data", help="Instead of INPUTS: OMR of a tokenized corpus "
                                        "split into -o FOLDER/<piece_id>/<NNN>.lmx, for `umust eval omr FOLDER "
                                        "--data CORPUS` (batched, from the codes of `umust dataset tokenize`); with --task i2a "
                                        "NNN.wav for `umust eval i2a FOLDER --data CORPUS`, through MIDI (NNN.mid, "
                                        "no .lmx) or, --via notation, through the .lmx; with --task a2m NNN.mid "
                                        "of each system's audio codes, for `umust eval amt FOLDER --data CORPUS` "
                                        "(--transcriber transkun|note-reader: of each system's WAV), with --task "
                                        "a2n NNN.lmx of the transcription, quantized (`umust eval emd`)."),
    split: str = typer.Option("test", "--split", help="With --data: train, valid or test; or realscan_train, "
                              "realscan_valid or realscan_test (real scans, 'umust dataset scans', tokenized)."),
    copy: str = typer.Option("engraved", "--copy", help="With --data: engraved, or scanK (the K-th "
                             "scanned-look copy, tokenized with --scans)."),
    codes: Optional[Path] = typer.Option(None, "--codes", help="With --data: where `dataset tokenize` wrote "
                                         "the codes (default: the corpus)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="With --data: systems decoded together."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="With --data: N systems spread evenly over the split "
                                        "(the ones `umust eval omr --limit N` scores)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Translate each input into the output's type along a route that is always named:
    direct (a translator model end to end), cascade (through notation / MIDI), render
    (symbolic sources: verovio, performance MIDI, FluidSynth) or reference (transkun).

    Pages and PDFs are split into piano systems; the systems' outputs are joined in reading
    order. Several inputs go to -o FOLDER with --task; two inputs that would write the same
    output are refused before anything runs. A batch keeps going past bad inputs and lists
    them at the end (exit status 2 when all failed, 3 when some did).
    """
    from umust_cli.translate.engines import Engines, RunConfig, auto_direct, has_model

    config = RunConfig(model=model, device=device, seed=seed, temperature=temperature, top_k=top_k,
                       top_p=top_p, soundfont=soundfont, tempo=tempo, grammar=grammar,
                       beam_size=beam_size, ctc_pitches=ctc_pitches,
                       roll_reading=roll_reading, key_reader=key_reader,
                       pitch_reader=pitch_reader, note_reader=note_reader, rhythm_reader=rhythm_reader,
                       fit_measures=fit_measures)
    if data is not None:
        if inputs or task not in (None, "omr", "i2n", "i2a", "a2m", "amt", "transcription", "a2n"):
            raise BadInputError("--data translates a corpus split (OMR, --task i2a: OMR then the cascade "
                                "to audio, --task a2m: transcription, or --task a2n: transcription then "
                                "quantization); give no INPUTS and no other --task")
        if task in ("a2m", "amt", "transcription", "a2n"):
            options = Options(transcriber=transcriber)
            if task != "a2n" and transcriber in ("auto", "umust"):
                _corpus_amt(data, split, codes, batch_size, limit, output, Engines(config), as_json)
                return
            route = choose_route("audio", "notation" if task == "a2n" else "midi", options, has_model(model),
                                 auto_direct(model))
            _corpus_from_audio(data, split, limit, output, Engines(config), route, as_json)
            return
        route = _corpus_audio_route(via, has_model(model)) if task == "i2a" else None
        _corpus_omr(data, split, copy, codes, batch_size, limit, output, Engines(config), as_json, route)
        return
    if not inputs:
        raise BadInputError("give INPUTS to translate (or --data CORPUS for a corpus split)")
    options = Options(via=via, transcriber=transcriber, synth=synth)
    jobs = plan_jobs(list(inputs), output, task)
    check_distinct_outputs([(str(j.source), [str(j.dest)]) for j in jobs])
    available = has_model(model)
    routes = {j.task: choose_route(*j.task, options, available, auto_direct(model)) for j in jobs}
    engines = Engines(config)
    if not as_json:
        for route in dict.fromkeys(routes.values()):
            typer.secho(f"route: {route.describe()}", err=True, fg=typer.colors.CYAN)
    done, failed = _run(jobs, routes, engines, quiet=as_json)
    if as_json:
        print_json({"done": done, "failed": [{k: v for k, v in f.items() if k != "exception"} for f in failed]})
    else:
        for row in done:
            typer.echo(f"{row['input']} -> {row['output']} ({row['route']}; {row['summary']})")
    if len(jobs) == 1 and failed:
        raise failed[0]["exception"]
    finish_batch(failed=failed, total=len(jobs), done=len(done))


def _run(jobs, routes, engines, quiet: bool) -> tuple[list[dict], list[dict]]:
    """Every job under a progress bar (stderr); failures are kept, not raised."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from umust_cli.translate.pipeline import run_route

    done, failed = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=quiet or len(jobs) < 2) as progress:
        bar = progress.add_task("translating", total=len(jobs))
        for job in jobs:
            route = routes[job.task]
            progress.update(bar, description=job.source.name[:32])
            row = {"input": str(job.source), "output": str(job.dest), "task": task_name(*job.task), **route.to_json()}
            try:
                done.append({**row, **run_route(route, job.source, job.dest, engines)})
            except UmustError as e:
                failed.append({"input": str(job.source), "error": str(e), "route": route.kind, "exception": e})
                if len(jobs) > 1 and not quiet:
                    progress.console.print(f"[red]failed[/red] {job.source}: {e}", highlight=False)
            progress.advance(bar)
    return done, failed


def _corpus_audio_route(via: str, available):
    """The route of `--data --task i2a`: through MIDI (the CTC reading) or through notation
    (``auto``: MIDI when the model has a CTC head, as for a single score image)."""
    if via == "auto":
        via = "midi" if available("image", "midi") else "notation"
    if via not in ("midi", "notation"):
        raise BadInputError(f"--data --task i2a goes through MIDI or notation: --via midi, notation or auto, not {via}")
    return choose_route("image", "audio", Options(via=via), available)


def _corpus_amt(data: Path, split: str, codes: Optional[Path], batch_size: int, limit: Optional[int],
                output: Path, engines, as_json: bool) -> None:
    """`--data --task a2m`: transcription of a corpus split's audio codes to NNN.mid under a
    progress bar; a summary line (or JSON)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from umust_cli.translate.corpus import SplitJob, predict_transcription, split_systems

    job = SplitJob(corpus=data, split=split, codes=codes, batch_size=batch_size, limit=limit)
    total = len(split_systems(job, "audio"))
    model = engines.translator("audio", "midi")
    how = "roll reading" if model.cfg.roll_head and engines.config.roll_reading else "decoded MIDI"
    route = f"direct (audio -umust-> midi, {how})"
    if not as_json:
        typer.secho(f"route: {route} over {total} {split} systems", err=True, fg=typer.colors.CYAN)
    with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                  disable=as_json) as progress:
        bar = progress.add_task("transcribe", total=total)
        summary = predict_transcription(job, engines, output, on_batch=lambda n: progress.advance(bar, n))
    if as_json:
        print_json({**summary, "route": route, "output": str(output)})
        return
    typer.echo(f"{summary['written']} systems transcribed ({summary['skipped']} already there, "
               f"{summary['empty']} without notes) -> {output}")


def _corpus_from_audio(data: Path, split: str, limit: Optional[int], output: Path, engines, route: Route,
                       as_json: bool) -> None:
    """`--data --task a2m|a2n` with a transcriber engine: each system's WAV along ``route`` to
    NNN.mid or NNN.lmx under a progress bar; a summary line (or JSON)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from umust_cli.translate.corpus import transcribe_split_audio

    if not as_json:
        typer.secho(f"route: {route.describe()} over the {split} systems", err=True, fg=typer.colors.CYAN)
    with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                  disable=as_json) as progress:
        bar = progress.add_task("transcribe", total=None)
        summary = transcribe_split_audio(data, split, limit, route, engines, output,
                                         on_system=lambda total: progress.update(bar, total=total, advance=1))
    if as_json:
        print_json({**summary, "route": route.describe(), "output": str(output)})
        return
    typer.echo(f"{summary['written']} systems transcribed ({summary['skipped']} already there, "
               f"{summary['empty']} without notes) -> {output}")


def _corpus_omr(data: Path, split: str, copy: str, codes: Optional[Path], batch_size: int, limit: Optional[int],
                output: Path, engines, as_json: bool, audio_route=None) -> None:
    """`--data`: OMR of a corpus split under a progress bar; with ``audio_route`` (--task i2a)
    audio too, NNN.wav: through notation (OMR, then perform + FluidSynth) or, for a route
    through MIDI only, the CTC reading to NNN.mid + NNN.wav. A summary line (or JSON)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from umust_cli.translate.corpus import SplitJob, predict_omr, predict_reading, render_audio, split_systems

    job = SplitJob(corpus=data, split=split, copy=copy, codes=codes, batch_size=batch_size, limit=limit)
    total = len(split_systems(job))
    reading = audio_route is not None and "notation" not in audio_route.stages
    route = audio_route.describe() if audio_route is not None else "direct (image -umust-> notation)"
    if not as_json:
        cfg = engines.translator("image", "notation").cfg
        typer.secho(f"route: {route} (d{cfg.d_model} {cfg.image_layout} model) over {total} {copy} {split} "
                    "systems", err=True, fg=typer.colors.CYAN)
    with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                  disable=as_json) as progress:
        bar = progress.add_task("read", total=total)
        step = predict_reading if reading else predict_omr
        summary = step(job, engines, output, on_batch=lambda n: progress.advance(bar, n))
        if audio_route is not None and not reading:
            wav = progress.add_task("audio", total=total)
            summary["audio"] = render_audio(job, engines, output, on_item=lambda n: progress.advance(wav, n))
    if as_json:
        print_json({**summary, "route": route if audio_route is not None else "direct", "output": str(output)})
        return
    if reading:
        typer.echo(f"{summary['written']} systems read into MIDI and WAV ({summary['skipped']} already there, "
                   f"{summary['silent']} without notes: 1 s of silence) -> {output}")
        return
    typer.echo(f"{summary['written']} systems predicted ({summary['skipped']} already there, "
               f"{summary['empty']} empty) -> {output}")
    if audio_route is not None:
        a = summary["audio"]
        typer.echo(f"{a['written']} WAVs rendered ({a['skipped']} already there, {a['silent']} without notes: "
                   f"1 s of silence) -> {output}")
