"""Retrieval on real scans: realscan rows (piece-audio spans) are scored, optionally trained on, and the
scanned-look experiment's plumbing (bench/scan_look_retrieval.py) runs end to end (tiny model, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import typer
from PIL import Image
from typer.testing import CliRunner

from umust_cli.retrieval.data import cache_path, corpus_rows, passage_groups, row_features
from umust_cli.retrieval.features import load_audio, log_spectrogram
from umust_cli.retrieval.train import RetrievalTrainConfig, RunOptions, features_for, train_config, train_retrieval

SR = 22050
SPLITS = ["train", "train", "train", "train", "valid", "valid", "test", "test"]


def _image(i: int) -> np.ndarray:
    img = np.full((48, 192), 255, dtype=np.uint8)
    img[10:38:7, :] = 120
    img[6:42, 4::6 + 3 * i] = 0
    return img


def _audio(i: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220.0 * 2 ** (i / 3) * t)).astype(np.float32)


def make_corpus(root: Path) -> Path:
    """One piece per entry of SPLITS: a 6 s piece audio, one engraved system (its first 3 s) and one
    real scan (a darker copy) paired with the piece audio's last 3 s, in realscans.jsonl."""
    rows, scans = [], []
    for i, split in enumerate(SPLITS):
        rel = f"pieces/toy-{i}"
        (root / rel / "systems").mkdir(parents=True)
        (root / rel / "realscans").mkdir()
        audio = np.concatenate([_audio(i, 3.0), _audio(i + 9, 3.0)])
        sf.write(root / rel / "audio.wav", audio, SR)
        sf.write(root / rel / "systems/000.wav", audio[: 3 * SR], SR)
        Image.fromarray(_image(i)).save(root / rel / "systems/000.png")
        Image.fromarray((_image(i) * 0.6).astype(np.uint8)).save(root / rel / "realscans/000.png")
        rows.append({"piece_id": f"toy-{i}", "system": 0, "split": split, "soundfont": "fluidr3",
                     "png": f"{rel}/systems/000.png", "wav": f"{rel}/systems/000.wav", "scans": [],
                     "scan_seeds": [100 + i], "piece_audio": f"{rel}/audio.wav", "start": 0.0, "end": 3.0})
        scans.append({"piece_id": f"toy-{i}", "system": 0, "split": f"realscan_{split}",
                      "png": f"{rel}/realscans/000.png", "piece_audio": f"{rel}/audio.wav",
                      "start": 3.0, "end": 6.0, "measures": [5, 8]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "realscans.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scans), encoding="utf-8")
    return root


TINY = train_config("tiny", batch_size=4, lr=3e-3, margin=0.5)


def _cli_app() -> typer.Typer:
    from umust_cli.cli.main import app

    return app


def test_a_real_scan_row_uses_its_span_of_the_piece_audio(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    scan = corpus_rows(corpus, ["realscan_valid"])[0]
    fcfg = features_for(TINY.model)
    _, spec = row_features(scan, fcfg)
    want = log_spectrogram(load_audio(corpus / scan["piece_audio"], fcfg.sample_rate, 3.0, 6.0), fcfg)
    assert np.allclose(spec.astype(np.float32), want, atol=1e-2)
    other = dict(scan, start=0.0, end=3.0)  # another span of the same file is another cache entry
    assert cache_path(tmp_path, scan, fcfg) != cache_path(tmp_path, other, fcfg)
    engraved = corpus_rows(corpus, ["valid"])[0]
    assert len(passage_groups([engraved, scan])) == 2  # system 0 of the scan is not system 0 engraved


def test_eval_retrieval_scores_a_realscan_split_and_train_can_add_real_scans(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    app, runner = _cli_app(), CliRunner()
    args = ["train", "retrieval", "--data", str(corpus), "--config", "tiny", "--batch-size", "4",
            "--max-steps", "2", "--quiet", "--json"]
    assert runner.invoke(app, args + ["-o", str(tmp_path / "plain")]).exit_code == 0
    out = runner.invoke(app, args + ["-o", str(tmp_path / "scans"), "--realscans"])
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "plain/cache").glob("*.npz"))) == 4  # the 4 engraved train systems
    assert len(list((tmp_path / "scans/cache").glob("*.npz"))) == 8  # ... and their 4 real scans
    saved = json.loads((tmp_path / "scans/config.json").read_text())["train"]
    assert saved["realscans"] is True
    assert json.loads((tmp_path / "plain/config.json").read_text())["train"]["realscans"] is False
    old = {k: v for k, v in saved.items() if k != "realscans"}  # a run saved before the option
    assert RetrievalTrainConfig.from_dict(old).realscans is False
    out = runner.invoke(app, ["eval", "retrieval", "--data", str(corpus), "--split", "realscan_valid",
                              "--model", str(tmp_path / "scans"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)["summary"]
    assert summary["n"] == 2 and summary["splits"] == ["realscan_valid"]
    out = runner.invoke(app, args + ["-o", str(tmp_path / "x"), "--realscans", "--stage", "snippet"])
    assert out.exit_code == 2


def test_scan_look_bench_trains_every_arm_alike_and_scores_real_scans(tmp_path):
    from bench import scan_look_retrieval as bench

    corpus = make_corpus(tmp_path / "c")
    init = tmp_path / "init"
    train_retrieval(corpus, init, TINY, RunOptions(max_steps=1, save_every=1, progress=False))
    argv = ["--data", str(corpus), "--work", str(tmp_path / "w"), "--pieces", "3", "--steps", "2",
            "--batch-size", "3", "--config", "tiny", "--init", str(init), "--valid-limit", "2",
            "--test", "print"]
    out = bench.main(argv)
    assert len(out["arms"]["pieces"]) == 3 and out["train_systems"] == 3
    classic = Image.open(tmp_path / "w/looks/classic/toy-0/000.png")
    printed = Image.open(tmp_path / "w/looks/print/toy-0/000.png")
    assert classic.size == printed.size == (192, 48) and classic.tobytes() != printed.tobytes()
    assert {a: out["arms"][a]["steps"] for a in bench.ARMS} == {"init": 0, "none": 2, "classic": 2, "print": 2}
    cases = {r["case"]: r for r in out["results"]}
    assert {cases[f"{a}, realscan_valid"]["n"] for a in ("init",) + bench.ARMS} == {2}
    assert cases["print, realscan_test"]["n"] == 2 and "none, realscan_test" not in cases
    groups = corpus_rows(tmp_path / "w/engraved", ["train"]) + corpus_rows(tmp_path / "w/print", ["train"])
    assert len(passage_groups(groups)) == 3  # a copy is another image of its system, not a negative
    assert bench.main(argv)["arms"]["print"]["seconds"] == out["arms"]["print"]["seconds"]  # resumed
