"""OMR over a corpus split: the direction model reads the split's pre-tokenized image codes and
writes one LMX file per system, named as `umust eval omr PRED_DIR --data CORPUS` reads them
(``PRED_DIR/<piece_id>/<NNN>.lmx``).

The sources are the codes `umust dataset tokenize` wrote (variant 0 of ``NNN.image.npy``, or of
``NNN.scanK.image.npy`` for the K-th scanned-look copy): the model sees exactly what training
and validation fed it. Systems are decoded greedily in batches of similar length
(``model.generate`` pads and masks them), which is several times faster than one at a time on
a CPU. A system already predicted is skipped, so an interrupted run resumes.

``render_audio`` continues the image -> audio cascade from those LMX files (perform, then
FluidSynth: the steps ``umust translate score.png -o out.wav`` takes after OMR) into
``PRED_DIR/<piece_id>/<NNN>.wav`` for `umust eval i2a PRED_DIR --data CORPUS`. A system whose
notation yields no notes gets one second of silence, so that it is scored (as nothing heard)
rather than left out, and is counted. ``predict_reading`` is the other route to audio
(``--via midi``): the CTC reading of each system's codes, timed by image column, to
``NNN.mid`` and ``NNN.wav``, without decoding. ``predict_transcription`` reads each system's
audio codes into ``NNN.mid`` (the audio -> image direction model's transcription) for
`umust eval amt PRED_DIR --data CORPUS`; ``transcribe_split_audio`` does the same from each
system's WAV with transkun or the note reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pretty_midi
import torch

from umust_cli.codecs.image import load_gray
from umust_cli.codecs.midi import MidiCodec
from umust_cli.codecs.notation import NotationCodec, lmx_file_text
from umust_cli.data import corpus as corpus_io
from umust_cli.data import pairs as pairs_io
from umust_cli.data.synth import SAMPLE_RATE, write_wav
from umust_cli.errors import BadInputError, NotationError, TranslationError
from umust_cli.eval.corpus import split_rows, spread
from umust_cli.io import write_text_atomic
from umust_cli.model.generate import batch_steps, generate_from_memory, step_positions
from umust_cli.translate.direct import (column_reading, encode_images, pixel_readings, read_rolls,
                                        read_staff_pitches, reader_keys, readers_reading, reading_midi,
                                        with_readers)
from umust_cli.translate.engines import Engines
from umust_cli.translate.pipeline import run_route, write_output
from umust_cli.translate.symbolic import synthesize_audio
from umust_cli.translate.routes import Route

RENDER = Route("render", ("notation", "midi", "audio"), ("perform", "fluidsynth"))


@dataclass(frozen=True)
class SplitJob:
    """Which systems to predict and how."""

    corpus: Path
    split: str = "test"
    copy: str = "engraved"          # engraved, or scanK: the K-th scanned-look copy
    codes: Path | None = None       # where `dataset tokenize` wrote the codes (default: the corpus)
    batch_size: int = 16
    limit: int | None = None        # N systems spread evenly over the split (as eval's --limit)

    def __post_init__(self) -> None:
        if self.copy != "engraved" and not (self.copy.startswith("scan") and self.copy[4:].isdigit()):
            raise BadInputError(f"--copy must be engraved or scanK (scan0, scan1, ...), not {self.copy!r}")
        if self.batch_size < 1:
            raise BadInputError("--batch-size must be >= 1")


def split_systems(job: SplitJob, modality: str = "image") -> list[pairs_io.System]:
    """The split's systems of the chosen copy that have ``modality``'s codes (image or audio), in
    (piece, system) order."""
    scans = job.copy != "engraved" and modality == "image"
    systems, _ = pairs_io.load_systems(job.corpus, job.split, None, job.codes, (modality,), scans=scans)
    chosen = [s for s in systems if s.copy == ("" if not scans else job.copy) and s.has(modality)]
    if not chosen:
        what = f"{job.copy} image" if modality == "image" else modality
        raise BadInputError(f"{job.corpus}: no {what} codes on the "
                            f"{job.split} split; run `umust dataset tokenize {job.corpus} --split {job.split}"
                            f"{' --scans' if scans else ''}` first")
    return spread(sorted(chosen, key=lambda s: s.key), job.limit)   # the systems eval --limit picks


def _dest(out: Path, system: pairs_io.System) -> Path:
    piece, number = system.key.split("/")[:2]
    return out / piece / f"{number}.lmx"


def _image_batch(store: pairs_io.SequenceStore, idx: list[int], engines: Engines) -> tuple[torch.Tensor, torch.Tensor]:
    """The image steps of systems ``idx``, padded into one batch on the run's device, and their positions."""
    seqs = [store.steps(i, "image") for i in idx]
    src = batch_steps([s for s, _ in seqs]).to(engines.device)
    return src, step_positions(src, "image", torch.tensor([h for _, h in seqs]))


