"""Benchmark audio <-> sheet passage retrieval (Carvalho & Widmer, ISMIR 2023) on held-out corpora.

    python bench/retrieval.py --model CKPT --data TEST_CORPUS [--split test --split valid]
        [--tempo 0.5=DIR --tempo 2=DIR ...] [--scan DIR] [--method bl] [--out results.json]

Every system of the chosen splits is one passage pair (its image and its audio);
the pairs are scored in both directions (R@1, R@10, R@25, MRR, median rank).
``--tempo RATIO=DIR`` adds a row per corpus re-rendered at a fixed tempo ratio
(``umust dataset build ... --tempo-range R R``); ``--scan DIR`` scores the first
scanned-look copy of each system (``--scan-copies 1``) against the audio.
``--method bl`` ranks by snippet voting with the model's CNNs (the paper's BL baseline)
instead of passage embeddings.
Prints a JSON object and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEYS = ("R@1", "R@10", "R@25", "MRR", "MR")


def score(model, fcfg, corpus: Path, splits: list[str], image_key: str, cache: Path | None,
          method: str = "rnn") -> dict:
    from umust_cli.retrieval.evaluate import evaluate_corpus

    started = time.perf_counter()
    result = evaluate_corpus(model, fcfg, corpus, splits, image_key, cache, method=method)
    return {**result.summary, "corpus": str(corpus), "seconds": round(time.perf_counter() - started, 1)}


def report(out: dict, rows: list, path: Path | None) -> None:
    """The JSON on stdout (and in ``path``), the Markdown table on stderr."""
    text = json.dumps(out, indent=2)
    if path:
        path.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(table(rows), file=sys.stderr)


def table(rows: list[tuple[str, dict]]) -> str:
    head = "| case | pairs | " + " | ".join(f"{d} {k}" for d in ("A2S", "S2A") for k in KEYS) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(KEYS))]
    for name, s in rows:
        cells = [f"{s[f'{d}_{k}']:.0f}" if k == "MR" else f"{s[f'{d}_{k}']:.3f}" for d in ("A2S", "S2A") for k in KEYS]
        lines.append(f"| {name} | {s['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: shipped weights)")
    parser.add_argument("--data", type=Path, required=True, help="held-out corpus (unseen soundfont)")
    parser.add_argument("--split", action="append", default=None, help="split(s) of --data (default: test)")
    parser.add_argument("--tempo", action="append", default=[], help="RATIO=DIR corpus rendered at one tempo")
    parser.add_argument("--scan", type=Path, default=None, help="corpus built with --scan-copies >= 1")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder")
    parser.add_argument("--method", default="rnn", help="rnn (passage embeddings) or bl (snippet voting)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from umust_cli.retrieval.embed import load_retrieval_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, fcfg, config = load_retrieval_model(args.model)
    splits = args.split or ["test"]
    def run(corpus: Path, image_key: str = "png") -> dict:
        return score(model, fcfg, corpus, splits, image_key, args.cache, args.method)

    rows = [(f"{args.data.name} ({'+'.join(splits)})", run(args.data))]
    for spec in args.tempo:
        ratio, folder = spec.split("=", 1)
        rows.append((f"tempo x{ratio}", run(Path(folder))))
    if args.scan is not None:
        rows.append(("engraved", run(args.scan)))
        rows.append(("scanned look", run(args.scan, "scan0")))
    out = {"model": str(args.model or "shipped"), "method": args.method, "step": config.get("step"),
           "train": config.get("train"),
           "results": [{"case": name, **s} for name, s in rows]}
    report(out, rows, args.out)


if __name__ == "__main__":
    main()
