"""Build the aligned four-modality corpus: per system an image, MusicXML+LMX, MIDI and audio.

Layout of a corpus folder::

    DIR/build.json                      options that decide the content (a re-run must match)
    DIR/manifest.jsonl                  one row per system (rebuilt from the pieces at the end)
    DIR/errors.jsonl                    one row per failed piece or system
    DIR/pieces/<id>/piece.json          whole-piece audio, system time spans, seeds
    DIR/pieces/<id>/audio.wav           the whole performance, 44.1 kHz mono
    DIR/pieces/<id>/performance.mid
    DIR/pieces/<id>/score.musicxml
    DIR/pieces/<id>/systems/000.{png,musicxml,lmx,mid,wav}, 000.scan0.png, ...
    DIR/pieces/<id>/rows.jsonl          the piece's manifest rows
    DIR/pieces/<id>/done                written last: the piece is finished
    DIR/pieces/<id>/error.json          instead of done: why the piece failed

Every file is written under a temporary name and renamed, so a killed build
leaves no partial file; re-running with the same arguments skips finished
pieces (``done`` or ``error.json``) and redoes the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pretty_midi

from umust_cli.codecs.notation import NotationCodec
from umust_cli.data import align, lilypond, render, sources
from umust_cli.data.augment import ScanLookConfig, scan_look
from umust_cli.data.corpus import DONE, MANIFEST, PIECE_ROWS, PIECES, read_jsonl
from umust_cli.data.perform import Performance, PerformanceConfig, perform, slice_midi
from umust_cli.data.synth import SAMPLE_RATE, available_soundfonts, cut, synthesize, write_wav
from umust_cli.errors import BadInputError, HeldOutRepertoireError, RenderError
from umust_cli.io import atomic_path, write_json_atomic, write_jsonl_atomic, write_text_atomic

ERROR = "error.json"
_MIDI_RESOLUTION = 960  # ticks per beat of the per-system MIDI files


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0  # decides splits, performances, soundfonts and scan looks
    scan_copies: int = 0  # scanned-look copies of each system image
    soundfonts: tuple[str, ...] = ()  # names from synth.available_soundfonts(); () = all installed
    allow_held_out: bool = False  # build Beethoven into split "test" instead of refusing it
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / valid / test, by piece
    flavor: str = "core"  # LMX flavor of the .lmx files
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    engrave: render.EngraveConfig = field(default_factory=render.EngraveConfig)  # engraving 0 of every piece
    engravings: int = 1  # engravings per piece: 0 is ``engrave``, the others drawn from ``variety``
    variety: render.EngravingVariety = field(default_factory=render.EngravingVariety)
    scan: ScanLookConfig = field(default_factory=ScanLookConfig)


@dataclass(frozen=True)
class PieceResult:
    piece_id: str
    origin: str
    status: str  # "built" | "skipped" (finished earlier) | "failed"
    systems: int = 0
    audio_s: float = 0.0  # seconds of system audio in the manifest rows
    error: str | None = None


@dataclass(frozen=True)
class BuildSummary:
    built: int  # pieces built by this run
    skipped: int  # pieces finished by an earlier run
    failed: int  # pieces that failed (this run or earlier)
    systems: int  # manifest rows in DIR
    pieces: int  # pieces in the manifest
    hours: float  # hours of system audio in the manifest
    elapsed_s: float


# ------------------------------------------------------------ orchestration
def build_corpus(
    pieces: list[sources.PieceSource],
    out_dir: Path,
    config: BuildConfig,
    workers: int = 1,
    on_result: Callable[[PieceResult], None] | None = None,
    retry_failed: bool = False,
) -> BuildSummary:
    """Build every piece not finished yet, then rebuild manifest.jsonl and errors.jsonl.

    Pieces that failed in an earlier run are skipped too, unless ``retry_failed``
    (held-out pieces are retried when ``config.allow_held_out``).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config = _resolved(config)
    _check_build_json(out_dir, config)
    results = []

    def record(result: PieceResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    pending = []
    for piece in pieces:
        status = _finished_status(out_dir / "pieces" / piece.piece_id)
        retry = retry_failed or (config.allow_held_out and status == "held_out")
        if status == "done" or (status is not None and not retry):
            record(PieceResult(piece.piece_id, piece.origin, "skipped" if status == "done" else "failed"))
        else:
            pending.append(piece)
    pending.sort(key=lambda p: choose_soundfont(p.piece_id, config))  # fewer soundfont reloads per worker
    _run_pending(pending, out_dir, config, workers, record)
    systems, piece_ids, seconds = rebuild_indexes(out_dir)
    count = {s: sum(r.status == s for r in results) for s in ("built", "skipped", "failed")}
    return BuildSummary(count["built"], count["skipped"], count["failed"], systems, piece_ids,
                        seconds / 3600.0, time.perf_counter() - started)


def _run_pending(pending: list[sources.PieceSource], out_dir: Path, config: BuildConfig, workers: int,
                 record: Callable[[PieceResult], None]) -> None:
    if workers <= 1 or len(pending) <= 1:
        for piece in pending:
            record(build_piece(piece, out_dir, config))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(build_piece, piece, out_dir, config): piece for piece in pending}
        for future in as_completed(futures):
            piece = futures[future]
            try:
                record(future.result())
            except Exception as e:  # the worker process died (e.g. a crash inside a C library)
                record(PieceResult(piece.piece_id, piece.origin, "failed", error=f"worker died: {e}"))


