"""MAESTRO (Hawthorne et al., ICLR 2019): piano recordings with aligned performance MIDI.

Expected layout (the unpacked ``maestro-v3.0.0.zip``; v2.0.0 has the same table)::

    PATH/maestro-v3.0.0.csv          canonical_composer, canonical_title, split, year,
                                     midi_filename, audio_filename, duration
    PATH/<year>/<name>.midi          midi_filename, relative to PATH
    PATH/<year>/<name>.wav           audio_filename, relative to PATH

``split`` is train / validation / test (-> train / valid / test); ``duration``
is the recording's length in seconds. (``maestro-v3.0.0.json`` holds the same
table column-wise; the CSV is read.) Sources: the dataset page
https://magenta.tensorflow.org/datasets/maestro (file list and columns) and
public transcription loaders that read the CSV in this column order, with
split values ``train``/``validation``/``test`` and paths joined to the root.

One row per recording: ``wav`` and ``mid`` (system 0, start 0, end = the
recording's length). The held-out rule reads the composer and title.
"""

from __future__ import annotations

from pathlib import Path

from umust_cli.data.importers.base import (FileRef, Importer, Sample, number, read_table, require_columns,
                                           require_folder, slug)
from umust_cli.errors import InputNotFoundError

COLUMNS = ("canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration")
SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def find(root: Path) -> list[Sample]:
    root = require_folder(root, "MAESTRO")
    table_path = metadata_csv(root)
    table = read_table(table_path)
    require_columns(table, COLUMNS, table_path)
    samples = []
    for row in table:
        midi, audio = row["midi_filename"], row["audio_filename"]
        composer, title = row["canonical_composer"], row["canonical_title"]
        meta = {"composer": composer, "title": title, "year": row["year"]}
        if (seconds := number(row["duration"])) is not None:
            meta["listed_duration"] = seconds
        samples.append(Sample(
            piece_id=slug("maestro-" + Path(midi).with_suffix("").as_posix().replace("/", "-")),
            system=0, original_split=row["split"], source=f"maestro:{composer} - {title} ({midi})",
            files=(FileRef("wav", audio), FileRef("mid", midi)), meta=meta))
    return samples


def metadata_csv(root: Path) -> Path:
    """maestro-v3.0.0.csv, else the newest maestro-v*.csv in ``root``."""
    found = sorted(root.glob("maestro-v*.csv"))
    preferred = root / "maestro-v3.0.0.csv"
    if preferred.is_file():
        return preferred
    if not found:
        raise InputNotFoundError(f"{root} holds no maestro-v3.0.0.csv (is it the unpacked MAESTRO folder?)")
    return found[-1]


IMPORTER = Importer("maestro", SPLITS, find)
