"""Bad input, tried as a new user would: every case exits 2 with exactly one stderr line
starting with "error:", no traceback, and no partial or temporary file left behind.

The zoo (``make_zoo``) holds empty, truncated, binary, huge-header, NaN, silent and
wrongly named files; ``CASES`` are command lines over it. ``{z}`` is the zoo folder,
``{o}`` an empty output folder of the test.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from umust_cli.cli.main import app

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "notation"
SR = 44100
runner = CliRunner()


# ------------------------------------------------------------------ the zoo
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixel data is one tiny (broken) block."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _npy_header_only(path: Path, shape: tuple, dtype=np.int16) -> None:
    """A .npy file whose header promises ``shape`` but that holds no data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})


def _wav_header_only(path: Path, seconds: float) -> None:
    """A 16-bit mono WAV whose header promises ``seconds`` of sound, as a sparse file of full length."""
    data_bytes = int(seconds * SR) * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " +
              struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))
    with open(path, "wb") as f:
        f.write(header)
    os.truncate(path, len(header) + data_bytes)


def _staff_png(path: Path) -> None:
    img = np.full((96, 256), 255, np.uint8)
    img[20:61:10, :] = 0
    img[15:66, ::40] = 0
    Image.fromarray(img).save(path)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _midi(path: Path) -> None:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(80, 60 + i, i * 0.5, i * 0.5 + 0.4) for i in range(4)]
    pm.instruments.append(piano)
    pm.write(str(path))


