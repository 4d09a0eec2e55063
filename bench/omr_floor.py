"""The constant-prediction floor of OMR: one training system's LMX predicted for every input.

    python bench/omr_floor.py CORPUS [--candidates 300] [--seed 0] [--json OUT.json]

LMX systems share much of their structure (measure, voice, staff, beam and duration tokens), so
predicting one fixed training system for every held-out system already scores a set SER well
below 1. A trained OMR model is useful only where it beats this floor. The constant is chosen
honestly: ``--candidates`` training systems (a seeded sample) are each scored on the valid split,
the best one is kept, and only that one is scored on the test split. Prints one JSON object:
the chosen constant (piece, system, length), its valid and test SER, and the median candidate's
valid SER.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    train = split_tokens(args.corpus, "train")
    valid = [t for _, t in split_tokens(args.corpus, "valid")]
    test = [t for _, t in split_tokens(args.corpus, "test")]
    if not (train and valid and test):
        sys.exit(f"need train, valid and test systems with LMX (got {len(train)}, {len(valid)}, {len(test)})")
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(train), size=min(args.candidates, len(train)), replace=False)
    scores = sorted((set_ser(train[i][1], valid), int(i)) for i in picks)
    best_valid, best = scores[0]
    row, tokens = train[best]
    out = {"corpus_systems": {"train": len(train), "valid": len(valid), "test": len(test)},
           "candidates": len(picks), "constant": {"piece_id": row["piece_id"], "system": row["system"],
                                                  "tokens": len(tokens)},
           "valid_ser": round(best_valid, 4), "test_ser": round(set_ser(tokens, test), 4),
           "median_candidate_valid_ser": round(float(np.median([s for s, _ in scores])), 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
