"""Can the translator's encoder read pitches from its image input? An encoder-only CTC probe.

    python bench/omr_ctc_probe.py --data CORPUS --codes CODES [--row-dim 16] [--minutes 15] [--json OUT]

Trains only the image side of a ``small`` column-layout translator (code embeddings from the
codec's codebooks, row squeeze, column mix with its LayerNorm, encoder, CTC head) on the OMR
train pairs with the CTC loss of ``data.staff_order`` alone: each staff's pitches, left to
right, read from the encoder's image columns. No decoder, so a step costs a fraction of an OMR
step, and what is learnt can only come from the image. Reports the train CTC loss per 50 steps
and, at the end, on the 64 shortest valid systems: the CTC loss per target token and the
greedy CTC decoding's pitch error rate (edit distance / target length, both staves pooled;
predicting nothing scores 1.0).

Arms differ in the input layout's width per patch row (``--row-dim``; the ``small`` preset has 16,
``paper`` 64) or anything else passed; run them side by side, one thread each.

``--init RUN`` starts from an OMR run's weights (its image side; the CTC head starts fresh) and
``--save DIR`` writes the whole model (the decoder as it came) as a translator checkpoint that
``umust train translator --ctc W --init DIR`` starts from: the encoder pre-trained to read pitches.
``--merge PROBE --decoder-from RUN --save DIR`` joins a probe's image side (image code rows of the
embedding, image positions, column mixing, encoder, CTC head) with an OMR run's decoder side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli import checkpoint as ckpt_io  # noqa: E402
from umust_cli.data import pairs as pairs_io  # noqa: E402
from umust_cli.data.tokenize import corpus_vocabulary  # noqa: E402
from umust_cli.eval.metrics import edit_distance  # noqa: E402
from umust_cli.model.translator import MODEL_KIND, Translator, TranslatorConfig  # noqa: E402
from umust_cli.train.engine import RunOptions  # noqa: E402
from umust_cli.train.translator import TrainConfig, _init_codebooks, make_task  # noqa: E402

VALID_SYSTEMS = 64
IMAGE_SIDE = ("image_col.", "image_row.", "target.", "row_in.", "column_mix.", "column_ln.", "encoder.",
              "enc_ln.", "ctc.")


def merge(probe: Path, run: Path, out: Path, vocab) -> None:
    """``run``'s weights with ``probe``'s image side (module docstring), saved as ``out``."""
    image, probe_config = ckpt_io.load_model(probe, vocab)
    state, _ = ckpt_io.load_model(run, vocab)
    lo, hi = probe_config["model"]["ranges"][0]                       # the image code ids
    state = {k: v for k, v in state.items() if not k.startswith(IMAGE_SIDE)}
    state.update({k: v for k, v in image.items() if k.startswith(IMAGE_SIDE)})
    state["tok.weight"] = state["tok.weight"].clone()
    state["tok.weight"][lo:hi] = image["tok.weight"][lo:hi]
    config = dict(probe_config, merged={"image_side": str(probe), "decoder_side": str(run)})
    ckpt_io.save_model(out, state, config, vocab)


def evaluate(model: Translator, task, spec) -> dict:
    """CTC loss and pitch error rate on the shortest valid systems."""
    pairs = task.valid_data.pairs[0][:VALID_SYSTEMS]
    model.eval()
    loss, errors, length = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), 8):
            systems = [p.system for p in pairs[i:i + 8]]
            b = pairs_io.collate(task.valid_data.store, 0, spec, systems, [0] * len(systems), [0] * len(systems))
            memory, mask = model.encode(b.src, b.src_pos, "image", "notation")
            targets = task.staff_targets(b.tgt[..., 0])
            loss += float(model.ctc_loss(memory, mask, targets)) * len(systems)
            for hyp, ref in zip(model.ctc_paths(memory, mask), targets.tolist()):
                for h, r in zip(hyp, ref):
                    r = [x for x in r if x >= 0]
                    errors, length = errors + edit_distance(h, r), length + len(r)
    model.train()
    return {"valid_ctc": round(loss / len(pairs), 4), "valid_per": round(errors / max(length, 1), 4),
            "valid_systems": len(pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--codes", type=Path)
    ap.add_argument("--row-dim", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--init", type=Path, help="an OMR run (column layout, --column-norm) to start from")
    ap.add_argument("--save", type=Path, help="write the model here as a translator checkpoint")
    ap.add_argument("--merge", type=Path, help="a probe's saved model: join its image side with --decoder-from")
    ap.add_argument("--decoder-from", type=Path, help="with --merge: the OMR run whose decoder side is kept")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.decoder_from, args.save, corpus_vocabulary(args.data))
        return
    torch.set_num_threads(args.threads)
    vocab = corpus_vocabulary(args.data)
    cfg = TrainConfig(tasks=pairs_io.parse_tasks("omr", "i2a"), column_norm=True, ctc=1.0, lr=args.lr)
    task = make_task(args.data, Path("/nonexistent-probe-run"), cfg, RunOptions(device="cpu", progress=False),
                     vocab, args.codes)
    torch.manual_seed(0)
    model = Translator(dataclasses.replace(task.model_cfg, row_dim=args.row_dim))
    _init_codebooks(model, cfg)
    if args.init:
        ckpt_io.warm_start(model, args.init, MODEL_KIND, model.cfg.to_dict(), vocab, fresh=("ctc.",),
                           normalize=lambda saved: dict(TranslatorConfig.from_dict(saved).to_dict(),
                                                          ctc_classes=model.cfg.ctc_classes))
    params = [p for name, p in model.named_parameters() if not name.startswith(("decoder.", "sub", "dec_ln"))]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    spec, start, curve, window = cfg.tasks[0], time.time(), [], []
    for step, batch in enumerate(task.batches(0), 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 100)
        opt.zero_grad()
        for b in batch:
            memory, mask = model.encode(b.src, b.src_pos, "image", "notation")
            loss = model.ctc_loss(memory, mask, task.staff_targets(b.tgt[..., 0]))
            loss.backward()
            window.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0:
            curve.append({"step": step, "train_ctc": round(sum(window) / len(window), 4),
                          "seconds": round(time.time() - start)})
            window = []
            print(json.dumps(curve[-1]), flush=True)
        if time.time() - start > args.minutes * 60:
            break
    out = {"row_dim": args.row_dim, "lr": args.lr, "steps": step, "curve": curve, **evaluate(model, task, spec)}
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}))
    if args.save:
        config = {"kind": MODEL_KIND, "format": 1, "step": step, "direction": "i2a", "tasks": ["omr"],
                  "model": model.cfg.to_dict(), "probe": {k: v for k, v in out.items() if k != "curve"}}
        ckpt_io.save_model(args.save, model.state_dict(), config, vocab)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
