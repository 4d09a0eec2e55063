"""Find the score files a corpus is built from, and refuse held-out repertoire.

A source argument is a folder (searched recursively for kern, MusicXML and MEI
files), a single score file, or the word ``music21``: the Bach chorales and
keyboard pieces that ship inside music21's wheel (never Beethoven).

Beethoven's piano sonatas are the held-out test repertoire. A file is taken
for Beethoven when "beethoven" appears in its path, in a kern reference record
(``!!!COM:``), or in a MusicXML/MEI composer entry; the check is deliberately
broad (any Beethoven is refused as training material).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from umust_cli.codecs.notation import score_to_musicxml
from umust_cli.errors import HeldOutRepertoireError, InputNotFoundError, NotationError

SCORE_SUFFIXES = (".krn", ".musicxml", ".xml", ".mxl", ".mei")
MUSIC21_WORD = "music21"
HELD_OUT_COMPOSER = "beethoven"
# Keyboard pieces in music21's corpus (besides the Bach chorales): core paths relative to its root.
MUSIC21_KEYBOARD = ("joplin/maple_leaf_rag", "chopin/", "cpebach/", "mozart/k545/", "schumann_clara/polonaise")
_FOLDER_WORDS = {"kern", "krn", "musicxml", "xml", "mxl", "mei"}  # format folders named after their parent
_HEADER_BYTES = 65536  # how much of a file is scanned for composer records


@dataclass(frozen=True)
class PieceSource:
    piece_id: str  # unique, filesystem-safe, stable across runs: "<collection>-<file stem>"
    path: Path  # the score file
    origin: str  # what to print/record: the path as given, or "music21:<corpus path>"


def find_sources(sources: list[str]) -> list[PieceSource]:
    """All score files named by ``sources``, sorted and de-duplicated, with unique ids."""
    found: list[tuple[str, Path, str]] = []
    for src in sources:
        if src == MUSIC21_WORD:
            found.extend(_music21_sources())
        else:
            found.extend(_path_sources(Path(src)))
    seen_paths: set[Path] = set()
    pieces, used_ids = [], set()
    for base_id, path, origin in sorted(found, key=lambda f: (f[0], str(f[1]))):
        if path.resolve() in seen_paths:
            continue
        seen_paths.add(path.resolve())
        piece_id = _unique(base_id, used_ids)
        pieces.append(PieceSource(piece_id, path, origin))
    return pieces


def _path_sources(src: Path) -> list[tuple[str, Path, str]]:
    if src.is_file():
        return [(_slug(f"{_collection(src.parent)}-{src.stem}"), src, str(src))]
    if not src.is_dir():
        raise InputNotFoundError(f"no such file or folder: {src} (or use the word '{MUSIC21_WORD}')")
    collection = _collection(src)
    out = []
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in SCORE_SUFFIXES):
        parts = path.relative_to(src).with_suffix("").parts
        out.append((_slug("-".join((collection, *parts))), path, str(path)))
    return out


def _collection(folder: Path) -> str:
    """A folder's collection name: 'joplin' for .../joplin/kern, else the folder's own name."""
    folder = folder.resolve()
    if folder.name.lower() in _FOLDER_WORDS and folder.parent.name:
        return folder.parent.name
    return folder.name or "scores"


def _music21_sources() -> list[tuple[str, Path, str]]:
    from music21 import corpus

    root = Path(corpus.__file__).parent  # music21/corpus/<composer>/...
    out = []
    for path in corpus.getCorePaths():
        rel = Path(path).relative_to(root).as_posix()
        is_chorale = rel.startswith("bach/bwv")
        is_keyboard = rel.startswith(MUSIC21_KEYBOARD)
        if (is_chorale or is_keyboard) and HELD_OUT_COMPOSER not in rel.lower():
            stem = rel.rsplit(".", 1)[0].replace("/", "-")
            out.append((_slug(f"music21-{stem}"), Path(path), f"music21:{rel}"))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "piece"


def _unique(base: str, used: set[str]) -> str:
    name, k = base, 2
    while name.lower() in used:  # case-insensitive: ids are folder names
        name, k = f"{base}-{k}", k + 1
    used.add(name.lower())
    return name


# ------------------------------------------------------------- normalizing
def normalized_musicxml(source: PieceSource) -> str:
    """The piece as the notation codec's one-part piano MusicXML (chorales reduced to two staves)."""
    if source.origin.startswith(f"{MUSIC21_WORD}:bach/"):
        return score_to_musicxml(_two_staff_reduction(source.path))
    return score_to_musicxml(source.path)


