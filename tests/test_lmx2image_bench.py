"""bench/lmx2image.py: both notation -> image routes read back by the shipped OMR model, in the
layout `umust eval omr --data` scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import lmx2image
from umust_cli.cli.main import app

LMX = ["measure key:fifths:0 time beats:4 beat-type:4 clef:G2 C4 quarter D4 quarter E4 quarter F4 quarter",
       "measure key:fifths:1 time beats:3 beat-type:4 clef:G2 G4 half B4 quarter"]


def _corpus(root: Path) -> Path:
    rows = []
    for i, text in enumerate(LMX):
        rel = f"pieces/p/systems/{i:03d}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{rel}.lmx").write_text(text + "\n")
        rows.append({"piece_id": "p", "system": i, "split": "valid", "lmx": f"{rel}.lmx", "png": f"{rel}.png",
                     "scans": []})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_both_routes_are_read_back_and_scored_by_eval_omr(tmp_path, tiny):
    corpus, work = _corpus(tmp_path / "corpus"), tmp_path / "work"
    assert lmx2image.main(["--data", str(corpus), "--split", "valid", "--model", str(tiny),
                           "--out", str(work)]) == 0
    for route in ("render", "direct"):
        report = json.loads((work / route / "times.json").read_text())
        assert report["systems"] == 2 and not report["failed"]
        assert sorted(p.name for p in (work / route / "png" / "p").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (work / route / "omr" / "p").iterdir()) == ["000.lmx", "001.lmx"]
    # a random tiny model draws no staff: the reader reads nothing, which scores as all deletions
    direct = json.loads((work / "direct" / "times.json").read_text())
    assert len(direct["unread"]) == 2
    assert direct["judge"]["own_ser"] == direct["judge"]["wrong_system_ser"] == 1.0
    result = CliRunner().invoke(app, ["eval", "omr", str(work / "direct" / "omr"), "--data", str(corpus),
                                      "--split", "valid", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["SER"] == 1.0 and summary["empty_predictions"] == 2 and summary["files"] == 2
    # verovio's engraving has staves: the reader reads both (what it reads is another matter for
    # one-staff toy systems: the shipped model writes piano systems)
    result = CliRunner().invoke(app, ["eval", "omr", str(work / "render" / "omr"), "--data", str(corpus),
                                      "--split", "valid", "--json"])
    summary = json.loads(result.stdout)["summary"]
    assert summary["files"] == 2 and summary["empty_predictions"] == 0
    assert not json.loads((work / "render" / "times.json").read_text())["unread"]


def test_the_wrong_system_judge_prefers_a_reading_of_its_own_system(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    rows = [{"piece_id": "p", "system": i, "lmx": f"pieces/p/systems/{i:03d}.lmx", "root": corpus} for i in (0, 1)]
    omr = tmp_path / "omr" / "p"
    omr.mkdir(parents=True)
    for i, text in enumerate(LMX):                        # each reading is its own system's LMX
        (omr / f"{i:03d}.lmx").write_text(text + "\n")
    judge = lmx2image.wrong_system_judge(rows, tmp_path / "omr", resamples=200)
    assert judge["systems"] == 2 and judge["own_ser"] == 0.0 and judge["wrong_system_ser"] > 0.5
    assert judge["difference"] == -judge["wrong_system_ser"] and judge["difference_95"][1] < 0


def test_the_direct_route_needs_a_model(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    with pytest.raises(SystemExit, match="--model"):
        lmx2image.main(["--data", str(corpus), "--routes", "direct", "--out", str(tmp_path / "w")])
