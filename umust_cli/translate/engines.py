"""What a translation run loads, each thing once: translator models, the key reader, codecs, soundfont.

``RunConfig`` holds the run's settings (the CLI's options); ``Engines`` loads what the
steps ask for on first use. The direction model of a task (registry kind
``translator-i2a`` / ``translator-a2i``) is ``--model`` (a registered name or a checkpoint
folder) or the shipped default; :func:`model_folder` says None when neither exists, which
``routes.choose_route`` reads through :func:`has_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from umust_cli import registry
from umust_cli.checkpoint import load_module, read_config
from umust_cli.codecs.audio import AudioCodec
from umust_cli.codecs.image import ImageCodec
from umust_cli.codecs.notation import ChordRule
from umust_cli.codecs.vocab import default_vocabulary
from umust_cli.data.pairs import ALIASES, TASKS
from umust_cli.data.staff_order import ctc_classes
from umust_cli.data.synth import available_soundfonts
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError, CheckpointError, RenderError
from umust_cli.model.generate import DecodingOptions
from umust_cli.model.key_reader import MODEL_KIND as KEY_READER_KIND, KeyReader, KeyReaderConfig
from umust_cli.model.note_reader import MODEL_KIND as NOTE_READER_KIND, NoteReader, NoteReaderConfig
from umust_cli.model.pitch_reader import MODEL_KIND as PITCH_READER_KIND, PitchReader, PitchReaderConfig
from umust_cli.model.translator import (CODES_PER_STEP, MODEL_KIND as CHECKPOINT_KIND, RHYTHMIC_TARGETS, Translator,
                                        TranslatorConfig)
from umust_cli.translate.routes import MODEL_KIND

DEFAULT_SOUNDFONT = "fluidr3"
CODE_TEMPERATURE = 1.0      # image and audio targets are sampled, not decoded greedily (see Engines.decoding)


@dataclass(frozen=True)
class RunConfig:
    """Settings of a translation run."""

    model: str | None = None            # --model NAME|PATH: the direction model
    device: str = "cpu"                 # auto | cpu | cuda | cuda:N
    seed: int = 0                       # torch seed, sampling seed, performance seed
    temperature: float | None = None    # decoding (generate.DecodingOptions); 0 = greedy; None: CODE_TEMPERATURE
                                        # for image and audio codes, greedy for notation and MIDI
    top_k: int = 0
    top_p: float = 1.0
    soundfont: str | None = None        # FluidSynth soundfont name; None: fluidr3 or the first installed
    tempo: float | None = None          # quantization tempo in BPM; None: estimated from the MIDI
    grammar: bool = True                # notation targets: decode under codecs.notation.ChordRule
    beam_size: int = 1                  # notation / MIDI targets: beam search with this many hypotheses
    ctc_pitches: bool = True            # OMR: pitches from the model's CTC head where they align, key from its key head
    roll_reading: bool = True           # transcription: notes from the model's roll head (no decoding) where it has one
    key_reader: str = "auto"            # OMR and image -> MIDI: the key signature from this key reader (NAME|PATH);
                                        # auto: the shipped one where installed, none: the translator's key head
    pitch_reader: str = "auto"          # image -> MIDI: each staff's pitches from this pitch reader (NAME|PATH);
                                        # auto: the shipped one where installed, none: the translator's CTC head
    note_reader: str = "auto"           # the note-reader engine (--transcriber note-reader): NAME|PATH; auto: shipped
    rhythm_reader: str = "auto"         # OMR: the LMX written from this rhythmic pitch reader's notes, rests and note
                                        # values (NAME|PATH); auto: the shipped one where installed, none: decoded
    fit_measures: bool = True           # OMR: a rhythm reader's measures fitted to the time signature (data.measure_fit)

    def __post_init__(self) -> None:    # bad decoding settings fail before any input is read
        DecodingOptions(temperature=self.temperature or 0.0, top_k=self.top_k, top_p=self.top_p,
                        beam_size=self.beam_size)


def model_folder(kind: str, model: str | None) -> Path | None:
    """The checkpoint folder of the direction model ``kind``: ``model`` (a registered name or a
    folder), else the shipped default; None when nothing is installed and none was given."""
    if model is not None:
        if kind in registry.MODELS:
            return registry.resolve(kind, model)
        path = Path(model)
        if not path.is_dir():
            raise CheckpointError(f"--model {model!r} is not a checkpoint folder (no {kind} model ships yet)")
        return path
    if kind not in registry.MODELS or kind not in registry.DEFAULTS:
        return None
    try:
        return registry.resolve(kind, None)
    except CheckpointError:
        return None


def has_model(model: str | None) -> Callable[[str, str], bool]:
    """For ``routes.choose_route``: is there a translator for the task source -> target? A
    checkpoint whose config lists its ``tasks`` (the trainer's names, ``data.pairs.TASKS``, or
    ``source>target``) counts for those tasks only."""
    def check(a: str, b: str) -> bool:
        folder = model_folder(MODEL_KIND[(a, b)], model)
        if folder is None:
            return False
        trained = trained_tasks(folder)
        if (a, b) == ("image", "midi"):       # the OMR model's CTC reading
            return (trained is None or ("image", "notation") in trained) and has_ctc_head(folder)
        return trained is None or (a, b) in trained
    return check


def auto_direct(model: str | None) -> Callable[[str, str], bool]:
    """For ``routes.choose_route``: may ``--via auto`` take the direct route of a task? With
    ``--model``: yes (the model was chosen). With the default model: only for the tasks that
    ``registry.AUTO_DIRECT`` lists for its kind, those it measured best on."""
    def check(a: str, b: str) -> bool:
        kind = MODEL_KIND[(a, b)]
        return model is not None or kind not in registry.AUTO_DIRECT or f"{a}>{b}" in registry.AUTO_DIRECT[kind]
    return check


def has_ctc_head(folder: Path) -> bool:
    """Does the checkpoint's config give its model a CTC head (``TranslatorConfig.ctc_classes``)?"""
    model = read_config(folder).get("model")
    return isinstance(model, dict) and int(model.get("ctc_classes") or 0) > 0


