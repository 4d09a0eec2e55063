"""Audio <-> sheet passage retrieval: features, model, training, index, search and CLI (tiny model, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from umust_cli.errors import AudioError, CheckpointError, ImageError
from umust_cli.model.retrieval import PRESETS, RetrievalModel, triplet_loss
from umust_cli import registry
from umust_cli.retrieval.embed import embed_passages, load_retrieval_model, model_id, window_spans
from umust_cli.retrieval.features import FeatureConfig, load_audio, load_sheet, log_spectrogram
from umust_cli.retrieval.index import RetrievalIndex, WindowConfig, embed_files, search
from umust_cli.retrieval.train import RunOptions, features_for, train_config, train_retrieval

SR = 22050
PAIRS = 6


def _toy_image(i: int) -> np.ndarray:
    """A white 48 x 192 'system' whose black bars have a spacing that depends on i."""
    img = np.full((48, 192), 255, dtype=np.uint8)
    img[10:38:7, :] = 120  # 'staff lines'
    img[6:42, 4::6 + 3 * i] = 0
    return img


def _toy_audio(i: int, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220.0 * 2 ** (i / 2) * t)).astype(np.float32)


def make_toy_corpus(root: Path) -> Path:
    """A corpus folder like `umust dataset build` makes: one piece per pair, one system each."""
    rows = []
    for i in range(PAIRS):
        piece = root / "pieces" / f"toy-{i}" / "systems"
        piece.mkdir(parents=True)
        Image.fromarray(_toy_image(i)).save(piece / "000.png")
        sf.write(piece / "000.wav", _toy_audio(i), SR)
        sf.write(piece.parent / "audio.wav", _toy_audio(i), SR)
        rel = f"pieces/toy-{i}"
        rows.append({"piece_id": f"toy-{i}", "system": 0, "split": "train", "soundfont": "fluidr3",
                     "png": f"{rel}/systems/000.png", "wav": f"{rel}/systems/000.wav", "scans": [],
                     "piece_audio": f"{rel}/audio.wav", "start": 0.0, "end": 3.0, "duration": 3.0,
                     "measures": [1, 4]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


TINY = train_config("tiny", batch_size=PAIRS, lr=3e-3, margin=0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus, checkpoint) of the tiny model trained on the toy corpus."""
    root = tmp_path_factory.mktemp("retrieval")
    corpus = make_toy_corpus(root / "corpus")
    ckpt = root / "ckpt"
    train_retrieval(corpus, ckpt, TINY, RunOptions(max_steps=80, save_every=40, log_every=1, progress=False))
    return corpus, ckpt


# ------------------------------------------------------------------ features
def test_filterbank_has_92_bands_and_one_second_snippets():
    cfg = FeatureConfig()
    assert cfg.n_bins == 92
    spec = log_spectrogram(_toy_audio(3, 2.0), cfg)
    assert spec.shape[0] == 92 and abs(spec.shape[1] - 2.0 * cfg.fps) <= 1
    assert PRESETS["small"].audio_shape == (92, cfg.snippet_frames)


