"""Notation -> image by each route, judged by one reader: the shipped OMR model.

For each system of a corpus split (``--limit N``: N spread evenly, as `umust eval` picks them)
the system's LMX goes to an image by the ``render`` route (verovio, what `umust translate
x.lmx -o x.png` does without a model) and, with ``--model``, by the ``direct`` route (a
``translator-a2i`` checkpoint's lmx2image task). The shipped OMR model reads every image back
to LMX. The prediction folders are in the layout `umust eval` reads, so the judge is the
standard command, the same for both routes:

    python bench/lmx2image.py --data CORPUS --split valid --limit 48 --model RUN --out WORK
    umust eval omr WORK/direct/omr --data CORPUS --split valid --limit 48 --json
    umust eval emd WORK/direct/omr --data CORPUS --split valid --limit 48 --json
    (the same for WORK/render/omr)

The script also scores each route against a wrong-system floor, the reading of each image
against the LMX of another system (the next one in the list, cyclically), with a paired
bootstrap over systems: a route whose images follow their notation reads closer to its own
system's LMX than to another's (the "judge" entry of times.json, printed).

WORK/<route>/png holds the images (``<piece_id>/<NNN>.png``); WORK/<route>/times.json the
wall time of each route's images, the systems whose image failed (eval counts them missing)
and those the reader could not read (no staff found): their reading is empty, which `eval omr`
scores as all deletions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROUTES = ("render", "direct")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a corpus made by `umust dataset build`")
    p.add_argument("--split", default="valid")
    p.add_argument("--limit", type=int, default=None, help="N systems spread evenly over the split")
    p.add_argument("--model", default=None, help="translator-a2i checkpoint (a run folder) for the direct route")
    p.add_argument("--routes", default="render,direct", help="comma-separated: render, direct")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--temperature", type=float, default=None,
                   help="direct route: sampling temperature (0: greedy; default: translate's for images)")
    p.add_argument("--top-k", type=int, default=0, help="direct route: sample among the k likeliest codes (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    return p.parse_args(argv)


def route_engines(route: str, args: argparse.Namespace):
    """(Route, Engines) that turn notation into an image by ``route`` (the direct route decodes
    as ``args`` say)."""
    from umust_cli.translate.engines import Engines, RunConfig
    from umust_cli.translate.routes import Route

    if route == "direct":
        if args.model is None:
            raise SystemExit("the direct route needs --model")
        config = RunConfig(model=args.model, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
        return Route("direct", ("notation", "image"), ("umust",)), Engines(config)
    return Route("render", ("notation", "image"), ("verovio",)), Engines(RunConfig())


def run_route_over(rows, route: str, args: argparse.Namespace, reader) -> dict:
    """Images of every row's LMX by ``route``, then the reader's LMX of each; times and failures."""
    from umust_cli.codecs.notation import lmx_file_text
    from umust_cli.errors import UmustError
    from umust_cli.eval.corpus import ref_path, system_key
    from umust_cli.translate.pipeline import run_route

    to_image, engines, out = *route_engines(route, args), args.out
    read_route, read_engines = reader
    seconds, failed, unread = 0.0, [], []
    for row in rows:
        key = system_key(row)
        png, lmx = out / route / "png" / f"{key}.png", out / route / "omr" / f"{key}.lmx"
        png.parent.mkdir(parents=True, exist_ok=True)
        lmx.parent.mkdir(parents=True, exist_ok=True)
        try:
            start = time.perf_counter()
            run_route(to_image, ref_path(row, "lmx"), png, engines)
            seconds += time.perf_counter() - start
        except UmustError as e:
            failed.append({"system": key, "error": str(e)})
            print(f"{route} {key}: {e}", file=sys.stderr)
            continue
        try:
            run_route(read_route, png, lmx, read_engines)
        except UmustError as e:       # an image the reader cannot read: an empty reading (all deletions)
            lmx.write_text(lmx_file_text(""))
            unread.append({"system": key, "error": str(e)})
    done = len(rows) - len(failed)
    return {"route": route, "systems": len(rows), "failed": failed, "unread": unread,
            "decoding": _decoding(engines) if route == "direct" else None,
            "image_seconds": round(seconds, 2), "seconds_per_image": round(seconds / max(1, done), 3)}


def _decoding(engines) -> dict:
    d = engines.decoding("image")
    return {"temperature": d.temperature, "top_k": d.top_k, "top_p": d.top_p, "seed": d.seed}


def wrong_system_judge(rows, omr_dir: Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Pooled SER of each system's reading against its own LMX and against the next system's
    (cyclically), and own - wrong with a 95% paired bootstrap interval over systems; systems
    without a reading (a failed image) are left out."""
    import numpy as np

    from umust_cli.eval.corpus import ref_path, system_key
    from umust_cli.eval.metrics import ser_counts
    from umust_cli.eval.report import read_lmx_tokens

    refs = [read_lmx_tokens(ref_path(row, "lmx")) for row in rows]
    own, wrong = [], []
    for i, row in enumerate(rows):
        pred = omr_dir / f"{system_key(row)}.lmx"
        if not pred.is_file():
            continue
        tokens = read_lmx_tokens(pred)
        a, b = ser_counts(tokens, refs[i]), ser_counts(tokens, refs[(i + 1) % len(rows)])
        own.append((a.errors, a.ref_len))
        wrong.append((b.errors, b.ref_len))
    if len(own) < 2:
        return {"systems": len(own)}
    o, w = np.array(own, dtype=float), np.array(wrong, dtype=float)
    ser = lambda m: m[..., 0].sum(-1) / m[..., 1].sum(-1)    # noqa: E731 - pooled SER of (systems, 2)
    idx = np.random.default_rng(seed).integers(0, len(o), size=(resamples, len(o)))
    diff = ser(o[idx]) - ser(w[idx])
    return {"systems": len(o), "own_ser": round(float(ser(o)), 4), "wrong_system_ser": round(float(ser(w)), 4),
            "difference": round(float(ser(o) - ser(w)), 4),
            "difference_95": [round(float(x), 4) for x in np.percentile(diff, [2.5, 97.5])]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from umust_cli.eval.corpus import split_rows
    from umust_cli.translate.engines import Engines, RunConfig
    from umust_cli.translate.routes import Route

    if args.threads:
        torch.set_num_threads(args.threads)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not routes or any(r not in ROUTES for r in routes):
        raise SystemExit(f"--routes: comma-separated {', '.join(ROUTES)}")
    rows = split_rows(args.data, args.split, args.limit)
    reader = (Route("direct", ("image", "notation"), ("umust",)), Engines(RunConfig()))
    for route in routes:
        report = run_route_over(rows, route, args, reader)
        report["judge"] = wrong_system_judge(rows, args.out / route / "omr")
        (args.out / route / "times.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report | {"failed": len(report["failed"]), "unread": len(report["unread"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
