"""The constant-prediction floor of OMR: one training system's LMX predicted for every input.

    python bench/omr_floor.py CORPUS [--candidates 300] [--seed 0] [--json OUT.json]
    python bench/omr_floor.py CORPUS --compare PRED [--compare PRED2 ...] [--split test] [--reuse OUT.json]

LMX systems share much of their structure (measure, voice, staff, beam and duration tokens), so
predicting one fixed training system for every held-out system already scores a set SER well
below 1. A trained OMR model is useful only where it beats this floor. The constant is chosen
honestly: ``--candidates`` training systems (a seeded sample) are each scored on the valid split,
the best one is kept, and only that one is scored on the test split. Prints one JSON object:
the chosen constant (piece, system, length), its valid and test SER, and the median candidate's
valid SER.

``--compare PRED`` (a folder of predictions ``PRED/<piece_id>/<NNN>.lmx``, as `umust translate
--data` writes them) also scores the model and the constant on the same systems of ``--split``
(those with a prediction; a missing one is listed): both set SERs and a paired bootstrap over
systems (``--bootstrap`` resamples) of the difference model - constant, with its 95% interval
and the share of resamples in which the model is not better. ``--reuse OUT.json`` takes the
constant that an earlier run chose (its ``--json`` output) instead of choosing it again.
``--against OTHER`` (another model's prediction folder, e.g. an older checkpoint or another
decoding) adds to each comparison the same paired bootstrap of model - OTHER on the systems
both predicted (``against``).

    python bench/omr_floor.py CORPUS --reuse OUT.json --compare PRED_NEW --against PRED_OLD
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.data.corpus import system_rows  # noqa: E402
from umust_cli.eval.metrics import pooled_ser, ser_counts  # noqa: E402
from umust_cli.inputs import load_lmx  # noqa: E402


def lmx_tokens(row: dict) -> list[str]:
    """The LMX tokens of a corpus row (a bare token file or the .lmx layout with its header)."""
    text = load_lmx(Path(row["root"]) / row["lmx"])
    return text.split("\n---\n", 1)[-1].split() if "\n---\n" in text else text.split()


def split_tokens(corpus: Path, split: str) -> list[tuple[dict, list[str]]]:
    return [(r, lmx_tokens(r)) for r in system_rows(corpus, [split]) if r.get("lmx")]


def set_ser(pred: list[str], refs: list[list[str]]) -> float:
    return pooled_ser([ser_counts(pred, ref) for ref in refs])


def prediction(pred_dir: Path, row: dict) -> list[str] | None:
    """The tokens of ``row``'s prediction in ``pred_dir`` (``<piece_id>/<NNN>.lmx``), or None."""
    path = pred_dir / row["piece_id"] / f"{int(row['system']):03d}.lmx"
    return lmx_tokens({"root": str(path.parent), "lmx": path.name}) if path.is_file() else None


def paired(base: list, new: list, resamples: int, seed: int) -> dict:
    """Set SER of ``new`` minus that of ``base`` (SerCounts of the same systems, in order), with
    a paired bootstrap over systems: its 95% interval and the share of resamples where ``new``
    is not better."""
    err_b = np.array([c.errors for c in base], dtype=float)
    err_n = np.array([c.errors for c in new], dtype=float)
    length = np.array([c.ref_len for c in base], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(base), size=(resamples, len(base)))
    diff = (err_n[idx].sum(1) - err_b[idx].sum(1)) / length[idx].sum(1)      # (resamples,)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"difference": round(float((err_n.sum() - err_b.sum()) / length.sum()), 4),
            "difference_95": [round(float(lo), 4), round(float(hi), 4)],
            "p_not_better": round(float((diff >= 0).mean()), 4), "resamples": resamples}


def compare(pred_dir: Path, rows: list[tuple[dict, list[str]]], constant: list[str], resamples: int,
            seed: int, against: Path | None = None) -> dict:
    """Model vs constant on the systems of ``rows`` that have a prediction in ``pred_dir``; with
    ``against`` (another model's predictions) also model - that model on the systems both have."""
    model, floor, missing, pairs = [], [], [], []
    for row, ref in rows:
        tokens = prediction(pred_dir, row)
        if tokens is None:
            missing.append(f"{row['piece_id']}/{int(row['system']):03d}")
            continue
        model.append(ser_counts(tokens, ref))
        floor.append(ser_counts(constant, ref))
        other = prediction(against, row) if against is not None else None
        if other is not None:
            pairs.append((ser_counts(other, ref), model[-1]))
    if not model:
        return {"predictions": str(pred_dir), "systems": 0, "missing": len(missing)}
    out = {"predictions": str(pred_dir), "systems": len(model), "missing": len(missing),
           "missing_first": missing[:5], "model_ser": round(pooled_ser(model), 4),
           "constant_ser": round(pooled_ser(floor), 4), **paired(floor, model, resamples, seed)}
    if against is not None:
        base, new = [a for a, _ in pairs], [b for _, b in pairs]
        out["against"] = {"predictions": str(against), "systems": len(pairs),
                          **({"other_ser": round(pooled_ser(base), 4), **paired(base, new, resamples, seed)}
                             if pairs else {})}
    return out


def choose(train: list, valid: list, test: list, candidates: int, seed: int) -> tuple[dict, list[str]]:
    """The best of ``candidates`` seeded training systems on the valid split; its figures."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(train), size=min(candidates, len(train)), replace=False)
    scores = sorted((set_ser(train[i][1], valid), int(i)) for i in picks)
    best_valid, best = scores[0]
    row, tokens = train[best]
    out = {"corpus_systems": {"train": len(train), "valid": len(valid), "test": len(test)},
           "candidates": len(picks), "constant": {"piece_id": row["piece_id"], "system": row["system"],
                                                  "tokens": len(tokens)},
           "valid_ser": round(best_valid, 4), "test_ser": round(set_ser(tokens, test), 4),
           "median_candidate_valid_ser": round(float(np.median([s for s, _ in scores])), 4)}
    return out, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="a folder of predictions PRED/<piece_id>/<NNN>.lmx (repeatable)")
    parser.add_argument("--split", default="test", help="the split of --compare")
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples")
    parser.add_argument("--reuse", type=Path, default=None, help="an earlier --json output: its constant")
    parser.add_argument("--against", type=Path, default=None,
                        help="another model's predictions: each --compare also minus these (paired)")
    args = parser.parse_args()
    train = split_tokens(args.corpus, "train")
    valid = [t for _, t in split_tokens(args.corpus, "valid")]
    test = [t for _, t in split_tokens(args.corpus, "test")]
    if not (train and valid and test):
        sys.exit(f"need train, valid and test systems with LMX (got {len(train)}, {len(valid)}, {len(test)})")
    if args.reuse is not None:
        out = json.loads(args.reuse.read_text(encoding="utf-8"))
        want = (out["constant"]["piece_id"], out["constant"]["system"])
        tokens = next(t for r, t in train if (r["piece_id"], r["system"]) == want)
    else:
        out, tokens = choose(train, valid, test, args.candidates, args.seed)
    if args.compare:
        rows = split_tokens(args.corpus, args.split)
        out["compare"] = [compare(p, rows, tokens, args.bootstrap, args.seed, args.against) for p in args.compare]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
