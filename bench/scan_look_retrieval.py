"""Scanned-look realism judged by audio <-> sheet retrieval on real scans (issue 17).

    python bench/scan_look_retrieval.py --data CORPUS --work DIR [--pieces 40] [--steps 300]
        [--batch-size 16] [--arms init,none,classic,print] [--init small] [--seed 0] [--threads 1]
        [--valid-limit 100] [--test ARM] [--prepare-only] [--out results.json]

CORPUS is a built corpus with its real-scan split (``umust dataset scans``). The engraved
systems of ``--pieces`` train pieces (the same for every arm) get a scanned-look copy per
look (``umust_cli.data.augment.scan_look`` with the row's first scan seed, so both looks
distort the same system with the same draw), written under WORK/looks/<look>/; WORK/engraved
and WORK/<look> are corpora of manifest rows only (absolute paths into CORPUS and WORK).
Every arm fine-tunes the same initial model (``--init``, RNN-FT: nothing frozen) for the same
``--steps`` with the same seed and batch size: arm ``none`` on the engraved systems alone,
arm ``classic`` / ``print`` on the engraved systems plus their copies of that look (each step
takes one image of each chosen system at random; umust_cli.retrieval.data.passage_groups).
Each arm (arm ``init``: the initial model, untrained) is scored on realscan_valid (real scans
of the valid pieces against their spans of the piece audio) and on ``--valid-limit`` engraved
valid systems; ``--test ARM`` also scores that one arm on realscan_test (do it once, for the
chosen arm). Re-running resumes: looks, features and arms are kept in WORK, and an arm trained
for fewer steps continues to ``--steps`` (exactly as one longer run). Arms may run as separate
processes on one WORK (``--prepare-only`` first makes the looks and features). The classic copies
are the corpus's own ``scan0`` copies (linked) when its build used the classic look. Prints JSON
and a Markdown table (``bench.retrieval.report``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.retrieval import report as write_report  # noqa: E402

LOOKS = ("classic", "print")
ARMS = ("init", "none") + LOOKS


def pick_pieces(data: Path, n: int) -> list[str]:
    """``n`` train pieces of ``data``, spread evenly over the sorted piece ids (all when n >= their number)."""
    from umust_cli.data.corpus import rows

    ids = sorted({r["piece_id"] for r in rows(data, ["train"])})
    if n >= len(ids):
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def engraved_rows(data: Path, pieces: list[str]) -> list[dict]:
    """The train rows of ``pieces`` with absolute png/wav paths (a manifest usable from any folder)."""
    from umust_cli.data.corpus import rows

    keep = set(pieces)
    root = data.resolve()
    return [dict(r, png=str(root / r["png"]), wav=str(root / r["wav"]), scans=[str(root / p) for p in r.get("scans", [])])
            for r in rows(data, ["train"]) if r["piece_id"] in keep]


def built_classic(data: Path) -> bool:
    """Whether the corpus's scanned-look copies were made with the classic look (its build.json)."""
    from dataclasses import asdict

    from umust_cli.data.augment import ScanLookConfig

    path = data / "build.json"
    scan = json.loads(path.read_text(encoding="utf-8")).get("scan") if path.is_file() else None
    classic = json.loads(json.dumps(asdict(ScanLookConfig())))
    return isinstance(scan, dict) and all(classic.get(k) == v for k, v in scan.items()) and \
        all(scan.get(k, v) == v for k, v in classic.items())


def look_seed(row: dict) -> int:
    from umust_cli.data.sources import stable_seed

    seeds = row.get("scan_seeds") or [stable_seed(f"scan-look:{row['piece_id']}:{row['system']}")]
    return int(seeds[0])


