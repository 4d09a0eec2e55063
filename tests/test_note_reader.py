"""The note reader: its front end, shapes, chunked reading, training and its translate routes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data.roll import note_roll, roll_notes
from umust_cli.model import note_reader as nr
from umust_cli.model.note_reader import NoteReader, NoteReaderConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = NoteReaderConfig(channels=2, hidden=8, layers=1, mels=32, n_fft=512, hop=160, fmax=4000.0)
RATE = 16000


def _tones(notes: list[tuple[int, float, float]], seconds: float, rate: int = RATE) -> np.ndarray:
    """Decaying sines of (pitch, start, end) notes."""
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t)
    for pitch, start, end in notes:
        on = (t >= start) & (t < end)
        hz = 440.0 * 2 ** ((pitch - 69) / 12)
        x[on] += 0.3 * np.sin(2 * np.pi * hz * (t[on] - start)) * np.exp(-3 * (t[on] - start))
    return x.astype(np.float32)


def test_log_mel_puts_a_tone_in_the_band_of_its_frequency():
    import librosa

    model = NoteReader(NoteReaderConfig())
    mel = model.front(torch.from_numpy(_tones([(69, 0.0, 1.0)], 1.0))[None])[0]        # (T, 229)
    assert mel.shape == (1.0 * RATE // 320 + 1, 229)
    centres = librosa.mel_frequencies(229 + 2, fmin=30.0, fmax=8000.0)[1:-1]
    assert abs(centres[int(mel[10].argmax())] - 440.0) < 25.0


def test_shapes_and_chunked_reading_equal_one_pass(monkeypatch):
    torch.manual_seed(0)
    model = NoteReader(TINY).eval()
    x = _tones([(60, 0.1, 0.6), (67, 0.8, 1.5)], 2.0)
    onset, frame = model(model.front(torch.from_numpy(x)[None]))
    assert onset.shape == frame.shape == (1, 2 * RATE // 160 + 1, 88)
    whole = model.probabilities(x)
    monkeypatch.setattr(nr, "CHUNK_SECONDS", 0.37)          # many chunks, each seeing all the audio around
    monkeypatch.setattr(nr, "CONTEXT_SECONDS", 5.0)
    chunked = model.probabilities(x)
    assert whole[0].shape == (onset.shape[1], 88) and np.allclose(whole[0], chunked[0], atol=1e-5)
    assert np.allclose(whole[1], chunked[1], atol=1e-5)
    assert np.allclose(whole[0], torch.sigmoid(onset[0]).detach().numpy(), atol=1e-5)


def test_rolls_at_the_readers_frame_rate_read_back_their_notes():
    notes = [pretty_midi.Note(80, 60, 0.10, 0.50), pretty_midi.Note(80, 64, 0.30, 0.42),
             pretty_midi.Note(80, 60, 0.70, 0.9)]
    roll = note_roll(notes, 60, 0.02).astype(np.float32)
    back = roll_notes(roll[:, 0], roll[:, 1], frame_seconds=0.02)
    assert [(n.pitch, round(n.start, 3), round(n.end, 3)) for n in back] == [
        (60, 0.1, 0.5), (64, 0.3, 0.42), (60, 0.7, 0.9)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import soundfile as sf

    root, rows = tmp_path_factory.mktemp("notes"), []
    for piece, split, pitches in (("a", "train", (60, 64)), ("b", "train", (62, 67)), ("c", "valid", (60, 67))):
        for system in range(2):
            stem = f"pieces/{piece}/systems/{system:03d}"
            (root / stem).parent.mkdir(parents=True, exist_ok=True)
            notes = [(p, 0.25 + 0.5 * i, 0.6 + 0.5 * i) for i, p in enumerate(pitches * 3)]
            sf.write(root / f"{stem}.wav", _tones(notes, 3.5), RATE)
            pm, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(0)
            piano.notes.extend(pretty_midi.Note(80, p, a, b) for p, a, b in notes)
            pm.instruments.append(piano)
            pm.write(str(root / f"{stem}.mid"))
            rows.append({"piece_id": piece, "system": system, "split": split, "source": "music21:bach/x",
                         "wav": f"{stem}.wav", "mid": f"{stem}.mid"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _train(corpus: Path, out: Path, steps: int):
    base = ["train", "note-reader", "--data", str(corpus), "-o", str(out), "--channels", "2", "--hidden", "8",
            "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "2", "--decay-steps", "60", "--eval-every", "20",
            "--crop-seconds", "2", "--precision", "fp32", "--device", "cpu", "--json", "--max-steps", str(steps)]
    return CliRunner().invoke(app, base)


def test_train_note_reader_learns_scores_valid_keeps_the_best_and_resumes(corpus, tmp_path):
    from umust_cli.checkpoint import read_config
    from umust_cli.train.engine import read_log

    out = tmp_path / "run"
    first = _train(corpus, out, 20)
    assert first.exit_code == 0, first.output
    second = _train(corpus, out, 40)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["start_step"] == 20 and summary["step"] == 40
    assert set(summary["eval"]) == {"onset_precision", "onset_recall", "onset_f1"}
    assert 0.0 <= summary["eval"]["onset_f1"] <= 1.0
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])          # it learns the rolls, not nothing
    assert read_config(out)["kind"] == "umust-note-reader" and (out / "best" / "model.safetensors").is_file()


def test_translate_transcribes_with_the_note_reader_and_says_so(corpus, tmp_path):
    out = tmp_path / "run"
    assert _train(corpus, out, 5).exit_code == 0
    wav, mid = corpus / "pieces/c/systems/000.wav", tmp_path / "c.mid"
    run = CliRunner().invoke(app, ["translate", str(wav), "-o", str(mid), "--transcriber", "note-reader",
                                   "--note-reader", str(out), "--device", "cpu", "--json"])
    assert run.exit_code == 0, run.output
    done = json.loads(run.stdout)["done"][0]
    assert done["engines"] == ["note-reader"] and done["route"] == "direct" and mid.is_file()
    pred = tmp_path / "pred"
    split = CliRunner().invoke(app, ["translate", "--data", str(corpus), "--split", "valid", "--task", "a2m",
                                     "--transcriber", "note-reader", "--note-reader", str(out), "-o", str(pred),
                                     "--device", "cpu", "--json"])
    assert split.exit_code == 0, split.output
    assert json.loads(split.stdout)["systems"] == 2
    assert sorted(p.relative_to(pred).as_posix() for p in pred.rglob("*.mid")) == ["c/000.mid", "c/001.mid"]


def test_translate_with_another_kind_of_checkpoint_fails_in_one_line(corpus, tmp_path):
    from umust_cli import registry

    run = CliRunner().invoke(app, ["translate", str(corpus / "pieces/c/systems/000.wav"), "-o", str(tmp_path / "x.mid"),
                                   "--transcriber", "note-reader", "--note-reader",
                                   str(registry.resolve("key-reader", None)), "--device", "cpu"])
    assert run.exit_code in (1, 2) and "umust-note-reader" in run.output and not (tmp_path / "x.mid").exists()


def test_corpus_audio_to_notation_writes_lmx_of_each_system(corpus, tmp_path):
    out, pred = tmp_path / "run", tmp_path / "pred"
    assert _train(corpus, out, 5).exit_code == 0
    run = CliRunner().invoke(app, ["translate", "--data", str(corpus), "--split", "valid", "--task", "a2n",
                                   "--transcriber", "note-reader", "--note-reader", str(out), "-o", str(pred),
                                   "--tempo", "120", "--device", "cpu", "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["systems"] == 2 and "note-reader" in summary["route"] and "quantize" in summary["route"]
    assert sorted(p.relative_to(pred).as_posix() for p in pred.rglob("*.lmx")) == ["c/000.lmx", "c/001.lmx"]


def test_background_note_reader_starts_resumes_with_its_saved_options_and_promotes(corpus, tmp_path):
    """`umust train background note-reader`: a fresh run (an architecture option given), resumed
    by a second start that names none of its saved options, scored and promoted by onset F1."""
    from umust_cli.checkpoint import read_config
    from umust_cli.train import background

    run, runner = tmp_path / "nr", CliRunner()
    tiny = ["--channels", "2", "--hidden", "8", "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "2",
            "--decay-steps", "60", "--crop-seconds", "2", "--precision", "fp32", "--device", "cpu"]
    for extras in ([*tiny, "--eval-every", "10", "--max-steps", "10"], ["--eval-every", "10", "--max-steps", "20"]):
        started = runner.invoke(app, ["train", "background", "note-reader", str(run), "--data", str(corpus),
                                      "--budget-minutes", "5", "--threads", "1", "--json", "--", *extras])
        assert started.exit_code == 0, started.output
        deadline = time.monotonic() + 300
        while background.running_pid(run) is not None:
            assert time.monotonic() < deadline, (run / background.LOG).read_text()
            time.sleep(0.5)
    first, second = background.sessions(run)
    assert (first["action"], first["init"], second["action"], second["start_step"]) == ("fresh", None, "resume", 10)
    assert second["argv"][:5] == ["train", "note-reader", "--data", str(corpus), "-o"]
    assert {"--channels", "--hidden", "--crop-seconds"} <= set(second["argv"])     # its saved options, given back
    config = read_config(run)
    assert config["step"] == 20 and config["model"]["channels"] == 2 and config["train"]["crop_seconds"] == 2.0
    status = json.loads(runner.invoke(app, ["train", "status", str(run), "--json"]).stdout)
    assert status["sessions"] == 2 and status["best"]["metric"] == "onset_f1"
    assert [e["step"] for e in status["evals"]] == [10, 20]
    dest = tmp_path / "shipped"
    promoted = runner.invoke(app, ["train", "promote", str(run), "--to", str(dest), "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout)["metric"] == "onset_f1"
    card = (dest / "MODEL_CARD.md").read_text()
    assert read_config(dest)["kind"] == "umust-note-reader" and "train background note-reader" in card
    assert "codebook" not in card
    again = runner.invoke(app, ["train", "promote", str(run), "--to", str(dest)])   # not better than itself
    assert again.exit_code == 2 and "not promoted" in again.output
