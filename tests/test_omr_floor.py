"""bench/omr_floor.py's comparisons: model vs the constant, and model vs another model (--against)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import omr_floor
from umust_cli.eval.metrics import SerCounts

REF = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 C4 quarter D4 quarter E4 quarter F4 quarter".split()


def _write(folder: Path, piece: str, system: int, tokens: list[str]) -> None:
    path = folder / piece / f"{system:03d}.lmx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("version: 1.0\nflavor: core\n---\n" + " ".join(tokens) + "\n")


def test_paired_difference_and_interval_of_two_sets_of_counts():
    base = [SerCounts(4, 10), SerCounts(2, 10)]
    new = [SerCounts(2, 10), SerCounts(1, 10)]
    out = omr_floor.paired(base, new, resamples=200, seed=0)
    assert out["difference"] == pytest.approx(-3 / 20)
    lo, hi = out["difference_95"]
    assert -0.2 - 1e-9 <= lo <= out["difference"] <= hi <= -0.1 + 1e-9     # every resample is better
    assert out["p_not_better"] == 0.0
    assert omr_floor.paired(base, base, 50, 0)["difference_95"] == [0.0, 0.0]


def test_compare_against_another_model_pairs_the_systems_both_predicted(tmp_path):
    rows = [({"piece_id": "p", "system": i}, REF) for i in range(3)]
    new, old = tmp_path / "new", tmp_path / "old"
    for i in range(3):
        _write(new, "p", i, REF[:-1])                     # one deletion each
    _write(old, "p", 0, REF[:-3])                         # three deletions; systems 1, 2 not predicted
    out = omr_floor.compare(new, rows, ["measure"], resamples=100, seed=0, against=old)
    assert out["systems"] == 3 and out["model_ser"] == pytest.approx(3 / 42, abs=1e-4)
    assert out["against"]["systems"] == 1 and out["against"]["other_ser"] == pytest.approx(3 / 14, abs=1e-4)
    assert out["against"]["difference"] == pytest.approx(-2 / 14, abs=1e-4)
    assert "against" not in omr_floor.compare(new, rows, ["measure"], 100, 0)
