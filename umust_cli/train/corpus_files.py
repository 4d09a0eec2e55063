"""The files a codec trainer reads: a corpus's train/valid rows, or every file of a plain folder."""

from __future__ import annotations

from pathlib import Path

from umust_cli.data import corpus as corpus_io
from umust_cli.errors import BadInputError


def split_files(data_dir: str | Path, keys: tuple[str, ...],
                suffixes: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """(train, valid) files of ``data_dir``.

    A corpus of `umust dataset build` (it has manifest.jsonl): the paths under ``keys`` (a path or
    a list of paths each) of its train and valid rows; test rows are never used, and held-out
    repertoire among them is refused. A plain folder: every file below it whose suffix is in
    ``suffixes``, every 50th (sorted) kept aside for validation when there are 10 or more.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise BadInputError(f"no such data folder: {root}")
    if (root / corpus_io.MANIFEST).is_file():
        train, valid = corpus_io.rows(root, ("train",)), corpus_io.rows(root, ("valid",))
        corpus_io.check_training_rows(train + valid, root)
        return _paths(root, train, keys), _paths(root, valid, keys)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    valid = files[::50] if len(files) >= 10 else []
    held = set(valid)
    return [p for p in files if p not in held], valid


def _paths(root: Path, rows: list[dict], keys: tuple[str, ...]) -> list[Path]:
    out = []
    for row in rows:
        for key in keys:
            value = row.get(key) or []
            out.extend(root / p for p in ([value] if isinstance(value, str) else value))
    return out
