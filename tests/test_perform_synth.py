"""Performance variety (perform.py) and FluidSynth synthesis (synth.py)."""

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

from umust_cli.data.perform import PerformanceConfig, perform, slice_midi
from umust_cli.data.synth import SAMPLE_RATE, available_soundfonts, cut, synthesize, write_wav
from umust_cli.errors import RenderError

SCALE_ONSETS = 0.5 + 0.5 * np.arange(8)  # seconds
SCALE_PITCHES = (60, 62, 64, 65, 67, 69, 71, 72)


def _scale_midi() -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for t, p in zip(SCALE_ONSETS, SCALE_PITCHES):
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=p, start=float(t), end=float(t) + 0.4))
    pm.instruments.append(piano)
    return pm


def _score_midi(n: int = 400) -> pretty_midi.PrettyMIDI:
    """Two staves of a score-like MIDI: equal velocities, a note every 0.25 s from 1 s on, and a pedal."""
    pm = pretty_midi.PrettyMIDI()
    for program, base in ((0, 72), (1, 48)):
        inst = pretty_midi.Instrument(program=program, name=f"staff{program}")
        for i in range(n):
            t = 1.0 + 0.25 * i
            inst.notes.append(pretty_midi.Note(90, base + i % 12, t, t + 0.2))
        pm.instruments.append(inst)
    pedal = [pretty_midi.ControlChange(64, 127 if k % 2 == 0 else 0, 1.0 + 2.0 * k) for k in range(20)]
    pm.instruments[1].control_changes = pedal
    return pm


def _onsets(pm: pretty_midi.PrettyMIDI) -> list[np.ndarray]:
    return [np.array([n.start for n in inst.notes]) for inst in pm.instruments]


# ---- perform ----------------------------------------------------------------------------------


def test_perform_is_deterministic_per_seed_and_leaves_input_alone():
    score = _score_midi()
    cfg = PerformanceConfig()
    a, b, c = perform(score, cfg, 5), perform(score, cfg, 5), perform(score, cfg, 6)
    assert a.tempo_factor == b.tempo_factor and a.seed == 5

    def notes(p):
        return [(n.start, n.end, n.pitch, n.velocity) for i in p.midi.instruments for n in i.notes]

    assert notes(a) == notes(b)
    assert notes(a) != notes(c)
    assert all(n.velocity == 90 and n.start == 1.0 + 0.25 * k for k, n in enumerate(score.instruments[0].notes))


def test_tempo_scales_every_time_and_perf_time_matches():
    score = _score_midi()
    cfg = PerformanceConfig(tempo_range=(0.8, 1.25), jitter_ms=0.0)
    factors = []
    for seed in range(6):
        perf = perform(score, cfg, seed)
        assert 0.8 <= perf.tempo_factor <= 1.25
        factors.append(perf.tempo_factor)
        for s_inst, p_inst in zip(score.instruments, perf.midi.instruments):
            assert int(p_inst.program) == int(s_inst.program) and p_inst.name == s_inst.name
            for sn, pn in zip(s_inst.notes, p_inst.notes):
                assert pn.start == pytest.approx(perf.perf_time(sn.start), abs=1e-9)
                assert pn.end == pytest.approx(perf.perf_time(sn.end), abs=1e-9)
                assert pn.pitch == sn.pitch
        pedal = [c.time for c in perf.midi.instruments[1].control_changes]
        assert pedal == pytest.approx([perf.perf_time(1.0 + 2.0 * k) for k in range(20)])
    assert perf.perf_time(10.0) == pytest.approx(10.0 / perf.tempo_factor)
    assert len(set(factors)) == 6


@pytest.mark.parametrize("curve", ["flat", "ramp", "smooth"])
def test_velocities_stay_in_range(curve):
    cfg = PerformanceConfig(velocity_range=(50, 70), velocity_curve=curve)
    vel = np.array([n.velocity for i in perform(_score_midi(), cfg, 1).midi.instruments for n in i.notes])
    assert vel.min() >= 50 and vel.max() <= 70
    assert vel.std() > 1.0  # not all equal any more (curve + per-note noise)


def test_smooth_curve_varies_slowly():
    cfg = PerformanceConfig(velocity_range=(30, 110), velocity_curve="smooth", velocity_noise=0.0, jitter_ms=0.0)
    vel = np.array([n.velocity for n in perform(_score_midi(), cfg, 2).midi.instruments[0].notes], dtype=float)
    assert vel.max() - vel.min() > 20  # it moves over the piece...
    assert np.abs(np.diff(vel)).max() <= 10  # ...but smoothly (notes are 0.25 s apart, knots 4 s)


