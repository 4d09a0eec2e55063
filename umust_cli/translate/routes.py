"""Which translation to run: the task from the file types, the route from the options.

A *task* is a (source, target) pair of modalities; file suffixes say which
(``.png`` image, ``.wav`` audio, ``.musicxml`` notation, ``.mid`` MIDI, ...) and
``--task`` names one explicitly (``i2a``, ``omr``, ``a2m``, ...). A *route* is how
the task is done, always named on the screen and in ``--json``:

* ``direct``: one task of a translator model, end to end (image->audio,
  image->notation (OMR), MIDI->audio with the ``translator-i2a`` direction model, and
  image->MIDI by its OMR model's CTC reading, timed by image column;
  audio->MIDI, audio->image, notation->image with ``translator-a2i``).
* ``cascade``: a chain through notation/MIDI, e.g. image -OMR-> notation
  -perform-> MIDI -FluidSynth-> audio, or audio -transcribe-> MIDI -quantize->
  notation -verovio-> image, or image -umust-> MIDI -FluidSynth-> audio (``--via midi``:
  the CTC reading, no decoding).
* ``render``: symbolic sources only, no model: verovio engraving, performance
  MIDI, FluidSynth.
* ``reference``: audio->MIDI by the reference transcriber (transkun) where no
  umust model is installed.

Audio -> MIDI has a third engine, ``note-reader`` (``--transcriber note-reader``): umust's
piano transcriber on the log-mel spectrogram (``model.note_reader``), a direct route of its own
and the first step of cascades from audio.

Every step (an *edge* between two modalities) names its engine: ``umust`` (a
translator model), ``transkun``, ``fluidsynth``, ``verovio``, ``perform``
(performance MIDI from the score) or ``quantize`` (music21's MIDI quantization).

No torch or heavy imports here: the route is chosen before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from umust_cli.errors import BadInputError, CheckpointError

MODALITIES = ("image", "audio", "notation", "midi")
LETTER = {"image": "i", "audio": "a", "notation": "n", "midi": "m"}
SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".pdf", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".mp3", ".ogg"),
    "notation": (".musicxml", ".xml", ".mxl", ".krn", ".mei", ".lmx"),
    "midi": (".mid", ".midi"),
}
OUTPUT_SUFFIXES = {"image": (".png",), "audio": (".wav",), "notation": (".musicxml", ".xml", ".lmx"),
                   "midi": (".mid", ".midi")}
DEFAULT_SUFFIX = {"image": ".png", "audio": ".wav", "notation": ".musicxml", "midi": ".mid"}
ALIASES = {"omr": "i2n", "amt": "a2m",   # and the trainer's task names (data.pairs.TASKS)
           "transcription": "a2m", "image2audio": "i2a", "midi2audio": "m2a", "lmx2image": "n2i",
           "audio2image": "a2i", "midi2lmx": "m2n", "lmx2midi": "n2m"}
VIAS = ("auto", "direct", "midi", "notation", "render")
TRANSCRIBERS = ("auto", "transkun", "umust", "note-reader")   # auto: transkun (the a2i model with --data)
SYNTHS = ("fluidsynth", "neural")
ROUTE_KINDS = ("direct", "cascade", "render", "reference")
# The direction model of each task a translator does end to end (U-MusT trains one per direction).
MODEL_KIND = {("image", "audio"): "translator-i2a", ("image", "notation"): "translator-i2a",
              ("image", "midi"): "translator-i2a",   # the OMR model's CTC reading (direct.image_to_midi)
              ("midi", "audio"): "translator-i2a", ("audio", "midi"): "translator-a2i",
              ("audio", "image"): "translator-a2i", ("notation", "image"): "translator-a2i"}
TASKS = tuple(f"{LETTER[s]}2{LETTER[t]}" for s in MODALITIES for t in MODALITIES if s != t)


@dataclass(frozen=True)
class Options:
    """What the user asked for: ``via`` (auto|direct|notation|render), the transcriber of
    cascades from audio (and, ``note-reader``, of audio -> MIDI), the synthesizer of MIDI -> audio steps."""

    via: str = "auto"
    transcriber: str = "auto"
    synth: str = "fluidsynth"

    def __post_init__(self) -> None:
        for name, value, allowed in (("--via", self.via, VIAS), ("--transcriber", self.transcriber, TRANSCRIBERS),
                                     ("--synth", self.synth, SYNTHS)):
            if value not in allowed:
                raise BadInputError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Route:
    """A chain of modalities and the engine of each step between them."""

    kind: str                      # one of ROUTE_KINDS
    stages: tuple[str, ...]        # modalities, source first
    engines: tuple[str, ...]       # one per step (len(stages) - 1)
    note: str = ""                 # why this route was chosen, when it is not the first choice

    @property
    def source(self) -> str:
        return self.stages[0]

    @property
    def target(self) -> str:
        return self.stages[-1]

    def steps(self) -> list[tuple[str, str, str]]:
        """(from, to, engine) of every step."""
        return [(a, b, e) for a, b, e in zip(self.stages, self.stages[1:], self.engines)]

    def model_kinds(self) -> list[str]:
        """The translator models (registry kinds) this route runs."""
        return sorted({MODEL_KIND[(a, b)] for a, b, e in self.steps() if e == "umust"})

    def describe(self) -> str:
        """'cascade (image -umust-> notation -perform-> midi -fluidsynth-> audio)'."""
        chain = self.stages[0] + "".join(f" -{e}-> {b}" for _, b, e in self.steps())
        return f"{self.kind} ({chain})" + (f"; {self.note}" if self.note else "")

    def to_json(self) -> dict:
        return {"route": self.kind, "stages": list(self.stages), "engines": list(self.engines),
                "note": self.note or None}


# ------------------------------------------------------------------ tasks
def modality_of(path: str | Path, what: str = "input") -> str:
    """The modality a file's suffix says; BadInputError naming the known suffixes."""
    suffix = Path(path).suffix.lower()
    table = SUFFIXES if what == "input" else OUTPUT_SUFFIXES
    for modality, suffixes in table.items():
        if suffix in suffixes:
            return modality
    known = " ".join(s for group in table.values() for s in group)
    raise BadInputError(f"cannot tell the {what} type of {path} from its suffix {suffix or '(none)'!r}; "
                        f"known: {known}")


