"""Checkpoint files of the image codec: round trips, damage, vocabulary checks, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from umust_cli.codecs.image import ImageCodec
from umust_cli.codecs.vocab import Vocabulary, default_vocabulary
from umust_cli.errors import CheckpointError, VocabularyMismatchError
from umust_cli.io import write_json_atomic
from umust_cli.model.rqvae import PRESETS, RQVAE
from umust_cli import checkpoint as ckpt_io
from umust_cli.train.engine import RunOptions, read_log
from umust_cli.train.image_codec import PAPER_BUCKETS, TrainConfig, train_image_codec


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _staff(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.full((h, w), 255, np.uint8)
    top = h // 2 - 16
    for k in range(5):
        a[top + 8 * k, :] = 0
    for x in rng.integers(4, w - 4, 8):
        a[top + 10:top + 14, x - 2:x + 2] = 20
    return a


@pytest.fixture
def corpus(tmp_path):
    """Four PNGs in two height buckets (70-130 and 130-260 px)."""
    d = tmp_path / "pngs"
    d.mkdir()
    for i, h in enumerate((80, 100, 150, 200)):
        Image.fromarray(_staff(h, 160, i)).save(d / f"sys{i}.png")
    return d


# 1/64 of the paper's batches: 4 crops of 64 px or 2 crops of 128 px per step.
CFG = TrainConfig(model=PRESETS["tiny"], buckets=PAPER_BUCKETS, batch_scale=1 / 64, lr=1e-3,
                  warmup_steps=2)


def _losses(ckpt_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(ckpt_dir) if "loss" in r]


def _weights(ckpt_dir) -> dict[str, torch.Tensor]:
    state, _ = ckpt_io.load_model(ckpt_dir, default_vocabulary())
    return state


def test_model_round_trip_is_bit_exact(tmp_path, vocab):
    torch.manual_seed(3)
    model = RQVAE(PRESETS["tiny"])
    for buf in model.buffers():
        if buf.is_floating_point():
            buf.copy_(torch.randn_like(buf))
    config = {"kind": "test", "step": 7, "model": PRESETS["tiny"].to_dict()}
    ckpt_io.save_model(tmp_path / "ck", model.state_dict(), config, vocab)
    state, loaded_config = ckpt_io.load_model(tmp_path / "ck", vocab)
    assert loaded_config == config
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    assert not any(p.stat().st_size == 0 for p in (tmp_path / "ck").iterdir())
    assert not list((tmp_path / "ck").glob(".*tmp*")), "temporary files left behind"


def test_shipped_default_fits_16_mib_as_fp16(tmp_path, vocab):
    model = RQVAE(PRESETS["small"])
    ckpt_io.save_model(tmp_path, model.state_dict(), {"kind": "x"}, vocab, dtype=torch.float16)
    size = (tmp_path / ckpt_io.WEIGHTS).stat().st_size
    assert size <= 16 * 2 ** 20, f"{size / 2 ** 20:.1f} MiB"
    state, _ = ckpt_io.load_model(tmp_path, vocab)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.fixture
def trained(tmp_path, corpus, vocab):
    out = tmp_path / "ck"
    train_image_codec(corpus, out, CFG, RunOptions(max_steps=3, save_every=100, progress=False), vocab)
    return out


def test_wrong_vocabulary_is_refused(trained):
    other = Vocabulary(notation=("a", "b"), midi=("c",))
    with pytest.raises(VocabularyMismatchError, match="another vocabulary"):
        ImageCodec.load(trained, vocab=other)


def test_truncated_weights_are_a_clear_error(trained):
    path = trained / ckpt_io.WEIGHTS
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ImageCodec.load(trained)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ImageCodec.load(trained)


def test_missing_or_damaged_files_are_checkpoint_errors(trained, tmp_path, corpus, vocab):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        ImageCodec.load(tmp_path / "nowhere")
    state = trained / ckpt_io.TRAIN_STATE
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="resume state"):
        train_image_codec(corpus, trained, CFG, RunOptions(max_steps=5, progress=False), vocab)
    (trained / ckpt_io.VOCABULARY).unlink()  # checked only when the folder has one
    assert ImageCodec.load(trained).vocab_size == 4096


def test_resume_with_another_config_is_refused(trained, corpus, vocab):
    other = TrainConfig(model=CFG.model, buckets=CFG.buckets, batch_scale=CFG.batch_scale, lr=5e-4,
                        warmup_steps=CFG.warmup_steps)
    with pytest.raises(CheckpointError, match="differs in: lr"):
        train_image_codec(corpus, trained, other, RunOptions(max_steps=5, progress=False), vocab)


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_kill_continues_the_same_loss_curve(tmp_path, corpus, vocab):
    steps = 8
    straight = tmp_path / "straight"
    train_image_codec(corpus, straight, CFG, RunOptions(max_steps=steps, save_every=4, progress=False),
                      vocab)

    def kill_at_6(step, row):
        if step == 6:
            raise _Killed  # no save: steps 5 and 6 are lost, as with SIGKILL

    killed = tmp_path / "killed"
    with pytest.raises(_Killed):
        train_image_codec(corpus, killed, CFG, RunOptions(max_steps=steps, save_every=4, progress=False),
                          vocab, on_step=kill_at_6)
    assert [s for s, _ in _losses(killed)] == [1, 2, 3, 4, 5, 6]
    with open(killed / ckpt_io.TRAIN_LOG, "a", encoding="utf-8") as log:
        log.write('{"step": 7, "lo')  # a row cut short by the kill
    result = train_image_codec(corpus, killed, CFG,
                               RunOptions(max_steps=steps, save_every=4, progress=False), vocab)
    assert result.start_step == 4 and result.step == steps

    halves = tmp_path / "halves"  # a clean stop at N/2 (max-steps) and a second run
    for n in (steps // 2, steps):
        train_image_codec(corpus, halves, CFG, RunOptions(max_steps=n, save_every=100, progress=False),
                          vocab)

    reference = _losses(straight)
    assert [s for s, _ in reference] == list(range(1, steps + 1))
    assert _losses(killed) == reference
    assert _losses(halves) == reference
    w = _weights(straight)
    for other in (killed, halves):
        assert all(torch.equal(w[k], v) for k, v in _weights(other).items())


def test_weights_of_another_architecture_are_one_line(tmp_path, vocab):
    from umust_cli.model.rqvae import RQVAEConfig

    small = RQVAE(PRESETS["tiny"])
    config = {"kind": "test", "model": PRESETS["tiny"].to_dict()}
    ckpt_io.save_model(tmp_path, small.state_dict(), config, vocab)
    wider = {**PRESETS["tiny"].to_dict(), "base_channels": 2 * PRESETS["tiny"].base_channels}
    write_json_atomic(tmp_path / ckpt_io.CONFIG, {**config, "model": wider})
    with pytest.raises(CheckpointError) as err:
        ckpt_io.load_module(tmp_path, "test", lambda m: RQVAE(RQVAEConfig.from_dict(m)), vocab)
    message = str(err.value)
    assert "\n" not in message and "of another shape (first:" in message and len(message) < 400
    with pytest.raises(CheckpointError, match="is not a image checkpoint"):
        ckpt_io.load_module(tmp_path, "image", lambda m: RQVAE(RQVAEConfig.from_dict(m)), vocab)


def test_device_names(monkeypatch):
    from umust_cli.device import resolve_device
    from umust_cli.errors import BadInputError

    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cuda0", ""):
        with pytest.raises(BadInputError, match="unknown device"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(BadInputError, match="no CUDA device"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(BadInputError, match="has 1 CUDA device"):
        resolve_device("cuda:1")
