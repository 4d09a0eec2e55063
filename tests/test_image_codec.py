"""The score-image codec: preprocessing, flattening, shifts, metrics, encode/decode, training."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from umust_cli import registry
from umust_cli.cli.main import app
from umust_cli.codecs.base import Codec, Codes
from umust_cli.codecs.image import (STAFF_SPACING_PX, ImageCodec, flatten, global_to_systems, load_gray,
                                    measure_staff, normalize_scale, pad_to_multiple, preprocess, resize,
                                    scaled_size, shift_variants, staff_scale, systems_to_global,
                                    threshold_white, unflatten)
from umust_cli.codecs.vocab import SEP, default_vocabulary
from umust_cli.errors import ImageError
from umust_cli.eval.image_metrics import foreground_f1, psnr
from umust_cli.model.rqvae import PRESETS, RQVAE
from umust_cli.train.image_codec import Bucket, RunOptions, TrainConfig, train_image_codec
from umust_cli.train.engine import read_log

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def staff_image(seed: int, h: int = 96, w: int = 256) -> np.ndarray:
    """Five 1-px staff lines 8 px apart, note heads with stems, on white."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w), 255, np.uint8)
    for k in range(5):
        a[24 + 8 * k, :] = 0
    for x in rng.integers(8, w - 8, 12):
        y = int(rng.integers(20, 60))
        a[y - 2:y + 3, x - 3:x + 3] = 0
        a[y - 28:y, x + 2] = 0
    return a


# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------

def test_threshold_known_pixels():
    # median 250 -> cut 230: strictly brighter pixels become 255, the rest stay
    a = np.array([[250, 250, 250, 250, 250, 231, 230, 100, 0]], np.uint8)
    assert threshold_white(a).tolist() == [[255, 255, 255, 255, 255, 255, 230, 100, 0]]
    # a dark page (median 40, cut 20): only the darkest ink survives
    b = np.array([[40, 40, 40, 40, 21, 20, 0]], np.uint8)
    assert threshold_white(b).tolist() == [[255, 255, 255, 255, 255, 20, 0]]


def test_pad_to_multiple_of_16_with_white():
    a = np.zeros((17, 33), np.uint8)
    p = pad_to_multiple(a)
    assert p.shape == (32, 48)
    assert (p[:17, :33] == 0).all() and (p[17:] == 255).all() and (p[:, 33:] == 255).all()
    assert pad_to_multiple(np.zeros((32, 16), np.uint8)).shape == (32, 16)


