"""`umust train translator`: multi-task translator training on the engine (tiny preset, CPU).

The fixture corpus has the layout of `umust dataset build` + `umust dataset tokenize`
(manifest rows, NNN.image.npy / NNN.audio.npy codes with shift variants, NNN.lmx, NNN.mid),
with random codes and tokens: the tests check the training machinery, not music.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.checkpoint import TRAIN_STATE, WEIGHTS, read_config, read_weights
from umust_cli.cli.main import app
from umust_cli.codecs.notation import NotationCodec
from umust_cli.data import pairs as pairs_io
from umust_cli.errors import BadInputError, HeldOutRepertoireError
from umust_cli.model.generate import DecodingOptions, generate
from umust_cli.model.translator import MODEL_KIND, make_config
from umust_cli.train.engine import RunOptions, fit, read_log
from umust_cli.train.translator import TrainConfig, init_distributed, lr_at, make_task, train_translator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
LMX = NotationCodec().token_names()
# piece, system, split, image (Hp, Wp) or None, audio frames or None, lmx tokens, midi notes
SYSTEMS = [("alpha", 0, "train", (2, 3), 5, 6, 2), ("alpha", 1, "train", (2, 4), 7, 8, 3),
           ("beta", 0, "train", (3, 2), 6, 5, 2), ("beta", 1, "train", (2, 2), None, 4, None),
           ("gamma", 0, "valid", (2, 3), 6, 6, 2), ("delta", 0, "test", (2, 3), 5, 5, 2)]
I2A = "omr,midi2audio,image2audio@0:0,midi2lmx"        # every task from step 0
A2I = "transcription,lmx2image,audio2image@0:0,lmx2midi"


def _midi(path: Path, notes: int, rng: np.random.Generator) -> None:
    pm, inst = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(0)
    for k in range(notes):
        inst.notes.append(pretty_midi.Note(int(rng.integers(40, 100)), int(rng.integers(50, 80)),
                                           0.25 * k, 0.25 * k + 0.2))
    pm.instruments.append(inst)
    pm.write(str(path))


def make_corpus(root: Path, variants: bool = True, seed: int = 0, source: str = "music21:bach/x") -> Path:
    """A tokenized corpus of SYSTEMS; train codes have shift variants unless ``variants`` is False."""
    rng, rows = np.random.default_rng(seed), []
    for piece, system, split, image, frames, n_lmx, notes in SYSTEMS:
        stem = f"pieces/{piece}/systems/{system:03d}"
        (root / stem).parent.mkdir(parents=True, exist_ok=True)
        v_img, v_aud = (32, 9) if split == "train" and variants else (1, 1)
        row = {"piece_id": piece, "system": system, "split": split, "source": source,
               "png": f"{stem}.png", "lmx": f"{stem}.lmx"}
        if image:
            codes = rng.integers(0, 1024, (v_img, 4, *image)).astype(np.int16)
            if v_img > 1:   # a shift variant one column wider, the others padded with -1
                codes = np.concatenate([codes, np.full((v_img, 4, image[0], 1), -1, np.int16)], 3)
                codes[5, :, :, -1] = rng.integers(0, 1024, (4, image[0]))
            np.save(root / f"{stem}.image.npy", codes)
        if frames:
            row["wav"] = f"{stem}.wav"
            np.save(root / f"{stem}.audio.npy", rng.integers(0, 1024, (v_aud, 4, frames)).astype(np.int16))
        (root / f"{stem}.lmx").write_text(" ".join(rng.choice(LMX, n_lmx)) + "\n")
        if notes:
            row["mid"] = f"{stem}.mid"
            _midi(root / f"{stem}.mid", notes, rng)
        rows.append(row)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tcorpus") / "c")


@pytest.fixture(scope="module")
def flat_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tflat") / "c", variants=False)


def _cfg(direction: str, tasks: str | None, **kw) -> TrainConfig:
    base = dict(direction=direction, preset="tiny", tasks=pairs_io.parse_tasks(tasks, direction),
                batch_tokens=4096, warmup_steps=5, decay_steps=1000, codebook_init=False, precision="fp32")
    return TrainConfig(**{**base, **kw})


def _run(steps: int, **kw) -> RunOptions:
    return RunOptions(max_steps=steps, save_every=1000, device="cpu", progress=False, **kw)


# ---------------------------------------------------------------------------
# Data side
# ---------------------------------------------------------------------------

def test_code_steps_match_the_codecs_flatten_order(vocab):
    from umust_cli.codecs import audio as audio_codec
    from umust_cli.codecs import image as image_codec
    from umust_cli.model.generate import to_steps

    cfg = make_config("tiny", vocab)
    rng = np.random.default_rng(1)
    grid, frames = rng.integers(0, 1024, (4, 3, 5)), rng.integers(0, 1024, (4, 7))
    for modality, codes, flat in (("image", grid, image_codec.flatten), ("audio", frames, audio_codec.flatten)):
        expected = to_steps(vocab.wrap(modality, flat(codes)), modality, cfg)
        assert torch.equal(pairs_io.code_steps(codes, modality, cfg), expected)


def test_variants_padding_and_missing_modalities(corpus, vocab):
    systems, problems = pairs_io.load_systems(corpus, "train", vocab)
    assert not problems and len(systems) == 4
    a0 = systems[0]
    assert a0.variants("image") == 32 and a0.variants("audio") == 9 and a0.variants("notation") == 1
    arr = np.load(a0.codes["image"])
    assert pairs_io.variant_of(arr, 0).shape == (4, 2, 3) and pairs_io.variant_of(arr, 5).shape == (4, 2, 4)
    assert not systems[3].has("audio") and not systems[3].has("midi") and systems[3].has("image")
    cfg = make_config("tiny", vocab)
    omr = pairs_io.TaskSpec("omr", "image", "notation")
    m2a = pairs_io.TaskSpec("midi2audio", "midi", "audio")
    assert len(pairs_io.task_pairs(systems, omr, cfg, pairs_io.Caps())[0]) == 4
    assert len(pairs_io.task_pairs(systems, m2a, cfg, pairs_io.Caps())[0]) == 3   # beta/1 has neither
    pairs, too_long = pairs_io.task_pairs(systems, m2a, cfg, pairs_io.Caps(audio_frames=6))
    assert len(pairs) == 1 and too_long == 2   # 6 and 7 frames (+1 for shifts) are over the cap


def test_scan_copies_are_extra_image_sources(tmp_path, vocab):
    root = make_corpus(tmp_path / "c", variants=False)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(7)
    for row in rows[:2]:                                   # alpha/000 and alpha/001 have a scan copy
        stem = row["png"][:-len(".png")]
        row["scans"] = [f"{stem}.scan0.png", f"{stem}.scan1.png"]   # only scan0 is tokenized
        np.save(root / f"{stem}.scan0.image.npy", rng.integers(0, 1024, (1, 4, 2, 5)).astype(np.int16))
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain, _ = pairs_io.load_systems(root, "train", vocab)
    systems, problems = pairs_io.load_systems(root, "train", vocab, scans=True)
    assert not problems and len(plain) == 4 and len(systems) == 6
    copy = systems[1]
    assert copy.key == "alpha/000/scan0" and copy.copy == "scan0" and systems[0].copy == ""
    assert copy.shape["image"] == (1, 4, 2, 5) and copy.codes["audio"] == systems[0].codes["audio"]
    assert copy.tokens["notation"] == systems[0].tokens["notation"]
    cfg = make_config("tiny", vocab)
    omr = pairs_io.TaskSpec("omr", "image", "notation")
    l2i = pairs_io.TaskSpec("lmx2image", "notation", "image")
    assert len(pairs_io.task_pairs(systems, omr, cfg, pairs_io.Caps())[0]) == 6
    assert len(pairs_io.task_pairs(systems, l2i, cfg, pairs_io.Caps())[0]) == 4   # never an image target
    steps, height = pairs_io.SequenceStore(systems, cfg).steps(1, "image")
    assert height == 2 and steps.shape == (2 * 5 + 2, 4)


def test_parse_tasks():
    names = [t.name for t in pairs_io.parse_tasks(None, "i2a")]
    assert names == ["omr", "midi2audio", "image2audio"]
    paper = {t.name: (t.start, t.end) for t in pairs_io.parse_tasks(None, "a2i")}
    assert paper == {"transcription": (0, 0), "lmx2image": (0, 0), "audio2image": (40000, 70000)}
    specs = pairs_io.parse_tasks("image>lmx@10:20*2,midi>notation,image2audio", "i2a")
    assert [(t.name, t.source, t.target, t.start, t.end, t.weight) for t in specs] == [
        ("omr", "image", "notation", 10, 20, 2.0), ("midi2lmx", "midi", "notation", 0, 0, 1.0),
        ("image2audio", "image", "audio", 15000, 50000, 1.0)]
    assert pairs_io.parse_tasks("audio>notation", "a2i")[0].name == "audio>notation"
    for bad in ("omr,foo", "image>image", "omr@5:2", "omr,omr", ""):
        with pytest.raises(BadInputError):
            pairs_io.parse_tasks(bad, "i2a")


def test_curriculum_introduces_tasks_at_their_steps(corpus, vocab):
    cfg = make_config("tiny", vocab)
    systems, _ = pairs_io.load_systems(corpus, "train", vocab)
    specs = pairs_io.parse_tasks("omr,midi2audio@10:30,image2audio@50:50", "i2a")
    pairs = [pairs_io.task_pairs(systems, t, cfg, pairs_io.Caps())[0] for t in specs]
    plan = pairs_io.BatchPlan(specs, pairs, systems, budget=64, seed=3, per_step=4)
    assert specs[1].weight_at(10) == 0 and specs[1].weight_at(20) == 0.5 and specs[1].weight_at(40) == 1
    seen = {}
    for step in range(0, 80):
        for mb in plan.step(step):
            assert specs[mb.task].start <= step, f"{specs[mb.task].name} sampled at step {step}"
            seen.setdefault(specs[mb.task].name, step)
            assert sum(pairs[mb.task][i].src_len + pairs[mb.task][i].tgt_len for i in mb.pairs) > 0
    assert seen["omr"] == 0 and 10 < seen["midi2audio"] < 50 and 50 <= seen["image2audio"] < 60
    assert plan.step(17) == plan.step(17)                                  # a function of (seed, step)
    again = pairs_io.BatchPlan(specs, pairs, systems, budget=64, seed=3, per_step=4)
    assert [again.step(s) for s in range(40)] == [plan.step(s) for s in range(40)]
    with pytest.raises(BadInputError, match="no task"):
        pairs_io.BatchPlan(specs[2:], pairs[2:], systems, 64, 0, 1).step(3)


def test_token_budget_windows():
    pairs = [pairs_io.Pair(i, 4 + i, 6 + i) for i in range(10)]
    idx = pairs_io.window(pairs, 2, budget=60)
    longest = max(pairs[i].src_len for i in idx) + max(pairs[i].tgt_len for i in idx)
    assert idx == sorted(idx) and 2 in idx and len(idx) * longest <= 60 and len(idx) >= 2
    assert pairs_io.window(pairs, 9, budget=1) == [9]                     # always at least one
    batches = pairs_io.fixed_batches(pairs, 60, limit=7)
    assert [i for b in batches for i in b] == list(range(7))


def test_image_size_limits_depend_on_layout_and_role(vocab):
    """Column layout: an image source is bounded by its rows and columns only (a real scan with
    page margins is taller than an engraved system); grid positions and image targets also by
    their product."""
    big = pairs_io.System("p/000", {"image": Path("x.npy")}, {}, {"image": (1, 4, 24, 60)})
    column, grid = make_config("small", vocab, "column"), make_config("small", vocab, "grid")
    caps = pairs_io.Caps()
    assert 24 * 60 > column.max_steps[0]
    assert pairs_io.fits(big, "image", column, caps, source=True)
    assert not pairs_io.fits(big, "image", column, caps) and not pairs_io.fits(big, "image", grid, caps, source=True)
    too_tall = pairs_io.System("p/001", {"image": Path("x.npy")}, {}, {"image": (1, 4, column.max_rows + 1, 20)})
    assert not pairs_io.fits(too_tall, "image", column, caps, source=True)


def test_lr_schedule():
    cfg = _cfg("i2a", None, lr=1.0, warmup_steps=10, decay_steps=110, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55) and lr_at(cfg, 500) == pytest.approx(0.1)


def test_config_round_trips():
    cfg = _cfg("a2i", "transcription,image>midi@3:9*0.5")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(BadInputError):
        _cfg("i2a", None, precision="fp8")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("direction,tasks", [("i2a", I2A), ("a2i", A2I)])
def test_overfits_every_task_and_greedy_generation_reproduces_targets(flat_corpus, vocab, tmp_path,
                                                                      direction, tasks):
    cfg = _cfg(direction, tasks, lr=1e-2, warmup_steps=10, accum=4, batch_tokens=1000)
    task = make_task(flat_corpus, tmp_path / "run", cfg, _run(100), vocab)
    result = fit(task, tmp_path / "run", cfg, _run(100))
    last = {}
    for row in read_log(tmp_path / "run"):
        last.update({k: v for k, v in row.items() if k.startswith("loss/") and "step" in row and "eval" not in row})
    assert set(last) == {f"loss/{t.name}" for t in cfg.tasks}
    assert all(v < 0.05 for v in last.values()), last
    model = task.model.eval()
    for t, spec in enumerate(task.cfg.tasks):
        for p in task.train_data.pairs[t]:
            b = pairs_io.collate(task.train_data.store, t, spec, [p.system], [0], [0])
            ids = generate(model, b.src, b.src_pos, spec.source, spec.target,
                           DecodingOptions(max_steps=p.tgt_len), height=b.tgt_height)[0]
            want = b.tgt[0, 1:p.tgt_len - 1].reshape(-1)
            assert ids == want[want != 0].tolist(), f"{spec.name} system {p.system}"
    config = read_config(tmp_path / "run")
    assert config["kind"] == MODEL_KIND and config["step"] == 100 and result.stop_reason == "max_steps"
    assert result.eval and "loss" in result.eval and ("SER" in result.eval) == (direction == "i2a")


def test_exact_resume(corpus, vocab, tmp_path):
    cfg = _cfg("i2a", I2A, precision="bf16", accum=2, batch_tokens=40)
    train_translator(corpus, tmp_path / "straight", cfg, _run(6), vocab)
    train_translator(corpus, tmp_path / "resumed", cfg, _run(3), vocab)
    assert read_config(tmp_path / "resumed")["step"] == 3
    result = train_translator(corpus, tmp_path / "resumed", cfg, _run(6), vocab)
    assert result.start_step == 3 and result.step == 6
    a, b = read_weights(tmp_path / "straight" / WEIGHTS), read_weights(tmp_path / "resumed" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [r for r in read_log(tmp_path / "resumed") if "eval" not in r]
    straight = [r for r in read_log(tmp_path / "straight") if "eval" not in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == [r["loss"] for r in straight]
    assert "data" in rows[0] and rows[0]["data"]["midi2audio"]["train"] == 3


def test_other_config_in_the_folder_is_refused(corpus, vocab, tmp_path):
    train_translator(corpus, tmp_path / "run", _cfg("i2a", "omr"), _run(1), vocab)
    from umust_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="another training config"):
        train_translator(corpus, tmp_path / "run", _cfg("i2a", "omr", lr=1e-3), _run(2), vocab)


def test_fine_tuning_from_a_checkpoint_on_one_task(corpus, vocab, tmp_path):
    train_translator(corpus, tmp_path / "base", _cfg("i2a", I2A), _run(2), vocab)
    train_translator(corpus, tmp_path / "ft", _cfg("i2a", "omr"), _run(2), vocab, init=tmp_path / "base")
    log = read_log(tmp_path / "ft")
    assert log[0]["init"] == str(tmp_path / "base") and log[0]["init_step"] == 2
    assert all(k in ("loss/omr",) for r in log[1:] for k in r if k.startswith("loss/"))


def test_fine_tuning_from_a_checkpoint_saved_before_a_model_option(corpus, vocab, tmp_path):
    """A checkpoint whose model config lacks a field added since (column_norm) starts a new run
    with that field's default, and is refused for another value of it."""
    from umust_cli.errors import CheckpointError

    train_translator(corpus, tmp_path / "base", _cfg("i2a", "omr"), _run(1), vocab)
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    del config["model"]["column_norm"]
    (tmp_path / "base" / "config.json").write_text(json.dumps(config))
    train_translator(corpus, tmp_path / "ft", _cfg("i2a", "omr", token_dropout=0.3, crops=True), _run(1), vocab,
                     init=tmp_path / "base")
    assert read_log(tmp_path / "ft")[0]["init_step"] == 1
    with pytest.raises(CheckpointError, match="column_norm"):
        train_translator(corpus, tmp_path / "ft2", _cfg("i2a", "omr", column_norm=True),
                         _run(1), vocab, init=tmp_path / "base")


