"""How close are the scanned-look copies to real scans? A cheap image-statistics proxy.

    python bench/scan_look_stats.py --data CORPUS --scans COLLECTIONS... [--systems 60] [--pdfs 3]
        [--pages 2] [--out results.json]

Real scans: the piano systems (:func:`umust_cli.data.scans.page_systems`) of the first
``--pages`` pages of the first ``--pdfs`` reference-edition PDFs (sorted by name) of each
collection folder (``COLLECTION/reference-edition/*.pdf``). Simulated: ``--systems``
rendered systems of CORPUS (seeded sample) as engraved, with the classic scanned look and
with the printed-page look (``augment.PRINT_LOOK``), one seeded copy each. Every image is
first brought to the image codec's staff spacing (9 px), as ``umust tokenize image`` does (a
copy by its engraving's factor); ``no_staff`` counts the images on which the codec's staff
measurement fails after that (those a ``tokenize image`` would refuse), left out of the table.

Per image: paper and ink gray levels (medians of the pixels above / below Otsu's threshold),
paper roughness (std of the paper pixels two pixels or more away from ink), edge softness
(pixels between 64 and 192 per ink pixel), staff-line thickness (the most common vertical
ink run, at 9 px spacing) and the high-frequency energy of the paper (mean |Laplacian|).
The distance of a look to the real scans, per statistic, is the 1-D Wasserstein distance
between the per-image values divided by the statistic's standard deviation over all images of
all looks; the table ends with the mean over statistics. A proxy only: whether an OMR or retrieval model trained
on a look does better on real scans is the measurement that counts, and is not made here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.codecs.image import measure_staff, normalize_scale, resize, scaled_size  # noqa: E402
from umust_cli.data import augment, corpus, scans, sources  # noqa: E402
from umust_cli.errors import ImageError  # noqa: E402

STATS = ("paper", "ink", "roughness", "edges", "line_px", "paper_hf")


def real_systems(collections: list[Path], pdfs: int, pages: int, first: int = 0) -> list[np.ndarray]:
    cfg = scans.ScanConfig()
    out = []
    for collection in collections:
        for pdf in sorted((collection / "reference-edition").glob("*.pdf"))[first: first + pdfs]:
            for p, page in enumerate(scans.load_pages(pdf, cfg.page_width_px)[:pages]):
                try:
                    page, found = scans.page_systems(page, cfg, p, pdf.name)
                except ImageError:
                    continue
                out.extend(scans.crop(page, s) for s in found)
    return out


def simulated(data: Path, n: int) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    rows = corpus.rows(data)
    rng = np.random.default_rng(0)
    picks = [rows[i] for i in sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False))]
    looks: dict[str, list[np.ndarray]] = {"engraved": [], "classic": [], "print": []}
    for row in picks:
        image = np.asarray(Image.open(data / row["png"]).convert("L"))
        seed = sources.stable_seed(f"bench:{row['piece_id']}:{row['system']}")
        scale = 9.0 / measure_staff(image)[1]  # a copy has its engraving's staff spacing
        looks["engraved"].append((image, scale))
        looks["classic"].append((augment.scan_look(image, augment.ScanLookConfig(), seed), scale))
        looks["print"].append((augment.scan_look(image, augment.PRINT_LOOK, seed), scale))
    return looks


def otsu(gray: np.ndarray) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * np.arange(256))
    total, total_mean = weight[-1], mean[-1]
    between = (total_mean * weight - total * mean) ** 2 / np.maximum(weight * (total - weight), 1e-9)
    return int(np.argmax(between[:255]))


def statistics(gray: np.ndarray, scale: float | None = None) -> dict[str, float] | None:
    """The proxy statistics of one system image brought to 9 px staff spacing (by ``scale``, else
    measured), or None when no staff is found (counted as 'no_staff' in the report)."""
    from scipy.ndimage import binary_dilation, laplace

    try:
        gray = resize(gray, *scaled_size(gray.shape, scale)) if scale else normalize_scale(gray)[0]
        thickness, _ = measure_staff(gray)
    except ImageError:
        return None
    t = otsu(gray)
    ink = gray <= t
    far = ~binary_dilation(ink, iterations=2)
    paper_px = gray[far].astype(np.float64)
    lap = np.abs(laplace(gray.astype(np.float64)))[far]
    return {"paper": float(np.median(paper_px)), "ink": float(np.median(gray[ink])),
            "roughness": float(paper_px.std()), "edges": float(((gray > 64) & (gray < 192)).sum() / max(ink.sum(), 1)),
            "line_px": float(thickness), "paper_hf": float(lap.mean())}


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    q = np.linspace(0, 1, 101)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def report(values: dict[str, list[dict]]) -> dict:
    real = {s: np.array([v[s] for v in values["real"]]) for s in STATS}
    pooled = {s: np.array([v[s] for rows in values.values() for v in rows]) for s in STATS}
    scale = {s: max(float(pooled[s].std()), 1e-6) for s in STATS}  # spread over every image of every look
    out = {"images": {k: len(v) for k, v in values.items()}, "median": {}, "distance": {}}
    for look, rows in values.items():
        vals = {s: np.array([v[s] for v in rows]) for s in STATS}
        out["median"][look] = {s: round(float(np.median(vals[s])), 3) for s in STATS}
        if look != "real":
            d = {s: wasserstein(vals[s], real[s]) / scale[s] for s in STATS}
            out["distance"][look] = {**{s: round(x, 3) for s, x in d.items()},
                                     "mean": round(float(np.mean(list(d.values()))), 3)}
    return out


def markdown(result: dict) -> str:
    looks = list(result["median"])
    lines = ["| statistic | " + " | ".join(looks) + " |", "|---" * (len(looks) + 1) + "|"]
    for s in STATS:
        cells = [f"{result['median'][k][s]:g}" + (f" ({result['distance'][k][s]:.2f})" if k != "real" else "")
                 for k in looks]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| mean distance | " + " | ".join(
        "" if k == "real" else f"{result['distance'][k]['mean']:.2f}" for k in looks) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scans", type=Path, nargs="+", required=True, help="collection folders with reference-edition/")
    ap.add_argument("--systems", type=int, default=60)
    ap.add_argument("--pdfs", type=int, default=3)
    ap.add_argument("--pages", type=int, default=2)
    ap.add_argument("--first-pdf", type=int, default=0, help="skip the first N PDFs of each collection")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    images = {"real": [(g, None) for g in real_systems(a.scans, a.pdfs, a.pages, a.first_pdf)],
              **simulated(a.data, a.systems)}
    stats = {k: [statistics(g, scale) for g, scale in v] for k, v in images.items()}
    values = {k: [s for s in v if s is not None] for k, v in stats.items()}
    result = report(values)
    result["no_staff"] = {k: sum(s is None for s in v) for k, v in stats.items()}  # measure_staff failed
    print(json.dumps(result, indent=1))
    print(markdown(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
