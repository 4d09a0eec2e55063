"""`umust dataset import NAME PATH -o DIR`: a public dataset into the common corpus manifest.

An importer reads a local copy of a dataset (nothing is downloaded), keeps the
dataset's own splits and writes::

    DIR/manifest.jsonl        one row per sample (the rows of ``umust dataset build`` where they overlap)
    DIR/errors.jsonl          one row per missing or unreadable file (piece_id, source, system, file, error, message)
    DIR/import.json           dataset, source folder, options and counts of the last run
    DIR/files/<dataset path>  the dataset's files, hard-linked (copied with ``--copy``, or when the
                              folders are on different file systems)
    DIR/derived/<dataset path>.mid   MIDI made from a dataset's note tables (MusicNet labels, BPSD notes)

A row has ``dataset``, ``piece_id``, ``source`` (``<dataset>:<identity>``, with
the composer when known: the held-out rule of :mod:`umust_cli.data.sources`
reads it), ``split`` (train / valid / test), ``original_split`` (the
dataset's own name), ``held_out``, ``system`` (index within the piece),
``start``/``end``/``duration`` (seconds of the performance: its audio, else the
MIDI made from its note table; 0 for image rows),
the dataset's metadata (composer, title, ...) and paths relative to DIR under
the keys the corpus consumers read: ``wav``, ``mid``, ``png`` (the system
image, whatever its format), ``scans`` (other renderings of it), ``musicxml``,
``lmx``, plus ``kern``, ``labels`` and the like. Held-out repertoire
(Beethoven) goes to the test split whatever the dataset's split; BPSD is
imported as test material only.

A missing or unreadable required file drops its sample; an expected companion
file (e.g. GrandStaff's distorted image) is listed but the row is kept. The
import goes on past every bad file; the command exits with status 2 when
anything was listed. Re-running into the same DIR redoes the manifest and keeps
files already in place. The layout each importer expects, and where that is
documented, is in the docstring of its module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from umust_cli.data import sources
from umust_cli.data.corpus import MANIFEST, SPLITS
from umust_cli.data.importers import bpsd, grandstaff, maestro, musicnet, olimpic
from umust_cli.data.importers.base import LIST_KEYS, OPTIONAL, REQUIRED, Importer, Sample
from umust_cli.errors import AudioError, BadInputError, ImageError, MidiError
from umust_cli.inputs import require_input_file
from umust_cli.io import atomic_path, write_json_atomic, write_jsonl_atomic

IMPORTERS: dict[str, Importer] = {imp.name: imp for imp in (
    maestro.IMPORTER, grandstaff.IMPORTER, olimpic.IMPORTER, musicnet.MUSICNET, musicnet.MUSICNET_EM,
    bpsd.IMPORTER)}
FILES, DERIVED, IMPORT_JSON = "files", "derived", "import.json"
AUDIO_KEYS, MIDI_KEYS, IMAGE_KEYS = ("wav",), ("mid", "score_mid"), ("png", "scans")
SCORE_KEYS = ("musicxml", "kern")  # read for a composer record when the dataset names none
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_HEADER_BYTES = 65536


@dataclass(frozen=True)
class ImportConfig:
    copy: bool = False  # copy the files instead of hard-linking them
    limit: int | None = None  # only the first N samples of the dataset's list (a trial run)


def get_importer(name: str) -> Importer:
    key = name.strip().lower().replace("-", "_")
    if key not in IMPORTERS:
        raise BadInputError(f"unknown dataset {name!r} (choose from {', '.join(IMPORTERS)})")
    return IMPORTERS[key]


def import_dataset(name: str, root: Path, out_dir: Path, config: ImportConfig = ImportConfig(),
                   on_sample: Callable[[int, int], None] | None = None) -> dict:
    """Import dataset ``name`` from its local copy ``root`` into ``out_dir``; returns the summary
    (also written to ``out_dir``/import.json). ``on_sample(done, total)`` follows the progress."""
    started = time.perf_counter()
    importer, root, out_dir = get_importer(name), Path(root), Path(out_dir)
    samples = importer.find(root)[: config.limit]
    if not samples:
        raise BadInputError(f"no {importer.name} samples listed in {root}")
    _claim(out_dir, importer.name, root)
    rows, errors, counts = [], [], Counter()
    if on_sample is not None:
        on_sample(0, len(samples))
    for done, sample in enumerate(samples, start=1):
        row, sample_errors = import_sample(importer, sample, root, out_dir, config.copy, counts)
        errors.extend(sample_errors)
        if row is not None:
            rows.append(row)
        if on_sample is not None:
            on_sample(done, len(samples))
    write_jsonl_atomic(out_dir / MANIFEST, rows)
    write_jsonl_atomic(out_dir / "errors.jsonl", errors)
    summary = _summary(importer, root, out_dir, config, len(samples), rows, errors, counts)
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_json_atomic(out_dir / IMPORT_JSON, summary)
    return summary


def _claim(out_dir: Path, name: str, root: Path) -> None:
    """Refuse a folder that holds another dataset's import (or is the dataset itself)."""
    if out_dir.resolve() == root.resolve():
        raise BadInputError(f"the output folder is the dataset folder {root}; choose another one")
    previous = out_dir / IMPORT_JSON
    if previous.is_file():
        try:
            earlier = json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BadInputError(f"{previous}: unreadable ({e}); use a new output folder") from e
        if earlier.get("dataset") != name or earlier.get("source") != str(root.resolve()):
            raise BadInputError(f"{out_dir} holds an import of {earlier.get('dataset')} from "
                                f"{earlier.get('source')}; use a new output folder")
    elif (out_dir / MANIFEST).is_file():
        raise BadInputError(f"{out_dir} already holds a corpus that is not an import; use a new output folder")