def make_look(rows: list[dict], look: str, folder: Path, linked: bool = False) -> list[dict]:
    """Each row's engraved image through ``look`` into folder/<piece>/<NNN>.png (kept if there; with
    ``linked``, a hard link of the row's first scanned copy, made with that look and seed); the rows
    with png pointing at the copies."""
    import numpy as np
    from PIL import Image

    from umust_cli.data.augment import SCAN_LOOKS, scan_look
    from umust_cli.io import atomic_path

    out = []
    for r in rows:
        path = folder / r["piece_id"] / f"{int(r['system']):03d}.png"
        if not path.is_file() and linked and r.get("scans") and Path(r["scans"][0]).is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(r["scans"][0], path)
        elif not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            image = np.asarray(Image.open(r["png"]).convert("L"))
            with atomic_path(path) as tmp:
                Image.fromarray(scan_look(image, SCAN_LOOKS[look], look_seed(r))).save(tmp, format="PNG")
        out.append(dict(r, png=str(path), look=look))
    return out


def write_corpus(folder: Path, rows: list[dict]) -> Path:
    from umust_cli.io import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    keep = [{k: v for k, v in r.items() if k not in ("root", "scans", "scan_seeds")} for r in rows]
    write_text_atomic(folder / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in keep))
    return folder


def make_corpora(data: Path, work: Path, pieces: list[str], looks: list[str]) -> dict[str, Path]:
    """WORK/engraved and WORK/<look> (manifest-only corpora of the same systems)."""
    base = engraved_rows(data, pieces)
    corpora = {"engraved": write_corpus(work / "engraved", base)}
    for look in looks:
        linked = look == "classic" and built_classic(data)
        corpora[look] = write_corpus(work / look, make_look(base, look, work / "looks" / look, linked))
    return corpora


def seed_features(corpora: dict[str, Path], fcfg, cache: Path) -> None:
    """Features of every train row into ``cache``, the audio of each system computed once for all looks."""
    from umust_cli.retrieval.data import cache_path, corpus_rows, load_features, write_cached_features
    from umust_cli.retrieval.features import load_sheet

    base = load_features(corpus_rows(corpora["engraved"], ["train"]), fcfg, cache)
    spec = {(r["piece_id"], int(r["system"])): s for r, s in zip(base.rows, base.specs)}
    for name, corpus in corpora.items():
        for r in corpus_rows(corpus, ["train"]) if name != "engraved" else []:
            path = cache_path(cache, r, fcfg)
            if not path.is_file():
                write_cached_features(path, load_sheet(r["png"], fcfg), spec[(r["piece_id"], int(r["system"]))])


def link_cache(rows: list[dict], fcfg, shared: Path, ckpt: Path) -> None:
    """Hard links of the rows' feature files from ``shared`` into the arm's own cache (ckpt/cache)."""
    from umust_cli.retrieval.data import cache_path

    for r in rows:
        src, dst = cache_path(shared, r, fcfg), cache_path(ckpt / "cache", r, fcfg)
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)


def train_arm(arm: str, corpora: dict[str, Path], work: Path, args, fcfg) -> dict:
    """Fine-tune the initial model to ``args.steps`` on the arm's corpora (resuming a shorter run);
    {"ckpt", "steps", "seconds", "cpu_seconds", "last_loss"}, seconds summed over the sittings."""
    from umust_cli import registry
    from umust_cli.retrieval.data import corpus_rows
    from umust_cli.retrieval.train import train_config, train_retrieval
    from umust_cli.train.engine import RunOptions

    ckpt = work / (f"arm-{arm}" + (f"-seed{args.seed}" if args.seed else ""))
    data = [corpora["engraved"]] + ([corpora[arm]] if arm != "none" else [])
    done = ckpt / "seconds.json"
    info = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else {"seconds": 0.0, "cpu_seconds": 0.0}
    if info.get("steps", 0) >= args.steps:
        return info
    link_cache([r for d in data for r in corpus_rows(d, ["train"])], fcfg, work / "cache", ckpt)
    cfg = train_config(args.config, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       eq_augment_db=18.0, eq_knots=8, reverb_augment_s=1.0)
    run = RunOptions(max_steps=args.steps, save_every=args.steps, log_every=10, device="cpu", progress=False)
    started, cpu = time.perf_counter(), time.process_time()
    result = train_retrieval(data, ckpt, cfg, run, None, registry.resolve("retrieval", args.init))
    info = {"ckpt": str(ckpt), "steps": result.step,
            "seconds": round(info["seconds"] + time.perf_counter() - started, 1),
            "cpu_seconds": round(info["cpu_seconds"] + time.process_time() - cpu, 1), "last_loss": result.last_loss}
    done.write_text(json.dumps(info), encoding="utf-8")
    return info


