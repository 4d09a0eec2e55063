"""`umust eval` through typer's CliRunner: exit codes, --json, --csv, --out."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from umust_cli.cli.main import app

runner = CliRunner()

REF = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 C4 quarter 3in2 G4 quarter"


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_midi(path: Path, notes: list[tuple[float, float, int]]) -> Path:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for s, e, p in notes]
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


SCALE = [(0.5 + 0.4 * i, 0.8 + 0.4 * i, 60 + i) for i in range(8)]


def test_eval_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("omr", "amt", "m2a", "i2a", "emd", "retrieval", "fad"):
        assert cmd in result.output


def test_omr_json_pairs_by_stem(tmp_path):
    refs = [write(tmp_path / "ref" / "a.lmx", REF), write(tmp_path / "ref" / "b.lmx", REF)]
    pred_a = write(tmp_path / "pred" / "a.lmx", REF.replace("C4", "D4"))  # 1 substitution
    pred_b = write(tmp_path / "pred" / "b.lmx", REF.replace(" 3in2", ""))  # 1 deletion, a tuplet token
    # references listed in the other order: they are paired by file stem
    result = invoke("omr", str(pred_a), str(pred_b), "--ref", str(refs[1]), "--ref", str(refs[0]), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "omr"
    assert [r["name"] for r in data["rows"]] == ["a", "b"]
    assert [Path(r["ref"]).stem for r in data["rows"]] == ["a", "b"]
    assert data["summary"]["SER"] == pytest.approx(2 / 22)
    assert data["summary"]["SER_no_tuplets"] == pytest.approx(1 / 20)
    assert data["rows"][1]["SER_no_tuplets"] == 0.0
    assert data["summary"]["staff_pitch_error_rate"] == pytest.approx(1 / 4)     # C4 -> D4 of 2 + 2 pitches
    assert [r["pitch_error_rate"] for r in data["rows"]] == [0.5, 0.0]
    assert data["summary"]["key_accuracy"] == 1.0 and data["rows"][0]["key_right"] is True
    # a wrong key signature is one substitution and a key read wrong; a reference without one is not counted
    write(tmp_path / "pred" / "a.lmx", REF.replace("key:fifths:0", "key:fifths:-2"))
    write(tmp_path / "ref" / "b.lmx", REF.replace("key:fifths:0 ", ""))
    data = json.loads(invoke("omr", str(pred_a), str(pred_b), "--ref", str(refs[0]), "--ref",
                             str(refs[1]), "--json").stdout)
    assert [r["key_right"] for r in data["rows"]] == [False, None] and data["summary"]["key_accuracy"] == 0.0


def test_omr_ref_dir_table_and_out(tmp_path):
    write(tmp_path / "ref" / "a.lmx", REF)
    pred = write(tmp_path / "pred" / "a.lmx", REF)
    out = tmp_path / "out"
    result = invoke("omr", str(pred), "--ref-dir", str(tmp_path / "ref"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "SER" in result.output and "over the set" in result.output
    rows = list(csv.DictReader(io.StringIO((out / "rows.csv").read_text())))
    assert rows[0]["name"] == "a" and float(rows[0]["SER"]) == 0.0
    assert json.loads((out / "summary.json").read_text())["summary"]["SER"] == 0.0
    assert json.loads((out / "rows.json").read_text())[0]["edits"] == 0


def test_omr_bad_inputs_exit_2(tmp_path):
    pred = write(tmp_path / "a.lmx", REF)
    assert invoke("omr", str(pred)).exit_code == 2  # no reference
    assert invoke("omr", str(pred), "--ref", str(tmp_path / "missing.lmx")).exit_code == 2
    empty = write(tmp_path / "empty.lmx", "")
    assert invoke("omr", str(pred), "--ref", str(empty)).exit_code == 2
    other = write(tmp_path / "b.lmx", REF)
    result = invoke("omr", str(pred), str(other), "--ref", str(pred))
    assert result.exit_code == 2 and "2 predictions but 1 references" in result.output
    assert invoke("omr", str(pred), "--ref-dir", str(tmp_path / "nowhere")).exit_code == 2


def test_amt_identical_and_shifted(tmp_path):
    ref = write_midi(tmp_path / "ref" / "x.mid", SCALE)
    same = write_midi(tmp_path / "est" / "x.mid", SCALE)
    late = write_midi(tmp_path / "late" / "x.mid", [(s + 0.03, e + 0.03, p) for s, e, p in SCALE])
    result = invoke("amt", str(same), "--ref", str(ref), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["onset_F1"] == 1.0 and summary["onoff_F1"] == 1.0
    strict = invoke("amt", str(late), "--ref", str(ref), "--onset-tolerance-ms", "20", "--json")
    assert json.loads(strict.stdout)["summary"]["onset_F1"] == 0.0
    loose = invoke("amt", str(late), "--ref", str(ref), "--csv")
    assert loose.exit_code == 0
    row = next(csv.DictReader(io.StringIO(loose.stdout)))
    assert float(row["onset_F1"]) == 1.0 and int(row["n_ref"]) == 8


def test_amt_dtw_forgives_timing_but_not_pitches(tmp_path):
    ref = write_midi(tmp_path / "ref" / "x.mid", [(i * 0.8, i * 0.8 + 0.7, 60 + 2 * i) for i in range(6)])
    # the same notes at a third of the pace, and a copy with its last two notes a semitone off
    fast = write_midi(tmp_path / "fast" / "x.mid", [(i * 0.25, i * 0.25 + 0.2, 60 + 2 * i) for i in range(6)])
    wrong = write_midi(tmp_path / "wrong" / "x.mid",
                       [(i * 0.25, i * 0.25 + 0.2, 60 + 2 * i + (i >= 4)) for i in range(6)])
    raw = json.loads(invoke("amt", str(fast), "--ref", str(ref), "--json").stdout)["summary"]
    assert raw["onset_F1"] == pytest.approx(1 / 6)                        # only the first onset agrees
    warped = json.loads(invoke("amt", str(fast), "--ref", str(ref), "--dtw", "--json").stdout)
    assert warped["summary"]["onset_F1"] == 1.0 and "dtw" in warped["definitions"]
    off = json.loads(invoke("amt", str(wrong), "--ref", str(ref), "--dtw", "--json").stdout)["summary"]
    assert off["onset_F1"] == pytest.approx(4 / 6)


def test_amt_unreadable_midi_exits_2(tmp_path):
    bad = write(tmp_path / "bad.mid", "not midi")
    ref = write_midi(tmp_path / "ref.mid", SCALE)
    result = invoke("amt", str(bad), "--ref", str(ref))
    assert result.exit_code == 2 and "cannot read MIDI" in result.output


def test_emd_json(tmp_path):
    ref = write(tmp_path / "r.lmx", "measure C4 quarter D4 quarter")
    pred = write(tmp_path / "p.lmx", "measure D4 half E4 half")
    result = invoke("emd", str(pred), "--ref", str(ref), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["rows"][0]
    assert row["pitch_EMD"] == pytest.approx(1.0) and row["duration_EMD"] == 0.0


def test_retrieval_both_directions(tmp_path):
    d = np.array([[0.1, 0.5, 0.9], [0.2, 0.3, 0.1], [0.5, 0.4, 0.6]])
    np.save(tmp_path / "d.npy", d)
    result = invoke("retrieval", str(tmp_path / "d.npy"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["A2S_R@1"] == pytest.approx(1 / 3)
    assert data["summary"]["S2A_R@1"] == pytest.approx(2 / 3)
    assert data["summary"]["A2S_MR"] == 3.0 and data["summary"]["S2A_MR"] == 1.0
    assert [r["audio_to_sheet_rank"] for r in data["rows"]] == [1, 3, 3]
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    assert invoke("retrieval", str(tmp_path / "bad.npy")).exit_code == 2
    write(tmp_path / "text.npy", "no")
    assert invoke("retrieval", str(tmp_path / "text.npy")).exit_code == 2


def test_fad_with_precomputed_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 4))
    for i, chunk in enumerate(np.split(base, 3)):
        (tmp_path / "ref").mkdir(exist_ok=True)
        (tmp_path / "gen").mkdir(exist_ok=True)
        np.save(tmp_path / "ref" / f"{i}.npy", chunk)
        np.save(tmp_path / "gen" / f"{i}.npy", chunk + np.array([1.0, 0.0, 2.0, 0.0]))
    result = invoke("fad", str(tmp_path / "gen"), str(tmp_path / "ref"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["backend"] == "npy" and summary["n_gen"] == 300 and summary["dim"] == 4
    assert summary["FAD"] == pytest.approx(5.0, rel=1e-6)
    assert invoke("fad", str(tmp_path / "gen"), str(tmp_path / "nowhere")).exit_code == 2


@pytest.mark.slow
def test_fad_with_aisfx_audio_embeddings(tmp_path):
    pytest.importorskip("aisfx", reason="aisfx (pip install --no-deps aisfx==0.1.2) is not installed")
    import soundfile as sf

    sr = 44100
    t = np.arange(int(3 * sr)) / sr
    for folder, freqs in (("a", (220, 330)), ("b", (220, 330)), ("c", (1760, 2640))):
        (tmp_path / folder).mkdir()
        for f in freqs:
            sf.write(tmp_path / folder / f"{f}.wav", 0.3 * np.sin(2 * np.pi * f * t), sr)
    same = invoke("fad", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert same.exit_code == 0, same.output
    summary = json.loads(same.stdout)["summary"]
    assert summary["backend"] == "aisfx" and summary["dim"] == 512 and abs(summary["FAD"]) < 1e-6
    far = json.loads(invoke("fad", str(tmp_path / "a"), str(tmp_path / "c"), "--json").stdout)["summary"]
    assert far["FAD"] > 1.0


def fake_transcribe(path, cfg=None):
    """Stands in for Transkun: the 'transcription' of x.wav is the MIDI file x.mid beside it."""
    import pretty_midi

    return pretty_midi.PrettyMIDI(str(Path(path).with_suffix(".mid")))


def test_i2a_dtw_plot_with_a_stand_in_transcriber(tmp_path, monkeypatch):
    from umust_cli.eval import transcribe

    monkeypatch.setattr(transcribe, "transcribe", fake_transcribe)
    ref_notes = [(0.3 + 0.25 * i, 0.5 + 0.25 * i, 55 + (7 * i) % 24) for i in range(40)]
    write_midi(tmp_path / "ref" / "p.mid", ref_notes)
    write_midi(tmp_path / "gen" / "p.mid", [(s * 1.25, e * 1.25, p) for s, e, p in ref_notes])
    for d in ("ref", "gen"):
        write(tmp_path / d / "p.wav", "")  # only its name is used by the stand-in
    result = invoke("i2a", str(tmp_path / "gen" / "p.wav"), "--ref-dir", str(tmp_path / "ref"),
                    "--dtw", "--plot", str(tmp_path / "plots"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    s = data["summary"]
    assert s["onset_50ms_F1"] < 0.2
    assert s["dtw_onset_50ms_F1"] == 1.0 and s["dtw_onset_200ms_F1"] == 1.0
    assert (tmp_path / "plots" / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert data["rows"][0]["plot"].endswith("p.png")


def test_m2a_with_a_stand_in_transcriber(tmp_path, monkeypatch):
    from umust_cli.eval import transcribe

    monkeypatch.setattr(transcribe, "transcribe", fake_transcribe)
    write_midi(tmp_path / "gen" / "q.mid", [(s + 0.07, e, p) for s, e, p in SCALE])
    write(tmp_path / "gen" / "q.wav", "")
    cond = write_midi(tmp_path / "cond" / "q.mid", SCALE)
    result = invoke("m2a", str(tmp_path / "gen" / "q.wav"), "--ref", str(cond), "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)["summary"]
    assert (s["onset_50ms_F1"], s["onset_100ms_F1"], s["onset_200ms_F1"]) == (0.0, 1.0, 1.0)


def test_i2a_plot_needs_dtw(tmp_path):
    wav = write(tmp_path / "a.wav", "")
    result = invoke("i2a", str(wav), "--ref", str(wav), "--plot", str(tmp_path))
    assert result.exit_code == 2 and "--plot needs --dtw" in result.output


def test_unreadable_audio_exits_2(tmp_path):
    from umust_cli.eval.transcribe import load_audio
    from umust_cli.errors import AudioError

    bad = write(tmp_path / "bad.wav", "not audio")
    with pytest.raises(AudioError):
        load_audio(bad)
    midi = write_midi(tmp_path / "c.mid", SCALE)
    result = invoke("m2a", str(bad), "--ref", str(midi))
    assert result.exit_code == 2 and "cannot read audio" in result.output


def test_i2a_wrong_system_floor_scores_each_reference_against_another(tmp_path, monkeypatch):
    from umust_cli.eval import transcribe
    from umust_cli.eval.tasks import wrong_system_partners

    monkeypatch.setattr(transcribe, "transcribe", fake_transcribe)
    a = [(0.2 + 0.5 * i, 0.6 + 0.5 * i, 60 + i) for i in range(8)]
    b = [(s, e, p + 10) for s, e, p in a]  # the same rhythm, pitches a does not have: nothing matches
    for name, notes in (("a", a), ("b", b)):
        write_midi(tmp_path / "ref" / f"{name}.mid", notes)
        write_midi(tmp_path / "gen" / f"{name}.mid", notes)
        for d in ("ref", "gen"):
            write(tmp_path / d / f"{name}.wav", "")
    gens = [str(tmp_path / "gen" / f"{n}.wav") for n in ("a", "b")]
    result = invoke("i2a", *gens, "--ref-dir", str(tmp_path / "ref"), "--dtw", "--floor", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    s = data["summary"]
    assert s["dtw_onset_50ms_F1"] == 1.0 and s["floor_files"] == 2
    assert s["floor_onset_200ms_F1"] == 0.0 and s["floor_dtw_onset_200ms_F1"] == 0.0
    assert {r["name"]: Path(r["floor_partner"]).name for r in data["rows"]} == {"a": "b.wav", "b": "a.wav"}
    assert wrong_system_partners(["x", "y", "z"]) == {"x": "y", "y": "z", "z": "x"} and not wrong_system_partners(["x"])


def test_neighbour_system_is_the_next_system_of_the_piece_else_the_previous(tmp_path):
    from umust_cli.eval.tasks import neighbour_system

    systems = tmp_path / "pieces" / "p" / "systems"
    systems.mkdir(parents=True)
    for n in (0, 1, 2):
        write(systems / f"{n:03d}.wav", "")
    assert neighbour_system(systems / "000.wav") == systems / "001.wav"
    assert neighbour_system(systems / "002.wav") == systems / "001.wav"
    write(tmp_path / "q.wav", "")
    assert neighbour_system(tmp_path / "q.wav") is None
