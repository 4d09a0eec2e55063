"""Image and audio codec codes for every system of a built corpus (`umust dataset tokenize`).

Layout: code files sit beside the system files (or under another folder OUT
with the same relative paths)::

    OUT/pieces/<id>/systems/NNN.image.npy        codes of NNN.png
    OUT/pieces/<id>/systems/NNN.scanK.image.npy  codes of NNN.scanK.png (scans=True)
    OUT/pieces/<id>/systems/NNN.audio.npy        codes of NNN.wav
    OUT/tokenize.json                            codecs (path, fingerprint, step), counts, times
    OUT/tokenize_errors.jsonl                    one row per file that failed in the last run

Every ``.npy`` holds one int16 array whose first axis is the shift variant:

* image ``(V, 4, Hp, Wp)``: V = 32 on the train split, variant ``iy * 8 + ix``
  shifted right by ``2 ix`` and down by ``4 iy`` pixels (variant 0 = the image
  itself; ``codecs.image.shift_variants``); V = 1 on the other splits (the real-scan splits too, see below).
* audio ``(V, 4, F)``: V = 9 on the train split, variant ``i`` shifted by
  ``-20 + 5 i`` samples (variant 4 = the clip itself; ``codecs.audio.shift_variants``);
  V = 1 on the other splits.

The real-scan splits (``realscan_*``, rows of realscans.jsonl: crops of scanned printed
editions, ``pieces/<id>/realscans/NNN.png`` -> ``NNN.image.npy``) have images only, at the
scan's resolution: each is first resized so that its staff lines are STAFF_SPACING_PX apart
(``codecs.image.normalize_scale``, as ``umust tokenize image`` does), and encoded as one
variant on every split (32 shift variants of 1,570 train scans would take 32 times the
single pass; docs/results.md). A scan whose staff spacing cannot be measured fails with that
reason (listed in tokenize_errors.jsonl); the others go on.

Row k of a variant is codebook k, values are codes in [0, 1024). A shift can
add one patch row/column or one frame, so variants of a file may differ in
size by one; the smaller ones are padded with ``PAD_CODE`` (-1) at the
bottom/right (image) or end (audio). ``variant_codes`` strips the padding;
``codecs.image.flatten`` / ``codecs.audio.flatten`` turn a variant into
local token ids. Each variant equals what ``ImageCodec.encode_grid`` /
``AudioCodec.encode_codes`` give for the shifted file alone.

Batching: the variants of a few files are preprocessed, grouped by shape
(padded image size, frame count) and encoded ``batch_size`` at a time.
Resuming: every file is written atomically, and a file whose code file
exists with the expected variant count is skipped. The codecs' fingerprints
are kept in tokenize.json; a rerun with another codec is refused unless
``overwrite`` (which re-encodes every selected file).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from umust_cli.codecs import audio as audio_codec
from umust_cli import registry
from umust_cli.checkpoint import WEIGHTS, read_config
from umust_cli.codecs import image as image_codec
from umust_cli.codecs.midi import MidiCodec
from umust_cli.codecs.notation import NotationCodec
from umust_cli.codecs.vocab import Vocabulary
from umust_cli.data import corpus as corpus_reader
from umust_cli.data.corpus import SCAN_SPLITS, SPLITS
from umust_cli.device import resolve_device
from umust_cli.errors import BadInputError, CheckpointError, UmustError
from umust_cli.io import atomic_path, write_json_atomic, write_text_atomic

MODALITIES = ("image", "audio")
TRAIN_VARIANTS = {"image": image_codec.SHIFTS_X * image_codec.SHIFTS_Y, "audio": len(audio_codec.SHIFTS)}
PAD_CODE = -1
SUMMARY, ERRORS = "tokenize.json", "tokenize_errors.jsonl"
FORMAT = 1
STATUSES = ("encoded", "skipped", "failed")


@dataclass(frozen=True)
class TokenizeConfig:
    image_codec: Path | None = None   # checkpoint folders; None = that modality is not tokenized
    audio_codec: Path | None = None
    splits: tuple[str, ...] = ()      # () = every split
    batch_size: int = 16              # images or clips (shift variants included) per forward pass
    device: str = "auto"              # auto (cuda when there is one), cpu or cuda
    limit: int | None = None          # only the first N selected systems, in manifest order
    scans: bool = False               # also the scanned-look copies NNN.scanK.png
    overwrite: bool = False           # re-encode files that already have codes
    shift_variants: bool = True       # False: one variant (the file itself) on the train split too

    def codec_path(self, modality: str) -> Path | None:
        return self.image_codec if modality == "image" else self.audio_codec


@dataclass(frozen=True)
class Job:
    """One source file of one system -> one code file."""

    modality: str
    split: str
    piece_id: str
    system: int
    source: Path
    dest: Path
    variants: int
    rescale: bool = False   # resize to the codec's staff spacing first (real scans)


@dataclass(frozen=True)
class JobResult:
    job: Job
    status: str  # "encoded" | "skipped" | "failed"
    error: str | None = None


@dataclass
class Plan:
    """What a run will do: loaded codecs, every job, and those still to encode."""

    corpus: Path
    out: Path
    config: TokenizeConfig
    device: str
    codecs: dict          # modality -> ImageCodec | AudioCodec
    codec_info: dict      # modality -> {"path", "fingerprint", "step", "model"}
    vocabulary: str       # fingerprint
    jobs: list[Job]
    pending: list[Job]
    systems: int


# ---------------------------------------------------------------------------
# Code files
# ---------------------------------------------------------------------------

def code_path(out: Path, rel_source: str, modality: str) -> Path:
    """pieces/x/systems/000.png -> OUT/pieces/x/systems/000.image.npy."""
    return out / Path(rel_source).with_suffix(f".{modality}.npy")


def stack_variants(codes: Sequence[np.ndarray]) -> np.ndarray:
    """Per-variant (4, ...) code arrays -> one int16 (V, 4, ...) array, -1 where a variant is smaller."""
    shape = tuple(max(c.shape[d] for c in codes) for d in range(codes[0].ndim))
    out = np.full((len(codes), *shape), PAD_CODE, np.int16)
    for v, c in enumerate(codes):
        out[(v, *(slice(0, n) for n in c.shape))] = c
    return out


def variant_codes(stacked: np.ndarray) -> list[np.ndarray]:
    """Inverse of :func:`stack_variants`: the (4, Hp, Wp) or (4, F) int64 codes of each variant."""
    out = []
    for v in np.asarray(stacked):
        keep = v[0] != PAD_CODE                          # (Hp, Wp) or (F,)
        if keep.ndim == 1:
            out.append(v[:, keep].astype(np.int64))
        else:
            rows, cols = int(keep.any(axis=1).sum()), int(keep.any(axis=0).sum())
            out.append(v[:, :rows, :cols].astype(np.int64))
    return out


def is_complete(dest: Path, variants: int) -> bool:
    """The code file exists, is readable and holds ``variants`` variants of int16 codes."""
    try:
        a = np.load(dest, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return a.dtype == np.int16 and a.ndim >= 3 and a.shape[0] == variants and a.shape[1] == 4


# ---------------------------------------------------------------------------
# Planning: corpus, codecs, jobs
# ---------------------------------------------------------------------------

def resolve_codec_paths(image: str | Path | None, audio: str | Path | None) -> tuple[Path | None, Path | None]:
    """The folders of the given codecs (NAME|PATH, see :mod:`umust_cli.registry`; None = that modality
    is not tokenized); with neither given, the shipped default codecs that this install has."""
    if image is not None or audio is not None:
        return (None if image is None else registry.resolve("image-codec", image),
                None if audio is None else registry.resolve("audio-codec", audio))
    shipped = {}
    for m in MODALITIES:
        try:
            shipped[m] = registry.resolve(f"{m}-codec", None)
        except CheckpointError:
            continue
    if not shipped:
        raise BadInputError("no codec given and no shipped image/audio codec in this package: "
                            "pass --image-codec CKPT and/or --audio-codec CKPT")
    return shipped.get("image"), shipped.get("audio")


def corpus_vocabulary(corpus: Path) -> Vocabulary:
    """The corpus's vocabulary.json if it has one, else the package's for its LMX flavor."""
    if (corpus / "vocabulary.json").is_file():
        return Vocabulary.load(corpus / "vocabulary.json")
    flavor = "core"
    if (corpus / "build.json").is_file():
        flavor = json.loads((corpus / "build.json").read_text(encoding="utf-8")).get("flavor", "core")
    return Vocabulary(notation=tuple(NotationCodec(flavor).token_names()),
                      midi=tuple(MidiCodec().token_names()))


def codec_info(ckpt: Path) -> dict:
    """Path, fingerprint (sha256 of the weights, 16 hex digits), training step and architecture."""
    digest = hashlib.sha256()
    with open(ckpt / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    config = read_config(ckpt)
    return {"path": str(ckpt.resolve()), "fingerprint": digest.hexdigest()[:16],
            "step": config.get("step"), "model": config.get("model")}


def load_codec(modality: str, ckpt: Path, vocab: Vocabulary, device: str):
    cls = image_codec.ImageCodec if modality == "image" else audio_codec.AudioCodec
    return cls.load(ckpt, vocab, device=device)


def plan_jobs(rows: list[dict], corpus: Path, out: Path, modalities: Sequence[str], scans: bool,
              shift_variants: bool = True) -> list[Job]:
    """Jobs in manifest order: for each system its image (and scans), then its audio. A row
    without a modality's file (an imported image-only or audio-only data set, a real scan) has no
    job for it; a real scan's image is resized to the codec's staff spacing (``Job.rescale``)."""
    jobs = []
    for row in rows:
        images = [row["png"], *(row.get("scans") or [])] if scans and row.get("png") else []
        sources = {"image": images or ([row["png"]] if row.get("png") else []),
                   "audio": [row["wav"]] if row.get("wav") else []}
        real = row["split"] in SCAN_SPLITS
        for m in modalities:
            variants = TRAIN_VARIANTS[m] if row["split"] == "train" and shift_variants else 1
            for rel in sources[m]:
                jobs.append(Job(m, row["split"], row["piece_id"], int(row["system"]), corpus / rel,
                                code_path(out, rel, m), variants, rescale=real and m == "image"))
    return jobs


def _select_rows(corpus: Path, splits: tuple[str, ...], limit: int | None) -> list[dict]:
    rows = corpus_reader.rows(corpus, splits)
    return rows[:limit] if limit else rows


def check_previous_codecs(out: Path, info: dict, overwrite: bool) -> dict:
    """The codecs of an earlier run merged with ``info``; refuse a changed codec unless ``overwrite``."""
    path = out / SUMMARY
    previous = json.loads(path.read_text(encoding="utf-8")).get("codecs", {}) if path.is_file() else {}
    for m, new in info.items():
        old = previous.get(m)
        if old and old["fingerprint"] != new["fingerprint"] and not overwrite:
            raise BadInputError(
                f"{out} already holds {m} codes of another codec ({old['path']}, fingerprint "
                f"{old['fingerprint']}); pass --overwrite to re-encode them with {new['path']} "
                f"(fingerprint {new['fingerprint']})")
    return {**previous, **info}


def prepare(corpus: str | Path, cfg: TokenizeConfig, out: str | Path | None = None) -> Plan:
    """Read the manifest, load and check the codecs, and list the files still to encode."""
    corpus = Path(corpus)
    out = Path(out) if out is not None else corpus
    rows = _select_rows(corpus, cfg.splits, cfg.limit)
    paths = {m: cfg.codec_path(m) for m in MODALITIES if cfg.codec_path(m) is not None}
    if not paths:
        raise BadInputError("give at least one codec (--image-codec and/or --audio-codec)")
    vocab, device = corpus_vocabulary(corpus), str(resolve_device(cfg.device))
    codecs = {m: load_codec(m, Path(p), vocab, device) for m, p in paths.items()}
    info = check_previous_codecs(out, {m: codec_info(Path(p)) for m, p in paths.items()}, cfg.overwrite)
    jobs = plan_jobs(rows, corpus, out, list(paths), cfg.scans, cfg.shift_variants)
    pending = [j for j in jobs if cfg.overwrite or not is_complete(j.dest, j.variants)]
    return Plan(corpus, out, cfg, device, codecs, info, vocab.fingerprint(), jobs, pending, len(rows))


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------

def image_inputs(path: Path, variants: int, rescale: bool = False) -> list[np.ndarray]:
    """The preprocessed (thresholded, padded) uint8 images of each shift variant; ``rescale``:
    of the image resized to the codec's staff spacing (ImageError when it has no staff)."""
    gray = image_codec.load_gray(path)
    if rescale:
        gray = image_codec.normalize_scale(gray)[0]
    shifted = image_codec.shift_variants(gray) if variants > 1 else [gray]
    return [image_codec.preprocess(g) for g in shifted]


