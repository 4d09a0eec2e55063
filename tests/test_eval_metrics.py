"""Known-answer tests of umust_cli.eval.metrics (and the plot and transcriber wrappers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from umust_cli.eval import metrics as M


def make_notes(n: int = 60, seed: int = 0, chord_every: int = 4) -> M.Notes:
    """A monophonic line with a chord now and then; same-pitch onsets >= 0.15 s apart."""
    rng = np.random.default_rng(seed)
    onsets, offsets, pitches = [], [], []
    t = 0.5
    for i in range(n):
        p = int(rng.integers(55, 80))
        dur = float(rng.uniform(0.15, 0.5))
        onsets.append(t), offsets.append(t + dur), pitches.append(p)
        if i % chord_every == 0:
            onsets.append(t), offsets.append(t + 2 * dur), pitches.append(p - 12)
        t += float(rng.uniform(0.15, 0.4))
    return M.Notes.from_arrays(onsets, offsets, pitches)


# ---------------------------------------------------------------- SER


def brute_edit_distance(a, b) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_edit_distance_matches_dynamic_programming():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = [str(x) for x in rng.integers(0, 4, rng.integers(0, 12))]
        b = [str(x) for x in rng.integers(0, 4, rng.integers(0, 12))]
        assert M.edit_distance(a, b) == brute_edit_distance(a, b)
    assert M.edit_distance("kitten", "sitting") == 3
    assert M.edit_distance([], ["a", "b"]) == 2


REF = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 C4 quarter G4 quarter".split()


def test_ser_of_hand_made_edits():
    pred = list(REF)
    pred[6] = "D4"  # substitution
    del pred[8]  # deletion ("G4")
    pred.insert(3, "dot")  # insertion
    counts = M.ser_counts(pred, REF)
    assert (counts.errors, counts.ref_len) == (3, len(REF))
    assert counts.ser == pytest.approx(3 / 10)
    other = M.ser_counts(REF[:4], REF[:5])  # one deletion over 5
    assert M.pooled_ser([counts, other]) == pytest.approx((3 + 1) / (10 + 5))


def test_ser_without_tuplets_ignores_tuplet_tokens():
    ref = "measure C4 eighth 3in2 tuplet:start D4 eighth 3in2 E4 eighth 3in2 tuplet:stop".split()
    pred = "measure C4 eighth D4 eighth E4 eighth".split()
    assert M.ser_counts(pred, ref).errors == 5
    no_t = M.ser_counts(pred, ref, tuplets=False)
    assert (no_t.errors, no_t.ref_len) == (0, 7)


def test_tuplet_tokens_are_exactly_lmx_time_modifications():
    from lmx.linearization.vocabulary import ALL_TOKENS, TIME_MODIFICATION_TOKENS

    tuplet = {t for t in ALL_TOKENS if M.is_tuplet_token(t)}
    assert tuplet == set(TIME_MODIFICATION_TOKENS) | {"tuplet:start", "tuplet:stop"}


# ---------------------------------------------------------------- AMT


def test_identical_notes_score_one():
    notes = make_notes()
    for cfg in (M.MatchConfig(), M.MatchConfig(offset_ratio=None)):
        assert M.match_counts(notes, notes, cfg).prf() == (1.0, 1.0, 1.0)


def test_onsets_moved_by_30ms():
    ref = make_notes()
    est = ref.shifted(0.030)
    assert M.onset_f1_at(est, ref, [0.05])[0.05].prf()[2] == 1.0
    assert M.onset_f1_at(est, ref, [0.02])[0.02].prf()[2] == 0.0


def test_counts_agree_with_mir_eval():
    import mir_eval

    ref = make_notes(seed=1)
    rng = np.random.default_rng(2)
    keep = rng.random(len(ref)) > 0.2
    jitter = rng.normal(0, 0.04, (int(keep.sum()), 1))
    est = M.Notes.from_arrays(*(ref.intervals[keep] + jitter).T, ref.pitches[keep])
    for cfg in (M.MatchConfig(), M.MatchConfig(offset_ratio=None)):
        expected = mir_eval.transcription.precision_recall_f1_overlap(
            ref.intervals, mir_eval.util.midi_to_hz(ref.pitches),
            est.intervals, mir_eval.util.midi_to_hz(est.pitches), offset_ratio=cfg.offset_ratio)[:3]
        assert M.match_counts(est, ref, cfg).prf() == pytest.approx(expected)


def test_pooled_versus_mean():
    a = M.PrfCounts(matched=1, n_est=1, n_ref=1)  # F1 1
    b = M.PrfCounts(matched=0, n_est=3, n_ref=3)  # F1 0
    assert M.pooled_prf([a, b]) == pytest.approx((0.25, 0.25, 0.25))
    assert M.mean_prf([a, b]) == pytest.approx((0.5, 0.5, 0.5))


def test_empty_transcription_scores_zero():
    ref = make_notes(n=5)
    empty = M.Notes.from_arrays([], [], [])
    assert M.match_counts(empty, ref).prf() == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------- DTW


def test_dtw_recovers_a_copy_at_80_percent_tempo():
    ref = make_notes(n=80, seed=3)
    gen = ref.scaled(1.25)  # 80% tempo: every time is 1.25 x longer
    before = M.onset_f1_at(gen, ref, [0.05])[0.05].prf()[2]
    path, rate = M.dtw_path(ref, gen, M.DtwConfig())
    assert rate == 50.0 and np.all(np.diff(path, axis=0) >= 0)
    aligned = M.warp_notes(gen, path)
    after = {t: c.prf()[2] for t, c in M.onset_f1_at(aligned, ref, [0.05, 0.1, 0.2]).items()}
    assert before < 0.2
    assert after == {0.05: 1.0, 0.1: 1.0, 0.2: 1.0}
    assert np.abs(aligned.onsets - ref.onsets).max() < 0.03  # about one 20 ms frame
    assert np.array_equal(M.dtw_aligned(gen, ref).onsets, aligned.onsets)   # the same in one call
    empty = M.Notes.from_arrays([], [], [])
    assert len(M.dtw_aligned(empty, ref)) == 0 and M.dtw_aligned(gen, empty) is gen


def test_dtw_lowers_frame_rate_for_long_pieces():
    ref = make_notes(n=20, seed=4)
    _, rate = M.dtw_path(ref, ref, M.DtwConfig(frame_rate=50.0, max_cells=10_000))
    dur = ref.end_time() + 0.5
    assert rate == pytest.approx(math.sqrt(10_000) / dur)


def test_roll_features_mark_silence():
    notes = M.Notes.from_arrays([0.1], [0.3], [60])
    feats = M.roll_features(notes, 10.0, 5, decay=2)
    assert feats.shape == (177, 5)
    assert feats[-1].tolist() == [1, 0, 0, 1, 1]  # silent before and after the note
    assert feats[60 - 21, 1:3].tolist() == [1, 1]
    assert feats[88 + 60 - 21, 1:4].tolist() == [1.0, 0.5, 0.0]


# ---------------------------------------------------------------- EMD


def test_emd_of_identical_histograms_is_zero():
    tokens = "C4 quarter E4 eighth G4 half C4 quarter".split()
    assert M.pitch_emd(tokens, tokens) == 0.0
    assert M.duration_emd(tokens, tokens) == 0.0


def test_emd_of_moved_bins():
    assert M.pitch_emd(["C4"], ["D4"]) == pytest.approx(1.0)  # one bin
    assert M.pitch_emd(["C4"], ["E4"]) == pytest.approx(2.0)  # two bins
    assert M.pitch_emd(["C4", "C4"], ["C4", "D4"]) == pytest.approx(0.5)  # half the mass, one bin
    assert M.pitch_emd(["C4"] * 3, ["D4"]) == pytest.approx(1.0)  # histograms are normalised


def test_duration_emd_forgives_one_shift():
    assert M.duration_emd(["quarter"], ["half"]) == 0.0  # doubled values: shift -1
    assert M.duration_emd(["quarter"], ["whole"]) == pytest.approx(1.0)
    assert M.duration_emd(["quarter"], ["whole"], shifts=(0,)) == pytest.approx(2.0)
    assert M.duration_emd(["quarter", "eighth"], ["half", "quarter"]) == 0.0


def test_emd_without_tokens_is_nan():
    assert math.isnan(M.pitch_emd(["rest", "quarter"], ["C4"]))


# ---------------------------------------------------------------- retrieval


def test_retrieval_on_a_hand_made_matrix():
    d = np.array([[0.1, 0.5, 0.9],
                  [0.2, 0.3, 0.1],
                  [0.5, 0.4, 0.6]])
    assert M.retrieval_ranks(d).tolist() == [1, 3, 3]
    assert M.retrieval_ranks(d.T).tolist() == [1, 1, 2]
    m = M.retrieval_metrics(d, ks=(1, 2))
    assert m == pytest.approx({"R@1": 1 / 3, "R@2": 1 / 3, "MRR": (1 + 1 / 3 + 1 / 3) / 3, "MR": 3.0})
    m_t = M.retrieval_metrics(d.T, ks=(1, 2))
    assert m_t == pytest.approx({"R@1": 2 / 3, "R@2": 1.0, "MRR": (1 + 1 + 0.5) / 3, "MR": 1.0})


def test_retrieval_ties_count_against_the_query():
    assert M.retrieval_ranks(np.zeros((4, 4))).tolist() == [4, 4, 4, 4]
    assert M.retrieval_metrics(np.eye(30) * -1)["R@1"] == 1.0


# ---------------------------------------------------------------- FAD


def test_fad_of_identical_sets_is_zero():
    emb = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(M.frechet_audio_distance(emb, emb)) < 1e-8


def test_fad_of_shifted_set_is_squared_shift():
    emb = np.random.default_rng(1).normal(size=(400, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert M.frechet_audio_distance(emb + shift, emb) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu = np.array([0.5, 0.0, -1.0])
    expected = mu @ mu + np.sum(a + b - 2 * np.sqrt(a * b))  # 1.25 + (1 + 1 + 0)
    assert M.frechet_distance(np.zeros(3), np.diag(a), mu, np.diag(b)) == pytest.approx(expected)


def test_fad_of_sampled_gaussians_near_closed_form():
    rng = np.random.default_rng(2)
    d, mu = 4, np.array([1.0, 0.0, 0.0, 1.0])
    x = rng.normal(size=(20000, d))
    y = rng.normal(size=(20000, d)) * 2.0 + mu  # N(mu, 4 I)
    expected = mu @ mu + d * (1 + 4 - 2 * 2)  # = 2 + 4
    assert M.frechet_audio_distance(x, y) == pytest.approx(expected, rel=0.05)


def test_trace_sqrt_product_agrees_with_scipy_sqrtm():
    import scipy.linalg

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert M.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-8)


def test_fad_handles_rank_deficient_covariances():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(5, 32))  # fewer frames than dimensions
    value = M.frechet_audio_distance(emb, emb + 1.0)
    assert np.isfinite(value) and value == pytest.approx(32.0, abs=1e-3)


# ---------------------------------------------------------------- plots


def test_plot_alignment_writes_a_png(tmp_path):
    from umust_cli.eval.plots import plot_alignment

    ref = make_notes(n=10)
    gen = ref.scaled(1.25)
    out = plot_alignment(ref, gen, ref, tmp_path / "fig" / "a.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert list(tmp_path.joinpath("fig").iterdir()) == [out]  # no temporary file left


# ---------------------------------------------------------------- transcriber


@pytest.mark.slow
def test_transkun_transcribes_a_rendered_midi():
    pretty_midi = pytest.importorskip("pretty_midi")
    sf2 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
    import os

    if not os.path.exists(sf2):
        pytest.skip(f"no soundfont at {sf2}")
    from umust_cli.eval.transcribe import TranscriberConfig, transcribe

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i, pitch in enumerate([60, 64, 67, 72, 71, 67, 65, 62]):
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=0.3 + 0.3 * i, end=0.6 + 0.3 * i))
    piano.notes.append(pretty_midi.Note(velocity=80, pitch=48, start=0.3, end=1.5))
    pm.instruments.append(piano)
    audio = pm.fluidsynth(fs=44100, synthesizer=sf2)  # ~3.7 s
    audio = 0.8 * audio / np.abs(audio).max()
    # one 16 s window (the model's own size) covers the clip when the hop is 12 s
    out = transcribe(audio, 44100, TranscriberConfig(segment_size_s=16.0, segment_hop_s=12.0))
    est, ref = M.Notes.from_pretty_midi(out), M.Notes.from_pretty_midi(pm)
    f1 = M.onset_f1_at(est, ref, [0.05])[0.05].prf()[2]
    assert f1 > 0.8, (f1, len(est), len(ref))


def test_staff_pitch_error_rate_reads_each_staff_in_order_whatever_the_rhythm():
    ref = ("measure E5 voice:1 quarter staff:1 D5 quarter backup half "
           "C3 voice:5 quarter staff:2 G3 quarter").split()
    same_pitches_other_rhythm = [t.replace("quarter", "eighth") for t in ref]
    assert M.staff_pitch_counts(same_pitches_other_rhythm, ref) == M.SerCounts(0, 4)
    # the lower staff's notes written on the upper staff: 2 deletions there, 2 insertions above
    wrong_staff = [t.replace("staff:2", "staff:1") for t in ref]
    assert M.staff_pitch_counts(wrong_staff, ref) == M.SerCounts(4, 4)
    assert M.staff_pitch_counts([], ref).ser == 1.0
