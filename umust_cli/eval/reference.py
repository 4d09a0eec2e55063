"""Reference rows of the papers' tables, computed on a corpus split (`umust eval reference`).

Rows (``ROW_*`` below), each over the same selected systems:

* ``fluidsynth``: the system's audio in the corpus (a FluidSynth rendering of
  the system's performance MIDI, cut from the piece's rendering) transcribed by
  Transkun vs the system MIDI. The m2a reference row, and the score of the
  reference transcriber on AMT.
* ``fluidsynth_alt``: a fresh FluidSynth rendering of the system MIDI with
  another soundfont, transcribed, vs the system MIDI.
* ``i2a``: that other-soundfont rendering vs the corpus audio, both
  transcribed; onset F1 without and with DTW alignment (the i2a reference row).
* ``dac`` (with an audio codec): the corpus audio encoded and decoded by the
  codec, transcribed, vs the system MIDI and vs the corpus audio's transcription
  (the codec-reconstruction upper bound of the audio tasks).
* ``emd_random`` / ``emd_identical``: the reference LMX of each system vs the
  LMX of a random other system of the selection (seeded derangement), and vs
  itself (0 by definition: a sanity row).
* ``rqvae_omr``: RQ-VAE-reconstructed images through OMR needs umust's OMR
  model; reported as not available until one exists.
* ``fad``: Fréchet Audio Distance between the corpus audio and the
  other-soundfont renderings (aiSFX embedding, or CLAP with a checkpoint).

F1 values are pooled over the set (matched notes / notes of all systems); the
per-system values are in ``examples`` (``--out DIR``: examples.csv).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from umust_cli.data import synth
from umust_cli.errors import BadInputError
from umust_cli.eval import embeddings, tasks
from umust_cli.eval import metrics as M
from umust_cli.eval import transcribe as T
from umust_cli.eval.corpus import ref_path, system_key
from umust_cli.eval.embeddings import EmbeddingConfig
from umust_cli.eval.report import EvalResult, read_lmx_tokens, read_midi_notes
from umust_cli.eval.runner import RunLog
from umust_cli.eval.transcribe import TranscriberConfig

SOUNDFONT_CYCLE = ("fluidr3", "timgm6mb", "musescore")  # the other soundfont = the next one here

ROWS = {
    "fluidsynth": ("m2a / amt", "corpus audio (FluidSynth) -> Transkun vs system MIDI"),
    "fluidsynth_alt": ("m2a", "other-soundfont FluidSynth rendering -> Transkun vs system MIDI"),
    "i2a": ("i2a", "other-soundfont rendering vs corpus audio (both transcribed)"),
    "dac": ("m2a", "DAC-reconstructed corpus audio -> Transkun vs system MIDI"),
    "dac_i2a": ("i2a", "DAC-reconstructed vs corpus audio (both transcribed)"),
    "emd_random": ("a2i emd", "reference LMX vs LMX of a random other system"),
    "emd_identical": ("a2i emd", "reference LMX vs itself (sanity: 0)"),
    "rqvae_omr": ("omr / a2i", "RQ-VAE-reconstructed images -> OMR vs reference LMX"),
    "fad": ("fad", "corpus audio vs other-soundfont renderings"),
}
NO_OMR = "not available: umust has no OMR model yet (the row needs one to read the reconstructed images)"


@dataclass(frozen=True)
class ReferenceConfig:
    tolerances: tuple[float, ...] = (0.05, 0.1, 0.2)  # onset tolerances, seconds
    dtw: M.DtwConfig = M.DtwConfig()
    seed: int = 0  # random pairing of the EMD row
    alt_soundfont: str | None = None  # None: the next of SOUNDFONT_CYCLE after the system's own
    fad: bool = True
    transcriber: TranscriberConfig = TranscriberConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()


@dataclass
class _Tally:
    """Per row id and tolerance, the match counts of every system."""

    counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def add(self, row_id: str, per_tol: dict[float, M.PrfCounts]) -> None:
        for tol, c in per_tol.items():
            self.counts[row_id][tol].append(c)

    def fields(self, row_id: str, prefix: str = "") -> dict:
        out: dict = {}
        for tol, counts in self.counts.get(row_id, {}).items():
            out[f"{prefix}F1@{tol * 1000:g}ms"] = M.pooled_prf(counts)[2]
            out["n"] = len(counts)
        return out


def alt_soundfont(own: str, cfg: ReferenceConfig, available: dict[str, Path]) -> str:
    """The soundfont of the second rendering: ``cfg.alt_soundfont``, or the next installed one."""
    if cfg.alt_soundfont is not None:
        if cfg.alt_soundfont not in available:
            raise BadInputError(f"soundfont {cfg.alt_soundfont!r} is not installed "
                                f"(installed: {', '.join(sorted(available)) or 'none'})")
        return cfg.alt_soundfont
    start = SOUNDFONT_CYCLE.index(own) if own in SOUNDFONT_CYCLE else -1
    for k in range(1, len(SOUNDFONT_CYCLE) + 1):
        name = SOUNDFONT_CYCLE[(start + k) % len(SOUNDFONT_CYCLE)]
        if name != own and name in available:
            return name
    raise BadInputError(f"no soundfont other than {own!r} is installed for the second rendering")


def render_alt(row: dict, soundfont: Path, n_samples: int) -> np.ndarray:
    """The system MIDI rendered with ``soundfont``: float32 mono at 44.1 kHz, ``n_samples`` long."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(ref_path(row, "mid")))
    audio = synth.synthesize(pm, soundfont)
    return synth.cut(audio, synth.SAMPLE_RATE, 0.0, n_samples / synth.SAMPLE_RATE)


def alt_path(alt_dir: Path, row: dict) -> Path:
    """``alt_dir/<piece_id>/<NNN>.wav``: a prediction folder for `umust eval m2a|i2a|fad --data`."""
    path = Path(alt_dir) / f"{system_key(row)}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _notes(pm) -> M.Notes:
    return M.Notes.from_pretty_midi(pm)


def system_scores(row: dict, cfg: ReferenceConfig, soundfonts: dict[str, Path], codec,
                  alt_dir: Path) -> tuple[dict, dict[str, dict[float, M.PrfCounts]]]:
    """One system: its example row and the onset match counts of every audio row."""
    tols, tcfg, key = cfg.tolerances, cfg.transcriber, system_key(row)
    midi = read_midi_notes(ref_path(row, "mid"))
    samples, sr = T.load_audio(ref_path(row, "wav"))  # (n, channels)
    corpus = _notes(T.transcribe(samples, sr=sr, cfg=tcfg))
    alt_name = alt_soundfont(row["soundfont"], cfg, soundfonts)
    alt = render_alt(row, soundfonts[alt_name], int(round(samples.shape[0] * synth.SAMPLE_RATE / sr)))
    synth.write_wav(alt_path(alt_dir, row), alt)
    alt_notes = _notes(T.transcribe(alt, sr=synth.SAMPLE_RATE, cfg=tcfg))
    counts = {"fluidsynth": M.onset_f1_at(corpus, midi, tols), "fluidsynth_alt": M.onset_f1_at(alt_notes, midi, tols)}
    _, counts["i2a"], counts["i2a_dtw"] = tasks.i2a_pair(alt_notes, corpus, tols, cfg.dtw)
    example = {"name": key, "soundfont": row["soundfont"], "alt_soundfont": alt_name, "n_midi": len(midi),
               "n_corpus_audio": len(corpus), "n_alt_audio": len(alt_notes)}
    if codec is not None:
        decoded = codec.decode_codes(codec.encode_codes(samples.mean(axis=1), sr))  # (frames * 512,)
        dac = _notes(T.transcribe(decoded, sr=synth.SAMPLE_RATE, cfg=tcfg))
        counts["dac"] = M.onset_f1_at(dac, midi, tols)
        _, counts["dac_i2a"], counts["dac_i2a_dtw"] = tasks.i2a_pair(dac, corpus, tols, cfg.dtw)
        example["n_dac_audio"] = len(dac)
    for row_id, per_tol in counts.items():
        example.update({f"{row_id}_F1@{t * 1000:g}ms": c.prf()[2] for t, c in per_tol.items()})
    return example, counts


def random_partners(n: int, seed: int) -> np.ndarray:
    """partner[i] != i for every i (n >= 2): a random permutation, each element paired with the next."""
    perm = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=int)
    partner[perm] = np.roll(perm, -1)
    return partner


def emd_reference(rows: Sequence[dict], seed: int, log: RunLog) -> dict[str, list[tuple[float, float]]]:
    """(pitch EMD, duration EMD) per system for the random and identical pairings of the reference LMX."""
    tokens, names = [], []
    for row in rows:
        with log.guard(f"{system_key(row)} (lmx)", ref_path(row, "lmx")):
            tokens.append(read_lmx_tokens(ref_path(row, "lmx")))
            names.append(system_key(row))
    out: dict[str, list[tuple[float, float]]] = {"emd_random": [], "emd_identical": []}
    if len(tokens) < 2:
        return out
    for i, j in enumerate(random_partners(len(tokens), seed)):
        out["emd_random"].append((M.pitch_emd(tokens[j], tokens[i]), M.duration_emd(tokens[j], tokens[i])))
        out["emd_identical"].append((M.pitch_emd(tokens[i], tokens[i]), M.duration_emd(tokens[i], tokens[i])))
    return out


def fad_row(done: Sequence[dict], alt_dir: Path, cfg: ReferenceConfig) -> tuple[float, int, str]:
    """FAD between the corpus audio of the scored systems and their other-soundfont renderings."""
    backend = "clap" if cfg.embedding.checkpoint is not None else "aisfx"
    refs = [ref_path(r, "wav") for r in done]
    alts = [alt_path(alt_dir, r) for r in done]
    gen = embeddings.embed_files(alts, backend, cfg.embedding)
    ref = embeddings.embed_files(refs, backend, cfg.embedding)
    return M.frechet_audio_distance(gen, ref), len(done), backend


def reference(rows: Sequence[dict], cfg: ReferenceConfig = ReferenceConfig(), codec=None,
              log: RunLog | None = None, work_dir: Path | None = None) -> EvalResult:
    """Every reference row on ``rows`` (corpus systems); ``codec``: an AudioCodec for the DAC rows.

    ``work_dir`` keeps the other-soundfont renderings in ``work_dir/other_soundfont/<piece_id>/<NNN>.wav``
    (the prediction naming of corpus mode; default: a temporary folder).
    """
    log, started = log or RunLog(keep_going=True), time.monotonic()
    soundfonts = synth.available_soundfonts()
    with tempfile.TemporaryDirectory(prefix="umust-ref-") as tmp:
        alt_dir = Path(work_dir or tmp) / "other_soundfont"
        alt_dir.mkdir(parents=True, exist_ok=True)
        tally, examples, done = _Tally(), [], []
        for row in log.each(list(rows), "reference"):
            with log.guard(system_key(row), ref_path(row, "wav"), ref_path(row, "mid")):
                example, counts = system_scores(row, cfg, soundfonts, codec, alt_dir)
                for row_id, per_tol in counts.items():
                    tally.add(row_id, per_tol)
                examples.append(example)
                done.append(row)
        fad = _fad_or_reason(done, alt_dir, cfg, log)
    emd = emd_reference(rows, cfg.seed, log)
    table = _table(tally, emd, fad, codec is not None, cfg)
    summary = {"systems": len(rows), "scored": len(done), "pieces": len({r["piece_id"] for r in rows}),
               "soundfonts": _counts(r["soundfont"] for r in rows),
               "other_soundfonts": _counts(e["alt_soundfont"] for e in examples),
               "seconds": round(time.monotonic() - started, 1)}
    columns = [c for c in table[0] if c not in ("task", "reference", "note")]
    result = EvalResult("reference", table, summary, _definitions(cfg, table), columns, examples=examples)
    return result.add_problems([], log.failed)


