"""Pure metric functions of `umust eval` (no file I/O, no models).

Every metric is defined once here, on in-memory data:

* Symbol Error Rate (SER) on LMX token sequences, with and without tuplet tokens.
* Note-level transcription P/R/F1 (mir_eval), per piece and over a set.
* DTW alignment of two transcriptions over piano rolls (image/MIDI-to-audio).
* Earth Mover's Distance between LMX pitch / duration token histograms.
* Cross-modal retrieval: Recall@k, MRR, median rank.
* Fréchet distance between two sets of embeddings (FAD).

"Over the set" conventions (both are reported where they differ):
  *pooled*  = totals first, then the ratio (sum of errors / sum of lengths,
              sum of matches / sum of notes), so long pieces weigh more;
  *mean*    = the plain mean of the per-piece values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import scipy.stats
from lmx.linearization.vocabulary import NOTE_TYPE_TOKENS, PITCH_TOKENS

from umust_cli.data.staff_order import staff_pitch_sequences

# ----------------------------------------------------------------------------
# Symbol Error Rate
# ----------------------------------------------------------------------------

# LMX time-modification tokens look like "3in2", "6in4" (actual-in-normal notes);
# "tuplet:start"/"tuplet:stop" mark the bracket. Together they are the tuplet tokens.
_TUPLET_RE = re.compile(r"^(\d+in\d+|tuplet:start|tuplet:stop)$")


def is_tuplet_token(token: str) -> bool:
    return _TUPLET_RE.match(token) is not None


def strip_tuplets(tokens: Sequence[str]) -> list[str]:
    """The token sequence without time-modification and tuplet bracket tokens."""
    return [t for t in tokens if not is_tuplet_token(t)]


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit insert/delete/substitute) between two sequences.

    One numpy row per element of the shorter sequence: the substitution and
    deletion candidates are vectorised, and the insertion chain
    row[j] = min_k<=j (cand[k] + j - k) is a running minimum of cand - j.
    """
    if len(a) > len(b):
        a, b = b, a
    if not a:
        return len(b)
    ids: dict[Hashable, int] = {}
    ai = np.array([ids.setdefault(t, len(ids)) for t in a])
    bi = np.array([ids.setdefault(t, len(ids)) for t in b])
    cols = np.arange(len(bi) + 1)
    prev = cols.copy()
    cand = np.empty_like(prev)
    for i, x in enumerate(ai, start=1):
        cand[0] = i
        np.minimum(prev[:-1] + (bi != x), prev[1:] + 1, out=cand[1:])
        prev = np.minimum.accumulate(cand - cols) + cols
    return int(prev[-1])


@dataclass(frozen=True)
class SerCounts:
    """Edit distance and reference length of one file (both token counts)."""

    errors: int
    ref_len: int

    @property
    def ser(self) -> float:
        return self.errors / self.ref_len if self.ref_len else float("nan")


def ser_counts(pred: Sequence[str], ref: Sequence[str], tuplets: bool = True) -> SerCounts:
    """SER numerator and denominator for one file; ``tuplets=False`` drops tuplet tokens."""
    if not tuplets:
        pred, ref = strip_tuplets(pred), strip_tuplets(ref)
    return SerCounts(edit_distance(pred, ref), len(ref))


def staff_pitch_counts(pred: Sequence[str], ref: Sequence[str]) -> SerCounts:
    """Edit distance between each staff's pitch tokens in reading order
    (``data.staff_order``) of prediction and reference, summed over the staves, and the
    reference's pitch count: how well the notes' pitches were read, whatever the rhythm."""
    pairs = zip(staff_pitch_sequences(pred), staff_pitch_sequences(ref))
    errors, length = 0, 0
    for p, r in pairs:
        errors, length = errors + edit_distance(p, r), length + len(r)
    return SerCounts(errors, length)


def pooled_ser(counts: Sequence[SerCounts]) -> float:
    """Set SER = sum of edit distances / sum of reference lengths (OLiMPiC/Zeus style)."""
    total = sum(c.ref_len for c in counts)
    return sum(c.errors for c in counts) / total if total else float("nan")


# ----------------------------------------------------------------------------
# Notes and note-level transcription metrics
# ----------------------------------------------------------------------------

MIN_NOTE_S = 1e-3  # mir_eval needs offset > onset; shorter notes are lengthened to this


