"""Sequences in and out of the translator: steps, positions, batches, and generation.

``to_steps`` turns a global id sequence ([SOS]_X ... [EOS]_X) into (T, 4) steps,
``batch_steps`` pads several into (B, T, 4), ``step_positions`` gives their (B, T, 2)
positions. ``generate`` translates a batch: the source is encoded once, every decoder layer's
cross-attention keys/values are computed once, the main decoder's self-attention keys/values
are cached step by step (``KVCache``) and the sub-decoder makes the 4 codes of an image or
audio step with its own small cache. Every id it emits lies in the target's range (codebook
k at sub-step k). ``use_cache=False`` recomputes the decoder over the whole prefix at every
step: same tokens, used to check the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from umust_cli.errors import BadInputError
from umust_cli.model.translator import (CODEBOOK_SIZE, CODES_PER_STEP, PAD, SLOTS, KVCache,
                                        Translator, TranslatorConfig, allowed_ids, classes_to_ids,
                                        ids_to_classes)


# ---------------------------------------------------------------------------
# Steps and positions
# ---------------------------------------------------------------------------

def to_steps(ids: Sequence[int], modality: str, cfg: TranslatorConfig) -> torch.Tensor:
    """Global ids -> (T, 4) steps. Image/audio: every run of 4 codes (codebooks 0..3) is one
    step; any other id ([SOS], [EOS], [SEP], symbolic tokens) is a step of its own."""
    lo, hi = cfg.ranges[cfg.index(modality)]
    codes = CODES_PER_STEP[modality] == 4
    out: list[list[int]] = []
    run: list[int] = []
    for i in ids:
        i = int(i)
        if codes and lo <= i < hi:
            if (i - lo) // CODEBOOK_SIZE != len(run):
                raise BadInputError(f"{modality} ids are not in codebook order q0..q3 at id {i}")
            run.append(i)
            if len(run) == SLOTS:
                out.append(run)
                run = []
            continue
        if run:
            raise BadInputError(f"{modality} step cut short by id {i}")
        out.append([i] + [PAD] * (SLOTS - 1))
    if run:
        raise BadInputError(f"{modality} sequence ends inside a step")
    return torch.tensor(out, dtype=torch.long).reshape(-1, SLOTS)


def from_steps(steps: torch.Tensor) -> list[int]:
    """(T, 4) steps -> their global ids in order ([PAD] slots dropped)."""
    flat = steps.reshape(-1)
    return flat[flat != PAD].tolist()


def batch_steps(seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(T_i, 4) step tensors -> (B, max T_i, 4), padded with [PAD] steps."""
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=PAD)


def step_positions(steps: torch.Tensor, modality: str, height: torch.Tensor | int | None = None
                   ) -> torch.Tensor:
    """(B, T, 4) steps -> (B, T, 2) positions. Images (``height`` patches per column, one
    number or one per example): content step j -> (j // height, 1 + j % height), a special
    step -> (column of the next content step, 0); other modalities: (t, 0). [PAD] steps
    get (0, 0)."""
    b, t = steps.shape[:2]
    real = steps[..., 0] != PAD
    if modality != "image":
        pos = torch.arange(t, device=steps.device).expand(b, t) * real
        return torch.stack([pos, torch.zeros_like(pos)], -1)
    h = _heights(height, b, steps.device)[:, None]                      # (B, 1)
    content = real & (steps[..., 1] != PAD)
    j = torch.cumsum(content.long(), 1) - content.long()                # content steps before
    col = torch.div(j, h, rounding_mode="floor") * real
    row = torch.where(content, 1 + j % h, torch.zeros_like(j))
    return torch.stack([col, row], -1)


def _heights(height: torch.Tensor | int | Sequence[int] | None, b: int,
             device: torch.device) -> torch.Tensor:
    if height is None:
        raise BadInputError("image positions need the height of the systems in patches")
    h = torch.as_tensor(height, dtype=torch.long, device=device).reshape(-1)
    if h.numel() not in (1, b) or bool((h < 1).any()):
        raise BadInputError(f"need one image height (>= 1 patch) or one per example, got {h.tolist()}")
    return h.expand(b)