def test_codebook_init_uses_the_shipped_codecs(corpus, vocab, tmp_path):
    from umust_cli.model.translator import project_codebooks, read_codec_codebooks
    from umust_cli import registry

    task = make_task(corpus, tmp_path / "run", _cfg("i2a", "omr", codebook_init=True), _run(0), vocab)
    image, _ = read_codec_codebooks(registry.resolve("image-codec", None), registry.resolve("audio-codec", None))
    lo, hi = task.model_cfg.ranges[0]
    assert torch.allclose(task.model.tok.weight[lo:hi].detach(), project_codebooks(image, task.model_cfg.d_model, 0))


def _renamed_corpus(root: Path, prefix: str, source: str = "music21:bach/x", vocabulary=None) -> Path:
    """A copy of make_corpus's corpus whose pieces are called PREFIX-<piece> (same files), from
    score files of those names in ``source``'s folder."""
    make_corpus(root, seed=3, source=source)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    parent = source.rsplit("/", 1)[0]
    (root / "manifest.jsonl").write_text("".join(json.dumps({**r, "piece_id": f"{prefix}-{r['piece_id']}", "source":
                                                             f"{parent}/{prefix}-{r['piece_id']}.krn"}) + "\n"
                                                 for r in rows))
    if vocabulary is not None:
        vocabulary.save(root / "vocabulary.json")
    return root


