"""FluidSynth synthesis of (performed) MIDI into mono audio.

Uses libfluidsynth through pyfluidsynth, the way ``pretty_midi.fluidsynth``
does, but with one synthesiser for all instruments and a small cache of
loaded soundfonts: MuseScore_General.sf3 takes ~8 s to load (vorbis
decoding), so reloading it for every slice would dominate the corpus build.

Each MIDI instrument gets its own channel (drums go to channel 9, bank 128),
keeps its program, its control changes (sustain pedal) and pitch bends.
Events are applied at sample positions (FluidSynth quantises them to its
64-sample block, 1.45 ms at 44.1 kHz).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import fluidsynth
import numpy as np
import pretty_midi
import soundfile

from umust_cli.errors import RenderError
from umust_cli.io import atomic_path

SAMPLE_RATE = 44100
PEAK = 0.9  # peak level of synthesised audio after normalisation
SOUNDFONT_CANDIDATES: dict[str, tuple[str, ...]] = {  # short name -> Debian install paths, first existing wins
    "fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2",),
    "timgm6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2",),
    "musescore": (
        "/usr/share/sounds/sf3/MuseScore_General.sf3",
        "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
        "/usr/share/sounds/sf2/MuseScore_General.sf2",
        "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",
    ),
}
EXTRA_SOUNDFONT_CANDIDATES: dict[str, tuple[str, ...]] = {  # used only when named (e.g. `dataset resynth`)
    "csound": ("/usr/share/sounds/sf2/sf_GMbank.sf2",),  # Debian csound-soundfont
    "opl3": ("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",),  # Debian opl3-soundfont: FM synthesis
}
_GAIN = 1.0  # FluidSynth master gain; halved and re-rendered whenever the int16 output clips
_TAIL_CHUNK_S = 0.25  # release tail is rendered in chunks of this length...
_TAIL_MAX_S = 6.0  # ...for at most this long...
_TAIL_SILENCE = 2  # ...until a chunk's peak (int16 units) is at most this
_BLOCK = 64  # FluidSynth's internal block (samples); events take effect at block boundaries
_MAX_CHANNELS = 16
_DRUM_CHANNEL = 9


@dataclass(frozen=True)
class _Event:
    sample: int
    order: int  # at equal sample: note-off (0) before control (1) before note-on (2)
    channel: int
    kind: str  # "on" | "off" | "cc" | "bend"
    a: int
    b: int


def available_soundfonts(extra: bool = False) -> dict[str, Path]:
    """Short name -> path of the installed Debian soundfonts (fluidr3, timgm6mb, musescore).

    ``extra`` adds csound and opl3: never drawn by default, only when asked for by name.
    """
    found = {}
    candidates_of = {**SOUNDFONT_CANDIDATES, **(EXTRA_SOUNDFONT_CANDIDATES if extra else {})}
    for name, candidates in candidates_of.items():
        for candidate in candidates:
            path = Path(candidate)
            if path.is_file():
                found[name] = path.resolve()
                break
    return found


def synthesize(
    midi: pretty_midi.PrettyMIDI, soundfont: Path, sample_rate: int = SAMPLE_RATE, reuse: bool = True
) -> np.ndarray:
    """Render ``midi`` with ``soundfont``: float32 mono [samples], peak-normalised to 0.9.

    The result is at least as long as the MIDI (``get_end_time()``) and includes
    the release/reverb tail. Raises RenderError for a MIDI without notes, an
    unloadable soundfont or an all-silent rendering.

    ``reuse`` keeps the loaded soundfont for the next call (MuseScore_General.sf3
    takes ~8 s to load); the reverb's modulation then carries over between calls,
    so repeated renderings differ slightly (a few percent of the peak, inaudible).
    ``reuse=False`` loads a fresh synthesiser: bit-identical output for equal input.
    """
    if not any(inst.notes for inst in midi.instruments):
        raise RenderError("nothing to synthesise: the MIDI has no notes")
    programs, events = _programs(midi), _events(midi, sample_rate)
    gain = _GAIN
    engine = _engine(str(soundfont), sample_rate) if reuse else _Engine(str(soundfont), sample_rate)
    try:
        for _ in range(4):
            stereo = _render(engine, programs, events, gain)
            if np.abs(stereo.astype(np.int32)).max() < 32767:
                break
            gain /= 2
    finally:
        if not reuse:
            engine.synth.delete()
    mono = stereo.astype(np.float32).mean(axis=1)  # [samples]
    mono = _trim_tail(mono, int(np.ceil(midi.get_end_time() * sample_rate)))
    peak = float(np.abs(mono).max())
    if peak < 1.0:  # below one int16 step: nothing audible came out
        raise RenderError(f"synthesis with {Path(soundfont).name} produced silence")
    return (mono * (PEAK / peak)).astype(np.float32)


def cut(audio: np.ndarray, sample_rate: int, start: float, end: float) -> np.ndarray:
    """Samples of [start, end) seconds: exactly round((end - start) * sample_rate), zero-padded past the end."""
    first = max(int(round(start * sample_rate)), 0)
    length = max(int(round((end - start) * sample_rate)), 0)
    piece = audio[first : first + length]
    if len(piece) < length:
        piece = np.concatenate([piece, np.zeros(length - len(piece), dtype=audio.dtype)])
    return piece


def write_wav(path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write mono audio atomically; ``subtype`` "PCM_16" (default) or "FLOAT"."""
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), np.asarray(audio), sample_rate, subtype=subtype, format="WAV")


