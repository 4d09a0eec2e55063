"""`umust dataset`: build and inspect the aligned four-modality corpus."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from umust_cli import registry
from umust_cli.cli._common import (PARTIAL_FAILURE_EXIT, JSON_OPTION_HELP, check_distinct_outputs, fail,
                                   finish_batch, handle_errors, print_json)
from umust_cli.errors import BadInputError

app = typer.Typer(help="Build and inspect the aligned image/notation/MIDI/audio corpus.", no_args_is_help=True)


@app.command("build")
@handle_errors
def build(
    src: List[str] = typer.Argument(..., help="Folders or files of kern/MusicXML/MEI scores, or the word "
                                              "'music21' (its Bach chorales and keyboard pieces)."),
    output: Path = typer.Option(..., "-o", "--output", help="Corpus folder (created; re-run to resume)."),
    seed: int = typer.Option(0, "--seed", help="Seed of splits, performances, soundfonts and scan looks."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Pieces built in parallel (processes)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Build only the first N pieces."),
    scan_copies: int = typer.Option(0, "--scan-copies", min=0, help="Scanned-look copies of every system image."),
    scan_look: str = typer.Option("classic", "--scan-look", help="Look of the scanned copies: classic (rotation, "
                                  "warp, tones, blur, noise, JPEG) or print (also ink spread, bleed-through, "
                                  "page curl, paper texture, uneven ink, low-resolution re-sampling; "
                                  "mostly black-and-white, like the reference editions' scans)."),
    engravings: int = typer.Option(1, "--engravings", min=1, help="Engravings of every piece: the first as "
                                   "before, each other with a seeded font, scale, spacing and page width "
                                   "(its own system breaks and rows)."),
    engraver: List[str] = typer.Option(["verovio"], "--engraver", help="Engraver of the extra engravings, "
                                       "drawn per engraving (repeatable): verovio, lilypond."),
    soundfont: List[str] = typer.Option([], "--soundfont", help="Soundfont name to draw from (repeatable); "
                                                                "default: every installed one."),
    tempo_range: Tuple[float, float] = typer.Option((0.9, 1.1), "--tempo-range", help="Global tempo factor range."),
    velocity_range: Tuple[int, int] = typer.Option((40, 100), "--velocity-range", help="MIDI velocity range."),
    velocity_curve: str = typer.Option("smooth", "--velocity-curve", help="flat, ramp or smooth."),
    jitter_ms: float = typer.Option(10.0, "--jitter-ms", min=0.0, help="Std of onset jitter in ms."),
    allow_held_out: bool = typer.Option(False, "--allow-held-out",
                                        help="Build Beethoven (held out) into a test-only split."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Rebuild pieces that failed before."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Engrave, perform and synthesize scores into per-system PNG/MusicXML/LMX/MIDI/WAV files.

    A piece that fails does not stop the build: it is recorded in errors.jsonl and listed at
    the end. Exit status: 0 when every piece is built, 3 when some failed (the others are
    built; like rsync's partial transfer), 2 when none could be built.
    """
    from umust_cli.data.build import BuildConfig
    from umust_cli.data.perform import PerformanceConfig
    from umust_cli.data.render import EngravingVariety
    from umust_cli.data.sources import find_sources

    pieces = find_sources(src)[:limit]
    if not pieces:
        raise BadInputError(f"no score files (.krn .musicxml .xml .mxl .mei) in {', '.join(src)}")
    config = BuildConfig(
        seed=seed, scan_copies=scan_copies, soundfonts=tuple(soundfont), allow_held_out=allow_held_out,
        engravings=engravings, variety=EngravingVariety(engravers=tuple(engraver)), scan=_scan_look(scan_look),
        performance=PerformanceConfig(tempo_range=tempo_range, velocity_range=velocity_range,
                                      velocity_curve=velocity_curve, jitter_ms=jitter_ms),
    )
    summary, failures = _run_with_progress(pieces, output, config, workers, retry_failed, quiet=as_json)
    _report(summary, failures, output, as_json)
    _finish_build(summary, failures, output)