# -------------------------------------------------------------- one sample
def import_sample(importer: Importer, sample: Sample, root: Path, out_dir: Path, copy: bool,
                  counts: Counter) -> tuple[dict | None, list[dict]]:
    """Check, place and convert the files of ``sample``; its manifest row (None when dropped) and errors."""
    sample = _with_score_composer(sample, root)
    held_out = importer.test_only or sources.origin_held_out_reason(sample.source) is not None
    split = "test" if held_out else importer.split_map.get(sample.original_split)
    if split is None:
        return None, [_error(sample, None, BadInputError(
            f"unknown split {sample.original_split!r} (known: {', '.join(importer.split_map)})"))]
    checked, errors, dropped = {}, [], False
    for ref in sample.files:
        try:
            checked[ref] = inspect_file(root / ref.path, ref.key)
        except BadInputError as e:
            if ref.need != OPTIONAL:
                errors.append(_error(sample, ref.path, e))
            dropped = dropped or ref.need == REQUIRED
    if dropped:
        return None, errors
    paths: dict = {key: [] for key in LIST_KEYS if any(r.key == key for r in checked)}
    for ref in checked:
        rel = f"{FILES}/{ref.path}"
        counts[place(root / ref.path, out_dir / rel, copy)] += 1
        paths[ref.key] = [*paths[ref.key], rel] if ref.key in LIST_KEYS else rel
    seconds = next((s for ref, s in checked.items() if ref.key in AUDIO_KEYS), None)
    for derived in sample.derived:
        rel = f"{DERIVED}/{PurePosixPath(derived.table).with_suffix('.mid')}"
        try:
            end = derived.convert(root / derived.table, out_dir / rel)
        except BadInputError as e:
            return None, [*errors, _error(sample, derived.table, e)]
        paths[derived.key] = rel
        counts["derived"] += 1
        seconds = end if seconds is None else seconds
    return _row(importer, sample, split, held_out, paths, seconds), errors


