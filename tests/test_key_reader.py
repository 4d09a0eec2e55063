"""The key-signature reader: crops of a system's first columns, the CNN, its trainer and
`umust train key-reader` on a small corpus of drawn systems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data.key_crops import CROP_HEIGHT, CROP_WIDTH, key_crop, split_key_crops
from umust_cli.errors import ImageError
from umust_cli.model.key_reader import KeyReader, KeyReaderConfig, crops_to_ink
from umust_cli.model.translator import KEY_FIFTHS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _system(flats: int, width: int = 600, spacing: int = 9) -> np.ndarray:
    """A drawn grand staff (five lines each, ``spacing`` apart) with ``flats`` dark blobs after
    the clef position, standing in for a key signature."""
    img = np.full((260, width), 255, np.uint8)
    for top in (60, 160):
        for k in range(5):
            img[top + k * spacing, 10:] = 0
        for f in range(flats):
            x = 50 + 12 * f
            img[top + 5:top + 25, x:x + 6] = 0
    img[60:196, 10:12] = 0
    return img


def test_key_crop_takes_the_first_columns_at_the_codecs_scale():
    crop = key_crop(_system(3))
    assert crop.shape == (CROP_HEIGHT, CROP_WIDTH) and crop.dtype == np.uint8
    assert (crop[:, :8] == 255).all() and (crop < 128).any()              # the margin, then ink
    small = key_crop(np.full((40, 50), 255, np.uint8))                      # no staff: as it is, padded white
    assert small.shape == (CROP_HEIGHT, CROP_WIDTH) and (small == 255).all()
    big = _system(2, spacing=18)                                            # twice the scale -> same crop size
    assert key_crop(big).shape == (CROP_HEIGHT, CROP_WIDTH)


def test_the_reader_learns_to_count_and_refuses_other_crop_sizes():
    torch.manual_seed(0)
    model = KeyReader(KeyReaderConfig(channels=4, dropout=0.0))
    crops = np.stack([key_crop(_system(n)) for n in (0, 2, 4)])
    target = torch.tensor([KEY_FIFTHS.index(k) for k in (0, -2, -4)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(crops_to_ink(crops)), target).backward()
        opt.step()
    read = model.read(crops)
    assert [k for k, _ in read] == [0, -2, -4] and all(0.0 < p <= 1.0 for _, p in read)
    assert model.training                                                   # read() leaves the mode as it was
    with pytest.raises(ImageError, match="crops must be"):
        model.read(np.zeros((1, 64, 64), np.uint8))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from PIL import Image

    root, rows = tmp_path_factory.mktemp("keys"), []
    for piece, split, flats in (("a", "train", 1), ("b", "train", 3), ("c", "valid", 3), ("d", "valid", 1)):
        for system in range(2):
            stem = f"pieces/{piece}/systems/{system:03d}"
            (root / stem).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_system(flats)).save(root / f"{stem}.png")
            Image.fromarray(_system(flats, spacing=10)).save(root / f"{stem}.scan0.png")
            (root / f"{stem}.lmx").write_text(f"measure key:fifths:{-flats} time beats:4 beat-type:4\n")
            rows.append({"piece_id": piece, "system": system, "split": split, "source": "music21:bach/x",
                         "png": f"{stem}.png", "lmx": f"{stem}.lmx", "scans": [f"{stem}.scan0.png"]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_split_crops_carry_each_systems_key_and_copy(corpus):
    crops = split_key_crops(corpus, "train")
    assert crops.crops.shape == (8, CROP_HEIGHT, CROP_WIDTH)
    assert crops.fifths.tolist() == [-1, -1, -1, -1, -3, -3, -3, -3]
    assert crops.copies == ("engraved", "scan0") * 4
    assert len(split_key_crops(corpus, "valid", scans=False).fifths) == 4


def test_train_key_reader_scores_valid_keeps_the_best_and_resumes(corpus, tmp_path):
    from umust_cli.checkpoint import read_config
    from umust_cli.train.engine import read_log

    out, runner = tmp_path / "run", CliRunner()
    base = ["train", "key-reader", "--data", str(corpus), "-o", str(out), "--channels", "4", "--batch-size", "8",
            "--warmup-steps", "2", "--decay-steps", "80", "--eval-every", "40", "--device", "cpu", "--json"]
    first = runner.invoke(app, base + ["--max-steps", "40"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, base + ["--max-steps", "80"])
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["start_step"] == 40 and summary["step"] == 80
    ev = summary["eval"]
    assert ev["key_systems/engraved"] == 4 and ev["key_systems/scanned"] == 4
    assert ev["key_accuracy/engraved"] == 1.0                    # one flat vs three: drawn blobs, counted
    config = read_config(out)
    assert config["kind"] == "umust-key-reader" and config["model"]["channels"] == 4
    assert (out / "best" / "model.safetensors").is_file()
    assert [r["step"] for r in read_log(out) if "eval" in r] == [40, 80]
