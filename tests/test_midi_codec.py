"""MIDI event codec: vocabulary, round trips, segments, text format, errors, CLI."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import pretty_midi
import pytest

from umust_cli.codecs.base import Codec
from umust_cli.codecs.midi import (
    DRUM_PROGRAM, Event, MidiCodec, MidiCodecConfig, MidiSegment, quantize_notes,
    segments_to_text, text_to_segments,
)
from umust_cli.errors import MidiError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
JOPLIN = SHARED / "corpora" / "joplin" / "kern"
TOL = 0.010            # required onset/offset accuracy (s)
QUANT = 0.005 + 1e-6   # nearest-step quantization error (s)
BIN_WIDTH = 127 / 32


# ---- helpers ---------------------------------------------------------------

def midi_build(parts: dict[tuple[int, bool], list[tuple[int, float, float, int]]]) -> pretty_midi.PrettyMIDI:
    """{(program, is_drum): [(pitch, start, end, velocity), ...]} -> PrettyMIDI."""
    pm = pretty_midi.PrettyMIDI()
    for (program, drum), notes in parts.items():
        inst = pretty_midi.Instrument(program=program, is_drum=drum)
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
        pm.instruments.append(inst)
    return pm


def midi_notes(pm: pretty_midi.PrettyMIDI) -> list[tuple]:
    """Sorted (program_key, pitch, start, end, velocity); drums have key DRUM_PROGRAM."""
    out = []
    for inst in pm.instruments:
        key = DRUM_PROGRAM if inst.is_drum else int(inst.program)
        out += [(key, n.pitch, n.start, n.end, n.velocity) for n in inst.notes]
    return sorted(out)


def midi_random(seed: int, seconds: float, programs=((0, False), (40, False), (0, True))) -> pretty_midi.PrettyMIDI:
    """Random notes, never overlapping on one program+pitch, lasting >= 20 ms, off the grid."""
    rng = random.Random(seed)
    parts = {}
    for program, drum in programs:
        notes = []
        for pitch in rng.sample(range(30, 90), 8):
            t = rng.uniform(0, 1)
            while True:
                dur = rng.uniform(0.02, 4.0)
                if t + dur > seconds:
                    break
                notes.append((pitch, t, t + dur, rng.randint(1, 127)))
                t += dur + rng.uniform(0.0, 2.0)
        parts[(program, drum)] = notes
    return midi_build(parts)


def midi_assert_close(original: pretty_midi.PrettyMIDI, decoded: pretty_midi.PrettyMIDI,
                      tol: float = QUANT) -> None:
    a, b = midi_notes(original), midi_notes(decoded)
    assert len(a) == len(b)
    for (ka, pa, sa, ea, va), (kb, pb, sb, eb, vb) in zip(a, b):
        assert (ka, pa) == (kb, pb)
        assert abs(sa - sb) <= tol and abs(ea - eb) <= tol, ((ka, pa, sa, ea), (sb, eb))
        assert abs(va - vb) < BIN_WIDTH


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def codec() -> MidiCodec:
    return MidiCodec()


@pytest.fixture(scope="module")
def long_performance() -> pretty_midi.PrettyMIDI:
    """65 s, three instruments, plus notes held across the 10 s boundaries."""
    pm = midi_random(seed=7, seconds=65.0)
    held = pretty_midi.Instrument(program=73)
    held.notes = [pretty_midi.Note(90, 70, 8.003, 31.337),   # spans two boundaries
                  pretty_midi.Note(60, 72, 19.5, 20.0),       # ends exactly at a boundary
                  pretty_midi.Note(61, 74, 40.0, 40.5),       # starts exactly at a boundary
                  pretty_midi.Note(62, 76, 0.0, 64.999)]      # the whole piece
    pm.instruments.append(held)
    return pm


# ---- vocabulary ------------------------------------------------------------

def test_vocabulary_layout(codec):
    names = codec.token_names()
    assert isinstance(codec, Codec) and codec.modality == "midi"
    assert len(names) == codec.vocab_size == len(set(names))
    assert codec.vocab_size == 3001 + 128 + 33 + 129 + 2
    for name in ["shift:12", "program:0", "velocity:20", "pitch:60", "tie", "eos", "program:drum"]:
        assert names[codec.token_id(name)] == name
    for i in range(codec.vocab_size):
        assert codec.events.encode_event(codec.events.decode_event_index(i)) == i
    assert codec.events.event_type_range("pitch") == (3001, 3001 + 127)
    assert codec.events.decode_event_index(codec.token_id("shift:12")) == Event("shift", 12)


def test_config_changes_vocabulary():
    small = MidiCodec(MidiCodecConfig(max_shift_seconds=5.0, num_velocity_bins=1))
    assert small.vocab_size == 501 + 128 + 2 + 129 + 2


# ---- single-segment round trips --------------------------------------------

def test_round_trip_multi_instrument(codec):
    pm = midi_random(seed=1, seconds=29.0)
    ids = codec.encode(pm)
    assert all(0 <= i < codec.vocab_size for i in ids)
    assert codec.token_name(ids[-1]) == "eos"
    result = codec.decode_with_stats(ids)
    assert result.num_invalid == 0
    midi_assert_close(pm, result.midi)
    assert {(i.program, i.is_drum) for i in result.midi.instruments} == {(0, False), (40, False), (0, True)}


def test_round_trip_through_files(codec, tmp_path):
    pm = midi_random(seed=2, seconds=20.0, programs=((0, False), (33, False)))
    src = tmp_path / "in.mid"
    src.write_bytes(midi_bytes(pm))
    ids = codec.encode(src)
    assert json.loads(json.dumps(list(ids))) == list(ids)  # plain ints, not numpy ones
    assert ids.shape == (len(ids),) and ids.size is None
    decoded = codec.decode(ids)
    out = tmp_path / "out.mid"
    decoded.write(str(out))
    # PrettyMIDI's own file write rounds to ticks (~1 ms), hence TOL here.
    midi_assert_close(pm, pretty_midi.PrettyMIDI(str(out)), tol=TOL)


def test_encode_known_tokens(codec):
    pm = midi_build({(0, False): [(60, 0.0, 0.5, 127), (64, 0.254, 0.5, 64)]})
    names = [codec.token_name(i) for i in codec.encode(pm)]
    assert names == ["tie", "program:0", "velocity:32", "pitch:60", "shift:25", "velocity:17",
                     "pitch:64", "shift:50", "velocity:0", "pitch:60", "pitch:64", "eos"]


def test_zero_length_and_overlapping_notes(codec):
    pm = midi_build({(0, False): [
        (60, 1.0, 1.0, 80),     # zero length -> one step
        (62, 2.0, 3.0, 80),     # overlaps the next 62: cut at 2.5
        (62, 2.5, 3.5, 90),
        (64, 4.0, 4.2, 80),     # same onset as the next 64: merged into the longer one
        (64, 4.0, 4.6, 100),
    ]})
    got = [(p, round(s, 3), round(e, 3)) for _, p, s, e, _ in midi_notes(codec.decode(codec.encode(pm)))]
    assert got == [(60, 1.0, 1.01), (62, 2.0, 2.5), (62, 2.5, 3.5), (64, 4.0, 4.6)]


def test_repeated_note_at_same_step(codec):
    pm = midi_build({(5, False): [(60, 0.0, 0.5, 80), (60, 0.5, 1.0, 80)]})
    result = codec.decode_with_stats(codec.encode(pm))
    assert result.num_invalid == 0
    midi_assert_close(pm, result.midi)


def test_encode_too_long_points_to_segments(codec):
    pm = midi_build({(0, False): [(60, 0.0, 30.0, 80), (61, 30.0, 30.5, 80)]})
    with pytest.raises(MidiError, match="encode_segments"):
        codec.encode(pm)
    assert codec.decode(codec.encode(midi_build({(0, False): [(60, 0.0, 30.0, 80)]}))).get_end_time() == 30.0


def test_empty_performance(codec):
    assert [codec.token_name(i) for i in codec.encode(pretty_midi.PrettyMIDI())] == ["tie", "eos"]
    assert codec.decode(codec.encode(pretty_midi.PrettyMIDI())).instruments == []


# ---- lenient decoding and errors --------------------------------------------

def test_decode_is_lenient_and_counts(codec):
    names = ["tie", "pitch:60",                     # pitch before program/velocity
             "program:0", "velocity:20", "pitch:60", "shift:50",
             "shift:40",                            # shift going back
             "velocity:0", "pitch:61",              # off of a silent note
             "pitch:60", "tie",                     # second tie
             "eos", "pitch:70"]                     # after eos: ignored
    result = codec.decode_with_stats([codec.token_id(n) for n in names])
    assert result.num_invalid == 4
    assert [(p, s, e) for _, p, s, e, _ in midi_notes(result.midi)] == [(60, 0.0, 0.5)]


def test_decode_missing_tie_and_open_notes(codec):
    ids = [codec.token_id(n) for n in ["program:1", "velocity:10", "pitch:50", "shift:30"]]
    result = codec.decode_with_stats(ids)
    assert result.num_invalid == 1  # the missing tie token
    assert [(k, p, s, e) for k, p, s, e, _ in midi_notes(result.midi)] == [(1, 50, 0.0, 0.3)]


def test_decode_ids_out_of_range(codec):
    for bad in ([codec.vocab_size], [-1], [0, 10**6]):
        with pytest.raises(MidiError, match="outside"):
            codec.decode(bad)


@pytest.mark.parametrize("content", [b"not a midi file at all", b"", b"truncated"])
def test_corrupt_file(codec, tmp_path, content):
    path = tmp_path / "broken.mid"
    if content == b"truncated":
        good = midi_bytes(midi_random(seed=3, seconds=5.0))
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(MidiError, match="broken.mid"):
        codec.encode(path)


# ---- segments ----------------------------------------------------------------

def test_segments_restore_every_note(codec, long_performance):
    segments = codec.encode_segments(long_performance, max_seconds=10.0)
    assert [(s.start, s.end) for s in segments] == [(10.0 * k, min(10.0 * k + 10, 65.0)) for k in range(7)]
    ties = [s.ids[: s.ids.index(codec.token_id("tie"))] for s in segments]
    assert ties[0] == [] and all(ties[1:])  # the 0..65 s note is tied into every later segment
    assert codec.token_id("pitch:70") in ties[2] and codec.token_id("pitch:70") in ties[3]
    assert codec.token_id("pitch:72") not in ties[2]  # ends exactly at 20 s
    result = codec.decode_segments_with_stats(segments)
    assert result.num_invalid == 0
    midi_assert_close(long_performance, result.midi)


def test_segments_max_tokens(codec, long_performance):
    for max_tokens in (64, 200):
        segments = codec.encode_segments(long_performance, max_seconds=10.0, max_tokens=max_tokens)
        assert all(len(s.ids) <= max_tokens for s in segments)
        assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
        assert len(segments) > 7
        midi_assert_close(long_performance, codec.decode_segments(segments))
    with pytest.raises(MidiError, match="max_tokens"):
        codec.encode_segments(long_performance, max_tokens=8)


def test_segments_bad_window(codec, long_performance):
    with pytest.raises(MidiError, match="max_seconds"):
        codec.encode_segments(long_performance, max_seconds=31.0)


def test_unreleased_note_ends_with_its_segment(codec):
    body = [codec.token_id(n) for n in ["tie", "program:0", "velocity:10", "pitch:60", "shift:100", "eos"]]
    nxt = [codec.token_id(n) for n in ["tie", "eos"]]  # 60 is not tied: it ended at 2.0
    segments = [MidiSegment(1.0, 2.0, body), MidiSegment(2.0, 3.0, nxt)]
    assert [(p, s, e) for _, p, s, e, _ in midi_notes(codec.decode_segments(segments))] == [(60, 1.0, 2.0)]


# ---- text format ---------------------------------------------------------------

def test_text_round_trip(codec, long_performance):
    segments = codec.encode_segments(long_performance, max_seconds=10.0)
    text = segments_to_text(codec, segments)
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == len(segments)
    assert lines[1].startswith("@10.000 20.000 program:")
    assert text_to_segments(codec, text) == segments


@pytest.mark.parametrize("text, line", [
    ("@0.000 1.000 tie eos\n@1.000 2.000 tie pitch:999 eos\n", 2),
    ("@0.000 1.000 tie eos\n\n0.000 1.000 tie\n", 3),
    ("@zero 1.000 tie\n", 1),
    ("@2.000 1.000 tie\n", 1),
    ("@1.0\n", 1),
])
def test_text_errors_name_the_line(codec, text, line):
    with pytest.raises(MidiError, match=f"line {line}"):
        text_to_segments(codec, text)


# ---- a real score ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature")
@pytest.mark.skipif(not JOPLIN.is_dir(), reason=f"corpus not found: {JOPLIN}")
def test_kern_score_via_verovio(codec, tmp_path):
    verovio = pytest.importorskip("verovio")
    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()
    assert tk.loadFile(str(JOPLIN / "breeze.krn"))
    path = tmp_path / "breeze.mid"
    path.write_bytes(base64.b64decode(tk.renderToMIDI()))
    pm = pretty_midi.PrettyMIDI(str(path))
    with pytest.raises(MidiError, match="encode_segments"):
        codec.encode(path)  # a whole rag is longer than one segment
    segments = codec.encode_segments(path, max_seconds=10.0, max_tokens=512)
    assert all(len(s.ids) <= 512 for s in segments)
    decoded = codec.decode_segments_with_stats(segments)
    assert decoded.num_invalid == 0
    # Every note onset of the score survives (hands merge into one piano part).
    onsets = lambda m: {(p, round(s * 100)) for _, p, s, _, _ in midi_notes(m)}
    assert onsets(decoded.midi) == onsets(pm)
    # And the decoded notes are exactly the quantized ones.
    expect = sorted((n.pitch, n.on, n.off) for n in quantize_notes(pm, codec.config))
    got = sorted((p, round(s * 100), round(e * 100)) for _, p, s, e, _ in midi_notes(decoded.midi))
    assert got == expect


# ---- CLI ----------------------------------------------------------------------

def test_cli_tokenize_and_decode(tmp_path, long_performance):
    from typer.testing import CliRunner
    from umust_cli.cli.main import app

    src = tmp_path / "perf.mid"
    src.write_bytes(midi_bytes(long_performance))
    runner = CliRunner()
    res = runner.invoke(app, ["tokenize", "midi", str(src), "-o", str(tmp_path / "perf.txt")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "perf.txt").read_text()
    assert len(text.splitlines()) == 7 and text.startswith("@0.000 10.000 tie ")
    res = runner.invoke(app, ["tokenize", "midi", "--decode", str(tmp_path / "perf.txt"),
                              "-o", str(tmp_path / "back.mid")])
    assert res.exit_code == 0, res.output
    midi_assert_close(long_performance, pretty_midi.PrettyMIDI(str(tmp_path / "back.mid")), tol=TOL)
    res = runner.invoke(app, ["tokenize", "midi", str(src)])
    assert res.exit_code == 0 and res.output == text
    res = runner.invoke(app, ["tokenize", "midi", str(src), "--json"])
    assert res.exit_code == 0
    ids = json.loads(res.output)["segments"][0]["ids"]
    assert segments_to_text(MidiCodec(), [MidiSegment(0.0, 10.0, ids)]) == text.splitlines(True)[0]

    (tmp_path / "bad.mid").write_bytes(b"garbage")
    res = runner.invoke(app, ["tokenize", "midi", str(tmp_path / "bad.mid")])
    assert res.exit_code == 2
