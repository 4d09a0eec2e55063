"""The training engine, for every trainer: N straight steps == N/2 + a kill (a real SIGKILL of a
subprocess, or SIGTERM: save and stop) + resuming to N, with bit-identical weights and log; runs
saved before a config field existed still resume; a run is refused with another config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from umust_cli import checkpoint as ckpt_io
from umust_cli.errors import CheckpointError
from umust_cli.train.engine import RunOptions, read_log

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ("image", "audio", "retrieval", "translator")
STEPS, SAVE_EVERY = 4, 2  # the kill comes after step 3: step 3 is lost and replayed


def make_data(trainer: str, root: Path) -> Path:
    """A tiny data folder for ``trainer``."""
    root.mkdir(parents=True, exist_ok=True)
    if trainer == "retrieval":
        from tests.test_retrieval import make_toy_corpus

        return make_toy_corpus(root / "corpus")
    if trainer == "translator":
        from tests.test_translator_train import make_corpus

        return make_corpus(root / "corpus")
    rng = np.random.default_rng(0)
    for i in range(3):
        if trainer == "image":
            img = np.full((80 + 20 * i, 140), 255, np.uint8)
            img[20:60:8, :] = 0
            img[30:50, rng.integers(10, 120):][:, :4] = 0
            Image.fromarray(img).save(root / f"{i}.png")
        else:
            t = np.arange(13230) / 44100
            sf.write(root / f"{i}.wav", (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), 44100)
    return root


def train(trainer: str, data: Path, out: Path, max_steps: int, on_step=None):
    """Train ``trainer`` tiny on the CPU (one thread) until ``max_steps``."""
    torch.set_num_threads(1)
    run = RunOptions(max_steps=max_steps, save_every=SAVE_EVERY, eval_items=1, device="cpu", progress=False)
    if trainer == "image":
        from umust_cli.codecs.vocab import default_vocabulary
        from umust_cli.model.rqvae import PRESETS
        from umust_cli.train.image_codec import Bucket, TrainConfig, train_image_codec

        cfg = TrainConfig(model=PRESETS["tiny"], buckets=(Bucket(0, 10 ** 6, 64, 2),), warmup_steps=2)
        return train_image_codec(data, out, cfg, run, default_vocabulary(), on_step=on_step)
    if trainer == "audio":
        from umust_cli.codecs.vocab import default_vocabulary
        from umust_cli.model.dac_codec import PRESETS
        from umust_cli.train.audio_codec import TrainConfig, train_audio_codec

        tiny = PRESETS["tiny"]
        cfg = TrainConfig(model=tiny.generator, discriminator=tiny.discriminator, batch_size=2, excerpt_seconds=0.05)
        return train_audio_codec(data, out, cfg, run, default_vocabulary(), on_step=on_step, eval_seconds=0.2)
    if trainer == "translator":
        from umust_cli.codecs.vocab import default_vocabulary
        from umust_cli.data.pairs import parse_tasks
        from umust_cli.train.translator import TrainConfig, train_translator

        cfg = TrainConfig(preset="tiny", tasks=parse_tasks("omr,midi2audio,image2audio@0:0", "i2a"),
                          batch_tokens=64, accum=2, codebook_init=False)
        return train_translator(data, out, cfg, run, default_vocabulary(), on_step=on_step)
    from umust_cli.retrieval.train import train_config, train_retrieval

    return train_retrieval(data, out, train_config("tiny", batch_size=4), run, on_step=on_step)


def child(trainer: str, data: str, out: str, stop_at: int, how: str) -> None:
    """Run in a subprocess: train towards STEPS; after step ``stop_at`` either wait to be killed
    (``how`` = "kill": the parent sends SIGKILL) or send itself SIGTERM (the engine saves and stops)."""
    marker = Path(out + ".at")

    def on_step(step: int, row: dict) -> None:
        if step == stop_at and how == "kill":
            marker.write_text(str(step))
            time.sleep(600)  # the parent kills us here, between saves
        elif step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(trainer, Path(data), Path(out), STEPS, on_step)
    print(json.dumps(result.summary(Path(out))))


def _losses(ckpt: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_log(ckpt) if "loss" in r]


def _weights(trainer: str, ckpt: Path) -> dict[str, torch.Tensor]:
    return ckpt_io.load_model(ckpt)[0]


def _run_child(trainer: str, data: Path, out: Path, how: str) -> subprocess.Popen:
    code = f"from tests.test_train_engine import child; child({trainer!r}, {str(data)!r}, {str(out)!r}, 3, {how!r})"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_kill_and_resume_equals_straight_training(trainer, tmp_path, one_torch_thread):
    data = make_data(trainer, tmp_path / "data")
    straight = train(trainer, data, tmp_path / "straight", STEPS)
    assert (straight.start_step, straight.step) == (0, STEPS)

    killed = tmp_path / "killed"
    proc = _run_child(trainer, data, killed, "kill")
    marker = Path(str(killed) + ".at")
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)  # a real kill -9 between the save at step 2 and the one at 4
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [r["step"] for r in _losses(killed)] == [1, 2, 3]  # step 3 was logged, not saved
    resumed = train(trainer, data, killed, STEPS)
    assert (resumed.start_step, resumed.step) == (SAVE_EVERY, STEPS)

    assert _losses(killed) == _losses(tmp_path / "straight")  # step 3 replayed exactly, once
    a, b = _weights(trainer, tmp_path / "straight"), _weights(trainer, killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["image"])
def test_sigterm_saves_and_stops_then_resumes(trainer, tmp_path, one_torch_thread):
    data = make_data(trainer, tmp_path / "data")
    train(trainer, data, tmp_path / "straight", STEPS)
    stopped = tmp_path / "stopped"
    out, err = _run_child(trainer, data, stopped, "term").communicate(timeout=300)
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else pytest.fail(err[-2000:])
    assert (summary["step"], summary["stopped"]) == (3, "signal")
    assert ckpt_io.read_config(stopped)["step"] == 3  # saved at the stop, between save_every steps
    assert not any("eval" in r for r in read_log(stopped))  # a prompt stop: no final evaluation
    resumed = train(trainer, data, stopped, STEPS)
    assert resumed.start_step == 3
    a, b = _weights(trainer, tmp_path / "straight"), _weights(trainer, stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _old_config(trainer: str, ckpt: Path, drop: str) -> None:
    """Make ``ckpt`` look saved before field ``drop`` of its training config existed (and, for
    retrieval, by the old trainer, which kept the config only in config.json)."""
    state = ckpt_io.load_train_state(ckpt)
    saved = json.loads(state.pop("config"))
    del saved[drop]
    if trainer == "retrieval":
        config = ckpt_io.read_config(ckpt)
        ckpt_io.save_model(ckpt, ckpt_io.read_weights(ckpt / ckpt_io.WEIGHTS), {**config, "train": saved})
    else:
        state["config"] = json.dumps(saved, sort_keys=True)
    ckpt_io.save_train_state(ckpt, state)


@pytest.mark.parametrize("trainer, field", [("image", "blur_weight"), ("audio", "loudness_db"),
                                            ("retrieval", "reverb_augment_s")])
def test_runs_saved_before_a_field_existed_resume(trainer, field, tmp_path, one_torch_thread):
    data = make_data(trainer, tmp_path / "data")
    train(trainer, data, tmp_path / "ck", 1)
    _old_config(trainer, tmp_path / "ck", field)
    assert train(trainer, data, tmp_path / "ck", 2).start_step == 1


def test_resuming_with_another_config_is_refused(tmp_path, one_torch_thread):
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.model.rqvae import PRESETS
    from umust_cli.train.image_codec import TrainConfig, train_image_codec

    data = make_data("image", tmp_path / "data")
    train("image", data, tmp_path / "ck", 1)
    other = TrainConfig(model=PRESETS["tiny"], seed=5)
    with pytest.raises(CheckpointError, match=r"another training config \(differs in: buckets, seed, warmup_steps\)"):
        train_image_codec(data, tmp_path / "ck", other, RunOptions(max_steps=2, progress=False, device="cpu"),
                          default_vocabulary())