def parse_task(name: str) -> tuple[str, str]:
    """'i2a', 'omr', 'amt', ... -> (source, target) modalities."""
    code = ALIASES.get(name.lower(), name.lower())
    if code not in TASKS:
        raise BadInputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} "
                            f"(or a name: {', '.join(ALIASES)})")
    by_letter = {v: k for k, v in LETTER.items()}
    return by_letter[code[0]], by_letter[code[2]]


def task_name(source: str, target: str) -> str:
    return f"{LETTER[source]}2{LETTER[target]}"


@dataclass(frozen=True)
class Job:
    """One input file, the file it becomes and the task between them."""

    source: Path
    dest: Path
    task: tuple[str, str]  # (source modality, target modality)


def plan_jobs(inputs: list[Path], output: Path, task: str | None) -> list[Job]:
    """The job of every input. One input and an ``output`` with a known suffix: the task comes
    from the two suffixes (``task``, if given, must agree). Otherwise ``output`` is a folder and
    ``task`` names the target: OUTPUT/<input stem><target's default suffix>."""
    if len(inputs) == 1 and output.suffix and not output.is_dir():
        pair = (modality_of(inputs[0]), modality_of(output, "output"))
        if task is not None and parse_task(task) != pair:
            raise BadInputError(f"--task {task} does not fit {inputs[0].name} -> {output.name} "
                                f"({task_name(*pair)})")
        return [Job(inputs[0], output, pair)]
    if output.exists() and not output.is_dir():
        raise BadInputError(f"-o {output} is a file; several inputs need a folder")
    if task is None:
        raise BadInputError("with several inputs or -o FOLDER, name the task with --task "
                            f"({', '.join(TASKS)}) so that the outputs' type is known")
    source, target = parse_task(task)
    jobs = []
    for path in inputs:
        if modality_of(path) != source:
            raise BadInputError(f"{path} is not {'an' if source in ('image', 'audio') else 'a'} {source} "
                                f"file, the source of --task {task}")
        jobs.append(Job(path, output / f"{path.stem}{DEFAULT_SUFFIX[target]}", (source, target)))
    return jobs


