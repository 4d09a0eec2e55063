"""`umust eval` on a corpus split: pairing by system, missing and bad files, reference rows, retrieval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.eval.corpus import spread, split_rows, system_key
from umust_cli.eval.reference import ROWS, emd_reference, random_partners
from umust_cli.eval.runner import RunLog

runner = CliRunner()
SR = 44100
SCALE = [(0.1 + 0.2 * i, 0.3 + 0.2 * i, 60 + i) for i in range(5)]  # (start, end, pitch)
LMX = ["measure C4 quarter D4 quarter E4 half",
       "measure G5 eighth A5 eighth B5 16th",
       "measure C2 whole",
       "measure F3 half F3 half"]
# (piece, system, split, lmx index); the last test system's LMX is empty: a bad reference
SYSTEMS = [("alpha", 0, "test", 0), ("alpha", 1, "test", 1), ("beta", 0, "test", 2), ("beta", 1, "train", 3)]


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


def _midi(path: Path) -> None:
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for s, e, p in SCALE]
    pm.instruments.append(inst)
    pm.write(str(path))


def _image(k: int) -> np.ndarray:
    img = np.full((48, 160), 255, dtype=np.uint8)
    img[10:38:7, :] = 120
    img[6:42, 4::5 + 3 * k] = 0
    return img


def make_corpus(root: Path) -> Path:
    """A hand-made corpus: manifest rows and their png, wav, mid and lmx files."""
    rows = []
    for k, (piece, system, split, lmx) in enumerate(SYSTEMS):
        rel = f"pieces/{piece}/systems/{system:03d}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(SR) / SR
        sf.write(root / f"{rel}.wav", (0.3 * np.sin(2 * np.pi * 220 * 2 ** (k / 3) * t)).astype(np.float32), SR)
        _midi(root / f"{rel}.mid")
        (root / f"{rel}.lmx").write_text(LMX[lmx], encoding="utf-8")
        Image.fromarray(_image(k)).save(root / f"{rel}.png")
        rows.append({"piece_id": piece, "system": system, "split": split, "soundfont": "fluidr3",
                     "png": f"{rel}.png", "wav": f"{rel}.wav", "mid": f"{rel}.mid", "lmx": f"{rel}.lmx",
                     "scans": [], "start": 0.0, "end": 1.0, "duration": 1.0})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def predictions(corpus: Path, dest: Path, ext: str, keys: list[str]) -> Path:
    """Copies of the references as predictions named <piece_id>/<NNN>.<ext>."""
    for key in keys:
        piece, number = key.split("/")
        (dest / piece).mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / "pieces" / piece / "systems" / f"{number}{ext}", dest / piece / f"{number}{ext}")
    return dest


def test_split_rows_keys_and_limit_spread(corpus):
    rows = split_rows(corpus, "test")
    assert [system_key(r) for r in rows] == ["alpha/000", "alpha/001", "beta/000"]
    assert [r["system"] for r in spread(rows, 2)] == [0, 0]  # first and last, not the first two
    assert spread(list(range(10)), 3) == [0, 4, 9]
    assert spread(list(range(3)), None) == [0, 1, 2]


def test_omr_corpus_identical_missing_and_bad_reference(corpus, tmp_path):
    # alpha/000 predicted exactly, alpha/001 missing, beta/000 predicted but its reference LMX is empty
    preds = predictions(corpus, tmp_path / "p", ".lmx", ["alpha/000"])
    (preds / "beta").mkdir()
    (preds / "beta" / "000.lmx").write_text("measure C4 quarter", encoding="utf-8")
    (corpus / "pieces/beta/systems/000.lmx").write_text("", encoding="utf-8")
    try:
        result = invoke("omr", str(preds), "--data", str(corpus), "--split", "test", "--json")
    finally:
        (corpus / "pieces/beta/systems/000.lmx").write_text(LMX[2], encoding="utf-8")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["rows"]] == ["alpha/000"]
    assert data["summary"]["SER"] == 0.0 and data["summary"]["files"] == 1
    assert data["summary"]["missing"] == 1 and data["missing"] == ["alpha/001"]
    assert data["summary"]["failed"] == 1 and data["failed"][0]["name"] == "beta/000"
    assert "is empty (0 bytes)" in data["failed"][0]["error"]  # read through inputs.load_lmx


def test_omr_corpus_empty_output_scores_all_deletions(corpus, tmp_path):
    from umust_cli.codecs.notation import lmx_file_text

    preds = predictions(corpus, tmp_path / "p", ".lmx", ["alpha/000"])
    (preds / "alpha" / "001.lmx").write_text(lmx_file_text(""), encoding="utf-8")   # header, no tokens
    data = json.loads(invoke("omr", str(preds), "--data", str(corpus), "--json").stdout)
    ref_len = len((corpus / "pieces/alpha/systems/001.lmx").read_text().split())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["alpha/001"]["edits"] == ref_len and rows["alpha/001"]["SER"] == 1.0
    assert data["summary"]["empty_predictions"] == 1 and data["summary"]["files"] == 2
    assert data["summary"]["missing"] == 1                                     # beta/000
    assert 0 < data["summary"]["SER"] < 1
    single = invoke("omr", str(preds / "alpha" / "001.lmx"), "--ref", str(corpus / "pieces/alpha/systems/001.lmx"))
    assert single.exit_code == 2 and "has no tokens" in single.output         # an explicit file: bad input


def test_amt_and_emd_corpus_identical_predictions(corpus, tmp_path):
    keys = ["alpha/000", "alpha/001", "beta/000"]
    mids = predictions(corpus, tmp_path / "m", ".mid", keys)
    amt = json.loads(invoke("amt", str(mids), "--data", str(corpus), "--json").stdout)
    assert amt["summary"]["onset_F1"] == 1.0 and amt["summary"]["onoff_F1"] == 1.0
    assert amt["summary"]["files"] == 3 and amt["summary"]["missing"] == 0
    # what `train promote --scored` checks: the split, the selection, DTW and the tolerance
    assert (amt["summary"]["split"], amt["summary"]["limit"], amt["summary"]["dtw"]) == ("test", None, False)
    assert amt["summary"]["onset_tolerance_ms"] == 50.0
    lmxs = predictions(corpus, tmp_path / "l", ".lmx", keys)
    emd = json.loads(invoke("emd", str(lmxs), "--data", str(corpus), "--limit", "2", "--json").stdout)
    assert [r["name"] for r in emd["rows"]] == ["alpha/000", "beta/000"]
    assert emd["summary"]["mean_pitch_EMD"] == 0.0 and emd["summary"]["mean_duration_EMD"] == 0.0


def test_corpus_mode_input_errors(corpus, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("omr", str(tmp_path / "empty"), "--data", str(corpus))
    assert result.exit_code == 2 and "alpha/000.lmx" in result.output  # says which names it expects
    assert invoke("omr", str(tmp_path / "empty"), "--data", str(corpus), "--split", "dev").exit_code == 2
    assert invoke("omr", str(tmp_path / "empty"), "--data", str(tmp_path)).exit_code == 2  # not a corpus
    assert invoke("omr", str(tmp_path / "empty"), "--limit", "2", "--ref", "x").exit_code == 2


def test_random_pairing_is_a_derangement():
    for n in (2, 3, 10):
        partner = random_partners(n, seed=1)
        assert sorted(partner) == list(range(n)) and (partner != np.arange(n)).all()
    assert (random_partners(10, 1) == random_partners(10, 1)).all()


def test_emd_reference_random_positive_identical_zero(corpus):
    rows = split_rows(corpus, "test")
    emd = emd_reference(rows, seed=0, log=RunLog(keep_going=True))
    random, same = np.array(emd["emd_random"]), np.array(emd["emd_identical"])
    assert random.shape == same.shape == (3, 2)
    assert (same == 0).all() and np.nanmean(random[:, 0]) > 1.0


def stand_in_transcribe(audio, sr=None, cfg=None):
    """Stands in for Transkun: every clip 'sounds' like the scale of the corpus MIDI files."""
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for s, e, p in SCALE]
    pm.instruments.append(inst)
    return pm


@pytest.fixture
def tiny_audio_codec(tmp_path, vocab, one_torch_thread):
    """A freshly initialised (untrained) tiny audio codec checkpoint: tests the flow, not quality."""
    import torch

    from umust_cli.model.dac_codec import PRESETS
    from umust_cli.train.audio_codec import TrainConfig, build_parts, save_checkpoint

    torch.manual_seed(0)
    tiny = PRESETS["tiny"]
    cfg = TrainConfig(model=tiny.generator, discriminator=tiny.discriminator, batch_size=2, excerpt_seconds=0.05)
    save_checkpoint(tmp_path / "codec", build_parts(cfg, torch.device("cpu")), cfg, vocab, 0)
    return tmp_path / "codec"


def test_reference_rows_with_a_stand_in_transcriber(corpus, tmp_path, monkeypatch, tiny_audio_codec):
    from umust_cli.eval import transcribe

    monkeypatch.setattr(transcribe, "transcribe", stand_in_transcribe)
    out = tmp_path / "out"
    result = invoke("reference", "--data", str(corpus), "--split", "test", "--audio-codec", str(tiny_audio_codec),
                    "--no-fad", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    table = {r["row"]: r for r in data["rows"]}
    assert list(table) == list(ROWS)
    for row_id in ("fluidsynth", "fluidsynth_alt", "i2a", "dac", "dac_i2a"):
        assert table[row_id]["n"] == 3
        assert table[row_id]["F1@50ms"] == 1.0 and table[row_id]["F1@200ms"] == 1.0
    assert table["i2a"]["DTW F1@50ms"] == 1.0
    assert table["emd_identical"]["pitch_EMD"] == 0.0 and table["emd_identical"]["duration_EMD"] == 0.0
    assert table["emd_random"]["pitch_EMD"] > 1.0 and table["emd_random"]["n"] == 3
    assert table["rqvae_omr"]["n"] == 0 and "no OMR model" in table["rqvae_omr"]["note"]
    assert table["fad"]["FAD"] is None and "skipped" in table["fad"]["note"]
    assert data["summary"]["scored"] == 3 and data["summary"]["failed"] == 0
    assert data["summary"]["other_soundfonts"] == "timgm6mb 3"  # the next soundfont after fluidr3
    examples = (out / "examples.csv").read_text().splitlines()
    assert len(examples) == 4 and "dac_F1@50ms" in examples[0]
    rendered = sorted(str(p.relative_to(out / "other_soundfont")) for p in out.glob("other_soundfont/*/*.wav"))
    assert rendered == ["alpha/000.wav", "alpha/001.wav", "beta/000.wav"]  # the prediction naming
    assert sf.info(out / "other_soundfont" / "alpha" / "000.wav").frames == SR  # cut to the corpus clip


def test_reference_with_no_dac_says_why(corpus, monkeypatch):
    from umust_cli.eval import transcribe

    monkeypatch.setattr(transcribe, "transcribe", stand_in_transcribe)
    data = json.loads(invoke("reference", "--data", str(corpus), "--limit", "2", "--no-fad", "--no-dac",
                             "--json").stdout)
    table = {r["row"]: r for r in data["rows"]}
    assert table["fluidsynth"]["n"] == 2 and table["dac"]["n"] == 0
    assert "--no-dac" in table["dac"]["note"]


def test_retrieval_with_the_shipped_model_on_a_corpus(corpus):
    from umust_cli.retrieval.evaluate import evaluate_checkpoint

    result = invoke("retrieval", "--data", str(corpus), "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["n"] == 3 and data["summary"]["pieces"] == 2
    assert [(r["piece_id"], r["system"]) for r in data["rows"]] == [("alpha", 0), ("alpha", 1), ("beta", 0)]
    direct = evaluate_checkpoint(None, corpus, ["test"])
    assert data["summary"]["A2S_MRR"] == pytest.approx(direct.summary["A2S_MRR"])
    assert all(1 <= r["audio_to_sheet_rank"] <= 3 for r in data["rows"])
    limited = json.loads(invoke("retrieval", "--data", str(corpus), "--limit", "2", "--json").stdout)
    assert limited["summary"]["n"] == 2
    pooled = json.loads(invoke("retrieval", "--data", str(corpus), "--split", "test", "--split", "train",
                               "--json").stdout)
    assert pooled["summary"]["n"] == 4 and pooled["summary"]["splits"] == ["test", "train"]
    assert invoke("retrieval", "--data", str(corpus), "--split", "test", "--split", "dev").exit_code == 2
    np.save(corpus.parent / "d.npy", np.eye(3))
    assert invoke("retrieval", str(corpus.parent / "d.npy"), "--data", str(corpus)).exit_code == 2
    assert invoke("retrieval").exit_code == 2


def test_fad_corpus_mode_counts_missing_clips(corpus, tmp_path, monkeypatch):
    from umust_cli.eval import embeddings

    def fake_embed(files, backend, cfg):  # two frames per clip, from the file name
        return np.stack([[len(str(f)) % 7, i] for f in files for i in (0.0, 1.0)]).astype(float)

    monkeypatch.setattr(embeddings, "embed_files", fake_embed)
    gen = predictions(corpus, tmp_path / "g", ".wav", ["alpha/000", "beta/000"])
    data = json.loads(invoke("fad", str(gen), "--data", str(corpus), "--json").stdout)
    assert data["summary"]["gen_clips"] == 2 and data["summary"]["ref_clips"] == 3
    assert data["missing"] == ["alpha/001"] and data["summary"]["backend"] == "aisfx"
    assert invoke("fad", str(gen)).exit_code == 2  # neither REF_DIR nor --data


def test_m2a_and_i2a_corpus_mode_with_a_stand_in_transcriber(corpus, tmp_path, monkeypatch):
    from umust_cli.eval import transcribe

    monkeypatch.setattr(transcribe, "transcribe", stand_in_transcribe)
    gen = predictions(corpus, tmp_path / "g", ".wav", ["alpha/000", "beta/000"])
    m2a = json.loads(invoke("m2a", str(gen), "--data", str(corpus), "--json").stdout)
    assert m2a["summary"]["onset_50ms_F1"] == 1.0 and m2a["summary"]["files"] == 2
    assert m2a["missing"] == ["alpha/001"]
    i2a = json.loads(invoke("i2a", str(gen), "--data", str(corpus), "--dtw", "--floor", "--json").stdout)
    assert i2a["summary"]["dtw_onset_50ms_F1"] == 1.0 and i2a["summary"]["missing"] == 1
    assert i2a["rows"][0]["ref"].endswith("pieces/alpha/systems/000.wav")  # the reference is the system audio
    # the floor: each reference against the next system of its piece (not predicted, but in the corpus)
    partners = {r["name"]: r["floor_partner"] for r in i2a["rows"]}
    assert partners["alpha/000"].endswith("pieces/alpha/systems/001.wav")
    assert partners["beta/000"].endswith("pieces/beta/systems/001.wav")
    assert i2a["summary"]["floor_files"] == 2 and i2a["summary"]["floor_dtw_onset_50ms_F1"] == 1.0
