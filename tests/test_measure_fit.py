"""A rhythm reader's measures fitted to the time signature (data.measure_fit): consistency of a
measure, the likeliest fitting edit from the frame log-probabilities, and what is left alone."""

from fractions import Fraction

import numpy as np
import torch

from umust_cli.data.measure_fit import FitOptions, consistent, fit_staff, read_meter
from umust_cli.data.rhythm import time_signature, with_time
from umust_cli.data.staff_order import BAR, JOIN, REST, SAME, VALUE, ctc_classes, staff_classes, staff_groups
from umust_cli.model.translator import CTC_STAVES, column_ctc_emissions, column_ctc_log_probs

CLASSES = ctc_classes("rhythmic")
ID = {c: k for k, c in enumerate(CLASSES)}
BLANK = len(CLASSES)
PER_COLUMN = 4


def v(value: str) -> int:
    return ID[(VALUE, value)]


def n(name: str) -> int:
    return ID[(name, None)]


def frames_for(ids: list[int], likely: dict[tuple[int, int], float]) -> tuple[list[float], np.ndarray]:
    """Emission positions (one class every other frame, blanks between) and frame log-probs
    where each emitted class is near certain (log-prob -0.05) and every other class unlikely
    (-12), except ``likely`` {(index in ids, class): log-prob} at that emission's frame and
    {(-1 - index, class)} at the blank frame after it."""
    lp = np.full((2 * len(ids) + 1, BLANK + 1), -12.0, np.float32)
    for i, c in enumerate(ids):
        lp[2 * i, c] = -0.05
        lp[2 * i + 1, BLANK] = -0.05
    lp[-1, BLANK] = -0.05
    for (i, c), value in likely.items():
        lp[2 * i if i >= 0 else 2 * (-1 - i) + 1, c] = value
    return [2 * i / PER_COLUMN for i in range(len(ids))], lp


def test_consistent_measures_fill_the_first_voice_and_no_more():
    quarter, half = (VALUE, "quarter"), (VALUE, "half")
    e4, c4 = ("E4", None), ("C4", None)
    assert consistent([e4, quarter] * 4, Fraction(4))
    assert not consistent([e4, quarter] * 3, Fraction(4))                          # a beat short
    assert not consistent([e4, half] * 3, Fraction(4))                             # a half too long
    assert consistent([e4, half, SAME, c4, half, e4, half, SAME, c4, half], Fraction(4))   # two voices
    assert not consistent([e4, half, c4, half, e4, half, SAME, c4, half], Fraction(4))     # a SAME lost
    assert consistent([REST, (VALUE, "measure")], Fraction(3))
    assert consistent([], Fraction(4))


def test_the_corpus_measures_are_consistent():
    tokens = ("measure time beats:3 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 E4 voice:1 half staff:1 "
              "G4 quarter backup half backup quarter C3 voice:5 quarter staff:2 rest half "
              "measure A4 voice:1 quarter dot staff:1 B4 eighth C5 quarter backup half backup quarter "
              "F3 voice:5 half dot staff:2").split()
    for staff in staff_classes(tokens, "rhythmic"):
        measures = [[]]
        for c in staff:
            measures.append([]) if CLASSES[c] == BAR else measures[-1].append(CLASSES[c])
        assert all(consistent(m, Fraction(3)) for m in measures)


def test_a_half_read_as_a_quarter_takes_the_readers_second_choice():
    ids = [n("E4"), v("quarter"), n("F4"), v("quarter"), n("G4"), v("quarter")]          # 3 of 4 beats
    positions, lp = frames_for(ids, {(3, v("half")): -1.5, (5, v("half")): -3.0, (1, v("half")): -6.0})
    fitted = fit_staff(ids, positions, lp, Fraction(4), PER_COLUMN)
    assert fitted == [n("E4"), v("quarter"), n("F4"), v("half"), n("G4"), v("quarter")]


def test_a_lost_dot_and_a_lost_voice_marker_are_restored():
    ids = [n("E4"), v("quarter"), n("F4"), v("eighth"), n("G4"), v("half")]              # an eighth short
    positions, lp = frames_for(ids, {(1, v("quarter.")): -0.9})
    assert fit_staff(ids, positions, lp, Fraction(4), PER_COLUMN)[1] == v("quarter.")
    ids = [n("E5"), v("half"), n("C4"), v("half")]                                      # 2/4: SAME lost
    positions, lp = frames_for(ids, {(-2, ID[SAME]): -1.0})
    assert fit_staff(ids, positions, lp, Fraction(2), PER_COLUMN) == [n("E5"), v("half"), ID[SAME], n("C4"),
                                                                      v("half")]
    ids = [n("E5"), v("quarter"), ID[SAME], n("C4"), v("quarter"), n("E5"), v("quarter")]   # 3/4: a SAME too many
    positions, lp = frames_for(ids, {(2, BLANK): -1.2})
    assert fit_staff(ids, positions, lp, Fraction(3), PER_COLUMN) == [n("E5"), v("quarter"), n("C4"), v("quarter"),
                                                                      n("E5"), v("quarter")]