def test_jitter_std_is_as_configured():
    score = _score_midi(n=1000)
    cfg = PerformanceConfig(jitter_ms=10.0)
    perf = perform(score, cfg, 3)
    errors = []
    for s_inst, p_inst in zip(score.instruments, perf.midi.instruments):
        expected = np.array([perf.perf_time(t) for t in _onsets(score)[score.instruments.index(s_inst)]])
        got = np.sort(_onsets(perf.midi)[perf.midi.instruments.index(p_inst)])
        errors.append(got - expected)  # notes 0.25 s apart never swap with 10 ms jitter
        durations = np.array([n.end - n.start for n in p_inst.notes])
        assert durations == pytest.approx(0.2 / perf.tempo_factor)  # the offset moves with the onset
    errors = np.concatenate(errors) * 1000
    assert 8.5 < errors.std() < 11.5
    assert abs(errors.mean()) < 1.5
    assert np.abs(errors).max() < 60


def test_slice_keeps_exactly_the_notes_in_the_window():
    perf = perform(_score_midi(), PerformanceConfig(), 4).midi
    start, end = 20.0, 30.0
    part = slice_midi(perf, start, end)
    assert [int(i.program) for i in part.instruments] == [int(i.program) for i in perf.instruments]
    for full, cut_inst in zip(perf.instruments, part.instruments):
        kept = [n for n in full.notes if start <= n.start < end]
        assert len(cut_inst.notes) == len(kept) > 0
        for k, n in zip(kept, cut_inst.notes):
            assert n.start == pytest.approx(k.start - start) and n.pitch == k.pitch and n.velocity == k.velocity
            assert n.end == pytest.approx(min(k.end, end) - start)
            assert 0 <= n.start < n.end <= end - start + 1e-9
    # the pedal state at the window start is restated at time 0, later changes are shifted
    pedal = part.instruments[1].control_changes
    before = [c for c in perf.instruments[1].control_changes if c.time < start]
    assert pedal[0].time == 0.0 and pedal[0].value == before[-1].value
    assert all(0 <= c.time < end - start for c in pedal)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        perform(_score_midi(4), PerformanceConfig(velocity_curve="wiggly"), 0)
    with pytest.raises(ValueError):
        perform(_score_midi(4), PerformanceConfig(velocity_range=(0, 200)), 0)


# ---- synth ------------------------------------------------------------------------------------

SOUNDFONTS = available_soundfonts()
_SLOW_TO_LOAD = {"musescore"}  # the .sf3 takes 8+ s to decode


def _soundfont_params():
    if not SOUNDFONTS:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no Debian soundfont installed"))]
    return [pytest.param(name, marks=[pytest.mark.slow] if name in _SLOW_TO_LOAD else []) for name in SOUNDFONTS]


def test_available_soundfonts_are_files():
    for name, path in SOUNDFONTS.items():
        assert path.is_file() and path.suffix in (".sf2", ".sf3"), name


@pytest.mark.parametrize("name", _soundfont_params())
def test_scale_onsets_and_length(name):
    import librosa

    pm = _scale_midi()
    audio = synthesize(pm, SOUNDFONTS[name])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() == pytest.approx(0.9, abs=1e-3)
    assert len(audio) >= pm.get_end_time() * SAMPLE_RATE
    assert len(audio) < (pm.get_end_time() + 6.5) * SAMPLE_RATE
    detected = librosa.onset.onset_detect(y=audio, sr=SAMPLE_RATE, hop_length=256, units="time")
    assert len(detected) == len(SCALE_ONSETS), detected
    errors = np.abs(detected - SCALE_ONSETS)
    assert errors.max() < 0.030, errors


def test_fresh_synthesis_is_bit_identical_and_reuse_is_close():
    sf = SOUNDFONTS.get("timgm6mb") or next(iter(SOUNDFONTS.values()), None)
    if sf is None:
        pytest.skip("no Debian soundfont installed")
    pm = _scale_midi()
    a, b = synthesize(pm, sf, reuse=False), synthesize(pm, sf, reuse=False)
    assert np.array_equal(a, b)
    c = synthesize(pm, sf, reuse=True)
    n = int(pm.get_end_time() * SAMPLE_RATE)
    assert np.abs(c[:n] - a[:n]).max() < 0.1