def score(model: Path | str, data: Path, split: str, limit: int | None, cache: Path) -> dict:
    from umust_cli import registry
    from umust_cli.retrieval.embed import load_retrieval_model
    from umust_cli.retrieval.evaluate import evaluate_corpus

    net, fcfg, _ = load_retrieval_model(registry.resolve("retrieval", model))
    return evaluate_corpus(net, fcfg, data, [split], cache_dir=cache, limit=limit).summary


def summary_row(name: str, split: str, s: dict, extra: dict) -> dict:
    return {"case": f"{name}, {split}", "arm": name, "split": split, **s, **extra}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="corpus with realscans.jsonl")
    p.add_argument("--work", type=Path, required=True, help="looks, corpora, features and arms (resumable)")
    p.add_argument("--pieces", type=int, default=40, help="train pieces (the same for every arm)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated, of init (untrained), none, classic, print")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--config", default="small", help="model preset (must match --init)")
    p.add_argument("--init", default="small", help="shipped retrieval model name or checkpoint folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--valid-limit", type=int, default=100, help="engraved valid systems scored (spread)")
    p.add_argument("--test", default=None, help="also score this arm on realscan_test (once, the chosen arm)")
    p.add_argument("--prepare-only", action="store_true", help="make the looks and train features, then stop")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def run_arms(args, arms: list[str]) -> tuple[list[dict], dict]:
    """Make the data, train every arm and score it; (result rows, training info)."""
    from umust_cli import registry
    from umust_cli.retrieval.embed import load_retrieval_model

    _, fcfg, _ = load_retrieval_model(registry.resolve("retrieval", args.init))
    pieces, corpora = pick_pieces(args.data, args.pieces), {}
    if args.prepare_only or set(arms) - {"init"}:  # arm init alone trains nothing
        corpora = make_corpora(args.data, args.work, pieces, [a for a in arms if a in LOOKS])
        seed_features(corpora, fcfg, args.work / "cache")
    cache, out, info, models = args.work / "cache", [], {"pieces": pieces}, {}
    for arm in arms if not args.prepare_only else []:
        trained = train_arm(arm, corpora, args.work, args, fcfg) if arm != "init" else {"steps": 0}
        info[arm], models[arm] = trained, Path(trained["ckpt"]) if arm != "init" else args.init
        extra = {k: trained[k] for k in ("steps", "seconds") if k in trained}
        for split, limit in (("realscan_valid", None), ("valid", args.valid_limit)):
            out.append(summary_row(arm, split, score(models[arm], args.data, split, limit, cache), extra))
    if args.test and not args.prepare_only:
        s = score(models[args.test], args.data, "realscan_test", None, cache)
        out.append(summary_row(args.test, "realscan_test", s, {}))
    return out, info


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or (args.test and args.test not in arms):
        raise SystemExit(f"unknown arm(s) {unknown or args.test} (choose from {', '.join(ARMS)})")
    started = time.perf_counter()
    rows, info = run_arms(args, arms)
    out = {"data": str(args.data), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
           "seed": args.seed, "init": args.init, "train_systems": sum(1 for _ in _train_rows(args.work)),
           "seconds": round(time.perf_counter() - started, 1), "arms": info, "results": rows}
    write_report(out, [(r["case"], r) for r in rows], args.out)
    return out


def _train_rows(work: Path):
    from umust_cli.retrieval.data import corpus_rows

    return corpus_rows(work / "engraved", ["train"])


if __name__ == "__main__":
    main()
