"""MusicNet (Thickstun et al., ICLR 2017) and MusicNet_EM (Maman & Bermano, ICML 2022).

Expected layout (the Zenodo release 5120004: ``musicnet.tar.gz`` unpacked,
with ``musicnet_metadata.csv`` beside its folders)::

    PATH/musicnet_metadata.csv          id, composer, composition, movement, ensemble, source,
                                        transcriber, catalog_name, seconds
    PATH/train_data/<id>.wav            44.1 kHz recordings (320 train, 10 test)
    PATH/train_labels/<id>.csv          start_time, end_time, instrument, note, start_beat,
                                        end_beat, note_value (times in samples at 44.1 kHz;
                                        instrument a 1-based General MIDI program; note a MIDI pitch)
    PATH/test_data/<id>.wav, PATH/test_labels/<id>.csv
    PATH/musicnet_midis/<Composer>/<id>_<name>.mid   score MIDI, not aligned (optional)

(a copy whose split folders lie one level down, in ``PATH/musicnet/``, is read too).

MusicNet_EM adds the EM-aligned labels as MIDI files (``musicnet_em.zip``,
unpacked beside the folders above; the zip may hold a second ``musicnet_em``
level)::

    PATH/musicnet_em/<id>.mid

Splits: the folder of the recording, train / test (MusicNet has no validation
split). Sources: the Zenodo record (file list), label readers that parse
``start_time,end_time,instrument,note,start_beat,end_beat,note_value`` as
sample indices at 44100 Hz, a metadata excerpt ``id,composer,composition,
movement,ensemble,...``; benadar293/benadar293.github.io (README: the labels
are MIDI files aligned with the audio) and loaders that pair
``musicnet_em/<id>.mid`` with ``{train,test}_data/<id>.wav``.

One row per recording (system 0): ``wav``; for MusicNet ``labels`` (the CSV)
and ``mid`` made from it (``derived/``), ``score_mid`` when present; for
MusicNet_EM ``mid`` = the aligned MIDI and ``labels`` when present. The
metadata CSV is required: its composer decides the held-out rule (Beethoven ->
test split).
"""

from __future__ import annotations

from pathlib import Path

from umust_cli.data.importers.base import (OPTIONAL, Derived, FileRef, Importer, Sample, number,
                                           read_table, require_columns, require_folder)
from umust_cli.data.importers.notes import musicnet_labels_to_midi
from umust_cli.errors import InputNotFoundError

METADATA = "musicnet_metadata.csv"
COLUMNS = ("id", "composer", "composition", "movement", "ensemble")
FOLDERS = {"train": ("train_data", "train_labels"), "test": ("test_data", "test_labels")}
SPLITS = {"train": "train", "test": "test"}


def find_musicnet(root: Path) -> list[Sample]:
    return _samples(root, em=None)


def find_musicnet_em(root: Path) -> list[Sample]:
    return _samples(root, em=_em_folder(require_folder(root, "MusicNet")))


def _samples(root: Path, em: str | None) -> list[Sample]:
    root = require_folder(root, "MusicNet")
    metadata = _metadata(root)
    prefix = _data_prefix(root)
    found = {}
    for split, folders in FOLDERS.items():
        for folder in folders:
            ext = ".wav" if folder.endswith("_data") else ".csv"
            found.update({p.stem: split for p in sorted((root / prefix / folder).glob(f"*{ext}"))})
    scores = {p.name.split("_", 1)[0]: p.relative_to(root).as_posix()
              for p in sorted((root / "musicnet_midis").rglob("*.mid"))}
    ids = sorted(set(metadata) | set(found), key=lambda t: (len(t), t))
    return [_sample(prefix, t, found.get(t, "train"), metadata.get(t, {}), scores.get(t), em) for t in ids]


def _metadata(root: Path) -> dict[str, dict]:
    path = root / METADATA
    if not path.is_file():
        raise InputNotFoundError(f"{root} holds no {METADATA} (it names each recording's composer, "
                                 "which the held-out rule needs)")
    table = read_table(path)
    require_columns(table, COLUMNS, path)
    return {row["id"]: row for row in table}


def _data_prefix(root: Path) -> str:
    """'' when the split folders are in ``root``, 'musicnet/' when one level down (the Kaggle copy)."""
    for prefix in ("", "musicnet/"):
        if any((root / f"{prefix}{folder}").is_dir() for pair in FOLDERS.values() for folder in pair):
            return prefix
    raise InputNotFoundError(f"{root} holds no train_data/ or test_data/ folder")


def _em_folder(root: Path) -> str:
    for rel in ("musicnet_em", "musicnet_em/musicnet_em"):
        if any((root / rel).glob("*.mid")):
            return rel
    raise InputNotFoundError(f"{root} holds no musicnet_em/<id>.mid (unpack musicnet_em.zip beside "
                             "train_data/ and test_data/)")


def _sample(prefix: str, track: str, split: str, meta: dict, score_midi: str | None, em: str | None) -> Sample:
    data, labels = (f"{prefix}{folder}" for folder in FOLDERS[split])
    wav, csv = f"{data}/{track}.wav", f"{labels}/{track}.csv"
    if em is None:
        files = [FileRef("wav", wav), FileRef("labels", csv)]
        if score_midi is not None:
            files.append(FileRef("score_mid", score_midi, OPTIONAL))
        derived = (Derived("mid", csv, musicnet_labels_to_midi),)
    else:
        files = [FileRef("wav", wav), FileRef("mid", f"{em}/{track}.mid"), FileRef("labels", csv, OPTIONAL)]
        derived = ()
    info = {k: meta[k] for k in ("composer", "composition", "movement", "ensemble") if meta.get(k)}
    if (seconds := number(meta.get("seconds", ""))) is not None:
        info["listed_duration"] = seconds
    described = " - ".join(info[k] for k in ("composer", "composition", "movement") if k in info)
    name = "musicnet_em" if em else "musicnet"
    return Sample(piece_id=f"{name}-{track}", system=0, original_split=split,
                  source=f"{name}:{track} {described}".strip(), files=tuple(files), derived=derived, meta=info)


MUSICNET = Importer("musicnet", SPLITS, find_musicnet)
MUSICNET_EM = Importer("musicnet_em", SPLITS, find_musicnet_em)
