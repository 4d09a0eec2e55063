"""The audio codec: framing, flattening, shifts, audio checks, metrics, checkpoints, training, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from umust_cli.codecs.audio import (HOP, SHIFTS, AudioCodec, chunk_spans, flatten, load_audio,
                                    shift_variants, unflatten)
from umust_cli.codecs.base import Codec
from umust_cli.codecs.vocab import Vocabulary, codebook_names
from umust_cli.errors import AudioError, CheckpointError, HeldOutRepertoireError, InputNotFoundError, \
    VocabularyMismatchError
from umust_cli.eval.audio_metrics import mel_distance, reconstruction_scores, si_sdr
from umust_cli.model.dac_codec import PRESETS, build_generator
from umust_cli import checkpoint as ckpt_io
from umust_cli.train.audio_codec import (DISCRIMINATOR, AudioStore, TrainConfig, _read_discriminator,
                                         build_parts, export_codec, find_audio, make_batch, save_checkpoint,
                                         train_audio_codec)
from umust_cli.train.engine import STAGING, RunOptions, finish_interrupted_save, read_log
from umust_cli.cli.main import app as umust_app

SR = 44100
runner = CliRunner()
TINY = PRESETS["tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def codec() -> AudioCodec:
    torch.manual_seed(0)
    return AudioCodec(build_generator(TINY.generator))


def tone(seconds: float = 0.5, freq: float = 440.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-2 * t)).astype(np.float32)


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(model=TINY.generator, discriminator=TINY.discriminator, batch_size=2,
                       excerpt_seconds=0.05, **kw)


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    for i, f in enumerate((220.0, 330.0, 440.0)):
        sf.write(d / f"{i}.wav", tone(0.6, f), SR)
    sf.write(d / "low_rate.wav", tone(0.6, 550.0, sr=22050), 22050)
    return d


# ---------------------------------------------------------------------------
# Framing and token layout
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("samples", [1, 511, 512, 513, 3000])
def test_encode_decode_shapes_and_ranges(codec, samples):
    x = tone(1.0)[:samples] + np.float32(0.05)  # non-silent even at one sample
    codes = codec.encode_codes(x)
    frames = math.ceil(samples / HOP)
    assert codes.shape == (4, frames) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 1024
    ids = codec.encode(x)
    assert len(ids) == 4 * frames and all(0 <= i < codec.vocab_size for i in ids)
    assert [i // 1024 for i in ids[:4]] == [0, 1, 2, 3]
    audio = codec.decode(ids)
    assert audio.shape == (frames * HOP,) and audio.dtype == np.float32 and np.isfinite(audio).all()


def test_codec_protocol_and_names(codec, vocab):
    assert isinstance(codec, Codec) and codec.modality == "audio"
    assert codec.vocab_size == 4096
    assert codec.token_names() == codebook_names("aud") == list(vocab.audio)
    assert codec.token_names()[1024 + 5] == "aud:q1:5"


def test_flatten_known_layout_and_inverse():
    codes = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    assert flatten(codes) == [1, 1027, 2053, 3079, 2, 1028, 2054, 3080]
    assert np.array_equal(unflatten(flatten(codes)), codes)
    rand = np.random.default_rng(0).integers(0, 1024, (4, 37))
    assert np.array_equal(unflatten(flatten(rand)), rand)
    with pytest.raises(ValueError):
        unflatten([1, 1027, 2053])              # not whole frames
    with pytest.raises(ValueError):
        unflatten([1027, 1, 2053, 3079])        # codebooks out of order
    with pytest.raises(ValueError):
        flatten(np.array([[1024], [0], [0], [0]]))


def test_decode_rejects_bad_ids(codec):
    with pytest.raises(AudioError):
        codec.decode([0, 1024, 2048])
    with pytest.raises(AudioError):
        codec.decode_codes(np.zeros((3, 5), np.int64))


def test_chunked_coding_matches_whole(codec):
    x = tone(0.4) + 0.02 * np.random.default_rng(1).standard_normal(int(0.4 * SR)).astype(np.float32)
    chunked = AudioCodec(codec.model, chunk_frames=8)
    codes = codec.encode_codes(x)
    assert np.array_equal(chunked.encode_codes(x), codes)
    assert np.abs(chunked.decode_codes(codes) - codec.decode_codes(codes)).max() < 1e-5
    assert chunk_spans(20, 8, 2) == [(0, 10, 0, 8), (6, 18, 8, 16), (14, 20, 16, 20)]


def test_shift_variants_offsets():
    x = np.arange(1, 101, dtype=np.float32)
    variants = shift_variants(x)
    assert len(variants) == 9 and list(SHIFTS) == [-20, -15, -10, -5, 0, 5, 10, 15, 20]
    for s, v in zip(SHIFTS, variants):
        assert v.size == x.size + s
        if s >= 0:
            assert not v[:s].any() and np.array_equal(v[s:], x)
        else:
            assert np.array_equal(v, x[-s:])
    assert variants[4] is x


# ---------------------------------------------------------------------------
# Reading audio
# ---------------------------------------------------------------------------

def test_resamples_other_rates(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 440.0, sr=22050, amp=0.5), 22050)
    x = load_audio(tmp_path / "a.wav")
    assert x.dtype == np.float32 and abs(x.size - SR) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / x.size - 440.0) < 2.0
    stereo = np.stack([tone(0.1), tone(0.1)], axis=1)
    assert np.allclose(load_audio(stereo), tone(0.1))


def test_bad_audio_raises(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(4410, np.float32), SR)
    sf.write(tmp_path / "good.wav", tone(0.5), SR)
    raw = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (tmp_path / "text.flac").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    for name in ("silent.wav", "cut.wav", "junk.wav", "text.flac", "empty.wav"):
        with pytest.raises(AudioError):
            load_audio(tmp_path / name)
    with pytest.raises(InputNotFoundError):
        load_audio(tmp_path / "missing.wav")
    for bad in (np.zeros(1000, np.float32), np.full(10, np.nan, np.float32), np.zeros(10, np.int16)):
        with pytest.raises(AudioError):
            load_audio(bad)
    assert load_audio(tmp_path / "good.wav").size == int(0.5 * SR)


# ---------------------------------------------------------------------------
# Metrics (known answers)
# ---------------------------------------------------------------------------

def test_si_sdr_known_answers():
    rng = np.random.default_rng(0)
    ref = np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    assert si_sdr(ref, ref) == math.inf
    assert reconstruction_scores(ref, ref)["si_sdr"] == 99.0
    noise = rng.standard_normal(ref.size)
    noise *= np.sqrt(np.mean(ref ** 2) / np.mean(noise ** 2)) * 10 ** (-20 / 20)  # SNR 20 dB
    est = ref + noise
    assert si_sdr(ref, est) == pytest.approx(20.0, abs=0.2)
    assert si_sdr(ref, 0.25 * est) == pytest.approx(si_sdr(ref, est), abs=1e-9)
    assert si_sdr(ref, -3.0 * est) == pytest.approx(si_sdr(ref, est), abs=1e-9)
    assert si_sdr(ref, np.concatenate([est, np.ones(100)])) == pytest.approx(si_sdr(ref, est))
    with pytest.raises(ValueError):
        si_sdr(np.zeros(100), est[:100])


def test_mel_distance_known_answers():
    rng = np.random.default_rng(0)
    ref = tone(0.5).astype(np.float64)
    assert mel_distance(ref, ref) == 0.0
    small = mel_distance(ref, ref + 1e-3 * rng.standard_normal(ref.size))
    large = mel_distance(ref, ref + 1e-1 * rng.standard_normal(ref.size))
    assert 0.0 < small < large


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, vocab):
    """A tiny freshly initialised run saved at step 0: (checkpoint dir, parts)."""
    d = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg()
    parts = build_parts(cfg, torch.device("cpu"))
    save_checkpoint(d, parts, cfg, vocab, 0)
    return d, parts


def test_checkpoint_round_trip_bit_exact(saved, vocab):
    d, parts = saved
    loaded = AudioCodec.load(d, vocab)
    want = parts.generator.state_dict()
    got = loaded.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    disc, step = _read_discriminator(d / DISCRIMINATOR)
    assert step == 0 and all(torch.equal(v, disc[k]) for k, v in parts.discriminator.state_dict().items())
    assert not (d / STAGING).exists()
    x = tone(0.2)
    assert np.array_equal(loaded.encode_codes(x), AudioCodec(parts.generator).encode_codes(x))


def test_checkpoint_errors(saved, vocab, tmp_path):
    import shutil

    d, _ = saved
    other = Vocabulary(notation=vocab.notation[:-1], midi=vocab.midi)
    with pytest.raises(VocabularyMismatchError):
        AudioCodec.load(d, other)
    cut = tmp_path / "cut"
    shutil.copytree(d, cut)
    weights = (cut / ckpt_io.WEIGHTS).read_bytes()
    (cut / ckpt_io.WEIGHTS).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        AudioCodec.load(cut, vocab)
    with pytest.raises(CheckpointError):
        AudioCodec.load(tmp_path / "nowhere", vocab)
    wrong = tmp_path / "wrong"
    shutil.copytree(d, wrong)
    config = json.loads((wrong / ckpt_io.CONFIG).read_text())
    (wrong / ckpt_io.CONFIG).write_text(json.dumps({**config, "kind": "umust-rqvae-image"}))
    with pytest.raises(CheckpointError, match="not a umust-dac-audio checkpoint"):
        AudioCodec.load(wrong, vocab)


def test_interrupted_save_is_rolled_forward_or_dropped(tmp_path):
    (tmp_path / "model.safetensors").write_text("old")
    stage = tmp_path / STAGING
    stage.mkdir()
    (stage / "model.safetensors").write_text("half")
    finish_interrupted_save(tmp_path)          # no COMPLETE marker: the partial set is dropped
    assert (tmp_path / "model.safetensors").read_text() == "old" and not stage.exists()
    stage.mkdir()
    (stage / "model.safetensors").write_text("new")
    (stage / "COMPLETE").write_text("7")
    finish_interrupted_save(tmp_path)          # complete: moved into place
    assert (tmp_path / "model.safetensors").read_text() == "new" and not stage.exists()


# ---------------------------------------------------------------------------
# Data and training
# ---------------------------------------------------------------------------

def test_find_audio_manifest_and_batches(tmp_path, wav_dir):
    rows = [{"wav": f"{wav_dir}/0.wav", "split": "train"}, {"wav": f"{wav_dir}/1.wav", "split": "valid"},
            {"wav": f"{wav_dir}/2.wav", "split": "test"},
            {"wav": f"{wav_dir}/low_rate.wav", "split": "train"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, val = find_audio(tmp_path)
    assert [it.path.name for it in train] == ["0.wav", "low_rate.wav"]
    assert [it.path.name for it in val] == ["1.wav"]
    cfg = tiny_cfg()
    store = AudioStore(train)
    a, b = make_batch(store, cfg, 3), make_batch(store, cfg, 3)
    assert a.shape == (2, 1, cfg.excerpt_samples) and cfg.excerpt_samples % HOP == 0
    assert torch.equal(a, b) and not torch.equal(a, make_batch(store, cfg, 4))
    assert float(a.abs().max()) <= 1.0
    held_out = {"wav": "x.wav", "source": "beethoven/op2", "split": "train"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(held_out))
    with pytest.raises(HeldOutRepertoireError):
        find_audio(tmp_path)


def _losses(rows: list[dict]) -> list[tuple]:
    return [(r["step"], r["loss"], r["discriminator"]) for r in rows if "loss" in r]


def test_resume_continues_the_same_loss_curve(tmp_path, wav_dir, vocab):
    cfg = tiny_cfg()
    run = dict(save_every=100, device="cpu", progress=False, eval_items=1)
    straight = train_audio_codec(wav_dir, tmp_path / "a", cfg, RunOptions(max_steps=4, **run), vocab,
                                 eval_seconds=0.2)
    train_audio_codec(wav_dir, tmp_path / "b", cfg, RunOptions(max_steps=2, **run), vocab, eval_seconds=0.2)
    resumed = train_audio_codec(wav_dir, tmp_path / "b", cfg, RunOptions(max_steps=4, **run), vocab,
                                eval_seconds=0.2)
    assert (straight.step, resumed.start_step, resumed.step) == (4, 2, 4)
    curve_a, curve_b = _losses(read_log(tmp_path / "a")), _losses(read_log(tmp_path / "b"))
    assert len(curve_a) == 4 and curve_a == curve_b
    a, b = ckpt_io.load_model(tmp_path / "a", vocab)[0], ckpt_io.load_model(tmp_path / "b", vocab)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="another training config"):
        train_audio_codec(wav_dir, tmp_path / "b", tiny_cfg(lr=3e-4), RunOptions(max_steps=5, **run), vocab)


def test_time_budget_saves_before_stopping(tmp_path, wav_dir, vocab):
    run = RunOptions(max_minutes=1e-4, save_every=100, device="cpu", progress=False, eval_items=0)
    result = train_audio_codec(wav_dir, tmp_path, tiny_cfg(), run, vocab)
    assert result.stop_reason == "max_minutes" and result.step == 1
    assert json.loads((tmp_path / ckpt_io.CONFIG).read_text())["step"] == 1
    assert (tmp_path / DISCRIMINATOR).is_file() and (tmp_path / ckpt_io.TRAIN_STATE).is_file()


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

def test_tokenize_command_keeps_going_and_decodes(saved, tmp_path):
    d, _ = saved
    sf.write(tmp_path / "a.wav", tone(0.3), SR)
    sf.write(tmp_path / "silent.wav", np.zeros(1000, np.float32), SR)
    sf.write(tmp_path / "c.wav", tone(0.2, 300.0), SR)
    app, out = umust_app, tmp_path / "codes"
    args = ["tokenize", "audio", str(tmp_path / "a.wav"), str(tmp_path / "silent.wav"),
            str(tmp_path / "c.wav"), "-o", str(out), "--codec", str(d), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output  # some files failed, the others were done
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert [r["input"].endswith(n) for r, n in zip(report["done"], ("a.wav", "c.wav"))] == [True, True]
    assert len(report["failed"]) == 1 and "silent" in report["failed"][0]["error"]
    codes = np.load(out / "a.npy")
    assert codes.dtype == np.int16 and codes.shape == (4, math.ceil(int(0.3 * SR) / HOP))
    result = runner.invoke(app, ["tokenize", "audio", str(tmp_path / "c.wav"), "-o", str(out),
                                 "--codec", str(d), "--shifts"])
    assert result.exit_code == 0, result.output
    frames = [np.load(out / f"c.s{i:02d}.npy").shape[1] for i in range(9)]
    assert frames == [math.ceil((int(0.2 * SR) + s) / HOP) for s in SHIFTS]
    assert np.array_equal(np.load(out / "c.s04.npy"), np.load(out / "c.npy"))
    result = runner.invoke(app, ["tokenize", "audio", str(out / "a.npy"), "-o", str(tmp_path / "wav"),
                                 "--codec", str(d), "--decode"])
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(tmp_path / "wav" / "a.wav")
    assert rate == SR and audio.size == codes.shape[1] * HOP


def test_train_command_json(tmp_path, wav_dir):
    app = umust_app
    args = ["train", "codec", "audio", "--data", str(wav_dir), "-o", str(tmp_path / "run"),
            "--config", "tiny", "--max-steps", "1", "--batch-size", "1", "--excerpt-seconds", "0.05",
            "--device", "cpu", "--json", "--export", str(tmp_path / "shipped")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] == 1 and summary["stopped"] == "max_steps"
    from safetensors.torch import load_file

    shipped = load_file(str(tmp_path / "shipped" / ckpt_io.WEIGHTS))
    assert all(v.dtype == torch.float16 for v in shipped.values())
    assert AudioCodec.load(tmp_path / "shipped").encode_codes(tone(0.1)).shape == (4, 9)
    bad = runner.invoke(app, args[:7] + ["--config", "huge", "--max-steps", "1"])
    assert bad.exit_code == 2 and "unknown --config" in bad.output


def test_init_starts_a_new_run_from_exported_weights(tmp_path, wav_dir, vocab):
    run = dict(save_every=100, device="cpu", progress=False, eval_items=1)
    train_audio_codec(wav_dir, tmp_path / "a", tiny_cfg(), RunOptions(max_steps=2, **run), vocab)
    ship = export_codec(tmp_path / "a", tmp_path / "ship", vocab)
    fresh = train_audio_codec(wav_dir, tmp_path / "b", tiny_cfg(), RunOptions(max_steps=0, **run), vocab,
                              init=tmp_path / "ship")
    assert (fresh.start_step, fresh.step) == (0, 0)
    shipped = ckpt_io.read_weights(ship)
    started = ckpt_io.load_model(tmp_path / "b", vocab)[0]
    assert all(torch.equal(started[k], shipped[k]) for k in shipped)  # the fp16 weights, widened
    assert read_log(tmp_path / "b")[0] == {"step": 0, "init": str(tmp_path / "ship"), "init_step": 2}
    untouched = ckpt_io.load_model(tmp_path / "a", vocab)[0]
    resumed = train_audio_codec(wav_dir, tmp_path / "a", tiny_cfg(), RunOptions(max_steps=3, **run), vocab,
                                init=tmp_path / "nowhere")  # a run in place wins; --init is not read
    assert resumed.start_step == 2 and set(untouched) == set(started)
    wider = TrainConfig(model=PRESETS["small"].generator, discriminator=TINY.discriminator, batch_size=2,
                        excerpt_seconds=0.05)
    with pytest.raises(CheckpointError, match="another architecture"):
        train_audio_codec(wav_dir, tmp_path / "c", wider, RunOptions(max_steps=1, **run), vocab,
                          init=tmp_path / "ship")


def test_plain_folder_of_compressed_audio(tmp_path, vocab):
    for i, f in enumerate((220.0, 330.0)):
        sf.write(tmp_path / f"{i}.ogg", tone(0.6, f), SR, format="OGG", subtype="VORBIS")
    (tmp_path / "notes.txt").write_text("not audio")
    train, val = find_audio(tmp_path)
    assert [it.path.name for it in train] == ["0.ogg", "1.ogg"] and val == []
    assert all(it.rate == SR and abs(it.frames - 0.6 * SR) < 0.01 * SR for it in train)