def _positions(n: int, b: int, modality: str, h: torch.Tensor | None,
               device: torch.device) -> torch.Tensor:
    """Positions (B, n, 2) of target steps 0 ([SOS]) .. n-1, as ``step_positions`` gives them."""
    t = torch.arange(n, device=device).expand(b, n)
    if modality != "image":
        return torch.stack([t, torch.zeros_like(t)], -1)
    j = (t - 1).clamp_min(0)                                            # content steps before
    col = torch.div(j, h[:, None], rounding_mode="floor")
    row = torch.where(t > 0, 1 + j % h[:, None], torch.zeros_like(t))
    return torch.stack([col, row], -1)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodingOptions:
    temperature: float = 0.0      # 0: greedy (argmax)
    top_k: int = 0                # > 0: sample among the k most likely ids
    top_p: float = 1.0            # < 1: sample from the smallest set with this probability
    max_steps: int | None = None  # None: the model's limit for the target modality
    min_steps: int = 0            # no [EOS] before this many steps (benchmarks: fixed lengths)
    use_cache: bool = True        # False: recompute the decoder over the prefix (slow; checks)
    seed: int | None = None       # the sampling generator's seed
    beam_size: int = 1            # > 1: beam search (symbolic targets; no sampling)
    length_penalty: float = 1.0   # beam ranking: sum of log-probabilities / length ** this

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise BadInputError("decoding needs temperature >= 0, top_k >= 0 and 0 < top_p <= 1")
        if self.beam_size < 1 or self.length_penalty < 0:
            raise BadInputError("decoding needs beam_size >= 1 and length_penalty >= 0")
        if self.beam_size > 1 and (self.temperature > 0 or not self.use_cache):
            raise BadInputError("beam search decodes without sampling (temperature 0), with the cache")
        if self.max_steps is not None and self.max_steps < 1 or self.min_steps < 0:
            raise BadInputError("decoding needs max_steps >= 1 and min_steps >= 0")