@dataclass(frozen=True)
class Notes:
    """A set of notes: ``intervals`` (n, 2) onset/offset in seconds, ``pitches`` (n,) MIDI."""

    intervals: np.ndarray
    pitches: np.ndarray

    @staticmethod
    def from_arrays(onsets, offsets, pitches) -> "Notes":
        on = np.asarray(onsets, dtype=float).reshape(-1)
        off = np.maximum(np.asarray(offsets, dtype=float).reshape(-1), on + MIN_NOTE_S)
        order = np.lexsort((np.asarray(pitches).reshape(-1), on))
        return Notes(np.stack([on, off], axis=1)[order], np.asarray(pitches, dtype=int).reshape(-1)[order])

    @staticmethod
    def from_pretty_midi(pm) -> "Notes":
        """All notes of the non-drum instruments of a ``pretty_midi.PrettyMIDI``."""
        notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
        return Notes.from_arrays([n.start for n in notes], [n.end for n in notes],
                                 [n.pitch for n in notes])

    def __len__(self) -> int:
        return len(self.pitches)

    @property
    def onsets(self) -> np.ndarray:
        return self.intervals[:, 0]

    def shifted(self, seconds: float) -> "Notes":
        return Notes(self.intervals + seconds, self.pitches.copy())

    def scaled(self, factor: float) -> "Notes":
        """Every time multiplied by ``factor`` (factor 1.25 = played at 80% tempo)."""
        return Notes(self.intervals * factor, self.pitches.copy())

    def end_time(self) -> float:
        return float(self.intervals[:, 1].max()) if len(self) else 0.0


@dataclass(frozen=True)
class MatchConfig:
    """mir_eval note matching; ``offset_ratio=None`` matches onsets (and pitch) only."""

    onset_tolerance: float = 0.05  # seconds
    pitch_tolerance: float = 50.0  # cents
    offset_ratio: float | None = 0.2
    offset_min_tolerance: float = 0.05  # seconds


@dataclass(frozen=True)
class PrfCounts:
    """Matched / estimated / reference note counts of one piece."""

    matched: int
    n_est: int
    n_ref: int

    def prf(self) -> tuple[float, float, float]:
        p = self.matched / self.n_est if self.n_est else 0.0
        r = self.matched / self.n_ref if self.n_ref else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def match_counts(est: Notes, ref: Notes, cfg: MatchConfig = MatchConfig()) -> PrfCounts:
    """Counts of a maximum one-to-one matching (mir_eval.transcription.match_notes).

    The P/R/F1 from these counts equal mir_eval's precision_recall_f1_overlap.
    """
    import mir_eval

    if len(est) == 0 or len(ref) == 0:
        return PrfCounts(0, len(est), len(ref))
    matching = mir_eval.transcription.match_notes(
        ref.intervals, mir_eval.util.midi_to_hz(ref.pitches),
        est.intervals, mir_eval.util.midi_to_hz(est.pitches),
        onset_tolerance=cfg.onset_tolerance, pitch_tolerance=cfg.pitch_tolerance,
        offset_ratio=cfg.offset_ratio, offset_min_tolerance=cfg.offset_min_tolerance)
    return PrfCounts(len(matching), len(est), len(ref))


def pooled_prf(counts: Sequence[PrfCounts]) -> tuple[float, float, float]:
    """P/R/F1 of the summed counts: every note of the set weighs the same."""
    return PrfCounts(sum(c.matched for c in counts), sum(c.n_est for c in counts),
                     sum(c.n_ref for c in counts)).prf()


def mean_prf(counts: Sequence[PrfCounts]) -> tuple[float, float, float]:
    """Mean of the per-piece P, R and F1 (F1 averaged, not recomputed from mean P/R)."""
    if not counts:
        return float("nan"), float("nan"), float("nan")
    arr = np.array([c.prf() for c in counts])
    return tuple(float(x) for x in arr.mean(axis=0))  # type: ignore[return-value]


# ----------------------------------------------------------------------------
# DTW alignment of two transcriptions
# ----------------------------------------------------------------------------

N_KEYS, LOWEST_KEY = 88, 21  # piano keys A0..C8


