"""Speed of the translator against a plain ``torch.nn.Transformer`` of identical shapes.

    python bench/translator_speed.py [--device cpu|cuda] [--preset small|paper] [--threads 2]
        [--batch 8] [--src-len 384] [--tgt-len 192] [--train-iters 5]
        [--gen-steps 1000] [--ref-steps 1000] [--audio-steps 1723] [--gen-batch 8] [--ref-batch-steps 200]

Weights are untrained (the amount of arithmetic does not depend on them). The reference
has our embeddings (4 codes summed, learned positions), ``nn.Transformer`` (pre-LN, GELU,
same widths, layers and heads), an ``nn.TransformerEncoderLayer`` sub-decoder over the
4 codes of a step and a full-vocabulary output layer; it generates the plain way, running
the whole decoder over the prefix at every step (no cache).

Training: tokens/s (non-[PAD] ids of source and target) of forward + backward + AdamW
steps on midi -> audio (4-code targets through the sub-decoder) and image -> notation
(grid layout; one-code targets), fp32 and bf16 autocast, ours and the reference.
Generation: notation -> audio (4 codes a step) at a fixed length (``min_steps`` keeps
[EOS] out): ours KV-cached at batch 1 and ``--gen-batch``, the uncached reference at batch 1
and ``--gen-batch`` (``--ref-steps`` / ``--ref-batch-steps``: its cost grows with the square
of the length, so a short run may stop it earlier; compare per-run times at equal lengths
only), and ours at ``--audio-steps`` frames (1,723 = 20 s of audio). Prints one JSON object
(progress rows on stderr). Every figure comes with the CPU seconds of this process beside
the wall time: on a shared CPU the wall time also counts other people's work.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------
# The reference: torch.nn.Transformer of identical shapes
# ---------------------------------------------------------------------------

class Reference(nn.Module):
    """Our embeddings around ``nn.Transformer``, an ``nn.TransformerEncoderLayer`` sub-decoder
    and a full-vocabulary output layer; generation re-runs the decoder over the prefix."""

    def __init__(self, cfg):
        super().__init__()
        d, self.vocab_size = cfg.d_model, cfg.vocab_size
        self.tok = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
        self.pos_src = nn.Embedding(max(cfg.max_steps) + 2, d)
        self.pos_tgt = nn.Embedding(max(cfg.max_steps) + 2, d)
        self.tf = nn.Transformer(d, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers,
                                 cfg.d_ff, cfg.dropout, "gelu", batch_first=True, norm_first=True)
        self.sub = nn.TransformerEncoderLayer(d, cfg.sub_heads, cfg.d_ff, cfg.dropout, "gelu",
                                              batch_first=True, norm_first=True)
        self.sub_pos = nn.Embedding(4, d)
        self.head = nn.Linear(d, cfg.vocab_size)

    def embed(self, steps, table):
        return self.tok(steps).sum(2) + table(torch.arange(steps.shape[1], device=steps.device))

    def encode(self, src):
        return self.tf.encoder(self.embed(src, self.pos_src), src_key_padding_mask=src[..., 0] == 0)

    def decode(self, tgt, memory, src):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], device=tgt.device)
        return self.tf.decoder(self.embed(tgt, self.pos_tgt), memory, tgt_mask=mask, tgt_is_causal=True,
                               memory_key_padding_mask=src[..., 0] == 0)

    def sub_states(self, h, prev):                                    # (N, d), (N, K) -> (N, K, d)
        x = h[:, None] + self.tok(prev) + self.sub_pos.weight[:prev.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(prev.shape[1], device=h.device)
        return self.sub(x, src_mask=mask, is_causal=True)

    def forward(self, src, tgt, codes: int):
        h = self.decode(tgt[:, :-1], self.encode(src), src)
        labels = tgt[:, 1:, :codes]
        if codes == 1:
            return F.cross_entropy(self.head(h).flatten(0, 1), labels.reshape(-1), ignore_index=0)
        prev = F.pad(labels[..., :3], (1, 0))
        s = self.sub_states(h.reshape(-1, h.shape[-1]), prev.reshape(-1, 4))
        logits = self.head(s).reshape(-1, self.vocab_size)
        return F.cross_entropy(logits, labels.reshape(-1), ignore_index=0)

    @torch.no_grad()
    def generate(self, src, steps: int, sos: int):
        memory = self.encode(src)
        tgt = torch.zeros(src.shape[0], 1, 4, dtype=torch.long, device=src.device)
        tgt[:, 0, 0] = sos
        for _ in range(steps):
            h = self.decode(tgt, memory, src)[:, -1]
            codes = torch.zeros(src.shape[0], 4, dtype=torch.long, device=src.device)
            for k in range(4):
                prev = F.pad(codes[:, :k], (1, 0))
                codes[:, k] = self.head(self.sub_states(h, prev)[:, -1]).argmax(-1)
            tgt = torch.cat([tgt, codes[:, None]], 1)
        return tgt


# ---------------------------------------------------------------------------
# Data and measurements
# ---------------------------------------------------------------------------

def random_steps(cfg, modality: str, batch: int, length: int, device, seed: int = 0):
    """[SOS] + ``length`` random steps + [EOS] for every example: (B, length + 2, 4)."""
    from umust_cli.model.translator import CODEBOOK_SIZE, CODES_PER_STEP

    gen = torch.Generator().manual_seed(seed)
    i = cfg.index(modality)
    lo, hi = cfg.ranges[i]
    steps = torch.zeros(batch, length + 2, 4, dtype=torch.long)
    if CODES_PER_STEP[modality] == 4:
        steps[:, 1:-1] = lo + torch.randint(0, CODEBOOK_SIZE, (batch, length, 4), generator=gen) \
            + torch.arange(4) * CODEBOOK_SIZE
    else:
        steps[:, 1:-1, 0] = torch.randint(lo, hi, (batch, length), generator=gen)
    steps[:, 0, 0], steps[:, -1, 0] = cfg.sos[i], cfg.eos[i]
    return steps.to(device)


def train_speed(model, step_fn, tokens: int, iters: int, device, bf16: bool) -> tuple[float, float]:
    """tokens per wall second and per CPU second of this process, over ``iters`` AdamW steps
    (after one warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def one():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one()
    seconds, cpu = _timed(lambda: [one() for _ in range(iters)], device)
    return tokens * iters / seconds, tokens * iters / cpu


def training_rows(cfg, ours, ref, args, device) -> list[dict]:
    from umust_cli.model.generate import step_positions

    rows = []
    for src_m, tgt_m, height in (("midi", "audio", None), ("image", "notation", 20)):
        src = random_steps(cfg, src_m, args.batch, args.src_len, device, 1)
        tgt = random_steps(cfg, tgt_m, args.batch, args.tgt_len, device, 2)
        sp, tp = step_positions(src, src_m, height), step_positions(tgt, tgt_m)
        tokens = int((src != 0).sum() + (tgt != 0).sum())
        codes = 4 if tgt_m == "audio" else 1
        for bf16 in (False, True):
            row = {"task": f"{src_m}->{tgt_m}", "dtype": "bf16-autocast" if bf16 else "fp32"}
            for name, model, fn in (("ours", ours, lambda: ours(src, sp, tgt, tp, src_m, tgt_m)),
                                    ("reference", ref, lambda: ref(src, tgt, codes))):
                wall, cpu = train_speed(model, fn, tokens, args.train_iters, device, bf16)
                row[f"{name}_tokens_s"], row[f"{name}_tokens_cpu_s"] = round(wall), round(cpu)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def generation_rows(cfg, ours, ref, args, device) -> list[dict]:
    from umust_cli.model.generate import DecodingOptions, generate, step_positions

    ours.eval()
    ref.eval()
    rows = []
    plan = [("ours-kv-cache", 1, args.gen_steps), ("reference-uncached", 1, args.ref_steps),
            ("ours-kv-cache", args.gen_batch, args.gen_steps),
            ("reference-uncached", args.gen_batch, args.ref_batch_steps),
            ("ours-kv-cache", 1, args.audio_steps)]
    if args.ref_batch_steps != args.gen_steps and args.ref_batch_steps:
        plan.insert(4, ("ours-kv-cache", args.gen_batch, args.ref_batch_steps))
    if args.ref_steps != args.gen_steps and args.ref_steps:
        plan.insert(2, ("ours-kv-cache", 1, args.ref_steps))
    for who, batch, steps in plan:
        if not steps:
            continue
        src = random_steps(cfg, "notation", batch, 300, device, 3)
        sp = step_positions(src, "notation")
        options = DecodingOptions(max_steps=steps, min_steps=steps)
        if who == "ours-kv-cache":
            seconds, cpu = _timed(lambda: generate(ours, src, sp, "notation", "audio", options), device)
        else:
            sos = cfg.sos[cfg.index("audio")]
            seconds, cpu = _timed(lambda: ref.generate(src, steps, sos), device)
        row = {"model": who, "batch": batch, "steps": steps, "seconds": round(seconds, 3),
               "cpu_seconds": round(cpu, 3), "steps_per_s": round(steps / seconds, 1)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def speedups(gen: list[dict]) -> dict:
    """Reference seconds / ours seconds at equal batch and length."""
    ours = {(r["batch"], r["steps"]): r["seconds"] for r in gen if r["model"] == "ours-kv-cache"}
    return {f"batch{r['batch']}_steps{r['steps']}": round(r["seconds"] / ours[(r["batch"], r["steps"])], 1)
            for r in gen if r["model"] == "reference-uncached" and (r["batch"], r["steps"]) in ours}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default=None, help="small on CPU, paper on CUDA by default")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--src-len", type=int, default=384)
    p.add_argument("--tgt-len", type=int, default=192)
    p.add_argument("--train-iters", type=int, default=5)
    p.add_argument("--gen-steps", type=int, default=1000)
    p.add_argument("--ref-steps", type=int, default=1000)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--ref-batch-steps", type=int, default=200)
    p.add_argument("--audio-steps", type=int, default=1723)
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="enable_nested_tensor")

    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.device import resolve_device
    from umust_cli.model.translator import Translator, count_parameters, make_config

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = args.preset or ("paper" if device.type == "cuda" else "small")
    cfg = make_config(preset, default_vocabulary())
    torch.manual_seed(0)
    ours, ref = Translator(cfg).to(device), Reference(cfg).to(device)
    out = {"device": str(device), "preset": preset, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "params_ours": count_parameters(ours), "params_reference": count_parameters(ref),
           "args": vars(args)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    if not args.skip_training:
        out["training"] = training_rows(cfg, ours, ref, args, device)
    out["generation"] = generation_rows(cfg, ours, ref, args, device)
    out["generation_speedup_vs_reference"] = speedups(out["generation"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