def _reader_keys(paths: dict[str, Path], systems: list[pairs_io.System], engines: Engines) -> list[int | None]:
    """The key reader's key signature of each system's image file (``paths``: ``image_paths``);
    Nones where the run has no key reader or an image file is missing (the translator's key head
    reads those)."""
    if engines.key_reader() is None:
        return [None] * len(systems)
    found = [paths.get(s.key) for s in systems]
    keys = reader_keys(engines, [load_gray(p) for p in found if p is not None])
    return [keys.pop(0) if p is not None else None for p in found]


def _pixel_readings(paths: dict[str, Path], systems: list[pairs_io.System], engines: Engines,
                    omr: bool = False) -> list:
    """The pitch reader's (``omr``: the rhythm reader's where the run has one) reading of each
    system's image file (``paths``: ``image_paths``); Nones where the run has no such reader or an
    image file is missing (the translator's CTC head reads those)."""
    if engines.pitch_reader() is None and not (omr and engines.rhythm_reader() is not None):
        return [None] * len(systems)
    found = [paths.get(s.key) for s in systems]
    read = pixel_readings(engines, [load_gray(p) for p in found if p is not None], omr)
    return [read.pop(0) if p is not None else None for p in found]


def image_paths(job: SplitJob, engines: Engines) -> dict[str, Path]:
    """System key ("piece/NNN", a scanned-look copy's with "/scanK") -> its image file, of ``job``'s
    split; {} for a run without a key, pitch or rhythm reader (which read them)."""
    out: dict[str, Path] = {}
    if engines.key_reader() is None and engines.pitch_reader() is None and engines.rhythm_reader() is None:
        return out
    for row in corpus_io.system_rows(job.corpus, (job.split,)):
        key = f"{row['piece_id']}/{int(row['system']):03d}"
        if row.get("png"):
            out[key] = job.corpus / row["png"]
        for k, rel in enumerate(row.get("scans") or ()):
            out[f"{key}/scan{k}"] = job.corpus / rel
    return {k: p for k, p in out.items() if p.is_file()}


def predict_omr(job: SplitJob, engines: Engines, out: Path,
                on_batch: Callable[[int], None] | None = None) -> dict:
    """Write ``out/<piece>/<NNN>.lmx`` for every chosen system; counts of what was done."""
    model = engines.translator("image", "notation")
    systems = split_systems(job)
    todo = [s for s in systems if not _dest(out, s).is_file()]
    store, paths = pairs_io.SequenceStore(todo, model.cfg), image_paths(job, engines)
    names = NotationCodec().token_names()
    order = sorted(range(len(todo)), key=lambda i: todo[i].length("image"))
    written, empty = 0, 0
    for lo in range(0, len(order), job.batch_size):
        idx = order[lo:lo + job.batch_size]
        memory, mask = encode_images(model, *_image_batch(store, idx, engines))
        ids = generate_from_memory(model, memory, mask, "notation", engines.decoding("notation"),
                                   rule=engines.rule("notation", len(idx)))
        chosen = [todo[i] for i in idx]
        ids = read_staff_pitches(engines, model, memory, mask, ids, _reader_keys(paths, chosen, engines),
                                 _pixel_readings(paths, chosen, engines, omr=True))
        for i, out_ids in zip(idx, ids):
            tokens = [names[t] for t in engines.vocab.to_local("notation", out_ids)]
            empty += not tokens
            write_text_atomic(_dest(out, todo[i]), lmx_file_text(" ".join(tokens)))
            written += 1
        if on_batch:
            on_batch(len(idx))
    return {"systems": len(systems), "written": written, "skipped": len(systems) - written,
            "empty": empty, "split": job.split, "copy": job.copy}


