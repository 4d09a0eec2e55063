"""`umust translate --data CORPUS`: OMR of a tokenized corpus split, batched, named for `umust eval omr`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.checkpoint import save_model
from umust_cli.cli.main import app
from umust_cli.codecs.notation import ChordRule, NotationCodec
from umust_cli.codecs.vocab import default_vocabulary
from umust_cli.data import pairs as pairs_io
from umust_cli.inputs import load_lmx
from umust_cli.model.generate import DecodingOptions, generate, step_positions
from umust_cli.model.translator import MODEL_KIND, Translator, make_config

from .conftest import key_reader_reading, pitch_reader_reading, tiny_roll_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
LMX = NotationCodec().token_names()
# piece, system, split, image codes (rows, columns)
SYSTEMS = [("alpha", 0, "test", (2, 3)), ("alpha", 1, "test", (3, 5)), ("beta", 0, "test", (2, 2)),
           ("beta", 1, "test", (2, 7)), ("gamma", 0, "train", (2, 3))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root, rng, rows = tmp_path_factory.mktemp("c"), np.random.default_rng(0), []
    for piece, system, split, shape in SYSTEMS:
        stem = f"pieces/{piece}/systems/{system:03d}"
        (root / stem).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / f"{stem}.image.npy", rng.integers(0, 1024, (1, 4, *shape)).astype(np.int16))
        np.save(root / f"{stem}.scan0.image.npy", rng.integers(0, 1024, (1, 4, *shape)).astype(np.int16))
        (root / f"{stem}.lmx").write_text(" ".join(rng.choice(LMX, 6)) + "\n")
        rows.append({"piece_id": piece, "system": system, "split": split, "source": "music21:bach/x",
                     "png": f"{stem}.png", "lmx": f"{stem}.lmx", "scans": [f"{stem}.scan0.png"]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, "column")
    ckpt = tmp_path_factory.mktemp("tiny")
    save_model(ckpt, Translator(cfg).state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, vocab)
    return ckpt


def _tokens(path: Path) -> list[str]:
    return load_lmx(path).split("\n---\n", 1)[-1].split()


def _alone(model: Translator, corpus: Path, key: str, copy: str) -> list[str]:
    """Greedy OMR of one system by itself (no batch, no padding)."""
    vocab = default_vocabulary()
    systems, _ = pairs_io.load_systems(corpus, "test", vocab, None, ("image",), scans=True)
    i = next(i for i, s in enumerate(systems) if s.key == key + ("" if copy == "engraved" else f"/{copy}"))
    steps, height = pairs_io.SequenceStore(systems, model.cfg).steps(i, "image")
    src = steps[None]
    ids = generate(model, src, step_positions(src, "image", height), "image", "notation", DecodingOptions(),
                   rule=ChordRule(1))[0]
    return [LMX[t] for t in vocab.to_local("notation", ids)]


@pytest.mark.parametrize("copy", ["engraved", "scan0"])
def test_batched_split_predictions_equal_one_at_a_time(corpus, tiny, tmp_path, copy):
    from umust_cli.translate.engines import load_translator

    out = tmp_path / "pred"
    result = runner.invoke(app, ["translate", "--data", str(corpus), "--model", str(tiny), "--copy", copy,
                                 "--batch-size", "3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["systems"] == 4 and summary["written"] == 4 and summary["route"] == "direct"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.lmx")) == [
        "alpha/000.lmx", "alpha/001.lmx", "beta/000.lmx", "beta/001.lmx"]     # test split only
    model = load_translator(tiny, default_vocabulary()).eval()
    for key in ("alpha/000", "alpha/001", "beta/000", "beta/001"):
        assert _tokens(out / f"{key}.lmx") == _alone(model, corpus, key, copy), key
    again = json.loads(runner.invoke(app, ["translate", "--data", str(corpus), "--model", str(tiny), "--copy",
                                           copy, "-o", str(out), "--json"]).stdout)
    assert again["written"] == 0 and again["skipped"] == 4                    # a rerun resumes
    scored = runner.invoke(app, ["eval", "omr", str(out), "--data", str(corpus), "--json"])
    assert scored.exit_code == 0 and json.loads(scored.stdout)["summary"]["files"] == 4


def test_limit_picks_the_systems_eval_limit_scores(corpus, tiny, tmp_path):
    out = tmp_path / "pred"
    result = runner.invoke(app, ["translate", "--data", str(corpus), "--model", str(tiny), "--limit", "2",
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["written"] == 2
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.lmx")) == ["alpha/000.lmx", "beta/001.lmx"]
    scored = json.loads(runner.invoke(app, ["eval", "omr", str(out), "--data", str(corpus), "--limit", "2",
                                            "--json"]).stdout)
    assert scored["summary"]["files"] == 2 and scored["summary"]["missing"] == 0


def test_corpus_mode_bad_options_are_one_line(corpus, tiny, tmp_path):
    base = ["translate", "--data", str(corpus), "--model", str(tiny), "-o", str(tmp_path / "p")]
    for extra, words in ((["--copy", "photo"], "--copy"), (["--split", "valid"], "no engraved image codes"),
                         (["--task", "m2a"], "--data translates"), (["--task", "a2m"], "no audio codes")):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_a2m_mode_transcribes_each_systems_audio_codes_for_eval_amt(corpus, tmp_path):
    """--task a2m: NNN.mid of every system's audio codes by the roll head (one C4 per system here:
    the tiny model's roll reads C4 from the first frame on), batched like OMR, scored by eval amt."""
    import shutil

    import pretty_midi

    audio = tmp_path / "c"
    shutil.copytree(corpus, audio)
    rows, rng = [json.loads(line) for line in (audio / "manifest.jsonl").read_text().splitlines()], np.random.default_rng(1)
    for row, frames in zip(rows, (20, 40, 9, 60, 30)):
        stem = row["png"][:-len(".png")]
        np.save(audio / f"{stem}.audio.npy", rng.integers(0, 1024, (1, 4, frames)).astype(np.int16))
        row["wav"], row["mid"] = f"{stem}.wav", f"{stem}.mid"
        _write_midi(audio / row["mid"])
    (audio / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, out = tiny_roll_model(tmp_path / "roll"), tmp_path / "pred"
    result = runner.invoke(app, ["translate", "--data", str(audio), "--task", "a2m", "--model", str(model),
                                 "--batch-size", "3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == 4 and summary["empty"] == 0 and "roll reading" in summary["route"]
    for key, frames in (("alpha/000", 20), ("alpha/001", 40), ("beta/000", 9), ("beta/001", 60)):
        (note,) = pretty_midi.PrettyMIDI(str(out / f"{key}.mid")).instruments[0].notes
        assert note.pitch == 60 and note.start == 0.0 and note.end == pytest.approx(frames * 512 / 44100, abs=5e-3)   # MIDI ticks
    scored = runner.invoke(app, ["eval", "amt", str(out), "--data", str(audio), "--json"])
    assert scored.exit_code == 0, scored.output
    summary = json.loads(scored.stdout)["summary"]
    assert summary["files"] == 4 and 0.0 < summary["onset_F1"] < 1.0      # each reference has one C4 at 0 and more


def _write_midi(path: Path) -> None:
    import pretty_midi

    pm, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(0)
    piano.notes.extend([pretty_midi.Note(80, 60, 0.0, 0.1), pretty_midi.Note(80, 64, 0.05, 0.1)])
    pm.instruments.append(piano)
    pm.write(str(path))


MEASURE = ("measure key:fifths:1 time beats:3 beat-type:4 clef:G2 staff:1 D5 voice:1 quarter staff:1 G4 quarter "
           "A4 quarter")


def test_corpus_omr_takes_each_systems_key_from_the_key_reader_where_its_image_is(corpus, tiny, tmp_path,
                                                                                  monkeypatch):
    """With a key reader, each system's image file (the chosen copy's) is read for its key
    signature; a system whose file is missing keeps the decoded one."""
    import shutil

    from PIL import Image

    from umust_cli.translate import corpus as corpus_mode

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    for stem in ("alpha/systems/000", "alpha/systems/001", "beta/systems/000"):      # beta/001 has no PNG
        Image.fromarray(np.full((120, 300), 255, np.uint8)).save(copy / f"pieces/{stem}.scan0.png")
    decoded = "measure key:fifths:0 time beats:3 beat-type:4 clef:G2 staff:1 C4 voice:1 quarter staff:1".split()
    ids = default_vocabulary().to_global("notation", [LMX.index(t) for t in decoded])
    monkeypatch.setattr(corpus_mode, "generate_from_memory", lambda m, memory, *a, **k: [list(ids)] * memory.shape[0])
    reader = key_reader_reading(tmp_path / "reader", 4)
    out = tmp_path / "pred"
    result = runner.invoke(app, ["translate", "--data", str(copy), "--model", str(tiny), "--copy", "scan0",
                                 "--key-reader", str(reader), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    keys = {k: [t for t in _tokens(out / f"{k}.lmx") if t.startswith("key:")] for k in
            ("alpha/000", "alpha/001", "beta/000", "beta/001")}
    assert keys == {"alpha/000": ["key:fifths:4"], "alpha/001": ["key:fifths:4"], "beta/000": ["key:fifths:4"],
                    "beta/001": ["key:fifths:0"]}


def test_i2a_mode_renders_each_prediction_through_the_cascade(corpus, tiny, tmp_path):
    import soundfile

    out = tmp_path / "pred"
    (out / "alpha").mkdir(parents=True)
    (out / "alpha" / "000.lmx").write_text(MEASURE + "\n")      # kept: OMR skips what is there
    result = runner.invoke(app, ["translate", "--data", str(corpus), "--model", str(tiny), "--task", "i2a",
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["route"].startswith("cascade") and summary["written"] == 3 and summary["skipped"] == 1
    assert summary["audio"]["written"] == 4 and 0 <= summary["audio"]["silent"] <= 3
    wavs = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    assert wavs == ["alpha/000.wav", "alpha/001.wav", "beta/000.wav", "beta/001.wav"]
    audio, sr = soundfile.read(out / "alpha" / "000.wav")
    assert sr == 44100 and 1.0 < len(audio) / sr < 6.0 and np.abs(audio).max() > 0.01  # three quarter notes


def test_i2a_mode_via_midi_reads_each_system_without_decoding(corpus, tmp_path):
    import pretty_midi
    import soundfile

    from umust_cli.data.staff_order import pitch_names

    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, "column", ctc_classes=len(pitch_names()))
    ckpt = tmp_path / "ctc"
    save_model(ckpt, Translator(cfg).state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, vocab)
    out = tmp_path / "pred"
    args = ["translate", "--data", str(corpus), "--task", "i2a", "-o", str(out), "--json"]
    summary = json.loads(runner.invoke(app, args + ["--model", str(ckpt)]).stdout)
    assert summary["route"] == "cascade (image -umust-> midi -fluidsynth-> audio)"
    assert summary["written"] == 4 and summary["skipped"] == 0 and "audio" not in summary
    for key, (piece, system, _, (rows, cols)) in zip(sorted(out.rglob("*.mid")), SYSTEMS[:4]):
        notes = pretty_midi.PrettyMIDI(str(key)).instruments[0].notes
        assert key == out / piece / f"{system:03d}.mid" and not list(out.rglob("*.lmx"))
        assert all(n.start < (cols + 1) * 0.12 + 1e-6 for n in notes)        # within the system's columns
        audio, sr = soundfile.read(key.with_suffix(".wav"))
        assert sr == 44100 and (len(audio) / sr >= notes[-1].start if notes else len(audio) == sr)
    again = json.loads(runner.invoke(app, args + ["--model", str(ckpt)]).stdout)
    assert again["written"] == 0 and again["skipped"] == 4
    refused = runner.invoke(app, args + ["--model", str(tiny_no_ctc(tmp_path)), "--via", "midi"])
    assert refused.exit_code == 2 and "image->midi" in refused.output
    direct = runner.invoke(app, args + ["--model", str(ckpt), "--via", "direct"])
    assert direct.exit_code == 2 and "--via midi, notation or auto" in direct.output


def test_i2a_mode_via_midi_reads_pitches_with_the_pitch_reader_where_the_image_is(corpus, tmp_path, monkeypatch):
    """With a pitch reader, each system whose image file is there is read from its pixels; the
    others keep the CTC head's reading."""
    import shutil

    import pretty_midi
    from PIL import Image

    from umust_cli.data.staff_order import pitch_names

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    gray = np.full((120, 300), 255, np.uint8)
    gray[40:45, 20:280] = 0
    for stem in ("alpha/systems/000", "beta/systems/000"):
        Image.fromarray(gray).save(copy / f"pieces/{stem}.png")
    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, "column", ctc_classes=len(pitch_names()))
    model = Translator(cfg)
    with torch.no_grad():                                   # the CTC head reads nothing
        model.ctc.weight.zero_()
        model.ctc.bias.fill_(-10.0).view(2, 2, -1)[..., -1] = 10.0
    save_model(tmp_path / "ctc", model.state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, vocab)
    reader = pitch_reader_reading(tmp_path / "reader", "A4")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["translate", "--data", str(copy), "--task", "i2a", "--model", str(tmp_path / "ctc"),
                                 "--key-reader", "none", "--pitch-reader", str(reader), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    pitches = {k: {n.pitch for i in pretty_midi.PrettyMIDI(str(out / f"{k}.mid")).instruments for n in i.notes}
               for k in ("alpha/000", "alpha/001", "beta/000", "beta/001")}
    assert pitches == {"alpha/000": {69}, "alpha/001": set(), "beta/000": {69}, "beta/001": set()}
    assert json.loads(result.stdout)["silent"] == 2
    # With a key reader too, the two systems both readers read never reach the translator: only
    # the two without an image are encoded (one batch of 2), and the key reader's key is played.
    from umust_cli.translate import corpus as corpus_route

    encoded, encode = [], corpus_route.encode_images
    monkeypatch.setattr(corpus_route, "encode_images",
                        lambda model, steps, pos: encoded.append(steps.shape[0]) or encode(model, steps, pos))
    keyed = runner.invoke(app, ["translate", "--data", str(copy), "--task", "i2a", "--model", str(tmp_path / "ctc"),
                                "--key-reader", str(key_reader_reading(tmp_path / "key", 2)), "--pitch-reader",
                                str(reader), "-o", str(tmp_path / "keyed"), "--json"])
    assert keyed.exit_code == 0, keyed.output
    assert encoded == [2] and {n.pitch for n in pretty_midi.PrettyMIDI(
        str(tmp_path / "keyed" / "alpha" / "000.mid")).instruments[0].notes} == {69}


def tiny_no_ctc(tmp_path: Path) -> Path:
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, "column")
    save_model(tmp_path / "plain", Translator(cfg).state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, vocab)
    return tmp_path / "plain"