def _two_staff_reduction(path: Path):
    """A four-part chorale as a piano score: S+A on a treble staff, T+B on a bass staff."""
    import music21
    from music21 import clef, stream

    score = music21.converter.parse(str(path))
    parts = _vocal_parts(list(score.parts))
    if len(parts) != 4:
        return score
    reduced = stream.Score()
    reduced.metadata = score.metadata
    for (upper, lower), staff_clef in (((parts[0], parts[1]), clef.TrebleClef()),
                                       ((parts[2], parts[3]), clef.BassClef())):
        reduced.insert(0, _merge_as_voices(upper, lower, staff_clef))
    if not reduced.parts[0].getElementsByClass(stream.Measure):
        raise NotationError(f"{path}: the chorale has no measures")
    return reduced


def _vocal_parts(parts: list) -> list:
    """The soprano, alto, tenor and bass parts of a chorale that also has instrumental
    parts (by part name); the parts unchanged when there are four or the names do not tell."""
    if len(parts) == 4:
        return parts
    voices = ("soprano", "alto", "tenor", "bass")
    found = [next((p for p in parts if (p.partName or "").strip().lower().startswith(v)), None) for v in voices]
    return found if all(found) else parts


def _merge_as_voices(upper, lower, staff_clef):
    """Two parts -> one part whose measures hold them as voices 1 and 2 (lyrics dropped)."""
    from music21 import note, stream

    part = stream.Part()
    for m_up, m_low in zip(upper.getElementsByClass(stream.Measure), lower.getElementsByClass(stream.Measure)):
        measure = stream.Measure(number=m_up.number)
        for el in m_up.getElementsByClass(("KeySignature", "TimeSignature")):
            measure.insert(el.offset, el)
        if m_up.number == upper.getElementsByClass(stream.Measure).first().number:
            measure.insert(0, staff_clef)
        for k, src in enumerate((m_up, m_low), start=1):
            voice = stream.Voice(id=str(k))
            for n in src.flatten().notesAndRests:
                if isinstance(n, note.GeneralNote):
                    n.lyrics = []
                voice.insert(n.offset, n)
            measure.insert(0, voice)
        part.append(measure)
    return part


# ----------------------------------------------------------- held-out check
def held_out_reason(source: PieceSource) -> str | None:
    """Why ``source`` looks like held-out repertoire (Beethoven), or None."""
    if HELD_OUT_COMPOSER in str(source.path).lower():
        return f"'{HELD_OUT_COMPOSER}' in its path"
    return origin_held_out_reason(source.origin, source.path)


def origin_held_out_reason(origin: str, score: Path | None = None) -> str | None:
    """The same rule for a piece known by its origin (a corpus row's ``source``) and, when at
    hand, its score file (a corpus's ``pieces/<id>/score.musicxml``): why it is held out, or None."""
    if HELD_OUT_COMPOSER in origin.lower():
        return f"'{HELD_OUT_COMPOSER}' in its path"
    composer = composer_record(_header(score)) if score is not None and score.is_file() else None
    if composer and HELD_OUT_COMPOSER in composer.lower():
        return f"composer record '{composer}'"
    return None


def check_not_held_out(source: PieceSource) -> None:
    """Raise HeldOutRepertoireError when ``source`` is held-out test repertoire."""
    reason = held_out_reason(source)
    if reason:
        raise HeldOutRepertoireError(f"{source.origin}: Beethoven is held-out test repertoire ({reason}); "
                                     "use --allow-held-out to build it into a test-only corpus")


def composer_record(text: str) -> str | None:
    """The composer named in a kern ``!!!COM:`` record or a MusicXML/MEI composer element."""
    patterns = (
        r"^!!!COM[^:]*:\s*(.+)$",
        r'<creator[^>]*type="composer"[^>]*>([^<]+)<',
        r'<persName[^>]*role="composer"[^>]*>([^<]+)<',
        r'<composer[^>]*>\s*(?:<persName[^>]*>)?([^<]+)<',
    )
    for pattern in patterns:
        match = re.search(pattern, text, re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return None


def _header(path: Path) -> str:
    """The first bytes of a score as text (an .mxl archive's score is unzipped)."""
    try:
        if path.suffix.lower() == ".mxl":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.startswith("META-INF")]
                data = archive.read(names[0])[:_HEADER_BYTES] if names else b""
        else:
            with open(path, "rb") as f:
                data = f.read(_HEADER_BYTES)
    except (OSError, KeyError, ValueError):
        return ""  # unreadable files fail later, with a better message
    return data.decode("utf-8", errors="replace")


# -------------------------------------------------------------------- splits
def split_of(piece_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """'train' / 'valid' / 'test' from a seeded hash of the piece id (by piece, deterministic)."""
    u = stable_unit(f"split:{seed}:{piece_id}")
    train, valid, _ = fractions
    if u < train:
        return "train"
    return "valid" if u < train + valid else "test"


def stable_unit(text: str) -> float:
    """A number in [0, 1) that depends only on ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def stable_seed(text: str) -> int:
    """A 31-bit seed that depends only on ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF
