"""The one small protocol every modality codec follows.

A codec maps a file (or an in-memory object) of its modality to :class:`Codes`:
*local* token ids in ``range(codec.vocab_size)`` together with what decoding
needs besides the ids (an image's patch grid, the scale it was encoded at and
its size), and back::

    codes = codec.encode(source)        # Codes(ids, shape, scale, size)
    obj = codec.decode(codes)           # the same call for all four codecs

The unified vocabulary (``vocab.py``) adds each modality's offset to make
global ids; a model that generates ids wraps them back with
``Codes(ids, shape=...)`` (``shape`` is needed for images only: (Hp, Wp)).
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

MODALITIES = ("image", "audio", "notation", "midi")


@dataclass(frozen=True)
class Codes(SequenceABC):
    """Local ids of one item (a system image, a clip, a score, a MIDI segment) and their layout.

    * ``shape``: how the ids are laid out, without the codebook axis: image
      (Hp, Wp) patches, audio (frames,), notation and MIDI (number of ids,).
    * ``scale``: image only: the input was resized by this factor before
      encoding (staff-space normalization); decoding resizes by 1 / scale.
    * ``size``: image only: the input's (H, W) in pixels, which decoding
      returns to; ``None`` keeps the codec's own size (16 Hp, 16 Wp) / scale.

    It is a read-only sequence of the ids (``len``, iteration, indexing).
    """

    ids: tuple[int, ...]
    shape: tuple[int, ...]
    scale: float = 1.0
    size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(n) for n in self.size))
        if not self.scale > 0:
            raise ValueError(f"Codes.scale must be positive, got {self.scale}")

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    def __getitem__(self, index):  # an int or a slice, like a tuple
        return self.ids[index]


def as_codes(codes: "Codes | Sequence[int]") -> Codes:
    """``codes`` as they are, or a plain id sequence as one-dimensional Codes."""
    if isinstance(codes, Codes):
        return codes
    ids = tuple(int(i) for i in codes)
    return Codes(ids, (len(ids),))


@runtime_checkable
class Codec(Protocol):
    modality: str  # one of MODALITIES

    @property
    def vocab_size(self) -> int:
        """Number of local token ids; valid ids are ``range(vocab_size)``."""
        ...

    def token_names(self) -> list[str]:
        """A readable name for every local id (saved with checkpoints)."""
        ...

    def encode(self, source: Any) -> Codes:
        """File path or in-memory object -> local token ids with their layout."""
        ...

    def decode(self, codes: Codes) -> Any:
        """Codes (as ``encode`` returns them) -> in-memory object of the modality.

        Notation, MIDI and audio also take a plain id sequence (their ids
        alone say everything); an image needs its Codes' ``shape``."""
        ...
