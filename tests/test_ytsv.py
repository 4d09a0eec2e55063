"""`umust dataset ytsv`: a tiny generated score-following video (bench/make_ytsv.py's writer) goes
through slide segmentation, letterbox removal, system cropping and filtering into a manifest."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data import ytsv

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SR = 22050
SLIDE_S = 1.6
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _bench():
    spec = importlib.util.spec_from_file_location("make_ytsv", REPO / "bench" / "make_ytsv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grand_staff(width: int, seed: int, space: int = 8) -> np.ndarray:
    """A drawn piano system: two 5-line staves joined by a start line and barlines, a few noteheads."""
    rng = np.random.default_rng(seed)
    height = 22 * space
    img = np.full((height, width), 255, np.uint8)
    tops = (6 * space, 13 * space)
    for top in tops:
        for k in range(5):
            img[top + k * space: top + k * space + 2, 10: width - 10] = 0
    span = slice(tops[0], tops[1] + 4 * space + 2)
    for x in (10, *range(10 + width // 4, width - 9, width // 4)):
        img[span, min(x, width - 12): min(x, width - 12) + 2] = 0
    for _ in range(12):  # noteheads with stems
        x, y = int(rng.integers(40, width - 40)), int(rng.choice(tops) + rng.integers(0, 4 * space))
        img[y - 3: y + 4, x - 4: x + 5] = 0
        img[y - 3 * space: y, x + 4: x + 6] = 0
    return img


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[dict], list[float]]:
    """A 640x360, 10 fps video of 4 slides (2, 1, 2 systems, then a too-dark page), brought in by
    a cut, a cross-fade and a wipe; (path, truth slides with system boxes, transition times)."""
    bench = _bench()
    out = tmp_path_factory.mktemp("ytsv") / "tiny.mp4"
    frames, truth = [], []
    for k, n in enumerate((2, 1, 2, 1)):
        page, boxes = bench.compose_page([grand_staff(560, 10 * k + i) for i in range(n)])
        if k == 3:
            page = (page * 0.35).astype(np.uint8) + 60  # a poor, dark scan
        frame, moved = bench.place(page, boxes, (640, 360))
        frames.append(frame)
        truth.append({"start": k * SLIDE_S, "end": (k + 1) * SLIDE_S, "boxes": moved})
    t = np.arange(int(4 * SLIDE_S * SR)) / SR
    audio = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    bench.write_video(out, frames, [s["start"] for s in truth], ["first", "cut", "fade", "wipe"], audio, SR,
                      10.0, 0.5)
    return out, truth, [SLIDE_S, 2 * SLIDE_S, 3 * SLIDE_S]


def iou(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_segmentation_rule_on_a_difference_sequence():
    cfg = ytsv.YtsvConfig(min_still_s=0.3, merge_gap_s=0.1)
    changes = np.zeros(40)
    changes[10] = 30.0  # a cut: one changing frame
    changes[[25, 26, 27, 29]] = 3.0  # a fade with one quiet frame inside it: one transition
    seg = ytsv.segment(changes, 10.0, cfg)
    assert seg.transitions == [(10, 10), (25, 29)]
    assert seg.slides == [(0, 9), (11, 24), (30, 39)]
    assert ytsv.slide_spans(seg, 4.0) == [(0.0, 1.0), (1.0, 2.5), (2.5, 4.0)]
    slow = np.zeros((40, 2))
    slow[12:28, 0] = 0.3  # a 1.6 s fade: every step below the threshold ...
    slow[14:30, 1] = 0.9  # ... but not the difference to 0.2 s before; it starts at its first step
    assert ytsv.segment(slow, 10.0, cfg).transitions == [(12, 29)]
    assert ytsv.segment(slow[:, :1], 10.0, cfg).transitions == []


def test_video_to_manifest_matches_the_truth(video, tmp_path):
    path, truth, times = video
    result = runner.invoke(app, ["dataset", "ytsv", str(path), "-o", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    piece = json.loads((tmp_path / "c/pieces/ytsv-tiny/piece.json").read_text())
    found = [t["start"] for t in piece["transitions"]]
    assert len(found) == 3 and all(abs(f - t) <= 0.1 for f, t in zip(found, times)), found
    rows = [json.loads(line) for line in (tmp_path / "c/manifest.jsonl").read_text().splitlines()]
    assert [r["slide"] for r in rows] == [0, 0, 1, 2, 2] and [r["system"] for r in rows] == list(range(5))
    for r in rows:
        slide = truth[r["slide"]]
        assert abs(r["start"] - slide["start"]) <= 0.1 and abs(r["end"] - slide["end"]) <= 0.1
        assert max(iou(r["box"], b) for b in slide["boxes"]) >= 0.8
        audio, rate = soundfile.read(tmp_path / "c" / r["wav"])
        assert rate == ytsv.SAMPLE_RATE and abs(len(audio) / rate - r["duration"]) < 0.01
        assert (tmp_path / "c" / r["png"]).is_file() and r["split"] in ("train", "valid", "test")
    rejected = [json.loads(line) for line in (tmp_path / "c/rejections.jsonl").read_text().splitlines()]
    assert [(r["slide"], r["reason"].split(":")[0]) for r in rejected] == [(3, "poor scan")]


def test_crops_have_one_staff_spacing(video, tmp_path):
    from umust_cli.data.scans import ScanConfig, detect_systems
    from umust_cli.inputs import load_image

    path, _, _ = video
    cfg = ytsv.YtsvConfig(staff_space_px=10.0)
    summary, failures = ytsv.build_ytsv([path], tmp_path, cfg)
    assert not failures and summary.systems == 5 and summary.rejections == {"poor scan": 1}
    for png in sorted((tmp_path / "pieces/ytsv-tiny/systems").glob("*.png")):
        (system,) = detect_systems(load_image(png), ScanConfig())
        assert system.space == pytest.approx(10.0, abs=0.6)


def test_unreadable_video_is_one_line_and_the_batch_goes_on(video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    result = runner.invoke(app, ["dataset", "ytsv", str(bad), "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "bad.mp4" in result.output
    result = runner.invoke(app, ["dataset", "ytsv", str(bad), str(video[0]), "-o", str(tmp_path / "c")])
    assert result.exit_code == 3, result.output
    errors = (tmp_path / "c/errors.jsonl").read_text().splitlines()
    assert len(errors) == 1 and "not a video" in errors[0]
    assert len((tmp_path / "c/manifest.jsonl").read_text().splitlines()) == 5


def test_short_slides_are_rejected_with_their_reason(video, tmp_path):
    cfg = ytsv.YtsvConfig(min_audio_s=2.0)
    summary, _ = ytsv.build_ytsv([video[0]], tmp_path, cfg)
    assert summary.systems == 0 and summary.rejections == {"audio length": 4}


def test_systems_of_other_staff_counts_are_rejected(video, tmp_path):
    summary, _ = ytsv.build_ytsv([video[0]], tmp_path, ytsv.YtsvConfig(staves=(1, 3)))
    assert summary.systems == 0 and summary.rejections == {"staff count": 5, "poor scan": 1}
