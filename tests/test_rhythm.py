"""The rhythmic reading of a system: LMX -> each staff's groups (data.staff_order.staff_groups),
their CTC classes and back to LMX (data.rhythm)."""

from dataclasses import replace

from umust_cli.data.rhythm import header_tokens, meter, move_tokens, read_groups, write_lmx, write_reading
from umust_cli.data.staff_order import (BAR, JOIN, REST, SAME, TIE, VALUE, Group, ctc_classes, rhythmic_sequence,
                                        staff_classes, staff_groups, value_quarters)
from fractions import Fraction

# Two measures of 3/4 in the linearizer's layout: a pickup-free system with a tie across the bar
# line, triplets, a dotted eighth and sixteenth (its hook), a second voice with rests on staff 1,
# chords on staff 2 (a chord carries no beam of its own).
SYSTEM = ("measure key:fifths:3 time beats:3 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
          "F4 voice:1 eighth 3in2 staff:1 beam:begin tuplet:start G4 eighth 3in2 F4 eighth 3in2 beam:end "
          "tuplet:stop E4 eighth sharp beam:begin F4 eighth beam:end G4 eighth dot beam:begin D4 16th beam:end "
          "beam:forward-hook backup half backup quarter C2 voice:5 quarter staff:2 C3 quarter chord G3 quarter "
          "chord B3 quarter C3 quarter chord E3 quarter sharp chord B3 quarter "
          "measure C4 voice:1 eighth staff:1 beam:begin rest 16th F4 16th beam:end beam:forward-hook A4 quarter "
          "A4 quarter tied:start backup half backup quarter rest voice:2 quarter staff:1 rest quarter F4 quarter "
          "backup half backup quarter F2 voice:5 quarter staff:2 F3 eighth beam:begin chord C4 eighth "
          "F3 eighth beam:end chord C4 eighth A3 quarter "
          "measure A4 voice:1 half staff:1 tied:stop rest quarter backup half backup quarter "
          "rest voice:5 rest:measure staff:2").split()


def test_staff_groups_read_onsets_voices_and_values():
    top, bottom = staff_groups(SYSTEM)
    # a note beamed to the next one of its voice is joined (the last of a beam and a rest are not)
    assert top[:3] == [Group((("F4", None),), "eighth/3", joined=True), Group((("G4", None),), "eighth/3", joined=True),
                       Group((("F4", None),), "eighth/3", joined=False)]
    assert top[3] == Group((("E4", 1),), "eighth", joined=True) and top[5:7] == [
        Group((("G4", None),), "eighth.", joined=True), Group((("D4", None),), "16th", joined=False)]
    second = top[top.index(BAR) + 1:]
    # voice 2's rest starts with voice 1's eighth (SAME); the tie on A4 reads on the next measure
    # (C4 is beamed over voice 1's 16th rest to its F4)
    assert second[:2] == [Group((("C4", None),), "eighth", joined=True), Group((), "quarter", same=True, joined=False)]
    assert second[second.index(BAR) + 1] == Group((("A4", TIE),), "half", joined=False)
    assert bottom[1] == Group((("C3", None), ("G3", None), ("B3", None)), "quarter", joined=False)
    assert bottom[-1] == Group((), "measure", joined=False) and bottom.count(BAR) == 2


def test_write_lmx_inverts_staff_groups():
    assert write_lmx(staff_groups(SYSTEM), header_tokens(SYSTEM)) == SYSTEM


def test_rhythmic_classes_round_trip_through_a_reading():
    classes = ctc_classes("rhythmic")
    assert len(classes) == len(ctc_classes("notated")) + 2 + len({c for c in classes if c[0] == VALUE})
    for ids, groups in zip(staff_classes(SYSTEM, "rhythmic"), staff_groups(SYSTEM)):
        named = [classes[i] for i in ids]
        assert named == rhythmic_sequence(groups)
        assert read_groups(named) == [replace(g, joined=None) if isinstance(g, Group) else g for g in groups]
    first = [classes[i] for i in staff_classes(SYSTEM, "rhythmic")[0]]
    assert first[:2] == [("F4", None), (VALUE, "eighth/3")]
    bar = first.index(BAR)
    assert first[bar + 1:bar + 6] == [("C4", None), (VALUE, "eighth"), SAME, REST, (VALUE, "quarter")]


