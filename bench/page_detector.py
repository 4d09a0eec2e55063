"""The page detector (umust_cli.data.scans.page_systems) against systems counted by eye.

    python bench/page_detector.py [--truth bench/page_truth.json] [--corpora CORPORA] [--ref COMMIT] [--json OUT]

``bench/page_truth.json`` holds the systems of a seeded sample of reference-edition PDF pages
(counted by eye; y range from the top line of the first staff to the bottom line of the
last). Each page is rasterized 2000 px wide and given to the detector, every system kept
whatever its staff count. A detected system matches a true one when their y ranges overlap
with IoU >= 0.5 (one to one, best IoU first). Reports found / missed / spurious systems,
staff counts right among the matched, the mean IoU of matched y ranges and crop quality:
the share of the true system's ink (its band of the page, halfway to the neighbouring
systems) that no crop holds ("clipped"), and crops that cut a staff.

``--ref COMMIT`` runs the detector of that commit (its umust_cli/data/scans.py, read with
git show) instead of the working tree's: the before/after figures of docs/results.md.
A detector without the ``staves`` argument (before it) returns piano systems only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.data import scans  # noqa: E402

MATCH_IOU = 0.5


def detector_module(ref: str | None):
    """umust_cli.data.scans of the working tree, or of commit ``ref``."""
    if ref is None:
        return scans
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:umust_cli/data/scans.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"scans_{ref}", f.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def detect(module, gray: np.ndarray) -> tuple[np.ndarray, list]:
    """(levelled page, systems): every system where the detector can say so, else its piano ones."""
    cfg = module.ScanConfig()
    try:
        if hasattr(module, "PIANO"):
            return module.page_systems(gray, cfg, staves=None)
        return module.page_systems(gray, cfg)
    except scans.ImageError:
        return gray, []


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def match(truth: list[tuple[float, float]], found: list[tuple[float, float]]) -> list[tuple[int, int, float]]:
    """(truth index, found index, IoU) pairs with IoU >= MATCH_IOU, one to one, best first."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, out = set(), set(), []
    for v, i, j in pairs:
        if v >= MATCH_IOU and i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            out.append((i, j, v))
    return out


def bands(truth: list[tuple[float, float]], height: int) -> list[tuple[int, int]]:
    """Each true system's band of the page: halfway to its neighbours (as far out as the
    nearest gap's half at the first and last system)."""
    out = []
    for i, (top, bottom) in enumerate(truth):
        gap_up = (top - truth[i - 1][1]) / 2 if i else None
        gap_down = (truth[i + 1][0] - bottom) / 2 if i + 1 < len(truth) else None
        up = gap_up if gap_up is not None else (gap_down if gap_down is not None else top)
        down = gap_down if gap_down is not None else (gap_up if gap_up is not None else height - bottom)
        out.append((max(0, int(top - up)), min(height, int(bottom + down))))
    return out


def clipped(ink: np.ndarray, band: tuple[int, int], system, found: list) -> float:
    """Share of the band's ink that no crop of the page holds (this system's crop, or a
    neighbour's when a mark lies nearer to that one), over the crop's columns: what a crop
    cuts off above or below (the page's dark scan edges left and right are not music)."""
    cols = slice(system.box[0], system.box[2])
    lost = ink[band[0]: band[1], cols].copy()
    total = int(lost.sum())
    if total == 0:
        return 0.0
    for other in found:
        left, top, right, bottom = other.box
        rows = slice(max(0, top - band[0]), max(0, bottom - band[0]))
        lost[rows, max(0, left - cols.start): max(0, right - cols.start)] = False
    return int(lost.sum()) / total


def score_page(module, gray: np.ndarray, truth_systems: list[dict]) -> dict:
    page, found = detect(module, gray)
    truth = [tuple(s["y"]) for s in truth_systems]
    spans = [(s.upper.top, s.lower.bottom) for s in found]
    pairs = match(truth, spans)
    ink = scans.ink_mask(page)
    page_bands = bands(truth, page.shape[0])
    rows = []
    for i, j, v in pairs:
        system = found[j]
        staves = len(getattr(system, "staves", (system.upper, system.lower)))
        left, top, right, bottom = system.box
        rows.append({"iou": v, "staves_ok": staves == truth_systems[i]["staves"],
                     "clipped": clipped(ink, page_bands[i], system, found),
                     "cuts_staff": top > truth[i][0] or bottom <= truth[i][1]})
    return {"truth": len(truth), "found": len(pairs), "missed": len(truth) - len(pairs),
            "spurious": len(found) - len(pairs), "matched": rows}


def summary(per_page: list[dict], seconds: float) -> dict:
    rows = [r for p in per_page for r in p["matched"]]
    clip = np.array([r["clipped"] for r in rows]) if rows else np.zeros(1)
    return {"pages": len(per_page), "systems": sum(p["truth"] for p in per_page),
            "found": sum(p["found"] for p in per_page), "missed": sum(p["missed"] for p in per_page),
            "spurious": sum(p["spurious"] for p in per_page),
            "staff_count_right": sum(r["staves_ok"] for r in rows),
            "mean_iou": round(float(np.mean([r["iou"] for r in rows])), 4) if rows else 0.0,
            "clipped_mean_pct": round(100 * float(clip.mean()), 2),
            "crops_clipping_over_2pct": int((clip > 0.02).sum()),
            "crops_cutting_a_staff": sum(r["cuts_staff"] for r in rows),
            "seconds_per_page": round(seconds / max(1, len(per_page)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", type=Path, default=REPO / "bench" / "page_truth.json")
    ap.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    ap.add_argument("--ref", help="a commit whose detector to run instead of the working tree's")
    ap.add_argument("--json", type=Path, help="also write the per-page results here")
    args = ap.parse_args()
    module = detector_module(args.ref)
    truth = json.loads(args.truth.read_text(encoding="utf-8"))
    per_page, start = [], time.perf_counter()
    for entry in truth["pages"]:
        gray = scans.rasterize_pdf(args.corpora / entry["pdf"], truth["width_px"])[entry["page"] - 1]
        result = score_page(module, gray, entry["systems"])
        per_page.append({"pdf": entry["pdf"], "page": entry["page"], **result})
        if result["missed"] or result["spurious"]:
            print(f"{entry['pdf']} page {entry['page']}: {result['missed']} missed, "
                  f"{result['spurious']} spurious", file=sys.stderr)
    out = {"detector": args.ref or "working tree", **summary(per_page, time.perf_counter() - start)}
    if args.json:
        args.json.write_text(json.dumps({"summary": out, "pages": per_page}, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