def test_synth_keeps_programs():
    sf = SOUNDFONTS.get("timgm6mb") or next(iter(SOUNDFONTS.values()), None)
    if sf is None:
        pytest.skip("no Debian soundfont installed")
    piano, flute = _scale_midi(), _scale_midi()
    flute.instruments[0].program = 73
    a, b = synthesize(piano, sf), synthesize(flute, sf)
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).mean() > 0.01  # a different instrument sounds different


def test_loud_cluster_does_not_clip():
    sf = SOUNDFONTS.get("fluidr3") or next(iter(SOUNDFONTS.values()), None)
    if sf is None:
        pytest.skip("no Debian soundfont installed")
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(program=0))
    pm.instruments[0].notes = [pretty_midi.Note(127, p, 0.1, 1.0) for p in range(36, 96)]  # 60 keys at once
    audio = synthesize(pm, sf)
    assert np.abs(audio).max() == pytest.approx(0.9, abs=1e-3)
    assert (np.abs(audio) > 0.89).sum() < 20  # a clipped rendering would have a flat top at the peak


def test_silent_midi_is_a_render_error():
    sf = next(iter(SOUNDFONTS.values()), None)
    if sf is None:
        pytest.skip("no Debian soundfont installed")
    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(program=0))
    with pytest.raises(RenderError):
        synthesize(empty, sf)
    with pytest.raises(RenderError):
        synthesize(_scale_midi(), sf.parent / "no-such-font.sf2", reuse=False)


def test_cut_returns_the_right_number_of_samples():
    audio = np.arange(10 * SAMPLE_RATE, dtype=np.float32)
    piece = cut(audio, SAMPLE_RATE, 1.5, 2.25)
    assert len(piece) == round(0.75 * SAMPLE_RATE)
    assert piece[0] == round(1.5 * SAMPLE_RATE)
    tail = cut(audio, SAMPLE_RATE, 9.5, 11.0)  # past the end: zero-padded to the asked length
    assert len(tail) == round(1.5 * SAMPLE_RATE) and tail[-1] == 0.0
    assert len(cut(audio, SAMPLE_RATE, 3.0, 3.0)) == 0


@pytest.mark.parametrize("subtype, atol", [("PCM_16", 1 / 32768), ("FLOAT", 0.0)])
def test_write_wav_round_trip(tmp_path, subtype, atol):
    audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    path = tmp_path / "sub" / "tone.wav"
    write_wav(path, audio, subtype=subtype)
    back, sr = soundfile.read(path, dtype="float32")
    assert sr == 44100 and back.shape == audio.shape
    assert np.abs(back - audio).max() <= atol
    assert [p.name for p in path.parent.iterdir()] == ["tone.wav"]  # no temporary file left behind


# ---- end to end on a real score -----------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
JOPLIN = SHARED / "corpora" / "joplin" / "kern" / "bethena.krn"


@pytest.mark.slow
@pytest.mark.skipif(not JOPLIN.is_file(), reason=f"shared corpus not found: {JOPLIN}")
def test_joplin_rag_performed_and_synthesized(tmp_path):
    import base64
    import warnings

    import librosa
    import verovio

    sf = SOUNDFONTS.get("timgm6mb") or next(iter(SOUNDFONTS.values()), None)
    if sf is None:
        pytest.skip("no Debian soundfont installed")
    tk = verovio.toolkit()
    tk.setOptions({"inputFrom": "humdrum"})
    assert tk.loadFile(str(JOPLIN))
    (tmp_path / "score.mid").write_bytes(base64.b64decode(tk.renderToMIDI()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verovio puts the tempo on a non-zero track
        score = pretty_midi.PrettyMIDI(str(tmp_path / "score.mid"))
    perf = perform(score, PerformanceConfig(), seed=0)
    assert perf.midi.get_end_time() == pytest.approx(score.get_end_time() / perf.tempo_factor, abs=0.1)
    opening = slice_midi(perf.midi, 0.0, perf.perf_time(60.0))  # the first minute keeps the test short
    audio = synthesize(opening, sf)
    assert len(audio) >= opening.get_end_time() * SAMPLE_RATE
    # a 20 s window, cut from the rendering, shows the window's note onsets
    start, end = perf.perf_time(20.0), perf.perf_time(40.0)
    window = cut(audio, SAMPLE_RATE, start, end)
    notes = slice_midi(perf.midi, start, end)
    onsets = np.unique(np.round([n.start for i in notes.instruments for n in i.notes], 2))
    detected = librosa.onset.onset_detect(y=window, sr=SAMPLE_RATE, hop_length=256, units="time")
    hit = np.mean([np.abs(detected - t).min() < 0.05 for t in onsets])
    assert len(onsets) > 40 and hit > 0.9, (len(onsets), hit)