def make_zoo(z: Path) -> Path:
    """Write every bad (and the few good) input files of the cases into folder ``z``."""
    z.mkdir(parents=True, exist_ok=True)
    junk = bytes(range(256)) * 8
    for name in ("empty.musicxml", "empty.lmx", "empty.txt", "empty.mid", "empty.png", "empty.wav", "empty.npy"):
        (z / name).write_bytes(b"")
    for name in ("binary.musicxml", "binary.lmx", "binary.txt", "binary.mid", "binary.png", "binary.wav",
                 "binary.npy", "binary.krn"):
        (z / name).write_bytes(junk)
    score = (FIXTURES / "piano_clefs.musicxml").read_bytes()
    (z / "truncated.musicxml").write_bytes(score[: len(score) // 2])
    (z / "score.png").write_bytes(score)  # a score with an image's name
    with open(z / "huge.musicxml", "wb") as f:  # 100 MB (sparse): over the score bound
        f.write(score)
    os.truncate(z / "huge.musicxml", 100 * 2**20)
    (z / "dir").mkdir(exist_ok=True)
    (z / "outfile").write_text("a file where a folder is expected\n")
    lmx = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 note pitch:C4 quarter"
    (z / "v9.lmx").write_text(f"version: 9.9\nflavor: core\n---\n{lmx}\n")
    (z / "flavor.lmx").write_text(f"version: 1.0\nflavor: fancy\n---\n{lmx}\n")
    (z / "good.lmx").write_text(f"version: 1.0\nflavor: core\n---\n{lmx}\n")
    (z / "header_only.lmx").write_text("version: 1.0\nflavor: core\n---\n")
    (z / "words.lmx").write_text("hello world\n")
    (z / "nonotes.txt").write_text("@0 10\n")
    (z / "words.txt").write_text("hello world\n")
    (z / "far.txt").write_text("@0 99999999 tie program:0 velocity:21 pitch:60\n")  # a note held for years
    _midi(z / "good.mid")
    (z / "truncated.mid").write_bytes((z / "good.mid").read_bytes()[:40])
    _staff_png(z / "good.png")
    for sub in ("a", "b"):
        (z / sub).mkdir(exist_ok=True)
        _staff_png(z / sub / "x.png")
        sf.write(z / sub / "x.wav", _tone(0.5), SR)
    (z / "truncated.png").write_bytes((z / "good.png").read_bytes()[:200])
    (z / "huge.png").write_bytes(_png_header(12000, 12000))
    (z / "bomb.png").write_bytes(_png_header(20000, 20000))
    (z / "wide.png").write_bytes(_png_header(5000, 1000))  # a page's worth, too large for the codec
    Image.fromarray(np.full((64, 256), 255, np.uint8)).save(z / "blank.png")
    sf.write(z / "good.wav", _tone(1.0), SR)
    (z / "truncated.wav").write_bytes((z / "good.wav").read_bytes()[:30000])
    sf.write(z / "one_sample.wav", np.array([0.5], np.float32), SR, subtype="FLOAT")
    nan = _tone(1.0)
    nan[100:200] = np.nan
    sf.write(z / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(z / "silent.wav", np.zeros(SR, np.float32), SR)
    _wav_header_only(z / "long.wav", 2 * 3600)
    _npy_header_only(z / "huge_codes.npy", (4, 4000, 4000))
    np.save(z / "long_codes.npy", np.zeros((4, 200_000), np.int16))  # 2,322 s of audio
    np.save(z / "float_codes.npy", np.zeros((4, 3, 5), np.float32))
    np.save(z / "big_values.npy", np.full((4, 3, 5), 5000, np.int16))
    np.save(z / "flat_codes.npy", np.zeros((4, 3, 5), np.int16))  # image codes given to audio
    np.save(z / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(z / "codes.npz", codes=np.zeros((4, 3, 5), np.int16))
    (z / "truncated.npy").write_bytes((z / "long_codes.npy").read_bytes()[:1000])
    np.savez(z / "index.npz", embeddings=np.zeros((2, 4), np.float32), meta=np.array('{"format": "x"}'))
    (z / "truncated.npz").write_bytes((z / "index.npz").read_bytes()[:300])
    (z / "broken.krn").write_text("**kern\n*M4/4\n=1\n4cc\n4zz\n*-\n")
    (z / "corpus").mkdir(exist_ok=True)  # a manifest whose pieces' files are all gone
    with open(z / "corpus" / "manifest.jsonl", "w") as f:
        for piece in ("p1", "p2"):
            files = {k: f"pieces/{piece}/systems/000.{k}" for k in ("png", "musicxml", "lmx", "mid", "wav")}
            f.write(json.dumps({"piece_id": piece, "system": 0, "split": "train", **files, "start": 0.0,
                                "duration": 1.0}) + "\n")
    return z


# ------------------------------------------------------------------ the cases
TI, TA, TN, TM = ["tokenize", "image"], ["tokenize", "audio"], ["tokenize", "notation"], ["tokenize", "midi"]
RS = ["retrieve", "search"]
CASES = {
    # tokenize notation
    "notation-missing": TN + ["{z}/nope.musicxml"],
    "notation-folder": TN + ["{z}/dir"],
    "notation-empty": TN + ["{z}/empty.musicxml"],
    "notation-binary": TN + ["{z}/binary.musicxml"],
    "notation-truncated": TN + ["{z}/truncated.musicxml"],
    "notation-100-mb": TN + ["{z}/huge.musicxml"],
    "notation-image-named-score": TN + ["{z}/good.png"],
    "notation-output-is-folder": TN + [str(FIXTURES / "piano_clefs.musicxml"), "-o", "{o}"],
    "notation-bad-flavor": TN + [str(FIXTURES / "piano_clefs.musicxml"), "--flavor", "fancy"],
    "lmx-empty": TN + ["--decode", "{z}/empty.lmx", "-o", "{o}/x.musicxml"],
    "lmx-binary": TN + ["--decode", "{z}/binary.lmx", "-o", "{o}/x.musicxml"],
    "lmx-unknown-version": TN + ["--decode", "{z}/v9.lmx", "-o", "{o}/x.musicxml"],
    "lmx-unknown-flavor": TN + ["--decode", "{z}/flavor.lmx", "-o", "{o}/x.musicxml"],
    "lmx-words": TN + ["--decode", "{z}/words.lmx", "-o", "{o}/x.musicxml"],
    # tokenize midi
    "midi-missing": TM + ["{z}/nope.mid"],
    "midi-empty": TM + ["{z}/empty.mid"],
    "midi-binary": TM + ["{z}/binary.mid"],
    "midi-truncated": TM + ["{z}/truncated.mid"],
    "midi-folder": TM + ["{z}/dir"],
    "midi-max-seconds-nan": TM + ["{z}/good.mid", "--max-seconds", "nan"],
    "midi-max-seconds-inf": TM + ["{z}/good.mid", "--max-seconds", "inf"],
    "midi-max-seconds-negative": TM + ["{z}/good.mid", "--max-seconds", "-1"],
    "midi-max-tokens-zero": TM + ["{z}/good.mid", "--max-tokens", "0"],
    "midi-output-is-folder": TM + ["{z}/good.mid", "-o", "{o}"],
    "tokens-empty": TM + ["--decode", "{z}/empty.txt", "-o", "{o}/x.mid"],
    "tokens-binary": TM + ["--decode", "{z}/binary.txt", "-o", "{o}/x.mid"],
    "tokens-words": TM + ["--decode", "{z}/words.txt", "-o", "{o}/x.mid"],
    "tokens-no-notes": TM + ["--decode", "{z}/nonotes.txt", "-o", "{o}/x.mid"],
    "tokens-far-end": TM + ["--decode", "{z}/far.txt", "-o", "{o}/x.mid"],
    # tokenize image
    "image-same-stems": TI + ["{z}/a/x.png", "{z}/b/x.png", "-o", "{o}"],
    "image-same-file-twice": TI + ["{z}/good.png", "{z}/good.png", "-o", "{o}"],
    "image-missing": TI + ["{z}/nope.png", "-o", "{o}"],
    "image-folder": TI + ["{z}/dir", "-o", "{o}"],
    "image-empty": TI + ["{z}/empty.png", "-o", "{o}"],
    "image-binary": TI + ["{z}/binary.png", "-o", "{o}"],
    "image-truncated": TI + ["{z}/truncated.png", "-o", "{o}"],
    "image-score-named-png": TI + ["{z}/score.png", "-o", "{o}"],
    "image-12000x12000": TI + ["{z}/huge.png", "-o", "{o}"],
    "image-20000x20000": TI + ["{z}/bomb.png", "-o", "{o}"],
    "image-5000x1000": TI + ["{z}/wide.png", "-o", "{o}"],
    "image-blank": TI + ["{z}/blank.png", "-o", "{o}"],
    "image-output-is-file": TI + ["{z}/good.png", "-o", "{z}/outfile"],
    "image-codes-empty": TI + ["--decode", "{z}/empty.npy", "-o", "{o}"],
    "image-codes-binary": TI + ["--decode", "{z}/binary.npy", "-o", "{o}"],
    "image-codes-4x4000x4000": TI + ["--decode", "{z}/huge_codes.npy", "-o", "{o}"],
    "image-codes-float": TI + ["--decode", "{z}/float_codes.npy", "-o", "{o}"],
    "image-codes-out-of-range": TI + ["--decode", "{z}/big_values.npy", "-o", "{o}"],
    "image-codes-objects": TI + ["--decode", "{z}/objects.npy", "-o", "{o}"],
    "image-codes-npz": TI + ["--decode", "{z}/codes.npz", "-o", "{o}"],
    "image-codes-truncated": TI + ["--decode", "{z}/truncated.npy", "-o", "{o}"],
    "image-codec-missing": TI + ["{z}/good.png", "-o", "{o}", "--codec", "{z}/nope"],
    "image-codec-is-a-file": TI + ["{z}/good.png", "-o", "{o}", "--codec", "{z}/good.png"],
    # tokenize audio
    "audio-same-stems": TA + ["{z}/a/x.wav", "{z}/b/x.wav", "-o", "{o}"],
    "audio-missing": TA + ["{z}/nope.wav", "-o", "{o}"],
    "audio-folder": TA + ["{z}/dir", "-o", "{o}"],
    "audio-empty": TA + ["{z}/empty.wav", "-o", "{o}"],
    "audio-binary": TA + ["{z}/binary.wav", "-o", "{o}"],
    "audio-truncated": TA + ["{z}/truncated.wav", "-o", "{o}"],
    "audio-one-sample": TA + ["{z}/one_sample.wav", "-o", "{o}"],
    "audio-nan": TA + ["{z}/nan.wav", "-o", "{o}"],
    "audio-silent": TA + ["{z}/silent.wav", "-o", "{o}"],
    "audio-two-hours": TA + ["{z}/long.wav", "-o", "{o}"],
    "audio-image-named-wav": TA + ["{z}/good.png", "-o", "{o}"],
    "audio-output-is-file": TA + ["{z}/good.wav", "-o", "{z}/outfile"],
    "audio-codes-empty": TA + ["--decode", "{z}/empty.npy", "-o", "{o}"],
    "audio-codes-4x4000x4000": TA + ["--decode", "{z}/huge_codes.npy", "-o", "{o}"],
    "audio-codes-40-minutes": TA + ["--decode", "{z}/long_codes.npy", "-o", "{o}"],
    "audio-codes-image-grid": TA + ["--decode", "{z}/flat_codes.npy", "-o", "{o}"],
    "audio-codes-truncated": TA + ["--decode", "{z}/truncated.npy", "-o", "{o}"],
    # retrieval
    "search-truncated-wav": RS + ["{z}/truncated.wav", "--index", "{z}/index.npz"],
    "search-one-sample-wav": RS + ["{z}/one_sample.wav", "--index", "{z}/index.npz"],
    "search-nan-wav": RS + ["{z}/nan.wav", "--index", "{z}/index.npz"],
    "search-truncated-index": RS + ["{z}/good.wav", "--index", "{z}/truncated.npz"],
    "search-index-is-codes": RS + ["{z}/good.wav", "--index", "{z}/codes.npz"],
    "search-missing-index": RS + ["{z}/good.wav", "--index", "{z}/nope.npz"],
    "index-truncated-wav": ["retrieve", "index", "{z}/truncated.wav", "-o", "{o}/i.npz"],
    "index-nan-wav": ["retrieve", "index", "{z}/nan.wav", "-o", "{o}/i.npz"],
    "index-bomb-png": ["retrieve", "index", "{z}/bomb.png", "-o", "{o}/i.npz"],
    "index-12000x12000": ["retrieve", "index", "{z}/huge.png", "-o", "{o}/i.npz"],
    "index-pages-20000x20000": ["retrieve", "index", "{z}/bomb.png", "--pages", "-o", "{o}/i.npz"],
    "index-pages-binary": ["retrieve", "index", "{z}/binary.png", "--pages", "-o", "{o}/i.npz"],
    "index-output-is-folder": ["retrieve", "index", "{z}/good.wav", "-o", "{o}"],
    # eval
    "eval-amt-empty-midi": ["eval", "amt", "{z}/empty.mid", "--ref", "{z}/good.mid"],
    "eval-amt-binary-midi": ["eval", "amt", "{z}/binary.mid", "--ref", "{z}/good.mid"],
    "eval-amt-truncated-midi": ["eval", "amt", "{z}/truncated.mid", "--ref", "{z}/good.mid"],
    "eval-m2a-nan-wav": ["eval", "m2a", "{z}/nan.wav", "--ref", "{z}/good.mid"],
    "eval-m2a-truncated-wav": ["eval", "m2a", "{z}/truncated.wav", "--ref", "{z}/good.mid"],
    "eval-m2a-silent-wav": ["eval", "m2a", "{z}/silent.wav", "--ref", "{z}/good.mid"],
    "eval-omr-empty-lmx": ["eval", "omr", "{z}/empty.lmx", "--ref", "{z}/good.lmx"],
    "eval-omr-header-only-lmx": ["eval", "omr", "{z}/header_only.lmx", "--ref", "{z}/good.lmx"],
    "eval-omr-unknown-version": ["eval", "omr", "{z}/v9.lmx", "--ref", "{z}/good.lmx"],
    "eval-omr-binary-lmx": ["eval", "omr", "{z}/binary.lmx", "--ref", "{z}/good.lmx"],
    "eval-retrieval-empty-npy": ["eval", "retrieval", "{z}/empty.npy"],
    "eval-retrieval-truncated-npy": ["eval", "retrieval", "{z}/truncated.npy"],
    "eval-retrieval-objects-npy": ["eval", "retrieval", "{z}/objects.npy"],
    "eval-retrieval-npz": ["eval", "retrieval", "{z}/codes.npz"],
    # dataset
    "dataset-build-every-piece-fails": ["dataset", "build", "{z}/binary.krn", "{z}/broken.krn", "-o", "{o}/c"],
    "dataset-build-missing": ["dataset", "build", "{z}/nope", "-o", "{o}/c"],
    "dataset-resynth-every-piece-fails": ["dataset", "resynth", "{z}/corpus", "-o", "{o}/r", "--soundfont",
                                          "timgm6mb"],
    "dataset-align-every-piece-fails": ["dataset", "align", "{z}/corpus"],
    # usage errors found by the parser itself (one line for every command, not Click's box)
    "eval-omr-empty-lmx": "empty (0 bytes)", "eval-omr-header-only-lmx": "prediction LMX file has no tokens",
    "eval-omr-unknown-version": "unknown LMX file version '9.9'", "eval-omr-binary-lmx": "not a UTF-8 text",
    "usage-missing-argument": ["eval", "omr"],
    "usage-below-min": ["dataset", "build", "{z}/broken.krn", "-o", "{o}/c", "--workers", "0"],
    "usage-not-a-number": ["retrieve", "search", "{z}/good.wav", "--index", "{z}/index.npz", "-k", "many"],
    "usage-unknown-option": ["tokenize", "midi", "{z}/good.mid", "--nope"],
    "usage-unknown-command": ["tokenize", "pdf", "{z}/good.png"],
    "usage-unknown-group": ["transcribe", "{z}/good.wav"],
}


# What the one line must say, where the reason matters (a size is refused for its size, from the header).
SAYS = {
    "image-same-stems": "same output", "audio-same-stems": "same output", "image-same-file-twice": "same output",
    "image-12000x12000": "limit is 4,000,000 pixels", "index-12000x12000": "limit is 36,000,000 pixels", "image-20000x20000": "limit is 4,000,000 pixels",
    "image-5000x1000": "limit is 4,000,000 pixels", "index-bomb-png": "too large",
    "image-codes-4x4000x4000": "the limit is 1,000,000", "audio-codes-4x4000x4000": "has shape (4, 4000, 4000)",
    "audio-codes-40-minutes": "the limit is 1800 s", "audio-two-hours": "the limit is 1800 s",
    "audio-nan": "NaN", "search-nan-wav": "NaN", "index-nan-wav": "NaN", "eval-m2a-nan-wav": "NaN",
    "audio-one-sample": "too short", "search-one-sample-wav": "too short",
    "audio-truncated": "truncated", "search-truncated-wav": "truncated", "search-truncated-index": "truncated",
    "lmx-unknown-version": "unknown LMX file version '9.9'", "lmx-binary": "not a UTF-8 text",
    "notation-100-mb": "the limit is 64 MiB", "tokens-empty": "empty (0 bytes)", "tokens-far-end": "the limit is 10800 s", "tokens-no-notes": "no notes", "image-codes-empty": "empty (0 bytes)",
    "midi-max-seconds-nan": "--max-seconds", "notation-output-is-folder": "is a folder",
    "image-output-is-file": "is a file", "dataset-build-every-piece-fails": "2 of 2 pieces failed",
    "dataset-resynth-every-piece-fails": "2 of 2 pieces failed: p1: ", "dataset-align-every-piece-fails": "2 of 2 pieces failed: p1: ",
    "usage-missing-argument": "Missing argument 'preds'. (see 'umust eval omr --help')",
    "usage-below-min": "greater than or equal to 1 (see 'umust dataset build --help')",
    "usage-not-a-number": "Input should be a valid integer",
    "usage-unknown-option": "No such option: --nope (see 'umust tokenize midi --help')",
    "usage-unknown-command": "No such command 'pdf'. (see 'umust tokenize --help')",
    "usage-unknown-group": "No such command 'transcribe'. Did you mean 'translate'? (see 'umust --help')",
}
CORPUS_RECORDS = {"build.json", "manifest.jsonl", "errors.jsonl", "error.json"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    z = make_zoo(tmp_path_factory.mktemp("zoo"))
    # a real index, so that the search cases get as far as their query
    result = runner.invoke(app, ["retrieve", "index", str(z / "good.wav"), "-o", str(z / "index.npz")])
    assert result.exit_code == 0, result.output
    return z


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (temporary ones included) with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def run_case(argv: list[str], zoo: Path, out: Path):
    """Run one case in process; returns (result, files in the output folder, zoo changed)."""
    out.mkdir(parents=True, exist_ok=True)
    before = _files(zoo)
    args = [a.format(z=zoo, o=out) for a in argv]
    result = runner.invoke(app, args)
    return result, _files(out), _files(zoo) != before


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, zoo, tmp_path):
    result, left, zoo_changed = run_case(CASES[case], zoo, tmp_path / "out")
    err = result.stderr.splitlines()
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.stderr}"
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    assert SAYS.get(case, "") in err[0]
    assert "Traceback" not in result.stdout + result.stderr
    if case.startswith(("dataset-build", "dataset-resynth")):  # a corpus keeps its records of what failed (re-runs resume)
        left = {k: v for k, v in left.items() if Path(k).name not in CORPUS_RECORDS}
    assert left == {} and not zoo_changed, f"{case} left {left}"


def test_a_checkpoint_whose_config_disagrees_with_its_tensors_is_one_line(zoo, tmp_path):
    """The ENGINE engineer's checkpoint.load_module says so in one line (exit 2)."""
    import json
    import shutil

    from umust_cli import registry

    ckpt = tmp_path / "codec"
    shutil.copytree(registry.resolve("image-codec", None), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["base_channels"] *= 2  # every conv's tensors now disagree with the config
    (ckpt / "config.json").write_text(json.dumps(config))
    result, left, _ = run_case(TI + ["{z}/good.png", "-o", "{o}", "--codec", str(ckpt)], zoo, tmp_path / "out")
    err = result.stderr.splitlines()
    assert result.exit_code == 2 and len(err) == 1 and err[0].startswith("error: "), result.stderr[:2000]
    assert left == {}


def test_some_files_failing_exits_3_and_keeps_the_others(zoo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, TI + [str(zoo / "good.png"), str(zoo / "binary.png"), "-o", str(out), "--json"])
    assert result.exit_code == 3, result.stderr
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: 1 of 2 files failed: ") and "binary.png" in err[0]
    assert (out / "good.npy").is_file() and not list(out.glob("binary*"))


def test_image_and_audio_print_the_same_json_keys(zoo, tmp_path):
    import json

    rows = []
    for cmd, src in ((TI, "good.png"), (TA, "good.wav")):
        result = runner.invoke(app, cmd + [str(zoo / src), str(zoo / "nope"), "-o", str(tmp_path), "--json"])
        assert result.exit_code == 3, result.stderr
        report = json.loads(result.stdout)
        rows.append((sorted(report), set(report["done"][0]), sorted(report["failed"][0])))
    same = {"input", "output", "variants", "shape", "tokens", "summary"}  # (an image row adds its scale)
    assert rows[0][0] == rows[1][0] == ["done", "failed"] and rows[0][2] == rows[1][2] == ["error", "input"]
    assert same <= rows[0][1] and same <= rows[1][1]


@pytest.mark.parametrize("args", [["tokenize", "audio", "{z}/good.wav", "-o", "{o}"],
                                  ["tokenize", "midi", "{z}/good.mid", "-o", "{o}/x.txt"]])
def test_sigterm_leaves_no_temporary_file(zoo, tmp_path, args):
    """A real process, killed with SIGTERM while its output is half written: exit 143, one
    line, and nothing in the output folder (numpy's and pretty_midi's writers are slowed down
    so that the signal lands while the temporary file exists)."""
    out = tmp_path / "out"
    out.mkdir()
    driver = (
        "import sys, time, numpy, pretty_midi\n"
        "def slow(write):\n"
        "    def wrapped(*a, **k):\n"
        "        write(*a, **k); print('writing', flush=True); time.sleep(60)\n"
        "    return wrapped\n"
        "numpy.save = slow(numpy.save)\n"
        "pretty_midi.PrettyMIDI.write = slow(pretty_midi.PrettyMIDI.write)\n"
        "import pathlib\n"
        "pathlib.Path.write_text = slow(pathlib.Path.write_text)\n"
        "from umust_cli.cli.main import app\n"
        "sys.argv = ['umust'] + sys.argv[1:]\n"
        "app()\n"
    )
    argv = [a.format(z=zoo, o=out) for a in args]
    proc = subprocess.Popen([sys.executable, "-c", driver] + argv, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".") for p in out.iterdir()) and proc.poll() is None:
        assert time.monotonic() < deadline, "the command never started writing"
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    err = stderr.splitlines()
    assert len(err) == 1 and err[0] == "error: terminated by SIGTERM", stderr
    assert list(out.iterdir()) == []


def test_usage_errors_are_one_line_from_python_dash_m_too():
    """``python -m umust_cli`` is the same command: a usage error is one line naming 'umust',
    and a bare group (or no arguments) still prints its help, exit 2."""
    def umust(*args):
        return subprocess.run([sys.executable, "-m", "umust_cli", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)

    out = umust("dataset", "build", "x.krn", "-o", "c", "--workers", "0")
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.splitlines() == ["error: Invalid value for '--workers' / '-j': Input should be greater than or equal to 1 "
                                       "(see 'umust dataset build --help')"]
    for args in ((), ("tokenize",)):
        out = umust(*args)
        assert out.returncode == 2 and "Usage: umust" in out.stdout + out.stderr and "error:" not in out.stderr
    out = umust("--version")
    assert out.returncode == 0 and out.stdout.startswith("umust ")


# ------------------------------------------------------------------ the loaders accept good input
def test_eval_omr_reads_the_lmx_header_as_a_header(zoo, tmp_path):
    """The .lmx header (version, flavor, ---) is not tokens: a prediction in that layout scores
    SER 0 against the same tokens bare."""
    import json

    bare = tmp_path / "good.txt"
    bare.write_text((zoo / "good.lmx").read_text().split("---\n", 1)[1])
    result = runner.invoke(app, ["eval", "omr", str(zoo / "good.lmx"), "--ref", str(bare), "--json"])
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)["rows"][0]
    assert row["SER"] == 0 and row["ref_tokens"] == len(bare.read_text().split())


def test_load_audio_reads_a_span_mono_or_per_channel_and_resamples(tmp_path):
    from umust_cli.inputs import load_audio

    stereo = np.stack([_tone(2.0), 0.5 * _tone(2.0)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, SR, subtype="FLOAT")
    x, rate = load_audio(tmp_path / "s.wav", start=0.5, end=1.5)
    assert rate == SR and x.shape == (SR,) and np.allclose(x, stereo[SR // 2: SR // 2 + SR].mean(axis=1))
    both, _ = load_audio(tmp_path / "s.wav", keep_channels=True)
    assert both.shape == (2 * SR, 2)
    y, rate = load_audio(tmp_path / "s.wav", sample_rate=22050)
    assert rate == 22050 and abs(y.size - SR) <= 1


def test_load_image_composites_transparency_over_white(tmp_path):
    from umust_cli.inputs import load_image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:4, 2:4] = (0, 0, 0, 255)  # black ink, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    gray = load_image(tmp_path / "t.png")
    assert gray.dtype == np.uint8 and gray[0, 0] == 255 and gray[2, 2] == 0


def test_load_lmx_and_codes_accept_what_umust_writes(tmp_path):
    from umust_cli.codecs.notation import lmx_file_text
    from umust_cli.inputs import load_codes, load_lmx

    (tmp_path / "x.lmx").write_text(lmx_file_text("measure clef:G2", "extended"))
    assert load_lmx(tmp_path / "x.lmx").endswith("measure clef:G2\n")
    np.save(tmp_path / "c.npy", np.arange(12, dtype=np.int16).reshape(4, 3))
    codes = load_codes(tmp_path / "c.npy", ndim=(2,), high=1024)
    assert codes.dtype == np.int64 and codes.shape == (4, 3)