def test_bad_images_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="blank"):
        preprocess(np.full((40, 40), 255, np.uint8))
    with pytest.raises(ImageError, match="cannot read"):
        load_gray(b"\x89PNG\r\n\x1a\n this is not a png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    with pytest.raises(ImageError, match="cannot read"):
        load_gray(bad)
    with pytest.raises(ImageError, match="empty"):
        load_gray(np.zeros((0, 10), np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        load_gray(np.zeros((4, 4), np.float32))


def test_transparency_is_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # black but fully transparent...
    rgba[0, 0] = (0, 0, 0, 255)            # ...except one opaque black pixel
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    gray = load_gray(buf.getvalue())
    assert gray[0, 0] == 0 and (gray.ravel()[1:] == 255).all()
    assert load_gray(rgba).tolist() == gray.tolist()


def test_shift_variants():
    a = np.full((20, 30), 255, np.uint8)
    a[5, 7] = 0
    variants = shift_variants(a)
    assert len(variants) == 32
    assert variants[0] is a
    for iy in range(4):
        for ix in range(8):
            v = variants[iy * 8 + ix]
            dx, dy = 2 * ix, 4 * iy
            assert v.shape == (20 + dy, 30 + dx)
            assert list(zip(*np.nonzero(v == 0))) == [(5 + dy, 7 + dx)]


# ---------------------------------------------------------------------------
# Flattening
# ---------------------------------------------------------------------------

def test_flatten_reading_order_known_answer():
    grid = np.arange(4 * 2 * 3).reshape(4, 2, 3)  # (codebook, row, column)
    ids = flatten(grid)
    assert len(ids) == 24
    # column 0, row 0: codebooks 0..3; then column 0, row 1; then column 1, row 0
    assert ids[:4] == [grid[k, 0, 0] + 1024 * k for k in range(4)]
    assert ids[4:8] == [grid[k, 1, 0] + 1024 * k for k in range(4)]
    assert ids[8:12] == [grid[k, 0, 1] + 1024 * k for k in range(4)]
    assert np.array_equal(unflatten(ids, 2), grid)


def test_systems_with_sep_round_trip_exactly():
    vocab = default_vocabulary()
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 1024, (4, h, w)) for h, w in ((2, 5), (5, 3), (3, 7))]
    seq = systems_to_global(vocab, [flatten(g) for g in grids])
    assert seq.count(SEP) == 2
    assert all(i in vocab.range("image") for i in seq if i != SEP)
    back = global_to_systems(vocab, seq)
    for g, ids in zip(grids, back):
        assert np.array_equal(unflatten(ids, g.shape[1]), g)


def test_unflatten_refuses_wrong_heights_and_order():
    ids = flatten(np.zeros((4, 3, 2), np.int64))
    with pytest.raises(ValueError, match="whole columns"):
        unflatten(ids, 4)
    with pytest.raises(ValueError, match="codebook order"):
        unflatten(ids[1:] + ids[:1], 3)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def test_metrics_known_answers():
    a = np.full((4, 4), 255, np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.copy()
    b[:] = 254  # MSE 1 -> 10 log10(255^2) dB
    assert psnr(a, b) == pytest.approx(48.1308, abs=1e-3)
    ref, hyp = a.copy(), a.copy()
    ref[0, :4] = 0      # 4 ink pixels
    hyp[0, :2] = 10     # 2 of them found
    hyp[3, 3] = 100     # 1 false ink pixel
    assert foreground_f1(ref, hyp) == pytest.approx(2 * 2 / (4 + 3))
    assert foreground_f1(a, a) == 1.0


# ---------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------

def test_encode_decode_shapes_and_ranges(tmp_path):
    torch.manual_seed(0)
    codec = ImageCodec(RQVAE(PRESETS["tiny"]))
    assert isinstance(codec, Codec) and codec.modality == "image" and codec.vocab_size == 4096
    assert codec.token_names()[1025] == "img:q1:1"
    path = tmp_path / "s.png"
    Image.fromarray(staff_image(0, h=70, w=100)).save(path)  # pads to 80 x 112 -> 5 x 7 patches
    grid = codec.encode_grid(path)
    assert grid.shape == (4, 5, 7)
    codes = codec.encode(path, rescale=False)
    assert isinstance(codes, Codes) and codes.shape == (5, 7) and codes.size == (70, 100)
    assert codes.scale == 1.0 and list(codes) == flatten(grid) and len(codes) == 4 * 5 * 7
    assert all(k * 1024 <= i < k * 1024 + 32 for n, i in enumerate(codes) for k in [n % 4])
    img = codec.decode(codes)
    assert img.shape == (70, 100) and img.dtype == np.uint8          # the input's size
    assert codec.decode(Codes(codes.ids, (5, 7))).shape == (80, 112)  # no size: the codec's own
    with pytest.raises(ImageError, match="patch grid"):
        codec.decode(list(codes))                                     # bare ids carry no height
    with pytest.raises(ImageError, match="whole columns"):
        codec.decode(Codes(codes.ids, (3, 7)))
    with pytest.raises(ImageError, match=r"are \(5, 7\) patches, not \(5, 8\)"):
        codec.decode(Codes(codes.ids, (5, 8)))


def test_staff_spacing_by_run_lengths():
    thickness, spacing = measure_staff(staff_image(0))          # 1-px lines 8 px apart
    assert thickness == 1.0 and spacing == pytest.approx(8.0, abs=0.05)
    big = resize(staff_image(0), 144, 384)                     # 1.5x: lines 12 px apart
    assert measure_staff(big)[1] == pytest.approx(12.0, rel=0.03)
    assert staff_scale(big) == pytest.approx(STAFF_SPACING_PX / 12.0, rel=0.03)
    near = resize(staff_image(0), 105, 280)                    # 8 x 1.09 = 8.75: within 4% of 9
    assert staff_scale(near) == 1.0
    scaled, scale = normalize_scale(big)
    assert scaled.shape == scaled_size(big.shape, scale)
    assert measure_staff(scaled)[1] == pytest.approx(STAFF_SPACING_PX, rel=0.04)


def test_image_without_staff_is_refused_unless_asked():
    rng = np.random.default_rng(3)
    blobs = np.full((96, 256), 255, np.uint8)
    for y, x in rng.integers(4, 90, (40, 2)):
        blobs[y:y + 5, 3 * x % 250:3 * x % 250 + 6] = 0     # noteheads, no lines
    for image in (blobs, np.full((64, 64), 255, np.uint8)):
        with pytest.raises(ImageError, match="no staff found"):
            measure_staff(image)
    codec = ImageCodec(RQVAE(PRESETS["tiny"]))
    with pytest.raises(ImageError, match="no staff found"):
        codec.encode(blobs)
    assert codec.encode(blobs, rescale=False).shape == (6, 16)


def test_rescaled_codes_decode_to_the_input_size():
    torch.manual_seed(0)
    codec = ImageCodec(RQVAE(PRESETS["tiny"]))
    big = resize(staff_image(1), 150, 403)                      # lines 12.5 px apart, odd width
    codes = codec.encode(big)
    assert codes.scale == pytest.approx(9 / 12.5, rel=0.03) and codes.size == (150, 403)
    h, w = scaled_size(big.shape, codes.scale)
    assert codes.shape == (-(-h // 16), -(-w // 16))
    assert codec.decode(codes).shape == (150, 403)
    variants = codec.encode_variants(big, shifts=True)
    assert len(variants) == 32 and variants[0] == codes
    assert {v.scale for v in variants} == {codes.scale}


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny RQ-VAE trained 250 steps on one synthetic staff image (full-height crops)."""
    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("staff")
    Image.fromarray(staff_image(0)).save(data / "staff.png")
    out = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig(model=PRESETS["tiny"], buckets=(Bucket(0, 10 ** 6, 96, 2),), lr=1e-3,
                      betas=(0.9, 0.999), warmup_steps=10)
    train_image_codec(data, out, cfg, RunOptions(max_steps=250, save_every=1000, progress=False),
                      default_vocabulary())
    return out


@pytest.mark.slow
def test_training_reduces_reconstruction_error(trained_tiny):
    l2 = [r["l2"] for r in read_log(trained_tiny) if "l2" in r]
    assert len(l2) == 250
    assert np.mean(l2[-20:]) < 0.3 * np.mean(l2[:10])
    codec = ImageCodec.load(trained_tiny)
    blank_f1 = foreground_f1(preprocess(staff_image(7)), np.full((96, 256), 255, np.uint8))
    for seed in (0, 7):  # the training image and an unseen one
        ref = preprocess(staff_image(seed))
        out = codec.decode_grid(codec.encode_grid(ref))
        assert out.shape == ref.shape
        assert foreground_f1(ref, out) > 0.6 > blank_f1
        assert psnr(ref, out) > 14.0


def test_train_cli_tiny(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(staff_image(i)).save(data / f"{i}.png")
    out = tmp_path / "ck"
    args = ["train", "codec", "image", "--data", str(data), "-o", str(out), "--config", "tiny",
            "--threads", "1", "--json", "--max-steps"]
    result = runner.invoke(app, args + ["2"])
    assert result.exit_code == 0, result.output
    assert '"step": 2' in result.output
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "vocabulary.json",
                                               "train_state.pt", "train_log.jsonl"}
    result = runner.invoke(app, args + ["4", "--export", str(tmp_path / "ship")])  # the same command resumes
    assert result.exit_code == 0 and '"start_step": 2' in result.output
    # the export is the shipped layout: fp16 weights only, and it encodes like the fp32 run
    from safetensors import safe_open

    assert {p.name for p in (tmp_path / "ship").iterdir()} == {"model.safetensors", "config.json",
                                                               "vocabulary.json"}
    with safe_open(str(tmp_path / "ship" / "model.safetensors"), framework="pt") as f:
        floats = [f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()]
    assert floats and set(floats) == {torch.float16}
    gray = pad_to_multiple(staff_image(7))
    full, half = ImageCodec.load(out).encode_grid(gray), ImageCodec.load(tmp_path / "ship").encode_grid(gray)
    assert full.shape == half.shape and (full == half).mean() > 0.9
    bad = runner.invoke(app, ["train", "codec", "image", "--data", str(tmp_path / "none"), "-o",
                              str(out), "--max-steps", "1"])
    assert bad.exit_code == 2


def test_tokenize_image_cli_round_trip_and_bad_files(tmp_path, trained_tiny):
    good = tmp_path / "good.png"
    Image.fromarray(staff_image(3, h=90, w=120)).save(good)  # pads to 96 x 128 -> 6 x 8 patches
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "codes"
    result = runner.invoke(app, ["tokenize", "image", str(bad), str(good), "-o", str(out),
                                 "--codec", str(trained_tiny), "--json"])
    assert result.exit_code == 3, result.output  # one bad file: reported, the good one still done
    assert "1 of 2 files failed" in result.output and "bad.png" in result.output
    grid = np.load(out / "good.npy")                  # lines 8 px apart -> x 1.125 -> 101 x 135
    assert grid.shape == (4, 7, 9) and grid.dtype == np.int16
    assert json.loads((out / "good.json").read_text()) == {"scale": 1.125, "size": [90, 120]}
    codec = ImageCodec.load(trained_tiny)
    codes = codec.encode(good)
    assert np.array_equal(grid, unflatten(codes.ids, 7))
    result = runner.invoke(app, ["tokenize", "image", str(out / "good.npy"), "-o", str(tmp_path / "png"),
                                 "--codec", str(trained_tiny), "--decode"])
    assert result.exit_code == 0, result.output
    png = np.asarray(Image.open(tmp_path / "png" / "good.png"))
    assert png.shape == (90, 120) and np.array_equal(png, codec.decode(codes))
    (out / "good.json").unlink()                        # a bare grid decodes at the codec's scale
    result = runner.invoke(app, ["tokenize", "image", str(out / "good.npy"), "-o", str(tmp_path / "png"),
                                 "--codec", str(trained_tiny), "--decode"])
    assert np.asarray(Image.open(tmp_path / "png" / "good.png")).shape == (112, 144)
    result = runner.invoke(app, ["tokenize", "image", str(good), "-o", str(tmp_path / "shifts"),
                                 "--codec", str(trained_tiny), "--shifts"])
    assert result.exit_code == 0 and len(list((tmp_path / "shifts").glob("good.s*.npy"))) == 32
    result = runner.invoke(app, ["tokenize", "image", str(good), "-o", str(tmp_path / "raw"),
                                 "--codec", str(trained_tiny), "--no-rescale"])
    assert result.exit_code == 0 and np.load(tmp_path / "raw" / "good.npy").shape == (4, 6, 8)


def test_line_terms_known_values():
    from umust_cli.train.image_codec import _blur, _line_terms

    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 10, :] = 1.0                                  # a one-pixel staff line
    off = TrainConfig()
    assert _line_terms(off, torch.zeros_like(x), x).item() == 0.0   # default: plain L1 + L2
    ink = TrainConfig(ink_weight=2.0)
    assert _line_terms(ink, x.clone(), x).item() == 0.0
    # a blank output misses every ink pixel by 1: the mean over ink pixels is 1, times the weight
    assert _line_terms(ink, torch.zeros_like(x), x).item() == pytest.approx(2.0)
    flat = torch.full((1, 1, 32, 32), 0.3)
    assert torch.allclose(_blur(flat), flat, atol=1e-6)  # blur keeps constants and the total ink
    assert _blur(x).sum().item() == pytest.approx(x.sum().item(), rel=1e-3)
    blur = TrainConfig(blur_weight=1.0)
    near, far = torch.roll(x, 1, dims=2), torch.roll(x, 8, dims=2)
    # a line one row off costs less than one far away: the blurred term sees position
    assert 0 < _line_terms(blur, near, x).item() < _line_terms(blur, far, x).item()


def test_old_run_config_resumes_with_new_loss_fields_at_default():
    d = TrainConfig().to_dict()
    del d["ink_weight"], d["blur_weight"]                  # as saved before those fields existed
    assert TrainConfig.from_dict(d) == TrainConfig()


def test_train_cli_init_from_a_shipped_codec(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(staff_image(0)).save(data / "0.png")
    base = ["train", "codec", "image", "--data", str(data), "--config", "tiny", "--threads", "1", "--json"]
    result = runner.invoke(app, base + ["-o", str(tmp_path / "a"), "--max-steps", "3",
                                        "--export", str(tmp_path / "ship")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, base + ["-o", str(tmp_path / "b"), "--max-steps", "0",
                                        "--init", str(tmp_path / "ship")])
    assert result.exit_code == 0, result.output
    gray = pad_to_multiple(staff_image(5))
    shipped, started = ImageCodec.load(tmp_path / "ship"), ImageCodec.load(tmp_path / "b")
    assert np.array_equal(shipped.encode_grid(gray), started.encode_grid(gray))
    assert read_log(tmp_path / "b")[0]["init_step"] == 3
    wrong = runner.invoke(app, ["train", "codec", "image", "--data", str(data), "--config", "small",
                                "-o", str(tmp_path / "c"), "--max-steps", "1", "--init", str(tmp_path / "ship")])
    assert wrong.exit_code == 2 and "another architecture" in wrong.output


def test_train_cli_init_takes_a_shipped_name(tmp_path):
    """--init NAME means the registry's shipped model, as --model/--codec do elsewhere."""
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(staff_image(0)).save(data / "0.png")
    result = runner.invoke(app, ["train", "codec", "image", "--data", str(data), "--config", "small",
                                 "--threads", "1", "--json", "-o", str(tmp_path / "run"), "--max-steps", "0",
                                 "--init", "small"])
    assert result.exit_code == 0, result.output
    gray = pad_to_multiple(staff_image(5))
    shipped, started = ImageCodec.load(registry.resolve("image-codec", None)), ImageCodec.load(tmp_path / "run")
    assert np.array_equal(shipped.encode_grid(gray), started.encode_grid(gray))
    wrong = runner.invoke(app, ["train", "codec", "image", "--data", str(data), "--config", "small",
                                "-o", str(tmp_path / "x"), "--max-steps", "0", "--init", "nonesuch"])
    assert wrong.exit_code == 2 and "nonesuch" in wrong.output and "small" in wrong.output