def trained_tasks(folder: Path) -> set[tuple[str, str]] | None:
    """The (source, target) tasks a checkpoint's config says it was trained for; None when it
    does not say (every task of the architecture is tried)."""
    names = read_config(folder).get("tasks")
    if not isinstance(names, list):
        return None
    out = set()
    for name in map(str, names):
        src, sep, tgt = name.partition(">")
        pair = (ALIASES.get(src, src), ALIASES.get(tgt, tgt)) if sep else TASKS.get(name)
        if pair is not None:
            out.add(pair)
    return out


def load_key_reader(folder: Path) -> KeyReader:
    """A key-reader checkpoint (one-line CheckpointError for another kind or weights that do not fit)."""
    return load_module(folder, KEY_READER_KIND, lambda cfg: KeyReader(KeyReaderConfig.from_dict(cfg)))


def load_pitch_reader(folder: Path) -> PitchReader:
    """A pitch-reader checkpoint (one-line CheckpointError for another kind, weights that do not fit,
    or classes that are not this install's pitch names: another notation vocabulary)."""
    model = load_module(folder, PITCH_READER_KIND, lambda cfg: PitchReader(PitchReaderConfig.from_dict(cfg)))
    saved = read_config(folder).get("classes")
    if saved is not None and [tuple(c) for c in saved] != ctc_classes(model.cfg.ctc_target):
        raise CheckpointError(f"{folder}: the pitch reader's {len(saved)} classes are not this install's "
                              f"{model.cfg.ctc_target} pitch names (another notation vocabulary)")
    return model


def load_rhythm_reader(folder: Path) -> PitchReader:
    """A pitch-reader checkpoint of the ``rhythmic`` or ``beamed`` classes (CheckpointError for any other)."""
    model = load_pitch_reader(folder)
    if model.cfg.ctc_target not in RHYTHMIC_TARGETS:
        raise CheckpointError(f"{folder}: a {model.cfg.ctc_target} pitch reader reads no rhythm (a rhythm reader "
                              "is one trained with --ctc-target rhythmic or beamed)")
    return model


def load_note_reader(folder: Path) -> NoteReader:
    """A note-reader checkpoint (one-line CheckpointError for another kind or weights that do not fit)."""
    return load_module(folder, NOTE_READER_KIND, lambda cfg: NoteReader(NoteReaderConfig.from_dict(cfg)))