def render_audio(job: SplitJob, engines: Engines, out: Path,
                 on_item: Callable[[int], None] | None = None) -> dict:
    """``out/<piece>/<NNN>.wav`` from each chosen system's predicted ``.lmx`` (``predict_omr``
    first); counts of what was done (``silent``: no notes, one second of silence written)."""
    systems = split_systems(job)
    written, silent = 0, 0
    for system in systems:
        lmx = _dest(out, system)
        wav = lmx.with_suffix(".wav")
        if not wav.is_file():
            try:
                run_route(RENDER, lmx, wav, engines)
            except (TranslationError, NotationError):
                write_wav(wav, torch.zeros(SAMPLE_RATE).numpy())
                silent += 1
            written += 1
        if on_item:
            on_item(1)
    return {"systems": len(systems), "written": written, "skipped": len(systems) - written, "silent": silent,
            "split": job.split, "copy": job.copy}



def predict_transcription(job: SplitJob, engines: Engines, out: Path,
                          on_batch: Callable[[int], None] | None = None) -> dict:
    """Transcription over a split: ``out/<piece>/<NNN>.mid`` from each system's audio codes (variant
    0), the roll head's reading where the model has one (``RunConfig.roll_reading``), else the
    MIDI it decodes greedily; for `umust eval amt OUT --data CORPUS`. ``empty``: no notes."""
    model = engines.translator("audio", "midi")
    systems = split_systems(job, "audio")
    todo = [s for s in systems if not _dest(out, s).with_suffix(".mid").is_file()]
    store = pairs_io.SequenceStore(todo, model.cfg)
    order, empty = sorted(range(len(todo)), key=lambda i: todo[i].length("audio")), 0
    for lo in range(0, len(order), job.batch_size):
        idx = order[lo:lo + job.batch_size]
        src = batch_steps([store.steps(i, "audio")[0] for i in idx]).to(engines.device)
        for i, midi in zip(idx, _transcribe(model, src, engines)):
            empty += not midi.instruments[0].notes
            write_output(_dest(out, todo[i]).with_suffix(".mid"), "midi", midi)
        if on_batch:
            on_batch(len(idx))
    return {"systems": len(systems), "written": len(todo), "skipped": len(systems) - len(todo), "empty": empty,
            "split": job.split, "copy": "audio"}


def transcribe_split_audio(corpus: Path, split: str, limit: int | None, route: Route, engines: Engines, out: Path,
                           on_system: Callable[[int], None] | None = None) -> dict:
    """Each system's WAV along ``route`` (audio -> MIDI by transkun or the note reader, or on to
    notation) into ``out/<piece>/<NNN>.mid`` (or ``.lmx``), for `umust eval amt|emd OUT --data
    CORPUS`; systems already written are skipped. ``on_system(total)`` after each. ``empty``: no notes."""
    rows = [r for r in split_rows(corpus, split, limit) if r.get("wav")]
    if not rows:
        raise BadInputError(f"{corpus}: no {split} systems with audio")
    suffix, written, empty = ".mid" if route.target == "midi" else ".lmx", 0, 0
    for row in rows:
        dest = out / row["piece_id"] / f"{int(row['system']):03d}{suffix}"
        if not dest.is_file():
            summary = run_route(route, Path(corpus, row["wav"]), dest, engines)
            empty += summary.get("notes", summary.get("tokens", 1)) == 0
            written += 1
        if on_system:
            on_system(len(rows))
    return {"systems": len(rows), "written": written, "skipped": len(rows) - written, "empty": empty,
            "split": split, "copy": "audio"}


