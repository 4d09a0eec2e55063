"""Inputs and outputs of `umust eval`: pairing files, reading them, and printing results.

A result is one :class:`EvalResult`: per-example ``rows`` (one dict per file
pair, query, ...) and a ``summary`` over the set. It is printed as rich
tables, as JSON (``--json``), as CSV rows (``--csv``), and written to a folder
(``--out DIR``: rows.csv, rows.json, summary.json).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from umust_cli.errors import BadInputError, InputNotFoundError, NotationError
from umust_cli.eval.metrics import Notes
from umust_cli.inputs import load_lmx, load_midi
from umust_cli.io import require_file, write_json_atomic, write_text_atomic

TABLE_MAX_ROWS = 50  # longer per-example tables are left to --csv / --out


@dataclass
class EvalResult:
    task: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    definitions: dict[str, str] = field(default_factory=dict)
    columns: list[str] | None = None  # row keys shown in the table (default: all)
    missing: list[str] = field(default_factory=list)  # corpus systems without a prediction
    failed: list[dict[str, Any]] = field(default_factory=list)  # {name, files, error} per bad example
    examples: list[dict[str, Any]] = field(default_factory=list)  # per-example rows when ``rows`` is a table

    def to_dict(self) -> dict[str, Any]:
        data = {"task": self.task, "summary": self.summary, "rows": self.rows,
                "definitions": self.definitions}
        if self.missing or self.failed:
            data.update(missing=self.missing, failed=self.failed)
        if self.examples:
            data["examples"] = self.examples
        return clean_nans(data)

    def add_problems(self, missing: Sequence[str], failed: Sequence[dict[str, Any]]) -> "EvalResult":
        """Record missing predictions and failed examples (also counted in the summary)."""
        self.missing, self.failed = list(missing), list(failed)
        self.summary.update(missing=len(self.missing), failed=len(self.failed))
        return self


@dataclass
class PairSet:
    """(prediction, reference) file pairs, their example names, and the names left without a prediction."""

    pairs: list[tuple[Path, Path]]
    names: list[str]
    missing: list[str] = field(default_factory=list)

    @staticmethod
    def of(pairs: Sequence[tuple[Path, Path]]) -> "PairSet":
        """Explicit file pairs, named by the prediction's file stem."""
        return PairSet(list(pairs), [Path(p).stem for p, _ in pairs])

    def items(self) -> list[tuple[str, Path, Path]]:
        return [(n, p, r) for n, (p, r) in zip(self.names, self.pairs)]