def _scan_look(name: str):
    from umust_cli.data.augment import SCAN_LOOKS

    if name not in SCAN_LOOKS:
        raise BadInputError(f"unknown scan look '{name}'; choose one of: {', '.join(SCAN_LOOKS)}")
    return SCAN_LOOKS[name]


def _finish_build(summary, failures, output: Path) -> None:
    """One error line when pieces failed: exit 2 when none is built (now or earlier), else
    PARTIAL_FAILURE_EXIT (3): the corpus holds the others, errors.jsonl says why."""
    done = summary.built + summary.skipped
    if done == 0 and not failures:
        fail(f"nothing built: all {summary.failed} piece(s) failed in an earlier run (see "
             f"{output / 'errors.jsonl'}; --retry-failed tries them again)", 2)
    rows = [{"input": f.piece_id, "error": f.error} for f in failures]
    finish_batch(rows, done + summary.failed, done, "pieces")


def _run_with_progress(pieces, output: Path, config, workers: int, retry_failed: bool, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from umust_cli.data.build import build_corpus

    failures = []
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    shown = not quiet and console.is_terminal  # a log or a script gets the list at the end only
    with Progress(*columns, console=console, disable=not shown, transient=False) as progress:
        task = progress.add_task("building", total=len(pieces))

        def on_result(result) -> None:
            if result.status == "failed" and result.error:
                failures.append(result)
                if shown:
                    progress.console.print(f"[red]failed[/red] {result.piece_id}: {result.error}", highlight=False)
            progress.update(task, advance=1, description=result.piece_id[:32])

        summary = build_corpus(pieces, output, config, workers=workers, on_result=on_result,
                               retry_failed=retry_failed)
    return summary, failures


def _report(summary, failures, output: Path, as_json: bool) -> None:
    import dataclasses

    if as_json:
        print_json({**dataclasses.asdict(summary), "output": str(output),
                    "new_failures": [{"piece_id": f.piece_id, "error": f.error} for f in failures]})
        return
    typer.echo(f"{summary.built} built, {summary.skipped} already done, {summary.failed} failed "
               f"(see {output / 'errors.jsonl'}); corpus: {summary.pieces} pieces, {summary.systems} systems, "
               f"{summary.hours:.3f} h of audio; {summary.elapsed_s:.1f} s")
    for f in failures:
        typer.echo(f"failed {f.piece_id}: {f.error}")


@app.command("import")
@handle_errors
def import_dataset(
    name: str = typer.Argument(..., help="maestro, grandstaff, olimpic, musicnet, musicnet_em or bpsd."),
    path: Path = typer.Argument(..., help="The local, unpacked copy of the dataset (nothing is downloaded)."),
    output: Path = typer.Option(..., "-o", "--output", help="Corpus folder: manifest.jsonl, errors.jsonl, "
                                                            "files/ (re-run to update)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the dataset's files instead of hard-linking them."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N samples (a trial run)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Import a public dataset into a corpus manifest, keeping its own splits (Beethoven: test only).

    Missing or unreadable files are listed in errors.jsonl and the import goes on;
    the exit status is 2 when any was listed. The layout each dataset must have is
    described in the docstrings of umust_cli/data/importers/.
    """
    from tqdm import tqdm

    from umust_cli.data.importers import ImportConfig, import_dataset as run_import

    with tqdm(desc=f"import {name}", unit="sample", disable=as_json) as bar:
        def on_sample(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = run_import(name, path, output, ImportConfig(copy=copy, limit=limit), on_sample)
    if as_json:
        print_json(summary)
    else:
        splits = ", ".join(f"{s} {n}" for s, n in summary["splits"].items())
        files = summary["files"]
        typer.echo(f"{summary['dataset']}: {summary['rows']} rows ({splits}; {summary['held_out_rows']} held out), "
                   f"{summary['pieces']} pieces, {summary['hours']:.3f} h of audio; files {files['linked']} "
                   f"linked, {files['copied']} copied, {files['kept']} kept, {files['derived']} derived; "
                   f"{output / 'manifest.jsonl'}")
    if summary["errors"]:  # exit 2 when no row was imported, 3 when some were (finish_batch's rule)
        fail(f"{summary['errors']} missing or unreadable file(s), {summary['dropped']} sample(s) dropped; "
             f"listed in {output / 'errors.jsonl'}", 2 if summary["rows"] == 0 else PARTIAL_FAILURE_EXIT)


@app.command("stats")
@handle_errors
def stats(
    corpus: Path = typer.Argument(..., help="A corpus folder made by 'umust dataset build'."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Systems, pieces and hours of audio per split."""
    from umust_cli.data.stats import corpus_stats

    table = corpus_stats(corpus)
    if as_json:
        print_json(table)
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"{corpus}")
    for column in ("split", "pieces", "systems", "hours"):
        out.add_column(column, justify="left" if column == "split" else "right")
    for split, row in table["splits"].items():
        out.add_row(split, str(row["pieces"]), str(row["systems"]), f"{row['hours']:.3f}")
    total = table["total"]
    out.add_row("total", str(total["pieces"]), str(total["systems"]), f"{total['hours']:.3f}", style="bold")
    Console().print(out)
    if table["errors"]:
        typer.echo(f"{table['errors']} error(s) in {corpus / 'errors.jsonl'}")


@app.command("scans")
@handle_errors
def scans(
    corpus: Path = typer.Argument(..., help="A corpus folder made by 'umust dataset build' from kern scores."),
    scores: List[Path] = typer.Option([], "--scores", help="A collection folder holding reference-edition/"
                                      "<stem>.pdf (repeatable); default: ../reference-edition/<stem>.pdf "
                                      "beside each piece's source kern file."),
    redo: bool = typer.Option(False, "--redo", help="Pair pieces again that were paired (or not) before."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Add the real-scan split: scanned systems of the printed editions paired with their bars' notation.

    For each piece with a scan of its printed edition, the PDF's piano systems and bar lines
    are found. A system is paired when its bar count equals that of the edition's line the kern
    records (!!LO:LB:g=original) or, without recorded lines and in a score that repeats no
    section, when the whole scan's bar count equals the piece's printed bars (repeats as
    printed). Each paired system gets
    pieces/<id>/realscans/NNN.{png,musicxml,lmx} and a row in realscans.jsonl with split
    realscan_train|realscan_valid|realscan_test (the piece's own split; held-out pieces:
    realscan_test). What is not paired is listed with the reason in realscans_errors.jsonl,
    never guessed. Re-running resumes.
    """
    from tqdm import tqdm

    from umust_cli.data.realscans import RealScanConfig, pair_corpus

    quiet = as_json or not sys.stderr.isatty()  # a log or a script gets the summary only
    with tqdm(desc="scans", unit="piece", disable=quiet) as bar:
        summary = pair_corpus(corpus, list(scores), RealScanConfig(redo=redo), on_piece=lambda _: bar.update(1))
    if as_json:
        print_json(summary)
        return
    for name, c in {**summary["collections"], "total": summary["total"]}.items():
        typer.echo(f"{name}: {c['paired_systems']} of {c['scan_systems']} scanned systems paired "
                   f"({c['paired_pieces']} of {c['scanned_pieces']} scanned pieces)")
    typer.echo(", ".join(f"{s} {n}" for s, n in summary["splits"].items()) + f"; rows in "
               f"{corpus / 'realscans.jsonl'}, unpaired pieces in {corpus / 'realscans_errors.jsonl'}")


@app.command("pages")
@handle_errors
def pages(
    inputs: List[Path] = typer.Argument(..., help="PDFs and page images (PNG, JPEG) of scores."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder of the systems and their manifest.jsonl."),
    staves: List[int] = typer.Option([], "--staves", min=1, help="Keep systems of this many staves "
                                     "(repeatable; 2: piano systems); default: every system."),
    split: str = typer.Option("test", "--split", help="Split of the rows (held-out repertoire: test)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Split score pages and PDFs into their systems: one PNG per system, in reading order.

    The page detector of 'umust translate' and 'umust retrieve index' finds every system
    (single staves, grand staves, larger systems) of every page; each is cropped to
    DIR/pieces/<id>/systems/NNN.png (<id>: the input's name) with an image-only row in
    DIR/manifest.jsonl (page, place on the page, staves, bar lines, crop box). Pages without
    a system (titles, text) are skipped. Exit status: 0 when every input gave systems, 3 when
    some did not (listed; the others are written), 2 when none did.
    """
    from umust_cli.data.pages import PagesConfig, piece_id, write_pages

    check_distinct_outputs([(str(p), [piece_id(p)]) for p in inputs])
    config = PagesConfig(staves=tuple(staves) or None, split=split)
    rows, failed = write_pages(list(inputs), output, config)
    if as_json:
        print_json({"systems": len(rows), "inputs": len(inputs), "failed": failed,
                    "manifest": str(output / "manifest.jsonl")})
    else:
        typer.echo(f"{len(rows)} systems from {len(inputs) - len(failed)} of {len(inputs)} inputs "
                   f"in {output / 'manifest.jsonl'}")
    finish_batch(failed, len(inputs), len(inputs) - len(failed), "inputs")


@app.command("resynth")
@handle_errors
def resynth(
    corpus: Path = typer.Argument(..., help="A corpus folder made by 'umust dataset build'."),
    output: Path = typer.Option(..., "-o", "--output", help="The variant corpus folder (created; re-run "
                                                            "to resume)."),
    soundfont: str = typer.Option(..., "--soundfont", help="fluidr3, timgm6mb, musescore, or the extra "
                                                           "csound / opl3 (Debian packages)."),
    program: Optional[int] = typer.Option(None, "--program", help="General MIDI program for every "
                                          "instrument (1 bright piano, 2 electric grand, 3 honky-tonk, "
                                          "...); default: the MIDI's own."),
    tempo: float = typer.Option(1.0, "--tempo", help="Play this many times faster (0.5 = half speed); the "
                                                     "system spans scale with it (the tempo-robustness rows)."),
    split: List[str] = typer.Option(["train"], "--split", help="Only this split (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Render a corpus's performances again with another soundfont or tempo: same systems, new sound.

    A piece that fails does not stop the others; the failures are listed at the end. Exit status:
    0 when every piece is rendered, 3 when some failed (the others are rendered), 2 when none could be.
    """
    from tqdm import tqdm

    from umust_cli.data.resynth import ResynthConfig, resynth_corpus

    config = ResynthConfig(soundfont=soundfont, program=program, splits=tuple(split), tempo=tempo)
    quiet = as_json or not sys.stderr.isatty()  # a log or a script gets the list at the end only
    with tqdm(desc=f"resynth {config.name}", unit="piece", disable=quiet) as bar:
        summary = resynth_corpus(corpus, output, config, on_piece=lambda _: bar.update(1))
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{summary['built']} built, {summary['skipped']} already done, {len(summary['failed'])} "
                   f"failed; {output}: {summary['systems']} systems, {summary['hours']:.3f} h ({config.name})")
    _finish_pieces(summary["failed"], summary["pieces"], listed=not as_json)


def _finish_pieces(failed: dict, total: int, listed: bool) -> None:
    """With ``listed``, print each failed piece on stdout (the --json output lists them itself); then,
    if any failed, one error line: exit 2 when all ``total`` pieces failed, PARTIAL_FAILURE_EXIT (3)
    when some did (as 'dataset build' and 'tokenize')."""
    if listed:
        for piece_id, error in failed.items():
            typer.echo(f"failed {piece_id}: {error}")
    rows = [{"input": piece_id, "error": error} for piece_id, error in failed.items()]
    finish_batch(rows, total, total - len(failed), "pieces")


@app.command("align")
@handle_errors
def align(
    corpus: Path = typer.Argument(..., help="A corpus folder made by 'umust dataset build' (or resynth)."),
    redo: bool = typer.Option(False, "--redo", help="Align pieces again that already have alignments."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Add sub-system alignment (notehead x <-> onset time, systems/NNN.align.json) to an older corpus.

    A piece that fails does not stop the others; the failures are listed at the end. Exit status:
    0 when every piece is aligned, 3 when some failed (the others are aligned), 2 when none could be.
    """
    from tqdm import tqdm

    from umust_cli.data.align import align_corpus

    pieces: list[str] = []

    def on_piece(piece_id: str) -> None:
        pieces.append(piece_id)
        bar.update(1)

    quiet = as_json or not sys.stderr.isatty()  # a log or a script gets the list at the end only
    with tqdm(desc="align", unit="piece", disable=quiet) as bar:
        summary = align_corpus(corpus, redo, on_piece=on_piece)
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{summary['aligned']} systems aligned, {summary['skipped']} already done, "
                   f"{len(summary['failed'])} piece(s) failed")
    _finish_pieces(summary["failed"], len(pieces), listed=not as_json)


@app.command("tokenize")
@handle_errors
def tokenize(
    corpus: Path = typer.Argument(..., help="A corpus folder made by 'umust dataset build'."),
    image_codec: Optional[str] = typer.Option(None, "--image-codec", metavar="NAME|PATH",
                                              help=f"A shipped image codec ({registry.describe('image-codec')}) "
                                                   "or a checkpoint folder. With neither codec given, the "
                                                   "shipped default codecs are used."),
    audio_codec: Optional[str] = typer.Option(None, "--audio-codec", metavar="NAME|PATH",
                                              help=f"A shipped audio codec ({registry.describe('audio-codec')}) "
                                                   "or a checkpoint folder."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the code files, tokenize.json "
                                          "and tokenize_errors.jsonl here (same relative paths) instead of "
                                          "into the corpus."),
    split: List[str] = typer.Option([], "--split", help="Only this split (repeatable; default: all)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images or clips (shift variants "
                                   "included) per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when there is one), cpu or cuda."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N systems (manifest order)."),
    scans: bool = typer.Option(False, "--scans", help="Also the scanned-look copies (NNN.scanK.image.npy)."),
    no_shift_variants: bool = typer.Option(False, "--no-shift-variants", help="One variant (the file itself) on "
                                           "the train split too: 32x fewer image encodings, 9x fewer audio."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-encode files that already have codes "
                                   "(needed after changing a codec)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Add image and audio codec codes to every system of a corpus (resumable, batched).

    Writes pieces/<id>/systems/NNN.image.npy, an int16 array (V, 4, H/16, W/16),
    and NNN.audio.npy, int16 (V, 4, frames); V is the number of shift variants:
    32 images (variant iy*8+ix shifted by 2ix px right and 4iy px down; 0 =
    unshifted) and 9 clips (variant i shifted by -20+5i samples; 4 = unshifted)
    on the train split, 1 elsewhere. Smaller variants are padded with -1.
    The real scans (--split realscan_train etc., 'umust dataset scans') are
    first resized to the codec's staff spacing; a scan without a measurable
    staff fails and is listed.
    A rerun skips files already done; failures are listed at the end and in
    tokenize_errors.jsonl; tokenize.json records codecs, counts and times.
    """
    from umust_cli.data.tokenize import TokenizeConfig, prepare, resolve_codec_paths

    image_codec, audio_codec = resolve_codec_paths(image_codec, audio_codec)
    config = TokenizeConfig(image_codec=image_codec, audio_codec=audio_codec, splits=tuple(split),
                            batch_size=batch_size, device=device, limit=limit, scans=scans,
                            shift_variants=not no_shift_variants,
                            overwrite=overwrite)
    plan = prepare(corpus, config, output)
    summary = _tokenize_with_progress(plan, quiet=as_json)
    _tokenize_report(summary, as_json)


def _tokenize_with_progress(plan, quiet: bool) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from umust_cli.data.tokenize import run

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as progress:
        task = progress.add_task("tokenizing", total=len(plan.pending))

        def on_result(result) -> None:
            if result.status == "failed":
                progress.console.print(f"[red]failed[/red] {result.job.source}: {result.error}", highlight=False)
            progress.update(task, advance=1, description=f"{result.job.modality} {result.job.piece_id[:28]}")

        return run(plan, on_result)


def _tokenize_report(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
    else:
        for modality, splits in summary["counts"].items():
            for split, c in splits.items():
                typer.echo(f"{modality} {split}: {c['encoded']} encoded, {c['skipped']} already done, "
                           f"{c['failed']} failed")
        typer.echo(f"{summary['elapsed_s']:.1f} s on {summary['device']}; summary: "
                   f"{Path(summary['output']) / 'tokenize.json'}")
    if summary["failed"]:  # exit 2 when nothing was encoded, 3 when some files were (finish_batch's rule)
        encoded = sum(c["encoded"] for splits in summary["counts"].values() for c in splits.values())
        code = 2 if encoded == 0 else PARTIAL_FAILURE_EXIT
        fail(f"{summary['failed']} file(s) failed; see {summary['errors_file']}", code)


@app.command("ytsv")
@handle_errors
def ytsv(
    videos: List[Path] = typer.Argument(..., help="Score-following video files (any container ffmpeg reads)."),
    output: Path = typer.Option(..., "-o", "--output", help="Corpus folder (created; re-run to resume)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits (by video)."),
    change_threshold: float = typer.Option(0.7, "--change-threshold", min=0.0,
                                           help="Mean gray difference (0-255) of a small frame to the one "
                                                "before (or 0.25 s before) above which it is changing."),
    min_audio_s: float = typer.Option(1.0, "--min-audio-s", min=0.0, help="Drop slides with less audio."),
    max_audio_s: float = typer.Option(120.0, "--max-audio-s", min=0.0, help="Drop slides with more audio."),
    staves: List[int] = typer.Option([2], "--staves", min=1, help="Staff count of the systems kept "
                                     "(repeatable; default 2: piano systems)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Cut score-following videos into system images paired with their slide's audio.

    Each slide change (hard cut, cross-fade, wipe) is found from frame differences; each
    slide's stable frame loses its letterbox, its systems are cropped by the scanned-score
    detector at one staff spacing, and every crop gets the slide's audio span. The manifest
    has the rows of 'dataset build' (png, wav, start, end; no notation or MIDI);
    rejections.jsonl lists every dropped slide or crop with its reason. Exit status: 0 when
    every video is done, 3 when some failed (errors.jsonl), 2 when none could be read.
    """
    import dataclasses

    from umust_cli.data.ytsv import YtsvConfig, build_ytsv

    config = YtsvConfig(seed=seed, change_threshold=change_threshold, min_audio_s=min_audio_s,
                        max_audio_s=max_audio_s, staves=tuple(staves))
    summary, failures = build_ytsv(list(videos), output, config)
    if as_json:
        print_json({**dataclasses.asdict(summary), "output": str(output), "failures": failures})
    else:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(summary.rejections.items())) or "none"
        typer.echo(f"{summary.videos - summary.failed} of {summary.videos} videos: {summary.slides} slides, "
                   f"{summary.systems} systems, {summary.hours:.3f} h of slide audio; rejected: {reasons}; "
                   f"{output / 'manifest.jsonl'}")
    finish_batch(failures, len(videos), len(videos) - len(failures), "videos")
