"""The codec weights shipped in the package: they load, keep the vocabulary, and reconstruct a
freshly rendered and synthesized system (the bundled example) about as well as measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from umust_cli import registry
from umust_cli.cli.main import app
from umust_cli.codecs.image import load_gray, preprocess, threshold_white
from umust_cli.errors import CheckpointError
from umust_cli.eval.image_metrics import foreground_f1, psnr

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shipped(modality: str) -> Path:
    folder = registry.WEIGHTS_DIR / registry.MODELS[f"{modality}-codec"][registry.DEFAULTS[f"{modality}-codec"]]
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no {modality} codec shipped in this checkout")
    return registry.resolve(f"{modality}-codec", None)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, dict]:
    """The bundled example built into a corpus: (corpus, first system's row)."""
    out = tmp_path_factory.mktemp("example") / "c"
    result = runner.invoke(app, ["dataset", "build", str(REPO / "examples"), "-o", str(out),
                                 "--soundfont", "timgm6mb", "--scan-copies", "0", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.jsonl").read_text().splitlines()[0])


def test_missing_shipped_codec_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="shipped image-codec model 'small' is missing"):
        registry.resolve("image-codec", None)
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    result = runner.invoke(app, ["tokenize", "image", str(png), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing from this install" in result.output


def test_shipped_image_codec_round_trip_through_the_cli(example, tmp_path):
    codec_dir = shipped("image")
    corpus, row = example
    png = corpus / row["png"]
    result = runner.invoke(app, ["tokenize", "image", str(png), "-o", str(tmp_path / "codes")])
    assert result.exit_code == 0, result.output
    codes = np.load(tmp_path / "codes" / f"{png.stem}.npy")
    ref = preprocess(load_gray(png))
    assert codes.shape == (4, ref.shape[0] // 16, ref.shape[1] // 16)
    assert codes.min() >= 0 and codes.max() < 1024
    assert len(np.unique(codes[0])) > 20  # the codes carry the picture, not one blank code
    # a system rendered like the training images is encoded at its own scale
    assert json.loads((tmp_path / "codes" / f"{png.stem}.json").read_text()) == \
        {"scale": 1.0, "size": list(load_gray(png).shape)}
    result = runner.invoke(app, ["tokenize", "image", str(tmp_path / "codes" / f"{png.stem}.npy"),
                                 "--decode", "-o", str(tmp_path / "back"), "--codec", str(codec_dir)])
    assert result.exit_code == 0, result.output
    out = load_gray(tmp_path / "back" / f"{png.stem}.png")
    ref = threshold_white(load_gray(png))   # decoding returns to the input's size (no padding)
    assert out.shape == ref.shape
    # measured on 64 held-out systems: PSNR 21.1 dB, ink F1 0.90 (worst 18.3 dB / 0.75)
    assert psnr(ref, out) > 17.0 and foreground_f1(ref, out) > 0.75


def test_shipped_audio_codec_round_trip_through_the_cli(example, tmp_path):
    from umust_cli.codecs.audio import HOP, load_audio
    from umust_cli.eval.audio_metrics import mel_distance

    shipped("audio")
    corpus, row = example
    wav = corpus / row["wav"]
    result = runner.invoke(app, ["tokenize", "audio", str(wav), "-o", str(tmp_path / "codes")])
    assert result.exit_code == 0, result.output
    ref = load_audio(wav)
    codes = np.load(tmp_path / "codes" / f"{wav.stem}.npy")
    assert codes.shape == (4, -(-ref.size // HOP)) and codes.min() >= 0 and codes.max() < 1024
    result = runner.invoke(app, ["tokenize", "audio", str(tmp_path / "codes" / f"{wav.stem}.npy"),
                                 "--decode", "-o", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    out = load_audio(tmp_path / "back" / f"{wav.stem}.wav")
    assert abs(out.size - ref.size) < HOP
    n = min(out.size, ref.size)
    silence = np.zeros(n, np.float32)
    # measured on 16 held-out clips: mel distance 1.95; silence scores far worse
    assert mel_distance(ref[:n], out[:n]) < 2.6 < mel_distance(ref[:n], silence + 1e-4)


def test_one_protocol_for_all_four_codecs(example):
    """Generic code: encode -> Codes -> decode, the same two calls for every modality."""
    import pretty_midi

    from umust_cli.codecs.audio import HOP, AudioCodec
    from umust_cli.codecs.base import Codec, Codes
    from umust_cli.codecs.image import ImageCodec
    from umust_cli.codecs.midi import MidiCodec
    from umust_cli.codecs.notation import NotationCodec

    corpus, row = example
    codecs = {"notation": (NotationCodec(), corpus / row["musicxml"]), "midi": (MidiCodec(), corpus / row["mid"]),
              "image": (ImageCodec.load(shipped("image")), corpus / row["png"]),
              "audio": (AudioCodec.load(shipped("audio")), corpus / row["wav"])}
    decoded = {}
    for name, (codec, source) in codecs.items():
        assert isinstance(codec, Codec) and codec.modality == name
        codes = codec.encode(source)
        assert isinstance(codes, Codes) and len(codes) > 0
        assert all(0 <= i < codec.vocab_size for i in codes)
        decoded[name] = (codes, codec.decode(codes))
    assert decoded["notation"][1].lstrip().startswith("<?xml")
    assert isinstance(decoded["midi"][1], pretty_midi.PrettyMIDI) and decoded["midi"][1].instruments
    image_codes, image = decoded["image"]
    assert image.shape == load_gray(corpus / row["png"]).shape == image_codes.size
    audio_codes, audio = decoded["audio"]
    assert audio.shape == (audio_codes.shape[0] * HOP,) and len(audio_codes) == 4 * audio_codes.shape[0]