def _transcribe(model, src: torch.Tensor, engines: Engines) -> list[pretty_midi.PrettyMIDI]:
    """One piano track per example of a batch of audio steps: roll reading or decoded MIDI."""
    if model.cfg.roll_head and engines.config.roll_reading:
        tracks = read_rolls(model, src)
    else:
        with torch.inference_mode():
            memory, mask = model.encode(src, step_positions(src, "audio"), "audio", "midi")
        ids = generate_from_memory(model, memory, mask, "midi", engines.decoding("midi"))
        decoded = [MidiCodec().decode(engines.vocab.to_local("midi", x)) for x in ids]
        tracks = [[n for inst in m.instruments if not inst.is_drum for n in inst.notes] for m in decoded]
    out = []
    for notes in tracks:
        midi, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(program=0, name="piano")
        piano.notes.extend(notes)
        midi.instruments.append(piano)
        out.append(midi)
    return out


def _batch_readings(model, store: pairs_io.SequenceStore, idx: list[int], keys: list[int | None],
                    pixels: list, engines: Engines) -> list:
    """The readings of systems ``idx``: the readers' where both read one (the key reader's key,
    the pitch reader's columns), else the translator's heads' with what a reader read; the
    translator encodes only the systems a reader missed (as ``direct.image_to_midi``)."""
    own = [readers_reading(fifths, pixel) for fifths, pixel in zip(keys, pixels)]
    heads = [i for i, reading in zip(idx, own) if reading is None]
    found = iter(column_reading(model, *encode_images(model, *_image_batch(store, heads, engines))) if heads else ())
    return [reading if reading is not None else with_readers(next(found), fifths, pixel)
            for reading, fifths, pixel in zip(own, keys, pixels)]


def predict_reading(job: SplitJob, engines: Engines, out: Path,
                    on_batch: Callable[[int], None] | None = None) -> dict:
    """The ``--via midi`` route over a split: ``out/<piece>/<NNN>.mid``, each chosen system's
    CTC reading timed by image column (``direct.image_to_midi``'s), and ``NNN.wav``, FluidSynth's
    rendering of it (one second of silence for a system read as no notes: ``silent``)."""
    model = engines.translator("image", "midi")
    systems = split_systems(job)
    todo = [s for s in systems if not _dest(out, s).with_suffix(".wav").is_file()]
    store, paths = pairs_io.SequenceStore(todo, model.cfg), image_paths(job, engines)
    silent = 0
    for lo in range(0, len(todo), job.batch_size):
        idx = list(range(lo, min(lo + job.batch_size, len(todo))))
        keys = _reader_keys(paths, [todo[i] for i in idx], engines)
        pixels = _pixel_readings(paths, [todo[i] for i in idx], engines)
        for i, reading in zip(idx, _batch_readings(model, store, idx, keys, pixels, engines)):
            midi, dest = reading_midi([reading], model.cfg.ctc_target), _dest(out, todo[i])
            write_output(dest.with_suffix(".mid"), "midi", midi)
            try:
                samples = synthesize_audio(midi, engines)
            except TranslationError:
                samples, silent = torch.zeros(SAMPLE_RATE).numpy(), silent + 1
            write_wav(dest.with_suffix(".wav"), samples)
        if on_batch:
            on_batch(len(idx))
    return {"systems": len(systems), "written": len(todo), "skipped": len(systems) - len(todo), "silent": silent,
            "split": job.split, "copy": job.copy}
