"""OLiMPiC 1.0 (Mayer et al., ICDAR 2024): pianoform systems of OpenScore Lieder as image + LMX + MusicXML.

Expected layout (the unpacked ``olimpic-1.0-synthetic`` or ``olimpic-1.0-scanned``)::

    PATH/samples.train.txt, samples.dev.txt, samples.test.txt   one sample a line: samples/<score>/p<page>-s<system>
    PATH/samples/<score>/p<page>-s<system>.png                   the system image
    PATH/samples/<score>/p<page>-s<system>.lmx                   Linearized MusicXML (bare tokens)
    PATH/samples/<score>/p<page>-s<system>.musicxml              the system as MusicXML

(the scanned release has only the dev and test lists). Splits train / dev /
test -> train / valid / test. Sources: ufal/olimpic-icdar24,
``app/datasets/synthetic_02/build_test_train_indexes.py`` (writes
``samples.{train,test}.txt`` with the relative path of each
``samples/<score_id>/*.png`` without suffix) and the training code that loads
``OlimpicDataset(root, "samples.train.txt")`` / ``"samples.dev.txt"``; the
LMX format of OMR-Research/lmx (linearized-musicxml, used by umust's notation codec).

One row per system: ``png``, ``lmx``, ``musicxml``; ``system`` numbers the
systems of a score in page order (``page`` and ``system_on_page`` keep the
names). The scores carry no composer in the layout: the held-out rule reads
the composer record of each system's MusicXML when it has one.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from umust_cli.data.importers.base import FileRef, Importer, Sample, read_list, require_folder, slug
from umust_cli.errors import InputNotFoundError

LISTS = {"train": "samples.train.txt", "dev": "samples.dev.txt", "test": "samples.test.txt"}
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
_NAME = re.compile(r"^p(\d+)-s(\d+)$")


def find(root: Path) -> list[Sample]:
    root = require_folder(root, "OLiMPiC")
    present = {split: root / rel for split, rel in LISTS.items() if (root / rel).is_file()}
    if not present:
        raise InputNotFoundError(f"{root} holds no OLiMPiC sample lists ({', '.join(LISTS.values())})")
    listed: dict[str, str] = {}
    for split, path in present.items():
        for line in read_list(path):
            base = line.replace("\\", "/").removesuffix(".png")
            listed.setdefault(base, split)
    by_score: dict[str, list[str]] = {}
    for base in listed:
        by_score.setdefault(PurePosixPath(base).parent.name, []).append(base)
    samples = []
    for score, bases in sorted(by_score.items()):
        for index, base in enumerate(sorted(bases, key=lambda b: (*_page_system(b), b))):
            page, system = _page_system(base)
            samples.append(Sample(
                piece_id=slug(f"olimpic-{score}"), system=index, original_split=listed[base],
                source=f"olimpic:{base}",
                files=(FileRef("png", base + ".png"), FileRef("lmx", base + ".lmx"),
                       FileRef("musicxml", base + ".musicxml")),
                meta={"score": score, "page": page, "system_on_page": system}))
    return samples


def _page_system(base: str) -> tuple[int, int]:
    match = _NAME.match(PurePosixPath(base).name)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


IMPORTER = Importer("olimpic", SPLITS, find)
