"""Real scans as OMR training material: `dataset tokenize --split realscan_*` (staff-scale
normalization, one variant, unmeasurable scans logged) and `train translator --realscans`
(realscan_train systems as OMR pairs only, realscan_valid scored beside the engraved valid).

The training corpus is test_translator_train's tiny tokenized corpus (random codes and tokens)
with two real-scan rows whose codes sit in a folder of their own (``--realscan-codes``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from umust_cli.checkpoint import read_config
from umust_cli.cli.main import app
from umust_cli.cli.train import _translator_config
from umust_cli.cli.train import app as train_app
from umust_cli.codecs import image as image_codec
from umust_cli.codecs.notation import NotationCodec
from umust_cli.data import pairs as pairs_io
from umust_cli.data import tokenize
from umust_cli.errors import BadInputError
from umust_cli.train import background
from umust_cli.train.engine import RunOptions, fit, read_log
from umust_cli.train.translator import TrainConfig, make_task
from tests.test_translator_train import make_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
LMX = NotationCodec().token_names()
# piece, system, split, image (Hp, Wp), LMX tokens
REAL = [("alpha", 0, "realscan_train", (2, 3), 5), ("gamma", 0, "realscan_valid", (2, 2), 4)]


def add_real_scans(corpus: Path, codes: Path, seed: int = 7) -> list[dict]:
    """REAL as realscans.jsonl rows of ``corpus`` (LMX beside the corpus, image codes under ``codes``)."""
    rng, rows = np.random.default_rng(seed), []
    for piece, system, split, shape, n_lmx in REAL:
        stem = f"pieces/{piece}/realscans/{system:03d}"
        for root in (corpus, codes):
            (root / stem).parent.mkdir(parents=True, exist_ok=True)
        (corpus / f"{stem}.lmx").write_text(" ".join(rng.choice(LMX, n_lmx)) + "\n")
        np.save(codes / f"{stem}.image.npy", rng.integers(0, 1024, (1, 4, *shape)).astype(np.int16))
        rows.append({"piece_id": piece, "system": system, "split": split, "source": "music21:bach/x",
                     "png": f"{stem}.png", "lmx": f"{stem}.lmx", "musicxml": f"{stem}.musicxml"})
    (corpus / "realscans.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rscorpus")
    corpus = make_corpus(root / "c", variants=False)
    add_real_scans(corpus, root / "rs-codes")
    return corpus, root / "rs-codes"


def _cfg(tasks: str, **kw) -> TrainConfig:
    return TrainConfig(direction="i2a", preset="tiny", tasks=pairs_io.parse_tasks(tasks, "i2a"), batch_tokens=4096,
                       warmup_steps=5, decay_steps=1000, codebook_init=False, precision="fp32", **kw)


def _run(steps: int) -> RunOptions:
    return RunOptions(max_steps=steps, save_every=1000, device="cpu", progress=False, eval_items=2)


# ---------------------------------------------------------------------------
# dataset tokenize
# ---------------------------------------------------------------------------

def _staves(path: Path, spacing: int, width: int = 320) -> None:
    """Two five-line staves ``spacing`` px apart (2 px lines) with a few note-like blobs."""
    gray = np.full((12 * spacing + 40, width), 255, np.uint8)
    for staff in (0, 1):
        top = 20 + staff * 6 * spacing
        for line in range(5):
            gray[top + line * spacing:top + line * spacing + 2, 10:width - 10] = 0
        for x in range(40, width - 40, 60):
            gray[top + spacing:top + 2 * spacing, x:x + spacing] = 0
    Image.fromarray(gray).save(path)


def test_tokenize_rescales_real_scans_and_logs_the_unmeasurable(tmp_path):
    corpus, out = tmp_path / "c", tmp_path / "codes"
    rows = []
    for number, split in enumerate(("realscan_train", "realscan_valid", "realscan_train")):
        stem = f"pieces/p/realscans/{number:03d}"
        (corpus / stem).parent.mkdir(parents=True, exist_ok=True)
        rows.append({"piece_id": "p", "system": number, "split": split, "png": f"{stem}.png", "lmx": f"{stem}.lmx"})
    _staves(corpus / rows[0]["png"], spacing=18)                   # twice the codec's 9 px
    _staves(corpus / rows[1]["png"], spacing=9)
    Image.fromarray(np.full((60, 300), 255, np.uint8)).save(corpus / rows[2]["png"])   # no staff
    (corpus / "manifest.jsonl").write_text(json.dumps({"piece_id": "p", "system": 0, "split": "train",
                                                       "png": "pieces/p/systems/000.png"}) + "\n")
    (corpus / "realscans.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["dataset", "tokenize", str(corpus), "--split", "realscan_train", "--split",
                                 "realscan_valid", "--image-codec", "small", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 3, result.output                     # some files failed, the others done
    codes = [out / f"pieces/p/realscans/{n:03d}.image.npy" for n in range(3)]
    big, same = np.load(codes[0]), np.load(codes[1])
    assert big.shape == (1, 4, 8, 10)          # 256 x 320 px at 18 px spacing -> 128 x 160: one variant
    assert same.shape == (1, 4, 10, 20)        # 148 x 320 px at 9 px: as it is (padded to 160 x 320)
    assert not codes[2].exists() and not (out / "pieces/p/systems/000.image.npy").exists()
    errors = [json.loads(line) for line in (out / tokenize.ERRORS).read_text().splitlines()]
    assert [(e["system"], e["split"]) for e in errors] == [(2, "realscan_train")]
    assert "no staff found" in errors[0]["error"]
    summary = json.loads((out / tokenize.SUMMARY).read_text())
    assert summary["counts"]["image"]["realscan_train"] == {"encoded": 1, "skipped": 0, "failed": 1}


def test_image_inputs_rescale_only_when_asked(tmp_path):
    _staves(tmp_path / "s.png", spacing=18)
    plain = tokenize.image_inputs(tmp_path / "s.png", 1)[0]
    scaled = tokenize.image_inputs(tmp_path / "s.png", 1, rescale=True)[0]
    assert plain.shape == (256, 320) and scaled.shape == (128, 160)
    assert image_codec.measure_staff(scaled)[1] == pytest.approx(9.0, abs=0.6)


# ---------------------------------------------------------------------------
# train translator --realscans
# ---------------------------------------------------------------------------

def test_real_scans_are_omr_pairs_only_and_validated_beside_the_engraved(real_corpus, vocab, tmp_path):
    corpus, rs_codes = real_corpus
    cfg = _cfg("omr,lmx2image,midi2audio", realscans=True)
    task = make_task(corpus, tmp_path / "run", cfg, _run(2), vocab, realscan_codes=rs_codes)
    train, systems = task.train_data, task.train_data.systems
    omr, lmx2image = ([systems[p.system].key for p in train.pairs[t]] for t in (0, 1))
    assert "alpha/000/realscan" in omr and len(omr) == 5             # 4 engraved train systems + the scan
    assert not any(k.endswith("/realscan") for k in lmx2image)       # never another task's pair
    assert [task.real_valid.systems[p.system].key for p in task.real_valid.pairs[0]] == ["gamma/000/realscan"]
    assert task.summary()["data"]["omr"] == {"train": 5, "valid": 1, "too_long": 0,
                                                 "realscan_train": 1, "realscan_valid": 1}
    fit(task, tmp_path / "run", cfg, _run(2))
    evals = [r["eval"] for r in read_log(tmp_path / "run") if "eval" in r]
    assert evals and {"loss", "SER", "realscan/loss", "realscan/SER", "realscan/loss/omr"} <= set(evals[-1])
    assert evals[-1]["realscan/ser_systems"] == 1 and evals[-1]["realscan/loss"] > 0


def test_without_the_option_no_real_scan_is_read(real_corpus, vocab, tmp_path):
    corpus, _ = real_corpus
    task = make_task(corpus, tmp_path / "run", _cfg("omr"), _run(1), vocab)
    assert len(task.train_data.pairs[0]) == 4 and task.real_valid is None
    assert "realscan_train" not in task.summary()["data"]["omr"]


def test_real_scans_without_codes_are_one_clear_error(real_corpus, vocab, tmp_path):
    corpus, _ = real_corpus              # the scans' codes are not beside the corpus
    with pytest.raises(BadInputError, match="realscan_train"):
        make_task(corpus, tmp_path / "run", _cfg("omr", realscans=True), _run(1), vocab)
    with pytest.raises(BadInputError, match="OMR task"):
        make_task(corpus, tmp_path / "run2", _cfg("midi2audio", realscans=True), _run(1), vocab)


def test_cli_saves_the_option_and_background_keeps_it(real_corpus, tmp_path):
    corpus, rs_codes = real_corpus
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", "translator", "--data", str(corpus), "-o", str(out), "--preset", "tiny",
                                 "--tasks", "omr", "--max-steps", "2", "--device", "cpu", "--json", "--realscans",
                                 "--realscan-codes", str(rs_codes), "--eval-items", "1", "--no-codebook-init"])
    assert result.exit_code == 0, result.output
    saved = read_config(out)["train"]
    assert saved["realscans"] is True and read_log(out)[0]["data"]["omr"]["realscan_train"] == 1
    flags = background.config_flags(saved)
    assert "--realscans" in flags
    params = typer_params(["--data", "C", "-o", "R", "--max-steps", "1", *flags])
    assert _translator_config(params, 1) == TrainConfig.from_dict(saved)
    old = {k: v for k, v in saved.items() if k != "realscans"}      # a run saved before the option
    assert TrainConfig.from_dict(old).realscans is False


def typer_params(argv: list[str]) -> dict:
    import typer

    return typer.main.get_command(train_app).commands["translator"].make_context("translator", argv).params


def test_translate_and_eval_omr_read_a_real_scan_split(real_corpus, tmp_path):
    """A tiny trained model predicts the realscan_valid split from its codes; eval omr scores it."""
    corpus, rs_codes = real_corpus
    run, pred = tmp_path / "r", tmp_path / "pred"
    trained = runner.invoke(app, ["train", "translator", "--data", str(corpus), "-o", str(run), "--preset", "tiny",
                                  "--tasks", "omr", "--max-steps", "1", "--device", "cpu", "--json",
                                  "--no-codebook-init", "--eval-items", "0"])
    assert trained.exit_code == 0, trained.output
    out = runner.invoke(app, ["translate", "--data", str(corpus), "--codes", str(rs_codes), "--split",
                              "realscan_valid", "--model", str(run), "-o", str(pred), "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    assert (pred / "gamma" / "000.lmx").is_file() and not (pred / "alpha").exists()
    scored = runner.invoke(app, ["eval", "omr", str(pred), "--data", str(corpus), "--split", "realscan_valid",
                                 "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["summary"]["files"] == 1