def _resolved(config: BuildConfig) -> BuildConfig:
    """``config`` with its soundfont list made explicit (and checked)."""
    installed = available_soundfonts(extra=True)
    names = config.soundfonts or tuple(sorted(available_soundfonts()))
    missing = [n for n in names if n not in installed]
    if missing or not names:
        raise BadInputError(f"soundfont(s) not installed: {', '.join(missing) or '(none found)'}; "
                            f"installed: {', '.join(sorted(installed)) or 'none'}")
    if abs(sum(config.split_fractions) - 1.0) > 1e-6 or min(config.split_fractions) < 0:
        raise BadInputError(f"split fractions must be >= 0 and sum to 1, got {config.split_fractions}")
    return dataclasses.replace(config, soundfonts=tuple(names), variety=_resolved_variety(config))


def _resolved_variety(config: BuildConfig) -> render.EngravingVariety:
    """``config.variety`` with its font list made explicit; BadInputError for what is not installed."""
    variety = config.variety
    installed = render.verovio_fonts()
    fonts = tuple(sorted(variety.fonts or installed))
    unknown = [f for f in fonts if f not in installed] + [e for e in variety.engravers if e not in render.ENGRAVERS]
    if unknown or not variety.engravers:
        raise BadInputError(f"unknown font(s) or engraver(s): {', '.join(unknown) or '(no engraver)'}; fonts: "
                            f"{', '.join(installed)}; engravers: {', '.join(render.ENGRAVERS)}")
    if config.engravings > 1 and "lilypond" in variety.engravers and not lilypond.available():
        raise BadInputError("engraver lilypond: LilyPond is not installed (apt-get install lilypond)")
    return dataclasses.replace(variety, fonts=fonts, engravers=tuple(sorted(set(variety.engravers))))


def _check_build_json(out_dir: Path, config: BuildConfig) -> None:
    """Record the content-deciding options; refuse to mix builds with different ones."""
    options = dataclasses.asdict(dataclasses.replace(config, allow_held_out=False))
    options = json.loads(json.dumps(options))  # tuples -> lists, as read back from disk
    path = out_dir / "build.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        # options added since a corpus was built (engravings, fonts, ...): it made what their defaults make
        defaults = dataclasses.asdict(BuildConfig(soundfonts=config.soundfonts, variety=config.variety))
        previous = _with_defaults(previous, json.loads(json.dumps(defaults)))
        if previous != options:
            changed = sorted(k for k in options if previous.get(k) != options[k])
            raise BadInputError(f"{out_dir} was built with other options ({', '.join(changed)}); "
                                "use the same arguments to resume, or a new output folder")
        return
    write_json_atomic(path, options)


def _with_defaults(previous: dict, defaults: dict) -> dict:
    """``previous`` with the keys it lacks taken from ``defaults`` (recursively into nested dicts)."""
    out = dict(previous)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _finished_status(piece_dir: Path) -> str | None:
    """'done', 'held_out', 'failed', or None when the piece still has to be built."""
    if (piece_dir / DONE).is_file():
        return "done"
    error_path = piece_dir / ERROR
    if error_path.is_file():
        error = json.loads(error_path.read_text(encoding="utf-8"))
        return "held_out" if error.get("error") == HeldOutRepertoireError.__name__ else "failed"
    return None


def choose_soundfont(piece_id: str, config: BuildConfig) -> str:
    """The piece's soundfont, drawn from ``config.soundfonts`` by a seeded hash (timbre variety)."""
    names = sorted(config.soundfonts)
    return names[sources.stable_seed(f"soundfont:{config.seed}:{piece_id}") % len(names)]


