"""The one small protocol every modality codec follows.

A codec maps a file (or an in-memory object) of its modality to a list of
*local* token ids in ``range(codec.vocab_size)`` and back. The unified
vocabulary (``vocab.py``) adds each modality's offset to make global ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

MODALITIES = ("image", "audio", "notation", "midi")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def shipped_codec(modality: str) -> Path:
    """The folder of the codec weights shipped in this package for ``modality`` (image or audio);
    a CheckpointError names the --codec option when this install has none."""
    from umust_cli.errors import CheckpointError

    path = WEIGHTS_DIR / f"{modality}-codec"
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(f"no {modality} codec is shipped in this install ({path}); "
                              f"pass a checkpoint folder with --codec")
    return path


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

    def encode(self, source: Any) -> list[int]:
        """File path or in-memory object -> local token ids."""
        ...

    def decode(self, ids: Sequence[int]) -> Any:
        """Local token ids -> in-memory object of the modality."""
        ...
