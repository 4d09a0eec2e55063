"""The one table of the weights shipped in this package (like whisper's ``_MODELS``).

Every command that takes weights (``--model NAME|PATH``, the codecs' ``--codec
NAME|PATH``, ``--image-codec`` / ``--audio-codec``) resolves its value here:
nothing given means the kind's default, a registered name (or ``shipped:NAME``,
as older scripts and retrieval indexes wrote it) means its folder under
``umust_cli/weights``, anything else must be an existing checkpoint folder.
A registered name wins over a folder of the same name in the working
directory: give such a folder with a folder part (``runs/small``, an absolute path).

Shipped models (figures in docs/results.md; a MODEL_CARD.md in each folder):

=============  =========  ===========================================================
kind           name       folder: what it is
=============  =========  ===========================================================
image-codec    small      image-codec: the score-image RQ-VAE (default)
audio-codec    small      audio-codec: the audio DAC (default)
retrieval      rendered   retrieval: paper-size CNN trained on engraved systems (default)
retrieval      small      retrieval-small: RNN-FZ trained on CPU, ~5x faster on images
retrieval      scans      retrieval-scans: older small model fine-tuned on scanned scores
translator-i2a small      translator-i2a: image->audio direction, OMR task only (default)
key-reader     small      key-reader: key signatures from a system's first columns (default)
pitch-reader   small      pitch-reader: each staff's pitch names from a system's pixels (default)
rhythm-reader  small      rhythm-reader: each staff's notes, rests and note values, OMR's LMX (default)
note-reader    small      note-reader: piano transcription on the spectrogram (--transcriber note-reader)
=============  =========  ===========================================================

Kinds whose weights are trained here but do not ship yet are in ``PENDING`` (kind -> name ->
folder): `umust train promote` writes a run's best checkpoint into that folder, and the commit
that ships it moves the line into ``MODELS`` (and ``DEFAULTS``).

No torch here: this module is imported by ``umust --help``.
"""

from __future__ import annotations

from pathlib import Path

from umust_cli.errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_PREFIX = "shipped"  # "shipped" = the default, "shipped:NAME" = NAME (older scripts and indexes)

MODELS: dict[str, dict[str, str]] = {
    "image-codec": {"small": "image-codec"},
    "audio-codec": {"small": "audio-codec"},
    "retrieval": {"rendered": "retrieval", "small": "retrieval-small", "scans": "retrieval-scans"},
    "translator-i2a": {"small": "translator-i2a"},
    "key-reader": {"small": "key-reader"},
    "pitch-reader": {"small": "pitch-reader"},
    "rhythm-reader": {"small": "rhythm-reader"},
    "note-reader": {"small": "note-reader"},
}
DEFAULTS: dict[str, str] = {"image-codec": "small", "audio-codec": "small", "retrieval": "rendered",
                            "translator-i2a": "small", "key-reader": "small",
                            "pitch-reader": "small", "rhythm-reader": "small", "note-reader": "small"}
# The tasks ("source>target") that a direction's *default* model does under `--via auto`: those
# on which it measured better than the task's other routes on the same judge (docs/results.md).
# Its other trained tasks run only with `--via direct`; a model given with --model runs every
# task it was trained for. A kind not listed here: every trained task.
AUTO_DIRECT: dict[str, tuple[str, ...]] = {
    "translator-i2a": ("image>notation", "image>midi"),
    "translator-a2i": (),
}
# The kinds trained by a reader's trainer (`umust train KIND`, `umust train background KIND`).
READER_KINDS = ("note-reader", "pitch-reader", "key-reader")
# Shipped reader kinds trained by another kind's trainer with one option among some values (the
# first by default): `umust train background rhythm-reader` is `umust train pitch-reader
# --ctc-target rhythmic|beamed` (model.translator.RHYTHMIC_TARGETS).
TRAINED_AS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "rhythm-reader": ("pitch-reader", "--ctc-target", ("rhythmic", "beamed"))}
# The validation figure a trained model's run keeps its best checkpoint on, by checkpoint kind,
# and whether higher is better; a name ending in "/" is the mean of the keys under it, one per
# image copy ("staff_error_rate/engraved", ...). `train curves` plots them, `train promote` compares them.
VALID_FIGURES: dict[str, tuple[str, bool]] = {
    "umust-translator": ("SER", False), "umust-note-reader": ("onset_f1", True),
    "umust-pitch-reader": ("staff_error_rate/", False), "umust-key-reader": ("key_accuracy/", True),
}
PENDING: dict[str, dict[str, str]] = {
    "translator-a2i": {"small": "translator-a2i"},
}


