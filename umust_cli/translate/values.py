"""The in-memory value of the notation modality between steps, and its two forms.

A score travels as :class:`Notation`: MusicXML text (one piano part, as the notation codec
normalizes it) and/or LMX tokens. What one step made is converted on demand:
MusicXML -> LMX with the notation codec's linearizer, LMX -> MusicXML with the lmx
delinearizer, leniently (:func:`musicxml_of`): generated tokens before the first
``measure`` are dropped and the delinearizer repairs dangling tokens; a sequence without
any measure, or one it cannot turn into MusicXML, is a TranslationError (exit 1: the
model's output, not the user's input, is at fault).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from umust_cli.codecs.notation import NotationCodec, delinearize
from umust_cli.errors import NotationError, TranslationError


@dataclass(frozen=True)
class Notation:
    """A score as MusicXML text and/or LMX tokens (at least one of them)."""

    musicxml: str | None = None
    lmx: tuple[str, ...] | None = None


def lmx_tokens(notation: Notation) -> list[str]:
    if notation.lmx is not None:
        return list(notation.lmx)
    with tempfile.TemporaryDirectory(prefix="umust-lmx-") as tmp:
        path = Path(tmp) / "score.musicxml"
        path.write_text(notation.musicxml, encoding="utf-8")
        return NotationCodec().to_lmx(path).split()


def musicxml_of(notation: Notation) -> str:
    """The MusicXML of ``notation``; generated LMX is decoded leniently (module docstring)."""
    if notation.musicxml is not None:
        return notation.musicxml
    tokens = list(notation.lmx or ())
    if "measure" not in tokens:
        raise TranslationError(f"the model generated {len(tokens)} LMX tokens and no measure: no MusicXML "
                               f"to write (write .lmx to keep the tokens)")
    tokens = tokens[tokens.index("measure"):]
    try:
        return delinearize(" ".join(tokens)).musicxml
    except NotationError as e:
        raise TranslationError(f"the generated LMX cannot be turned into MusicXML ({e}); "
                               f"write .lmx to keep the tokens") from e
