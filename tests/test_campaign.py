"""The translators' GPU campaign as a CPU dry run: `scripts/gpu_pack_translator.py pack` on the
tiny tokenized corpus of test_translator_train, then `scripts/gpu-translator.sh` twice with
DRY=1 (tiny preset, CPU, a carried wheel installed with pip --no-index), as a device call
would run it: install, unpack, train both directions, export, resume in the second call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.test_translator_train import make_corpus
from umust_cli.errors import HeldOutRepertoireError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_pack_translator as gp  # noqa: E402


def _wheel(folder: Path) -> Path:
    """A one-module wheel that carries a bulky soundfont, as pretty_midi's does."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaigndemo-1.0-py3-none-any.whl"
    files = {"campaigndemo/__init__.py": b"VALUE = 7\n", "campaigndemo/Big.sf2": b"\0" * 50_000,
             "campaigndemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: campaigndemo\nVersion: 1.0\n",
             "campaigndemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                 b"Tag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "campaigndemo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("campaigndemo-1.0.dist-info/RECORD", record)
    return folder


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("campaign")
    corpus = make_corpus(root / "c")
    rep = gp.pack(corpus, [corpus], root / "pack", _wheel(root / "whl"), budget_mib=None, seed=0)
    return corpus, root / "pack", rep


def test_pack_carries_train_and_valid_only_with_every_variant(packed):
    corpus, pack, rep = packed
    assert rep["rows"] == {"train": 4, "valid": 1}
    with tarfile.open(pack / gp.DATA, "r:bz2") as tar:
        names = set(tar.getnames())
    assert not any("/delta/" in n for n in names)              # the test split stays home
    assert "pieces/alpha/systems/000.lmx" in names and "pieces/alpha/systems/000.mid" in names
    assert rep["image_systems"] == 5 and rep["groups_left_out"] == 0
    assert rep["code_files"]["train/image"]["variants"] == 4 * 32
    assert rep["code_files"]["train/audio"]["variants"] == 3 * 9
    assert rep["data_bytes"] <= rep["budget_bytes"]
    assert rep["tree_bytes"] > 1_000_000                       # the repository that travels too
    assert rep["fit"]["image_systems_beside_repo"] > 1000
    with zipfile.ZipFile(next((pack / "wheels").glob("*.whl"))) as z:   # the soundfont is dropped
        assert not any(n.endswith(".sf2") for n in z.namelist())
        assert b".sf2" not in z.read("campaigndemo-1.0.dist-info/RECORD")


def test_unpack_gives_the_trainers_layout_unshifted_variant_first(packed, tmp_path):
    corpus, pack, _ = packed
    assert "unpacked" in gp.unpack(pack, tmp_path / "d")
    assert "already holds" in gp.unpack(pack, tmp_path / "d")
    stem = "pieces/alpha/systems/000"
    for suffix, first in ((".image.npy", 0), (".audio.npy", 4)):
        src, got = np.load(corpus / (stem + suffix)), np.load(tmp_path / "d" / (stem + suffix))
        assert got.shape == src.shape and np.array_equal(got[0], src[first])
    rows = [json.loads(x) for x in (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "valid"}


def test_a_small_budget_drops_variants_before_systems(packed, tmp_path):
    corpus, _, full = packed
    rep = gp.pack(corpus, [corpus], tmp_path / "p", None, budget_mib=(full["tokens_bytes"] + gp.BLOCK + 9000) / 2**20,
                  seed=0)
    assert rep["groups_left_out"] == 0 and rep["image_systems"] == 5
    assert rep["code_files"]["train/image"]["variants"] < 4 * 32


def test_variant_order_and_save_every(tmp_path):
    assert gp.variant_order("audio", 9)[:3] == [4, 0, 8] and sorted(gp.variant_order("image", 32)) == list(range(32))
    assert gp.variant_order("image", 1) == [0]
    assert gp.save_every(tmp_path, 120, 77) == 77                      # no log yet: the estimate
    rows = [{"step": 1, "time_s": 10.0}, {"step": 2, "time_s": 50.0},   # an earlier call at another rate
            {"step": 3, "time_s": 1.0}, {"step": 13, "time_s": 3.0}]    # the last call: 5 steps/s
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert gp.save_every(tmp_path, 120, 77) == 600


def test_pack_refuses_held_out_repertoire(tmp_path):
    corpus = make_corpus(tmp_path / "c", source="/scores/beethoven/sonata01-1.krn")
    with pytest.raises(HeldOutRepertoireError):
        gp.pack(corpus, [corpus], tmp_path / "p", None, budget_mib=None, seed=0)


def _call(pack: Path, runs: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "FORCE_WHEELS": "1", "OMP_NUM_THREADS": "1", **env}
    try:
        return subprocess.run(["bash", str(REPO / "scripts" / "gpu-translator.sh"), str(pack), str(runs), str(out),
                               "600"], env=full, capture_output=True, text=True, timeout=600)
    finally:   # the trainers run in their own session: end any that a failure left behind
        for pid_file in runs.glob("*.pid"):
            try:
                pid = int(pid_file.read_text())
                if b"translator" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


@pytest.mark.slow
def test_dry_run_trains_exports_and_resumes(packed, tmp_path, vocab):
    import torch
    from safetensors.torch import load_file

    from umust_cli.translate.engines import load_translator

    _, pack, _ = packed
    first = _call(pack, tmp_path / "runs", tmp_path / "out1", MAX_STEPS="3")
    assert first.returncode == 0, first.stdout + first.stderr
    out = tmp_path / "out1"
    files = [f for f in out.rglob("*") if f.is_file()]
    assert len(files) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in files)
    assert (tmp_path / "runs" / "site" / "campaigndemo" / "__init__.py").is_file()
    for d in ("i2a", "a2i"):
        folder = out / f"translator-{d}"
        assert {f.name for f in folder.iterdir()} == {"model.safetensors", "config.json", "vocabulary.json"}
        assert load_translator(folder, vocab) is not None
        weights = load_file(folder / "model.safetensors")
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    with tarfile.open(out / "logs.tgz") as tar:
        summary = json.load(tar.extractfile("summary.json"))
    assert summary["i2a"]["step"] == 3 and summary["a2i"]["step"] == 3
    second = _call(pack, tmp_path / "runs", tmp_path / "out2", MAX_STEPS="5", DIRECTIONS="i2a", FORCE_WHEELS="0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already holds this pack" in second.stdout
    log = [json.loads(x) for x in (tmp_path / "runs" / "i2a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5]       # resumed, not restarted
