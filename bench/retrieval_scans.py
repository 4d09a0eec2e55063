"""Audio <-> sheet retrieval with real scans of the printed source editions (the paper's Table 2 case).

    python bench/retrieval_scans.py --data CORPUS [--split test --split valid] [--model CKPT]
        [--work DIR] [--examples DIR] [--out results.json]

For every corpus piece of the chosen splits, the scan of its source edition
(``<corpus>/reference-edition/<kern stem>.pdf`` beside the kern file) is split
into piano systems (:mod:`umust_cli.data.scans`); each system's barlines give
its measure range, the piece's per-measure performance times give its audio
span in the piece's rendering (``pieces/<id>/audio.wav``). Pieces whose scan
measure count differs from the score's by more than ``max(--tol, --tol-frac * N)``
are dropped. Scan systems and, for comparison, the same pieces' rendered
systems are scored in both directions (R@1/10/25, MRR, median rank).
Crops and pair lists are cached under ``--work``; prints JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.retrieval import report as write_report  # noqa: E402
from umust_cli.data import scans  # noqa: E402
from umust_cli.errors import BadInputError  # noqa: E402

MIN_SECONDS = 0.5  # a scan system whose audio span is shorter is skipped


def scan_pdf(source: str) -> Path:
    """<corpus>/reference-edition/<stem>.pdf for a kern file <corpus>/kern/<stem>.krn."""
    src = Path(source)
    return src.parent.parent / "reference-edition" / f"{src.stem}.pdf"


def piece_pairs(corpus: Path, piece_id: str, source: str, work: Path, cfg: scans.ScanConfig,
                tol: int, tol_frac: float) -> dict:
    """{"pairs": [...], "counts": [[per page]], ...} for one piece, cached in work/<piece_id>.json."""
    cached = work / f"{piece_id}.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    piece_dir = corpus / "pieces" / piece_id
    total = len(scans.measure_quarters(piece_dir / "score.musicxml"))
    printed = scans.printed_measures(piece_dir / "score.musicxml")
    out = {"piece_id": piece_id, "pdf": str(scan_pdf(source)), "score_measures": total,
           "printed_measures": len(printed), "pairs": []}
    try:
        systems, ranges = _matched_systems(scan_pdf(source), work / piece_id, cfg, total, len(printed),
                                           (tol, tol_frac), out)
    except BadInputError as e:  # ImageError (unreadable scan, no systems) or a count mismatch
        out["dropped"] = str(e)
    else:
        times = scans.piece_measure_times(piece_dir)
        bars = printed if out.get("printed") else list(range(total))
        for s, (first, last) in zip(systems, ranges):
            span = scans.printed_span(times, bars, first, last)
            if span is not None and span[1] - span[0] >= MIN_SECONDS:
                out["pairs"].append({**s, "first": first, "last": last, "start": round(span[0], 4),
                                     "end": round(span[1], 4), "audio": str(piece_dir / "audio.wav")})
    from umust_cli.io import write_json_atomic

    write_json_atomic(cached, out)
    return out


def _matched_systems(pdf: Path, folder: Path, cfg: scans.ScanConfig, total: int, printed: int,
                     tol: tuple[int, float], out: dict) -> tuple[list[dict], list[tuple[int, int]]]:
    """Systems and measure ranges of the scan, matched against the score's measures, else against its
    printed bars (repeats written out in the score); when neither count fits, a second try counts
    bar lines that are broken between the staves (as in some Mozart editions)."""
    first_try = None
    modes = (True,) if cfg.split_barlines else (False, True)  # count broken bar lines only as a fallback
    targets = [(total, False)] + ([(printed, True)] if printed < total else [])
    for split in modes:
        crops = folder.with_name(folder.name + "-split") if split and not cfg.split_barlines else folder
        systems, counts = _crop_systems(pdf, crops, replace(cfg, split_barlines=split))
        for n, is_printed in targets:
            try:
                ranges = scans.assign_measures([s["measures"] for s in systems], n, max(tol[0], round(tol[1] * n)))
            except BadInputError as e:
                first_try = first_try or e
                continue
            out.update(counts=counts, scan_measures=int(sum(map(sum, counts))))
            out.update({"split_barlines": True} if split else {}, **({"printed": True} if is_printed else {}))
            return systems, ranges
        if first_try is not None and "counts" not in out:
            out.update(counts=counts, scan_measures=int(sum(map(sum, counts))))
    raise first_try  # report the ordinary count


def _crop_systems(pdf: Path, folder: Path, cfg: scans.ScanConfig) -> tuple[list[dict], list[list[int]]]:
    """Crops of every system of ``pdf`` written as PNG into ``folder``; (system dicts, counts per page)."""
    from PIL import Image

    from umust_cli.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    systems, counts = [], []
    for p, page in enumerate(scans.load_pages(pdf, cfg.page_width_px)):
        page, found = scans.page_systems(page, cfg, p, f"{pdf.name} page {p + 1}")
        counts.append([s.measures for s in found])
        for s in found:
            path = folder / f"p{p:02d}s{s.index:02d}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(scans.crop(page, s)).save(tmp, format="PNG")
            systems.append({"png": str(path), "page": p, "system": s.index, "measures": s.measures,
                            "barlines": list(s.barlines), "box": list(s.box)})
    return systems, counts


def score_pairs(model, fcfg, pairs: list[dict]) -> dict:
    """Retrieval summary of scan crops against their audio spans."""
    from umust_cli.eval import tasks
    from umust_cli.retrieval.embed import embed_passages
    from umust_cli.retrieval.features import load_audio, load_sheet, log_spectrogram

    sheets = [load_sheet(p["png"], fcfg) for p in pairs]
    specs = [log_spectrogram(load_audio(p["audio"], fcfg.sample_rate, p["start"], p["end"]), fcfg,
                             name=p["png"]) for p in pairs]
    audio = embed_passages(model, "audio", specs, fcfg)
    sheet = embed_passages(model, "sheet", sheets, fcfg)
    return tasks.retrieval(1.0 - audio @ sheet.T).summary


def score_rendered(model, fcfg, corpus: Path, splits: list[str], piece_ids: set[str], cache: Path | None) -> dict:
    """Retrieval summary of the corpus's rendered systems of ``piece_ids``."""
    from umust_cli.eval import tasks
    from umust_cli.retrieval.data import corpus_rows, load_features
    from umust_cli.retrieval.embed import embed_passages

    rows = [r for r in corpus_rows(corpus, splits) if r["piece_id"] in piece_ids]
    feats = load_features(rows, fcfg, cache)
    audio = embed_passages(model, "audio", feats.specs, fcfg)
    sheet = embed_passages(model, "sheet", feats.sheets, fcfg)
    return tasks.retrieval(1.0 - audio @ sheet.T).summary