@dataclass(frozen=True)
class DtwConfig:
    """Piano-roll DTW.

    frame_rate: roll frames per second; lowered automatically when the
      cost matrix would exceed ``max_cells`` (memory ~ 16 bytes a cell).
    onset_decay_frames: an onset feature decays linearly over this many frames,
      so re-struck notes of a held chord stay distinguishable.
    """

    frame_rate: float = 50.0
    max_cells: int = 25_000_000
    onset_decay_frames: int = 5


def roll_features(notes: Notes, frame_rate: float, n_frames: int, decay: int) -> np.ndarray:
    """(2*88 + 1, n_frames) features: sustain roll, decaying onset roll, silence flag.

    The silence flag is 1 on frames where no key sounds, so that silent frames
    are not zero vectors (cosine is undefined there): silence matches silence at
    distance 0 and any sounding frame at distance 1.
    """
    feats = np.zeros((2 * N_KEYS + 1, n_frames))
    ramp = np.linspace(1.0, 1.0 / decay, decay)
    for (on, off), pitch in zip(notes.intervals, notes.pitches):
        key = int(pitch) - LOWEST_KEY
        if not 0 <= key < N_KEYS:
            continue
        a = min(int(round(on * frame_rate)), n_frames - 1)
        b = max(min(int(round(off * frame_rate)), n_frames), a + 1)
        feats[key, a:b] = 1.0
        seg = ramp[: n_frames - a]
        feats[N_KEYS + key, a:a + len(seg)] = np.maximum(feats[N_KEYS + key, a:a + len(seg)], seg)
    feats[-1] = feats[:-1].sum(axis=0) == 0
    return feats


def dtw_path(ref: Notes, gen: Notes, cfg: DtwConfig = DtwConfig()) -> tuple[np.ndarray, float]:
    """Warping path between two note sets: (k, 2) pairs of (ref time, gen time) in seconds.

    One path for all 88 keys (librosa.sequence.dtw, cosine cost on roll_features).
    Returns the path (increasing in both times) and the frame rate used.
    """
    import librosa

    dur_r, dur_g = ref.end_time() + 0.5, gen.end_time() + 0.5
    rate = min(cfg.frame_rate, float(np.sqrt(cfg.max_cells / (dur_r * dur_g))))
    n_r, n_g = int(np.ceil(dur_r * rate)), int(np.ceil(dur_g * rate))
    x = roll_features(ref, rate, n_r, cfg.onset_decay_frames)
    y = roll_features(gen, rate, n_g, cfg.onset_decay_frames)
    _, wp = librosa.sequence.dtw(X=x, Y=y, metric="cosine")
    return wp[::-1].astype(float) / rate, rate


def warp_notes(gen: Notes, path: np.ndarray) -> Notes:
    """Map ``gen``'s onsets and offsets to the reference time axis through ``path``.

    Where the path stays on one generated frame over several reference frames,
    the mean reference time is used; in between, times are interpolated linearly.
    """
    t_ref, t_gen = path[:, 0], path[:, 1]
    uniq, inverse = np.unique(t_gen, return_inverse=True)
    ref_mean = np.bincount(inverse, weights=t_ref) / np.bincount(inverse)
    warped = np.interp(gen.intervals, uniq, ref_mean)
    return Notes.from_arrays(warped[:, 0], warped[:, 1], gen.pitches)


def dtw_aligned(gen: Notes, ref: Notes, cfg: DtwConfig = DtwConfig()) -> Notes:
    """``gen`` mapped onto ``ref``'s time through one DTW path (``dtw_path``, ``warp_notes``); as it
    is where either has no notes."""
    if len(gen) == 0 or len(ref) == 0:
        return gen
    path, _ = dtw_path(ref, gen, cfg)
    return warp_notes(gen, path)


def onset_f1_at(est: Notes, ref: Notes, tolerances: Sequence[float]) -> dict[float, PrfCounts]:
    """Onset(+pitch) match counts at each tolerance (seconds); offsets are ignored."""
    return {tol: match_counts(est, ref, MatchConfig(onset_tolerance=tol, offset_ratio=None))
            for tol in tolerances}


# ----------------------------------------------------------------------------
# Earth Mover's Distance between LMX token histograms
# ----------------------------------------------------------------------------

PITCH_AXIS: tuple[str, ...] = tuple(PITCH_TOKENS)  # C0 .. B9, low to high (diatonic steps)
DURATION_AXIS: tuple[str, ...] = tuple(NOTE_TYPE_TOKENS)  # 1024th .. maxima, each twice the last


