"""The pitch reader: reader images at the codec's columns, the CNN + GRU CTC model, its trainer
and `umust train pitch-reader` on a small corpus of drawn systems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.codecs import image as image_codec
from umust_cli.data.staff_images import READ_HEIGHT, split_staff_images, staff_image
from umust_cli.data.staff_order import ctc_classes
from umust_cli.errors import ImageError
from umust_cli.model.pitch_reader import MARGIN, PitchReader, PitchReaderConfig, images_to_ink
from umust_cli.model.translator import column_ctc_loss
from umust_cli.train.pitch_reader import pad_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _system(notes: list[tuple[int, int]], width: int = 320, spacing: int = 9) -> np.ndarray:
    """A drawn grand staff (five lines each, ``spacing`` apart, a start line) with a notehead per
    (staff, line index) of ``notes``, one every 48 px."""
    img = np.full((230, width), 255, np.uint8)
    tops = (50, 150)
    for top in tops:
        for k in range(5):
            img[top + k * spacing, 4:] = 0
    img[tops[0]:tops[1] + 4 * spacing + 1, 4:6] = 0
    for i, (staff, line) in enumerate(notes):
        x, y = 40 + 48 * i, tops[staff] + line * spacing
        img[y - 4:y + 5, x - 5:x + 6] = 0
    return img


def test_staff_images_have_the_codecs_columns_and_one_height():
    gray = _system([(0, 1), (1, 3)], width=330)
    img = staff_image(gray)
    scaled = image_codec.preprocess(image_codec.normalize_scale(gray)[0])   # what `dataset tokenize` encodes
    assert img.shape == (READ_HEIGHT, scaled.shape[1]) and img.shape[1] % 16 == 0
    assert (img < 128).sum() == (scaled < 128).sum()                        # all the ink, centred
    assert staff_image(_system([], spacing=18)).shape[0] == READ_HEIGHT     # twice the scale -> same height
    with pytest.raises(ImageError, match="blank"):
        staff_image(np.full((40, 50), 255, np.uint8))


def test_the_reader_learns_each_staffs_notes_in_order_and_masks_padding():
    torch.manual_seed(0)
    cfg = PitchReaderConfig(channels=8, hidden=32, layers=1, ctc_target="written", ctc_classes=4, dropout=0.0)
    model = PitchReader(cfg)
    systems = [[(0, 0), (1, 4), (0, 4), (1, 2)], [(1, 0), (0, 2), (1, 4)]]   # class = line index // 2 + 1
    images = [staff_image(_system(s, width=w)) for s, w in zip(systems, (320, 256))]
    targets = [[[line // 2 + 1 for st, line in s if st == k] for k in (0, 1)] for s in systems]
    ink, cols = images_to_ink(images), torch.tensor([img.shape[1] // 16 for img in images])
    assert ink.shape == (2, 1, READ_HEIGHT, images[0].shape[1] + MARGIN) and cols.tolist()[1] < cols.tolist()[0]
    logits = model(ink, cols)
    assert logits.shape == (2, cols[0] + MARGIN // 16, 2 * 2 * 5)                 # columns, staves x frames x (4 + blank)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        column_ctc_loss(model(ink, cols), cols, pad_targets(targets)).backward()
        opt.step()
    with torch.no_grad():                      # batch-norm statistics of the final weights (they moved fast)
        for _ in range(30):
            model(ink, cols)
    read = model.read(images)
    model.eval()
    with torch.no_grad():                                                # alone as in a batch: the margin
        assert torch.allclose(model(ink, cols)[1, :cols[1]], model(images_to_ink(images[1:]), cols[1:])[0, :cols[1]], atol=1e-4)
    assert [c for c, _ in read] == cols.tolist()
    assert [[[p for _, p in staff] for staff in staves] for _, staves in read] == targets
    assert all(col < c for c, staves in read for staff in staves for col, _ in staff)
    with pytest.raises(ImageError, match="288-row"):
        model(torch.zeros(1, 1, 64, 64))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from PIL import Image

    root, rows = tmp_path_factory.mktemp("pitches"), []
    lmx = ("measure key:fifths:0 time beats:2 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
           "E4 quarter staff:1 G4 quarter staff:1 backup half C3 half staff:2\n")
    for piece, split in (("a", "train"), ("b", "train"), ("c", "valid")):
        for system in range(2):
            stem = f"pieces/{piece}/systems/{system:03d}"
            (root / stem).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_system([(0, 4), (1, 1), (0, 3)])).save(root / f"{stem}.png")
            Image.fromarray(_system([(0, 4), (1, 1), (0, 3)], spacing=10)).save(root / f"{stem}.scan0.png")
            (root / f"{stem}.lmx").write_text(lmx)
            rows.append({"piece_id": piece, "system": system, "split": split, "source": "music21:bach/x",
                         "png": f"{stem}.png", "lmx": f"{stem}.lmx", "scans": [f"{stem}.scan0.png"]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_split_images_carry_each_staffs_classes_and_copy(corpus):
    data = split_staff_images(corpus, "train", "written")
    names = [n for n, _ in ctc_classes("written")]
    assert len(data.images) == 8 and data.copies == ("engraved", "scan0") * 4
    assert [[names[c] for c in staff] for staff in data.targets[0]] == [["E4", "G4"], ["C3"]]
    assert len(split_staff_images(corpus, "valid", "marked", scans=False).images) == 2


def test_train_pitch_reader_scores_valid_keeps_the_best_and_resumes(corpus, tmp_path):
    from umust_cli.checkpoint import read_config
    from umust_cli.train.engine import read_log

    out, runner = tmp_path / "run", CliRunner()
    base = ["train", "pitch-reader", "--data", str(corpus), "-o", str(out), "--channels", "4", "--hidden", "16",
            "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "2", "--decay-steps", "60", "--eval-every", "30",
            "--ctc-target", "written", "--device", "cpu", "--json"]
    first = runner.invoke(app, base + ["--max-steps", "30"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, base + ["--max-steps", "60"])
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["start_step"] == 30 and summary["step"] == 60
    ev = summary["eval"]
    assert set(ev) == {"staff_error_rate/engraved", "staff_error_rate/scanned"}
    assert 0.0 <= ev["staff_error_rate/engraved"] < 1.0          # learns the drawn notes' order, not nothing
    config = read_config(out)
    assert config["kind"] == "umust-pitch-reader" and config["model"]["ctc_classes"] == 70
    assert (out / "best" / "model.safetensors").is_file()
    assert [r["step"] for r in read_log(out) if "eval" in r] == [30, 60]
    other = runner.invoke(app, base[:-1] + ["--max-steps", "61", "--ctc-target", "marked"])
    assert other.exit_code == 2 and "another training config" in other.output   # other classes: not resumed


@pytest.mark.parametrize("target, per_column", [("notated", 2), ("rhythmic", 4)])
def test_a_run_of_other_classes_starts_from_a_marked_reader_reading_what_it_read(corpus, tmp_path, target, per_column):
    """A notated reader (2 frames a column) or a rhythmic one (4) started from a marked one reads
    at first what that one read, where it read it: the classes both have keep their rows, and
    each old frame becomes the new frames at its place."""
    from umust_cli.checkpoint import load_model, read_config
    from umust_cli.cli.train import run_kind
    from umust_cli.model.translator import remap_ctc_head

    runner, marked, second = CliRunner(), tmp_path / "marked", tmp_path / target
    base = ["train", "pitch-reader", "--data", str(corpus), "--channels", "4", "--hidden", "16", "--batch-size", "4",
            "--lr", "1e-2", "--warmup-steps", "2", "--device", "cpu", "--json"]
    first = runner.invoke(app, base + ["-o", str(marked), "--max-steps", "20", "--ctc-target", "marked"])
    assert first.exit_code == 0, first.output
    state, config = load_model(marked)
    blank = torch.arange(len(state["ctc.bias"])) % (len(ctc_classes("marked")) + 1) == len(ctc_classes("marked"))
    state["ctc.bias"][blank] -= 5.0                    # a barely trained reader: make it read something
    old = PitchReader(PitchReaderConfig.from_dict(config["model"])).eval()
    old.load_state_dict(state)
    cfg = PitchReaderConfig.from_dict(dict(config["model"], ctc_target=target, ctc_classes=len(ctc_classes(target))))
    assert cfg.per_column == per_column
    new = PitchReader(cfg).eval()
    new.load_state_dict({k: v for k, v in state.items() if not k.startswith("ctc.")}, strict=False)
    weight, bias = remap_ctc_head(state["ctc.weight"], state["ctc.bias"], ctc_classes("marked"), ctc_classes(target),
                                  per_column=per_column)
    new.ctc.weight.data.copy_(weight)
    new.ctc.bias.data.copy_(bias)
    images = split_staff_images(corpus, "valid", "marked", scans=False).images
    old_classes, new_classes = ctc_classes("marked"), ctc_classes(target)
    read_old = [[[(p, old_classes[c]) for p, c in s] for s in staves] for _, staves in old.read(images)]
    assert any(staff for staves in read_old for staff in staves)
    assert [[[(p, new_classes[c]) for p, c in s] for s in staves] for _, staves in new.read(images)] == read_old
    # the trainer does the same when --init holds another target's reader, and then trains on
    run = runner.invoke(app, base + ["-o", str(second), "--max-steps", "2", "--ctc-target", target,
                                     "--init", str(marked)])
    assert run.exit_code == 0, run.output
    state, config = load_model(second)
    saved = PitchReaderConfig.from_dict(config["model"])                # frames 0: the target's
    assert (saved.ctc_target, saved.per_column) == (target, per_column)
    assert state["ctc.weight"].shape[0] == 2 * per_column * (len(ctc_classes(target)) + 1)
    # `train promote` ships a rhythmic pitch-reader run as the rhythm reader
    assert run_kind(read_config(second)) == ("rhythm-reader" if target == "rhythmic" else "pitch-reader")


@pytest.mark.parametrize("target, init", [("notated", "small"), ("beamed", "rhythm-reader")])
def test_a_run_of_the_shipped_readers_classes_starts_from_them(corpus, tmp_path, target, init):
    """`--init` from the shipped pitch reader (its config has no frames field) or rhythm reader
    (frames written out as 4) starts a run of the same classes, whose frames are the target's (0)."""
    from umust_cli.checkpoint import load_model
    from umust_cli.registry import WEIGHTS_DIR

    folder = "small" if init == "small" else str(WEIGHTS_DIR / init)
    run = CliRunner().invoke(app, ["train", "pitch-reader", "--data", str(corpus), "-o", str(tmp_path / "run"),
                                   "--ctc-target", target, "--init", folder, "--max-steps", "1", "--batch-size", "2",
                                   "--device", "cpu", "--json"])
    assert run.exit_code == 0, run.output
    state, config = load_model(tmp_path / "run")
    shipped, _ = load_model(WEIGHTS_DIR / ("pitch-reader" if init == "small" else init))
    assert config["model"]["frames"] == 0 and state["ctc.weight"].shape == shipped["ctc.weight"].shape


