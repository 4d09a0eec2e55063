"""The piano-roll head of transcription: rolls from MIDI notes at the codec's frame rate, notes
read back from rolls, targets aligned with the audio source steps, a head that learns them, and
`train translator --roll` that trains and scores it."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import torch

from umust_cli.codecs.vocab import default_vocabulary
from umust_cli.data.roll import FRAME_SECONDS, RollTargets, note_roll, roll_notes
from umust_cli.errors import CheckpointError
from umust_cli.model.generate import batch_steps, step_positions, to_steps
from umust_cli.model.translator import ROLL_LOW, ROLL_PITCHES, Translator, make_config

NOTES = [pretty_midi.Note(80, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.0, 0.25),
         pretty_midi.Note(80, 60, 0.5, 0.6), pretty_midi.Note(70, 108, 1.0, 1.5),
         pretty_midi.Note(70, 20, 0.2, 0.4),          # below the piano: left out
         pretty_midi.Note(70, 67, 5.0, 5.5)]          # after the last frame: left out


def test_note_roll_marks_onsets_and_sounding_frames():
    roll = note_roll(NOTES, 100)
    assert roll.shape == (100, 2, ROLL_PITCHES) and roll.dtype == np.uint8
    c4, e4 = 60 - ROLL_LOW, 64 - ROLL_LOW
    assert roll[0, 0, c4] == 1 and roll[0, 0, e4] == 1
    second = round(0.5 / FRAME_SECONDS)                      # frame 43
    assert roll[second, 0, c4] == 1 and roll[1:second, 0, c4].sum() == 0
    assert roll[:second, 1, c4].all() and roll[: round(0.25 / FRAME_SECONDS), 1, e4].all()
    assert roll[round(0.25 / FRAME_SECONDS):, 1, e4].sum() == 0
    assert roll[86, 0, 108 - ROLL_LOW] == 1                  # 1.0 s: frame 86
    assert roll[:, 0].sum() == 4                             # A0..C8 only, inside the frames


def test_roll_notes_read_a_roll_back_to_its_notes():
    roll = note_roll(NOTES, 200).astype(float)
    read = roll_notes(roll[:, 0], roll[:, 1], start=2.0)
    kept = sorted((n.pitch, round(n.start / FRAME_SECONDS)) for n in NOTES[:4])
    assert sorted((n.pitch, round((n.start - 2.0) / FRAME_SECONDS)) for n in read) == kept
    c4 = [n for n in read if n.pitch == 60]
    # the first C4 ends where the second starts (its sounding frames run on into it)
    assert c4[0].end == pytest.approx(c4[1].start) and c4[1].end - c4[1].start == pytest.approx(
        round(0.6 / FRAME_SECONDS) * FRAME_SECONDS - c4[1].start + 2.0)
    # a peak below the threshold, or one held over two frames, is one note or none
    probs = np.zeros((10, ROLL_PITCHES))
    probs[3:5, 5] = 0.9
    probs[7, 6] = 0.3
    assert [(n.pitch, round(n.start / FRAME_SECONDS)) for n in roll_notes(probs, probs)] == [(ROLL_LOW + 5, 3)]


def _audio_batch(cfg, lengths):
    vocab = default_vocabulary()
    rng = np.random.default_rng(0)
    seqs = [to_steps(vocab.wrap("audio", [int(c) + 1024 * (i % 4) for i, c in
                                         enumerate(rng.integers(0, 1024, 4 * n))]), "audio", cfg)
            for n in lengths]
    src = batch_steps(seqs)
    return src, step_positions(src, "audio")


def _midi_ids(vocab, notes, tmp):
    from umust_cli.codecs.midi import MidiCodec

    pm, piano = pretty_midi.PrettyMIDI(), pretty_midi.Instrument(0)
    piano.notes.extend(notes)
    pm.instruments.append(piano)
    pm.write(str(tmp))
    return vocab.wrap("midi", list(MidiCodec().encode(tmp).ids))


def test_roll_targets_follow_the_source_frames(tmp_path):
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, roll_head=True)
    src, _ = _audio_batch(cfg, [30, 12])
    a = _midi_ids(vocab, [pretty_midi.Note(80, 60, 0.0, 0.1), pretty_midi.Note(80, 62, 0.2, 0.3)], tmp_path / "a.mid")
    b = _midi_ids(vocab, [pretty_midi.Note(80, 70, 0.05, 0.5)], tmp_path / "b.mid")
    ids = torch.tensor([a, b + [0] * (len(a) - len(b))])
    out = RollTargets(vocab)(src, ids)
    assert out.shape == (2, 32, 2, ROLL_PITCHES)
    assert (out[0, 0] == -1).all() and (out[0, 31] == -1).all()            # [SOS] and [EOS]
    assert (out[1, 14:] == -1).all() and (out[1, 1:13] >= 0).all()          # [EOS] at 13, then [PAD]
    assert out[0, 1, 0, 60 - ROLL_LOW] == 1 and out[0, 1 + round(0.2 / FRAME_SECONDS), 0, 62 - ROLL_LOW] == 1
    assert out[1, 1 + round(0.05 / FRAME_SECONDS), 0, 70 - ROLL_LOW] == 1
    assert out[1, 1:13, 1, 70 - ROLL_LOW].sum() == 12 - round(0.05 / FRAME_SECONDS)   # held past the frames


def test_the_roll_head_learns_a_roll_and_a_model_without_one_refuses():
    vocab = default_vocabulary()
    with pytest.raises(CheckpointError, match="roll"):
        Translator(make_config("tiny", vocab)).roll_logits(torch.zeros(1, 3, 32))
    torch.manual_seed(0)
    model = Translator(make_config("tiny", vocab, roll_head=True))
    src, pos = _audio_batch(model.cfg, [20, 9])
    targets = torch.full((2, 22, 2, ROLL_PITCHES), -1.0)
    targets[0, 1:21] = torch.from_numpy(note_roll([pretty_midi.Note(80, 60, 0.0, 0.1)], 20)).float()
    targets[1, 1:10] = torch.from_numpy(note_roll([pretty_midi.Note(80, 72, 0.05, 0.1)], 9)).float()
    model.train()
    memory, _ = model.encode(src, pos, "audio", "midi")
    before = model.roll_loss(memory, targets)
    loss = model(src, pos, *_midi_target(model.cfg), "audio", "midi", roll=1.0, roll_targets=targets)
    plain = model(src, pos, *_midi_target(model.cfg), "audio", "midi")
    assert loss.item() > plain.item() - 1e-6 and before.item() > 1.0      # the term is added
    model.eval()
    memory = model.encode(src, pos, "audio", "midi")[0].detach()
    opt = torch.optim.Adam(model.roll.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        model.roll_loss(memory, targets).backward()
        opt.step()
    probs = model.roll_logits(memory).sigmoid().detach().numpy()
    read = roll_notes(probs[0, 1:21, 0], probs[0, 1:21, 1])
    assert [(n.pitch, round(n.start / FRAME_SECONDS)) for n in read] == [(60, 0)]


def _midi_target(cfg):
    vocab = default_vocabulary()
    steps = batch_steps([to_steps(vocab.wrap("midi", [3, 4, 5]), "midi", cfg)] * 2)
    return steps, step_positions(steps, "midi")


def test_train_translator_roll_trains_the_head_and_scores_its_reading(tmp_path):
    from test_translator_train import make_corpus
    from typer.testing import CliRunner

    from umust_cli.checkpoint import read_config
    from umust_cli.cli.main import app
    from umust_cli.train.engine import read_log

    corpus = make_corpus(tmp_path / "c", variants=False)
    result = CliRunner().invoke(app, ["train", "translator", "--data", str(corpus), "--preset", "tiny",
                                      "--direction", "a2i", "--tasks", "transcription", "--roll", "1.0",
                                      "--max-steps", "2", "--device", "cpu", "--json", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "r")
    assert config["train"]["roll"] == 1.0 and config["model"]["roll_head"] is True
    ev = [r["eval"] for r in read_log(tmp_path / "r") if "eval" in r][-1]
    assert 0.0 <= ev["roll_onset_F1"] <= 1.0 and ev["roll_systems"] > 0
