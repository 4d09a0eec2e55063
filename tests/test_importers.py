"""`umust dataset import`: each public dataset from a tiny copy written here in its real layout."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data import corpus
from umust_cli.data.importers import ImportConfig, import_dataset
from umust_cli.data.stats import corpus_stats
from umust_cli.errors import BadInputError, HeldOutRepertoireError

runner = CliRunner()
RATE = 8000


# ------------------------------------------------------------------ tiny files
def wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    return path


def midi(path: Path, pitch: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(80, pitch, 0.0, 0.4))
    pm.instruments.append(piano)
    pm.write(str(path))
    return path


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 60), 255, np.uint8)).save(path)  # format from the suffix: PNG or JPEG
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def musicxml(composer: str | None = None) -> str:
    ident = f'<identification><creator type="composer">{composer}</creator></identification>' if composer else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><score-partwise version="4.0">{ident}'
            '<part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>'
            '<part id="P1"><measure number="1"><note><pitch><step>C</step><octave>4</octave></pitch>'
            '<duration>4</duration><type>whole</type></note></measure></part></score-partwise>\n')


KERN = "**kern\t**kern\n*clefF4\t*clefG2\n4C\t4c\n=\t=\n*-\t*-\n"
LMX = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 staff:1 note whole G4 staff:1\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_piece(rows: list[dict]) -> dict[str, dict]:
    return {r["piece_id"]: r for r in rows}


# --------------------------------------------------------------------- MAESTRO
def maestro_copy(root: Path, missing_audio: bool = False) -> Path:
    entries = [("Frédéric Chopin", "Ballade No. 1", "train", "2018", "2018/MIDI-Unprocessed_01.midi", 0.5),
               ("Franz Schubert", "Impromptu Op. 90 No. 2", "validation", "2017", "2017/MIDI-Unprocessed_02.midi", 0.3),
               ("Johann Sebastian Bach", "Prelude in C", "test", "2004", "2004/MIDI-Unprocessed_03.midi", 0.4),
               ("Ludwig van Beethoven", "Sonata No. 8", "train", "2018", "2018/MIDI-Unprocessed_04.midi", 0.2)]
    with open(text(root / "maestro-v3.0.0.csv", ""), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename",
                    "audio_filename", "duration"])
        for composer, title, split, year, mid, seconds in entries:
            audio = mid.replace(".midi", ".wav")
            w.writerow([composer, title, split, year, mid, audio, seconds])
            midi(root / mid)
            if not (missing_audio and split == "test"):
                wav(root / audio, seconds)
    return root


def test_maestro_keeps_its_splits_links_files_and_sends_beethoven_to_test(tmp_path):
    src, out = maestro_copy(tmp_path / "maestro-v3.0.0"), tmp_path / "corpus"
    summary = import_dataset("maestro", src, out)
    rows = by_piece(corpus.read_manifest(out))
    assert summary["errors"] == 0 and summary["rows"] == 4
    chopin = rows["maestro-2018-MIDI-Unprocessed_01"]
    assert (chopin["split"], chopin["original_split"], chopin["held_out"]) == ("train", "train", False)
    assert chopin["composer"] == "Frédéric Chopin" and chopin["duration"] == pytest.approx(0.5)
    assert os.path.samefile(out / chopin["wav"], src / "2018/MIDI-Unprocessed_01.wav")  # a hard link
    assert os.path.samefile(out / chopin["mid"], src / "2018/MIDI-Unprocessed_01.midi")
    assert rows["maestro-2017-MIDI-Unprocessed_02"]["split"] == "valid"
    beethoven = rows["maestro-2018-MIDI-Unprocessed_04"]
    assert (beethoven["split"], beethoven["original_split"], beethoven["held_out"]) == ("test", "train", True)
    assert corpus.is_held_out(beethoven) and not corpus.is_held_out(chopin)
    corpus.check_training_rows(corpus.rows(out, ["train"]), out)  # Beethoven is not among them
    with pytest.raises(HeldOutRepertoireError):
        corpus.check_training_rows([beethoven], out)
    assert corpus_stats(out)["splits"]["test"]["systems"] == 2
    assert read_jsonl(out / "errors.jsonl") == []


def test_maestro_missing_audio_is_listed_and_the_rest_imported(tmp_path):
    src, out = maestro_copy(tmp_path / "maestro", missing_audio=True), tmp_path / "corpus"
    summary = import_dataset("maestro", src, out)
    assert (summary["rows"], summary["dropped"], summary["errors"]) == (3, 1, 1)
    [error] = read_jsonl(out / "errors.jsonl")
    assert error["file"] == "2004/MIDI-Unprocessed_03.wav" and error["error"] == "InputNotFoundError"
    assert "maestro-2004-MIDI-Unprocessed_03" not in by_piece(corpus.read_manifest(out))


def test_maestro_unreadable_audio_is_listed(tmp_path):
    src = maestro_copy(tmp_path / "maestro")
    text(src / "2018/MIDI-Unprocessed_01.wav", "not audio at all")
    summary = import_dataset("maestro", src, tmp_path / "corpus")
    [error] = read_jsonl(tmp_path / "corpus" / "errors.jsonl")
    assert summary["errors"] == 1 and error["error"] == "AudioError"


def test_maestro_file_that_cannot_be_opened_is_listed(tmp_path, monkeypatch):
    import builtins

    import umust_cli.data.importers as importers

    src = maestro_copy(tmp_path / "maestro")
    locked = src / "2018/MIDI-Unprocessed_01.midi"

    def no_access(path, *args, **kwargs):  # what a file without read permission gives a non-root user
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(importers, "open", no_access, raising=False)
    summary = import_dataset("maestro", src, tmp_path / "corpus")
    [error] = read_jsonl(tmp_path / "corpus" / "errors.jsonl")
    assert (summary["rows"], summary["errors"]) == (3, 1) and "Permission denied" in error["message"]


# ------------------------------------------------------------------ GrandStaff
def grandstaff_system(root: Path, base: str, distorted: bool = True, lmx: bool = True) -> None:
    text(root / f"{base}.krn", KERN)
    image(root / f"{base}.jpg")
    if distorted:
        image(root / f"{base}_distorted.jpg")
    if lmx:
        text(root / f"{base}.lmx", LMX)
        text(root / f"{base}.musicxml", musicxml())


def test_grandstaff_lmx_release_splits_images_and_held_out_beethoven(tmp_path):
    src, out = tmp_path / "grandstaff", tmp_path / "corpus"
    chopin = ["chopin/mazurkas/mazurka41-2/original_m-10-15", "chopin/mazurkas/mazurka41-2/original_m-5-10"]
    for base in chopin:
        grandstaff_system(src, base)
    grandstaff_system(src, "mozart/sonatas/sonata01-1/original_m-0-5", distorted=False)
    grandstaff_system(src, "beethoven/piano-sonatas/sonata07-3/original_m-20-25")
    text(src / "samples.train.txt", "\n".join([*chopin, "beethoven/piano-sonatas/sonata07-3/original_m-20-25"]) + "\n")
    text(src / "samples.dev.txt", "mozart/sonatas/sonata01-1/original_m-0-5\n")
    text(src / "samples.test.txt", "")
    summary = import_dataset("grandstaff", src, out)
    rows = corpus.read_manifest(out)
    assert summary["rows"] == 4 and summary["splits"] == {"train": 2, "valid": 1, "test": 1}
    mazurka = [r for r in rows if r["piece_id"] == "grandstaff-chopin-mazurkas-mazurka41-2"]
    assert [(r["system"], r["sample"]) for r in mazurka] == [(0, "original_m-5-10"), (1, "original_m-10-15")]
    first = mazurka[0]
    assert first["png"].endswith("original_m-5-10.jpg") and first["scans"][0].endswith("_distorted.jpg")
    assert all((out / first[k]).is_file() for k in ("png", "kern", "lmx", "musicxml"))
    mozart = next(r for r in rows if r["composer"] == "mozart")
    assert mozart["split"] == "valid" and "scans" not in mozart  # kept without its missing copy
    [error] = read_jsonl(out / "errors.jsonl")
    assert error["file"].endswith("original_m-0-5_distorted.jpg") and summary["dropped"] == 0
    beethoven = next(r for r in rows if r["composer"] == "beethoven")
    assert beethoven["split"] == "test" and beethoven["original_split"] == "train" and corpus.is_held_out(beethoven)


def test_grandstaff_smt_partitions_with_ekrn(tmp_path):
    src, out = tmp_path / "GrandStaff", tmp_path / "corpus"
    base = "grandstaff_dataset/hummel/preludes/prelude01/original_m-0-4"
    text(src / f"{base}.ekrn", KERN)
    image(src / f"{base}.jpg")
    image(src / f"{base}_distorted.jpg")
    text(src / "partitions_grandstaff/types/test.txt", f"{base}.ekrn\n")
    text(src / "partitions_grandstaff/types/train.txt", "")
    summary = import_dataset("grandstaff", src, out)
    [row] = corpus.read_manifest(out)
    assert summary["errors"] == 0 and row["piece_id"] == "grandstaff-hummel-preludes-prelude01"
    assert row["kern"].endswith(".ekrn") and row["split"] == "test" and "lmx" not in row


def test_grandstaff_lmx_over_the_original_release_in_a_subfolder(tmp_path):
    src, out = tmp_path / "grandstaff-lmx", tmp_path / "corpus"
    base = "joplin/joplin/pleasant/original_m-41-46"
    grandstaff_system(src / "grandstaff", base, lmx=False)  # the original release: kern and images
    text(src / f"{base}.lmx", LMX)
    text(src / f"{base}.musicxml", musicxml())
    text(src / "samples.test.txt", base + "\n")
    summary = import_dataset("grandstaff", src, out)
    [row] = corpus.read_manifest(out)
    assert summary["errors"] == 0 and row["png"] == f"files/grandstaff/{base}.jpg"
    assert row["lmx"] == f"files/{base}.lmx" and row["kern"] == f"files/grandstaff/{base}.krn"


# --------------------------------------------------------------------- OLiMPiC
def test_olimpic_splits_page_order_and_composer_record(tmp_path):
    src, out = tmp_path / "olimpic-1.0-synthetic", tmp_path / "corpus"
    samples = {"samples/5001/p2-s1": None, "samples/5001/p1-s2": None, "samples/5001/p1-s10": None,
               "samples/6002/p1-s1": "Ludwig van Beethoven", "samples/7003/p1-s1": None}
    for base, composer in samples.items():
        image(src / f"{base}.png")
        text(src / f"{base}.lmx", LMX)
        text(src / f"{base}.musicxml", musicxml(composer))
    text(src / "samples.train.txt", "samples/5001/p2-s1\nsamples/5001/p1-s2\nsamples/5001/p1-s10\nsamples/6002/p1-s1\n")
    text(src / "samples.dev.txt", "samples/7003/p1-s1\n")
    summary = import_dataset("olimpic", src, out)
    rows = corpus.read_manifest(out)
    score = [r for r in rows if r["piece_id"] == "olimpic-5001"]
    assert [(r["system"], r["page"], r["system_on_page"]) for r in score] == [(0, 1, 2), (1, 1, 10), (2, 2, 1)]
    assert all(r["split"] == "train" and not r["held_out"] for r in score)
    lied = by_piece(rows)["olimpic-6002"]
    assert lied["split"] == "test" and lied["held_out"] and corpus.is_held_out(lied)
    assert by_piece(rows)["olimpic-7003"]["split"] == "valid" and summary["errors"] == 0
    assert (out / score[0]["lmx"]).read_text() == LMX


def test_olimpic_without_lists_is_bad_input(tmp_path):
    image(tmp_path / "olimpic/samples/1/p1-s1.png")
    with pytest.raises(BadInputError, match="samples.train.txt"):
        import_dataset("olimpic", tmp_path / "olimpic", tmp_path / "corpus")


# -------------------------------------------------------------------- MusicNet
def musicnet_copy(root: Path) -> Path:
    with open(text(root / "musicnet_metadata.csv", ""), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "composer", "composition", "movement", "ensemble", "source", "transcriber",
                    "catalog_name", "seconds"])
        w.writerow(["1727", "Schubert", "Piano Quintet in A major", "3. Scherzo", "Piano Quintet", "x", "y", "D667", "1"])
        w.writerow(["2303", "Beethoven", "Piano Sonata No 8", "1. Grave", "Solo Piano", "x", "y", "OP13", "1"])
        w.writerow(["2628", "Bach", "Cello Suite 4", "1. Prelude", "Solo Cello", "x", "y", "BWV1010", "1"])
    labels = "start_time,end_time,instrument,note,start_beat,end_beat,note_value\n" \
             "44100,66150,1,60,0,1,Quarter\n0,44100,43,48,0,2,Half\n"
    for track, split in (("1727", "train"), ("2303", "train"), ("2628", "test")):
        wav(root / f"{split}_data/{track}.wav", 1.0)
        text(root / f"{split}_labels/{track}.csv", labels)
    midi(root / "musicnet_midis/Schubert/1727_schubert_op114_3.mid")
    return root


def test_musicnet_labels_become_midi_and_beethoven_goes_to_test(tmp_path):
    src, out = musicnet_copy(tmp_path / "musicnet"), tmp_path / "corpus"
    summary = import_dataset("musicnet", src, out)
    rows = by_piece(corpus.read_manifest(out))
    assert summary["errors"] == 0 and summary["files"]["derived"] == 3
    schubert = rows["musicnet-1727"]
    assert (schubert["split"], schubert["composer"], schubert["duration"]) == ("train", "Schubert", 1.0)
    assert schubert["score_mid"].startswith("files/musicnet_midis/Schubert/")
    pm = pretty_midi.PrettyMIDI(str(out / schubert["mid"]))
    notes = sorted((n.start, n.end, n.pitch, inst.program) for inst in pm.instruments for n in inst.notes)
    assert notes == [pytest.approx((0.0, 1.0, 48, 42), abs=1e-3), pytest.approx((1.0, 1.5, 60, 0), abs=1e-3)]
    beethoven = rows["musicnet-2303"]
    assert (beethoven["split"], beethoven["original_split"]) == ("test", "train") and corpus.is_held_out(beethoven)
    assert rows["musicnet-2628"]["split"] == "test" and not rows["musicnet-2628"]["held_out"]


def test_musicnet_split_folders_one_level_down(tmp_path):
    src = musicnet_copy(tmp_path / "kaggle")
    for folder in ("train_data", "train_labels", "test_data", "test_labels"):
        (src / "musicnet").mkdir(exist_ok=True)
        (src / folder).rename(src / "musicnet" / folder)
    summary = import_dataset("musicnet", src, tmp_path / "corpus")
    rows = by_piece(corpus.read_manifest(tmp_path / "corpus"))
    assert summary["errors"] == 0 and rows["musicnet-2628"]["wav"] == "files/musicnet/test_data/2628.wav"


def test_musicnet_needs_its_metadata(tmp_path):
    src = musicnet_copy(tmp_path / "musicnet")
    (src / "musicnet_metadata.csv").unlink()
    with pytest.raises(BadInputError, match="musicnet_metadata.csv"):
        import_dataset("musicnet", src, tmp_path / "corpus")


def test_musicnet_em_pairs_aligned_midi_with_the_recordings(tmp_path):
    src, out = musicnet_copy(tmp_path / "musicnet"), tmp_path / "corpus"
    for track in ("1727", "2303"):  # 2628's aligned MIDI is missing
        midi(src / f"musicnet_em/musicnet_em/{track}.mid")
    summary = import_dataset("musicnet-em", src, out)
    rows = by_piece(corpus.read_manifest(out))
    assert set(rows) == {"musicnet_em-1727", "musicnet_em-2303"} and summary["dropped"] == 1
    assert os.path.samefile(out / rows["musicnet_em-1727"]["mid"], src / "musicnet_em/musicnet_em/1727.mid")
    [error] = read_jsonl(out / "errors.jsonl")
    assert error["file"] == "musicnet_em/musicnet_em/2628.mid"
    assert rows["musicnet_em-2303"]["split"] == "test"


# ------------------------------------------------------------------------ BPSD
def test_bpsd_is_test_only_with_midi_from_its_note_events(tmp_path):
    src, out = tmp_path / "Beethoven_Piano_Sonata_Dataset_v2", tmp_path / "corpus"
    notes = "start;end;pitch;pitchclass;instrument\n0.5;1.25;64;4;piano\n0.0;0.5;60;0;piano\n"
    for performer in ("AS35", "AB96"):  # AB96's recording is not in the archive
        text(src / f"2_Annotations/ann_audio_note/Beethoven_Op002No1-01_{performer}.csv", notes)
        text(src / f"2_Annotations/ann_audio_measure/Beethoven_Op002No1-01_{performer}.csv", "start;measure\n0;1\n")
    wav(src / "1_Audio/Beethoven_Op002No1-01_AS35.wav", 2.0)
    text(src / "0_RawData/score_xml_unfolded/Beethoven_Op002No1-01.xml", musicxml("Ludwig van Beethoven"))
    text(src / "2_Annotations/ann_score_note/Beethoven_Op002No1-01.csv", "start_meas;end_meas;pitch\n0;1;60\n")
    summary = import_dataset("bpsd", src, out)  # score_xml_repetitions is missing: listed, rows kept
    rows = by_piece(corpus.read_manifest(out))
    assert set(rows) == {"bpsd-Op002No1-01-AS35", "bpsd-Op002No1-01-AB96"}
    assert all(r["split"] == "test" and r["held_out"] and corpus.is_held_out(r) for r in rows.values())
    assert summary["splits"] == {"train": 0, "valid": 0, "test": 2}
    recorded, unrecorded = rows["bpsd-Op002No1-01-AS35"], rows["bpsd-Op002No1-01-AB96"]
    assert recorded["duration"] == 2.0 and "wav" not in unrecorded and unrecorded["duration"] == 1.25
    pm = pretty_midi.PrettyMIDI(str(out / unrecorded["mid"]))
    assert [(round(n.start, 3), n.pitch) for n in pm.instruments[0].notes] == [(0.0, 60), (0.5, 64)]
    assert {e["file"] for e in read_jsonl(out / "errors.jsonl")} == {
        "0_RawData/score_xml_repetitions/Beethoven_Op002No1-01.xml"}


# ------------------------------------------------------------------------- CLI
def test_cli_exit_status_copy_rerun_and_folder_guard(tmp_path):
    src, out = maestro_copy(tmp_path / "maestro"), tmp_path / "corpus"
    result = runner.invoke(app, ["dataset", "import", "maestro", str(src), "-o", str(out), "--copy", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"]["copied"] == 8 and summary["rows"] == 4
    row = corpus.read_manifest(out)[0]
    assert not os.path.samefile(out / row["wav"], src / row["wav"].removeprefix("files/"))
    result = runner.invoke(app, ["dataset", "import", "maestro", str(src), "-o", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["files"]["kept"] == 8
    (src / "2004/MIDI-Unprocessed_03.wav").unlink()
    result = runner.invoke(app, ["dataset", "import", "maestro", str(src), "-o", str(out)])
    assert result.exit_code == 3 and "1 missing or unreadable file(s)" in result.output  # 3: the rest imported
    assert len(corpus.read_manifest(out)) == 3
    result = runner.invoke(app, ["dataset", "import", "bpsd", str(src), "-o", str(out)])
    assert result.exit_code == 2  # no BPSD there, and the folder holds another import


def test_cli_unknown_dataset_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["dataset", "import", "imslp", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "unknown dataset 'imslp'" in result.output


def test_limit_takes_the_first_samples(tmp_path):
    src, out = maestro_copy(tmp_path / "maestro"), tmp_path / "corpus"
    summary = import_dataset("maestro", src, out, ImportConfig(limit=2))
    assert summary["samples"] == 2 and len(corpus.read_manifest(out)) == 2