def test_a_beamed_head_starts_from_a_rhythmic_one_and_back(corpus, tmp_path):
    """A 4-frame rhythmic head remapped to the beamed classes keeps every shared row at every
    frame and starts JOIN from zero weights; a rhythmic run ``--init`` the shipped (beamed) rhythm
    reader trains and ships as the rhythm reader."""
    from umust_cli.checkpoint import load_model, read_config
    from umust_cli.cli.train import run_kind
    from umust_cli.data.staff_order import JOIN
    from umust_cli.model.translator import remap_ctc_head
    from umust_cli.registry import WEIGHTS_DIR

    shipped, config = load_model(WEIGHTS_DIR / "rhythm-reader")
    assert config["model"]["ctc_target"] == "beamed"
    old, new = ctc_classes("rhythmic"), ctc_classes("beamed")
    keep = [k for k in range(len(new) + 1) if k != len(old)]                 # the beamed head less JOIN
    w_old = shipped["ctc.weight"].view(2, 4, len(new) + 1, -1)[:, :, keep]
    b_old = shipped["ctc.bias"].view(2, 4, len(new) + 1)[:, :, keep]
    weight, bias = remap_ctc_head(w_old.reshape(-1, w_old.shape[-1]), b_old.reshape(-1), old, new,
                                  per_column=4, old_per_column=4)
    w_new, b_new = weight.view(2, 4, len(new) + 1, -1), bias.view(2, 4, len(new) + 1)
    assert torch.equal(w_new[:, :, :len(old)], w_old[:, :, :len(old)]) and torch.equal(w_new[:, :, -1], w_old[:, :, -1])
    assert new[len(old)] == JOIN and not w_new[:, :, len(old)].any()
    assert torch.equal(b_new[:, :, len(old)], b_old[:, :, -1] - 2.0)
    run = CliRunner().invoke(app, ["train", "pitch-reader", "--data", str(corpus), "-o", str(tmp_path / "run"),
                                   "--ctc-target", "rhythmic", "--init", str(WEIGHTS_DIR / "rhythm-reader"),
                                   "--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--json"])
    assert run.exit_code == 0, run.output
    state, _ = load_model(tmp_path / "run")
    assert state["ctc.weight"].shape[0] == 2 * 4 * (len(old) + 1) and run_kind(read_config(tmp_path / "run")) == "rhythm-reader"