def test_add_train_corpora_add_their_train_split_only(corpus, vocab, tmp_path):
    extra = _renamed_corpus(tmp_path / "extra", "x")
    cfg = _cfg("i2a", "omr", scans=False)
    alone = make_task(corpus, tmp_path / "a", cfg, _run(0), vocab)
    both = make_task(corpus, tmp_path / "b", cfg, _run(0), vocab, more_train=[extra])
    assert len(alone.train_data.systems) == 4 and len(both.train_data.systems) == 8
    assert [s.key for s in both.train_data.systems[4:]] == ["x-alpha/000", "x-alpha/001", "x-beta/000", "x-beta/001"]
    assert len(both.train_data.pairs[0]) == 8
    assert [s.key for s in both.valid_data.systems] == [s.key for s in alone.valid_data.systems] == ["gamma/000"]
    result = fit(both, tmp_path / "b", cfg, _run(2))
    assert result.step == 2 and result.last_loss is not None


def test_add_train_leaves_out_other_editions_of_valid_and_test_works(corpus, vocab, tmp_path):
    extra = _renamed_corpus(tmp_path / "extra", "x")
    rows = [json.loads(line) for line in (extra / "manifest.jsonl").read_text().splitlines()]
    rows[2]["source"] = rows[3]["source"] = "music21:chopin/GAMMA.krn"   # piece x-beta: gamma is valid
    (extra / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main = tmp_path / "main"
    make_corpus(main)
    rows = [json.loads(line) for line in (main / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        r["source"] = f"kern/{r['piece_id']}.krn"
    (main / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = make_task(main, tmp_path / "run", _cfg("i2a", "omr", scans=False), _run(0), vocab, more_train=[extra])
    assert [s.key for s in task.train_data.systems[4:]] == ["x-alpha/000", "x-alpha/001"]
    assert task.summary()["add_train"] == {str(extra): ["x-beta"]}


def test_add_train_refuses_a_corpus_twice_held_out_rows_and_another_vocabulary(corpus, vocab, tmp_path):
    cfg = _cfg("i2a", "omr")
    with pytest.raises(BadInputError, match="two of the training corpora"):
        make_task(corpus, tmp_path / "r1", cfg, _run(0), vocab, more_train=[corpus])
    held = _renamed_corpus(tmp_path / "held", "h", source="kern/beethoven/sonata01-1.krn")
    with pytest.raises(HeldOutRepertoireError):
        make_task(corpus, tmp_path / "r2", cfg, _run(0), vocab, more_train=[held])
    from umust_cli.codecs.midi import MidiCodec
    from umust_cli.codecs.vocab import Vocabulary

    fewer = Vocabulary(tuple(LMX[:-1]), tuple(MidiCodec().token_names()))   # one LMX token less
    other = _renamed_corpus(tmp_path / "other", "o", vocabulary=fewer)
    with pytest.raises(BadInputError, match="vocabulary"):
        make_task(corpus, tmp_path / "r3", cfg, _run(0), vocab, more_train=[other])


def test_held_out_rows_are_refused(tmp_path, vocab):
    root = make_corpus(tmp_path / "c", source="kern/beethoven/sonata01-1.krn")
    with pytest.raises(HeldOutRepertoireError):
        train_translator(root, tmp_path / "run", _cfg("i2a", "omr"), _run(1), vocab)


# ---------------------------------------------------------------------------
# Several processes
# ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, corpus: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from umust_cli.codecs.vocab import default_vocabulary

    dist, dev = init_distributed("cpu")
    cfg = _cfg("i2a", I2A, world_size=2, batch_tokens=40)
    run = RunOptions(max_steps=4, max_minutes=10, save_every=1000, device=str(dev), progress=False)
    task = make_task(corpus, Path(out) / "run", cfg, run, default_vocabulary(), dist=dist)
    fit(task, Path(out) / "run", cfg, run, main_process=dist.main)
    torch.save(task.model.state_dict(), Path(out) / f"rank{rank}.pt")
    import torch.distributed as tdist

    tdist.destroy_process_group()


def test_two_processes_train_the_same_weights(corpus, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, str(corpus), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = read_weights(tmp_path / "run" / WEIGHTS)
    assert all(torch.equal(saved[k], a[k].float()) for k in saved)
    rows = [r for r in read_log(tmp_path / "run") if "eval" not in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]                        # rank 0 alone logs
    assert not (tmp_path / "run" / "rank1").exists()


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["i2a", "a2i"])
def test_cli_dry_run_both_directions(corpus, tmp_path, direction):
    out = tmp_path / direction
    args = ["train", "translator", "--data", str(corpus), "-o", str(out), "--direction", direction,
            "--preset", "tiny", "--max-steps", "3", "--device", "cpu", "--batch-tokens", "64", "--json",
            "--tasks", I2A if direction == "i2a" else A2I]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["step"] == 3 and (out / TRAIN_STATE).is_file() and (out / WEIGHTS).is_file()
    again = runner.invoke(app, args)                                      # the same command resumes
    assert again.exit_code == 0 and json.loads(again.stdout[again.stdout.index("{"):])["start_step"] == 3
    other = runner.invoke(app, args + ["--lr", "0.01"])
    assert other.exit_code == 2 and len(other.output.strip().splitlines()) == 1


def test_cli_reading_options_are_saved_with_the_run(tmp_path):
    """--column-norm, --guide, --token-dropout and --crops reach the saved TrainConfig and the
    model config; the fixture's LMX is random tokens (not measures), so --crops adds no pair
    instead of failing."""
    out, corpus = tmp_path / "r", make_corpus(tmp_path / "c", variants=False)
    result = runner.invoke(app, ["train", "translator", "--data", str(corpus), "-o", str(out), "--preset", "tiny",
                                 "--tasks", "omr", "--max-steps", "2", "--device", "cpu", "--json", "--column-norm",
                                 "--guide", "0.5", "--token-dropout", "0.2", "--crops"])
    assert result.exit_code == 0, result.output
    config = read_config(out)
    assert (config["train"]["guide"], config["train"]["token_dropout"], config["train"]["crops"]) == (0.5, 0.2, True)
    assert config["model"]["column_norm"] is True and "column_ln.weight" in read_weights(out / WEIGHTS)
    assert read_log(out)[0]["data"]["omr"]["train"] == 4          # the 4 train systems, no crops


def test_cli_bad_task_name_is_one_line_exit_2(corpus, tmp_path):
    result = runner.invoke(app, ["train", "translator", "--data", str(corpus), "-o", str(tmp_path / "r"),
                                 "--preset", "tiny", "--max-steps", "1", "--tasks", "omr,karaoke"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "karaoke" in result.output
    result = runner.invoke(app, ["train", "translator", "--data", str(corpus), "-o", str(tmp_path / "r"),
                                 "--preset", "tiny", "--max-steps", "1", "--device", "cpu", "--compile"])
    assert result.exit_code == 2 and "CUDA" in result.output
