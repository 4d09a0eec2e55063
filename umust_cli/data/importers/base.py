"""What every importer shares: the sample description, split mapping, and small readers.

An importer's ``find(root)`` lists the dataset's samples as :class:`Sample`
objects (paths relative to the dataset root); the driver in
:mod:`umust_cli.data.importers` checks, links and converts their files and
writes the manifest rows.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from umust_cli.errors import BadInputError, InputNotFoundError

REQUIRED, EXPECTED, OPTIONAL = "required", "expected", "optional"
# required: the sample is dropped (and listed in errors.jsonl) without it;
# expected: part of the dataset's layout: listed in errors.jsonl when missing, the row is kept without it;
# optional: taken when present, never reported.
LIST_KEYS = ("scans",)  # row keys that hold a list of paths (build.py's scanned-look copies)


@dataclass(frozen=True)
class FileRef:
    key: str  # the manifest row key: wav, mid, png, scans, musicxml, lmx, kern, labels, ...
    path: str  # relative to the dataset root, '/'-separated
    need: str = REQUIRED


@dataclass(frozen=True)
class Derived:
    key: str  # the row key of the written file (e.g. "mid")
    table: str  # the dataset file it is made from, relative to the dataset root
    convert: Callable[[Path, Path], float]  # (table, destination) -> seconds covered; raises BadInputError


@dataclass(frozen=True)
class Sample:
    piece_id: str  # unique per piece, filesystem-safe
    system: int  # index of the sample within its piece (0 for a whole recording)
    original_split: str  # the dataset's own split name, recorded in the row
    source: str  # "<dataset>:<what identifies it, composer included when known>"
    files: tuple[FileRef, ...]
    derived: tuple[Derived, ...] = ()
    meta: dict = field(default_factory=dict)  # composer, title, year, measures, ...: copied into the row


@dataclass(frozen=True)
class Importer:
    name: str
    split_map: dict  # the dataset's split name -> train / valid / test
    find: Callable[[Path], list[Sample]]
    test_only: bool = False  # every row is held-out test material (BPSD)


def slug(text: str) -> str:
    """A filesystem-safe id (the rule of umust_cli.data.sources)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "piece"


def natural_key(text: str) -> list:
    """Sort key that orders 'm-5-10' before 'm-10-15'."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def read_table(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (keys and values stripped); BadInputError when unreadable."""
    if not path.is_file():
        raise InputNotFoundError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    for row in csv.DictReader(f, delimiter=delimiter)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: cannot read the table ({e})") from e


def require_columns(table: list[dict[str, str]], columns: tuple[str, ...], path: Path) -> None:
    if table and (missing := [c for c in columns if c not in table[0]]):
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(table[0])})")


def read_list(path: Path) -> list[str]:
    """The non-blank lines of a sample list (samples.train.txt, ...)."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read the sample list ({e})") from e


def require_folder(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputNotFoundError(f"no such folder: {root} (the local copy of {what})")
    return root


def number(text: str) -> float | None:
    """``text`` as a float, or None when it is blank or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