def test_consistent_measures_and_costly_fits_are_left_as_read():
    good = [n("E4"), v("half"), n("F4"), v("half")]
    bad = [n("E4"), v("quarter"), n("F4"), v("half")]
    ids = good + [ID[BAR]] + bad
    positions, lp = frames_for(ids, {(1, v("quarter")): -0.5, (6, v("half")): -2.0})
    assert fit_staff(ids, positions, lp, Fraction(4), PER_COLUMN) == good + [ID[BAR]] + good
    positions, lp = frames_for(ids, {(6, v("half")): -5.0})                              # over the budget
    assert fit_staff(ids, positions, lp, Fraction(4), PER_COLUMN) == ids
    assert fit_staff(ids, positions, lp, Fraction(4), PER_COLUMN, FitOptions(budget=6.0)) == good + [ID[BAR]] + good


def test_frame_log_probs_match_the_emissions():
    torch.manual_seed(0)
    classes = 7
    logits = torch.randn(2, 5, CTC_STAVES * PER_COLUMN * (classes + 1))
    cols = torch.tensor([5, 3])
    emitted = column_ctc_emissions(logits, cols, PER_COLUMN)
    scores = column_ctc_log_probs(logits, cols, PER_COLUMN)
    for example, k in zip(range(2), (5, 3)):
        for staff in range(CTC_STAVES):
            lp = scores[example][staff]
            assert lp.shape == (k * PER_COLUMN, classes + 1)
            assert np.allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)
            for position, cls in emitted[example][staff]:
                assert lp[round(position * PER_COLUMN)].argmax() == cls


def test_the_meter_is_read_from_the_measures_that_fit_it():
    quarter, half, e4 = (VALUE, "quarter"), (VALUE, "half"), ("E4", None)
    three = [e4, half, e4, quarter, BAR, e4, quarter, e4, quarter, e4, quarter, BAR, e4, half, e4, half]
    assert read_meter([three, [REST, (VALUE, "measure")]], (4, 4)) == (3, 4)      # 2 measures of 3 against 1 of 4
    assert read_meter([three], (6, 8)) == (6, 8)                                  # the decoded meter, same length
    assert read_meter([[e4, quarter, BAR, e4, quarter]], (1, 4)) == (1, 4)         # fits nothing else: as decoded
    assert read_meter([[e4, quarter, BAR, e4, quarter]], None) is None
    assert read_meter([[e4, half, e4, half]], None) == (4, 4)                      # the commonest of its length
    assert read_meter([[BAR]], (2, 4)) == (2, 4)


def test_with_time_sets_the_headers_time_signature():
    header = "key:fifths:-2 time beats:4 beat-type:4 clef:G2 staff:1 clef:F4 staff:2".split()
    assert with_time(header, 3, 4) == "key:fifths:-2 time beats:3 beat-type:4 clef:G2 staff:1 clef:F4 staff:2".split()
    assert with_time(["key:fifths:0", "clef:G2", "staff:1"], 6, 8) == "key:fifths:0 time beats:6 beat-type:8 clef:G2 staff:1".split()
    assert time_signature(with_time([], 2, 2)) == (2, 2) and time_signature(["clef:G2"]) is None


def test_a_beamed_readings_voice_marker_goes_after_the_join():
    """In the beamed classes a SAME added between two groups goes after the first one's JOIN."""
    classes = ctc_classes("beamed")
    cid = {c: k for k, c in enumerate(classes)}
    join, same = cid[JOIN], cid[SAME]
    e5, c4, eighth = cid[("E5", None)], cid[("C4", None)], cid[(VALUE, "eighth")]
    ids = [e5, eighth, join, c4, eighth, e5, eighth, join, c4, eighth]        # 2/8 read as 4/8: two SAMEs lost
    lp = np.full((2 * len(ids) + 1, len(classes) + 1), -12.0, np.float32)
    for i, c in enumerate(ids):
        lp[2 * i, c] = lp[2 * i + 1, -1] = -0.05
    lp[2 * 2 + 1, same] = lp[2 * 7 + 1, same] = -1.0                            # after each JOIN
    positions = [2 * i / PER_COLUMN for i in range(len(ids))]
    fitted = fit_staff(ids, positions, lp, Fraction(1), PER_COLUMN, target="beamed")
    assert fitted == [e5, eighth, join, same, c4, eighth, e5, eighth, join, same, c4, eighth]