def audio_inputs(path: Path, variants: int, rescale: bool = False) -> list[np.ndarray]:
    """Each shift variant, zero-padded to whole frames of 512 samples (as encode_codes pads)."""
    x = audio_codec.load_audio(path)
    shifted = audio_codec.shift_variants(x) if variants > 1 else [x]
    out = []
    for s in shifted:
        s = audio_codec.check_audio(s, str(path))
        out.append(np.pad(s, (0, audio_codec.frames_for(s.size) * audio_codec.HOP - s.size)))
    return out


def encode_window(codec, modality: str, jobs: Sequence[Job], batch_size: int) -> list[JobResult]:
    """Encode the files of ``jobs`` together: variants grouped by shape, ``batch_size`` per pass."""
    load = image_inputs if modality == "image" else audio_inputs
    inputs, results = {}, {}
    for i, job in enumerate(jobs):
        try:
            inputs[i] = load(job.source, job.variants, job.rescale)
        except (UmustError, ValueError, OSError) as e:
            results[i] = JobResult(job, "failed", f"{type(e).__name__}: {e}")
    groups = defaultdict(list)                     # shape -> [(job index, variant index)]
    for i, arrays in inputs.items():
        for v, a in enumerate(arrays):
            groups[a.shape].append((i, v))
    codes: dict[int, list] = {i: [None] * len(a) for i, a in inputs.items()}
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            batch = np.stack([inputs[i][v] for i, v in chunk])
            for (i, v), c in zip(chunk, codec.encode_batch(batch)):
                codes[i][v] = c
    for i, per_variant in codes.items():
        with atomic_path(jobs[i].dest) as tmp:
            np.save(tmp, stack_variants(per_variant))
        results[i] = JobResult(jobs[i], "encoded")
    return [results[i] for i in range(len(jobs))]


