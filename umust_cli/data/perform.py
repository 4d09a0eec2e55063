"""Performance variety for score MIDI: global tempo, a velocity curve and onset jitter.

A score MIDI (verovio's, one instrument per staff, every velocity equal) is
turned into a "performed" MIDI that a synthesiser can play. The mapping from
score time to performance time is a single global factor so that verovio's
timemap (score seconds) stays usable for cutting audio by system::

    perf_seconds = score_seconds / tempo_factor      (1.2 = 20% faster)

Onset jitter is added on top of that and is *not* part of ``perf_time``.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed on
the same MIDI always gives the same performance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi

VELOCITY_CURVES = ("flat", "ramp", "smooth")


@dataclass(frozen=True)
class PerformanceConfig:
    tempo_range: tuple[float, float] = (0.9, 1.1)  # global tempo factor drawn per piece (1.2 = 20% faster)
    velocity_range: tuple[int, int] = (40, 100)  # velocity curve (and every note) stays inside this
    velocity_curve: str = "smooth"  # "flat" | "ramp" | "smooth" (random smooth curve over time)
    jitter_ms: float = 10.0  # std of onset jitter, ms (the offset moves with the onset)
    velocity_knot_s: float = 4.0  # "smooth": one random knot every this many performance seconds
    velocity_noise: float = 4.0  # std of per-note velocity noise around the curve


@dataclass(frozen=True)
class Performance:
    midi: pretty_midi.PrettyMIDI  # the performed MIDI
    tempo_factor: float
    seed: int

    def perf_time(self, score_seconds: float) -> float:
        """Score time (verovio timemap seconds) -> performance seconds, before jitter."""
        return score_seconds / self.tempo_factor


def perform(score_midi: pretty_midi.PrettyMIDI, config: PerformanceConfig, seed: int) -> Performance:
    """Return a performed copy of ``score_midi`` (the input is not modified)."""
    _check_config(config)
    rng = np.random.default_rng(seed)
    tempo_factor = float(rng.uniform(*config.tempo_range))
    midi = _scaled_copy(score_midi, 1.0 / tempo_factor)
    end = max(midi.get_end_time(), 1e-3)
    curve = _velocity_curve(config, end, rng)
    jitter_s = config.jitter_ms / 1000.0
    for inst in midi.instruments:
        for note in inst.notes:
            base = float(np.interp(note.start, curve[0], curve[1]))
            vel = base + rng.normal(0.0, config.velocity_noise) if config.velocity_noise > 0 else base
            note.velocity = int(np.clip(round(vel), *config.velocity_range))
            shift = rng.normal(0.0, jitter_s) if jitter_s > 0 else 0.0
            shift = max(shift, -note.start)  # never before 0
            note.start += shift
            note.end += shift
        inst.notes.sort(key=lambda n: (n.start, n.pitch))
    return Performance(midi=midi, tempo_factor=tempo_factor, seed=seed)


def slice_midi(midi: pretty_midi.PrettyMIDI, start: float, end: float) -> pretty_midi.PrettyMIDI:
    """Notes with onset in [start, end), shifted by -start, offsets clipped to end - start.

    Instruments (program, is_drum, name) are kept, even when they have no note in
    the window. Control changes inside the window are kept, and the last value of
    each controller before ``start`` is restated at time 0 (a held sustain pedal
    stays held).
    """
    out = pretty_midi.PrettyMIDI(resolution=midi.resolution)
    for inst in midi.instruments:
        new = pretty_midi.Instrument(program=int(inst.program), is_drum=inst.is_drum, name=inst.name)
        for n in inst.notes:
            if start <= n.start < end:
                new.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start - start, min(n.end, end) - start))
        new.control_changes = _slice_controls(inst.control_changes, start, end)
        out.instruments.append(new)
    return out


def _check_config(config: PerformanceConfig) -> None:
    lo, hi = config.tempo_range
    if not 0 < lo <= hi:
        raise ValueError(f"tempo_range must satisfy 0 < lo <= hi, got {config.tempo_range}")
    vlo, vhi = config.velocity_range
    if not 1 <= vlo <= vhi <= 127:
        raise ValueError(f"velocity_range must satisfy 1 <= lo <= hi <= 127, got {config.velocity_range}")
    if config.velocity_curve not in VELOCITY_CURVES:
        raise ValueError(f"velocity_curve must be one of {VELOCITY_CURVES}, got {config.velocity_curve!r}")
    if config.jitter_ms < 0 or config.velocity_noise < 0 or config.velocity_knot_s <= 0:
        raise ValueError("jitter_ms and velocity_noise must be >= 0, velocity_knot_s > 0")


def _velocity_curve(config: PerformanceConfig, end: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Knots (times [K], velocities [K]) of the velocity curve over [0, end] seconds."""
    lo, hi = config.velocity_range
    if config.velocity_curve == "flat":
        v = rng.uniform(lo, hi)
        return np.array([0.0, end]), np.array([v, v])
    if config.velocity_curve == "ramp":
        return np.array([0.0, end]), rng.uniform(lo, hi, size=2)
    # "smooth": random knots joined by cosine segments (no overshoot, so it stays in range)
    n_knots = max(2, int(np.ceil(end / config.velocity_knot_s)) + 1)
    knot_v = rng.uniform(lo, hi, size=n_knots)
    fine_t = np.linspace(0.0, end, 16 * (n_knots - 1) + 1)
    seg = np.minimum((fine_t / end * (n_knots - 1)).astype(int), n_knots - 2)
    frac = fine_t / end * (n_knots - 1) - seg
    w = (1 - np.cos(np.pi * frac)) / 2
    return fine_t, knot_v[seg] * (1 - w) + knot_v[seg + 1] * w


def _scaled_copy(midi: pretty_midi.PrettyMIDI, scale: float) -> pretty_midi.PrettyMIDI:
    """Copy of ``midi`` with every event time multiplied by ``scale``."""
    out = pretty_midi.PrettyMIDI(resolution=midi.resolution)
    for inst in midi.instruments:
        new = pretty_midi.Instrument(program=int(inst.program), is_drum=inst.is_drum, name=inst.name)
        new.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start * scale, n.end * scale) for n in inst.notes]
        new.control_changes = [
            pretty_midi.ControlChange(c.number, c.value, c.time * scale) for c in inst.control_changes
        ]
        new.pitch_bends = [pretty_midi.PitchBend(b.pitch, b.time * scale) for b in inst.pitch_bends]
        out.instruments.append(new)
    out.time_signature_changes = [
        pretty_midi.TimeSignature(t.numerator, t.denominator, t.time * scale) for t in midi.time_signature_changes
    ]
    out.key_signature_changes = [
        pretty_midi.KeySignature(k.key_number, k.time * scale) for k in midi.key_signature_changes
    ]
    return out


def _slice_controls(controls: list, start: float, end: float) -> list:
    """Control changes in [start, end) shifted by -start, plus each controller's state at ``start``."""
    state: dict[int, pretty_midi.ControlChange] = {}
    inside = []
    for c in sorted(controls, key=lambda c: c.time):
        if c.time < start:
            state[c.number] = pretty_midi.ControlChange(c.number, c.value, 0.0)
        elif c.time < end:
            inside.append(pretty_midi.ControlChange(c.number, c.value, c.time - start))
    return list(state.values()) + inside
