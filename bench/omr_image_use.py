"""Does an OMR translator read its image? Valid loss per LMX token class, with each system's own
image codes and with another system's (the batch rolled by one), side by side.

    python bench/omr_image_use.py --data CORPUS --codes CODES --model RUN [--systems 64] [--split valid] [--json OUT]

A decoder that has learnt only the notation's grammar scores the same with either image; the
gap (mismatched - own) per class says what it reads from the image (pitch, key, clef, ...).
The systems are the ``--systems`` shortest of the split (their engraved images, variant 0),
in batches of 8 of similar length, so a mismatched image has about the same width.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.data import pairs as pairs_io  # noqa: E402
from umust_cli.data.tokenize import corpus_vocabulary  # noqa: E402
from umust_cli.model.translator import allowed_ids, ids_to_classes  # noqa: E402
from umust_cli.train.translator import TrainConfig, load_data  # noqa: E402
from umust_cli.translate.engines import load_translator  # noqa: E402

NAMED = ("measure", "chord", "rest", "backup", "forward", "dot")


def token_class(name: str) -> str:
    if name[:1] in "ABCDEFG" and name[1:2].isdigit():
        return "pitch"
    if ":" in name:
        return name.split(":")[0]
    return name if name in NAMED else "duration/other"


def losses(model, store, spec, src: list[int], tgt: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses of ``tgt``'s LMX given ``src``'s images: (labels, losses), (B, T) each."""
    b = pairs_io.collate(store, 0, spec, src, [0] * len(src), [0] * len(src))
    t = pairs_io.collate(store, 0, spec, tgt, [0] * len(tgt), [0] * len(tgt))
    memory, mask = model.encode(b.src, b.src_pos, "image", "notation")
    h = model.decode(t.tgt[:, :-1], t.tgt_pos[:, :-1], "notation", model.memory(memory), mask)
    labels = t.tgt[:, 1:, 0]
    cls = ids_to_classes(labels, allowed_ids(model.cfg, "notation", 0))
    return labels, F.cross_entropy(model.logits(h, "notation").transpose(1, 2), cls, reduction="none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--codes", type=Path)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--systems", type=int, default=64)
    ap.add_argument("--split", default="valid", help="valid (held out) or train (does it read what it was trained on?)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vocab = corpus_vocabulary(args.data)
    model = load_translator(args.model, vocab).eval()
    cfg = TrainConfig(tasks=pairs_io.parse_tasks("omr", "i2a"), scans=False, image_layout=model.cfg.image_layout)
    data = load_data(args.data, args.split, cfg, model.cfg, vocab, args.codes)
    pairs, spec = data.pairs[0][:args.systems], cfg.tasks[0]
    names, off = vocab.names("notation"), vocab.offset("notation")
    sums = {k: defaultdict(lambda: [0.0, 0]) for k in ("own", "mismatched")}
    with torch.no_grad():
        for i in range(0, len(pairs), 8):
            own = [p.system for p in pairs[i:i + 8]]
            for key, src in (("own", own), ("mismatched", own[1:] + own[:1])):
                labels, loss = losses(model, data.store, spec, src, own)
                for lab, value in zip(labels.flatten().tolist(), loss.flatten().tolist()):
                    if off <= lab < off + len(names):
                        acc = sums[key][token_class(names[lab - off])]
                        acc[0], acc[1] = acc[0] + value, acc[1] + 1
    rows = [{"class": c, "tokens": n, "own": round(s / n, 3), "mismatched": round(sums["mismatched"][c][0] / n, 3)}
            for c, (s, n) in sorted(sums["own"].items(), key=lambda kv: -kv[1][1])]
    total = {k: sum(v[0] for v in sums[k].values()) / sum(v[1] for v in sums[k].values()) for k in sums}
    out = {"model": str(args.model), "systems": len(pairs), "classes": rows,
           "all": {k: round(v, 4) for k, v in total.items()}}
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