def folder_name(kind: str, name: str) -> str:
    """The folder under the weights directory of ``kind``'s model ``name``, shipped or pending."""
    known = {**PENDING.get(kind, {}), **_table(kind)}
    if name not in known:
        raise CheckpointError(f"no {kind} model is called {name!r} (known: {', '.join(known) or 'none'})")
    return known[name]


def default_folder(kind: str, weights_dir: Path | None = None) -> Path | None:
    """The folder of ``kind``'s default shipped model (under ``weights_dir``, default the package's),
    or None when none ships (a pending kind) or it is missing from this install."""
    name = DEFAULTS.get(kind)
    if name is None or name not in _table(kind):
        return None
    folder = (weights_dir or WEIGHTS_DIR) / _table(kind)[name]
    return folder if folder.is_dir() else None


def available(kind: str) -> list[str]:
    """The registered names of ``kind``, the default first."""
    names = list(_table(kind))
    if kind not in DEFAULTS:
        return names
    return [DEFAULTS[kind]] + [n for n in names if n != DEFAULTS[kind]]


def shipped_name(kind: str, model: str | Path | None) -> str | None:
    """The registered name that ``model`` means (None: the default; a path to a shipped folder
    counts too), or None when it is some other checkpoint folder."""
    name = _registered_name(kind, model)
    if name is not None:
        return name
    try:
        folder = Path(model).resolve()
    except (OSError, RuntimeError):
        return None
    return next((n for n, f in _table(kind).items() if (WEIGHTS_DIR / f).resolve() == folder), None)


def resolve(kind: str, model: str | Path | None) -> Path:
    """The checkpoint folder ``model`` means for ``kind``; CheckpointError (naming the available
    names) when it is neither a registered name nor an existing folder."""
    name = _registered_name(kind, model)
    if model is None and name is None:
        raise CheckpointError(f"no {kind} model ships yet; pass a checkpoint folder")
    if name is not None:
        folder = WEIGHTS_DIR / _table(kind)[name]
        if not folder.is_dir():
            raise CheckpointError(f"the shipped {kind} model {name!r} is missing from this install ({folder}); "
                                  f"pass a checkpoint folder")
        return folder
    path = Path(model)
    if path.is_dir():
        return path
    if not path.exists() and str(model) in PENDING.get(kind, {}):
        raise CheckpointError(f"the {kind} model {str(model)!r} does not ship yet (umust train promote "
                              "makes it); pass a checkpoint folder")
    what = "is not a folder" if path.exists() else "does not exist"
    raise CheckpointError(f"{kind} model {str(model)!r} {what}: give a checkpoint folder or one of the "
                          f"shipped models: {', '.join(available(kind))}")


def describe(kind: str) -> str:
    """'NAME (default), NAME2, ...' for help texts."""
    names = available(kind)
    if kind not in DEFAULTS:
        return ", ".join(names) or "none shipped yet"
    return ", ".join([f"{names[0]} (default)", *names[1:]])


def _registered_name(kind: str, model: str | Path | None) -> str | None:
    table = _table(kind)
    if model is None:
        return DEFAULTS.get(kind)
    text = str(model)
    if text == SHIPPED_PREFIX:
        return DEFAULTS.get(kind)
    text = text.removeprefix(SHIPPED_PREFIX + ":")
    return text if text in table else None


def _table(kind: str) -> dict[str, str]:
    """The shipped models of ``kind`` (empty for a pending kind)."""
    if kind not in MODELS and kind not in PENDING:
        raise ValueError(f"unknown kind of weights {kind!r} (one of {', '.join([*MODELS, *PENDING])})")
    return MODELS.get(kind, {})