def clean_nans(obj: Any) -> Any:
    """NaN/inf floats -> None, so that the JSON is valid."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nans(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------


def pair_paths(preds: Sequence[Path], refs: Sequence[Path] | None, ref_dir: Path | None,
               ref_suffixes: Sequence[str], by: str = "auto") -> list[tuple[Path, Path]]:
    """Pair predictions with references.

    ``ref_dir``: the reference of ``x/name.ext`` is the file ``ref_dir/name.<suffix>``.
    ``refs``: ``by="stem"`` pairs equal file stems, ``by="order"`` pairs by position,
    ``by="auto"`` pairs by stem when the two lists have the same unique stems, else by order.
    """
    preds = [require_file(p) for p in preds]
    if not preds:
        raise BadInputError("no prediction files given")
    if ref_dir is not None:
        return [(p, _find_in_dir(Path(ref_dir), p.stem, ref_suffixes)) for p in preds]
    if not refs:
        raise BadInputError("give the references with --ref FILE (repeatable) or --ref-dir DIR")
    refs = [require_file(r) for r in refs]
    if len(refs) != len(preds):
        raise BadInputError(f"{len(preds)} predictions but {len(refs)} references")
    stems_p, stems_r = [p.stem for p in preds], [r.stem for r in refs]
    same_stems = len(set(stems_p)) == len(stems_p) and set(stems_p) == set(stems_r)
    if by == "stem" and not same_stems:
        raise BadInputError("--pair stem: prediction and reference file stems differ")
    if by == "order" or (by == "auto" and not same_stems):
        return list(zip(preds, refs))
    by_stem = {r.stem: r for r in refs}
    return [(p, by_stem[p.stem]) for p in preds]


def _find_in_dir(folder: Path, stem: str, suffixes: Sequence[str]) -> Path:
    hits = [folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()]
    if not hits:
        raise InputNotFoundError(f"no reference {stem}{{{','.join(suffixes)}}} in {folder}")
    return hits[0]


def read_lmx_tokens(path: Path) -> list[str]:
    """The LMX tokens of a file: bare tokens, or the ``.lmx`` layout, whose header is checked
    (``inputs.load_lmx``: an unknown version or flavor is a NotationError) and is not tokens;
    ``---`` system separators and ``#`` comments are dropped. An empty, blank or binary file
    is a NotationError."""
    lines = [line.split("#", 1)[0] for line in load_lmx(path).splitlines()]
    if any(line.strip() == "---" for line in lines):
        first = next(i for i, line in enumerate(lines) if line.strip() == "---")
        lines = [line for line in lines[first + 1:] if line.strip() != "---"]
    return " ".join(lines).split()


def read_midi_notes(path: Path):
    """The notes of a MIDI file as metrics.Notes."""
    return Notes.from_pretty_midi(load_midi(path))


# ----------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def render_tables(result: EvalResult) -> None:
    """Print the per-example table (when short enough) and the summary table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.rows and len(result.rows) <= TABLE_MAX_ROWS:
        cols = result.columns or list(result.rows[0])
        label = "rows" if result.examples else "per example"  # a table of rows, its examples in --out
        table = Table(title=f"umust eval {result.task}: {label}")
        for c in cols:
            table.add_column(c, justify="left" if c == "name" else "right")
        for row in result.rows:
            table.add_row(*(_fmt(row.get(c)) for c in cols))
        console.print(table)
    elif result.rows:
        console.print(f"{len(result.rows)} per-example rows (see --csv or --out DIR)")
    summary = Table(title=f"umust eval {result.task}: over the set")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key, value in result.summary.items():
        summary.add_row(key, _fmt(value))
    console.print(summary)
    for key, text in result.definitions.items():
        console.print(f"{key}: {text}", style="dim", markup=False)
    print_problems(result, console)


def print_problems(result: EvalResult, console) -> None:
    """Missing predictions and failed examples, after the tables (never silently dropped)."""
    if result.missing:
        shown = ", ".join(result.missing[:10]) + (" ..." if len(result.missing) > 10 else "")
        console.print(f"{len(result.missing)} system(s) without a prediction: {shown}", style="yellow",
                      markup=False)
    for f in result.failed:
        console.print(f"failed {f['name']}: {f['error']}", style="red", markup=False)


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    return "" if isinstance(v, float) and not math.isfinite(v) else v


def write_outputs(result: EvalResult, out_dir: Path) -> None:
    """rows.csv, rows.json, summary.json (and examples.csv) in ``out_dir``, each written atomically."""
    data = result.to_dict()
    write_text_atomic(Path(out_dir) / "rows.csv", rows_to_csv(result.rows))
    if result.examples:
        write_text_atomic(Path(out_dir) / "examples.csv", rows_to_csv(result.examples))
    write_json_atomic(Path(out_dir) / "rows.json", data["rows"])
    write_json_atomic(Path(out_dir) / "summary.json",
                      {"task": result.task, "summary": data["summary"], "definitions": result.definitions,
                       "missing": result.missing, "failed": result.failed})


def emit(result: EvalResult, as_json: bool, as_csv: bool, out_dir: Path | None) -> None:
    """Write ``--out`` files, then print JSON, CSV, or the tables."""
    if out_dir is not None:
        write_outputs(result, out_dir)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    elif as_csv:
        sys.stdout.write(rows_to_csv(result.rows))
    if (as_json or as_csv) and (result.missing or result.failed):
        sys.stderr.write(f"{len(result.missing)} missing prediction(s), {len(result.failed)} failed "
                         f"example(s) (listed in the JSON / --out summary.json)\n")
    if not (as_json or as_csv):
        render_tables(result)