def windows(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """Consecutive jobs of one modality holding about ``batch_size`` variants (at least one job)."""
    out: list[list[Job]] = []
    size = 0
    for job in jobs:
        if not out or size >= batch_size or out[-1][0].modality != job.modality:
            out.append([])
            size = 0
        out[-1].append(job)
        size += job.variants
    return out


def run(plan: Plan, on_result: Callable[[JobResult], None] | None = None) -> dict:
    """Encode every pending job, write the errors file and tokenize.json; return the summary."""
    started = time.perf_counter()
    write_json_atomic(plan.out / SUMMARY, _summary(plan, [], {}, 0.0, "running"))
    results, seconds = [], defaultdict(float)
    ordered = sorted(plan.pending, key=lambda j: MODALITIES.index(j.modality))
    for window in windows(ordered, plan.config.batch_size):
        t0 = time.perf_counter()
        modality = window[0].modality
        done = encode_window(plan.codecs[modality], modality, window, plan.config.batch_size)
        seconds[modality] += time.perf_counter() - t0
        for r in done:
            results.append(r)
            if on_result is not None:
                on_result(r)
    failed = [r for r in results if r.status == "failed"]
    write_text_atomic(plan.out / ERRORS, "".join(json.dumps(_error_row(r), sort_keys=True) + "\n" for r in failed))
    summary = _summary(plan, results, seconds, time.perf_counter() - started,
                       "complete" if not failed else "incomplete")
    write_json_atomic(plan.out / SUMMARY, summary)
    return summary


def _error_row(r: JobResult) -> dict:
    j = r.job
    return {"piece_id": j.piece_id, "system": j.system, "split": j.split, "modality": j.modality,
            "source": str(j.source), "error": r.error}


def _summary(plan: Plan, results: list[JobResult], seconds: dict, elapsed: float, status: str) -> dict:
    counts: dict = {}

    def bump(job: Job, status: str) -> None:
        row = counts.setdefault(job.modality, {}).setdefault(job.split, dict.fromkeys(STATUSES, 0))
        row[status] += 1

    pending = {id(j) for j in plan.pending}
    for j in plan.jobs:
        if id(j) not in pending:
            bump(j, "skipped")
    for r in results:
        bump(r.job, r.status)
    return {
        "format": FORMAT, "status": status, "corpus": str(plan.corpus), "output": str(plan.out),
        "layout": "pieces/<id>/systems/NNN.{image,audio}.npy: int16 (V, 4, Hp, Wp) / (V, 4, frames), "
                  "V shift variants (train) or 1, -1 = padding",
        "vocabulary": plan.vocabulary, "codecs": plan.codec_info,
        "variants": {m: {"train": TRAIN_VARIANTS[m] if plan.config.shift_variants else 1, "valid": 1, "test": 1,
                         **dict.fromkeys(SCAN_SPLITS, 1)} for m in MODALITIES},
        "rescaled": f"images of {', '.join(SCAN_SPLITS)}: resized to {image_codec.STAFF_SPACING_PX:g} px staff spacing",
        "splits": list(plan.config.splits) or list(SPLITS), "systems": plan.systems,
        "files": len(plan.jobs), "counts": counts,
        "failed": sum(r.status == "failed" for r in results), "errors_file": str(plan.out / ERRORS),
        "device": plan.device, "batch_size": plan.config.batch_size,
        "encode_s": {m: round(s, 3) for m, s in seconds.items()}, "elapsed_s": round(elapsed, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S") if status != "running" else None,
    }
