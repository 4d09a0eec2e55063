"""The unified vocabulary of the paper's eq. 9.

One id space for all four modalities::

    0            [PAD]
    1            [SEP]
    2..9         [SOS]_X, [EOS]_X for X in image, audio, notation, midi
    10..         image codes   (4 codebooks x 1024: codebook k, code c -> k*1024 + c)
    ...          audio codes   (4 codebooks x 1024, same layout)
    ...          notation (LMX) tokens
    ...          MIDI events

Each modality's local ids (those its codec produces) are shifted by the
modality's offset. The vocabulary is saved as JSON beside every checkpoint and
compared on load, so that weights trained for another vocabulary fail loudly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from umust_cli.codecs.base import MODALITIES
from umust_cli.codecs.midi import MidiCodec
from umust_cli.codecs.notation import NotationCodec
from umust_cli.errors import CheckpointError, VocabularyMismatchError
from umust_cli.io import write_json_atomic

PAD, SEP = 0, 1
NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 1024
FORMAT_VERSION = 1


def special_names() -> list[str]:
    names = ["[PAD]", "[SEP]"]
    for m in MODALITIES:
        names += [f"[SOS]_{m}", f"[EOS]_{m}"]
    return names


def codebook_names(prefix: str) -> list[str]:
    return [f"{prefix}:q{k}:{c}" for k in range(NUM_CODEBOOKS) for c in range(CODEBOOK_SIZE)]


@dataclass(frozen=True)
class Vocabulary:
    """Token names per modality; offsets follow from the fixed order above."""

    notation: tuple[str, ...]
    midi: tuple[str, ...]
    image: tuple[str, ...] = tuple(codebook_names("img"))
    audio: tuple[str, ...] = tuple(codebook_names("aud"))

    # ---- layout -------------------------------------------------------
    def names(self, modality: str) -> tuple[str, ...]:
        return getattr(self, modality)

    def offset(self, modality: str) -> int:
        off = len(special_names())
        for m in MODALITIES:
            if m == modality:
                return off
            off += len(self.names(m))
        raise KeyError(modality)

    def range(self, modality: str) -> range:
        start = self.offset(modality)
        return range(start, start + len(self.names(modality)))

    def __len__(self) -> int:
        return len(special_names()) + sum(len(self.names(m)) for m in MODALITIES)

    def sos(self, modality: str) -> int:
        return 2 + 2 * MODALITIES.index(modality)

    def eos(self, modality: str) -> int:
        return 3 + 2 * MODALITIES.index(modality)

    # ---- conversion ---------------------------------------------------
    def to_global(self, modality: str, local_ids: Sequence[int]) -> list[int]:
        n, off = len(self.names(modality)), self.offset(modality)
        bad = [i for i in local_ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"{modality} ids out of range [0, {n}): {bad[:5]}")
        return [off + int(i) for i in local_ids]

    def to_local(self, modality: str, global_ids: Sequence[int]) -> list[int]:
        r = self.range(modality)
        bad = [i for i in global_ids if i not in r]
        if bad:
            raise ValueError(f"ids outside the {modality} range {r.start}..{r.stop - 1}: {bad[:5]}")
        return [int(i) - r.start for i in global_ids]

    def wrap(self, modality: str, local_ids: Sequence[int]) -> list[int]:
        """[SOS]_X + global ids + [EOS]_X."""
        return [self.sos(modality), *self.to_global(modality, local_ids), self.eos(modality)]

    def name(self, global_id: int) -> str:
        specials = special_names()
        if global_id < len(specials):
            return specials[global_id]
        for m in MODALITIES:
            if global_id in self.range(m):
                return self.names(m)[global_id - self.offset(m)]
        raise ValueError(f"id {global_id} outside the vocabulary of size {len(self)}")

    # ---- persistence --------------------------------------------------
    def fingerprint(self) -> str:
        blob = json.dumps(self._payload(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _payload(self) -> dict:
        return {"format": FORMAT_VERSION, "specials": special_names(),
                **{m: list(self.names(m)) for m in MODALITIES}}

    def to_json(self) -> dict:
        return {**self._payload(), "size": len(self), "fingerprint": self.fingerprint(),
                "offsets": {m: self.offset(m) for m in MODALITIES}}

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def from_json(cls, obj: dict) -> "Vocabulary":
        try:
            if obj["format"] != FORMAT_VERSION or obj["specials"] != special_names():
                raise CheckpointError("vocabulary file has an unknown format")
            return cls(**{m: tuple(obj[m]) for m in MODALITIES})
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"vocabulary file is malformed (missing {e})") from e

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint has no vocabulary file: {path}") from e
        except json.JSONDecodeError as e:
            raise CheckpointError(f"vocabulary file is not valid JSON ({path}): {e}") from e

    def check_matches(self, other: "Vocabulary", what: str = "checkpoint") -> None:
        """Raise VocabularyMismatchError unless ``other`` is this same vocabulary."""
        if self.fingerprint() == other.fingerprint():
            return
        diffs = [m for m in MODALITIES if self.names(m) != other.names(m)]
        raise VocabularyMismatchError(
            f"{what} was made for another vocabulary (fingerprint {other.fingerprint()} "
            f"!= {self.fingerprint()}; differs in: {', '.join(diffs) or 'layout'})")


def default_vocabulary() -> Vocabulary:
    """The vocabulary of the shipped codecs (LMX tokens and the default MIDI codec)."""
    return Vocabulary(notation=tuple(NotationCodec().token_names()),
                      midi=tuple(MidiCodec().token_names()))