class StepRule(Protocol):
    """A grammar rule of a one-code (symbolic) target, applied at every step (as whisper's
    logit filters). Classes are the target's local ids, [EOS] the last class.
    ``codecs.notation.ChordRule`` is one."""

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits (B, classes) of what may not come next to -inf, in place."""

    def update(self, classes: torch.Tensor) -> None:
        """Read the classes (B,) just chosen."""

    def select(self, rows: Sequence[int]) -> None:
        """Keep the states of ``rows``, in that order (beam search copies and reorders rows)."""


@torch.inference_mode()
def generate(model: Translator, src: torch.Tensor, src_pos: torch.Tensor, src_modality: str,
             tgt_modality: str, options: DecodingOptions = DecodingOptions(),
             height: torch.Tensor | int | Sequence[int] | None = None,
             rule: StepRule | None = None) -> list[list[int]]:
    """Translate a batch of sources ((B, S, 4) steps, [PAD]-padded, with their positions).

    Returns per example the generated global ids without [SOS]/[EOS], the codes of each step
    in codebook order (what ``Vocabulary.to_local`` and the codecs read). A sequence ends at
    the target's [EOS] or after ``max_steps`` steps (then without [EOS]). Image targets need
    ``height``, the system's height in patches (one number or one per example). ``rule``
    (symbolic targets) forbids, at each step, what the target's grammar does not allow next.
    ``options.beam_size`` > 1 (symbolic targets): the best of a beam search (``beam_search``).
    """
    memory, mask = model.encode(src, src_pos, src_modality, tgt_modality)
    return generate_from_memory(model, memory, mask, tgt_modality, options, height, rule)


@torch.inference_mode()
def generate_from_memory(model: Translator, memory: torch.Tensor, mask: torch.Tensor | None, tgt_modality: str,
                         options: DecodingOptions = DecodingOptions(),
                         height: torch.Tensor | int | Sequence[int] | None = None,
                         rule: StepRule | None = None) -> list[list[int]]:
    """:func:`generate` after the encoder: ``memory`` (B, S', d) and ``mask`` as
    ``Translator.encode`` returns them, for a caller that also reads the encoder's own heads
    (OMR's CTC and key heads) and so encodes each source once."""
    cfg, b, dev = model.cfg, memory.shape[0], memory.device
    h = _heights(height, b, dev) if tgt_modality == "image" else None
    limit = _limit(cfg, tgt_modality, options, h)
    if rule is not None and CODES_PER_STEP[tgt_modality] != 1:
        raise BadInputError(f"a step rule applies to one-code targets, not {tgt_modality}")
    if options.beam_size > 1:
        return beam_search(model, memory, mask, tgt_modality, options, limit, rule)
    kv = model.memory(memory)
    gen = torch.Generator(device=dev).manual_seed(options.seed) if options.seed is not None else None
    eos = cfg.eos[cfg.index(tgt_modality)]
    steps = torch.full((b, 1, SLOTS), PAD, dtype=torch.long, device=dev)
    steps[:, 0, 0] = cfg.sos[cfg.index(tgt_modality)]
    pos = _positions(limit, b, tgt_modality, h, dev)                   # (B, limit, 2)
    model.check_positions(pos, tgt_modality)
    caches = [KVCache(limit) for _ in model.decoder] if options.use_cache else None
    head = _Head(model, tgt_modality, options, gen, rule)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    out = []
    for t in range(limit):
        if caches is not None:                                          # only the newest step
            state = model.decode(steps, pos[:, t:t + 1], tgt_modality, kv, mask, caches)
        else:
            state = model.decode(steps, pos[:, :t + 1], tgt_modality, kv, mask)
        codes = head.next_step(state[:, -1], t)                         # (B, 4)
        codes.masked_fill_(done[:, None], PAD)
        out.append(codes)
        done |= codes[:, 0] == eos
        if bool(done.all()):
            break
        steps = codes[:, None] if caches is not None else torch.cat([steps, codes[:, None]], 1)
    return _collect(torch.stack(out, 1), eos)


@dataclass
class _Beams:
    """Beam-search state of B examples x K hypotheses (row b * K + j is hypothesis j of b)."""

    scores: torch.Tensor                     # (B, K) summed log-probabilities; -inf: no hypothesis
    tokens: torch.Tensor                     # (B * K, t) classes chosen so far
    finished: list[list[tuple[float, list[int]]]]   # per example: (ranking score, classes)
    done: list[bool]                         # per example: settled (``_settled``), no more steps


def beam_search(model: Translator, memory: torch.Tensor, mask: torch.Tensor | None, tgt_modality: str,
                options: DecodingOptions, limit: int, rule: StepRule | None = None) -> list[list[int]]:
    """Beam search over a one-code (symbolic) target from the encoder's ``memory`` (B, S', d):
    K = ``options.beam_size`` hypotheses per example share one (B * K)-row decoder batch and
    its cache; a hypothesis ends at [EOS] and is ranked by its summed log-probability divided
    by its length (with [EOS]) ** ``options.length_penalty``; an example stops once K have
    ended and no live one can still rank above them (``_settled``). ``rule`` is applied to
    every hypothesis. Returns, like ``generate``, the ids of
    each example's best hypothesis without [SOS]/[EOS]."""
    cfg, dev, b, k = model.cfg, memory.device, memory.shape[0], options.beam_size
    if CODES_PER_STEP[tgt_modality] != 1:
        raise BadInputError(f"beam search decodes one-code targets (notation, MIDI), not {tgt_modality}")
    rows = torch.arange(b, device=dev).repeat_interleave(k)            # (B*K,) example of each row
    kv = model.memory(memory[rows])
    mask = None if mask is None else mask[rows]
    if rule is not None:
        rule.select(rows.tolist())
    caches = [KVCache(limit) for _ in model.decoder]
    pos = _positions(limit, b * k, tgt_modality, None, dev)             # (B*K, limit, 2)
    allowed, weights = allowed_ids(cfg, tgt_modality, 0), model.logit_weights(tgt_modality)[0]
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0                                                   # one live hypothesis at first
    beams = _Beams(scores, torch.zeros(b * k, 0, dtype=torch.long, device=dev),
                   [[] for _ in range(b)], [False] * b)
    steps = torch.full((b * k, 1, SLOTS), PAD, dtype=torch.long, device=dev)
    steps[:, 0, 0] = cfg.sos[cfg.index(tgt_modality)]
    for t in range(limit):
        state = model.decode(steps, pos[:, t:t + 1], tgt_modality, kv, mask, caches)[:, -1]
        logp = F.linear(state, weights).float().log_softmax(-1)          # (B*K, C); [EOS] last
        if rule is not None:
            rule.mask(logp)
        if t < options.min_steps:
            logp[:, -1] = float("-inf")
        src_rows, classes = _advance(beams, logp, k, options.length_penalty)
        if all(beams.done):
            break
        for cache in caches:
            cache.select(src_rows)
        if rule is not None:
            rule.select(src_rows.tolist())
            rule.update(classes)
        beams.tokens = torch.cat([beams.tokens[src_rows], classes[:, None]], 1)
        steps = torch.zeros_like(steps)
        steps[:, 0, 0] = classes_to_ids(classes, allowed)
    return [classes_to_ids(torch.tensor(best, dtype=torch.long), allowed).tolist()
            for best in _best(beams, k, options.length_penalty)]


def _advance(beams: _Beams, logp: torch.Tensor, k: int, penalty: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One beam step: per example the 2K best extensions; those ending in [EOS] join
    ``finished``, the best K others live on. Returns the source row and the class of each new
    row (B*K,); rows without a hypothesis get score -inf."""
    b, n = beams.scores.shape[0], logp.shape[-1]
    cand = (beams.scores.reshape(-1, 1) + logp).reshape(b, k * n)       # (B, K*C)
    top, flat = cand.topk(min(2 * k, k * n), -1)
    new_scores = torch.full_like(beams.scores, float("-inf"))
    src_rows, classes, length = [], [], beams.tokens.shape[1] + 1
    for i in range(b):
        live = []
        for score, f in zip(top[i].tolist(), flat[i].tolist()):
            if beams.done[i] or score == float("-inf") or len(live) == k:
                break
            j, c = divmod(f, n)
            if c == n - 1:                                                # [EOS]
                beams.finished[i].append((score / length ** penalty, beams.tokens[i * k + j].tolist()))
            else:
                live.append((score, i * k + j, c))
        beams.done[i] = beams.done[i] or _settled(beams.finished[i], live, k, length + 1, penalty)
        live += [(float("-inf"), i * k, 0)] * (k - len(live))
        new_scores[i] = torch.tensor([s for s, _, _ in live])
        src_rows += [r for _, r, _ in live]
        classes += [c for _, _, c in live]
    beams.scores = new_scores
    dev = logp.device
    return torch.tensor(src_rows, device=dev), torch.tensor(classes, dtype=torch.long, device=dev)


def _settled(finished: list[tuple[float, list[int]]], live: list[tuple[float, int, int]], k: int,
             length: int, penalty: float) -> bool:
    """An example is settled when K hypotheses have ended and none of the live ones, were it to
    end at the next step, would rank above the K-th of them (exact for ``penalty`` 0, since a
    sum of log-probabilities only falls; the usual heuristic otherwise)."""
    if len(finished) < k:
        return False
    kth = sorted((f[0] for f in finished), reverse=True)[k - 1]
    return not live or max(s for s, _, _ in live) / length ** penalty <= kth


def _best(beams: _Beams, k: int, penalty: float) -> list[list[int]]:
    """Each example's best finished hypothesis; without one (the length limit came first),
    its best live one, ranked the same way."""
    out = []
    for i, finished in enumerate(beams.finished):
        if not finished:
            length = beams.tokens.shape[1]
            finished = [(float(s) / max(length, 1) ** penalty, beams.tokens[i * k + j].tolist())
                        for j, s in enumerate(beams.scores[i].tolist()) if s > float("-inf")]
        out.append(max(finished, key=lambda f: f[0])[1] if finished else [])
    return out


def _limit(cfg: TranslatorConfig, modality: str, options: DecodingOptions,
           h: torch.Tensor | None) -> int:
    most = cfg.max_steps[cfg.index(modality)]
    if modality == "image":                                             # columns must fit too
        most = min(most, cfg.max_columns * int(h.min()))
    if options.max_steps is not None and options.max_steps > most:
        raise BadInputError(f"max_steps {options.max_steps} exceeds the model's {most} "
                            f"{modality} steps")
    return options.max_steps or most


class _Head:
    """Main-decoder states -> the next step's ids: the logits (and, for image / audio, the
    sub-decoder's 4 sub-steps) and the choice. Built once per ``generate`` call: the output
    embeddings with their [EOS] row and the sub-decoder's cache are reused at every step."""

    def __init__(self, model: Translator, modality: str, options: DecodingOptions,
                 gen: torch.Generator | None, rule: StepRule | None = None):
        self.model, self.modality, self.options, self.gen, self.rule = model, modality, options, gen, rule
        self.allowed = [allowed_ids(model.cfg, modality, k) for k in range(CODES_PER_STEP[modality])]
        self.weights = model.logit_weights(modality) if options.use_cache else None
        self.cache = KVCache(SLOTS) if options.use_cache else None
        self.eos = model.cfg.eos[model.cfg.index(modality)]

    def logits(self, h: torch.Tensor, k: int) -> torch.Tensor:
        if self.weights is None:                                        # the plain path (checks)
            return self.model.logits(h, self.modality, k)
        return F.linear(h, self.weights[k])

    def next_step(self, state: torch.Tensor, t: int) -> torch.Tensor:
        """Main-decoder states (B, d) -> step t + 1's ids (B, 4), [PAD] after an [EOS]."""
        codes = state.new_zeros(state.shape[0], SLOTS, dtype=torch.long)  # [PAD] is 0
        no_eos = t < self.options.min_steps
        if len(self.allowed) == 1:
            logits = self.logits(state, 0)
            if self.rule is not None:
                self.rule.mask(logits)
            codes[:, 0] = _pick(logits, self.allowed[0], self.options, self.gen, no_eos)
            if self.rule is not None:
                self.rule.update(ids_to_classes(codes[:, 0], self.allowed[0]))
            return codes
        if self.cache is not None:
            self.cache.clear()
        for k in range(SLOTS):
            if self.cache is not None:                                  # code k-1 only
                sub = self.model.sub_decode(state, codes[:, k - 1:k] if k else codes[:, :1], self.cache)
            else:                                                       # [PAD], q0 .. q(k-1)
                sub = self.model.sub_decode(state, F.pad(codes[:, :k], (1, 0), value=PAD))
            codes[:, k] = _pick(self.logits(sub[:, -1], k), self.allowed[k], self.options, self.gen,
                                no_eos)
        codes[:, 1:].masked_fill_(codes[:, :1] == self.eos, PAD)       # no boolean indexing
        return codes


def _pick(logits: torch.Tensor, allowed: tuple[int, int, int | None], options: DecodingOptions,
          gen: torch.Generator | None, no_eos: bool = False) -> torch.Tensor:
    """Logits over the allowed ids (B, n) -> chosen global ids (B,)."""
    if no_eos and allowed[2] is not None:                               # [EOS] is the last class
        logits[:, -1] = float("-inf")                                   # a fresh tensor: in place
    if options.temperature <= 0:
        return classes_to_ids(logits.argmax(-1), allowed)
    logits = logits.float() / options.temperature
    if options.top_k > 0:
        kth = logits.topk(min(options.top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if options.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > options.top_p                 # keep the crossing id
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    cls = torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
    return classes_to_ids(cls, allowed)


def _collect(steps: torch.Tensor, eos: int) -> list[list[int]]:
    """(B, T, 4) generated steps -> per example the ids before its [EOS]."""
    out = []
    for seq in steps.cpu():
        ends = (seq[:, 0] == eos).nonzero()
        out.append(from_steps(seq[: int(ends[0]) if len(ends) else len(seq)]))
    return out
