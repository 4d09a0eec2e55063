"""BPSD v2 (Zeitler et al., TISMIR 2024): the first movements of Beethoven's 32 piano sonatas.

Expected layout (the unpacked ``Beethoven_Piano_Sonata_Dataset_v2.zip``, Zenodo 12783403)::

    PATH/1_Audio/Beethoven_<piece>_<performer>.wav        performances (the archive ships
                                                          AS35, FG58, FJ62 and WK64)
    PATH/2_Annotations/ann_audio_note/Beethoven_<piece>_<performer>.csv     note events of each
                                                          performance: ';'-separated, start;end;pitch;... (seconds)
    PATH/2_Annotations/ann_audio_measure/Beethoven_<piece>_<performer>.csv  measure positions
    PATH/2_Annotations/ann_score_note/Beethoven_<piece>.csv                 score notes (in measures)
    PATH/0_RawData/score_xml_unfolded/Beethoven_<piece>.xml      MusicXML, repeats written out
    PATH/0_RawData/score_xml_repetitions/Beethoven_<piece>.xml   MusicXML as printed

``<piece>`` is e.g. ``Op002No1-01``, ``<performer>`` e.g. ``AS35`` (11 performers).
Sources: the authors' script repository README (folders 0_RawData, 1_Audio,
2_Annotations, 3_Scripts); a BPSD v2 converter that reads
``1_Audio/Beethoven_{piece}_{performer}.wav``,
``2_Annotations/ann_audio_{kind}/Beethoven_{piece}_{performer}.csv`` (';'-separated)
and ``0_RawData/score_xml_{repetitions,unfolded}/Beethoven_{piece}.xml``; BPSD
tools that read ``2_Annotations/ann_score_note/*.csv``; the sibling Schubert
Winterreise Dataset's documented ``ann_audio_note`` columns (start, end, pitch, ...).

BPSD is Beethoven: every row is held-out test material (split ``test``,
``held_out`` true), never training data. One row per performance (system 0):
``mid`` made from its note events (``derived/``), ``wav`` when the recording is
in the copy, ``musicxml`` (unfolded score), ``musicxml_repetitions``,
``score_notes`` and ``measures_csv``.
"""

from __future__ import annotations

import re
from pathlib import Path

from umust_cli.data.importers.base import EXPECTED, OPTIONAL, Derived, FileRef, Importer, Sample, require_folder
from umust_cli.data.importers.notes import bpsd_notes_to_midi
from umust_cli.errors import InputNotFoundError

AUDIO, NOTES, MEASURES = "1_Audio", "2_Annotations/ann_audio_note", "2_Annotations/ann_audio_measure"
SCORE_NOTES, UNFOLDED, REPEATS = ("2_Annotations/ann_score_note", "0_RawData/score_xml_unfolded",
                                  "0_RawData/score_xml_repetitions")
SPLITS = {"none": "test"}  # BPSD has no split of its own
_ITEM = re.compile(r"^Beethoven_(?P<piece>.+)_(?P<performer>[A-Z]{2}\d{2})$")


def find(root: Path) -> list[Sample]:
    root = require_folder(root, "BPSD")
    items: set[tuple[str, str]] = set()
    for folder, ext in ((AUDIO, ".wav"), (NOTES, ".csv")):
        for path in (root / folder).glob(f"Beethoven_*{ext}"):
            if match := _ITEM.match(path.stem):
                items.add((match["piece"], match["performer"]))
    if not items:
        raise InputNotFoundError(f"{root} holds no BPSD performances ({AUDIO}/Beethoven_<piece>_<performer>.wav "
                                 f"or {NOTES}/Beethoven_<piece>_<performer>.csv)")
    return [_sample(piece, performer) for piece, performer in sorted(items)]


def _sample(piece: str, performer: str) -> Sample:
    item = f"Beethoven_{piece}_{performer}"
    files = (FileRef("wav", f"{AUDIO}/{item}.wav", OPTIONAL),
             FileRef("labels", f"{NOTES}/{item}.csv"),
             FileRef("measures_csv", f"{MEASURES}/{item}.csv", EXPECTED),
             FileRef("musicxml", f"{UNFOLDED}/Beethoven_{piece}.xml", EXPECTED),
             FileRef("musicxml_repetitions", f"{REPEATS}/Beethoven_{piece}.xml", EXPECTED),
             FileRef("score_notes", f"{SCORE_NOTES}/Beethoven_{piece}.csv", EXPECTED))
    return Sample(piece_id=f"bpsd-{piece}-{performer}", system=0, original_split="none",
                  source=f"bpsd:{item}", files=files,
                  derived=(Derived("mid", f"{NOTES}/{item}.csv", bpsd_notes_to_midi),),
                  meta={"composer": "Ludwig van Beethoven", "piece": piece, "performer": performer})


IMPORTER = Importer("bpsd", SPLITS, find, test_only=True)
