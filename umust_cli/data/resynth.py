"""Re-synthesise a built corpus with another soundfont, GM program or tempo: variants of the same passages.

Each piece's ``performance.mid`` is rendered again (optionally with every instrument
switched to one General MIDI program, e.g. 1 = bright piano, 2 = electric grand, and
optionally played ``tempo`` times faster) and cut at the system spans the corpus
already records (scaled by the tempo ratio), so every system keeps its image and
notation; only the sound (and its speed, MIDI files included) changes. The output is a corpus of
its own (same layout, ``soundfont`` = the variant's name); its non-audio files are
hard links to the source's (copies across file systems). Pieces are finished one
at a time (``done`` last), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from umust_cli.data import corpus as corpus_reader
from umust_cli.data.build import DONE, ERROR, rebuild_indexes
from umust_cli.data.synth import SAMPLE_RATE, available_soundfonts, cut, synthesize, write_wav
from umust_cli.errors import BadInputError, InputNotFoundError, RenderError
from umust_cli.io import atomic_path, write_json_atomic, write_jsonl_atomic, write_text_atomic

_OWN_FILES = {"audio.wav", "piece.json", "rows.jsonl", DONE, ERROR, "system_errors.jsonl"}


@dataclass(frozen=True)
class ResynthConfig:
    soundfont: str  # a name of synth.available_soundfonts(extra=True)
    program: int | None = None  # GM program (0-127) for every non-drum instrument; None = keep the MIDI's
    splits: tuple[str, ...] = ("train",)  # only these splits' pieces (() = all)
    tempo: float = 1.0  # play this many times faster (2 = twice as fast); system spans scale with it

    @property
    def name(self) -> str:
        """The variant's soundfont label in the output rows: ``csound``, ``fluidr3-p2``, ``musescore-t0.5``."""
        program = "" if self.program is None else f"-p{self.program}"
        return f"{self.soundfont}{program}" + ("" if self.tempo == 1.0 else f"-t{self.tempo:g}")


def resynth_corpus(corpus: Path, out: Path, cfg: ResynthConfig,
                   on_piece: Callable[[str], None] | None = None) -> dict:
    """Render ``corpus``'s pieces of ``cfg.splits`` again into ``out``; return a summary."""
    corpus, out = Path(corpus), Path(out)
    if cfg.program is not None and not 0 <= cfg.program <= 127:
        raise BadInputError(f"--program must be a General MIDI program 0-127, got {cfg.program}")
    if not 0.1 <= cfg.tempo <= 10:
        raise BadInputError(f"--tempo must be a ratio between 0.1 and 10, got {cfg.tempo}")
    soundfonts = available_soundfonts(extra=True)
    if cfg.soundfont not in soundfonts:
        raise BadInputError(f"soundfont {cfg.soundfont!r} is not installed; installed: {', '.join(sorted(soundfonts))}")
    if corpus.resolve() == out.resolve():
        raise BadInputError("the output folder must differ from the source corpus")
    by_piece = defaultdict(list)
    for row in corpus_reader.rows(corpus, cfg.splits):
        by_piece[row["piece_id"]].append(row)
    if not by_piece:
        raise InputNotFoundError(f"{corpus} has no rows in split(s) {', '.join(cfg.splits)}")
    built, skipped, failed = 0, 0, {}
    for piece_id, rows in sorted(by_piece.items()):
        if (out / "pieces" / piece_id / DONE).is_file():
            skipped += 1
        else:
            try:
                resynth_piece(corpus, out, rows, cfg, soundfonts[cfg.soundfont])
                built += 1
            except (BadInputError, RenderError, OSError) as e:  # keep going; reported at the end
                failed[piece_id] = f"{type(e).__name__}: {e}"
        if on_piece is not None:
            on_piece(piece_id)
    systems, _, seconds = rebuild_indexes(out)  # manifest.jsonl from the finished pieces, as `dataset build`
    return {"pieces": len(by_piece), "built": built, "skipped": skipped, "failed": failed, "systems": systems,
            "hours": round(seconds / 3600, 3), "soundfont": cfg.name}


def resynth_piece(corpus: Path, out: Path, rows: list[dict], cfg: ResynthConfig, soundfont: Path) -> None:
    """One piece: link its non-audio files, render its performance again, cut the systems."""
    import pretty_midi

    src_dir, dst_dir = corpus / "pieces" / rows[0]["piece_id"], out / "pieces" / rows[0]["piece_id"]
    _link_tree(src_dir, dst_dir, midi=cfg.tempo == 1.0)
    if cfg.tempo != 1.0:  # the MIDI files play faster too
        for path in src_dir.rglob("*.mid"):
            with atomic_path(dst_dir / path.relative_to(src_dir)) as tmp:
                _faster(pretty_midi.PrettyMIDI(str(path)), cfg.tempo).write(str(tmp))
    midi = _faster(pretty_midi.PrettyMIDI(str(src_dir / "performance.mid")), cfg.tempo)
    if cfg.program is not None:
        for inst in midi.instruments:
            if not inst.is_drum:
                inst.program = cfg.program
    audio = synthesize(midi, soundfont, SAMPLE_RATE)  # [samples]
    write_wav(dst_dir / "audio.wav", audio, SAMPLE_RATE)
    new_rows = []
    for row in sorted(rows, key=lambda r: r["system"]):
        row = dict(row, **_scaled_span(row, cfg.tempo), soundfont=cfg.name,
                   resynth={"source": str(corpus.resolve()), "soundfont": cfg.soundfont, "program": cfg.program,
                            "tempo": cfg.tempo})
        write_wav(out / row["wav"], cut(audio, SAMPLE_RATE, row["start"], row["end"]), SAMPLE_RATE)
        new_rows.append(row)
    piece = json.loads((src_dir / "piece.json").read_text(encoding="utf-8"))
    systems = [dict(s, **_scaled_span(s, cfg.tempo)) for s in piece.get("systems", [])]
    write_json_atomic(dst_dir / "piece.json", dict(piece, soundfont=cfg.name, systems=systems,
                                                   audio_seconds=round(len(audio) / SAMPLE_RATE, 6)))
    write_jsonl_atomic(dst_dir / "rows.jsonl", new_rows)
    write_text_atomic(dst_dir / DONE, "resynthesised\n")


def _scaled_span(span: dict, tempo: float) -> dict:
    """``span``'s start / end (and duration, tempo_factor if present) at ``tempo`` times the speed."""
    out = {"start": round(span["start"] / tempo, 6), "end": round(span["end"] / tempo, 6)}
    if "duration" in span:
        out["duration"] = round(out["end"] - out["start"], 6)
    if "tempo_factor" in span:
        out["tempo_factor"] = span["tempo_factor"] * tempo
    return out


def _faster(midi, tempo: float):
    """``midi`` (a PrettyMIDI, changed in place) played ``tempo`` times faster."""
    end = midi.get_end_time()
    if tempo != 1.0 and end > 0:
        midi.adjust_times([0.0, end], [0.0, end / tempo])
    return midi


def _link_tree(src: Path, dst: Path, midi: bool = True) -> None:
    """Hard-link (or copy) every file of ``src`` except audio, bookkeeping (and MIDI) into ``dst``."""
    for path in src.rglob("*"):
        if path.is_dir() or path.name in _OWN_FILES or path.suffix == ".wav" or (not midi and path.suffix == ".mid"):
            continue
        target = dst / path.relative_to(src)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