def test_silent_audio_and_blank_image_are_clear_errors(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        log_spectrogram(load_audio(tmp_path / "silent.wav", SR), FeatureConfig(), name="silent.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
    with pytest.raises(AudioError):
        load_audio(tmp_path / "broken.wav", SR)
    Image.fromarray(np.full((50, 200), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="blank"):
        load_sheet(tmp_path / "blank.png", FeatureConfig())
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError):
        load_sheet(tmp_path / "empty.png", FeatureConfig())


def test_window_spans_cover_a_recording():
    assert window_spans(10.0, 8.0, 4.0) == [(0.0, 10.0)]  # short: one passage
    spans = window_spans(30.0, 8.0, 4.0)
    assert spans[0] == (0.0, 8.0) and spans[-1][1] == 30.0
    assert all(b - a <= 8.0 for a, b in spans)


def test_random_eq_keeps_silence_and_is_identity_at_zero_db():
    from umust_cli.retrieval.train import random_eq

    spec = log_spectrogram(_toy_audio(2, 1.0), FeatureConfig())
    spec[:, :3] = 0.0  # silent frames
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(random_eq(spec, 0.0, rng), spec, atol=1e-5)
    out = random_eq(spec, 18.0, rng)
    assert out.shape == spec.shape and np.all(out[:, :3] == 0.0)
    assert not np.allclose(out, spec)


def test_random_eq_knots_make_curves_a_quadratic_cannot():
    from umust_cli.retrieval.train import random_eq

    spec = np.full((92, 10), 0.5, dtype=np.float32)  # flat spectrum: the output shows the gain curve itself
    b = np.linspace(-0.5, 0.5, 92)

    def quadratic_misfit(out):
        gain_db = 20.0 * np.log10((np.power(10.0, out[:, 0]) - 1.0) / (np.power(10.0, 0.5) - 1.0))
        return np.abs(np.polyval(np.polyfit(b, gain_db, 2), b) - gain_db).max()

    plain = [quadratic_misfit(random_eq(spec, 18.0, np.random.default_rng(s))) for s in range(5)]
    knotted = [quadratic_misfit(random_eq(spec, 18.0, np.random.default_rng(s), knots=8)) for s in range(5)]
    assert max(plain) < 1e-2  # tilt + curvature + gain: exactly quadratic in dB
    assert min(knotted) > 0.5  # bumps and dips of several dB beyond any quadratic
    out = random_eq(spec, 18.0, np.random.default_rng(0), knots=8)
    np.testing.assert_array_equal(out, random_eq(spec, 18.0, np.random.default_rng(0), knots=8))


def test_random_tail_adds_decay_after_notes_and_keeps_leading_silence():
    from umust_cli.retrieval.train import random_tail

    spec = np.zeros((92, 60), dtype=np.float32)
    spec[:, 10:20] = 0.8  # one chord held for 0.5 s, then silence
    outs = [random_tail(spec, 1.0, 20.0, np.random.default_rng(s)) for s in range(40)]
    changed = [o for o in outs if not np.array_equal(o, spec)]
    assert 8 <= len(changed) <= 32  # about half the spectrograms get a tail
    for out in changed:
        assert out.shape == spec.shape and out.dtype == np.float32
        assert np.all(out[:, :10] == 0.0)  # nothing before the first sound
        assert np.all(out >= spec - 1e-6)  # a tail only adds energy
    assert max(float(o[:, 25].max()) for o in changed) > 0.05  # energy rings on after the chord stops


@pytest.mark.parametrize("name", [None, "rendered", "small", "scans", "shipped:scans"])
def test_shipped_weights_load_and_embed(name):
    model, fcfg, config = load_retrieval_model(name)
    assert config["kind"] == "retrieval" and fcfg.n_bins == model.cfg.audio_shape[0]
    emb = embed_passages(model, "audio", [log_spectrogram(_toy_audio(1, 4.0), fcfg)], fcfg)
    assert emb.shape == (1, model.cfg.embed_dim)
    assert np.linalg.norm(emb, axis=1) == pytest.approx(1.0, abs=1e-5)
    size = sum(f.stat().st_size for f in registry.resolve("retrieval", name).iterdir())
    assert size <= 8 * 2 ** 20  # the budget for the embedding model


def test_shipped_models_differ_and_unknown_names_are_paths(tmp_path):
    ids = {model_id(load_retrieval_model(n)[2]) for n in ("rendered", "small", "scans")}
    assert len(ids) == 3  # an index records which one built it
    assert load_retrieval_model(None)[0].cfg == PRESETS["paper"]  # the default is the paper-size model
    assert load_retrieval_model("small")[0].cfg == PRESETS["small"]
    with pytest.raises(CheckpointError):
        load_retrieval_model(tmp_path / "nothing")
    other = tmp_path / "codec"
    shutil.copytree(registry.resolve("image-codec", None), other)
    with pytest.raises(CheckpointError, match="not a retrieval checkpoint"):
        load_retrieval_model(other)


# ------------------------------------------------------------------ model
def test_embeddings_are_unit_norm_and_deterministic():
    torch.manual_seed(0)
    model = RetrievalModel(PRESETS["tiny"]).eval()
    fcfg = features_for(model.cfg)
    strips = [load_sheet_array(_toy_image(i), fcfg) for i in range(3)]
    specs = [log_spectrogram(_toy_audio(i, 1.0 + i), fcfg) for i in range(3)]  # different lengths
    for kind, items in (("sheet", strips), ("audio", specs)):
        a = embed_passages(model, kind, items, fcfg)
        b = embed_passages(model, kind, items[::-1], fcfg)[::-1]  # other batch order / padding
        assert a.shape == (3, model.cfg.embed_dim)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(a, b, atol=1e-5)


def load_sheet_array(img: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    from umust_cli.retrieval.features import sheet_strip

    return sheet_strip(img, cfg)


def test_triplet_loss_is_zero_for_separated_pairs_and_positive_otherwise():
    eye = torch.eye(4)
    assert float(triplet_loss(eye, eye, margin=0.5)) == 0.0  # d(pos)=0, d(neg)=1 > margin
    assert float(triplet_loss(eye, eye.roll(1, 0), margin=0.5)) > 0.5


# ------------------------------------------------------------------ training
def test_training_lowers_the_loss_and_a_query_finds_its_passage(trained, tmp_path):
    corpus, ckpt = trained
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.5 * first
    model, fcfg, _ = load_retrieval_model(ckpt)
    sheets = sorted(corpus.glob("pieces/*/systems/000.png"))
    embs, entries = embed_files(model, fcfg, sheets, WindowConfig())
    index = RetrievalIndex(embs, entries, {"id": "x"})
    for i in (0, PAIRS - 1):
        query = corpus / f"pieces/toy-{i}/systems/000.wav"
        q_embs, _ = embed_files(model, fcfg, [query], WindowConfig())
        top = search(index, q_embs, "audio", k=3)[0]
        assert top[0]["file"] == str(sheets[i]) and top[0]["rank"] == 1
        assert top[0]["distance"] <= top[1]["distance"]


def test_resume_continues_exactly(tmp_path):
    corpus = make_toy_corpus(tmp_path / "corpus")
    run = RunOptions(max_steps=4, save_every=100, progress=False)
    train_retrieval(corpus, tmp_path / "straight", TINY, run)
    train_retrieval(corpus, tmp_path / "split", TINY, RunOptions(max_steps=2, save_every=100, progress=False))
    train_retrieval(corpus, tmp_path / "split", TINY, run)  # resumes at step 2
    a, _, ca = load_retrieval_model(tmp_path / "straight")
    b, _, cb = load_retrieval_model(tmp_path / "split")
    assert ca["step"] == cb["step"] == 4
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)
    with pytest.raises(CheckpointError, match="another training config"):
        train_retrieval(corpus, tmp_path / "split", train_config("tiny", batch_size=3), run)


def test_worker_processes_build_the_same_batches_and_weights(tmp_path):
    from umust_cli.retrieval.data import corpus_rows, load_features, passage_groups
    from umust_cli.retrieval.features import sheet_snippets
    from umust_cli.retrieval.train import StepBatches, batches_from, sample_batch

    corpus = make_toy_corpus(tmp_path / "corpus")
    cfg = train_config("tiny", batch_size=4, eq_knots=4, reverb_augment_s=0.5)
    fcfg = features_for(cfg.model)
    rows = corpus_rows(corpus, ("train",))
    feats = load_features(rows, fcfg)
    data = StepBatches(feats, passage_groups(rows), cfg, fcfg)
    loader = batches_from(data, 5, workers=2, pin=False)
    for step in (5, 6, 7):
        here, there = sample_batch(feats, passage_groups(rows), cfg, fcfg, step), next(loader)
        for x, y in zip(here, there):
            torch.testing.assert_close(x, y)
    sheet, lengths = here[2], here[3]
    assert sheet.dtype == torch.uint8  # ink bytes; train_step scales them as sheet_snippets does
    rng = np.random.default_rng([cfg.seed, 7])
    first = passage_groups(rows)[int(rng.choice(len(rows), size=4, replace=False)[0])][0]
    np.testing.assert_array_equal(sheet[0, : lengths[0]].numpy() / np.float32(255.0),
                                  sheet_snippets(feats.sheets[first], fcfg))
    run = RunOptions(max_steps=3, save_every=100, progress=False)
    train_retrieval(corpus, tmp_path / "serial", cfg, run)
    train_retrieval(corpus, tmp_path / "workers", cfg, RunOptions(max_steps=3, save_every=100, progress=False,
                                                                    workers=2))
    a, b = load_retrieval_model(tmp_path / "serial")[0], load_retrieval_model(tmp_path / "workers")[0]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


def test_the_best_validation_checkpoint_is_kept(tmp_path):
    from umust_cli.retrieval.train import val_score

    corpus = make_toy_corpus(tmp_path / "corpus")
    ckpt = tmp_path / "ck"
    train_retrieval(corpus, ckpt, TINY, RunOptions(max_steps=12, eval_every=3, save_every=100, progress=False),
                    val_data=corpus)
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    scored = {r["step"]: val_score(r["eval"]) for r in log if "eval" in r}
    assert sorted(scored) == [3, 6, 9, 12]
    best = json.loads((ckpt / "best" / "config.json").read_text())
    assert val_score(best["val"]) == max(scored.values())
    assert best["step"] == min(s for s, v in scored.items() if v == max(scored.values()))  # first of ties
    model = load_retrieval_model(ckpt / "best")[0]  # a loadable checkpoint of that step
    assert model.cfg == TINY.model


def test_renderings_of_one_system_are_never_negatives_of_each_other(tmp_path):
    from umust_cli.retrieval.data import corpus_rows, passage_groups
    from umust_cli.retrieval.train import batch_indices

    first = make_toy_corpus(tmp_path / "a")
    second = make_toy_corpus(tmp_path / "b")  # the same systems, another 'timbre': the audio an octave up
    for row in corpus_rows(second):
        sf.write(second / row["wav"], _toy_audio(int(row["piece_id"][4:]) + 2), SR)
    rows = corpus_rows(first) + corpus_rows(second)
    groups = passage_groups(rows)
    assert len(groups) == PAIRS and all(len(g) == 2 for g in groups)
    assert all(rows[i]["root"] != rows[j]["root"] for i, j in groups)
    used = set()
    for step in range(20):
        idx = batch_indices(groups, 4, np.random.default_rng([0, step]))
        assert len({(rows[i]["piece_id"], rows[i]["system"]) for i in idx}) == len(idx) == 4
        used.update(rows[i]["root"] for i in idx)
    assert used == {str(first), str(second)}  # both renderings are drawn
    result = train_retrieval([first, second], tmp_path / "ckpt", TINY,
                             RunOptions(max_steps=3, save_every=100, progress=False))
    assert result.step == 3


def test_corrupt_checkpoint_is_a_checkpoint_error(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained[1], bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_retrieval_model(bad)


# ------------------------------------------------------------------ index
def test_index_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    entries = [{"kind": "sheet" if i % 2 else "audio", "file": f"f{i}", "start": i * 1.0, "end": i + 1.0}
               for i in range(5)]
    RetrievalIndex(emb, entries, {"id": "abc", "step": 3}).save(tmp_path / "x.npz")
    back = RetrievalIndex.load(tmp_path / "x.npz")
    np.testing.assert_array_equal(back.embeddings, emb)
    assert back.entries == entries and back.model == {"id": "abc", "step": 3}
    hits = search(back, emb[[0]], "audio", k=10)[0]  # audio query -> the 2 sheet entries only
    assert [h["file"] for h in hits] == sorted(["f1", "f3"], key=lambda f: 1 - emb[0] @ emb[int(f[1])])


# ------------------------------------------------------------------ CLI
def _cli_app() -> typer.Typer:
    from umust_cli.cli.main import app

    return app


def test_cli_index_and_search_a_corpus(trained, tmp_path):
    corpus, ckpt = trained
    app, runner = _cli_app(), CliRunner()
    out = runner.invoke(app, ["retrieve", "index", str(corpus), "--split", "train", "-o", str(tmp_path / "i.npz"),
                              "--model", str(ckpt), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["sheet"] == PAIRS
    query = corpus / "pieces/toy-2/systems/000.wav"
    out = runner.invoke(app, ["retrieve", "search", str(query), "--index", str(tmp_path / "i.npz"), "-k", "3",
                              "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["kind"] == "audio" and len(result["results"]) == 1
    top = result["results"][0]["matches"][0]
    assert top["piece_id"] == "toy-2" and top["system"] == 0 and top["measures"] == [1, 4]
    text = runner.invoke(app, ["retrieve", "search", str(query), "--index", str(tmp_path / "i.npz")])
    assert text.exit_code == 0 and "toy-2, system 0" in text.output


def test_cli_bad_inputs_exit_2(trained, tmp_path):
    corpus, ckpt = trained
    app, runner = _cli_app(), CliRunner()
    sf.write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    Image.fromarray(np.full((50, 200), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    for bad in ("silent.wav", "blank.png"):
        out = runner.invoke(app, ["retrieve", "index", str(tmp_path / bad), "-o", str(tmp_path / "i.npz"),
                                  "--model", str(ckpt)])
        assert out.exit_code == 2, out.output
        assert "silent" in out.output or "blank" in out.output
    out = runner.invoke(app, ["retrieve", "search", str(tmp_path / "blank.png"), "--index", str(tmp_path / "no.npz")])
    assert out.exit_code == 2
    assert not (tmp_path / "i.npz").exists()


def test_cli_train_retrieval_runs_and_resumes(tmp_path):
    corpus = make_toy_corpus(tmp_path / "corpus")
    app, runner = _cli_app(), CliRunner()
    args = ["train", "retrieval", "--data", str(corpus), "-o", str(tmp_path / "ck"), "--config", "tiny",
            "--batch-size", "4", "--eq-knots", "6", "--reverb-augment", "0.5",
            "--max-steps", "2", "--val-data", str(corpus), "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["step"] == 2 and json.loads(out.stdout)["eval"]["n"] == PAIRS
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())["train"]
    assert saved["eq_knots"] == 6 and saved["reverb_augment_s"] == 0.5
    other = [a if a != "6" else "4" for a in args]  # the same run with another augmentation is refused
    out = runner.invoke(app, other)
    assert out.exit_code == 2 and "eq_knots" in out.output
    moved = corpus.parent / "corpus-copy"  # ... and so is the same run on other --data folders
    shutil.copytree(corpus, moved)
    out = runner.invoke(app, [a if a != str(corpus) else str(moved) for a in args])
    assert out.exit_code == 2 and "other --data folders" in out.output
    out = runner.invoke(app, args[:-4] + ["3", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["start_step"] == 2 and json.loads(out.stdout)["step"] == 3
    out = runner.invoke(app, ["train", "retrieval", "--data", str(tmp_path), "-o", str(tmp_path / "x"),
                              "--max-steps", "1"])
    assert out.exit_code == 2


def test_cli_index_score_pages_and_pdfs(trained, tmp_path):
    """A page image (with --pages) and the same page as a PDF: one entry per piano system,
    located by page and system; the page's systems are searchable by an image query."""
    from test_scans import synthetic_page

    _, ckpt = trained
    app, runner = _cli_app(), CliRunner()
    page, bars = synthetic_page()
    Image.fromarray(page).save(tmp_path / "page.png")
    Image.fromarray(page).save(tmp_path / "score.pdf", resolution=150)
    for name, extra in (("page.png", ["--pages"]), ("score.pdf", [])):
        out = runner.invoke(app, ["retrieve", "index", str(tmp_path / name), "-o", str(tmp_path / "p.npz"),
                                  "--model", str(ckpt), "--json", *extra])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["sheet"] == 2
        entries = RetrievalIndex.load(tmp_path / "p.npz").entries
        assert [(e["page"], e["system"], e["bars"]) for e in entries] == [(1, 1, 4), (1, 2, 5)]
        assert entries[0]["box"][1] < entries[1]["box"][1]  # top to bottom
    # without --pages a page image is one system image: a single entry
    out = runner.invoke(app, ["retrieve", "index", str(tmp_path / "page.png"), "-o", str(tmp_path / "s.npz"),
                              "--model", str(ckpt), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["sheet"] == 1
    blank = tmp_path / "blank-page.png"
    Image.fromarray(np.full((1400, 1600), 255, dtype=np.uint8)).save(blank)
    out = runner.invoke(app, ["retrieve", "index", str(blank), "--pages", "-o", str(tmp_path / "b.npz"),
                              "--model", str(ckpt)])
    assert out.exit_code == 2 and "no piano systems" in out.output and not (tmp_path / "b.npz").exists()


def test_cli_index_with_a_shipped_model_name_and_search_with_it(tmp_path):
    from test_scans import synthetic_page

    app, runner = _cli_app(), CliRunner()
    Image.fromarray(synthetic_page()[0]).save(tmp_path / "score.pdf", resolution=150)
    out = runner.invoke(app, ["retrieve", "index", str(tmp_path / "score.pdf"), "-o", str(tmp_path / "i.npz"),
                              "--model", "scans"])
    assert out.exit_code == 0, out.output
    assert RetrievalIndex.load(tmp_path / "i.npz").model["path"] == "shipped:scans"
    sf.write(tmp_path / "q.wav", _toy_audio(3, 4.0), SR)
    out = runner.invoke(app, ["retrieve", "search", str(tmp_path / "q.wav"), "--index", str(tmp_path / "i.npz"),
                              "-k", "2", "--json"])  # no --model: the index's own (scans) is used
    assert out.exit_code == 0, out.output
    assert [m["page"] for m in json.loads(out.stdout)["results"][0]["matches"]] == [1, 1]
    out = runner.invoke(app, ["retrieve", "search", str(tmp_path / "q.wav"), "--index", str(tmp_path / "i.npz"),
                              "--model", "rendered"])
    assert out.exit_code == 2 and "another model" in out.output
