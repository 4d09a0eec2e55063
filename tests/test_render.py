"""Engraving one system per page with verovio: layout, timing, images, MusicXML excerpts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from umust_cli.data import render
from umust_cli.errors import RenderError

# Rhythm of each measure (kern durations, 4/4); they differ so systems have different onset patterns.
RHYTHMS = (("4", "4", "4", "4"), ("8", "8", "8", "8", "4", "4"), ("2", "4", "4"), ("4.", "8", "2"),
           ("8", "8", "4", "8", "8", "4"), ("1",), ("4", "8", "8", "2"), ("2.", "4"))
TREBLE = ("c", "d", "e", "f", "g", "a", "b", "cc", "dd", "ee")
BASS = ("C", "E", "G", "F", "A", "D", "B", "GG")


def kern_piece(measures: int, seed: int = 0, composer: str = "Tester, Testy") -> str:
    """A two-staff kern score of ``measures`` 4/4 measures at 120 quarter notes per minute."""
    rng = np.random.default_rng(seed)
    lines = [f"!!!COM: {composer}", f"!!!OTL: Fixture {seed}", "**kern\t**kern", "*staff2\t*staff1",
             "*clefF4\t*clefG2", "*k[]\t*k[]", "*M4/4\t*M4/4", "*MM120\t*MM120"]
    for m in range(1, measures + 1):
        lines.append(f"={m}\t={m}")
        for dur in RHYTHMS[int(rng.integers(len(RHYTHMS)))]:
            lines.append(f"{dur}{BASS[int(rng.integers(len(BASS)))]}\t{dur}{TREBLE[int(rng.integers(len(TREBLE)))]}")
    lines += ["==\t==", "*-\t*-"]
    return "\n".join(lines) + "\n"


def staff_groups(image: np.ndarray) -> list[list[float]]:
    """Centres of groups of 5 evenly spaced dark rows (staves) in a uint8 grayscale image."""
    darkness = (255.0 - image.astype(np.float64)).mean(axis=1)  # [H]
    dark = darkness > 0.5 * darkness.max()
    centres, run = [], []
    for y, is_dark in enumerate(dark):
        if is_dark:
            run.append(y)
        elif run:
            centres.append(float(np.mean(run)))
            run = []
    if run:
        centres.append(float(np.mean(run)))
    groups, i = [], 0
    while i + 5 <= len(centres):
        gaps = np.diff(centres[i:i + 5])
        if gaps.min() > 3 and gaps.max() - gaps.min() <= 1.5:
            groups.append(centres[i:i + 5])
            i += 5
        else:
            i += 1
    return groups


@pytest.fixture(scope="module")
def engraved(tmp_path_factory):
    from umust_cli.codecs.notation import score_to_musicxml

    path = tmp_path_factory.mktemp("render") / "fixture.krn"
    path.write_text(kern_piece(16), encoding="utf-8")
    musicxml = score_to_musicxml(path)
    root = ET.fromstring(musicxml.encode("utf-8"))
    return root, render.engrave(musicxml, render.measure_count(root), render.EngraveConfig())


def test_systems_partition_the_measures_and_the_time(engraved):
    root, engraving = engraved
    systems = engraving.systems
    assert len(systems) >= 2
    assert systems[0].first_measure == 0 and systems[-1].end_measure == render.measure_count(root) == 16
    for a, b in zip(systems, systems[1:]):
        assert a.end_measure == b.first_measure and a.end_s == pytest.approx(b.start_s)
    assert systems[0].start_s == 0.0
    assert systems[-1].end_s == pytest.approx(engraving.duration_s) == pytest.approx(16 * 2.0)  # 4/4 at 120


def test_system_times_follow_its_measures(engraved):
    _, engraving = engraved
    for s in engraving.systems:  # every measure lasts 2 s (4 quarters at 120 per minute)
        assert s.start_s == pytest.approx(2.0 * s.first_measure, abs=1e-3)
        assert s.end_s == pytest.approx(2.0 * s.end_measure, abs=1e-3)


def test_score_midi_matches_the_timemap(engraved):
    _, engraving = engraved
    onsets = sorted({round(n.start, 3) for inst in engraving.midi.instruments for n in inst.notes})
    assert onsets[0] == 0.0
    assert engraving.midi.get_end_time() == pytest.approx(engraving.duration_s, abs=0.01)
    for s in engraving.systems:  # each system starts with a note in both staves
        assert any(abs(t - s.start_s) < 1e-3 for t in onsets)


def test_system_image_has_a_grand_staff(engraved):
    _, engraving = engraved
    image = render.rasterize(engraving.systems[1].svg, margin_px=8)
    assert image.dtype == np.uint8 and image.ndim == 2
    groups = staff_groups(image)
    assert len(groups) == 2  # treble and bass staff, nothing else (one system per image)
    spacing = [np.diff(g).mean() for g in groups]
    assert spacing[0] == pytest.approx(spacing[1], abs=0.5)
    assert 7 <= spacing[0] <= 11  # fixed staff height at scale 50: 9 px between lines
    assert (image[:8] == 255).all() and (image[:, -8:] == 255).all()  # trimmed, with the white margin


def test_inlined_glyphs_draw_the_same_pixels(engraved):
    import io

    import cairosvg
    from PIL import Image

    svg = engraved[1].systems[0].svg  # engrave already inlined the glyph references
    assert "<use" not in svg and "<path" in svg

    def pixels(text):
        png = cairosvg.svg2png(bytestring=text.encode(), background_color="white")
        return np.asarray(Image.open(io.BytesIO(png)).convert("L"))

    snippet = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
               'width="60px" height="60px" viewBox="0 0 600 600"><defs><g id="G1"><path d="M0 0L300 0L300 300z"/>'
               '</g></defs><use xlink:href="#G1" transform="translate(100, 100) scale(0.5, 0.5)" /></svg>')
    assert "<use" not in render.inline_glyphs(snippet)
    assert np.array_equal(pixels(snippet), pixels(render.inline_glyphs(snippet)))


def test_trim_keeps_margin_and_rejects_blank():
    image = np.full((50, 80), 255, np.uint8)
    image[10:20, 30:35] = 0
    out = render.trim(image, 4)
    assert out.shape == (10 + 8, 5 + 8) and (out[4:-4, 4:-4] == 0).all()
    with pytest.raises(RenderError):
        render.trim(np.full((5, 5), 255, np.uint8), 2)


def test_musicxml_excerpt_restates_attributes_and_linearizes(engraved, tmp_path):
    from umust_cli.codecs.notation import NotationCodec

    root, engraving = engraved
    second = engraving.systems[1]
    text = render.slice_musicxml(root, second.first_measure, second.end_measure)
    excerpt = ET.fromstring(text.encode("utf-8"))
    measures = excerpt.find("part").findall("measure")
    assert len(measures) == second.end_measure - second.first_measure
    attributes = measures[0].find("attributes")
    assert attributes.find("divisions") is not None and attributes.find("time") is not None
    assert len(attributes.findall("clef")) == 2 and attributes.find("staves").text == "2"
    path = tmp_path / "system.musicxml"
    path.write_text(text, encoding="utf-8")
    lmx = NotationCodec().to_lmx(path).split()
    assert lmx.count("measure") == len(measures)
    assert "clef:G2" in lmx and "clef:F4" in lmx
    with pytest.raises(RenderError):
        render.slice_musicxml(root, 3, 3)


def test_overfull_measures_finds_a_bar_holding_too_much():
    import xml.etree.ElementTree as ET

    from umust_cli.data.render import overfull_measures

    def note(duration: int, chord: bool = False) -> str:
        return f"<note>{'<chord/>' if chord else ''}<pitch><step>C</step><octave>4</octave></pitch>" \
               f"<duration>{duration}</duration></note>"

    attributes = "<attributes><divisions>2</divisions><time><beats>3</beats><beat-type>4</beat-type></time></attributes>"
    pickup = f"<measure number='0'>{attributes}{note(2)}</measure>"  # one beat: under-full is fine
    full = f"<measure number='1'>{note(4)}{note(4, chord=True)}{note(2)}<backup><duration>6</duration></backup>{note(6)}</measure>"
    stuffed = f"<measure number='2'>{''.join(note(2) for _ in range(12))}</measure>"  # 12 beats in a 3-beat bar
    root = ET.fromstring(f"<score-partwise><part id='P1'>{pickup}{full}{stuffed}</part></score-partwise>")
    assert overfull_measures(root) == {2: (12.0, 3.0)}
