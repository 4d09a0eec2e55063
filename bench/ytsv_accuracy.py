"""Accuracy of `umust dataset ytsv` on videos made by bench/make_ytsv.py (their truth JSONs).

Transitions: a detected transition (its first changing frame's time) matches a true one
(the time the cut, fade or wipe starts) within +-TOL s, one to one, in time order;
precision = matched / detected, recall = matched / true. Slides: each true slide is
matched with the detected slide whose stable frame lies inside it; span error = |start| and
|end| differences. Systems: each true box (frame pixels) against the kept crops of its
matched slide: IoU of the best one (0 when none); a crop counts as found at IoU >= 0.5,
and a kept crop that overlaps no true box at IoU >= 0.5 is a false crop.

    python bench/ytsv_accuracy.py CORPUS TRUTH.json... [--tol 0.1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umust_cli.data.ytsv import piece_id_of  # noqa: E402


def iou(a: list[float], b: list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_times(found: list[float], true: list[float], tol: float) -> list[tuple[float, float]]:
    """One-to-one (found, true) pairs within tol, greedily by smallest difference."""
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(true) if abs(f - t) <= tol)
    used_f, used_t, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i), used_t.add(j), out.append((found[i], true[j]))
    return out


def score_video(corpus: Path, truth_path: Path, tol: float) -> dict:
    truth = json.loads(truth_path.read_text())
    piece = json.loads((corpus / "pieces" / piece_id_of(truth_path.parent / truth["video"]) / "piece.json").read_text())
    found = [t["start"] for t in piece["transitions"]]
    true = [t["time"] for t in truth["transitions"]]
    pairs = match_times(found, true, tol)
    out = {"video": truth["video"], "found": len(found), "true": len(true), "matched": len(pairs),
           "time_errors": [round(f - t, 4) for f, t in pairs], "span_errors": [], "systems": []}
    for ts in truth["slides"]:
        ds = [s for s in piece["slides"] if ts["start"] <= s["stable_time"] < ts["end"]]
        kept = [x["box"] for s in ds for x in s["systems"] if x["rejected"] is None]
        if ds:
            out["span_errors"] += [abs(ds[0]["start"] - ts["start"]), abs(ds[0]["end"] - ts["end"])]
        for sys_ in ts["systems"]:
            best = max((iou(sys_["box"], k) for k in kept), default=0.0)
            out["systems"].append({"scanned": ts["scanned"], "iou": round(best, 4)})
        out.setdefault("false_crops", 0)
        out["false_crops"] += sum(all(iou(k, s["box"]) < 0.5 for s in ts["systems"]) for k in kept)
    return out


def summary(videos: list[dict]) -> dict:
    matched = sum(v["matched"] for v in videos)
    systems = [s for v in videos for s in v["systems"]]
    res = {"videos": len(videos), "transitions_true": sum(v["true"] for v in videos),
           "transitions_found": sum(v["found"] for v in videos),
           "precision": matched / max(1, sum(v["found"] for v in videos)),
           "recall": matched / max(1, sum(v["true"] for v in videos)),
           "max_time_error_s": max((abs(e) for v in videos for e in v["time_errors"]), default=None),
           "max_span_error_s": max((e for v in videos for e in v["span_errors"]), default=None),
           "false_crops": sum(v.get("false_crops", 0) for v in videos)}
    for name, group in (("all", systems), ("rendered", [s for s in systems if not s["scanned"]]),
                        ("scanned", [s for s in systems if s["scanned"]])):
        ious = np.array([s["iou"] for s in group]) if group else np.zeros(0)
        res[name] = {"systems": len(group), "found@0.5": int((ious >= 0.5).sum()),
                     "mean_iou": round(float(ious.mean()), 3) if group else None,
                     "mean_iou_found": round(float(ious[ious >= 0.5].mean()), 3) if (ious >= 0.5).any() else None}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="the output folder of 'umust dataset ytsv'")
    ap.add_argument("truth", type=Path, nargs="+")
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    videos = [score_video(args.corpus, t, args.tol) for t in args.truth]
    res = summary(videos)
    if args.json:
        print(json.dumps({"summary": res, "videos": videos}, indent=1))
        return
    print(f"transitions within +-{args.tol:g} s: precision {res['precision']:.3f}, recall {res['recall']:.3f} "
          f"({res['transitions_found']} found, {res['transitions_true']} true; max error {res['max_time_error_s']} s); "
          f"slide span max error {res['max_span_error_s']} s")
    for name in ("all", "rendered", "scanned"):
        r = res[name]
        print(f"systems {name}: {r['found@0.5']}/{r['systems']} found at IoU>=0.5, mean IoU {r['mean_iou']} "
              f"(found: {r['mean_iou_found']})")
    print(f"false crops: {res['false_crops']}")


if __name__ == "__main__":
    main()
