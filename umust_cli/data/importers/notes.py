"""Note tables of a dataset -> MIDI files, so that audio + MIDI rows serve transcription.

Two tables are read: MusicNet's label CSVs (times in samples at 44.1 kHz,
instrument as a 1-based General MIDI program) and BPSD's ``ann_audio_note``
CSVs (';'-separated, times in seconds). Neither has velocities: every note gets
:data:`VELOCITY`.
"""

from __future__ import annotations

from pathlib import Path

from umust_cli.data.importers.base import read_table, require_columns
from umust_cli.errors import BadInputError
from umust_cli.io import atomic_path

VELOCITY = 80  # the tables carry no dynamics
MUSICNET_RATE = 44100  # MusicNet label times are sample indices at this rate
PIANO = 0  # General MIDI program 1 (0-based)


def musicnet_labels_to_midi(table: Path, dest: Path) -> float:
    """``start_time,end_time,instrument,note,...`` -> MIDI (one track per instrument); returns the end second."""
    rows = read_table(table)
    require_columns(rows, ("start_time", "end_time", "instrument", "note"), table)
    notes = []
    for number, row in enumerate(rows, start=2):
        try:
            start, end = int(row["start_time"]) / MUSICNET_RATE, int(row["end_time"]) / MUSICNET_RATE
            notes.append((start, end, int(row["note"]), min(max(int(row["instrument"]) - 1, 0), 127)))
        except ValueError as e:
            raise BadInputError(f"{table}:{number}: not a MusicNet label row ({e})") from e
    return write_notes(notes, dest, table)


def bpsd_notes_to_midi(table: Path, dest: Path) -> float:
    """BPSD ``start;end;pitch;...`` (seconds) -> a one-track piano MIDI; returns the end second."""
    rows = read_table(table, delimiter=";")
    require_columns(rows, ("start", "end", "pitch"), table)
    notes = []
    for number, row in enumerate(rows, start=2):
        try:
            notes.append((float(row["start"]), float(row["end"]), int(round(float(row["pitch"]))), PIANO))
        except ValueError as e:
            raise BadInputError(f"{table}:{number}: not a note row ({e})") from e
    return write_notes(notes, dest, table)


def write_notes(notes: list[tuple[float, float, int, int]], dest: Path, table: Path) -> float:
    """(start s, end s, pitch, program) notes -> ``dest`` (atomically); returns the last note's end."""
    import pretty_midi

    if not notes:
        raise BadInputError(f"{table}: no notes")
    bad = next((n for n in notes if not (0 <= n[2] <= 127 and 0 <= n[0] < n[1])), None)
    if bad is not None:
        raise BadInputError(f"{table}: bad note (start {bad[0]}, end {bad[1]}, pitch {bad[2]})")
    midi = pretty_midi.PrettyMIDI(resolution=960)
    tracks: dict[int, pretty_midi.Instrument] = {}
    for start, end, pitch, program in sorted(notes):
        track = tracks.setdefault(program, pretty_midi.Instrument(program=program))
        track.notes.append(pretty_midi.Note(VELOCITY, pitch, start, end))
    midi.instruments.extend(tracks[p] for p in sorted(tracks))
    with atomic_path(dest) as tmp:
        midi.write(str(tmp))
    return max(n[1] for n in notes)