def export_corpus(pairs: list[dict], pieces: dict[str, dict], folder: Path, rendered: list[dict]) -> int:
    """A training corpus folder: scan crops with their audio spans cut to WAV files, plus
    ``rendered`` corpus rows (absolute paths), in one manifest.jsonl with split "train"."""
    import soundfile as sf

    from umust_cli.io import atomic_path, write_text_atomic
    from umust_cli.retrieval.features import load_audio

    rows = [dict(r, png=str(Path(r["root"]) / r["png"]), wav=str(Path(r["root"]) / r["wav"]), split="train")
            for r in rendered]
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for k, q in enumerate(pairs):
        wav = folder / "audio" / f"{k:05d}.wav"
        if not wav.is_file():
            with atomic_path(wav) as tmp:
                sf.write(tmp, load_audio(q["audio"], 44100, q["start"], q["end"]), 44100, format="WAV")
        piece = pieces[q["piece_id"]]
        rows.append({"piece_id": q["piece_id"], "system": 1000 + k, "split": "train", "png": q["png"],
                     "wav": str(wav), "soundfont": piece["soundfont"], "source": piece["source"],
                     "start": q["start"], "end": q["end"], "scan": True})
    for r in rows:
        r.pop("root", None)
    write_text_atomic(folder / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="built corpus (manifest.jsonl, pieces/)")
    parser.add_argument("--split", action="append", default=None, help="split(s) (default: test and valid)")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: shipped weights)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/retrieval-scans"), help="crop/pair cache")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache of the rendered rows")
    parser.add_argument("--tol", type=int, default=2, help="measure-count tolerance, measures")
    parser.add_argument("--tol-frac", type=float, default=0.02, help="measure-count tolerance, fraction of N")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--split-barlines", action="store_true",
                        help="bar lines need only cross each staff (editions that break them between staves)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--export-corpus", type=Path, default=None,
                        help="instead of scoring: write the scan pairs plus the same splits' rendered rows as a "
                             "training corpus (manifest.jsonl, split train) into this folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from umust_cli.retrieval.embed import load_retrieval_model
    from umust_cli.retrieval.data import corpus_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    splits = args.split or ["test", "valid"]
    pieces = {r["piece_id"]: r for r in corpus_rows(args.data, splits)}
    cfg = scans.ScanConfig(split_barlines=args.split_barlines)
    args.work.mkdir(parents=True, exist_ok=True)
    report = [piece_pairs(args.data, pid, r["source"], args.work, cfg, args.tol, args.tol_frac)
              for pid, r in sorted(pieces.items())]
    kept = [p for p in report if "dropped" not in p and p["pairs"]]
    for p in kept:
        for q in p["pairs"]:
            q["piece_id"] = p["piece_id"]
    pairs = [q for p in kept for q in p["pairs"]]
    if args.export_corpus:
        n = export_corpus(pairs, pieces, args.export_corpus, corpus_rows(args.data, splits))
        print(f"{len(pairs)} scan pairs from {len(kept)} of {len(report)} pieces; {n} rows in "
              f"{args.export_corpus / 'manifest.jsonl'}")
        return
    model, fcfg, config = load_retrieval_model(args.model)
    ids = {p["piece_id"] for p in kept}
    soundfonts = defaultdict(int)
    for pid in ids:
        soundfonts[pieces[pid]["soundfont"]] += 1
    rows = [("real scans", score_pairs(model, fcfg, pairs)),
            ("rendered, same pieces", score_rendered(model, fcfg, args.data, splits, ids, args.cache))]
    out = {"model": str(args.model or "shipped"), "step": config.get("step"), "splits": splits,
           "pieces": len(report), "pieces_kept": len(kept), "scan_systems": len(pairs),
           "soundfonts": dict(soundfonts), "seconds": round(time.perf_counter() - started, 1),
           "dropped": {p["piece_id"]: p["dropped"] for p in report if "dropped" in p},
           "results": [{"case": name, **s} for name, s in rows],
           "per_piece": [{k: p.get(k) for k in ("piece_id", "score_measures", "scan_measures", "counts")}
                         | {"pairs": len(p["pairs"])} for p in report]}
    write_report(out, rows, args.out)


if __name__ == "__main__":
    main()
