"""A rhythm reader's reading made to fit its measures: each staff's note values add up to the
time signature.

A rhythm reader's best path (``data.rhythm.read_groups``) can miss a dot, read a half note as a
quarter or drop the marker of a second voice at one onset (``SAME``), and the measure no longer
adds up. With the measure's length known, a staff's measure is *consistent* when its groups,
placed in voices as ``data.rhythm.place`` places them, fill the first voice to the length and
take no voice past it; 1,018 of the 1,029 staff measures of the first 80 valid systems are.

``fit_staff`` leaves consistent measures alone; in each other one it takes the likeliest set of
at most ``FitOptions.changes`` edits that makes the measure consistent: a note value replaced by
one of the ``alternatives`` the reader rates next at its frame, a ``SAME`` marker dropped, or
one added between two groups (at the likeliest blank frame between them). An edit costs the
log-probability its frame loses; a measure whose cheapest fit costs more than ``budget`` is left
as read (a pickup, a reading too far off).

Only a piece's first system prints its time signature; ``read_meter`` reads it from the measures
themselves: the length under which most of them are consistent (valid systems: right on 259 of
274, where the translator's decoded one is right on 150). Measured in results.md, "Rhythm reader".
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations, product
from typing import Sequence

import numpy as np

from umust_cli.data.rhythm import place, read_groups
from umust_cli.data.staff_order import BAR, GRACE, JOIN, SAME, VALUE, Group, ctc_classes


# the corpus's time signatures (beats, beat type), commonest first (train split: 1,004, 677, 531,
# 125, 76 and 36 systems): a length's first one is the one read where the decoded one differs
METERS = ((3, 4), (2, 4), (4, 4), (6, 8), (2, 2), (3, 8))


@dataclass(frozen=True)
class FitOptions:
    """How hard ``fit_staff`` looks for a consistent measure."""

    changes: int = 2             # edits tried together in one measure
    alternatives: int = 4        # other note values tried at each value's frame
    budget: float = 4.0          # the most log-probability (nats) a measure's edits may cost


@dataclass(frozen=True)
class Edit:
    """One change to a measure's class ids: at ``slot`` (an index into them) ``kind`` "value"
    (replace by ``cls``), "drop" (remove) or "same" (add SAME after it), costing ``cost`` nats."""

    slot: int
    kind: str
    cls: int
    cost: float


def consistent(classes: Sequence[tuple], length: Fraction) -> bool:
    """Whether one staff's measure (rhythmic classes, no bar line) fills its first voice to
    ``length`` quarters and takes no voice past it (``data.rhythm.place``)."""
    groups = [g for g in read_groups(classes) if isinstance(g, Group)]
    if not groups:
        return True
    voices = place(groups, length, 1)
    return voices[0].end == length and all(v.end <= length for v in voices)


def read_meter(staves: Sequence[Sequence[tuple]], decoded: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The time signature (beats, beat type) of a system read as rhythmic classes (one list per
    staff, bar lines between measures): of ``decoded`` (the decoder's) and METERS, the length under
    which most staff measures are ``consistent``; of that length ``decoded`` if it has it, else
    the commonest. ``decoded`` where no measure has a note value or none is consistent."""
    measures = [m for staff in staves for m in _measures(staff) if any(c[0] == VALUE for c in m)]
    meters = ([decoded] if decoded is not None else []) + list(METERS)
    lengths = list(dict.fromkeys(Fraction(4 * b, t) for b, t in meters))
    fits = {length: sum(consistent(m, length) for m in measures) for length in lengths}
    if not measures or max(fits.values()) == 0:
        return decoded
    best = next(length for length in lengths if fits[length] == max(fits.values()))
    return next((b, t) for b, t in meters if Fraction(4 * b, t) == best)


def _measures(classes: Sequence[tuple]) -> list[list[tuple]]:
    """One staff's classes cut at its bar lines."""
    out: list[list[tuple]] = [[]]
    for c in classes:
        out.append([]) if c == BAR else out[-1].append(c)
    return out