# ------------------------------------------------------------------ one piece
def build_piece(piece: sources.PieceSource, out_dir: Path, config: BuildConfig) -> PieceResult:
    """Build one piece; any failure is written to its error.json instead of raising."""
    piece_dir = Path(out_dir) / "pieces" / piece.piece_id
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi/music21 chatter about verovio's MIDI
            rows, system_errors = _build_piece(piece, piece_dir, config)
    except Exception as e:
        _write_error(piece_dir, piece, e)
        return PieceResult(piece.piece_id, piece.origin, "failed", error=f"{type(e).__name__}: {e}")
    write_jsonl_atomic(piece_dir / "rows.jsonl", rows)
    write_jsonl_atomic(piece_dir / "system_errors.jsonl", system_errors)
    (piece_dir / ERROR).unlink(missing_ok=True)
    write_text_atomic(piece_dir / DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return PieceResult(piece.piece_id, piece.origin, "built", len(rows), sum(r["duration"] for r in rows))


def _write_error(piece_dir: Path, piece: sources.PieceSource, error: Exception) -> None:
    internal = not isinstance(error, (BadInputError, RenderError))
    write_json_atomic(piece_dir / ERROR, {
        "piece_id": piece.piece_id, "source": piece.origin, "system": None,
        "error": type(error).__name__, "message": str(error),
        "traceback": traceback.format_exc(limit=6) if internal else None,
    })


def _build_piece(piece: sources.PieceSource, piece_dir: Path, config: BuildConfig) -> tuple[list, list]:
    held_out = sources.held_out_reason(piece)
    if held_out and not config.allow_held_out:
        sources.check_not_held_out(piece)
    musicxml = sources.normalized_musicxml(piece)
    root = ET.fromstring(musicxml.encode("utf-8"))
    composer = sources.composer_record(musicxml) or ""
    if sources.HELD_OUT_COMPOSER in composer.lower() and not config.allow_held_out:
        raise HeldOutRepertoireError(f"{piece.origin}: Beethoven is held-out test repertoire "
                                     f"(composer '{composer}'); use --allow-held-out for a test-only corpus")
    held_out = held_out or sources.HELD_OUT_COMPOSER in composer.lower()
    errors: list[dict] = []
    layouts = _layouts(piece, musicxml, root, config, errors)
    seed = sources.stable_seed(f"perform:{config.seed}:{piece.piece_id}")
    performance = perform(layouts[0].engraving.midi, config.performance, seed)
    soundfont = choose_soundfont(piece.piece_id, config)
    audio = synthesize(performance.midi, available_soundfonts(extra=True)[soundfont], SAMPLE_RATE)  # [samples]
    split = "test" if held_out else sources.split_of(piece.piece_id, config.seed, config.split_fractions)
    ctx = _PieceContext(piece, piece_dir, config, split, soundfont, performance, audio, root,
                        render.overfull_measures(root))
    _write_piece_files(ctx, musicxml, layouts)
    rows = []
    for layout in layouts:
        for system in layout.engraving.systems:
            try:
                rows.append(_build_system(ctx, layout, system))
            except (BadInputError, RenderError) as e:
                errors.append({"piece_id": piece.piece_id, "source": piece.origin, "system": system.index,
                               "error": type(e).__name__, "message": str(e), "traceback": None})
    if not rows:
        raise RenderError(f"no system of the piece could be built (first error: {errors[0]['message']})")
    return rows, errors


@dataclass(frozen=True)
class _Layout:
    """One engraving of a piece: its config, systems (numbered on from the previous engraving's, so a
    system number is unique in the piece) and, for LilyPond, its pages by system number."""

    index: int  # 0 = BuildConfig.engrave; the others drawn from BuildConfig.variety
    config: render.EngraveConfig
    engraving: render.Engraving
    pages: dict[int, np.ndarray | RenderError]  # LilyPond's untrimmed pages; {} for verovio

    def record(self) -> dict:
        """The row's ``engraving`` field."""
        fields = dataclasses.asdict(self.config)
        fields.pop("margin_px")
        if self.config.engraver == "lilypond":  # verovio's font and layout only chose the system breaks
            fields["font"] = lilypond.FONT
        return {"index": self.index, **fields}


def _layouts(piece: sources.PieceSource, musicxml: str, root: ET.Element, config: BuildConfig,
             errors: list[dict]) -> list[_Layout]:
    """The piece's engravings; an extra one that fails is appended to ``errors`` and skipped."""
    layouts, offset = [], 0
    for k in range(config.engravings):
        cfg = config.engrave if k == 0 else render.engraving_variant(
            config.engrave, config.variety, sources.stable_seed(f"engrave:{config.seed}:{piece.piece_id}:{k}"))
        try:
            engraving = render.engrave(musicxml, render.measure_count(root), cfg)
        except RenderError as e:
            if k == 0:
                raise
            errors.append({"piece_id": piece.piece_id, "source": piece.origin, "system": None, "engraving": k,
                           "error": type(e).__name__, "message": str(e), "traceback": None})
            continue
        systems = [dataclasses.replace(s, index=s.index + offset) for s in engraving.systems]
        engraving = dataclasses.replace(engraving, systems=systems)
        pages = {}
        if cfg.engraver == "lilypond":
            slices = [render.slice_musicxml(root, s.first_measure, s.end_measure) for s in systems]
            pages = dict(zip([s.index for s in systems], lilypond.engrave_slices(slices, cfg.scale)))
        layouts.append(_Layout(k, cfg, engraving, pages))
        offset += len(systems)
    return layouts


@dataclass(frozen=True)
class _PieceContext:
    piece: sources.PieceSource
    piece_dir: Path
    config: BuildConfig
    split: str
    soundfont: str
    performance: Performance
    audio: np.ndarray  # float32 [samples] at SAMPLE_RATE: the whole performance
    root: ET.Element  # normalized one-part MusicXML of the whole piece
    overfull: dict[int, tuple[float, float]]  # render.overfull_measures(root): systems to drop


def _write_piece_files(ctx: _PieceContext, musicxml: str, layouts: list[_Layout]) -> None:
    perf = ctx.performance
    write_text_atomic(ctx.piece_dir / "score.musicxml", musicxml)
    with atomic_path(ctx.piece_dir / "performance.mid") as tmp:
        perf.midi.write(str(tmp))
    write_wav(ctx.piece_dir / "audio.wav", ctx.audio, SAMPLE_RATE)
    spans = [{"system": s.index, "engraving": layout.index, "start": round(perf.perf_time(s.start_s), 6),
              "end": round(perf.perf_time(s.end_s), 6), "measures": [s.first_measure + 1, s.end_measure]}
             for layout in layouts for s in layout.engraving.systems]
    write_json_atomic(ctx.piece_dir / "piece.json", {
        "piece_id": ctx.piece.piece_id, "source": ctx.piece.origin, "split": ctx.split,
        "audio": _rel(ctx, ctx.piece_dir / "audio.wav"), "midi": _rel(ctx, ctx.piece_dir / "performance.mid"),
        "musicxml": _rel(ctx, ctx.piece_dir / "score.musicxml"),
        "audio_seconds": round(len(ctx.audio) / SAMPLE_RATE, 6),
        "score_seconds": layouts[0].engraving.duration_s, "soundfont": ctx.soundfont, "seed": perf.seed,
        "tempo_factor": perf.tempo_factor, "sample_rate": SAMPLE_RATE, "systems": spans,
        "engravings": [layout.record() for layout in layouts],
    })


def _system_image(layout: _Layout, system: render.SystemLayout) -> tuple[np.ndarray, align.SystemAlignment | None]:
    """The system's trimmed uint8 image [H, W] and its notehead alignment (None for LilyPond's)."""
    margin = layout.config.margin_px
    if layout.config.engraver != "lilypond":
        return align.page_alignment(system.svg, layout.engraving.note_onsets, margin)
    page = layout.pages[system.index]
    if isinstance(page, RenderError):
        raise page
    return render.trim(page, margin), None


def _build_system(ctx: _PieceContext, layout: _Layout, system: render.SystemLayout) -> dict:
    """Write one system's files; return its manifest row."""
    stem = ctx.piece_dir / "systems" / f"{system.index:03d}"
    perf = ctx.performance
    start, end = perf.perf_time(system.start_s), perf.perf_time(system.end_s)
    if end <= start:  # e.g. a last system whose measures verovio's timemap does not reach
        raise RenderError(f"system {system.index} takes no time ({start:.3f}-{end:.3f} s)")
    overfull = {i: q for i, q in ctx.overfull.items() if system.first_measure <= i < system.end_measure}
    if overfull:
        i, (content, bar) = next(iter(overfull.items()))
        raise RenderError(f"system {system.index}: measure {i + 1} holds {content:g} quarters in a "
                          f"{bar:g}-quarter bar (mis-parsed score); system dropped")
    paths = {kind: stem.with_suffix(f".{kind}") for kind in ("png", "musicxml", "lmx", "mid", "wav")}
    image, alignment = _system_image(layout, system)  # uint8 [H, W]
    write_text_atomic(paths["musicxml"], render.slice_musicxml(ctx.root, system.first_measure, system.end_measure))
    write_text_atomic(paths["lmx"], NotationCodec(ctx.config.flavor).to_lmx(paths["musicxml"]) + "\n")
    render.write_png(paths["png"], image)
    if alignment is not None:
        align.write_alignment(align.alignment_path(paths["png"]), alignment)
    scan_paths, scan_seeds = _write_scans(ctx, stem, image)
    with atomic_path(paths["mid"]) as tmp:
        system_midi(perf.midi, start, end, ctx.config.performance.jitter_ms).write(str(tmp))
    write_wav(paths["wav"], cut(ctx.audio, SAMPLE_RATE, start, end), SAMPLE_RATE)
    measures = ctx.root.find("part").findall("measure")[system.first_measure: system.end_measure]
    return {
        "piece_id": ctx.piece.piece_id, "source": ctx.piece.origin, "split": ctx.split,
        "system": system.index, **{kind: _rel(ctx, p) for kind, p in paths.items()},
        "scans": [_rel(ctx, p) for p in scan_paths], "scan_seeds": scan_seeds,
        "piece_audio": _rel(ctx, ctx.piece_dir / "audio.wav"),
        "start": round(start, 6), "end": round(end, 6), "duration": round(end - start, 6),
        "soundfont": ctx.soundfont, "seed": perf.seed, "tempo_factor": perf.tempo_factor,
        "measures": [system.first_measure + 1, system.end_measure],  # 1-based ordinals, inclusive
        "measure_numbers": [measures[0].get("number"), measures[-1].get("number")],
        "engraving": layout.record(),
    }


def system_midi(midi: pretty_midi.PrettyMIDI, start: float, end: float, jitter_ms: float) -> pretty_midi.PrettyMIDI:
    """The notes of performance seconds [start, end), shifted to 0 and kept inside [0, end - start].

    Onset jitter may move a note a little before its system's first barline, so
    notes are taken from [start - tol, end - tol) with tol = 3 jitter std (at
    most 50 ms); onsets before 0 become 0. Times are stored at 960 ticks per
    beat (0.5 ms) and offsets end at least one tick before the duration, so the
    written file never runs past the system's audio.
    """
    tol = min(3.0 * jitter_ms / 1000.0, 0.05)
    sliced = slice_midi(midi, start - tol, end - tol)  # times relative to start - tol
    out = pretty_midi.PrettyMIDI(resolution=_MIDI_RESOLUTION)
    tick = 60.0 / (120.0 * _MIDI_RESOLUTION)  # pretty_midi writes at 120 qpm
    last = end - start - tick
    for inst in sliced.instruments:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        for n in inst.notes:
            on, off = max(n.start - tol, 0.0), min(n.end - tol, last)
            if off - on >= tick:
                new.notes.append(pretty_midi.Note(n.velocity, n.pitch, on, off))
        new.control_changes = [pretty_midi.ControlChange(c.number, c.value, min(max(c.time - tol, 0.0), last))
                               for c in inst.control_changes]
        out.instruments.append(new)
    return out


def _write_scans(ctx: _PieceContext, stem: Path, image: np.ndarray) -> tuple[list[Path], list[int]]:
    paths, seeds = [], []
    for k in range(ctx.config.scan_copies):
        seed = sources.stable_seed(f"scan:{ctx.config.seed}:{ctx.piece.piece_id}:{stem.name}:{k}")
        path = stem.with_name(f"{stem.name}.scan{k}.png")
        render.write_png(path, scan_look(image, ctx.config.scan, seed))
        paths.append(path)
        seeds.append(seed)
    return paths, seeds


def _rel(ctx: _PieceContext, path: Path) -> str:
    return path.relative_to(ctx.piece_dir.parent.parent).as_posix()


# ------------------------------------------------------------------ indexes
def rebuild_indexes(out_dir: Path) -> tuple[int, int, float]:
    """Rewrite manifest.jsonl and errors.jsonl from the pieces; return (systems, pieces, audio seconds)."""
    rows, errors = [], []
    for piece_dir in sorted(p for p in (out_dir / PIECES).glob("*") if p.is_dir()):
        if (piece_dir / DONE).is_file():
            rows.extend(_read_jsonl(piece_dir / PIECE_ROWS))
            errors.extend(_read_jsonl(piece_dir / "system_errors.jsonl"))
        elif (piece_dir / ERROR).is_file():
            errors.append(json.loads((piece_dir / ERROR).read_text(encoding="utf-8")))
    _write_if_changed(out_dir / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    _write_if_changed(out_dir / "errors.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))
    return len(rows), len({r["piece_id"] for r in rows}), sum(r["duration"] for r in rows)


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic write that leaves the file (and its mtime) alone when the text is unchanged."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)
