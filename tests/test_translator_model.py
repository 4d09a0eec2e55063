"""The translator model (umust_cli/model/translator.py, generate.py) on the tiny preset, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import torch_threads

from umust_cli.codecs.base import MODALITIES as CODEC_MODALITIES
from umust_cli.codecs.vocab import Vocabulary, default_vocabulary
from umust_cli.errors import BadInputError, CheckpointError
from umust_cli.model.generate import (DecodingOptions, batch_steps, from_steps, generate,
                                      step_positions, to_steps)
from umust_cli.model.translator import (MODALITIES, PRESETS, Translator, TranslatorConfig,
                                        count_parameters, init_from_codebooks, make_config,
                                        read_codec_codebooks)

WEIGHTS = Path(__file__).resolve().parents[1] / "umust_cli" / "weights"
VOCAB = Vocabulary(notation=tuple(f"n{i}" for i in range(40)), midi=tuple(f"m{i}" for i in range(60)))
HEIGHT = 2          # image targets: patches per column
SRC_HEIGHT = 3      # image sources
# (source, target) directions of the overfitting test
DIRECTIONS = [("image", "notation"), ("audio", "midi"), ("notation", "image"), ("midi", "audio")]


def _local(modality: str, n_steps: int, gen: torch.Generator) -> list[int]:
    """Random local ids of ``n_steps`` steps (4 codes each for image/audio)."""
    if modality in ("image", "audio"):
        codes = torch.randint(0, 1024, (n_steps, 4), generator=gen) + torch.arange(4) * 1024
        return codes.reshape(-1).tolist()
    return torch.randint(0, len(VOCAB.names(modality)), (n_steps,), generator=gen).tolist()


def _pairs(src: str, tgt: str, seed: int) -> list[tuple[list[int], list[int]]]:
    """Three (source, target) global id sequences of different lengths."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(3):
        n_src = SRC_HEIGHT * (2 + i) if src == "image" else 5 + 2 * i
        n_tgt = HEIGHT * (3 - i) if tgt == "image" else 7 - i
        out.append((VOCAB.wrap(src, _local(src, n_src, gen)), VOCAB.wrap(tgt, _local(tgt, n_tgt, gen))))
    return out


def _batch(cfg, ids: list[list[int]], modality: str, height: int):
    steps = batch_steps([to_steps(s, modality, cfg) for s in ids])
    return steps, step_positions(steps, modality, height)