# ------------------------------------------------------------------ routes
def candidates(source: str, target: str, options: Options) -> list[Route]:
    """Every route of the task, the preferred one first (whether its models exist is not checked)."""
    synth = "umust" if options.synth == "neural" else "fluidsynth"
    hear = ("notation", "midi", "audio")                       # notation -> MIDI -> audio
    hear_engines = ("perform", synth)
    transcribe = options.transcriber if options.transcriber in ("umust", "note-reader") else "transkun"
    reader = [Route("direct", ("audio", "midi"), ("note-reader",))] if transcribe == "note-reader" else []
    table: dict[tuple[str, str], list[Route]] = {
        ("image", "audio"): [_direct("image", "audio"),
                             Route("cascade", ("image", "midi", "audio"), ("umust", synth)),
                             Route("cascade", ("image", *hear), ("umust", *hear_engines))],
        ("image", "notation"): [_direct("image", "notation")],
        ("image", "midi"): [_direct("image", "midi"),
                            Route("cascade", ("image", "notation", "midi"), ("umust", "perform"))],
        ("midi", "audio"): [_direct("midi", "audio"), Route("render", ("midi", "audio"), ("fluidsynth",))],
        ("audio", "midi"): [*reader, _direct("audio", "midi"), Route("reference", ("audio", "midi"), ("transkun",))],
        ("audio", "image"): [_direct("audio", "image"),
                             Route("cascade", ("audio", "midi", "notation", "image"),
                                   (transcribe, "quantize", "verovio"))],
        ("audio", "notation"): [Route("cascade", ("audio", "midi", "notation"), (transcribe, "quantize"))],
        ("notation", "image"): [_direct("notation", "image"), Route("render", ("notation", "image"), ("verovio",))],
        ("notation", "audio"): [Route("render" if synth == "fluidsynth" else "cascade", hear, hear_engines)],
        ("notation", "midi"): [Route("render", ("notation", "midi"), ("perform",))],
        ("midi", "notation"): [Route("cascade", ("midi", "notation"), ("quantize",))],
        ("midi", "image"): [Route("cascade", ("midi", "notation", "image"), ("quantize", "verovio"))],
    }
    if (source, target) not in table:
        raise BadInputError(f"umust does not translate {source} to {target}")
    return table[(source, target)]


def _direct(source: str, target: str) -> Route:
    return Route("direct", (source, target), ("umust",))


def choose_route(source: str, target: str, options: Options,
                 has_model: Callable[[str, str], bool],
                 auto_direct: Callable[[str, str], bool] | None = None) -> Route:
    """The route of ``source -> target``: ``options.via`` if given, else the first candidate
    whose translator tasks ``has_model(src, tgt)`` says are installed and, for a direct route,
    which ``auto_direct(src, tgt)`` says measured best (None: every installed task); the route
    carries a note when a preferred one was skipped. CheckpointError naming --model when none can run."""
    routes = candidates(source, target, options)
    if options.via != "auto":
        picked = [r for r in routes if _matches(r, options.via)]
        if not picked:
            kinds = ", ".join(sorted({_via_name(r) for r in routes}))
            raise BadInputError(f"{source} -> {target} has no --via {options.via} route (it has: {kinds})")
        routes = picked
    for route in routes:
        missing = [(a, b) for a, b, e in route.steps() if e == "umust" and not has_model(a, b)]
        worse = (options.via == "auto" and route.kind == "direct" and "umust" in route.engines and len(routes) > 1
                 and auto_direct is not None and not auto_direct(route.source, route.target))
        if not missing and not worse:
            return _with_note(route, routes[0], has_model)
    first = routes[0]
    need = [f"{a}->{b} ({MODEL_KIND[(a, b)]})" for a, b, e in first.steps() if e == "umust" and not has_model(a, b)]
    raise CheckpointError(f"no route for {source} -> {target}: it needs a translator model for "
                          f"{', '.join(need)} and none is installed; give a checkpoint folder with --model")


def _matches(route: Route, via: str) -> bool:
    return _via_name(route) == via or (via == "render" and route.kind == "reference")


def _via_name(route: Route) -> str:
    """``--via`` of a route: its kind, and for a cascade the way it goes (through notation, or
    through MIDI only)."""
    if route.kind != "cascade":
        return route.kind
    return "notation" if "notation" in route.stages else "midi"


def _with_note(route: Route, preferred: Route, has_model: Callable[[str, str], bool]) -> Route:
    if route is preferred or preferred.kind != "direct":
        return route
    a, b = preferred.source, preferred.target
    if has_model(a, b):
        why = (f"the default {MODEL_KIND[(a, b)]} model measured worse than this route on {a}->{b} "
               f"(docs/results.md); --via direct runs it")
    else:
        why = f"no direct {a}->{b} model (none installed or given with --model is trained for it)"
    return Route(route.kind, route.stages, route.engines, why)