def fit_staff(ids: Sequence[int], positions: Sequence[float], log_probs: np.ndarray, length: Fraction,
              per_column: int, options: FitOptions = FitOptions(), target: str = "rhythmic") -> list[int]:
    """One staff's class ids (``ctc_classes(target)``, rhythmic or beamed), emitted at ``positions``
    (in columns) of its CTC frames' ``log_probs`` ((frames, classes + 1), blank last), with each
    inconsistent measure of ``length`` quarters fitted (module docstring)."""
    classes = ctc_classes(target)
    frames = [round(p * per_column) for p in positions]
    bars = [i for i, c in enumerate(ids) if classes[c] == BAR]
    out, start = [], 0
    for end in bars + [len(ids)]:
        measure = list(ids[start:end])
        out += _fit_measure(measure, frames[start:end], log_probs, length, options, classes)
        out += [ids[end]] if end < len(ids) else []
        start = end + 1
    return out


def _fit_measure(ids: list[int], frames: list[int], log_probs: np.ndarray, length: Fraction,
                 options: FitOptions, classes: list[tuple]) -> list[int]:
    """One measure's ids (``fit_staff``): as read where consistent or where no fit is cheap enough."""
    if consistent([classes[c] for c in ids], length):
        return ids
    edits: dict[int, list[Edit]] = {}
    for e in _edits(ids, frames, log_probs, options, classes):
        edits.setdefault(e.slot if e.kind != "same" else -1 - e.slot, []).append(e)
    best, best_cost = ids, -options.budget
    for n in range(1, options.changes + 1):
        for slots in combinations(edits, n):
            for chosen in product(*(edits[s] for s in slots)):
                cost = sum(e.cost for e in chosen)
                if cost < best_cost or (cost == best_cost and best is not ids):
                    continue
                trial = _applied(ids, chosen)
                if consistent([classes[c] for c in trial], length):
                    best, best_cost = trial, cost
        if best is not ids:
            break
    return best


def _edits(ids: list[int], frames: list[int], log_probs: np.ndarray, options: FitOptions,
           classes: list[tuple]) -> list[Edit]:
    """Every edit ``_fit_measure`` tries in one measure, with its cost (a SAME is added after a
    group's value, or after its JOIN where it has one)."""
    same = classes.index(SAME)
    join = classes.index(JOIN) if JOIN in classes else None
    values = np.array([k for k, c in enumerate(classes) if c[0] == VALUE and c[1] != GRACE])
    out = []
    for i, (c, f) in enumerate(zip(ids, frames)):
        row = log_probs[f]
        if classes[c][0] == VALUE and classes[c][1] != GRACE:
            ranked = values[np.argsort(-row[values])]
            out += [Edit(i, "value", int(k), float(row[k] - row[c]))
                    for k in ranked[ranked != c][:options.alternatives]]
            end = i + 1 if i + 1 < len(ids) and ids[i + 1] == join else i
            later = frames[end + 1] if end + 1 < len(ids) else None
            if later is not None and ids[end + 1] != same and later > frames[end] + 1:
                gap = log_probs[frames[end] + 1:later]
                out.append(Edit(end, "same", same, float((gap[:, same] - gap.max(1)).max())))
        elif c == same:
            out.append(Edit(i, "drop", c, float(np.sort(row)[-2] - row[c])))
    return out


def _applied(ids: list[int], edits: Sequence[Edit]) -> list[int]:
    """``ids`` with ``edits`` (each at its own slot) made."""
    changed = {e.slot: e for e in edits if e.kind != "same"}
    added = {e.slot: e.cls for e in edits if e.kind == "same"}
    out = []
    for i, c in enumerate(ids):
        e = changed.get(i)
        out += [c] if e is None else [e.cls] if e.kind == "value" else []
        out += [added[i]] if i in added else []
    return out