def _counts(values) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(values).items()))


def _fad_or_reason(done: Sequence[dict], alt_dir: Path, cfg: ReferenceConfig, log: RunLog):
    if not cfg.fad:
        return "skipped (--no-fad)"
    if len(done) < 2:
        return "not available: fewer than 2 systems scored"
    try:
        return fad_row(done, alt_dir, cfg)
    except Exception as e:  # the embedding package may be missing: the row says why
        if not log.keep_going:
            raise
        return f"not available: {type(e).__name__}: {e}"


def _blank_row(row_id: str, tolerances: Sequence[float]) -> dict:
    task, what = ROWS[row_id]
    row: dict = {"row": row_id, "task": task, "reference": what, "n": 0}
    for prefix in ("", "DTW "):
        row.update({f"{prefix}F1@{t * 1000:g}ms": float("nan") for t in tolerances})
    row.update({"pitch_EMD": float("nan"), "duration_EMD": float("nan"), "FAD": float("nan"), "note": ""})
    return row


def _table(tally: _Tally, emd: dict, fad, with_codec: bool, cfg: ReferenceConfig) -> list[dict]:
    """One row per reference row, the same columns in each (NaN where a metric does not apply)."""
    tols, table = cfg.tolerances, []
    for row_id in ("fluidsynth", "fluidsynth_alt", "i2a", "dac", "dac_i2a"):
        row = _blank_row(row_id, tols)
        if row_id.startswith("dac") and not with_codec:
            row["note"] = "not run (--no-dac)"
        row.update(tally.fields(row_id))
        if row_id.endswith("i2a"):
            row.update({k: v for k, v in tally.fields(f"{row_id}_dtw", "DTW ").items() if k != "n"})
        table.append(row)
    for row_id in ("emd_random", "emd_identical"):
        row, values = _blank_row(row_id, tols), np.array(emd[row_id], dtype=float).reshape(-1, 2)
        if len(values):
            row.update(n=len(values), pitch_EMD=_nanmean(values[:, 0]), duration_EMD=_nanmean(values[:, 1]))
        row["note"] = f"mean over systems; seed {cfg.seed}" if row_id == "emd_random" else ""
        table.append(row)
    table.append(dict(_blank_row("rqvae_omr", tols), note=NO_OMR))
    row = _blank_row("fad", tols)
    if isinstance(fad, tuple):
        row.update(FAD=fad[0], n=fad[1], note=f"embedding: {fad[2]}")
    else:
        row["note"] = fad
    table.append(row)
    return table


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _definitions(cfg: ReferenceConfig, table: Sequence[dict]) -> dict[str, str]:
    rows = {r["row"]: f"({r['task']}) {r['reference']}" + (f"; {r['note']}" if r["note"] else "") for r in table}
    return rows | {"F1@Xms": "note-onset F1 (pitch + onset within X ms, mir_eval), pooled over the systems",
            "DTW F1": f"after one DTW warping of the generated transcription onto the reference "
                      f"({cfg.dtw.frame_rate:g} frames/s piano rolls)",
            "transcriber": "Transkun 2.0 (its shipped weights), the same for every row",
            "other soundfont": "the next of fluidr3 -> timgm6mb -> musescore -> fluidr3 after the "
                               "system's own, unless --soundfont names one",
            "EMD": "token-histogram EMD in bins; duration EMD is the minimum over shifts -1, 0, +1",
            "FAD": "Fréchet distance of embedding frames, corpus audio vs other-soundfont renderings"}
