"""`umust translate`: routes from file types, every file-type pair with a tiny random translator,
the render/cascade routes with the real verovio and FluidSynth, bad inputs and batches (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.errors import BadInputError, CheckpointError, TranslationError
from umust_cli.translate.direct import measure_chunks
from umust_cli.translate.routes import Options, choose_route, plan_jobs
from umust_cli.translate.symbolic import estimate_tempo, read_systems
from umust_cli.translate.values import Notation, musicxml_of

from .conftest import REPO, key_reader_reading, pitch_reader_reading, tiny_roll_model

runner = CliRunner()
FIXTURES = REPO / "tests" / "fixtures" / "notation"
KERN = FIXTURES / "grand_staff.krn"
SR = 44100
TINY_AUDIO_STEPS = 64   # the tiny preset's longest audio target: 64 frames of 512 samples


# ------------------------------------------------------------------ inputs
def grand_staff(width: int = 240, spacing: int = 9, gap: int = 26) -> np.ndarray:
    """A synthetic piano system at the codec's staff spacing: two 5-line staves joined by a
    start line and bar lines, with a few noteheads; 126 x 240 px (8 x 15 patches)."""
    top, staff = 14, 4 * spacing
    img = np.full((top + 2 * staff + gap + 14, width), 255, np.uint8)
    tops = [top, top + staff + gap]
    for y0 in tops:
        for k in range(5):
            img[y0 + k * spacing, 4:width - 4] = 0
    img[top:top + 2 * staff + gap + 1, 4:6] = 0
    for x in range(60, width - 4, 60):
        img[top:top + 2 * staff + gap + 1, x] = 0
    for i, x in enumerate(range(20, width - 20, 20)):
        y = tops[i % 2] + (i * 5) % staff
        img[y - 3:y + 4, x - 4:x + 5] = 0
    return img


def _save_png(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(img).save(path)
    return path


def _midi(path: Path, seconds: float = 1.2) -> Path:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    for i, pitch in enumerate((60, 64, 67, 72)):
        start = i * seconds / 4
        piano.notes.append(pretty_midi.Note(90, pitch, start, start + seconds / 4))
    pm.instruments.append(piano)
    pm.write(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from umust_cli.data.synth import available_soundfonts, synthesize

    d = tmp_path_factory.mktemp("inputs")
    page = np.concatenate([np.full((30, 240), 255, np.uint8), grand_staff(), np.full((40, 240), 255, np.uint8),
                           grand_staff(), np.full((30, 240), 255, np.uint8)])
    mid = _midi(d / "notes.mid")
    audio = synthesize(pretty_midi.PrettyMIDI(str(mid)), available_soundfonts()["fluidr3"], SR)
    soundfile.write(str(d / "notes.wav"), audio, SR)
    from umust_cli.codecs.notation import NotationCodec, lmx_file_text

    (d / "score.lmx").write_text(lmx_file_text(NotationCodec().to_lmx(KERN)))
    return {"png": _save_png(d / "system.png", grand_staff()), "page": _save_png(d / "page.png", page),
            "lmx": d / "score.lmx",
            "mid": mid, "wav": d / "notes.wav", "musicxml": FIXTURES / "piano_clefs.musicxml", "krn": KERN}


def _run(args: list[str]):
    return runner.invoke(app, ["translate", *map(str, args)])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_error_line(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for w in words:
        assert w in lines[0], lines[0]


def _no_files(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), sorted(folder.iterdir())


# ------------------------------------------------------------------ routes (no model, no files)
def _no(a: str, b: str) -> bool:
    return False


def _yes(a: str, b: str) -> bool:
    return True


@pytest.mark.parametrize("task, with_model, expected", [
    (("image", "audio"), True, "direct (image -umust-> audio)"),
    (("image", "midi"), True, "direct (image -umust-> midi)"),
    (("audio", "image"), False, "cascade (audio -transkun-> midi -quantize-> notation -verovio-> image); "
                                "no direct audio->image model (none installed or given with --model is trained for it)"),
    (("audio", "midi"), False, "reference (audio -transkun-> midi); no direct audio->midi model"),
    (("midi", "audio"), False, "render (midi -fluidsynth-> audio); no direct midi->audio model"),
    (("midi", "audio"), True, "direct (midi -umust-> audio)"),
    (("notation", "audio"), True, "render (notation -perform-> midi -fluidsynth-> audio)"),
    (("notation", "image"), True, "direct (notation -umust-> image)"),
])
def test_route_from_task_and_installed_models(task, with_model, expected):
    assert choose_route(*task, Options(), _yes if with_model else _no).describe().startswith(expected)


def test_route_options_and_missing_models():
    via = choose_route("image", "audio", Options(via="notation", synth="neural"), _yes)
    assert via.describe() == "cascade (image -umust-> notation -perform-> midi -umust-> audio)"
    assert via.model_kinds() == ["translator-i2a"]
    umust = choose_route("audio", "notation", Options(transcriber="umust"), _yes)
    assert umust.engines == ("umust", "quantize")
    assert choose_route("notation", "image", Options(via="render"), _yes).kind == "render"
    with pytest.raises(CheckpointError, match="--model"):
        choose_route("image", "notation", Options(), _no)
    with pytest.raises(CheckpointError, match="--model"):
        choose_route("audio", "image", Options(transcriber="umust"), _no)
    with pytest.raises(BadInputError, match="no --via direct"):
        choose_route("notation", "midi", Options(via="direct"), _yes)
    with pytest.raises(BadInputError, match="--via"):
        Options(via="fast")


def test_auto_takes_a_direct_route_only_where_the_default_model_measured_best():
    from umust_cli import registry
    from umust_cli.translate.engines import auto_direct

    worse = lambda a, b: False    # noqa: E731 - the default model measured worse on every task
    skipped = choose_route("notation", "image", Options(), _yes, worse)
    assert skipped.kind == "render"
    assert "measured worse than this route on notation->image" in skipped.note
    assert choose_route("notation", "image", Options(via="direct"), _yes, worse).kind == "direct"
    assert choose_route("image", "notation", Options(), _yes, worse).kind == "direct"   # the only route
    assert choose_route("audio", "image", Options(), _yes, worse).describe().startswith(
        "cascade (audio -transkun-> midi")
    default, chosen = auto_direct(None), auto_direct("runs/a2i")
    for task in registry.AUTO_DIRECT["translator-i2a"]:
        assert default(*task.split(">"))
    assert not default("notation", "image") and not default("audio", "midi")
    assert chosen("notation", "image") and chosen("audio", "midi")


def test_a_checkpoint_counts_for_the_tasks_it_was_trained_for(tiny, tmp_path):
    import shutil

    from umust_cli.translate.engines import has_model

    partial = tmp_path / "omr-only"
    shutil.copytree(tiny, partial)
    config = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "tasks": ["omr", "midi2audio"]}))
    route = choose_route("image", "audio", Options(), has_model(str(partial)))
    assert route.describe() == ("cascade (image -umust-> notation -perform-> midi -fluidsynth-> audio); "
                                "no direct image->audio model (none installed or given with --model is trained for it)")
    assert choose_route("image", "audio", Options(), has_model(str(tiny))).kind == "direct"
    assert plan_jobs([Path("a.wav")], tmp_path / "a.mid", "transcription")[0].task == ("audio", "midi")


def test_score_images_to_audio_prefer_the_ctc_reading_when_the_model_has_one():
    def omr_only(a: str, b: str) -> bool:            # an OMR model without a CTC head
        return (a, b) == ("image", "notation")

    def omr_ctc(a: str, b: str) -> bool:             # ... with one: it also reads images into MIDI
        return (a, b) in (("image", "notation"), ("image", "midi"))

    reading = choose_route("image", "audio", Options(), omr_ctc)
    assert reading.describe().startswith("cascade (image -umust-> midi -fluidsynth-> audio); no direct image->audio")
    assert reading.model_kinds() == ["translator-i2a"]
    assert choose_route("image", "audio", Options(), omr_only).stages == ("image", "notation", "midi", "audio")
    assert choose_route("image", "audio", Options(via="notation"), omr_ctc).stages[1] == "notation"
    assert choose_route("image", "midi", Options(), omr_only).describe() == (
        "cascade (image -umust-> notation -perform-> midi); no direct image->midi model (none installed or given "
        "with --model is trained for it)")
    with pytest.raises(BadInputError, match="has no --via midi route"):
        choose_route("audio", "image", Options(via="midi"), _yes)


def test_plan_jobs_tasks_from_suffixes_and_folders(tmp_path):
    (job,) = plan_jobs([Path("a.png")], tmp_path / "a.lmx", None)
    assert job.task == ("image", "notation")
    with pytest.raises(BadInputError, match="does not fit"):
        plan_jobs([Path("a.png")], tmp_path / "a.wav", "omr")
    with pytest.raises(BadInputError, match="--task"):
        plan_jobs([Path("a.mid"), Path("b.mid")], tmp_path / "out", None)
    jobs = plan_jobs([Path("x/a.mid"), Path("y/b.mid")], tmp_path / "out", "m2a")
    assert [j.dest.name for j in jobs] == ["a.wav", "b.wav"] and jobs[0].task == ("midi", "audio")
    with pytest.raises(BadInputError, match="not an audio file"):
        plan_jobs([Path("a.mid")], tmp_path / "out", "amt")
    with pytest.raises(BadInputError, match="suffix"):
        plan_jobs([Path("a.txt")], tmp_path / "a.wav", None)


def test_generated_lmx_is_decoded_leniently_or_refused_in_one_line():
    xml = musicxml_of(Notation(lmx=("G4", "quarter", "measure", "clef:G2", "G4", "voice:1", "quarter", "staff:1")))
    import music21

    score = music21.converter.parseData(xml)
    assert len(score.flatten().notes) == 1                         # the tokens before 'measure' dropped
    with pytest.raises(TranslationError, match="no measure"):
        musicxml_of(Notation(lmx=("G4", "quarter")))


def test_measure_chunks_cut_at_measures():
    tokens = "measure a b measure c measure d e f".split()
    assert measure_chunks(tokens, 6) == [["measure", "a", "b", "measure", "c"], ["measure", "d", "e", "f"]]
    with pytest.raises(BadInputError, match="longer than the model"):
        measure_chunks(tokens, 3)


def test_pages_are_split_into_systems(files, tmp_path):
    assert len(read_systems(files["page"])) == 2
    with Image.open(files["page"]) as im:
        im.convert("RGB").save(tmp_path / "page.pdf")               # rasterized again at 2000 px wide
    assert len(read_systems(tmp_path / "page.pdf")) == 2
    assert [s.shape for s in read_systems(files["png"])] == [(126, 240)]


def test_estimated_tempo_finds_the_sixteenth_grid():
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    beat = 60 / 96                                                 # 96 BPM, eighths and sixteenths
    for q in (0, 0.5, 1, 1.25, 1.5, 2, 3, 3.5, 3.75, 4, 5, 6):
        piano.notes.append(pretty_midi.Note(80, 60, q * beat + 0.1, q * beat + 0.1 + beat / 4))
    pm.instruments.append(piano)
    assert estimate_tempo(pm) == pytest.approx(96, abs=1)


# ------------------------------------------------------------------ every file-type pair, tiny model
def _check_output(path: Path, modality: str) -> None:
    if modality == "audio":
        audio, sr = soundfile.read(str(path))
        assert sr == SR and 0 < len(audio) <= 4 * TINY_AUDIO_STEPS * 512
    elif modality == "image":
        with Image.open(path) as im:
            assert im.size[0] > 0 and im.size[1] > 0
    elif modality == "midi":
        pretty_midi.PrettyMIDI(str(path))
    elif path.suffix == ".lmx":
        assert path.read_text().startswith("version: 1.0\nflavor: core\n---\n")
    else:
        import music21

        music21.converter.parse(str(path))


@pytest.mark.parametrize("src, suffix, route, target", [
    ("png", ".wav", "direct", "audio"),
    ("page", ".wav", "direct", "audio"),
    ("png", ".lmx", "direct", "notation"),
    ("png", ".musicxml", "direct", "notation"),
    ("png", ".mid", "cascade", "midi"),
    ("wav", ".mid", "direct", "midi"),
    ("wav", ".png", "direct", "image"),
    ("musicxml", ".png", "direct", "image"),
    ("mid", ".wav", "direct", "audio"),
])
def test_direct_routes_with_a_tiny_model(files, tiny, tmp_path, one_torch_thread, src, suffix, route, target):
    out = tmp_path / "out" / f"result{suffix}"
    result = _run([files[src], "-o", out, "--model", tiny, "--device", "cpu", "--json"])
    if result.exit_code == 1:
        # random weights: generated LMX may not be MusicXML; then one line, exit 1, no file
        assert suffix in (".musicxml", ".mid")
        _one_error_line(result, 1, "LMX")
        _no_files(out.parent)
        return
    (row,) = _json(result)["done"]
    assert row["route"] == route and row["stages"][-1] == target
    _check_output(out, target)


def test_cascade_from_audio_with_umusts_transcriber(files, tiny, tmp_path, one_torch_thread):
    out = tmp_path / "score.png"
    result = _run([files["wav"], "-o", out, "--model", tiny, "--via", "notation", "--transcriber", "umust",
                   "--device", "cpu", "--json"])
    if result.exit_code == 1:                                      # random weights may transcribe no note
        _one_error_line(result, 1, "no notes")
        return
    (row,) = _json(result)["done"]
    assert row["route"] == "cascade" and row["engines"] == ["umust", "quantize", "verovio"]
    _check_output(out, "image")


# ------------------------------------------------------------------ render and cascade routes, no model
@pytest.mark.parametrize("src, suffix, route", [
    ("musicxml", ".png", "render"), ("lmx", ".png", "render"), ("krn", ".wav", "render"), ("krn", ".mid", "render"),
    ("mid", ".wav", "render"), ("mid", ".musicxml", "cascade"),
])
def test_render_routes_need_no_model(files, tmp_path, src, suffix, route):
    out = tmp_path / f"result{suffix}"
    (row,) = _json(_run([files[src], "-o", out, "--json"]))["done"]
    assert row["route"] == route
    if suffix == ".wav":
        audio, sr = soundfile.read(str(out))
        assert sr == SR and len(audio) / sr > 1.0
    elif suffix == ".mid":
        assert sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(out)).instruments) > 5
    elif suffix == ".musicxml":
        import music21

        pitches = sorted(p.midi for n in music21.converter.parse(str(out)).flatten().notes for p in n.pitches)
        assert pitches == [60, 64, 67, 72]
    else:
        with Image.open(out) as im:
            assert im.size[0] > 100 and im.size[1] > 50


# ------------------------------------------------------------------ bad inputs and batches
def test_no_route_without_a_model_is_one_line(files, tmp_path):
    # no audio->image model ships: umust's own transcriber has no model to run
    _one_error_line(_run([files["wav"], "-o", tmp_path / "o" / "x.png", "--transcriber", "umust"]), 2,
                    "--model", "translator-a2i")
    _no_files(tmp_path / "o")


def test_a_score_image_uses_the_shipped_omr_model(files, tmp_path):
    out = tmp_path / "o" / "x.musicxml"
    result = _run([files["png"], "-o", out, "--json"])
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)["done"][0]
    assert done["route"] == "direct" and done["engines"] == ["umust"]
    assert out.read_text().lstrip().startswith("<?xml") and "<score-partwise" in out.read_text()


def test_the_ctc_reading_of_two_systems_plays_one_after_the_other_with_the_shipped_model(files, tmp_path,
                                                                                      one_torch_thread):
    from umust_cli.translate.direct import COLUMN_SECONDS, SYSTEM_GAP_COLUMNS, image_to_midi
    from umust_cli.translate.engines import Engines, RunConfig
    from umust_cli.translate.symbolic import read_systems

    (row,) = _json(_run([files["png"], "-o", tmp_path / "one.mid", "--json"]))["done"]
    assert row["route"] == "direct" and row["stages"] == ["image", "midi"]
    (system,) = read_systems(files["png"])
    engines = Engines(RunConfig())
    first = [(n.pitch, n.start) for n in image_to_midi([system], engines).instruments[0].notes]
    both = [(n.pitch, n.start) for n in image_to_midi([system, system], engines).instruments[0].notes]
    assert first and both[:len(first)] == first and len(both) == 2 * len(first)
    # the second system starts after the first's patch columns (16 px each, and its [EOS]) and the gap
    columns = -(-system.shape[1] // 16)
    offset = both[len(first)][1] - first[0][1]
    assert SYSTEM_GAP_COLUMNS * COLUMN_SECONDS < offset <= (2 * columns + SYSTEM_GAP_COLUMNS + 1) * COLUMN_SECONDS
    assert [p for p, _ in first] == [p for p, _ in both[len(first):]]
    assert [t + offset for _, t in first] == pytest.approx([t for _, t in both[len(first):]], abs=1e-6)
    assert pretty_midi.PrettyMIDI(str(tmp_path / "one.mid")).instruments[0].notes


def test_the_shipped_omr_model_decodes_with_a_beam_and_refuses_a_sampled_one(files, tmp_path, one_torch_thread):
    out = tmp_path / "o" / "x.lmx"
    result = _run([files["png"], "-o", out, "--beam-size", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"][0]["route"] == "direct"
    _check_output(out, "notation")
    refused = _run([files["png"], "-o", tmp_path / "p" / "x.lmx", "--beam-size", "3", "--temperature", "0.7"])
    _one_error_line(refused, 2, "beam search")
    _no_files(tmp_path / "p")


def test_the_ctc_pitch_reading_changes_pitch_tokens_and_the_key_signature_only(files, tmp_path, one_torch_thread):
    """The shipped model's CTC head rewrites pitch tokens, its key head the first key signature
    (without the rhythm reader, which writes the notes itself)."""
    from umust_cli.codecs.notation import is_pitch

    outs = {}
    for flag in ("--ctc-pitches", "--no-ctc-pitches"):
        out = tmp_path / flag / "x.lmx"
        assert _run([files["png"], "-o", out, flag, "--rhythm-reader", "none"]).exit_code == 0
        outs[flag] = out.read_text().split("---")[-1].split()
    read, plain = outs["--ctc-pitches"], outs["--no-ctc-pitches"]
    assert len(read) == len(plain) > 0
    def key(t):
        return t.startswith("key:fifths:")
    assert all(a == b or (is_pitch(a) and is_pitch(b)) or (key(a) and key(b)) for a, b in zip(read, plain))
    assert sum(a != b and key(a) for a, b in zip(read, plain)) <= 1


def _tiny_reader(ckpt: Path, fifths: int | None) -> Path:
    """A random tiny OMR model (column layout, CTC head that reads C4 in the first frame of every
    column; with ``fifths``, a key head that reads that key signature), trained for OMR only, as
    its config says."""
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.data.staff_order import pitch_names
    from umust_cli.model.translator import KEY_COUNTS, MODEL_KIND, Translator, make_config

    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, "column", ctc_classes=len(pitch_names()), key_head=fifths is not None)
    model = Translator(cfg)
    with torch.no_grad():
        model.ctc.weight.zero_()
        frames = model.ctc.bias.fill_(-10.0).view(2, -1, len(pitch_names()) + 1)   # (staves, frames, classes + blank)
        frames[..., -1] = 0.0
        frames[0, 0, pitch_names().index("C4")] = 10.0
        if fifths is not None:
            model.key.weight.zero_()
            scores = model.key.bias.fill_(0.0)              # the count of accidentals, then flat / sharp
            scores[abs(fifths)] = scores[KEY_COUNTS + int(fifths > 0)] = 10.0
    save_model(ckpt, model.state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict(), "tasks": ["omr"]}, vocab)
    return ckpt


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    return _tiny_reader(tmp_path_factory.mktemp("tiny-ctc"), None)


def test_the_reading_plays_the_key_signature_its_key_head_reads(files, tmp_path_factory, one_torch_thread):
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-key"), 2)       # D major: C is read as C sharp
    mid = tmp_path_factory.mktemp("out") / "x.mid"
    (row,) = _json(_run([files["png"], "-o", mid, "--model", model, "--key-reader", "none", "--pitch-reader", "none",
                         "--json"]))["done"]
    assert row["route"] == "direct"
    assert {n.pitch for n in pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes} == {61}


def test_a_key_reader_overrides_the_key_head_in_the_reading_and_in_omr(files, tmp_path_factory, one_torch_thread):
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-key2"), 2)      # key head: D major (C read as C sharp)
    reader = key_reader_reading(tmp_path_factory.mktemp("reader"), -1)  # key reader: F major (C stays C)
    out = tmp_path_factory.mktemp("out")
    _json(_run([files["png"], "-o", out / "r.mid", "--model", model, "--key-reader", reader, "--pitch-reader", "none",
                "--json"]))
    assert {n.pitch for n in pretty_midi.PrettyMIDI(str(out / "r.mid")).instruments[0].notes} == {60}
    _json(_run([files["png"], "-o", out / "h.mid", "--model", model, "--key-reader", "none", "--pitch-reader", "none",
                "--json"]))
    assert {n.pitch for n in pretty_midi.PrettyMIDI(str(out / "h.mid")).instruments[0].notes} == {61}
    result = _run([files["png"], "-o", out / "x.mid", "--model", model, "--key-reader", out / "missing"])
    _one_error_line(result, 2, "missing")


def test_a_pitch_reader_reads_the_pitches_at_the_codes_columns(files, tmp_path_factory, monkeypatch,
                                                              one_torch_thread):
    """The pitch reader's emissions replace the CTC head's, one per image code column (15 columns of
    16 px: the system is 240 px wide at the codec's scale), and sound in the key the key reader reads;
    with both readers the translator's head is not run."""
    from umust_cli.translate import direct

    model = _tiny_reader(tmp_path_factory.mktemp("tiny-pr"), None)          # CTC head: C4 in every column
    reader = pitch_reader_reading(tmp_path_factory.mktemp("pr"), "F4")      # pitch reader: F4 in every column
    key = key_reader_reading(tmp_path_factory.mktemp("pr-key"), 1)          # G major: F sounds F sharp
    out, heads = tmp_path_factory.mktemp("pr-out"), []
    monkeypatch.setattr(direct, "head_reading", lambda engines, gray, run=direct.head_reading:
                        heads.append(gray.shape) or run(engines, gray))
    for name, choice in (("p", reader), ("h", "none")):
        _json(_run([files["png"], "-o", out / f"{name}.mid", "--model", model, "--key-reader", key,
                    "--pitch-reader", choice, "--json"]))
        assert len(heads) == (name == "h")                                  # the head reads only without the reader
    read, head = (pretty_midi.PrettyMIDI(str(out / f"{n}.mid")).instruments[0].notes for n in "ph")
    assert {n.pitch for n in read} == {66} and {n.pitch for n in head} == {60}
    assert [round(n.start / 0.12) for n in read] == list(range(15)) and len(head) >= 15   # MIDI ticks round a little
    result = _run([files["png"], "-o", out / "x.mid", "--model", model, "--pitch-reader", out / "missing"])
    _one_error_line(result, 2, "missing")
    config = json.loads((reader / "config.json").read_text())
    config["classes"] = [["C4", 0], ["D4", 0]]                              # another vocabulary's pitch names
    (reader / "config.json").write_text(json.dumps(config))
    result = _run([files["png"], "-o", out / "y.mid", "--model", model, "--pitch-reader", reader])
    _one_error_line(result, 2, "classes")
    assert not (out / "y.mid").exists()


def test_a_notated_pitch_readers_bar_lines_are_no_notes_and_no_omr_pitches(files, tmp_path_factory, one_torch_thread):
    """A notated reader's bar lines sound as nothing; OMR aligns only its pitch names."""
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-bar"), None)
    reader = pitch_reader_reading(tmp_path_factory.mktemp("pr-bar"), "F4", notated=True)   # F4, bar, F4, bar, ...
    key = key_reader_reading(tmp_path_factory.mktemp("bar-key"), 1)                         # G major
    out = tmp_path_factory.mktemp("bar-out")
    _json(_run([files["png"], "-o", out / "n.mid", "--model", model, "--key-reader", key, "--pitch-reader", reader,
                "--json"]))
    notes = pretty_midi.PrettyMIDI(str(out / "n.mid")).instruments[0].notes
    assert {n.pitch for n in notes} == {66} and [round(n.start / 0.12) for n in notes] == list(range(15))
    _json(_run([files["png"], "-o", out / "n.lmx", "--model", model, "--key-reader", "none", "--pitch-reader", reader,
                "--json"]))
    tokens = (out / "n.lmx").read_text().split("---")[-1].split()
    assert "bar" not in tokens and [t for t in tokens if t[0] in "ABCDEFG" and t[-1].isdigit()]


def test_a_rhythmic_reader_writes_omrs_notes_and_plays_its_pitches(files, tmp_path_factory, monkeypatch,
                                                                   one_torch_thread):
    """OMR with a rhythm reader writes the LMX of its reading (a quarter F4 a measure), opened by
    the decoded clefs and time signature; as a pitch reader, its image -> MIDI reading plays its
    notes at their notated onsets and values (not at their columns)."""
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-rh"), None)
    reader = pitch_reader_reading(tmp_path_factory.mktemp("pr-rh"), "F4", rhythmic=True)
    key = key_reader_reading(tmp_path_factory.mktemp("rh-key"), 1)                            # G major
    out = tmp_path_factory.mktemp("rh-out")
    _json(_run([files["png"], "-o", out / "n.mid", "--model", model, "--key-reader", key, "--pitch-reader", reader,
                "--json"]))
    notes = pretty_midi.PrettyMIDI(str(out / "n.mid")).instruments[0].notes   # a quarter a measure, at 0.5 s each
    assert {n.pitch for n in notes} == {66} and [(n.start, n.end) for n in notes] == [(k / 2, k / 2 + 0.5)
                                                                                     for k in range(15)]
    _decode_always(monkeypatch, "measure key:fifths:0 time beats:1 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
                                "E4 voice:1 half staff:1")
    _json(_run([files["png"], "-o", out / "n.lmx", "--model", model, "--key-reader", key, "--rhythm-reader", reader,
                "--json"]))
    tokens = (out / "n.lmx").read_text().split("---")[-1].split()
    measure = "measure F4 voice:1 quarter staff:1".split()
    assert tokens[:13] == ("measure key:fifths:1 time beats:1 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
                           "F4 voice:1 quarter staff:1").split()
    assert tokens[13:] == measure * 14 and "half" not in tokens
    notated = pitch_reader_reading(tmp_path_factory.mktemp("pr-not"), "F4", notated=True)
    result = _run([files["png"], "-o", out / "m.lmx", "--model", model, "--rhythm-reader", notated])
    assert result.exit_code == 2 and "reads no rhythm" in result.output and not (out / "m.lmx").exists()


def test_omr_fits_a_rhythm_readers_measures_to_the_time_signature(files, tmp_path_factory, monkeypatch,
                                                                   one_torch_thread):
    """A reader that reads a quarter a measure, a half its second choice, under a decoded 2/4:
    OMR writes halves (data.measure_fit); with --no-fit-measures the quarters as read."""
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-fit"), None)
    reader = pitch_reader_reading(tmp_path_factory.mktemp("pr-fit"), "F4", rhythmic=True, runner_up="half")
    out = tmp_path_factory.mktemp("fit-out")
    _decode_always(monkeypatch, "measure key:fifths:0 time beats:2 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
                                "E4 voice:1 half staff:1")
    for name, flags, value in (("fit", [], "half"), ("read", ["--no-fit-measures"], "quarter")):
        _json(_run([files["png"], "-o", out / f"{name}.lmx", "--model", model, "--key-reader", "none",
                    "--rhythm-reader", reader, "--json", *flags]))
        tokens = (out / f"{name}.lmx").read_text().split("---")[-1].split()
        measures = " ".join(tokens).split("measure ")[2:]
        assert len(measures) == 14 and set(measures) - {measures[-1]} == {f"F4 voice:1 {value} staff:1 "}


def _decode_always(monkeypatch, lmx: str) -> None:
    """OMR's decoder replaced by one that writes the LMX tokens ``lmx`` for every image."""
    from umust_cli.codecs.notation import NotationCodec
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.translate import direct

    names = NotationCodec().token_names()
    ids = default_vocabulary().to_global("notation", [names.index(t) for t in lmx.split()])
    monkeypatch.setattr(direct, "generate_from_memory", lambda model_, memory, *a, **k: [list(ids)] * memory.shape[0])


def test_omr_writes_the_key_signature_the_key_reader_reads(files, tmp_path_factory, monkeypatch, one_torch_thread):
    """The decoder's first key signature is replaced by the key reader's (else by the key head's)."""
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-key3"), 2)
    reader = key_reader_reading(tmp_path_factory.mktemp("reader3"), -3)
    _decode_always(monkeypatch, "measure key:fifths:0 time beats:3 beat-type:4 clef:G2 staff:1 C4 voice:1 quarter "
                                "staff:1")
    out = tmp_path_factory.mktemp("out3")
    for choice, want in ((reader, "key:fifths:-3"), ("none", "key:fifths:2")):
        dest = out / f"{want[-2:]}.lmx"
        _json(_run([files["png"], "-o", dest, "--model", model, "--key-reader", choice, "--json"]))
        tokens = dest.read_text().split("---")[-1].split()
        assert [t for t in tokens if t.startswith("key:")] == [want], tokens      # one system


def test_omr_takes_the_pitch_readers_pitches_where_they_align(files, tmp_path_factory, monkeypatch, one_torch_thread):
    """The decoded notes keep their rhythm; their pitch names come from the pitch reader where one
    is given, else from the CTC head."""
    model = _tiny_reader(tmp_path_factory.mktemp("tiny-pr2"), None)           # CTC head: C4
    reader = pitch_reader_reading(tmp_path_factory.mktemp("pr2"), "A4")
    _decode_always(monkeypatch, "measure key:fifths:0 time beats:3 beat-type:4 clef:G2 staff:1 E4 voice:1 half staff:1")
    out = tmp_path_factory.mktemp("out-pr2")
    for choice, want in ((reader, "A4"), ("none", "C4")):
        dest = out / f"{want}.lmx"
        _json(_run([files["png"], "-o", dest, "--model", model, "--key-reader", "none", "--pitch-reader", choice,
                    "--rhythm-reader", "none", "--json"]))
        tokens = dest.read_text().split("---")[-1].split()
        assert [t for t in tokens if t[0] in "ABCDEFG" and t[-1].isdigit()] == [want] and "half" in tokens


def test_omr_encodes_each_system_once_for_its_decoder_and_its_heads(files, tmp_path_factory, monkeypatch,
                                                                   one_torch_thread):
    """The decoder and the CTC and key heads read one encoding of each system (a page of two
    systems: two encodings, not four)."""
    from umust_cli.model.translator import Translator

    model = _tiny_reader(tmp_path_factory.mktemp("tiny-once"), 2)
    calls, encode = [], Translator.encode
    monkeypatch.setattr(Translator, "encode", lambda self, *a: calls.append(a[2:]) or encode(self, *a))
    out = tmp_path_factory.mktemp("once") / "page.lmx"
    result = _run([files["page"], "-o", out, "--model", model])
    assert result.exit_code == 0, result.output
    assert calls == [("image", "notation")] * 2 and out.read_text().split("---")[-1].split()


def test_the_ctc_reading_route_writes_midi_and_audio(files, tiny_ctc, tmp_path, one_torch_thread):
    from umust_cli.translate.engines import has_model

    assert has_model(str(tiny_ctc))("image", "midi") and not has_model(str(tiny_ctc))("image", "audio")
    mid, wav = tmp_path / "o" / "x.mid", tmp_path / "o" / "x.wav"
    (row,) = _json(_run([files["png"], "-o", mid, "--model", tiny_ctc, "--pitch-reader", "none", "--json"]))["done"]
    assert row["route"] == "direct" and row["stages"] == ["image", "midi"]
    notes = pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes
    # one C4 per image column (the bias repeats it, the blank frame between separates them)
    assert len(notes) > 3 and {n.pitch for n in notes} == {60}
    assert all(b.start > a.start for a, b in zip(notes, notes[1:]))
    (row,) = _json(_run([files["png"], "-o", wav, "--model", tiny_ctc, "--pitch-reader", "none", "--json"]))["done"]
    assert row["stages"] == ["image", "midi", "audio"] and row["engines"] == ["umust", "fluidsynth"]
    audio, sr = soundfile.read(str(wav))
    assert sr == SR and len(audio) / sr > notes[-1].start and np.abs(audio).max() > 0.01


def test_transcription_reads_the_roll_head_window_by_window(files, tmp_path, one_torch_thread):
    from umust_cli.data.roll import FRAME_SECONDS

    model = tiny_roll_model(tmp_path / "roll")
    mid = tmp_path / "o" / "x.mid"
    (row,) = _json(_run([files["wav"], "-o", mid, "--model", model, "--json"]))["done"]
    assert row["route"] == "direct" and row["stages"] == ["audio", "midi"]
    notes = pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes
    window = TINY_AUDIO_STEPS * FRAME_SECONDS
    duration = soundfile.info(str(files["wav"])).duration
    assert {n.pitch for n in notes} == {60} and len(notes) == math.ceil(duration / window - 1e-6)
    assert [n.start for n in notes] == pytest.approx([k * window for k in range(len(notes))], abs=1e-3)
    assert notes[0].end == pytest.approx(window, abs=1e-3)                   # held to the window's end


def test_no_roll_reading_decodes_midi_tokens_instead(files, tmp_path, monkeypatch, one_torch_thread):
    from umust_cli.model import generate as generate_mod
    from umust_cli.translate import direct

    model, calls = tiny_roll_model(tmp_path / "roll"), []
    monkeypatch.setattr(direct, "roll_midi", lambda *a: calls.append("roll"))
    decode = generate_mod.generate_from_memory
    monkeypatch.setattr(direct, "generate_from_memory", lambda m, *a, **k: calls.append("decode") or decode(m, *a, **k))
    _run([files["wav"], "-o", tmp_path / "o" / "decoded.mid", "--model", model, "--no-roll-reading"])
    assert calls and set(calls) == {"decode"}


def _bad_inputs(d: Path) -> dict[str, Path]:
    blobs = np.full((100, 200), 255, np.uint8)                      # ink, but no staff lines
    for x in range(10, 190, 30):
        blobs[30:60, x:x + 15] = 0
    soundfile.write(str(d / "silent.wav"), np.zeros(SR, np.float32), SR)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (d / "corrupt.mid").write_bytes(b"not a midi file")
    return {"nostaff": _save_png(d / "blobs.png", blobs), "silent": d / "silent.wav",
            "corrupt": d / "corrupt.wav", "corruptmid": d / "corrupt.mid"}


@pytest.mark.parametrize("bad, suffix, words", [
    ("nostaff", ".wav", ("no staff",)), ("silent", ".mid", ("silent",)), ("corrupt", ".mid", ("corrupt.wav",)),
    ("corruptmid", ".wav", ("MIDI",)),
])
def test_bad_inputs_are_one_line_and_leave_no_file(tiny, tmp_path, bad, suffix, words):
    src = _bad_inputs(tmp_path)[bad]
    out = tmp_path / "out" / f"x{suffix}"
    _one_error_line(_run([src, "-o", out, "--model", tiny, "--device", "cpu"]), 2, *words)
    _no_files(out.parent)


def test_a_checkpoint_of_another_vocabulary_is_refused(files, tmp_path):
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.codecs.vocab import Vocabulary
    from umust_cli.model.translator import MODEL_KIND, Translator, make_config

    other = Vocabulary(notation=tuple(f"n{i}" for i in range(40)), midi=tuple(f"m{i}" for i in range(60)))
    cfg = make_config("tiny", other)
    torch.manual_seed(0)
    save_model(tmp_path / "other", Translator(cfg).state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, other)
    result = _run([files["mid"], "-o", tmp_path / "out" / "x.wav", "--model", tmp_path / "other", "--device", "cpu"])
    _one_error_line(result, 2, "another vocabulary")
    _no_files(tmp_path / "out")


def test_colliding_outputs_are_refused_before_starting(files, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        _midi(tmp_path / sub / "same.mid")
    result = _run([tmp_path / "a" / "same.mid", tmp_path / "b" / "same.mid", "-o", tmp_path / "out", "--task", "m2a"])
    _one_error_line(result, 2, "same output")
    _no_files(tmp_path / "out")


def test_a_batch_keeps_going_past_a_bad_file(files, tmp_path):
    bad = _bad_inputs(tmp_path)["corruptmid"]
    result = _run([files["mid"], bad, "-o", tmp_path / "out", "--task", "m2a", "--json"])
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert [Path(r["output"]).name for r in report["done"]] == ["notes.wav"]
    assert [Path(r["input"]).name for r in report["failed"]] == ["corrupt.mid"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.wav"]


def test_image_and_audio_codes_are_sampled_unless_a_temperature_is_given():
    from umust_cli.translate.engines import CODE_TEMPERATURE, Engines, RunConfig

    default, greedy = Engines(RunConfig(beam_size=3)), Engines(RunConfig(temperature=0.0))
    assert CODE_TEMPERATURE > 0
    for target in ("image", "audio"):
        assert default.decoding(target).temperature == CODE_TEMPERATURE and default.decoding(target).beam_size == 1
        assert greedy.decoding(target).temperature == 0.0
    for target in ("notation", "midi"):
        assert default.decoding(target).temperature == 0.0 and default.decoding(target).beam_size == 3
    assert Engines(RunConfig(temperature=0.7)).decoding("notation").temperature == 0.7
