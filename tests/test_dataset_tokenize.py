"""`umust dataset tokenize`: code files for every system of a corpus, with tiny untrained codecs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from umust_cli import checkpoint as ckpt_io
from umust_cli import registry
from umust_cli.cli.main import app
from umust_cli.codecs import audio as audio_codec
from umust_cli.codecs import image as image_codec
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.data import tokenize as tok
from umust_cli.model.dac_codec import PRESETS as DAC_PRESETS
from umust_cli.model.rqvae import PRESETS as RQ_PRESETS
from umust_cli.model.rqvae import RQVAE
from umust_cli.train import audio_codec as audio_train

from .test_image_codec import staff_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
SR = 44100
# piece, system, split, image height, audio seconds
SYSTEMS = [("alpha", 0, "train", 90, 0.5), ("alpha", 1, "train", 70, 0.4),
           ("beta", 0, "valid", 100, 0.3), ("gamma", 0, "test", 80, 0.35)]


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def base_corpus(tmp_path_factory) -> Path:
    """A four-system corpus in the builder's layout (manifest rows, PNGs, WAVs)."""
    root = tmp_path_factory.mktemp("corpus") / "c"
    rows = []
    for i, (piece, system, split, height, seconds) in enumerate(SYSTEMS):
        stem = f"pieces/{piece}/systems/{system:03d}"
        (root / stem).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(staff_image(i, h=height, w=200 + 10 * i)).save(root / f"{stem}.png")
        sf.write(root / f"{stem}.wav", _tone(seconds, 220.0 * (i + 1)), SR)
        rows.append({"piece_id": piece, "system": system, "split": split, "png": f"{stem}.png",
                     "wav": f"{stem}.wav", "scans": []})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture
def corpus(base_corpus, tmp_path) -> Path:
    return Path(shutil.copytree(base_corpus, tmp_path / "corpus"))


def _image_ckpt(path: Path, vocab: Vocabulary, seed: int = 0) -> Path:
    """An untrained tiny RQ-VAE whose codebooks hold random vectors (so codes vary)."""
    torch.manual_seed(seed)
    model = RQVAE(RQ_PRESETS["tiny"])
    for cb in model.quantizer.codebooks:
        cb.embed.normal_(0, 0.3)
        cb.initialized.fill_(True)
    config = {"kind": image_codec.MODEL_KIND, "format": 1, "step": 0, "model": RQ_PRESETS["tiny"].to_dict()}
    ckpt_io.save_model(path, model.state_dict(), config, vocab)
    return path


def _audio_ckpt(path: Path, vocab: Vocabulary) -> Path:
    tiny = DAC_PRESETS["tiny"]
    cfg = audio_train.TrainConfig(model=tiny.generator, discriminator=tiny.discriminator)
    audio_train.save_checkpoint(path, audio_train.build_parts(cfg, torch.device("cpu")), cfg, vocab, 0)
    return path


@pytest.fixture(scope="module")
def codecs(tmp_path_factory, vocab) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("codecs")
    return _image_ckpt(d / "image", vocab), _audio_ckpt(d / "audio", vocab)


def tokenize(corpus: Path, image: Path | None, audio: Path | None, *extra: str):
    args = ["dataset", "tokenize", str(corpus), "--json", "--device", "cpu", *extra]
    args += ["--image-codec", str(image)] if image else []
    args += ["--audio-codec", str(audio)] if audio else []
    return runner.invoke(app, args)


def _summary(result) -> dict:
    return json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])


def _mtimes(corpus: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in corpus.rglob("*.npy")}


# ---------------------------------------------------------------------------

def test_stack_and_unstack_variants_with_padding():
    a, b = np.arange(24).reshape(4, 2, 3), np.arange(32).reshape(4, 2, 4)
    stacked = tok.stack_variants([a, b])
    assert stacked.shape == (2, 4, 2, 4) and stacked.dtype == np.int16 and (stacked[0, :, :, 3] == -1).all()
    back = tok.variant_codes(stacked)
    assert np.array_equal(back[0], a) and np.array_equal(back[1], b)
    c, d = np.ones((4, 5), int), np.zeros((4, 6), int)
    assert [x.shape for x in tok.variant_codes(tok.stack_variants([c, d]))] == [(4, 5), (4, 6)]