def load_translator(folder: Path, vocab: Any) -> Translator:
    """A translator checkpoint; one-line CheckpointError for another kind, another vocabulary
    (VocabularyMismatchError) or weights that do not fit their config."""
    return load_module(folder, CHECKPOINT_KIND, lambda cfg: Translator(TranslatorConfig.from_dict(cfg)), vocab)


class Engines:
    """Loads translators, codecs and the soundfont on first use, once per run."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.device = resolve_device(config.device)
        self.vocab = default_vocabulary()
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def translator(self, source: str, target: str) -> Translator:
        kind = MODEL_KIND[(source, target)]
        folder = model_folder(kind, self.config.model)
        if folder is None:
            raise CheckpointError(f"no {kind} model is installed; give a checkpoint folder with --model")
        return self._once(kind, lambda: load_translator(folder, self.vocab).to(self.device).eval())

    def key_reader(self) -> KeyReader | None:
        """The key-signature reader of ``RunConfig.key_reader`` (None: none asked for or installed)."""
        return self._reader("key-reader", self.config.key_reader, load_key_reader)

    def pitch_reader(self) -> PitchReader | None:
        """The pitch reader of ``RunConfig.pitch_reader`` (None: none asked for or installed)."""
        return self._reader("pitch-reader", self.config.pitch_reader, load_pitch_reader)

    def rhythm_reader(self) -> PitchReader | None:
        """The rhythmic pitch reader of ``RunConfig.rhythm_reader`` (None: none asked for or installed)."""
        return self._reader("rhythm-reader", self.config.rhythm_reader, load_rhythm_reader)

    def note_reader(self) -> NoteReader:
        """The note reader of ``RunConfig.note_reader``; CheckpointError when none is installed or given."""
        found = self._reader("note-reader", self.config.note_reader, load_note_reader)
        if found is None:
            raise CheckpointError("no note-reader model is installed; give a checkpoint folder with --note-reader "
                                  "(umust train note-reader makes one)")
        return found

    def _reader(self, kind: str, choice: str, load: Callable[[Path], Any]) -> Any:
        if choice == "none":
            return None
        folder = model_folder(kind, None if choice == "auto" else choice)
        if folder is None:
            return None
        return self._once(kind, lambda: load(folder).to(self.device).eval())

    def image_codec(self) -> ImageCodec:
        return self._once("image-codec", lambda: ImageCodec.load(
            registry.resolve("image-codec", None), self.vocab, str(self.device)))

    def audio_codec(self) -> AudioCodec:
        return self._once("audio-codec", lambda: AudioCodec.load(
            registry.resolve("audio-codec", None), self.vocab, str(self.device)))

    def soundfont(self) -> Path:
        found = available_soundfonts(extra=True)
        name = self.config.soundfont or next((n for n in (DEFAULT_SOUNDFONT, *found) if n in found), None)
        if name is None:
            raise RenderError("no General MIDI soundfont is installed (scripts/setup.sh installs them)")
        if name not in found:
            raise BadInputError(f"unknown soundfont {name!r}; installed: {', '.join(sorted(found))}")
        return found[name]

    def rule(self, target: str, batch: int = 1) -> ChordRule | None:
        """The decoding rule of a ``target`` translation (LMX grammar), or None."""
        return ChordRule(batch) if target == "notation" and self.config.grammar else None

    def decoding(self, target: str, seed_offset: int = 0) -> DecodingOptions:
        """The decoding options of a ``target`` translation: the beam applies to the one-code
        (symbolic) targets, image and audio codes are chosen step by step, sampled at
        CODE_TEMPERATURE unless a temperature was given (greedy image decoding draws blank
        systems: docs/results.md, "Notation -> image")."""
        c = self.config
        symbolic = CODES_PER_STEP[target] == 1
        temperature = c.temperature if c.temperature is not None else (0.0 if symbolic else CODE_TEMPERATURE)
        return DecodingOptions(temperature=temperature, top_k=c.top_k, top_p=c.top_p, seed=c.seed + seed_offset,
                               beam_size=c.beam_size if symbolic else 1)
