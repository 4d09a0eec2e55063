"""GrandStaff (Ríos-Vila et al., 2023): single piano systems as kern + engraved image.

Expected layout: one folder per piece, three levels below the dataset folder,
with per system (``<variant>`` is ``original`` or a transposition name)::

    <composer>/<collection>/<piece>/<variant>_m-<first>-<last>.krn      (.bekrn / .ekrn in later releases)
    <composer>/<collection>/<piece>/<variant>_m-<first>-<last>.jpg      the engraved system
    <composer>/<collection>/<piece>/<variant>_m-<first>-<last>_distorted.jpg   a camera-like copy

and the splits as one of:

* ``PATH/samples.{train,dev,test}.txt`` (GrandStaff-LMX, the extended release of
  the OLiMPiC authors): lines ``<composer>/<collection>/<piece>/original_m-0-5``
  relative to PATH, with ``.lmx`` and ``.musicxml`` beside each ``.krn`` (the images
  and kern may instead lie under ``PATH/grandstaff/``, the original release unpacked
  inside, as one GrandStaff-LMX loader expects: both places are looked at);
* ``PATH/partitions_grandstaff/types/{train,val,test}.txt`` (the Sheet Music
  Transformer releases): lines ``grandstaff_dataset/<composer>/.../<name>.ekrn``
  relative to PATH (the test list holds the originals, train/val the transpositions).

Sources: ufal/olimpic-icdar24, ``app/datasets/grandstaff/build.py`` (globs
``**/*.krn``, writes ``.lmx``/``.musicxml`` beside them; example sample
``beethoven/piano-sonatas/sonata07-3/original_m-20-25``) and
``app/datasets/grandstaff/__main__.py`` (packs ``samples.{train,dev,test}.txt``
with the composer folders beethoven, chopin, hummel, joplin, mozart, scarlatti-d);
a GrandStaff-LMX loader that opens ``<base>.jpg``, ``<base>_distorted.jpg`` and
``<base>.lmx``; the Sheet Music Transformer's partition script
(``partitions_grandstaff/types``, ``grandstaff_dataset/<author>/<dir>/<dir>/<file>``).

One row per system: ``png`` (the .jpg: the key of the system image in every
corpus), ``scans`` ([the distorted copy], like build's scanned-look copies),
``kern`` and, in GrandStaff-LMX, ``lmx`` and ``musicxml``. The ``beethoven``
folder is held-out repertoire: its rows go to the test split.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from umust_cli.data.importers.base import (EXPECTED, OPTIONAL, FileRef, Importer, Sample, natural_key, read_list,
                                           require_folder, slug)
from umust_cli.errors import InputNotFoundError

LMX_LISTS = {"train": "samples.train.txt", "dev": "samples.dev.txt", "test": "samples.test.txt"}
SMT_LISTS = {"train": "partitions_grandstaff/types/train.txt", "val": "partitions_grandstaff/types/val.txt",
             "test": "partitions_grandstaff/types/test.txt"}
SPLITS = {"train": "train", "dev": "valid", "val": "valid", "test": "test"}
KERN_SUFFIXES = (".krn", ".bekrn", ".ekrn")
ORIGINAL = "grandstaff"  # where a GrandStaff-LMX user may keep the original release's images
_STRIP = (*KERN_SUFFIXES, ".jpg", ".png", ".lmx", ".musicxml")
_MEASURES = re.compile(r"_m-(\d+)-(\d+)$")


def find(root: Path) -> list[Sample]:
    root = require_folder(root, "GrandStaff")
    lists, lmx = _split_lists(root)
    listed: dict[str, str] = {}  # sample base -> original split (first list wins)
    for split, rel in lists.items():
        if (root / rel).is_file():
            for line in read_list(root / rel):
                listed.setdefault(_base(line), split)
    by_piece: dict[str, list[str]] = {}
    for base in listed:
        by_piece.setdefault(str(PurePosixPath(base).parent), []).append(base)
    samples = []
    for piece, bases in sorted(by_piece.items()):
        for index, base in enumerate(sorted(bases, key=lambda b: natural_key(PurePosixPath(b).name))):
            samples.append(_sample(root, piece, index, base, listed[base], lmx))
    return samples


def _split_lists(root: Path) -> tuple[dict[str, str], bool]:
    """The split lists found in ``root`` and whether they are GrandStaff-LMX's."""
    for lists, lmx in ((LMX_LISTS, True), (SMT_LISTS, False)):
        if any((root / rel).is_file() for rel in lists.values()):
            return lists, lmx
    raise InputNotFoundError(f"{root} holds no GrandStaff split lists (samples.train.txt ... or "
                             "partitions_grandstaff/types/train.txt ...)")


def _base(line: str) -> str:
    """A list line without its suffix: the sample's path stem relative to the dataset root."""
    line = line.replace("\\", "/").lstrip("./")
    for suffix in _STRIP:
        if line.endswith(suffix):
            return line[: -len(suffix)]
    return line


def _sample(root: Path, piece: str, index: int, base: str, split: str, lmx: bool) -> Sample:
    name = PurePosixPath(base).name
    parts = PurePosixPath(piece).parts
    if parts and parts[0] == "grandstaff_dataset":
        parts = parts[1:]
    kerns = [_locate(root, base + suffix) for suffix in KERN_SUFFIXES]
    kern = next((rel for rel in kerns if (root / rel).is_file()), kerns[0])
    text_need = EXPECTED if lmx else OPTIONAL
    files = (FileRef("png", _locate(root, base + ".jpg")), FileRef("kern", kern),
             FileRef("scans", _locate(root, base + "_distorted.jpg"), EXPECTED),
             FileRef("lmx", base + ".lmx", text_need), FileRef("musicxml", base + ".musicxml", text_need))
    meta = {"composer": parts[0] if parts else "", "sample": name, "variant": name.split("_m-")[0]}
    if match := _MEASURES.search(name):
        meta["measure_range"] = [int(match.group(1)), int(match.group(2))]  # as in the file name
    return Sample(piece_id=slug("grandstaff-" + "-".join(parts)), system=index, original_split=split,
                  source=f"grandstaff:{base}", files=files, meta=meta)


def _locate(root: Path, rel: str) -> str:
    """``rel``, or ``grandstaff/<rel>`` when only there: GrandStaff-LMX unpacked over a folder that holds
    the original release in ``grandstaff/``."""
    if not (root / rel).is_file() and (root / ORIGINAL / rel).is_file():
        return f"{ORIGINAL}/{rel}"
    return rel


IMPORTER = Importer("grandstaff", SPLITS, find)