def test_codes_shapes_variants_and_equal_to_direct_encoding(corpus, codecs, vocab, tmp_path):
    image_ckpt, audio_ckpt = codecs
    out = tmp_path / "codes"
    result = tokenize(corpus, image_ckpt, audio_ckpt, "--batch-size", "8", "-o", str(out))
    assert result.exit_code == 0, result.output
    summary = _summary(result)
    assert summary["status"] == "complete" and summary["failed"] == 0 and summary["systems"] == 4
    assert summary["counts"]["image"]["train"] == {"encoded": 2, "skipped": 0, "failed": 0}
    assert summary["codecs"]["image"]["fingerprint"] and summary["codecs"]["audio"]["step"] == 0
    assert not list(corpus.rglob("*.npy"))  # -o: the corpus itself is untouched
    images = image_codec.ImageCodec.load(image_ckpt, vocab)
    audios = audio_codec.AudioCodec.load(audio_ckpt, vocab)
    for piece, system, split, height, seconds in SYSTEMS:
        stem = f"pieces/{piece}/systems/{system:03d}"
        img = np.load(out / f"{stem}.image.npy")
        aud = np.load(out / f"{stem}.audio.npy")
        train = split == "train"
        assert img.dtype == aud.dtype == np.int16
        assert img.shape[:2] == (32 if train else 1, 4) and aud.shape[:2] == (9 if train else 1, 4)
        assert img.shape[2] == -(-(height + (12 if train else 0)) // 16)  # tallest variant's patches
        assert aud.shape[2] == -(-(int(seconds * SR) + (20 if train else 0)) // 512)
        assert ((img == -1) | ((img >= 0) & (img < 32))).all() and (img[-1] >= 0).all()  # the largest shift fills the grid
        assert ((aud >= 0) & (aud < 1024) | (aud == -1)).all()
        gray = image_codec.load_gray(corpus / f"{stem}.png")
        clip = audio_codec.load_audio(corpus / f"{stem}.wav")
        want_img = image_codec.shift_variants(gray) if train else [gray]
        want_aud = audio_codec.shift_variants(clip) if train else [clip]
        for got, x in zip(tok.variant_codes(img), want_img):
            assert np.array_equal(got, images.encode_grid(x))
        for got, x in zip(tok.variant_codes(aud), want_aud):
            assert np.array_equal(got, audios.encode_codes(x))
    assert len(set(np.unique(np.load(out / "pieces/alpha/systems/000.image.npy")))) > 4  # codes vary


def test_no_shift_variants_and_single_modality_rows(corpus, codecs, tmp_path):
    """--no-shift-variants: one variant on the train split too; a row without an image (an imported
    audio-only data set) gets no image job instead of a KeyError."""
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    del rows[0]["png"]
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = tokenize(corpus, codecs[0], codecs[1], "--no-shift-variants", "-o", str(tmp_path / "codes"))
    assert result.exit_code == 0, result.output
    summary = _summary(result)
    assert summary["variants"]["image"]["train"] == 1 and summary["files"] == 2 * len(rows) - 1
    shapes = [np.load(p).shape[0] for p in (tmp_path / "codes").rglob("*.npy")]
    assert len(shapes) == 2 * len(rows) - 1 and set(shapes) == {1}


def test_rerun_skips_done_files_and_redoes_missing_ones(corpus, codecs):
    image_ckpt, audio_ckpt = codecs
    assert tokenize(corpus, image_ckpt, audio_ckpt).exit_code == 0
    before = _mtimes(corpus)
    assert len(before) == 8
    again = tokenize(corpus, image_ckpt, audio_ckpt)
    assert again.exit_code == 0, again.output
    summary = _summary(again)
    assert all(c["encoded"] == 0 and c["skipped"] == 1 for m in summary["counts"].values()
               for s, c in m.items() if s != "train")
    assert summary["counts"]["audio"]["train"]["skipped"] == 2 and _mtimes(corpus) == before
    (corpus / "pieces/beta/systems/000.audio.npy").unlink()
    np.save(corpus / "pieces/alpha/systems/001.image.npy", np.zeros((1, 4, 5, 13), np.int16))  # wrong V
    third = _summary(tokenize(corpus, image_ckpt, audio_ckpt))
    assert third["counts"]["audio"]["valid"]["encoded"] == 1
    assert third["counts"]["image"]["train"] == {"encoded": 1, "skipped": 1, "failed": 0}
    assert np.load(corpus / "pieces/alpha/systems/001.image.npy").shape[0] == 32


def test_bad_files_are_reported_and_the_rest_is_done(corpus, codecs):
    image_ckpt, audio_ckpt = codecs
    (corpus / "pieces/alpha/systems/001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    wav = corpus / "pieces/beta/systems/000.wav"
    wav.write_bytes(wav.read_bytes()[:200])  # truncated data chunk
    result = tokenize(corpus, image_ckpt, audio_ckpt, "--batch-size", "40")
    assert result.exit_code == 3 and "2 file(s) failed" in result.output  # 3: the other files were encoded
    summary = _summary(result)
    assert summary["status"] == "incomplete" and summary["failed"] == 2
    errors = [json.loads(x) for x in (corpus / tok.ERRORS).read_text().splitlines()]
    assert {(e["piece_id"], e["system"], e["modality"]) for e in errors} == {("alpha", 1, "image"),
                                                                             ("beta", 0, "audio")}
    assert "ImageError" in errors[0]["error"] + errors[1]["error"]
    assert len(list(corpus.rglob("*.npy"))) == 6
    assert not (corpus / "pieces/alpha/systems/001.image.npy").exists()
    assert not [p for p in corpus.rglob(".*") if p.is_file()]  # no temporary files left


def test_codec_checks(corpus, codecs, vocab, tmp_path, monkeypatch):
    image_ckpt, audio_ckpt = codecs
    other = Vocabulary(notation=vocab.notation[:-1], midi=vocab.midi)
    wrong = tokenize(corpus, _image_ckpt(tmp_path / "other-vocab", other), None)
    assert wrong.exit_code == 2 and "another vocabulary" in wrong.output
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "none")  # an install without shipped codecs
    none = tokenize(corpus, None, None)
    assert none.exit_code == 2 and "--image-codec" in none.output
    assert tokenize(corpus, image_ckpt, None, "--split", "valid").exit_code == 0
    assert [p.name for p in corpus.rglob("*.npy")] == ["000.image.npy"]  # only beta (valid), only image
    retrained = _image_ckpt(tmp_path / "retrained", vocab, seed=1)
    refused = tokenize(corpus, retrained, None)
    assert refused.exit_code == 2 and "another codec" in refused.output and "--overwrite" in refused.output
    redone = tokenize(corpus, retrained, None, "--overwrite")
    assert redone.exit_code == 0 and _summary(redone)["counts"]["image"]["valid"]["encoded"] == 1
    assert json.loads((corpus / tok.SUMMARY).read_text())["codecs"]["image"]["path"] == str(retrained.resolve())
