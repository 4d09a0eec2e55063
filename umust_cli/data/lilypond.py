"""A second engraver: LilyPond (Debian's ``lilypond``, fed MusicXML through its ``musicxml2ly``).

LilyPond draws the systems that verovio laid out: each system's measure slice
(:func:`umust_cli.data.render.slice_musicxml`, the very MusicXML written beside the
image) becomes its own score, converted by ``musicxml2ly`` and engraved on one line
(line and page breaks forbidden, ragged right, no title or page number). So a
LilyPond image shows exactly the measures of its row's notation, MIDI and audio by
construction; one ``lilypond`` run engraves all systems of a piece (its start-up
takes seconds). The PNG is rendered at the resolution that gives the staff the height
verovio's ``scale`` would (36 px at 50), then trimmed to the ink like verovio's.

There is no notehead-to-onset alignment for these images (LilyPond's output does not
carry verovio's note ids), so no ``NNN.align.json`` is written for them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from umust_cli.errors import RenderError

FONT = "Emmentaler"  # LilyPond's music font
STAFF_PT = 20.0  # musicxml2ly's global staff size (points from top to bottom line)
_STAFF_PX_AT_SCALE_50 = 36.0  # verovio's staff height at scale 50
_DROP_TOP = ("work", "movement-number", "movement-title", "identification", "credit", "defaults")
_LAYOUT = r"""
\header { tagline = ##f title = ##f subtitle = ##f composer = ##f }
\paper { indent = 0 ragged-right = ##t ragged-bottom = ##t ragged-last-bottom = ##t
  paper-width = 120\cm paper-height = 30\cm print-page-number = ##f left-margin = 1\cm top-margin = 1\cm }
\layout { \context { \Score \override NonMusicalPaperColumn.line-break-permission = ##f
                               \override NonMusicalPaperColumn.page-break-permission = ##f } }
"""


def available() -> bool:
    """True when both ``lilypond`` and ``musicxml2ly`` are on the PATH."""
    return shutil.which("lilypond") is not None and shutil.which("musicxml2ly") is not None


def resolution_dpi(scale: int) -> int:
    """PNG resolution giving LilyPond's staff the height verovio draws at ``scale``."""
    return round(_STAFF_PX_AT_SCALE_50 * scale / 50.0 * 72.0 / STAFF_PT)


def engrave_slices(slices: list[str], scale: int, timeout_s: float = 600.0) -> list[np.ndarray | RenderError]:
    """MusicXML texts (one system each) -> per system an untrimmed grayscale uint8 page, or the
    RenderError that says why it could not be engraved (converter failed, more than one page).

    RenderError when LilyPond is not installed or times out."""
    if not available():
        raise RenderError("LilyPond is not installed (apt-get install lilypond)")
    with tempfile.TemporaryDirectory(prefix="umust-ly-") as tmp:
        names: list[str | RenderError] = []
        for i, text in enumerate(slices):
            try:
                names.append(_write_ly(Path(tmp), f"s{i:03d}", text, timeout_s))
            except (RenderError, ET.ParseError) as e:
                names.append(RenderError(f"musicxml2ly: {e}"))
        ready = [n for n in names if isinstance(n, str)]
        if ready:  # a file LilyPond cannot engrave makes it exit 1 after doing the others
            _run(["lilypond", "--png", f"-dresolution={resolution_dpi(scale)}", "-dno-point-and-click",
                  "--loglevel=ERROR", *ready], Path(tmp), timeout_s, check=False)
        return [n if isinstance(n, RenderError) else _read_page(Path(tmp), Path(n).stem) for n in names]


def _write_ly(tmp: Path, stem: str, musicxml: str, timeout_s: float) -> str:
    (tmp / f"{stem}.musicxml").write_bytes(_for_lilypond(musicxml))
    _run(["musicxml2ly", "--loglevel=ERROR", "-o", f"{stem}.ly", f"{stem}.musicxml"],
         tmp, timeout_s)
    ly = tmp / f"{stem}.ly"
    ly.write_text(ly.read_text(encoding="utf-8") + _LAYOUT, encoding="utf-8")
    return ly.name


def _for_lilypond(musicxml: str) -> bytes:
    """The slice without title/credits, layout hints and text dynamics musicxml2ly cannot parse."""
    root = ET.fromstring(musicxml.encode("utf-8"))
    for tag in _DROP_TOP:
        for element in root.findall(tag):
            root.remove(element)
    for measure in root.iter("measure"):
        for element in list(measure):
            odd_dynamic = element.tag == "direction" and \
                element.find("direction-type/dynamics/other-dynamics") is not None
            if element.tag == "print" or odd_dynamic:
                measure.remove(element)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _run(command: list[str], cwd: Path, timeout_s: float, check: bool = True) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise RenderError(f"{command[0]} took more than {timeout_s:g} s") from e
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RenderError(f"{command[0]} failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def _read_page(tmp: Path, stem: str) -> np.ndarray | RenderError:
    from PIL import Image

    if not (tmp / f"{stem}.png").is_file():  # several pages are written as STEM-pageN.png
        return RenderError("LilyPond did not engrave the system on one page")
    with Image.open(tmp / f"{stem}.png") as image:
        return np.asarray(image.convert("L"))