def _train(model: Translator, data: dict, iters: int) -> dict:
    """Overfit ``model`` on every direction of ``data``; returns the last loss of each."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(iters):
        losses = {}
        for (src, tgt), (s, sp, t, tp) in data.items():
            losses[(src, tgt)] = model(s, sp, t, tp, src, tgt)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    model.eval()
    return {k: float(v.detach()) for k, v in losses.items()}


def _tensors(cfg, pairs, src: str, tgt: str):
    s, sp = _batch(cfg, [p[0] for p in pairs], src, SRC_HEIGHT)
    t, tp = _batch(cfg, [p[1] for p in pairs], tgt, HEIGHT)
    return s, sp, t, tp


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread only spins on a shared, busy CPU."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def trained(one_thread):
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB)
    model = Translator(cfg)
    pairs = {d: _pairs(*d, seed=i) for i, d in enumerate(DIRECTIONS)}
    data = {d: _tensors(cfg, pairs[d], *d) for d in DIRECTIONS}
    losses = _train(model, data, iters=90)
    return model, pairs, data, losses


def _content(ids: list[int]) -> list[int]:
    return ids[1:-1]   # without [SOS] / [EOS]


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

def test_modalities_follow_the_codecs_order():
    assert MODALITIES == CODEC_MODALITIES


def test_config_round_trips_through_json_and_rejects_missing_fields():
    cfg = make_config("tiny", VOCAB, "column")
    assert TranslatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    broken = cfg.to_dict()
    del broken["d_model"]
    with pytest.raises(CheckpointError, match="d_model"):
        TranslatorConfig.from_dict(broken)
    old = cfg.to_dict()
    del old["column_norm"]                      # saved before the option: no column LayerNorm
    assert TranslatorConfig.from_dict(old).column_norm is False
    normed = Translator(make_config("tiny", VOCAB, "column", column_norm=True))
    assert "column_ln.weight" in normed.state_dict()
    assert "column_ln.weight" not in Translator(cfg).state_dict()
    with pytest.raises(BadInputError, match="layout"):
        make_config("tiny", VOCAB, "rows")
    with pytest.raises(BadInputError, match="preset"):
        make_config("huge", VOCAB)


def test_presets_sizes():
    paper = PRESETS["paper"]
    assert (paper.n_encoder_layers, paper.n_decoder_layers, paper.d_model, paper.d_ff,
            paper.n_heads, paper.sub_heads) == (12, 12, 1024, 4096, 16, 8)
    vocab = default_vocabulary()
    for layout in ("grid", "column"):
        n = count_parameters(Translator(make_config("small", vocab, layout)))
        assert n * 2 <= 16 * 2**20, f"small ({layout}) is {n * 2 / 2**20:.1f} MiB in fp16"


# ---------------------------------------------------------------------------
# Steps, positions, shapes
# ---------------------------------------------------------------------------

def test_steps_round_trip_and_image_positions():
    cfg = make_config("tiny", VOCAB)
    ids = VOCAB.wrap("image", _local("image", 6, torch.Generator().manual_seed(1)))
    steps = to_steps(ids, "image", cfg)
    assert steps.shape == (8, 4) and from_steps(steps) == ids
    pos = step_positions(steps[None], "image", 3)[0].tolist()
    assert pos == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 1], [1, 2], [1, 3], [2, 0]]
    with pytest.raises(BadInputError, match="codebook order"):
        to_steps([ids[0], ids[2], ids[1], *ids[3:]], "image", cfg)
    notation = VOCAB.wrap("notation", [3, 4, 5])
    assert to_steps(notation, "notation", cfg)[:, 1:].eq(0).all()
    positions = step_positions(to_steps(notation, "notation", cfg)[None], "notation")
    assert positions[0, :, 0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("layout", ["grid", "column"])
def test_shapes(layout):
    cfg = make_config("tiny", VOCAB, layout)
    model = Translator(cfg)
    s, sp, t, tp = _tensors(cfg, _pairs("image", "audio", 3), "image", "audio")
    memory, mask = model.encode(s, sp, "image", "audio")
    n_src = sp[..., 0].max() + 1 if layout == "column" else s.shape[1]
    assert memory.shape == (3, n_src, cfg.d_model) and mask.shape == (3, 1, 1, n_src)
    assert mask.sum((1, 2, 3)).tolist() == ([3, 4, 5] if layout == "column" else [8, 11, 14])
    h = model.decode(t[:, :-1], tp[:, :-1], "audio", model.memory(memory), mask)
    assert h.shape == (3, t.shape[1] - 1, cfg.d_model)
    assert model.logits(h, "audio", 0).shape[-1] == 1025 and model.logits(h, "audio", 1).shape[-1] == 1024
    assert model.logits(h, "midi").shape[-1] == 61
    loss = model(s, sp, t, tp, "image", "audio")
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert model.tok.weight.grad.abs().sum() > 0


def test_too_long_source_is_a_bad_input():
    cfg = make_config("tiny", VOCAB)
    long = to_steps(VOCAB.wrap("midi", [1] * 80), "midi", cfg)[None]
    with pytest.raises(BadInputError, match="too long: midi step 81 .* at most 65"):
        Translator(cfg).encode(long, step_positions(long, "midi"), "midi", "notation")
    with pytest.raises(BadInputError):
        DecodingOptions(top_p=0)


# ---------------------------------------------------------------------------
# Overfitting and generation
# ---------------------------------------------------------------------------

def test_loss_falls_to_near_zero(trained):
    _, _, _, losses = trained
    assert all(v < 0.05 for v in losses.values()), losses


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_greedy_generation_reproduces_targets(trained, direction):
    model, pairs, _, _ = trained
    src, tgt = direction
    for source, target in pairs[direction]:
        s, sp = _batch(model.cfg, [source], src, SRC_HEIGHT)
        assert generate(model, s, sp, src, tgt, height=HEIGHT) == [_content(target)]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_batched_generation_equals_one_by_one_and_cache_changes_nothing(trained, direction):
    model, pairs, data, _ = trained
    src, tgt = direction
    s, sp, _, _ = data[direction]
    assert len({int((x[:, 0] != 0).sum()) for x in s}) == 3          # different lengths
    batched = generate(model, s, sp, src, tgt, height=HEIGHT)
    assert batched == [_content(p[1]) for p in pairs[direction]]
    assert generate(model, s, sp, src, tgt, DecodingOptions(use_cache=False), height=HEIGHT) == batched
    random_model = Translator(model.cfg).eval()
    options = DecodingOptions(max_steps=12)
    cached = generate(random_model, s, sp, src, tgt, options, height=HEIGHT)
    uncached = generate(random_model, s, sp, src, tgt, DecodingOptions(max_steps=12, use_cache=False),
                        height=HEIGHT)
    assert cached == uncached and all(len(x) > 0 for x in cached)
    singles = [generate(random_model, s[i:i + 1, :int((s[i, :, 0] != 0).sum())],
                        sp[i:i + 1, :int((s[i, :, 0] != 0).sum())], src, tgt, options, height=HEIGHT)[0]
               for i in range(3)]
    assert singles == cached


@pytest.mark.parametrize("tgt", MODALITIES)
def test_cached_generation_gives_the_uncached_ids_when_sampling(tgt):
    """The generation fast path (per-step layer calls, reused sub-decoder cache, output
    embeddings with their [EOS] row) picks what the plain path over the whole prefix picks."""
    torch.manual_seed(2)
    model = Translator(make_config("tiny", VOCAB)).eval()
    s, sp = _batch(model.cfg, [VOCAB.wrap("midi", [1, 2, 3, 4]), VOCAB.wrap("midi", [5, 6])], "midi", 1)
    for options in (DecodingOptions(temperature=1.0, top_k=20, top_p=0.95, max_steps=15, seed=3),
                    DecodingOptions(temperature=1.5, max_steps=15, min_steps=6, seed=4)):
        cached = generate(model, s, sp, "midi", tgt, options, height=HEIGHT)
        plain = DecodingOptions(options.temperature, options.top_k, options.top_p, options.max_steps,
                                options.min_steps, use_cache=False, seed=options.seed)
        assert cached == generate(model, s, sp, "midi", tgt, plain, height=HEIGHT)
        assert all(len(x) >= 4 for x in cached)


@pytest.mark.parametrize("tgt", MODALITIES)
def test_sampled_ids_stay_in_the_target_range(tgt):
    torch.manual_seed(1)
    cfg = make_config("tiny", VOCAB)
    model = Translator(cfg).eval()
    with torch.no_grad():   # make [EOS] and foreign ids attractive: the restriction must hold anyway
        model.tok.weight[cfg.eos[cfg.index(tgt)]] *= 0
    s, sp = _batch(cfg, [VOCAB.wrap("midi", [1, 2, 3]), VOCAB.wrap("midi", [4, 5])], "midi", 1)
    for options in (DecodingOptions(temperature=2.0, max_steps=20, seed=0),
                    DecodingOptions(temperature=1.0, top_k=50, top_p=0.9, max_steps=20, seed=1)):
        out = generate(model, s, sp, "midi", tgt, options, height=HEIGHT)
        lo = VOCAB.range(tgt).start
        for ids in out:
            assert ids and all(i in VOCAB.range(tgt) for i in ids)
            if tgt in ("image", "audio"):
                assert len(ids) % 4 == 0
                assert [(i - lo) // 1024 for i in ids] == [0, 1, 2, 3] * (len(ids) // 4)
    fixed = DecodingOptions(temperature=2.0, max_steps=20, min_steps=20, seed=0)
    again = generate(model, s, sp, "midi", tgt, fixed, height=HEIGHT)
    assert again == generate(model, s, sp, "midi", tgt, fixed, height=HEIGHT)
    assert [len(x) for x in again] == [20 * (4 if tgt in ("image", "audio") else 1)] * 2


@pytest.mark.parametrize("norm", [False, True])
def test_column_layout_overfits_and_reproduces(norm):
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB, "column", column_norm=norm)
    model = Translator(cfg)
    pairs = _pairs("image", "notation", seed=7)
    data = {("image", "notation"): _tensors(cfg, pairs, "image", "notation")}
    losses = _train(model, data, iters=90)
    assert losses[("image", "notation")] < 0.05
    s, sp, _, _ = data[("image", "notation")]
    assert generate(model, s, sp, "image", "notation") == [_content(p[1]) for p in pairs]


# ---------------------------------------------------------------------------
# Codebook initialisation
# ---------------------------------------------------------------------------

def test_init_from_codebooks_keeps_code_geometry():
    cfg = make_config("tiny", VOCAB)
    model = Translator(cfg)
    gen = torch.Generator().manual_seed(0)
    image_books = torch.randn(4, 1024, 16, generator=gen)
    audio_books = torch.randn(4, 1024, 96, generator=gen)
    before = model.tok.weight.detach().clone()
    init_from_codebooks(model, image_books, audio_books)
    w = model.tok.weight.detach()
    img = w[VOCAB.range("image").start:VOCAB.range("image").stop]
    # D_codec 16 <= d_model 64: distances between codes are kept up to one scale factor
    ratio = torch.cdist(img[:50], img[50:100]) / torch.cdist(image_books.reshape(-1, 16)[:50],
                                                             image_books.reshape(-1, 16)[50:100])
    assert ratio.std() / ratio.mean() < 1e-3
    assert abs(float(img.std()) - 0.02) < 1e-3
    assert not torch.equal(w[VOCAB.range("audio").start:VOCAB.range("audio").stop],
                           before[VOCAB.range("audio").start:VOCAB.range("audio").stop])
    assert torch.equal(w[VOCAB.range("notation").start:], before[VOCAB.range("notation").start:])
    with pytest.raises(CheckpointError, match="shape"):
        init_from_codebooks(model, torch.zeros(2, 1024, 8), None)


def test_codebooks_of_the_shipped_codecs():
    image_books, audio_books = read_codec_codebooks(WEIGHTS / "image-codec", WEIGHTS / "audio-codec")
    assert image_books.shape == (4, 1024, 64) and audio_books.shape == (4, 1024, 384)
    assert torch.isfinite(image_books).all() and torch.isfinite(audio_books).all()
    assert image_books.reshape(-1, 64).unique(dim=0).shape[0] > 1000   # real, distinct codes
    model = Translator(make_config("tiny", VOCAB))
    init_from_codebooks(model, image_books, audio_books)
    assert torch.isfinite(model.tok.weight).all()
    with pytest.raises(CheckpointError):
        read_codec_codebooks(WEIGHTS / "audio-codec", WEIGHTS / "image-codec")


def test_token_dropout_blanks_decoder_inputs_in_training_only():
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB, "column")            # tiny: dropout 0, so only the blanking differs
    model = Translator(cfg)
    s, sp, t, tp = _tensors(cfg, _pairs("image", "notation", seed=3), "image", "notation")
    model.train()
    plain = model(s, sp, t, tp, "image", "notation")
    assert torch.equal(plain, model(s, sp, t, tp, "image", "notation", token_dropout=0.0))
    assert not torch.equal(plain, model(s, sp, t, tp, "image", "notation", token_dropout=0.5))
    model.eval()
    assert torch.equal(model(s, sp, t, tp, "image", "notation"),
                       model(s, sp, t, tp, "image", "notation", token_dropout=0.5))


def test_guided_attention_loss_prefers_the_diagonal():
    from umust_cli.model.translator import guided_attention_loss

    t, s = 6, 6
    diagonal = torch.eye(t, s)[None, None]                      # (1, 1, T, S): step t attends column t
    anti = torch.eye(t, s).flip(-1)[None, None]
    valid_t, valid_s = torch.ones(1, t, dtype=torch.bool), torch.ones(1, s, dtype=torch.bool)
    on = guided_attention_loss([diagonal], valid_t, valid_s)
    off = guided_attention_loss([anti], valid_t, valid_s)
    assert on.item() == pytest.approx(0.0, abs=1e-6) and off.item() > 0.5
    # padded target steps cost nothing; padded source columns shift the diagonal's scale
    short = torch.tensor([[True, True, True, False, False, False]])
    assert guided_attention_loss([anti], short, valid_s).item() < off.item() + 1e-6


def test_guide_adds_to_the_training_loss_only():
    torch.manual_seed(0)
    cfg = make_config("tiny", VOCAB, "column")
    model = Translator(cfg)
    s, sp, t, tp = _tensors(cfg, _pairs("image", "notation", seed=3), "image", "notation")
    model.train()
    plain = model(s, sp, t, tp, "image", "notation")
    guided = model(s, sp, t, tp, "image", "notation", guide=1.0)
    assert guided.item() > plain.item()
    guided.backward()
    assert model.decoder[0].cross.q.weight.grad.abs().sum() > 0
    model.eval()
    assert torch.equal(model(s, sp, t, tp, "image", "notation"), model(s, sp, t, tp, "image", "notation", guide=1.0))


def test_a_step_rule_masks_what_generation_may_pick_and_sees_each_choice():
    class OnlyClass:
        """Allows one class (a local id) only; records what it was told was chosen."""

        def __init__(self, keep: int):
            self.keep, self.seen = keep, []

        def mask(self, logits: torch.Tensor) -> None:
            logits[:, : self.keep] = float("-inf")
            logits[:, self.keep + 1:] = float("-inf")

        def update(self, classes: torch.Tensor) -> None:
            self.seen.append(classes.tolist())

    torch.manual_seed(3)
    model = Translator(make_config("tiny", VOCAB)).eval()
    s, sp = _batch(model.cfg, [VOCAB.wrap("midi", [1, 2, 3]), VOCAB.wrap("midi", [4, 5])], "midi", 1)
    rule = OnlyClass(7)
    out = generate(model, s, sp, "midi", "notation", DecodingOptions(max_steps=5), rule=rule)
    assert out == [[VOCAB.range("notation").start + 7] * 5] * 2      # never [EOS]: it was masked too
    assert rule.seen == [[7, 7]] * 5
    with pytest.raises(BadInputError, match="one-code targets"):
        generate(model, s, sp, "midi", "audio", DecodingOptions(max_steps=2), rule=OnlyClass(0))


# ---------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------

def _two_step_scores(model: Translator, s: torch.Tensor, sp: torch.Tensor) -> torch.Tensor:
    """log p(c1) + log p(c2 | c1) of every two-token notation target of source ``s`` (1, S, 4),
    [EOS] excluded: (C, C), decoded without the cache."""
    cfg = model.cfg
    lo, hi = cfg.ranges[cfg.index("notation")]
    n = hi - lo
    memory, mask = model.encode(s, sp, "midi", "notation")
    kv = model.memory(memory.expand(n, -1, -1))
    steps = torch.zeros(n, 2, 4, dtype=torch.long)
    steps[:, 0, 0] = cfg.sos[cfg.index("notation")]
    steps[:, 1, 0] = torch.arange(lo, hi)
    pos = step_positions(steps, "notation")
    with torch.no_grad():
        state = model.decode(steps, pos, "notation", kv, None if mask is None else mask.expand(n, -1, -1, -1))
        logp = torch.nn.functional.linear(state, model.logit_weights("notation")[0]).log_softmax(-1)
    return logp[0, 0, :n][:, None] + logp[:, 1, :n]


def test_beam_search_over_two_steps_is_exact_and_never_below_greedy():
    torch.manual_seed(5)
    model = Translator(make_config("tiny", VOCAB)).eval()
    lo = VOCAB.range("notation").start
    for source in ([1, 2, 3, 4], [7, 8]):
        s, sp = _batch(model.cfg, [VOCAB.wrap("midi", source)], "midi", 1)
        table = _two_step_scores(model, s, sp)
        n = table.shape[0]

        def score(ids):
            return float(table[ids[0] - lo, ids[1] - lo])

        fixed = dict(max_steps=2, min_steps=2, length_penalty=0.0)
        exact = generate(model, s, sp, "midi", "notation", DecodingOptions(beam_size=n, **fixed))[0]
        assert score(exact) == pytest.approx(float(table.max()), abs=1e-5)
        greedy = generate(model, s, sp, "midi", "notation", DecodingOptions(max_steps=2, min_steps=2))[0]
        beam = generate(model, s, sp, "midi", "notation", DecodingOptions(beam_size=3, **fixed))[0]
        assert score(beam) >= score(greedy) - 1e-6
        assert len(exact) == len(beam) == len(greedy) == 2


def test_beam_search_is_batch_independent_and_stays_in_range():
    torch.manual_seed(6)
    model = Translator(make_config("tiny", VOCAB)).eval()
    sources = [VOCAB.wrap("midi", [1, 2, 3, 4, 5]), VOCAB.wrap("midi", [6, 7])]
    s, sp = _batch(model.cfg, sources, "midi", 1)
    for tgt in ("notation", "midi"):
        options = DecodingOptions(beam_size=4, max_steps=10)
        batched = generate(model, s, sp, "midi", tgt, options)
        singles = [generate(model, *_batch(model.cfg, [src], "midi", 1), "midi", tgt, options)[0]
                   for src in sources]
        assert batched == singles
        assert all(all(i in VOCAB.range(tgt) for i in ids) for ids in batched)


@pytest.mark.parametrize("direction", [("image", "notation"), ("audio", "midi")])
def test_beam_search_reproduces_what_the_model_learnt(trained, direction):
    model, pairs, data, _ = trained
    src, tgt = direction
    s, sp, _, _ = data[direction]
    out = generate(model, s, sp, src, tgt, DecodingOptions(beam_size=3), height=HEIGHT)
    assert out == [_content(p[1]) for p in pairs[direction]]


def test_beam_search_applies_the_step_rule_to_every_hypothesis():
    class OnlyClass:
        def __init__(self, keep: int):
            self.keep, self.rows, self.seen = keep, [], []

        def mask(self, logits: torch.Tensor) -> None:
            logits[:, : self.keep] = float("-inf")
            logits[:, self.keep + 1:] = float("-inf")

        def update(self, classes: torch.Tensor) -> None:
            self.seen.append(classes.tolist())

        def select(self, rows) -> None:
            self.rows.append(list(rows))

    torch.manual_seed(3)
    model = Translator(make_config("tiny", VOCAB)).eval()
    s, sp = _batch(model.cfg, [VOCAB.wrap("midi", [1, 2, 3]), VOCAB.wrap("midi", [4, 5])], "midi", 1)
    rule = OnlyClass(7)
    out = generate(model, s, sp, "midi", "notation", DecodingOptions(max_steps=5, beam_size=3), rule=rule)
    assert out == [[VOCAB.range("notation").start + 7] * 5] * 2
    assert rule.rows[0] == [0, 0, 0, 1, 1, 1]                          # each example's K rows
    assert [(c[0], c[3]) for c in rule.seen] == [(7, 7)] * 5           # one live hypothesis each
    assert all(max(r[:3]) < 3 <= min(r[3:]) for r in rule.rows[1:])   # rows stay within their example


def test_beam_search_refuses_sampling_and_code_targets():
    with pytest.raises(BadInputError, match="beam search"):
        DecodingOptions(beam_size=2, temperature=0.5)
    with pytest.raises(BadInputError, match="beam_size"):
        DecodingOptions(beam_size=0)
    model = Translator(make_config("tiny", VOCAB)).eval()
    s, sp = _batch(model.cfg, [VOCAB.wrap("midi", [1, 2])], "midi", 1)
    with pytest.raises(BadInputError, match="one-code targets"):
        generate(model, s, sp, "midi", "audio", DecodingOptions(beam_size=2, max_steps=2))