def test_beamed_classes_carry_the_beams_of_the_source():
    """The beamed classes add JOIN after a note beamed to its voice's next note: read back, the
    groups are the source's, and written as LMX they beam as the source does, not by beat."""
    classes = ctc_classes("beamed")
    assert classes[:-1] == ctc_classes("rhythmic") and classes[-1] == JOIN
    for ids, groups in zip(staff_classes(SYSTEM, "beamed"), staff_groups(SYSTEM)):
        named = [classes[i] for i in ids]
        assert named == rhythmic_sequence(groups, joins=True) and read_groups(named, joins=True) == groups
    first = [classes[i] for i in staff_classes(SYSTEM, "beamed")[0]]
    assert first[:6] == [("F4", None), (VALUE, "eighth/3"), JOIN, ("G4", None), (VALUE, "eighth/3"), JOIN]
    assert write_reading(staff_classes(SYSTEM, "beamed"), header_tokens(SYSTEM), "beamed") == SYSTEM
    # two eighths of one beat the source leaves unbeamed (flags): by beat they would be beamed
    flagged = ("measure time beats:1 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 C5 voice:1 eighth staff:1 "
               "D5 eighth").split()
    assert "beam:begin" not in write_reading(staff_classes(flagged, "beamed"), header_tokens(flagged), "beamed")
    assert "beam:begin" in write_reading(staff_classes(flagged, "rhythmic"), header_tokens(flagged))


def test_read_groups_closes_stray_notes_and_drops_empty_values():
    assert read_groups([(VALUE, "half"), ("C4", None), BAR, ("D4", 1), ("F4", None)]) == [
        Group((("C4", None),), "quarter"), BAR, Group((("D4", 1), ("F4", None)), "quarter")]


def test_values_moves_and_meters():
    assert value_quarters("eighth.") == Fraction(3, 4) and value_quarters("eighth/3") == Fraction(1, 3)
    assert value_quarters("quarter..") == Fraction(7, 4) and value_quarters("grace") == 0
    assert move_tokens("backup", Fraction(3)) == ["backup", "half", "backup", "quarter"]
    assert move_tokens("forward", Fraction(1, 3)) == ["forward", "16th", "forward", "32nd"]   # to 32nds
    assert move_tokens("forward", Fraction(1, 24)) == []
    assert meter(["time", "beats:6", "beat-type:8"]) == (Fraction(3), Fraction(3, 2))
    assert meter(["time", "beats:3", "beat-type:8"]) == (Fraction(3, 2), Fraction(3, 2))
    assert meter(["time", "beats:2", "beat-type:2"]) == (Fraction(4), Fraction(2))
    assert meter(["clef:G2", "staff:1"]) == (None, Fraction(1))
    assert header_tokens(SYSTEM) == SYSTEM[1:9]


def test_a_rhythmic_reading_plays_at_its_notated_onsets():
    from umust_cli.translate.direct import Reading, rhythm_notes

    staves = [[(i / 4, c) for i, c in enumerate(s)] for s in staff_classes(SYSTEM, "rhythmic")]
    notes, end = rhythm_notes(Reading(40, staves, 3, "rhythmic", 4), start=1.0, quarter_seconds=0.5)
    assert end == 1.0 + 3 * 3 * 0.5                                    # three measures of 3/4
    top = sorted((n.start, n.pitch) for n in notes if n.pitch >= 62 and n.start < 2.5)
    # triplet eighths F#4 G#4 F#4 (A major), then E#4 (a printed sharp), F#4, G#4 dotted, D4 sixteenth
    assert [p for _, p in top] == [66, 68, 66, 65, 66, 68, 62]
    assert [round((t - 1.0) * 24) for t, _ in top] == [0, 4, 8, 12, 18, 24, 33]
    a4 = [n for n in notes if n.pitch == 69]                # measure 2 from 2.5 s; the tie holds A4 into measure 3
    assert [(n.start, n.end) for n in a4] == [(3.0, 3.5), (3.5, 5.0)]
