"""Typed errors of the umust core.

The CLI maps every :class:`UmustError` to one red line: subclasses of
:class:`BadInputError` exit with status 2 (the user's input is at fault),
everything else with status 1 (umust itself failed).
"""


class UmustError(Exception):
    """Base class of every error umust raises on purpose."""

    exit_code = 1


class BadInputError(UmustError):
    """The input given by the user cannot be used (exit status 2)."""

    exit_code = 2


class InputNotFoundError(BadInputError):
    """A path named on the command line does not exist."""


class NotationError(BadInputError):
    """A score file (MusicXML, MXL, kern, MEI) or LMX text is malformed."""


class MidiError(BadInputError):
    """A MIDI file or a MIDI token sequence is malformed."""


class AudioError(BadInputError):
    """An audio file is unreadable, truncated or silent."""


class ImageError(BadInputError):
    """An image file is unreadable or empty."""


class HeldOutRepertoireError(BadInputError):
    """A held-out test piece (Beethoven's piano sonatas) was offered as training material."""


class CheckpointError(BadInputError):
    """A checkpoint is missing, truncated, or was made for another vocabulary."""


class VocabularyMismatchError(CheckpointError):
    """A checkpoint's saved vocabulary differs from the one in use."""


class RenderError(UmustError):
    """Engraving (verovio) or synthesis (FluidSynth) failed."""


class TranslationError(UmustError):
    """A translator's output cannot be written in the target format (exit status 1: the model's fault)."""


class NotAvailableError(UmustError):
    """A command or feature exists in the CLI but has not been implemented yet."""
