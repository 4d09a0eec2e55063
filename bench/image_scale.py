"""Image codec reconstruction against the engraving scale, without and with staff-space normalization.

    python bench/image_scale.py [--score examples/minuet-in-g.krn] [--systems 4]
        [--factors 0.6,0.7,...,1.6] [--codec NAME|PATH] [--threads 1] [--json OUT.json]

The score is engraved with verovio as the corpus builder does (``data/render.py``,
``EngraveConfig``) but at ``scale = 50 x factor`` (50 is the scale of the codec's
training renders: staff lines 9 px apart), so that the same systems come at staff
sizes from 0.6x to 1.6x of the training size; a white column is added where a
width would be a multiple of 16. For each system:

* before: the pixels encoded as they are (``encode_grid`` / ``decode_grid``, cropped
  to the input), what the codec did before normalization;
* after: ``ImageCodec.encode`` (staff spacing measured by run lengths, image resized to
  the training spacing) and ``decode`` (back to the input's size).

Score: ink F1 (``eval/image_metrics.foreground_f1``) of the reconstruction against the
codec's contrast-stepped input (``threshold_white``), at the best alignment within
+-3 px. Prints one JSON object with the mean per factor (and the measured spacing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.codecs.image import PATCH, ImageCodec, measure_staff, threshold_white  # noqa: E402
from umust_cli.eval.image_metrics import foreground_f1  # noqa: E402

FACTORS = tuple(round(0.6 + 0.1 * i, 1) for i in range(11))
TRAINING_SCALE = 50  # EngraveConfig.scale of the corpus renders


def render_systems(score: Path, factor: float, count: int) -> list[np.ndarray]:
    """The first ``count`` systems of ``score`` engraved at ``factor`` x the training scale."""
    from umust_cli.codecs.notation import score_to_musicxml
    from umust_cli.data import render

    xml = score_to_musicxml(score)
    config = render.EngraveConfig(scale=round(TRAINING_SCALE * factor))
    engraving = render.engrave(xml, render.measure_count(ET.fromstring(xml.encode())), config)
    out = []
    for system in engraving.systems[:count]:
        image = render.rasterize(system.svg, config.margin_px)
        if image.shape[1] % PATCH == 0:
            image = np.pad(image, ((0, 0), (0, 1)), constant_values=255)
        out.append(image)
    return out


def best_f1(ref: np.ndarray, hyp: np.ndarray, reach: int = 3) -> float:
    """foreground_f1 at the best shift of ``hyp`` against ``ref`` within +-reach px (overlap only)."""
    h, w = ref.shape
    best = 0.0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            r = ref[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            q = hyp[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
            best = max(best, foreground_f1(r, q))
    return best


def score_system(codec: ImageCodec, gray: np.ndarray) -> dict:
    ref = threshold_white(gray)
    h, w = gray.shape
    before = codec.decode_grid(codec.encode_grid(gray))[:h, :w]
    codes = codec.encode(gray)
    after = codec.decode(codes)
    return {"spacing": measure_staff(gray)[1], "scale": codes.scale,
            "before": best_f1(ref, before), "after": best_f1(ref, after)}


def main() -> None:
    import torch

    from umust_cli.registry import resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--score", type=Path, default=REPO / "examples" / "minuet-in-g.krn")
    ap.add_argument("--systems", type=int, default=4)
    ap.add_argument("--factors", default=",".join(map(str, FACTORS)))
    ap.add_argument("--codec", default=None, help="image codec name or folder (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = ImageCodec.load(resolve("image-codec", args.codec))
    rows, t0 = [], time.time()
    for factor in (float(f) for f in args.factors.split(",")):
        systems = [score_system(codec, g) for g in render_systems(args.score, factor, args.systems)]
        rows.append({"factor": factor, "systems": len(systems),
                     **{k: round(float(np.mean([s[k] for s in systems])), 3)
                        for k in ("spacing", "scale", "before", "after")}})
        print(json.dumps(rows[-1]), file=sys.stderr)
    out = {"score": args.score.name, "codec": args.codec or "default", "seconds": round(time.time() - t0, 1),
           "rows": rows}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
