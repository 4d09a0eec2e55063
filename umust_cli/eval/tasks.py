"""One function per `umust eval` subcommand: paired inputs -> EvalResult.

Each reads its files, calls the pure functions of ``metrics``, and collects
per-example rows and the set summary (pooled and mean, see ``metrics``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.data.staff_order import system_key
from umust_cli.errors import BadInputError
from umust_cli.eval import embeddings
from umust_cli.eval import metrics as M
from umust_cli.eval import transcribe as T
from umust_cli.eval.plots import plot_alignment
from umust_cli.eval.report import EvalResult, PairSet, read_lmx_tokens, read_midi_notes
from umust_cli.eval.runner import RunLog

POOLED = "totals over all files first, then the ratio (every token/note weighs the same)"
MEAN = "mean_* keys are the plain mean of the per-file values"


def _prf_fields(prefix: str, c: M.PrfCounts) -> dict[str, float]:
    p, r, f = c.prf()
    return {f"{prefix}_P": p, f"{prefix}_R": r, f"{prefix}_F1": f}


def _prf_summary(prefix: str, counts: Sequence[M.PrfCounts]) -> dict[str, float]:
    pooled, mean = M.pooled_prf(counts), M.mean_prf(counts)
    out = {f"{prefix}_{k}": v for k, v in zip("P R F1".split(), pooled)}
    out.update({f"mean_{prefix}_{k}": v for k, v in zip("P R F1".split(), mean)})
    return out


def omr(pairs: PairSet, log: RunLog | None = None) -> EvalResult:
    """SER and SER without tuplet tokens of LMX predictions."""
    log = log or RunLog()
    rows, with_t, without_t, pitches, keys, empty = [], [], [], [], [], 0
    for name, pred_path, ref_path in log.each(pairs.items(), "omr"):
        with log.guard(name, pred_path, ref_path):
            pred, ref = read_lmx_tokens(pred_path), read_lmx_tokens(ref_path)
            if not ref:
                raise BadInputError(f"reference LMX file has no tokens: {ref_path}")
            if not pred and not log.keep_going:     # corpus mode: a model's empty output scores
                raise BadInputError(f"prediction LMX file has no tokens: {pred_path}")   # all deletions
            empty += not pred
            a, b = M.ser_counts(pred, ref), M.ser_counts(pred, ref, tuplets=False)
            c = M.staff_pitch_counts(pred, ref)
            with_t.append(a)
            without_t.append(b)
            pitches.append(c)
            key = None if system_key(ref) is None else system_key(pred) == system_key(ref)
            keys.extend([] if key is None else [key])
            rows.append({"name": name, "pred": str(pred_path), "ref": str(ref_path),
                         "ref_tokens": a.ref_len, "edits": a.errors, "SER": a.ser,
                         "ref_tokens_nt": b.ref_len, "edits_nt": b.errors, "SER_no_tuplets": b.ser,
                         "ref_pitches": c.ref_len, "pitch_edits": c.errors, "pitch_error_rate": c.ser,
                         "key_right": key})
    summary = {"files": len(rows), "SER": M.pooled_ser(with_t), "SER_no_tuplets": M.pooled_ser(without_t),
               "mean_SER": _nanmean([c.ser for c in with_t]),
               "mean_SER_no_tuplets": _nanmean([c.ser for c in without_t]),
               "staff_pitch_error_rate": M.pooled_ser(pitches),
               "key_accuracy": sum(keys) / len(keys) if keys else float("nan")}
    if log.keep_going:
        summary["empty_predictions"] = empty
    defs = {"SER": "sum of token edit distances / sum of reference lengths (pooled)",
            "no_tuplets": "tokens NinM, tuplet:start, tuplet:stop removed from both sides", "mean": MEAN,
            "staff_pitch_error_rate": "each staff's pitch tokens in reading order (data/staff_order.py): "
                                      "sum of edit distances / sum of reference pitches (pooled)",
            "key_accuracy": "share of the files whose reference has a key signature in which the prediction's "
                            "first key signature is the reference's first"}
    cols = ["name", "ref_tokens", "edits", "SER", "SER_no_tuplets"]
    return _finish(EvalResult("omr", rows, summary, defs, cols), pairs, log)


def _finish(result: EvalResult, pairs: PairSet, log: RunLog) -> EvalResult:
    """Corpus mode (``keep_going``): count missing predictions and failed examples in the summary."""
    if log.keep_going or pairs.missing or log.failed:
        result.add_problems(pairs.missing, log.failed)
    return result


def amt(pairs: PairSet, cfg: M.MatchConfig = M.MatchConfig(), log: RunLog | None = None,
        dtw: M.DtwConfig | None = None) -> EvalResult:
    """Note-onset and onset+offset P/R/F1 of MIDI transcriptions (mir_eval); with ``dtw``, each
    estimate is first mapped to its reference's time axis through one DTW path (MIDI that has
    the right notes in the right order but not their timing, e.g. the image -> MIDI reading)."""
    log = log or RunLog()
    rows, onset, onoff = [], [], []
    for name, est_path, ref_path in log.each(pairs.items(), "amt"):
        with log.guard(name, est_path, ref_path):
            est, ref = read_midi_notes(est_path), read_midi_notes(ref_path)
            est = M.dtw_aligned(est, ref, dtw) if dtw is not None else est
            a = M.match_counts(est, ref, replace(cfg, offset_ratio=None))
            b = M.match_counts(est, ref, cfg)
            onset.append(a)
            onoff.append(b)
            rows.append({"name": name, "est": str(est_path), "ref": str(ref_path),
                         "n_ref": len(ref), "n_est": len(est),
                         **_prf_fields("onset", a), **_prf_fields("onoff", b)})
    summary = {"files": len(rows), **_prf_summary("onset", onset), **_prf_summary("onoff", onoff)}
    defs = {"onset": f"pitch within {cfg.pitch_tolerance:g} cents and onset within "
                     f"{cfg.onset_tolerance * 1000:g} ms (mir_eval)",
            "onoff": f"onset, and offset within max({cfg.offset_min_tolerance * 1000:g} ms, "
                     f"{cfg.offset_ratio} x reference duration)",
            "pooled": POOLED, "mean": MEAN}
    if dtw is not None:
        defs["dtw"] = "each estimate mapped to the reference's time axis through one DTW path over piano rolls first"
    cols = ["name", "n_ref", "n_est", "onset_P", "onset_R", "onset_F1", "onoff_P", "onoff_R", "onoff_F1"]
    return _finish(EvalResult("amt", rows, summary, defs, cols), pairs, log)


def onset_rows(est: M.Notes, ref: M.Notes, tolerances: Sequence[float],
               prefix: str = "") -> tuple[dict, dict[float, M.PrfCounts]]:
    """Onset F1 of one pair at each tolerance: row fields ({prefix}50ms_F1, ...) and counts."""
    counts = M.onset_f1_at(est, ref, tolerances)
    row: dict = {}
    for tol, c in counts.items():
        row.update(_prf_fields(f"{prefix}{tol * 1000:g}ms", c))
    return row, counts


def _tol_summary(prefix: str, per_tol: dict[float, list[M.PrfCounts]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for tol, counts in per_tol.items():
        out.update(_prf_summary(f"{prefix}{tol * 1000:g}ms", counts))
    return out


def m2a(pairs: PairSet, tolerances: Sequence[float], tcfg, log: RunLog | None = None) -> EvalResult:
    """Transcribe generated audio and compare it with the conditioning MIDI."""
    log = log or RunLog()
    rows, per_tol = [], {t: [] for t in tolerances}
    for name, audio_path, midi_path in log.each(pairs.items(), "m2a"):
        with log.guard(name, audio_path, midi_path):
            ref = read_midi_notes(midi_path)
            est = M.Notes.from_pretty_midi(T.transcribe(audio_path, cfg=tcfg))
            fields, counts = onset_rows(est, ref, tolerances)
            _append(per_tol, counts)
            rows.append({"name": name, "audio": str(audio_path), "ref": str(midi_path),
                         "n_ref": len(ref), "n_est": len(est), **fields})
    summary = {"files": len(rows), **_tol_summary("onset_", per_tol)}
    defs = {"onset_Xms": "pitch + onset within X ms of the transcription (Transkun) of the audio",
            "pooled": POOLED, "mean": MEAN}
    cols = ["name", "n_ref", "n_est"] + [f"{t * 1000:g}ms_F1" for t in tolerances]
    return _finish(EvalResult("m2a", rows, summary, defs, cols), pairs, log)


def i2a(pairs: PairSet, tolerances: Sequence[float], dtw: M.DtwConfig | None,
        plot_dir: Path | None, tcfg, log: RunLog | None = None, floor: bool = False) -> EvalResult:
    """Transcribe generated and reference audio; onset F1 before and (``dtw``) after alignment.
    ``floor``: also the wrong-system floor, the same judge on each reference against the audio
    of another system (``wrong_system_floor``)."""
    log = log or RunLog()
    rows, raw, aligned = [], {t: [] for t in tolerances}, {t: [] for t in tolerances}
    refs: dict[str, M.Notes] = {}
    for name, gen_path, ref_path in log.each(pairs.items(), "i2a"):
        with log.guard(name, gen_path, ref_path):
            gen = M.Notes.from_pretty_midi(T.transcribe(gen_path, cfg=tcfg))
            ref = refs[name] = M.Notes.from_pretty_midi(T.transcribe(ref_path, cfg=tcfg))
            plot = None if plot_dir is None else Path(plot_dir) / f"{name.replace('/', '-')}.png"
            row, counts, dtw_counts = i2a_pair(gen, ref, tolerances, dtw, plot, name)
            _append(raw, counts)
            if dtw is not None:
                _append(aligned, dtw_counts)
            rows.append({"name": name, "gen": str(gen_path), "ref": str(ref_path), **row})
    summary = {"files": len(rows), **_tol_summary("onset_", raw)}
    if dtw is not None:
        summary.update(_tol_summary("dtw_onset_", aligned))
    if floor:
        summary.update(wrong_system_floor(rows, refs, tolerances, dtw, tcfg, log))
    result = EvalResult("i2a", rows, summary, _i2a_defs(floor), _i2a_cols(tolerances, dtw is not None))
    return _finish(result, pairs, log)


def neighbour_system(ref_path: str | Path) -> Path | None:
    """Beside a corpus system's audio (``.../systems/NNN.wav``): the audio of the next system of
    the same piece, else of the previous one; None for other files or a piece of one system."""
    path = Path(ref_path)
    if path.parent.name != "systems" or not path.stem.isdigit():
        return None
    n = int(path.stem)
    for k in (n + 1, n - 1):
        other = path.with_name(f"{k:0{len(path.stem)}d}{path.suffix}")
        if k >= 0 and other.is_file():
            return other
    return None


def wrong_system_partners(names: Sequence[str]) -> dict[str, str]:
    """For each example name, the next example of the set (cyclic), for references that are
    not corpus systems. A set of one example gets no partner."""
    return {n: names[(i + 1) % len(names)] for i, n in enumerate(names)} if len(names) > 1 else {}


def wrong_system_floor(rows: list[dict], refs: dict[str, M.Notes], tolerances: Sequence[float],
                       dtw: M.DtwConfig | None, tcfg, log: RunLog) -> dict:
    """Summary fields of the floor. Each reference is scored against the audio of the
    neighbouring system of its piece when it is a corpus system (``neighbour_system``: the
    hardest wrong system, same key and texture), else against the next reference of the set;
    each row gets that file (``floor_partner``)."""
    raw, aligned = {t: [] for t in tolerances}, {t: [] for t in tolerances}
    by_path = {r["ref"]: refs[r["name"]] for r in rows}
    partners = wrong_system_partners([r["name"] for r in rows])
    ref_of = {r["name"]: r["ref"] for r in rows}
    for row in rows:
        other = neighbour_system(row["ref"]) or (ref_of[partners[row["name"]]] if row["name"] in partners else None)
        if other is None:
            continue
        with log.guard(f"{row['name']} (floor)", other):
            if str(other) not in by_path:
                by_path[str(other)] = M.Notes.from_pretty_midi(T.transcribe(other, cfg=tcfg))
            _, counts, dtw_counts = i2a_pair(by_path[str(other)], refs[row["name"]], tolerances, dtw)
            row["floor_partner"] = str(other)
            _append(raw, counts)
            if dtw is not None:
                _append(aligned, dtw_counts)
    out: dict = {"floor_files": sum(1 for r in rows if "floor_partner" in r)}
    if out["floor_files"]:
        out.update(_tol_summary("floor_onset_", raw))
        if dtw is not None:
            out.update(_tol_summary("floor_dtw_onset_", aligned))
    return out


def i2a_pair(gen: M.Notes, ref: M.Notes, tolerances: Sequence[float], dtw: M.DtwConfig | None,
             plot: Path | None = None, title: str = "") -> tuple[dict, dict, dict]:
    """Row fields and counts of one pair of transcriptions: raw, and DTW-aligned when ``dtw``."""
    row: dict = {"n_ref": len(ref), "n_gen": len(gen)}
    fields, counts = onset_rows(gen, ref, tolerances)
    row.update(fields)
    dtw_counts: dict = {}
    if dtw is not None:
        warped = M.dtw_aligned(gen, ref, dtw)
        fields, dtw_counts = onset_rows(warped, ref, tolerances, prefix="dtw_")
        row.update(fields)
        if plot is not None:
            row["plot"] = str(plot_alignment(ref, gen, warped, plot, title=title))
    return row, counts, dtw_counts


def _append(acc: dict[float, list], counts: dict[float, M.PrfCounts]) -> None:
    for t, c in counts.items():
        acc[t].append(c)


def _i2a_defs(floor: bool = False) -> dict[str, str]:
    defs = {"onset_Xms": "pitch + onset within X ms between the two Transkun transcriptions",
            "dtw_": "after mapping the generated notes through one DTW path over piano rolls",
            "pooled": POOLED, "mean": MEAN}
    if floor:
        defs["floor_"] = ("wrong-system floor: each reference scored (same judge) against the audio of the "
                          "next system of its piece (the previous for the last; corpus systems), else "
                          "against the next reference of the set; floor_partner names it")
    return defs


def _i2a_cols(tolerances: Sequence[float], with_dtw: bool) -> list[str]:
    cols = ["name", "n_ref", "n_gen"] + [f"{t * 1000:g}ms_F1" for t in tolerances]
    return cols + ([f"dtw_{t * 1000:g}ms_F1" for t in tolerances] if with_dtw else [])


def emd(pairs: PairSet, shifts: Sequence[int] = (-1, 0, 1), log: RunLog | None = None) -> EvalResult:
    """Pitch and duration token-histogram EMD of LMX predictions."""
    log = log or RunLog()
    rows, all_pred, all_ref = [], [], []
    for name, pred_path, ref_path in log.each(pairs.items(), "emd"):
        with log.guard(name, pred_path, ref_path):
            pred, ref = read_lmx_tokens(pred_path), read_lmx_tokens(ref_path)
            rows.append({"name": name, "pred": str(pred_path), "ref": str(ref_path),
                         "pitch_EMD": M.pitch_emd(pred, ref),
                         "duration_EMD": M.duration_emd(pred, ref, shifts)})
            all_pred += pred
            all_ref += ref
    result = EvalResult("emd", rows, emd_summary(rows, all_pred, all_ref, shifts), emd_definitions(shifts),
                        ["name", "pitch_EMD", "duration_EMD"])
    return _finish(result, pairs, log)


def emd_summary(rows: Sequence[dict], all_pred: Sequence[str], all_ref: Sequence[str],
                shifts: Sequence[int]) -> dict:
    """Mean and pooled EMD over a set of rows with pitch_EMD / duration_EMD."""
    return {"files": len(rows),
            "mean_pitch_EMD": _nanmean([r["pitch_EMD"] for r in rows]),
            "mean_duration_EMD": _nanmean([r["duration_EMD"] for r in rows]),
            "files_without_pitches": sum(1 for r in rows if not np.isfinite(r["pitch_EMD"])),
            "pooled_pitch_EMD": M.pitch_emd(all_pred, all_ref),
            "pooled_duration_EMD": M.duration_emd(all_pred, all_ref, shifts)}


def emd_definitions(shifts: Sequence[int]) -> dict[str, str]:
    return {"EMD": "1-D Wasserstein distance between unit-mass token histograms, in bins "
                   "(pitch bins: C0..B9 diatonic steps; duration bins: 1024th..maxima, each a doubling)",
            "duration_EMD": f"minimum over shifts {tuple(shifts)} of the predicted histogram",
            "mean": "mean over files that have the tokens (NaN files skipped)",
            "pooled": "histograms summed over all files first"}


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def retrieval(dist: np.ndarray, ks: Sequence[int] = (1, 10, 25), dist_s2a: np.ndarray | None = None) -> EvalResult:
    """Both directions of a (n, n) audio x sheet distance matrix; query i matches candidate i.
    ``dist_s2a``: a (n, n) sheet x audio matrix of its own for the S2A direction (default ``dist.T``;
    methods whose ranking is not symmetric, such as snippet voting, give one)."""
    dist = _square(dist)
    back = dist.T if dist_s2a is None else _square(dist_s2a)
    if back.shape != dist.shape:
        raise BadInputError(f"the two distance matrices differ in shape: {dist.shape} and {back.shape}")
    a2s, s2a = M.retrieval_ranks(dist), M.retrieval_ranks(back)
    rows = [{"index": i, "audio_to_sheet_rank": int(a), "sheet_to_audio_rank": int(s)}
            for i, (a, s) in enumerate(zip(a2s, s2a))]
    summary = {"n": int(dist.shape[0])}
    summary.update({f"A2S_{k}": v for k, v in M.retrieval_metrics(dist, ks).items()})
    summary.update({f"S2A_{k}": v for k, v in M.retrieval_metrics(back, ks).items()})
    defs = {"A2S": "audio queries (rows of D) against sheet candidates",
            "S2A": "sheet queries (rows of D.T, or of the S2A matrix) against audio candidates",
            "rank": "1 + other candidates at distance <= the true match's (ties count against)",
            "MRR": "mean reciprocal rank", "MR": "median rank"}
    return EvalResult("retrieval", rows, summary, defs)


def _square(dist: np.ndarray) -> np.ndarray:
    dist = np.asarray(dist, dtype=float)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1] or dist.shape[0] == 0:
        raise BadInputError(f"the distance matrix must be square (n, n), got shape {dist.shape}")
    if not np.isfinite(dist).all():
        raise BadInputError("the distance matrix has NaN or infinite entries")
    return dist


def fad(gen_dir: Path, ref_dir: Path, ecfg) -> EvalResult:
    """Fréchet Audio Distance between the embeddings of two folders."""
    for d in (gen_dir, ref_dir):
        if not Path(d).is_dir():
            raise BadInputError(f"not a folder: {d}")
    gen, ref = embeddings.embed_folder(gen_dir, ecfg), embeddings.embed_folder(ref_dir, ecfg)
    return fad_result(gen, ref, embeddings.resolve_backend(Path(gen_dir), ecfg))


def fad_files(gen_files: Sequence[Path], ref_files: Sequence[Path], ecfg,
              missing: Sequence[str] = ()) -> EvalResult:
    """FAD between two lists of audio files (corpus mode: the references are all selected systems)."""
    backend = "clap" if ecfg.backend == "auto" and ecfg.checkpoint is not None else ecfg.backend
    backend = "aisfx" if backend == "auto" else backend
    if backend == "npy":
        raise BadInputError("--model npy needs two folders of .npy files, not a corpus")
    gen = embeddings.embed_files(list(gen_files), backend, ecfg)
    ref = embeddings.embed_files(list(ref_files), backend, ecfg)
    result = fad_result(gen, ref, backend)
    result.summary.update(gen_clips=len(gen_files), ref_clips=len(ref_files))
    return result.add_problems(missing, [])


def fad_result(gen: np.ndarray, ref: np.ndarray, backend: str) -> EvalResult:
    """FAD of two embedding sets (n, d)."""
    if gen.shape[1] != ref.shape[1]:
        raise BadInputError(f"embedding dimensions differ: {gen.shape[1]} vs {ref.shape[1]}")
    if min(len(gen), len(ref)) < 2:
        raise BadInputError("FAD needs at least 2 embeddings on each side")
    summary = {"FAD": M.frechet_audio_distance(gen, ref), "n_gen": len(gen), "n_ref": len(ref),
               "dim": int(gen.shape[1]), "backend": backend}
    defs = {"FAD": "||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2) over all embedding frames"}
    return EvalResult("fad", [], summary, defs)