def token_histogram(tokens: Sequence[str], axis: Sequence[str]) -> np.ndarray:
    """Counts of each token of ``axis`` in ``tokens`` (other tokens are ignored)."""
    index = {t: i for i, t in enumerate(axis)}
    hist = np.zeros(len(axis))
    for t in tokens:
        i = index.get(t)
        if i is not None:
            hist[i] += 1
    return hist


def histogram_emd(pred: np.ndarray, ref: np.ndarray, shift: int = 0) -> float:
    """1-D EMD between two histograms on the same ordered axis, in bins.

    Both histograms are normalised to unit mass, so the value is the mean
    number of bins a unit of mass moves (scipy.stats.wasserstein_distance with
    bin indices as positions). ``shift`` moves ``pred`` by that many bins first.
    NaN when either histogram is empty.
    """
    if pred.sum() == 0 or ref.sum() == 0:
        return float("nan")
    pos = np.arange(len(ref), dtype=float)
    return float(scipy.stats.wasserstein_distance(pos + shift, pos, pred, ref))


def pitch_emd(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    return histogram_emd(token_histogram(pred_tokens, PITCH_AXIS), token_histogram(ref_tokens, PITCH_AXIS))


def duration_emd(pred_tokens: Sequence[str], ref_tokens: Sequence[str],
                 shifts: Sequence[int] = (-1, 0, 1)) -> float:
    """Minimum over ``shifts`` of the duration-histogram EMD (forgives halved/doubled values)."""
    hp = token_histogram(pred_tokens, DURATION_AXIS)
    hr = token_histogram(ref_tokens, DURATION_AXIS)
    return min(histogram_emd(hp, hr, s) for s in shifts)


# ----------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------


def retrieval_ranks(dist: np.ndarray) -> np.ndarray:
    """1-based rank of the true match of each query; row i's match is column i.

    Ties are counted against the query (pessimistic): the rank is 1 + the number
    of other candidates at a distance <= the true match's.
    """
    dist = np.asarray(dist, dtype=float)
    true = np.diag(dist)[:, None]
    closer = (dist <= true).sum(axis=1) - 1  # minus the true match itself
    return closer + 1


def retrieval_metrics(dist: np.ndarray, ks: Sequence[int] = (1, 10, 25)) -> dict[str, float]:
    """Recall@k, mean reciprocal rank and median rank from a square distance matrix."""
    ranks = retrieval_ranks(dist)
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / ranks))
    out["MR"] = float(np.median(ranks))
    return out


def retrieval_both_directions(dist: np.ndarray, ks: Sequence[int] = (1, 10, 25)) -> dict[str, float]:
    """:func:`retrieval_metrics` of audio queries (rows, ``A2S_*``) and sheet queries (columns, ``S2A_*``)."""
    out = {f"A2S_{k}": v for k, v in retrieval_metrics(dist, ks).items()}
    out.update({f"S2A_{k}": v for k, v in retrieval_metrics(np.asarray(dist).T, ks).items()})
    return out


# ----------------------------------------------------------------------------
# Fréchet distance (FAD)
# ----------------------------------------------------------------------------


def gaussian_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of embeddings (n, d), n >= 2."""
    emb = np.asarray(emb, dtype=np.float64)
    return emb.mean(axis=0), np.cov(emb, rowvar=False)


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, computed as Tr((A S2 A)^(1/2)), A = S1^(1/2).

    A S2 A is symmetric PSD and similar to S1 S2, so its eigenvalues (real, >= 0 up to
    rounding) are those of S1 S2. Unlike scipy.linalg.sqrtm(S1 @ S2) this stays exact for
    the rank-deficient covariances of small sets (fewer frames than dimensions) and has
    no complex parts to drop; tiny negative eigenvalues from rounding are clipped to 0.
    """
    w, v = np.linalg.eigh(s1)
    a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    eig = np.linalg.eigvalsh(a @ s2 @ a)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    diff = np.asarray(mu1, dtype=float) - np.asarray(mu2, dtype=float)
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(max(value, 0.0))


def frechet_audio_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FAD between two embedding sets (n_a, d) and (n_b, d)."""
    return frechet_distance(*gaussian_stats(emb_a), *gaussian_stats(emb_b))
