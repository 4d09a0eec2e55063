"""Scanned-look augmentation: shapes, determinism, white stays white, staff lines survive."""

import numpy as np
import pytest
from scipy.signal import find_peaks

from umust_cli.data.augment import PRINT_LOOK, ScanLookConfig, scan_look

LINE_ROWS = (80, 92, 104, 116, 128)  # staff lines 12 px apart, 2 px thick


def _staff_image(height: int = 220, width: int = 800) -> np.ndarray:
    img = np.full((height, width), 255, np.uint8)
    for row in LINE_ROWS:
        img[row : row + 2, 20 : width - 20] = 0  # centre of each line at row + 0.5
    img[80:130, 200:203] = 0  # a barline and a note head, so there is more than lines
    img[95:102, 400:410] = 0
    return img


@pytest.mark.parametrize("shape", [(300, 2500), (37, 53), (5, 5)])
def test_shape_and_dtype_are_kept(shape):
    img = np.full(shape, 255, np.uint8)
    img[shape[0] // 2, :] = 0
    out = scan_look(img, ScanLookConfig(), seed=3)
    assert out.shape == shape and out.dtype == np.uint8


def test_deterministic_per_seed_and_seeds_differ():
    img = _staff_image()
    cfg = ScanLookConfig()
    a, b = scan_look(img, cfg, seed=11), scan_look(img, cfg, seed=11)
    assert np.array_equal(a, b)
    others = [scan_look(img, cfg, seed=s) for s in (12, 13)]
    assert all(np.abs(o.astype(int) - a).mean() > 1.0 for o in others)
    assert np.array_equal(img, _staff_image())  # the input is not modified


@pytest.mark.parametrize("binarize_prob", [0.0, 1.0])
def test_blank_page_stays_mostly_white(binarize_prob):
    img = np.full((300, 1000), 255, np.uint8)
    cfg = ScanLookConfig(binarize_prob=binarize_prob, max_rotation_deg=2.0)
    for seed in range(5):
        out = scan_look(img, cfg, seed)
        assert out.mean() > 215
        assert (out > 180).mean() > 0.99


@pytest.mark.parametrize("cfg", [ScanLookConfig(), ScanLookConfig(binarize_prob=1.0, noise_std=(12.0, 12.0)),
                                 PRINT_LOOK])
def test_staff_lines_stay_detectable(cfg):
    img = _staff_image()
    for seed in range(10):
        out = scan_look(img, cfg, seed)
        # row darkness in a central band, where the rotation moves rows by < 1 px
        profile = 255.0 - out[:, 350:450].astype(float).mean(axis=1)
        peaks, props = find_peaks(profile, distance=6, prominence=20)
        top5 = np.sort(peaks[np.argsort(props["prominences"])[-5:]])
        assert len(top5) == 5, f"seed {seed}: only {len(peaks)} peaks"
        assert np.all(np.abs(top5 - (np.array(LINE_ROWS) + 0.5)) <= 3), f"seed {seed}: peaks at {top5}"


def test_rotation_fills_with_white():
    img = np.zeros((200, 600), np.uint8)  # an all-black page: whatever the rotation uncovers turns white
    cfg = ScanLookConfig(max_rotation_deg=3.0, noise_std=(0.0, 0.0), blur_sigma=(0.0, 0.0), binarize_prob=0.0)
    border = int(np.ceil(300 * np.sin(np.deg2rad(3.0)))) + 3  # rotation + warp move the edge at most this far
    white_corners = 0
    for seed in range(8):
        out = scan_look(img, cfg, seed)
        assert out[border:-border, border:-border].max() < 100  # the inside stays ink
        white_corners += max(out[:3, :3].mean(), out[:3, -3:].mean()) > 200
    assert white_corners >= 4  # most draws rotate a corner far enough to uncover it


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        scan_look(np.zeros((4, 4, 3), np.uint8), ScanLookConfig(), 0)
    with pytest.raises(ValueError):
        scan_look(np.zeros((4, 4), np.float32), ScanLookConfig(), 0)


# Only the printed-page degradation under test: no rotation, warp, tones, blur, noise or JPEG loss.
PLAIN = ScanLookConfig(blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0), max_rotation_deg=0.0, warp_strength=0.0,
                       binarize_prob=0.0, jpeg_quality=(100, 100), paper_tone=(255, 255), ink_tone=(0, 0))


def test_print_look_is_deterministic_and_differs_from_classic():
    img = _staff_image()
    a, b = scan_look(img, PRINT_LOOK, seed=4), scan_look(img, PRINT_LOOK, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, scan_look(img, ScanLookConfig(), seed=4))


def test_page_curl_bends_lines_towards_one_edge():
    out = scan_look(_staff_image(), ScanLookConfig(**{**PLAIN.__dict__, "page_curl": (8.0, 8.0)}), seed=1)
    top = [int(np.argmax(255 - out[:, x].astype(int) > 100)) for x in (30, 400, 770)]
    assert top[1] - LINE_ROWS[0] in (1, 2, 3) and sorted([top[0], top[2]])[1] - LINE_ROWS[0] >= 7


def test_ink_spread_thickens_and_resolution_softens():
    img = _staff_image()
    spread = scan_look(img, ScanLookConfig(**{**PLAIN.__dict__, "ink_spread": (1.0, 1.0)}), seed=0)
    assert (spread < 128).mean() > 1.3 * (img < 128).mean()
    low = scan_look(img, ScanLookConfig(**{**PLAIN.__dict__, "resolution": (0.4, 0.4)}), seed=0)
    assert ((low > 30) & (low < 225)).mean() > 5 * ((img > 30) & (img < 225)).mean() + 0.01  # grey edges


def test_bleed_through_texture_and_uneven_ink_stay_faint():
    img = _staff_image()
    cfg = ScanLookConfig(**{**PLAIN.__dict__, "bleed_through": (0.15, 0.15), "paper_texture": (0.1, 0.1),
                            "ink_unevenness": (0.4, 0.4)})
    out = scan_look(img, cfg, seed=2).astype(int)
    paper, ink = out[img == 255], out[img == 0]
    assert 200 < paper.mean() < 252 and paper.std() > 2  # darker, textured paper, still paper
    assert ink.mean() < 110 and ink.std() > 5  # ink still ink, of varying darkness


def test_bitonal_scan_is_ink_or_paper():
    cfg = ScanLookConfig(**{**PLAIN.__dict__, "bitonal_prob": 1.0, "noise_std": (20.0, 20.0), "ink_tone": (10, 10)})
    out = scan_look(_staff_image(), cfg, seed=3)
    assert ((out > 40) & (out < 215)).mean() < 0.01 and (out > 215).mean() > 0.9  # JPEG at 100 keeps it so
    assert abs((out < 128).mean() - (_staff_image() < 128).mean()) < 0.002  # the ink stays where it was
