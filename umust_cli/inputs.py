"""The one validated loader per input modality, used by every command.

Each loader checks what a new user can get wrong *before* anything expensive
happens: a missing path or a folder, an empty, truncated or binary file, a
header that promises an absurd size (checked from the header, before the data
is decoded), NaN/infinite or silent samples, an unknown file version. Every
refusal is one typed :class:`~umust_cli.errors.BadInputError` line (exit 2).

The bounds below say what one input may cost; the messages name them.

* ``MAX_IMAGE_PIXELS``: a page scanned at 600 dpi (US letter: 5100 x 6600 px)
  fits; a 12000 x 12000 image does not. ``MAX_SYSTEM_PIXELS``: what the image
  codec encodes in one piece (it needs about 0.8 KB of memory a pixel).
* ``MAX_AUDIO_SECONDS``: half an hour of sound read at once (a long sonata
  movement or a whole recording to search in); ``MAX_AUDIO_SAMPLES`` bounds
  samples x channels read (800 MB as float32) for high-rate multichannel files.
* ``MIN_AUDIO_SECONDS``: shorter clips carry no music to tokenize or search.
* ``MAX_CODE_ELEMENTS``: the codes of a 600-dpi page or of half an hour of audio;
  ``MAX_ARRAY_ELEMENTS`` other .npy inputs (a 7000 x 7000 distance matrix).
* ``MAX_MIDI_BYTES`` / ``MAX_MIDI_SECONDS``, ``MAX_TEXT_BYTES``, ``MAX_SCORE_BYTES`` for
  MIDI, token/LMX text and score files.

Layer: imports only ``errors``, ``io`` and third-party packages (numpy at the
top; soundfile, PIL, pretty_midi inside the functions).
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path

import numpy as np

from umust_cli.errors import (AudioError, BadInputError, ImageError, InputNotFoundError, MidiError,
                              NotationError)

MAX_IMAGE_PIXELS = 36_000_000         # 6000 x 6000; a 600-dpi letter page is 33.7 Mpx
MAX_SYSTEM_PIXELS = 4_000_000         # one system image the image codec encodes at once (4000 x 1000
                                      # px: the codec needs about 0.8 KB a pixel, so about 3 GB)
MAX_AUDIO_SECONDS = 1800.0            # half an hour read at once
MAX_AUDIO_SAMPLES = 200_000_000       # samples x channels read at once (800 MB as float32)
MIN_AUDIO_SECONDS = 0.05              # shorter clips hold no music
SILENCE_PEAK = 1e-4                   # peak below this (-80 dBFS) is silence
MAX_CODE_ELEMENTS = 1_000_000         # codes in one .npy (4 x 250,000)
MAX_ARRAY_ELEMENTS = 50_000_000       # other .npy inputs: distance matrices, embeddings (400 MB as float64)
MAX_MIDI_BYTES = 16 * 2**20           # a MIDI file larger than 16 MiB is not a piano performance
MAX_MIDI_SECONDS = 3 * 3600.0         # notes later than 3 h are a broken file
MAX_TEXT_BYTES = 16 * 2**20           # token and LMX text files
MAX_SCORE_BYTES = 64 * 2**20          # a MusicXML/kern/MEI score (a long piano sonata is a few MB)
LMX_VERSIONS = ("1.0",)               # .lmx file layout versions this umust reads
LMX_FLAVORS = ("core", "extended")


# ------------------------------------------------------------------ files
def require_input_file(path: str | Path, what: str = "file",
                       error: type[BadInputError] = BadInputError) -> Path:
    """``path`` as a Path if it is a non-empty regular file; InputNotFoundError if it is missing,
    ``error`` (the modality's BadInputError subclass) for a folder or an empty file."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{p} is a folder, expected a {what}")
    if not p.is_file():
        raise InputNotFoundError(f"no such {what}: {p}")
    if p.stat().st_size == 0:
        raise error(f"{what} {p} is empty (0 bytes)")
    return p


def load_text(path: str | Path, what: str = "text file", max_bytes: int = MAX_TEXT_BYTES,
              error: type[BadInputError] = BadInputError) -> str:
    """A UTF-8 text file with something in it; binary, huge or blank files are ``error``."""
    p = require_input_file(path, what, error)
    size = p.stat().st_size
    if size > max_bytes:
        raise error(f"{what} {p} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    data = p.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p} is not a UTF-8 text {what} (binary data at byte {e.start})") from e
    if not text.strip():
        raise error(f"{what} {p} holds only white space")
    return text


def require_score(path: str | Path) -> Path:
    """A score file (MusicXML, .mxl, kern, MEI) that exists, is not empty and is at most
    MAX_SCORE_BYTES; its contents are parsed by the notation codec."""
    p = require_input_file(path, "score file", NotationError)
    size = p.stat().st_size
    if size > MAX_SCORE_BYTES:
        raise NotationError(f"score file {p} is {size / 2**20:.1f} MiB; the limit is {MAX_SCORE_BYTES / 2**20:.0f} MiB")
    return p


def load_lmx(path: str | Path) -> str:
    """The text of an LMX file: bare tokens, or the ``.lmx`` layout whose header is checked
    (``version`` in LMX_VERSIONS, ``flavor`` in LMX_FLAVORS, ``key: value`` lines before ``---``)."""
    text = load_text(path, "LMX file", error=NotationError)
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    if "---" not in lines:
        return text
    header = {}
    for n, line in enumerate(lines[:lines.index("---")], start=1):
        key, sep, value = line.partition(":")
        if not line:
            continue
        if not sep:
            raise NotationError(f"{path}:{n}: expected a 'key: value' header line before '---', got {line[:40]!r}")
        header[key.strip()] = value.strip()
    version, flavor = header.get("version"), header.get("flavor")
    if version is not None and version not in LMX_VERSIONS:
        raise NotationError(f"{path}: unknown LMX file version {version!r} (this umust reads "
                            f"{', '.join(LMX_VERSIONS)})")
    if flavor is not None and flavor not in LMX_FLAVORS:
        raise NotationError(f"{path}: unknown LMX flavor {flavor!r} (choose from {', '.join(LMX_FLAVORS)})")
    return text


# ------------------------------------------------------------------ audio
def load_audio(path: str | Path, sample_rate: int | None = None, start: float = 0.0,
               end: float | None = None, keep_channels: bool = False) -> tuple[np.ndarray, int]:
    """Seconds [start, end) of a sound file -> (samples float32 mono, rate).

    ``sample_rate`` resamples (soxr, high quality); None keeps the file's rate.
    ``keep_channels`` returns (samples, channels) instead of the mono mix.
    AudioError for unreadable, truncated, too long (MAX_AUDIO_SECONDS), too short,
    NaN/infinite or silent audio; the length is checked from the header first.
    """
    import soundfile as sf

    p = require_input_file(path, "audio file", AudioError)
    if p.suffix.lower() in (".wav", ".wave"):
        _check_wav_complete(p)
    try:
        info = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        raise AudioError(f"cannot read audio {p}: {_one_line(e)}") from e
    first, last = _audio_span(p, info.samplerate, info.frames, info.channels, start, end)
    try:
        data, rate = sf.read(str(p), start=first, stop=last, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, MemoryError) as e:
        raise AudioError(f"cannot read audio {p}: {_one_line(e)}") from e
    x = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    check_audio(x, int(rate), str(p))
    if keep_channels:
        x = data
    if sample_rate is not None and int(rate) != sample_rate:
        import soxr

        x = soxr.resample(x, int(rate), sample_rate, quality="HQ").astype(np.float32, copy=False)
        rate = sample_rate
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def _audio_span(p: Path, rate: int, frames: int, channels: int, start: float,
                end: float | None) -> tuple[int, int]:
    """Sample indices [first, last) of seconds [start, end), checked against the bounds."""
    if rate <= 0 or channels <= 0:
        raise AudioError(f"audio {p} has an invalid header ({rate} Hz, {channels} channels)")
    if frames <= 0:
        raise AudioError(f"audio {p} holds no samples")
    if not math.isfinite(start) or start < 0 or (end is not None and not (math.isfinite(end) and end > start)):
        raise BadInputError(f"invalid time span [{start}, {end}) of {p}")
    first, last = int(start * rate), min(frames, frames if end is None else int(math.ceil(end * rate)))
    if first >= frames:
        raise AudioError(f"{p} is {frames / rate:.2f} s long; nothing to read from {start:.2f} s")
    seconds = (last - first) / rate
    if seconds > MAX_AUDIO_SECONDS or (last - first) * channels > MAX_AUDIO_SAMPLES:
        raise AudioError(f"audio {p} is {seconds:.0f} s ({channels} channels at {rate} Hz); the limit is "
                         f"{MAX_AUDIO_SECONDS:.0f} s and {MAX_AUDIO_SAMPLES:,} samples read at once")
    return first, last


def check_audio(x: np.ndarray, rate: int, what: str = "audio") -> np.ndarray:
    """Refuse non-finite, silent (peak < SILENCE_PEAK) or too short (MIN_AUDIO_SECONDS) samples."""
    if x.size == 0:
        raise AudioError(f"{what} holds no samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{what} holds NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak < SILENCE_PEAK:
        raise AudioError(f"{what} is silent (peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS, "
                         f"below {20 * math.log10(SILENCE_PEAK):.0f})")
    if x.size < MIN_AUDIO_SECONDS * rate:
        raise AudioError(f"{what} is too short ({x.size} samples at {rate} Hz; at least "
                         f"{MIN_AUDIO_SECONDS} s)")
    return x


def _check_wav_complete(path: Path) -> None:
    """AudioError when a RIFF/WAVE file's data chunk runs past the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF (RF64, raw, ...): let libsndfile decide
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_len not in (0, 0xFFFFFFFF) and pos + 8 + chunk_len > size:
                    raise AudioError(f"audio file {path} is truncated: its data chunk promises "
                                     f"{chunk_len} bytes, {size - pos - 8} are there")
                return
            pos += 8 + chunk_len + (chunk_len & 1)
    raise AudioError(f"audio file {path} is truncated: no complete data chunk")


# ------------------------------------------------------------------ images
def load_image(source: str | Path | bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file (or its bytes) -> (H, W) uint8 gray, transparency composited over white.

    The size is checked from the header (``max_pixels``: MAX_IMAGE_PIXELS for a page,
    MAX_SYSTEM_PIXELS for what the image codec encodes) before the pixels are decoded.
    """
    from PIL import Image, UnidentifiedImageError

    what = "image bytes" if isinstance(source, bytes) else str(source)
    opener = io.BytesIO(source) if isinstance(source, bytes) else require_input_file(source, "image", ImageError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(opener) as im:
                check_pixels(im.size[1], im.size[0], what, max_pixels)
                im.load()
                gray = _to_gray(im)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {what} is too large: {_one_line(e)} (the limit is "
                         f"{max_pixels:,} pixels)") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ImageError(f"cannot read image {what}: {_one_line(e)}") from e
    return gray


def check_pixels(height: int, width: int, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """ImageError for an empty image or one over ``max_pixels``."""
    if height <= 0 or width <= 0:
        raise ImageError(f"image {what} is empty ({width} x {height} px)")
    if height * width > max_pixels:
        raise ImageError(f"image {what} is {width} x {height} px; the limit is {max_pixels:,} pixels")


def _to_gray(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("L"), dtype=np.uint8)


# ------------------------------------------------------------------ MIDI
def load_midi(path: str | Path, require_notes: bool = False):
    """A standard MIDI file -> pretty_midi.PrettyMIDI; MidiError if unreadable, too large or
    (with ``require_notes``) without notes. Size and header are checked before parsing."""
    import pretty_midi

    p = require_input_file(path, "MIDI file", MidiError)
    size = p.stat().st_size
    if size > MAX_MIDI_BYTES:
        raise MidiError(f"MIDI file {p} is {size / 2**20:.1f} MiB; the limit is {MAX_MIDI_BYTES / 2**20:.0f} MiB")
    with open(p, "rb") as f:
        if f.read(4) != b"MThd":
            raise MidiError(f"cannot read MIDI file {p}: not a standard MIDI file (no MThd header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about odd meta events
            pm = pretty_midi.PrettyMIDI(str(p))
        end = pm.get_end_time()
    except Exception as e:  # mido/pretty_midi raise many types for broken files
        raise MidiError(f"cannot read MIDI file {p} ({type(e).__name__}: {_one_line(e)})") from e
    if not math.isfinite(end) or end > MAX_MIDI_SECONDS:
        raise MidiError(f"MIDI file {p} lasts {end:.0f} s; the limit is {MAX_MIDI_SECONDS:.0f} s")
    if require_notes and not any(inst.notes for inst in pm.instruments):
        raise MidiError(f"MIDI file {p} has no notes")
    return pm


# ------------------------------------------------------------------ codes
def load_codes(path: str | Path, ndim: tuple[int, ...] = (1, 2, 3), high: int | None = None,
               max_elements: int = MAX_CODE_ELEMENTS) -> np.ndarray:
    """An integer .npy code array (int64), checked like :func:`load_array`.

    ``ndim``: the accepted numbers of dimensions; ``high``: codes must lie in [0, high).
    """
    codes = load_array(path, "code file", "iu", ndim, max_elements).astype(np.int64)
    if high is not None and (codes.min() < 0 or codes.max() >= high):
        raise BadInputError(f"{path} holds codes outside [0, {high}) (min {codes.min()}, max {codes.max()})")
    return codes


def load_array(path: str | Path, what: str = "array file", kinds: str = "iuf", ndim: tuple[int, ...] = (1, 2, 3),
               max_elements: int = MAX_ARRAY_ELEMENTS) -> np.ndarray:
    """A numeric .npy array whose header (dtype kind in ``kinds``, ``ndim``, at most ``max_elements``,
    the data all there) is checked before the data is read; BadInputError otherwise."""
    p = require_input_file(path, what)
    shape, dtype, offset = _npy_header(p)
    if dtype.kind not in kinds:
        wanted = {"i": "integers", "u": "integers", "f": "floats"}
        raise BadInputError(f"{p} holds {dtype} values; expected {' or '.join(sorted({wanted[k] for k in kinds}))}")
    if len(shape) not in ndim or 0 in shape:
        raise BadInputError(f"{p} has shape {shape}; expected a non-empty array of "
                            f"{' or '.join(map(str, ndim))} dimensions")
    size = math.prod(shape)
    if size > max_elements:
        raise BadInputError(f"{p} holds {size:,} values (shape {shape}); the limit is {max_elements:,}")
    need = offset + size * dtype.itemsize
    if p.stat().st_size < need:
        raise BadInputError(f"{p} is truncated: its header promises {need:,} bytes, {p.stat().st_size:,} are there")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadInputError(f"{p} is not a readable .npy array ({_one_line(e)})") from e


def _npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a .npy file from its header; BadInputError for other files."""
    fmt = np.lib.format
    with open(p, "rb") as f:
        zipped = f.read(2) == b"PK"
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=2**16)
        except (ValueError, EOFError, SyntaxError) as e:
            kind = "an .npz archive" if zipped else _one_line(e)
            raise BadInputError(f"{p} is not a .npy array ({kind})") from e
        return tuple(int(n) for n in shape), dtype, f.tell()


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (libraries put newlines in theirs)."""
    text = " ".join(str(e).split())
    return text or type(e).__name__