def _with_score_composer(sample: Sample, root: Path) -> Sample:
    """``sample`` with the composer record of its score (MusicXML/kern) when the dataset names none,
    added to its source too, so that the held-out rule sees it."""
    if sample.meta.get("composer"):
        return sample
    for ref in sample.files:
        if ref.key in SCORE_KEYS and (root / ref.path).is_file():
            composer = sources.composer_record(_head(root / ref.path))
            if composer:
                return dataclasses.replace(sample, source=f"{sample.source} ({composer})",
                                           meta={**sample.meta, "composer": composer})
    return sample


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(_HEADER_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _row(importer: Importer, sample: Sample, split: str, held_out: bool, paths: dict,
         seconds: float | None) -> dict:
    seconds = round(float(seconds or 0.0), 6)
    return {**sample.meta, "dataset": importer.name, "piece_id": sample.piece_id, "source": sample.source,
            "split": split, "original_split": sample.original_split, "held_out": held_out,
            "system": sample.system, "start": 0.0, "end": seconds, "duration": seconds, **paths}


def _error(sample: Sample, file: str | None, error: Exception) -> dict:
    return {"piece_id": sample.piece_id, "source": sample.source, "system": sample.system, "file": file,
            "error": type(error).__name__, "message": str(error), "traceback": None}


# ------------------------------------------------------------------ files
def inspect_file(path: Path, key: str) -> float | None:
    """A cheap check that ``path`` can serve as the row's ``key`` file (header only); the seconds of
    an audio file, else None. Raises InputNotFoundError (missing), BadInputError (a folder, an
    empty file), AudioError, MidiError or ImageError."""
    require_input_file(path, f"{key} file")
    if key in AUDIO_KEYS:
        return _audio_seconds(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise BadInputError(f"unreadable: {path} ({e.strerror or e})") from e
    if key in MIDI_KEYS and not head.startswith(b"MThd"):
        raise MidiError(f"not a MIDI file: {path}")
    if key in IMAGE_KEYS and not head.startswith(_IMAGE_MAGIC):
        raise ImageError(f"not a PNG or JPEG image: {path}")
    return None


def _audio_seconds(path: Path) -> float:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError) as e:
        raise AudioError(f"unreadable audio: {path} ({e})") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"no audio frames: {path}")
    return info.frames / info.samplerate


def place(src: Path, dest: Path, copy: bool) -> str:
    """Hard-link (or copy) ``src`` to ``dest`` under a temporary name, then rename; 'linked',
    'copied', or 'kept' when ``dest`` already is that file."""
    if _same_file(src, dest):
        return "kept"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
        try:
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dest)
            return "linked"
        except OSError:  # another file system, or no hard links allowed there: copy instead
            tmp.unlink(missing_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return "copied"


def _same_file(src: Path, dest: Path) -> bool:
    """``dest`` is ``src`` (a hard link) or a copy of it made after its last change."""
    try:
        if os.path.samefile(src, dest):
            return True
        a, b = src.stat(), dest.stat()
    except OSError:
        return False
    return a.st_size == b.st_size and b.st_mtime >= a.st_mtime


# ---------------------------------------------------------------- summary
def _summary(importer: Importer, root: Path, out_dir: Path, config: ImportConfig, samples: int,
             rows: list[dict], errors: list[dict], counts: Counter) -> dict:
    splits = Counter(r["split"] for r in rows)
    return {
        "dataset": importer.name, "source": str(root.resolve()), "output": str(out_dir),
        "copy": config.copy, "limit": config.limit, "samples": samples, "rows": len(rows),
        "dropped": samples - len(rows), "errors": len(errors),
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "held_out_rows": sum(bool(r["held_out"]) for r in rows),
        "pieces": len({r["piece_id"] for r in rows}),
        "hours": round(sum(r["duration"] for r in rows) / 3600.0, 6),
        "files": {k: counts.get(k, 0) for k in ("linked", "copied", "kept", "derived")},
    }
