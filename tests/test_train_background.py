"""Background training (`umust train background translator`), `umust train status` and
`umust train promote`: tiny preset, the tiny tokenized corpus of test_translator_train, CPU.
Nothing is written into the package's weights folder: promotion goes to --to / a temp folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from umust_cli import checkpoint as ckpt_io
from umust_cli import registry
from umust_cli.cli.main import app
from umust_cli.cli.train import _translator_config
from umust_cli.cli.train import app as train_app
from umust_cli.errors import BadInputError, CheckpointError
from umust_cli.train import background
from umust_cli.train.background import BackgroundRequest, plan_translator
from tests.test_translator_train import make_corpus

runner = CliRunner()
TINY = ("--preset", "tiny", "--tasks", "omr", "--no-codebook-init", "--precision", "fp32", "--warmup-steps", "5",
        "--decay-steps", "1000", "--eval-items", "1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("bgcorpus") / "c", variants=False)


def _parse(argv: list[str]) -> dict:
    import typer

    return typer.main.get_command(train_app).commands["translator"].make_context("translator", argv).params


def _wait(run_dir: Path, seconds: float = 900.0) -> None:
    """Until the background trainer of ``run_dir`` has exited (a few seconds on an idle machine)."""
    deadline = time.monotonic() + seconds
    while background.running_pid(run_dir) is not None:
        assert time.monotonic() < deadline, (run_dir / background.LOG).read_text()
        time.sleep(0.5)


def test_saved_config_becomes_the_same_trainer_options():
    from umust_cli.data.pairs import parse_tasks
    from umust_cli.train.translator import TrainConfig

    cfg = TrainConfig(direction="a2i", preset="tiny", image_layout="grid", column_norm=True,
                      tasks=parse_tasks("transcription@10:20*0.5,midi>notation", "a2i"), batch_tokens=123,
                      accum=3, lr=4.5e-4, warmup_steps=7, decay_steps=99, precision="fp32", codebook_init=False,
                      scans=False, best_metric="loss", seed=5, token_dropout=0.2, crops=True, guide=0.5, ctc=0.3)
    flags = background.config_flags(json.loads(json.dumps(cfg.to_dict())))
    params = _parse(["--data", "C", "-o", "R", "--max-steps", "1", *flags])
    assert _translator_config(params, 1) == cfg


@pytest.mark.slow
def test_background_run_resumes_with_its_own_options_and_is_promoted_only_when_better(corpus, tmp_path):
    run, dest = tmp_path / "runs" / "omr", tmp_path / "weights" / "translator-i2a"
    first = runner.invoke(app, ["train", "background", "translator", str(run), "--data", str(corpus),
                                "--threads", "1", "--budget-minutes", "5", "--json", "--",
                                *TINY, "--max-steps", "2", "--eval-every", "2"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["action"] == "fresh"
    _wait(run)
    st = background.run_status(run)
    assert st["saved_step"] == 2 and st["sessions"] == 1 and st["running_pid"] is None
    assert len(st["session_wall_s"]) == 1 and st["session_wall_s"][0] > 0 and st["cpu_hours"] is not None
    assert [e["step"] for e in st["evals"]] == [2] and st["best"]["metric"] == "SER"

    # resumed with the first start's options: each option once (they repeat the saved config's)
    argv = background.plan_translator(BackgroundRequest(run)).argv
    for flag in ("--preset", "--tasks", "--no-codebook-init", "--precision", "--warmup-steps", "--decay-steps"):
        assert argv.count(flag) == 1, (flag, argv)
    assert argv[argv.index("--tasks") + 1] == "omr" and "--max-steps" in argv
    changed = runner.invoke(app, ["train", "background", "translator", str(run), "--", "--lr", "0.1"])
    assert changed.exit_code == 2 and "differs in: lr" in changed.output
    again = runner.invoke(app, ["train", "background", "translator", str(run), "--threads", "2", "--",
                                "--max-steps", "4", "--eval-every", "2", "--eval-items", "1"])
    assert again.exit_code == 0, again.output
    assert "resume:" in again.output and "--tasks image>notation@0:0*1.0" in again.output
    _wait(run)
    st = background.run_status(run)
    assert st["saved_step"] == 4 and st["sessions"] == 2 and len(st["evals"]) == 2
    assert [s["start_step"] for s in background.sessions(run)] == [0, 2] and len(st["session_wall_s"]) == 2
    one, two = st["session_wall_s"]
    assert st["cpu_hours"] == round((one + 2 * two) / 3600, 3)
    assert "=== " in (run / background.LOG).read_text()

    shown = runner.invoke(app, ["train", "status", str(run)])
    assert shown.exit_code == 0 and "saved at step 4" in shown.output and "best: step" in shown.output
    curve = background.run_curve(run)
    assert curve["steps"] == [1, 2, 3, 4] and [e["step"] for e in curve["evals"]] == [2, 4]
    drawn = runner.invoke(app, ["train", "curves", str(run), "-o", str(tmp_path / "curves.png")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = runner.invoke(app, ["train", "promote", str(run), "--to", str(dest), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["previous"] is None
    weights = ckpt_io.read_weights(dest / ckpt_io.WEIGHTS)
    from safetensors.torch import load_file
    assert all(t.dtype == torch.float16 for t in load_file(str(dest / ckpt_io.WEIGHTS)).values()
               if t.is_floating_point()) and weights
    assert (dest / ckpt_io.VOCABULARY).is_file()
    card = (dest / background.CARD).read_text()
    assert "## Training" in card and "## Known failure modes" in card and "Beethoven" in card
    assert "```sh" in card and str(tmp_path) not in card
    refused = runner.invoke(app, ["train", "promote", str(run), "--to", str(dest)])
    assert refused.exit_code == 2 and "not better" in refused.output


def test_sessions_are_found_in_the_log_and_set_the_save_interval(tmp_path):
    rows = [{"step": 1, "loss": 3.0, "time_s": 2.0}, {"step": 2, "loss": 2.9, "time_s": 4.0},
            {"step": 2, "eval": {"loss": 3.1}},
            {"step": 3, "loss": 2.8, "time_s": 5.0}, {"step": 4, "loss": 2.7, "time_s": 6.0},  # resumed at 2
            {"step": 5, "loss": 2.6, "time_s": 1.0}, {"step": 6, "loss": 2.5, "time_s": 2.0}]  # time restarts
    spans = background.segments(rows, {0, 2})
    assert [[r["step"] for r in s] for s in spans] == [[1, 2], [3, 4], [5, 6]]
    assert len(background.segments(rows)) == 2          # without the recorded starts: only the clock
    (tmp_path / ckpt_io.TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert background.save_every_for(tmp_path, 5.0) == 300   # 2 steps in 2 s, for 5 minutes
    assert background.save_every_for(tmp_path / "new", 5.0) == background.FIRST_SAVE_EVERY


def test_running_pid_is_the_live_trainer_only(tmp_path):
    import os
    import subprocess

    proc = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / background.PID).write_text(f"{proc.pid}\n")
        assert background.running_pid(tmp_path) == proc.pid
        os.utime(tmp_path / background.PID, (0, 0))     # an id written long before this process began:
        assert background.running_pid(tmp_path) is None  # the id was reused
    finally:
        proc.kill()
        proc.wait()
    (tmp_path / background.PID).write_text(f"{proc.pid}\n")
    assert background.running_pid(tmp_path) is None


def _fake_checkpoint(folder: Path, step: int, ser: float | None, systems: int = 8) -> Path:
    from umust_cli.data.pairs import parse_tasks
    from umust_cli.train.translator import TrainConfig

    train = TrainConfig(preset="tiny", tasks=parse_tasks("omr", "i2a"), precision="fp32").to_dict()
    config = {"kind": "translator", "step": step, "direction": "i2a", "train": json.loads(json.dumps(train)),
              "val": {"SER": ser, "ser_systems": systems} if ser is not None else {}}
    ckpt_io.save_model(folder, {"w": torch.full((3,), float(step))}, config)
    return folder


def test_promote_compares_with_the_shipped_metric(tmp_path):
    dest = tmp_path / "weights" / "translator-i2a"
    worse, better = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    _fake_checkpoint(worse / "best", 10, 0.8)
    _fake_checkpoint(better / "best", 20, 0.6)
    background.promote(better, dest)
    (dest / background.CARD).write_text("# card\n\nhand-written\n")
    with pytest.raises(BadInputError, match=r"0\.8 .*not better than .*0\.6"):
        background.promote(worse, dest)
    assert ckpt_io.read_config(dest)["step"] == 20
    other = _fake_checkpoint(tmp_path / "runs" / "c" / "best", 30, 0.1, systems=24).parent
    with pytest.raises(BadInputError, match="24 valid systems"):
        background.promote(other, dest)
    best = _fake_checkpoint(tmp_path / "runs" / "d" / "best", 40, 0.5).parent
    background.promote(best, dest)
    card = (dest / background.CARD).read_text()
    assert card.startswith("# card\n\nhand-written") and card.count(background.CARD_BEGIN) == 1
    background.promote(_fake_checkpoint(tmp_path / "runs" / "e" / "best", 50, 0.4).parent, dest)
    assert (dest / background.CARD).read_text().count(background.CARD_BEGIN) == 1
    unscored = _fake_checkpoint(tmp_path / "runs" / "f", 60, None)
    with pytest.raises(BadInputError, match="no validation SER"):
        background.promote(unscored, dest)


def test_promote_can_use_an_eval_omr_result_of_the_valid_split(tmp_path):
    dest = tmp_path / "weights" / "translator-i2a"
    run = _fake_checkpoint(tmp_path / "runs" / "s", 70, None)
    result = {"task": "omr", "summary": {"files": 48, "SER": 0.7, "missing": 0, "failed": 0, "split": "valid",
                                         "limit": 48}}
    out = background.promote(run, dest, result)
    assert out["value"] == 0.7 and out["step"] == 70
    assert ckpt_io.read_config(dest)["val"] == {"SER": 0.7, "scored_systems": 48, "scored_by": "umust eval omr",
                                                 "limit": 48}
    worse = {"task": "omr", "summary": {**result["summary"], "SER": 0.75}}
    with pytest.raises(BadInputError, match=r"0\.75 .*not better than .*0\.7"):
        background.promote(_fake_checkpoint(tmp_path / "runs" / "t", 80, None), dest, worse)
    for bad in ({"task": "omr", "summary": {**result["summary"], "split": "test"}},      # never the test split
                {"task": "amt", "summary": result["summary"]},
                {"task": "omr", "summary": {**result["summary"], "missing": 3}}):
        with pytest.raises(BadInputError, match="--scored"):
            background.promote(run, dest, bad)
    assert ckpt_io.read_config(dest)["step"] == 70


def test_promote_can_use_the_readings_onset_f1_against_the_shipped_models(tmp_path):
    """`--scored` with an `eval amt --dtw` result (higher is better); `--against` scores the shipped
    model the same way when its weights record a SER."""
    dest = tmp_path / "weights" / "translator-i2a"
    _fake_checkpoint(dest, 10, 0.65, systems=48)
    reading = {"task": "amt", "summary": {"files": 48, "onset_F1": 0.47, "missing": 0, "failed": 0,
                                          "split": "valid", "limit": 48, "dtw": True, "onset_tolerance_ms": 100.0}}
    shipped = {"task": "amt", "summary": {**reading["summary"], "onset_F1": 0.40}}
    run = _fake_checkpoint(tmp_path / "runs" / "k", 70, 0.69, systems=48)
    with pytest.raises(BadInputError, match="records no valid reading_F1"):
        background.promote(run, dest, reading)
    for bad in ({"task": "amt", "summary": {**reading["summary"], "dtw": False}},
                {"task": "amt", "summary": {**reading["summary"], "split": "test"}}):
        with pytest.raises(BadInputError, match="--scored"):
            background.promote(run, dest, bad, shipped)
    tighter = {"task": "amt", "summary": {**shipped["summary"], "onset_tolerance_ms": 50.0}}
    with pytest.raises(BadInputError, match="onset tolerances"):
        background.promote(run, dest, reading, tighter)
    with pytest.raises(BadInputError, match=r"0\.4 .*not better than .*0\.47"):
        background.promote(run, dest, shipped, reading)
    _fake_checkpoint(run / "best", 20, 0.6, systems=48)          # the run's keep-best (SER) is an earlier step
    out = background.promote(run, dest, reading, shipped, last=True)
    assert out["metric"] == "reading_F1" and out["value"] == 0.47 and out["previous"] == 0.40
    assert out["step"] == 70 and ckpt_io.read_config(dest)["step"] == 70
    card = (dest / background.CARD).read_text()
    assert "scored with `umust eval amt`" in card
    assert "umust train promote RUNS/k --last --scored VALID.json --against SHIPPED.json --to" in card
    val = ckpt_io.read_config(dest)["val"]
    assert val["metric"] == "reading_F1" and val["reading_F1"] == 0.47 and val["onset_tolerance_ms"] == 100.0
    # the shipped weights now record the reading: the next candidate needs no --against, and must beat 0.47
    with pytest.raises(BadInputError, match=r"0\.45 .*not better than .*0\.47"):
        background.promote(_fake_checkpoint(tmp_path / "runs" / "m", 80, 0.6, systems=48), dest,
                           {"task": "amt", "summary": {**reading["summary"], "onset_F1": 0.45}})
    assert ckpt_io.read_config(dest)["step"] == 70


def test_pitch_readers_of_other_classes_are_compared_only_on_the_same_predictions(tmp_path):
    def reader(folder: Path, target: str, rate: float) -> Path:
        config = {"kind": "umust-pitch-reader", "step": 100, "model": {"ctc_target": target}, "train": {},
                  "val": {"staff_error_rate/engraved": rate, "staff_error_rate/scanned": rate}}
        ckpt_io.save_model(folder, {"w": torch.zeros(2)}, config)
        return folder

    dest = reader(tmp_path / "weights" / "pitch-reader", "marked", 0.12)
    notated = reader(tmp_path / "runs" / "n" / "best", "notated", 0.10).parent
    with pytest.raises(BadInputError, match="notated classes .* marked ones"):
        background.promote(notated, dest)
    assert ckpt_io.read_config(dest)["model"]["ctc_target"] == "marked"
    reading = {"task": "amt", "summary": {"files": 48, "onset_F1": 0.80, "missing": 0, "failed": 0, "split": "valid",
                                          "limit": 48, "dtw": True, "onset_tolerance_ms": 100.0}}
    shipped = {"task": "amt", "summary": {**reading["summary"], "onset_F1": 0.78}}
    out = background.promote(notated, dest, reading, shipped)      # the same predictions' figure: compared
    assert out["metric"] == "reading_F1" and ckpt_io.read_config(dest)["model"]["ctc_target"] == "notated"
    better = reader(tmp_path / "runs" / "m" / "best", "marked", 0.05).parent
    with pytest.raises(BadInputError, match="records no valid staff_error_rate"):
        background.promote(better, dest)                           # the shipped weights record the reading now


def test_a_new_run_starts_from_the_shipped_weights_of_its_kind(tmp_path, monkeypatch, corpus):
    weights = tmp_path / "weights"
    _fake_checkpoint(weights / "translator-i2a", 100, 0.5)
    monkeypatch.delitem(registry.MODELS, "translator-i2a", raising=False)
    monkeypatch.delitem(registry.DEFAULTS, "translator-i2a", raising=False)
    plan = plan_translator(BackgroundRequest(tmp_path / "run", data=corpus, threads=1), weights)
    assert plan.action == "fresh" and "--init" not in plan.argv     # while none ships
    monkeypatch.setitem(registry.MODELS, "translator-i2a", {"small": "translator-i2a"})
    monkeypatch.setitem(registry.DEFAULTS, "translator-i2a", "small")
    plan = plan_translator(BackgroundRequest(tmp_path / "run", data=corpus, threads=1), weights)
    assert plan.action == "init" and plan.init == weights / "translator-i2a"
    assert plan.argv[plan.argv.index("--preset") + 1] == "tiny"
    assert plan.argv[plan.argv.index("--save-every") + 1] == str(background.FIRST_SAVE_EVERY)
    own = plan_translator(BackgroundRequest(tmp_path / "run", data=corpus, extras=("--init", "X")), weights)
    assert own.action == "init" and own.init is None


def test_init_takes_a_registry_name(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not ship yet"):
        registry.resolve("translator-a2i", "small")
    assert registry.folder_name("translator-a2i", "small") == "translator-a2i"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(registry.MODELS, "translator-i2a", {"small": "translator-i2a"})
    (tmp_path / "translator-i2a").mkdir()
    assert registry.resolve("translator-i2a", "small") == tmp_path / "translator-i2a"


def test_bad_starts_are_refused_before_anything_runs(tmp_path, corpus):
    run = tmp_path / "run"
    for flag, value in (("--threads", "2"), ("--direction", "a2i")):
        owned = runner.invoke(app, ["train", "background", "translator", str(run), "--data", str(corpus), "--",
                                    flag, value])
        assert owned.exit_code == 2 and f"give {flag} to the background command" in owned.output
    no_data = runner.invoke(app, ["train", "background", "translator", str(run)])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    typo = runner.invoke(app, ["train", "background", "translator", str(run), "--data", str(corpus), "--",
                               "--no-such-option"])
    assert typo.exit_code == 2 and "no-such-option" in typo.output
    init = runner.invoke(app, ["train", "background", "translator", str(run), "--data", str(corpus),
                               "--direction", "a2i", "--", "--init", "small"])
    assert init.exit_code == 2 and "does not ship yet" in init.output
    assert not run.exists()
    dry = runner.invoke(app, ["train", "background", "translator", str(run), "--data", str(corpus), "--dry-run",
                              "--", *TINY])
    assert dry.exit_code == 0 and dry.output.startswith("umust train translator") and not run.exists()
    status = runner.invoke(app, ["train", "status", str(tmp_path)])
    assert status.exit_code == 2 and "no training run" in status.output


def test_a_learning_curve_keeps_the_last_row_of_a_resumed_step_and_is_drawn(tmp_path):
    from umust_cli.eval.plots import smooth

    run = tmp_path / "omr-ft"
    run.mkdir()
    rows = [{"step": 0, "init": "/somewhere/omr-ctc-1", "init_step": 10457},
            {"step": 1, "loss": 3.0, "time_s": 1.0}, {"step": 2, "loss": 2.0, "time_s": 2.0},
            {"step": 3, "loss": 9.0, "time_s": 3.0},                    # lost: the run resumed from 2
            {"step": 3, "loss": 1.5, "time_s": 1.0}, {"step": 3, "eval": {"loss": 1.7, "SER": 0.8}}]
    (run / ckpt_io.TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = background.run_curve(run)
    assert curve["steps"] == [1, 2, 3] and curve["loss"] == [3.0, 2.0, 1.5]
    assert curve["evals"] == [{"step": 3, "loss": 1.7, "SER": 0.8}] and curve["init"] == "omr-ctc-1 @ 10457"
    assert smooth([3.0, 2.0, 1.5, 0.5], 2).tolist() == [3.0, 2.5, 1.75, 1.0]
    out = runner.invoke(app, ["train", "curves", str(run), str(run), "-o", str(tmp_path / "c.png")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "c.png").stat().st_size > 5000
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (empty, tmp_path / "missing"):
        refused = runner.invoke(app, ["train", "curves", str(bad), "-o", str(tmp_path / "x.png")])
        assert refused.exit_code == 2 and not (tmp_path / "x.png").exists()


def test_curves_plot_the_readers_validation_figures(tmp_path):
    """A reader run's validation rows (onset F1, staff error rates, key accuracies) are the
    figures its panel plots; counts and losses are not."""
    from umust_cli.eval.plots import validation_figures

    evals = [{"step": 1000, "onset_precision": 0.99, "onset_f1": 0.48},
             {"step": 2000, "onset_f1": 0.77, "staff_error_rate/engraved": 0.2, "ser_systems": 24, "loss": 1.0},
             {"step": 3000, "key_accuracy/scan0": 0.95, "SER": 0.7}]
    assert validation_figures(evals) == {"onset_f1": [(1000, 0.48), (2000, 0.77)],
                                         "staff_error_rate/engraved": [(2000, 0.2)],
                                         "key_accuracy/scan0": [(3000, 0.95)], "SER": [(3000, 0.7)]}
    run = tmp_path / "nr"
    run.mkdir()
    rows = [{"step": s, "loss": 1.0 / s, "time_s": float(s)} for s in range(1, 2001)]
    rows += [{"step": e["step"], "eval": {k: v for k, v in e.items() if k != "step"}} for e in evals[:2]]
    (run / ckpt_io.TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = runner.invoke(app, ["train", "curves", str(run), "-o", str(tmp_path / "nr.png")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "nr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_readers_saved_config_becomes_the_same_trainer_options(tmp_path):
    """reader_flags: the non-default fields of a saved pitch-reader config (model and train, a
    switched-off scans as --no-scans) are the options that rebuild it; plan_reader resumes with
    them, passes an option given again once, and starts a new run from the shipped weights."""
    import typer

    from umust_cli.cli.train import reader_flags

    saved = {"kind": "umust-pitch-reader", "model": {"channels": 8, "hidden": 192, "ctc_target": "written"},
             "train": {"lr": 0.0005, "decay_steps": 9000, "scans": False, "batch_size": 8, "seed": 0}}
    flags = reader_flags("pitch-reader", saved)
    assert sorted(flags) == sorted([("--channels", "8"), ("--ctc-target", "written"), ("--lr", "0.0005"),
                                    ("--decay-steps", "9000"), ("--no-scans",)])
    argv = ["--data", "C", "-o", "R", *[w for f in flags for w in f]]
    params = typer.main.get_command(train_app).commands["pitch-reader"].make_context("pitch-reader", argv).params
    assert (params["channels"], params["target"], params["lr"], params["decay_steps"], params["no_scans"]) == (
        8, "written", 0.0005, 9000, True)
    run = tmp_path / "run"
    run.mkdir()
    ckpt_io.write_json_atomic(run / ckpt_io.CONFIG, {**saved, "step": 40})
    (run / ckpt_io.TRAIN_STATE).write_bytes(b"state")
    req = BackgroundRequest(run, tmp_path, budget_minutes=9, threads=1, extras=("--lr", "0.0001", "--eval-every", "5"))
    plan = background.plan_reader("pitch-reader", req, reader_flags)
    assert plan.action == "resume" and plan.argv.count("--lr") == 1 and "0.0001" in plan.argv
    assert {"--no-scans", "--ctc-target", "--decay-steps"} <= set(plan.argv) and plan.session["start_step"] == 40
    weights = tmp_path / "weights"
    (weights / "pitch-reader").mkdir(parents=True)
    ckpt_io.write_json_atomic(weights / "pitch-reader" / ckpt_io.CONFIG, {**saved, "step": 11000})
    new = background.plan_reader("pitch-reader", BackgroundRequest(tmp_path / "new", tmp_path,
                                                                   extras=("--lr", "0.0002")), reader_flags, weights)
    assert new.action == "init" and new.init == weights / "pitch-reader"
    assert {"--ctc-target", "--no-scans"} <= set(new.argv) and new.argv.count("--lr") == 1 and "0.0002" in new.argv
    fresh = background.plan_reader("pitch-reader", BackgroundRequest(tmp_path / "new", tmp_path,
                                                                     extras=("--hidden", "64")), reader_flags, weights)
    assert fresh.action == "fresh" and "--init" not in fresh.argv
    with pytest.raises(BadInputError, match="unknown reader"):
        background.plan_reader("tempo-reader", req, reader_flags)


def test_a_rhythm_reader_run_is_a_rhythmic_pitch_reader_run(tmp_path):
    """`train background rhythm-reader` plans `train pitch-reader --ctc-target rhythmic`: from the
    shipped rhythm reader with its options, fresh with the target added, and refuses another target."""
    from umust_cli.cli.train import reader_flags

    saved = {"kind": "umust-pitch-reader", "step": 3782,
             "model": {"channels": 16, "hidden": 192, "ctc_target": "rhythmic", "frames": 4},
             "train": {"lr": 0.0004, "decay_steps": 4000}}
    weights = tmp_path / "weights"
    (weights / "rhythm-reader").mkdir(parents=True)
    ckpt_io.write_json_atomic(weights / "rhythm-reader" / ckpt_io.CONFIG, saved)
    new = background.plan_reader("rhythm-reader", BackgroundRequest(tmp_path / "new", tmp_path,
                                                                    extras=("--lr", "0.0002")), reader_flags, weights)
    assert new.argv[:2] == ("train", "pitch-reader") and new.init == weights / "rhythm-reader"
    assert new.argv.count("--ctc-target") == 1 and new.argv[new.argv.index("--ctc-target") + 1] == "rhythmic"
    assert new.argv[new.argv.index("--frames") + 1] == "4" and new.session["kind"] == "rhythm-reader"
    fresh = background.plan_reader("rhythm-reader", BackgroundRequest(tmp_path / "fresh", tmp_path,
                                                                      extras=("--hidden", "64")), reader_flags, weights)
    assert fresh.action == "fresh" and fresh.argv[fresh.argv.index("--ctc-target") + 1] == "rhythmic"
    with pytest.raises(BadInputError, match="trains with --ctc-target rhythmic or beamed"):
        background.plan_reader("rhythm-reader", BackgroundRequest(tmp_path / "bad", tmp_path,
                                                                  extras=("--ctc-target", "notated")), reader_flags)
    # shipped weights of the beamed classes: a new run reads them too
    saved["model"]["ctc_target"] = "beamed"
    ckpt_io.write_json_atomic(weights / "rhythm-reader" / ckpt_io.CONFIG, saved)
    beamed = background.plan_reader("rhythm-reader", BackgroundRequest(tmp_path / "b", tmp_path), reader_flags, weights)
    assert beamed.argv[beamed.argv.index("--ctc-target") + 1] == "beamed" and beamed.argv.count("--ctc-target") == 1
