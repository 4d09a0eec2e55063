"""`umust dataset build/stats`: the aligned four-modality corpus, end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app
from umust_cli.data import build as build_module
from umust_cli.data import sources
from umust_cli.errors import HeldOutRepertoireError

from .test_render import kern_piece, staff_groups

runner = CliRunner()
OPTIONS = ["--soundfont", "timgm6mb", "--scan-copies", "1", "--seed", "3"]
SR = 44100


def build(src: list[str], out: Path, *extra: str):
    return runner.invoke(app, ["dataset", "build", *src, "-o", str(out), *OPTIONS, *extra])


def manifest(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]


def errors(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "errors.jsonl").read_text().splitlines()]


def mtimes(corpus: Path) -> dict[str, int]:
    return {str(p.relative_to(corpus)): p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in") / "scores"
    folder.mkdir()
    (folder / "alpha.krn").write_text(kern_piece(14, seed=1), encoding="utf-8")
    (folder / "beta.krn").write_text(kern_piece(9, seed=2), encoding="utf-8")
    (folder / "broken.musicxml").write_text("<score-partwise><part id='P1'><measure", encoding="utf-8")
    (folder / "sonata.krn").write_text(kern_piece(4, seed=3, composer="Beethoven, Ludwig van"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(scores, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    result = build([str(scores)], out)
    assert result.exit_code == 3, result.output  # some pieces failed (listed), the others are built
    assert "2 built, 0 already done, 2 failed" in result.output
    assert "failed scores-broken: NotationError" in result.stdout
    return out


def check_modalities(corpus: Path, rows: list[dict]) -> None:
    """Every system has a PNG, MusicXML, LMX, MIDI and WAV whose lengths agree with its time span."""
    assert rows
    for row in rows:
        assert row["duration"] == pytest.approx(row["end"] - row["start"], abs=1e-5) and row["duration"] > 0
        frames = soundfile.info(str(corpus / row["wav"])).frames
        assert abs(frames - row["duration"] * SR) <= 1  # within one sample frame
        midi = pretty_midi.PrettyMIDI(str(corpus / row["mid"]))
        notes = [n for inst in midi.instruments for n in inst.notes]
        assert notes and all(0 <= n.start < n.end <= row["duration"] + 1e-6 for n in notes)
        image = np.asarray(Image.open(corpus / row["png"]))
        assert image.dtype == np.uint8 and image.ndim == 2 and image.shape[1] > 200
        for scan in row["scans"]:
            assert np.asarray(Image.open(corpus / scan)).shape == image.shape
        lmx = (corpus / row["lmx"]).read_text().split()
        assert lmx.count("measure") == row["measures"][1] - row["measures"][0] + 1
        assert "<measure" in (corpus / row["musicxml"]).read_text()


def test_every_system_has_all_modalities(corpus):
    rows = manifest(corpus)
    assert {r["piece_id"] for r in rows} == {"scores-alpha", "scores-beta"}
    check_modalities(corpus, rows)
    for piece_id in ("scores-alpha", "scores-beta"):
        own = sorted((r for r in rows if r["piece_id"] == piece_id), key=lambda r: r["system"])
        assert [r["system"] for r in own] == list(range(len(own)))
        piece = json.loads((corpus / "pieces" / piece_id / "piece.json").read_text())
        assert [(s["start"], s["end"]) for s in piece["systems"]] == [(r["start"], r["end"]) for r in own]
        assert own[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(own, own[1:]))
        audio, sr = soundfile.read(str(corpus / piece["audio"]))
        assert sr == SR and audio.ndim == 1 and len(audio) / SR >= own[-1]["end"] - 1e-3


def test_system_audio_matches_its_midi_onsets(corpus):
    import librosa
    import mir_eval

    rows = sorted((r for r in manifest(corpus) if r["piece_id"] == "scores-alpha"), key=lambda r: r["system"])
    assert len(rows) >= 2

    def midi_onsets(row):  # jitter splits a chord into onsets a few ms apart: heard as one
        midi = pretty_midi.PrettyMIDI(str(corpus / row["mid"]))
        times = sorted(n.start for i in midi.instruments for n in i.notes)
        merged = [times[0]]
        for t in times[1:]:
            if t - merged[-1] > 0.03:
                merged.append(t)
        return np.array(merged)

    def audio_onsets(row):
        audio, sr = soundfile.read(str(corpus / row["wav"]), dtype="float32")
        assert np.sqrt(np.mean(audio ** 2)) > 0.01  # not silence
        return librosa.onset.onset_detect(y=audio, sr=sr, hop_length=256, units="time", backtrack=False)

    def score(ref, est):
        return mir_eval.onset.f_measure(ref, est, window=0.05)

    for k, row in enumerate(rows):
        ref, est = midi_onsets(row), audio_onsets(row)
        recall = score(ref, est)[2]
        assert recall >= 0.8, f"system {k}: only {recall:.2f} of the MIDI onsets are heard"
        other = midi_onsets(rows[(k + 1) % len(rows)])
        assert score(ref, est)[0] > score(other, est)[0], f"system {k} sounds more like another system"


def test_system_images_show_a_grand_staff(corpus):
    for row in manifest(corpus):
        image = np.asarray(Image.open(corpus / row["png"]))
        assert len(staff_groups(image)) == 2, row["png"]


def test_alignment_puts_each_onset_on_its_noteheads(corpus):
    """systems/NNN.align.json: x increases across the image, every x has notehead ink just right of
    it (a notehead's left edge), and the aligned times are the onsets of the system's MIDI."""
    from umust_cli.data.align import row_alignment

    for row in manifest(corpus):
        a = row_alignment(dict(row, root=str(corpus)))
        image = np.asarray(Image.open(corpus / row["png"]))
        assert (a.height, a.width) == image.shape and len(a.x) >= 4
        assert np.all(np.diff(a.x) > 0) and 0 < a.x[0] and a.x[-1] < a.width
        dark = (image < 128).sum(axis=0).astype(float)  # dark pixels per column
        at = np.mean([dark[int(x): int(x) + 8].mean() for x in a.x])
        beside = np.mean([dark[int(x) + 14: int(x) + 22].mean() for x in a.x])
        assert at > 1.2 * dark.mean() and at > 1.5 * beside, row["png"]
        midi = pretty_midi.PrettyMIDI(str(corpus / row["mid"]))
        onsets = np.array(sorted(n.start for inst in midi.instruments for n in inst.notes))
        t = a.performance_times(row)
        assert np.all(np.abs(t[:, None] - onsets[None, :]).min(axis=1) < 0.05)  # jitter: 10 ms std
        heard = np.abs(onsets[:, None] - t[None, :]).min(axis=1) < 0.05
        assert heard.mean() > 0.9


def test_dataset_align_writes_the_same_alignment_again(corpus, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    rows = manifest(copy)
    saved = {r["png"]: (copy / r["png"]).with_suffix("").with_suffix(".align.json") for r in rows}
    before = {png: path.read_bytes() for png, path in saved.items()}
    for path in saved.values():
        path.unlink()
    result = runner.invoke(app, ["dataset", "align", str(copy), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"aligned": len(rows), "skipped": 0, "failed": {}}
    assert {png: path.read_bytes() for png, path in saved.items()} == before
    (copy / rows[0]["png"]).write_bytes(b"not a png")  # a piece that fails is reported, the rest aligned
    result = runner.invoke(app, ["dataset", "align", str(copy), "--redo", "--json"])
    assert result.exit_code == 3, result.output  # some failed, the others are aligned (as dataset build)
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: 1 of 2 pieces failed: ") and rows[0]["piece_id"] in err[0]
    assert rows[0]["piece_id"] in json.loads(result.stdout)["failed"]


def test_resynth_keeps_going_past_a_failed_piece_and_exits_3(corpus, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    broken = manifest(copy)[0]["piece_id"]
    (copy / "pieces" / broken / "performance.mid").write_bytes(b"not a midi file")
    out = tmp_path / "r"
    result = runner.invoke(app, ["dataset", "resynth", str(copy), "-o", str(out), "--soundfont", "timgm6mb",
                                 "--split", "train", "--split", "valid", "--split", "test"])
    assert result.exit_code == 3, result.output
    assert f"failed {broken}: " in result.stdout and "1 built, 0 already done, 1 failed" in result.stdout
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: 1 of 2 pieces failed: {broken}: "), result.stderr
    assert {r["piece_id"] for r in manifest(out)} == {r["piece_id"] for r in manifest(copy)} - {broken}


def test_dataset_align_links_a_resynth_corpus_to_its_source(corpus, tmp_path):
    from umust_cli.data.align import alignment_path

    out = tmp_path / "t"
    result = runner.invoke(app, ["dataset", "resynth", str(corpus), "-o", str(out), "--soundfont", "timgm6mb",
                                 "--split", "train"])
    assert result.exit_code == 0, result.output
    rows = manifest(out)
    paths = [out / alignment_path(r["png"]) for r in rows]
    assert rows and all(p.is_file() for p in paths)  # resynth links them with the images
    for p in paths:
        p.unlink()
    result = runner.invoke(app, ["dataset", "align", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["aligned"] == len(rows)
    assert all(p.samefile(corpus / alignment_path(r["png"])) for p, r in zip(paths, rows))


def test_splits_are_by_piece(corpus):
    rows = manifest(corpus)
    split_of = {}
    for row in rows:
        assert row["split"] in ("train", "valid", "test")
        assert split_of.setdefault(row["piece_id"], row["split"]) == row["split"]
    ids = [f"piece-{i}" for i in range(3000)]
    splits = [sources.split_of(i, 3, (0.8, 0.1, 0.1)) for i in ids]
    assert splits == [sources.split_of(i, 3, (0.8, 0.1, 0.1)) for i in ids]  # deterministic
    assert splits != [sources.split_of(i, 4, (0.8, 0.1, 0.1)) for i in ids]  # depends on --seed
    share = {s: splits.count(s) / len(ids) for s in ("train", "valid", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.03) and share["test"] == pytest.approx(0.1, abs=0.03)


def test_bad_and_held_out_inputs_land_in_errors(corpus):
    by_piece = {e["piece_id"]: e for e in errors(corpus)}
    assert by_piece["scores-broken"]["error"] == "NotationError"
    assert by_piece["scores-sonata"]["error"] == "HeldOutRepertoireError"
    assert "Beethoven" in by_piece["scores-sonata"]["message"]
    assert not (corpus / "pieces" / "scores-sonata" / "audio.wav").exists()


def test_held_out_detection():
    piece = sources.PieceSource("x", Path("/data/beethoven/op27.krn"), "/data/beethoven/op27.krn")
    with pytest.raises(HeldOutRepertoireError):
        sources.check_not_held_out(piece)
    assert sources.composer_record("!!!COM: Beethoven, Ludwig van\n**kern\n") == "Beethoven, Ludwig van"
    assert sources.composer_record('<creator type="composer">L. v. Beethoven</creator>') == "L. v. Beethoven"
    assert sources.composer_record("!!!COM: Joplin, Scott\n") == "Joplin, Scott"


def test_allow_held_out_builds_a_test_only_split(scores, tmp_path):
    src = tmp_path / "held"
    src.mkdir()
    shutil.copy(scores / "sonata.krn", src / "sonata.krn")
    result = build([str(src)], tmp_path / "c", "--allow-held-out")
    assert result.exit_code == 0, result.output
    rows = manifest(tmp_path / "c")
    assert rows and {r["split"] for r in rows} == {"test"}


def test_rerun_does_nothing_new(corpus, scores, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    before = mtimes(copy)
    result = build([str(scores)], copy)
    assert result.exit_code == 0, result.output
    assert "0 built, 2 already done, 2 failed" in result.output
    assert mtimes(copy) == before


def test_interrupted_piece_is_redone(corpus, scores, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    piece = copy / "pieces" / "scores-beta"
    (piece / "done").unlink()
    (piece / "systems" / "001.wav").unlink()
    untouched = {k: v for k, v in mtimes(copy).items() if "scores-alpha" in k}
    result = build([str(scores)], copy)
    assert result.exit_code == 0 and "1 built, 1 already done" in result.output, result.output
    assert (piece / "done").is_file() and (piece / "systems" / "001.wav").is_file()
    assert {k: v for k, v in mtimes(copy).items() if "scores-alpha" in k} == untouched
    assert manifest(copy) == manifest(corpus)  # deterministic: the redone piece is identical


class _Killed(BaseException):
    """Stands for the process being killed: nothing in the builder catches it."""


def test_build_killed_inside_a_piece_resumes(scores, tmp_path, monkeypatch):
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(scores / "beta.krn", src / "beta.krn")
    real, calls = build_module._build_system, []

    def dies_on_second_system(ctx, layout, system):
        calls.append(system.index)
        if len(calls) == 2:
            raise _Killed()
        return real(ctx, layout, system)

    monkeypatch.setattr(build_module, "_build_system", dies_on_second_system)
    with pytest.raises(_Killed):
        build([str(src)], tmp_path / "c")
    assert not (tmp_path / "c" / "pieces" / "scores-beta" / "done").exists()
    monkeypatch.setattr(build_module, "_build_system", real)
    result = build([str(src)], tmp_path / "c")
    assert result.exit_code == 0 and "1 built" in result.output, result.output
    check_modalities(tmp_path / "c", manifest(tmp_path / "c"))
    assert not list((tmp_path / "c").rglob("*.tmp*"))  # no temporary file left behind


def test_other_options_on_the_same_folder_are_refused(corpus, scores, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    result = runner.invoke(app, ["dataset", "build", str(scores), "-o", str(copy), "--seed", "9",
                                 "--soundfont", "timgm6mb", "--scan-copies", "1"])
    assert result.exit_code == 2 and "other options" in result.output


def test_nothing_built_exits_nonzero(scores, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    shutil.copy(scores / "broken.musicxml", src / "broken.musicxml")
    result = build([str(src)], tmp_path / "c")
    assert result.exit_code == 2 and "0 built" in result.output
    assert result.stderr.startswith("error: 1 of 1 pieces failed: ") and len(result.stderr.splitlines()) == 1


def test_stats_match_the_manifest(corpus):
    rows = manifest(corpus)
    result = runner.invoke(app, ["dataset", "stats", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    for split in ("train", "valid", "test"):
        own = [r for r in rows if r["split"] == split]
        assert stats["splits"][split]["systems"] == len(own)
        assert stats["splits"][split]["pieces"] == len({r["piece_id"] for r in own})
        assert stats["splits"][split]["hours"] == pytest.approx(sum(r["duration"] for r in own) / 3600)
    assert stats["total"]["systems"] == len(rows) and stats["errors"] == 2
    table = runner.invoke(app, ["dataset", "stats", str(corpus)])
    assert table.exit_code == 0 and "train" in table.output and "total" in table.output


@pytest.mark.slow
def test_two_workers_build_the_same_corpus(corpus, scores, tmp_path):
    result = build([str(scores)], tmp_path / "c", "--workers", "2")
    assert result.exit_code == 3, result.output
    assert manifest(tmp_path / "c") == manifest(corpus)


@pytest.mark.slow
def test_real_joplin_piece(corpora, tmp_path):
    result = build([str(corpora / "joplin" / "kern")], tmp_path / "c", "--limit", "1")
    assert result.exit_code == 0 and "1 built" in result.output, result.output
    rows = manifest(tmp_path / "c")
    assert len(rows) >= 8 and {r["piece_id"] for r in rows} == {"joplin-antoinette"}
    check_modalities(tmp_path / "c", rows)


def test_chorale_with_instrumental_parts_keeps_its_four_voices():
    """music21's bwv1.6 has a horn part besides SATB; the reduction must still find the voices."""
    import music21

    from umust_cli.data.sources import _vocal_parts

    parts = list(music21.corpus.parse("bach/bwv1.6").parts)
    assert len(parts) > 4
    voices = _vocal_parts(parts)
    assert [p.partName.lower()[:4] for p in voices] == ["sopr", "alto", "teno", "bass"]


def test_resynth_renders_the_same_systems_with_another_timbre(corpus, tmp_path):
    out = tmp_path / "bright"
    args = ["dataset", "resynth", str(corpus), "-o", str(out), "--soundfont", "timgm6mb", "--program", "1",
            "--split", "train", "--split", "valid", "--split", "test"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    src, new = manifest(corpus), manifest(out)
    assert [(r["piece_id"], r["system"]) for r in new] == [(r["piece_id"], r["system"]) for r in src]
    for old, row in zip(src, new):
        assert row["soundfont"] == "timgm6mb-p1" and row["resynth"]["program"] == 1
        assert (row["start"], row["end"], row["png"]) == (old["start"], old["end"], old["png"])
        assert (out / row["png"]).read_bytes() == (corpus / row["png"]).read_bytes()
        a, sr = soundfile.read(out / row["wav"])
        b, _ = soundfile.read(corpus / row["wav"])
        assert sr == SR and len(a) == len(b) == round(row["duration"] * SR)
        assert np.abs(a).max() > 0.01 and not np.allclose(a, b, atol=1e-3)  # sound, but another sound
    again = runner.invoke(app, args + ["--json"])
    assert again.exit_code == 0 and json.loads(again.output)["skipped"] == 2


def test_resynth_refuses_unknown_soundfonts_and_its_own_source(corpus, tmp_path):
    bad = runner.invoke(app, ["dataset", "resynth", str(corpus), "-o", str(tmp_path / "x"), "--soundfont", "nope"])
    assert bad.exit_code != 0 and "not installed" in bad.output and not (tmp_path / "x").exists()
    same = runner.invoke(app, ["dataset", "resynth", str(corpus), "-o", str(corpus), "--soundfont", "timgm6mb"])
    assert same.exit_code != 0 and "must differ" in same.output


def test_resynth_at_another_tempo_scales_spans_audio_and_midi(corpus, tmp_path):
    out = tmp_path / "fast"
    result = runner.invoke(app, ["dataset", "resynth", str(corpus), "-o", str(out), "--soundfont", "timgm6mb",
                                 "--tempo", "2", "--split", "train", "--split", "valid", "--split", "test"])
    assert result.exit_code == 0, result.output
    for old, row in zip(manifest(corpus), manifest(out)):
        assert row["soundfont"] == "timgm6mb-t2"
        assert row["start"] == pytest.approx(old["start"] / 2, abs=1e-5)
        assert row["duration"] == pytest.approx(old["duration"] / 2, abs=1e-5)
        assert len(soundfile.read(out / row["wav"])[0]) == round(row["duration"] * SR)
        fast, slow = (pretty_midi.PrettyMIDI(str(c / row["mid"])) for c in (out, corpus))
        assert fast.get_end_time() == pytest.approx(slow.get_end_time() / 2, abs=2e-3)
        assert [n.pitch for n in fast.instruments[0].notes] == [n.pitch for n in slow.instruments[0].notes]
