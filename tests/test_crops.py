"""Measure-prefix crops of engraved systems as extra OMR pairs (data/crops.py, pairs.prefix_crops)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from umust_cli.codecs.vocab import default_vocabulary
from umust_cli.data import pairs as pairs_io
from umust_cli.data.crops import BARS_SUFFIX
from umust_cli.model.translator import make_config
from tests.test_scans import _system

BARS = [400, 700, 1000, 1497]          # bar lines of a 4-measure grand staff, 1600 px wide
MEASURE = "measure clef:G2 staff:1 C4 voice:1 quarter staff:1 D4 quarter".split()


def _corpus(root: Path, measures: int) -> Path:
    page = np.full((400, 1600), 255, dtype=np.uint8)
    _system(page, 100, BARS)
    stem = "pieces/p/systems/000"
    (root / stem).parent.mkdir(parents=True)
    Image.fromarray(page).save(root / f"{stem}.png")
    np.save(root / f"{stem}.image.npy", np.random.default_rng(0).integers(0, 1024, (1, 4, 25, 100)).astype(np.int16))
    (root / f"{stem}.lmx").write_text(" ".join(MEASURE * measures) + "\n")
    row = {"piece_id": "p", "system": 0, "split": "train", "source": "music21:bach/x", "png": f"{stem}.png",
           "lmx": f"{stem}.lmx"}
    (root / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    return root


def test_prefix_crops_cut_codes_at_bar_lines_and_lmx_at_measures(tmp_path):
    root, vocab = _corpus(tmp_path / "c", 4), default_vocabulary()
    systems, problems = pairs_io.load_systems(root, "train", vocab, modalities=("image", "notation"), crops=True)
    assert not problems
    whole, crops = systems[0], systems[1:]
    assert [c.copy for c in crops] == ["crop1", "crop2", "crop3"]
    # the bar line's patch column is the crop's last (bar x ~ 401, 701, 1001 px; 16 px patches)
    assert [c.columns for c in crops] == [x // 16 + 1 for x in (401, 701, 1001)]
    n = len(MEASURE)
    assert [c.tokens["notation"] for c in crops] == [whole.tokens["notation"][:n * m] for m in (1, 2, 3)]
    store = pairs_io.SequenceStore(systems, make_config("tiny", vocab, "column"))
    steps, height = store.steps(2, "image")
    assert height == 25 and steps.shape == (25 * crops[1].columns + 2, 4)
    assert crops[1].length("image") == 25 * crops[1].columns
    cache = json.loads((root / f"pieces/p/systems/000{BARS_SUFFIX}").read_text())
    assert cache["columns"] == [c.columns for c in crops]
    (root / "pieces/p/systems/000.png").unlink()        # the cache answers without the image
    again, _ = pairs_io.load_systems(root, "train", vocab, modalities=("image", "notation"), crops=True)
    assert [s.columns for s in again] == [s.columns for s in systems]


def test_no_crops_when_the_measure_counts_disagree(tmp_path):
    root, vocab = _corpus(tmp_path / "c", 5), default_vocabulary()      # the image shows 4 measures
    systems, _ = pairs_io.load_systems(root, "train", vocab, modalities=("image", "notation"), crops=True)
    assert len(systems) == 1
    assert json.loads((root / f"pieces/p/systems/000{BARS_SUFFIX}").read_text())["columns"] is None
    plain, _ = pairs_io.load_systems(root, "train", vocab, modalities=("image", "notation"))
    assert len(plain) == 1
