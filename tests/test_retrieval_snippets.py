"""Snippet level of retrieval: aligned snippet pairs, snippet pre-training (-> RNN-FT / RNN-FZ) and
the snippet-voting baseline (BL); tiny model on the toy corpus of test_retrieval, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data.align import SystemAlignment, alignment_path, write_alignment
from umust_cli.retrieval.embed import load_retrieval_model
from umust_cli.retrieval.features import FeatureConfig
from umust_cli.retrieval.snippets import snippet_pair, vote_distances, window
from umust_cli.retrieval.train import RunOptions, train_config, train_retrieval

from .test_retrieval import PAIRS, make_toy_corpus

runner = CliRunner()
SNIPPET = train_config("tiny", batch_size=PAIRS, lr=3e-3, margin=0.5, stage="snippet")


def add_toy_alignment(corpus: Path) -> Path:
    """Each toy system's bars (columns 4, 4 + spacing, ...) as its onsets, spread over its 3 s."""
    for row in (json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()):
        i = int(row["piece_id"][4:])
        x = np.arange(4, 192, 6 + 3 * i, dtype=float)
        write_alignment(corpus / alignment_path(row["png"]),
                        SystemAlignment(width=192, height=48, x=list(x), score_s=list(x / 192 * 3.0)))
    return corpus


@pytest.fixture(scope="module")
def snippet_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("snippets")
    corpus = add_toy_alignment(make_toy_corpus(root / "corpus"))
    ckpt = root / "snippet"
    train_retrieval(corpus, ckpt, SNIPPET, RunOptions(max_steps=60, save_every=100, log_every=1, progress=False),
                    val_data=corpus)
    return corpus, ckpt


def test_window_stretches_and_pads_with_zeros():
    x = np.arange(10, dtype=np.float32)[None, :]  # column j holds j
    np.testing.assert_allclose(window(x, 5.0, 4, 4), [[3, 4, 5, 6]])  # columns 3..6 centred at 5.0
    np.testing.assert_allclose(window(x, 0.0, 4, 4), [[0, 0, 0, 1]])  # columns -2, -1 are outside: zero
    np.testing.assert_allclose(window(x, 5.0, 2, 4), [[3.75, 4.25, 4.75, 5.25]])  # 2 columns stretched to 4


def test_snippet_pair_is_centred_on_the_aligned_onset():
    cfg = FeatureConfig(sheet_height=8, sheet_window=6, snippet_frames=4)
    strip = np.tile(np.arange(40, dtype=np.uint8), (8, 1))  # column j holds ink j
    spec = np.tile(np.arange(30, dtype=np.float32), (3, 1))  # frame j holds j (the sound at j / 20 s)
    sheet, audio = snippet_pair(strip, spec, (20.0, 0.5), cfg)  # x = 20 px, t = 0.5 s = frame 10
    assert sheet.dtype == np.uint8 and sheet.shape == (8, 6)
    np.testing.assert_array_equal(sheet[0], [17, 18, 19, 20, 21, 22])
    np.testing.assert_allclose(audio[0], [8, 9, 10, 11])
    sheet, _ = snippet_pair(strip, spec, (1.0, 0.5), cfg)  # at the left edge: zero padding
    np.testing.assert_array_equal(sheet[0], [0, 0, 0, 1, 2, 3])
    _, slow = snippet_pair(strip, spec, (20.0, 0.5), cfg, stretch=2.0)  # half speed: half the frames
    np.testing.assert_allclose(slow[0], [8.75, 9.25, 9.75, 10.25])


def test_votes_rank_first_and_distance_breaks_ties():
    e = np.eye(3, dtype=np.float32)
    candidates = [e[[0]], e[[1]], e[[2]]]
    query = [e[[1, 1, 2]], e[[0, 2]]]  # two votes for candidate 1; one each for 0 and 2
    keys = vote_distances(query, candidates)
    assert keys.shape == (2, 3)
    assert np.argsort(keys[0]).tolist() == [1, 2, 0]
    assert keys[1, 0] == keys[1, 2] < keys[1, 1]  # a tie of votes and of mean distance


def test_snippet_stage_learns_aligned_pairs(snippet_run):
    corpus, ckpt = snippet_run
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-6:-1]])
    assert last < 0.5 * first
    config = json.loads((ckpt / "config.json").read_text())
    assert config["train"]["stage"] == "snippet" and config["val"]["n"] == PAIRS
    assert config["val"]["A2S_MRR"] > 0.6 and config["val"]["S2A_MRR"] > 0.6  # chance: 0.41


def test_fine_tuned_and_frozen_passage_runs_start_from_the_snippet_cnns(snippet_run, tmp_path):
    corpus, ckpt = snippet_run
    pre = load_retrieval_model(ckpt)[0].state_dict()
    run = RunOptions(max_steps=3, save_every=100, progress=False)
    train_retrieval(corpus, tmp_path / "fz", train_config("tiny", batch_size=4, freeze_cnn=True), run, init=ckpt)
    train_retrieval(corpus, tmp_path / "ft", train_config("tiny", batch_size=4), run, init=ckpt)
    fz, ft = load_retrieval_model(tmp_path / "fz")[0].state_dict(), load_retrieval_model(tmp_path / "ft")[0].state_dict()
    cnn = [k for k in pre if ".cnn." in k and pre[k].is_floating_point()]
    assert cnn and all(torch.equal(fz[k], pre[k]) for k in cnn)  # RNN-FZ: CNNs (and BN statistics) kept
    assert any(not torch.equal(ft[k], pre[k]) for k in cnn)  # RNN-FT: CNNs trained further
    assert any(not torch.equal(fz[k], pre[k]) for k in pre if k.startswith("audio.rnn"))


def test_cli_baseline_votes_with_the_snippet_model(snippet_run, tmp_path):
    corpus, ckpt = snippet_run
    args = ["eval", "retrieval", "--data", str(corpus), "--split", "train", "--model", str(ckpt), "--json"]
    out = runner.invoke(app, args + ["--method", "bl"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)["summary"]
    assert summary["method"] == "bl" and summary["n"] == PAIRS
    assert summary["A2S_MRR"] > 0.6 and summary["S2A_MRR"] > 0.6
    out = runner.invoke(app, args + ["--method", "vote"])
    assert out.exit_code == 2 and "unknown retrieval method" in out.output


def test_snippet_stage_without_alignment_is_a_clear_error(tmp_path):
    corpus = make_toy_corpus(tmp_path / "corpus")
    out = runner.invoke(app, ["train", "retrieval", "--data", str(corpus), "-o", str(tmp_path / "ck"),
                              "--config", "tiny", "--stage", "snippet", "--max-steps", "1"])
    assert out.exit_code == 2 and "umust dataset align" in out.output
    assert not (tmp_path / "ck" / "model.safetensors").exists()
    out = runner.invoke(app, ["train", "retrieval", "--data", str(corpus), "-o", str(tmp_path / "ck"),
                              "--config", "tiny", "--stage", "frames", "--max-steps", "1"])
    assert out.exit_code == 2 and "unknown --stage" in out.output