class _Engine:
    """A FluidSynth synthesiser with one soundfont loaded (kept alive by the cache)."""

    def __init__(self, soundfont: str, sample_rate: int):
        if not Path(soundfont).is_file():
            raise RenderError(f"soundfont not found: {soundfont}")
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(gain=_GAIN, samplerate=float(sample_rate))
        self.sfid = self.synth.sfload(soundfont)
        if self.sfid < 0:
            self.synth.delete()
            raise RenderError(f"FluidSynth could not load soundfont {soundfont}")


@functools.lru_cache(maxsize=2)
def _engine(soundfont: str, sample_rate: int) -> _Engine:
    return _Engine(soundfont, sample_rate)


def _channels(midi: pretty_midi.PrettyMIDI) -> list[int]:
    """MIDI channel of each instrument: drums on 9, the others cycle over the remaining 15."""
    melodic = [c for c in range(_MAX_CHANNELS) if c != _DRUM_CHANNEL]
    out, k = [], 0
    for inst in midi.instruments:
        if inst.is_drum:
            out.append(_DRUM_CHANNEL)
        else:
            out.append(melodic[k % len(melodic)])
            k += 1
    return out


def _programs(midi: pretty_midi.PrettyMIDI) -> dict[int, tuple[int, int]]:
    """Channel -> (bank, program); with more than 15 melodic instruments the last one on a channel wins."""
    return {
        ch: (128 if inst.is_drum else 0, 0 if inst.is_drum else int(inst.program))
        for inst, ch in zip(midi.instruments, _channels(midi))
    }


def _events(midi: pretty_midi.PrettyMIDI, sample_rate: int) -> list[_Event]:
    """All note, control and pitch-bend events of ``midi``, sorted by sample position."""

    def at(t: float) -> int:
        return max(int(round(t * sample_rate)), 0)

    events = []
    for inst, ch in zip(midi.instruments, _channels(midi)):
        for n in inst.notes:
            events.append(_Event(at(n.start), 2, ch, "on", int(n.pitch), int(n.velocity)))
            events.append(_Event(at(max(n.end, n.start)), 0, ch, "off", int(n.pitch), 0))
        for c in inst.control_changes:
            events.append(_Event(at(c.time), 1, ch, "cc", int(c.number), int(c.value)))
        for b in inst.pitch_bends:
            events.append(_Event(at(b.time), 1, ch, "bend", int(b.pitch), 0))
    events.sort(key=lambda e: (e.sample, e.order))
    return events


def _render(engine: _Engine, programs: dict[int, tuple[int, int]], events: list[_Event], gain: float) -> np.ndarray:
    """int16 stereo [samples, 2] of ``events``, followed by the release tail until silence."""
    synth = engine.synth
    synth.system_reset()
    synth.setting("synth.gain", gain)
    for ch, (bank, program) in programs.items():
        synth.program_select(ch, engine.sfid, bank, program)
    chunks, now = [], 0
    for e in events:
        if e.sample > now:
            chunks.append(synth.get_samples(e.sample - now))
            now = e.sample
        _apply(synth, e)
    for ch in programs:
        synth.cc(ch, 64, 0)  # release a pedal still held at the end
        synth.all_notes_off(ch)
    chunks.extend(_render_tail(synth, engine.sample_rate))
    rendered = sum(len(c) for c in chunks) // 2
    if rendered % _BLOCK:  # end on a block boundary so that the next rendering starts on one too
        chunks.append(synth.get_samples(_BLOCK - rendered % _BLOCK))
    return np.concatenate(chunks).reshape(-1, 2)


def _apply(synth: fluidsynth.Synth, e: _Event) -> None:
    if e.kind == "on":
        synth.noteon(e.channel, e.a, e.b)
    elif e.kind == "off":
        synth.noteoff(e.channel, e.a)
    elif e.kind == "cc":
        synth.cc(e.channel, e.a, e.b)
    else:
        synth.pitch_bend(e.channel, e.a)


def _render_tail(synth: fluidsynth.Synth, sample_rate: int) -> list[np.ndarray]:
    """Interleaved int16 chunks after the last event, until one is silent (at most _TAIL_MAX_S)."""
    chunk = int(_TAIL_CHUNK_S * sample_rate)
    out = []
    for _ in range(int(_TAIL_MAX_S / _TAIL_CHUNK_S)):
        out.append(synth.get_samples(chunk))
        if np.abs(out[-1]).max() <= _TAIL_SILENCE:
            break
    return out


def _trim_tail(mono: np.ndarray, min_length: int) -> np.ndarray:
    """Drop trailing near-silence (<= _TAIL_SILENCE int16 units) but keep at least ``min_length`` samples."""
    loud = np.flatnonzero(np.abs(mono) > _TAIL_SILENCE)
    keep = max(min_length, int(loud[-1]) + 1 if len(loud) else 0)
    return mono[:keep]
