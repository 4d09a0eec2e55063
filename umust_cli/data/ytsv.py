"""Score-following videos -> a per-system corpus (the paper's YTSV data, from local files).

A score-following video shows a letterboxed page excerpt (a *slide* of 1-3 systems)
while the music plays, and changes slide when the music moves on. Per video::

    video --ffmpeg--> small grayscale frames -> frame differences -> transitions, slides
          --ffmpeg--> the full-size stable frame of each slide -> letterbox removed
          -> systems (umust_cli.data.scans detector) -> crops at one staff spacing
          --ffmpeg--> mono audio -> each slide's audio span

Slide segmentation is rule-based. Frames are decoded at ``analysis_width`` px wide
(area-averaged, which also averages away compression noise); a frame *changes* when
the mean absolute gray difference to the frame before, or to the frame ``slow_lag_s``
before (so that a slow fade, each of whose steps is faint, adds up), exceeds
``change_threshold``. A **transition** is a run of changing frames (runs less than
``merge_gap_s`` apart are one: a cross-fade or wipe is one transition), extended back over
the frames that still differ from their predecessor by more than ``onset_threshold``, and
**its time is the timestamp of its first frame**, the first frame that differs from the
slide before. A
**slide** is the still run between two transitions (at least ``min_still_s`` long);
its **stable frame** is the middle frame of that run and its **audio span** runs from
the time of the transition that brought it (0 for the first slide) to the time of the
next one (the end of the video for the last).

Filtering follows the paper's appendix; every rejection is a row of rejections.jsonl
with its reason: slides whose page is too dark (a poor scan), too bright or inkless
(blank), or coloured (an overlay: mean saturation of the page); slides whose audio
span is outside [``min_audio_s``, ``max_audio_s``] or silent; systems of a staff count not in
``staves`` (default: piano systems), whose crop is too small, too tall (two systems taken as
one) or not wide enough, or that overlap another system of their slide.

The corpus has the manifest format of ``umust dataset build``: one row per system
(``png`` = the crop, ``wav`` = its slide's audio, ``start``/``end`` = the slide's span in
the video), no notation or MIDI, so the image->audio and audio->image tasks read it
unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from umust_cli.data import scans, sources
from umust_cli.data.corpus import DONE, MANIFEST, PIECE_ROWS, PIECES, finished_rows, read_jsonl
from umust_cli.data.render import write_png
from umust_cli.data.synth import SAMPLE_RATE, cut, write_wav
from umust_cli.errors import BadInputError, InputNotFoundError, NotAvailableError
from umust_cli.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

REJECTIONS = "rejections.jsonl"
ERRORS = "errors.jsonl"


@dataclass(frozen=True)
class YtsvConfig:
    analysis_width: int = 160  # px: frames for change detection are area-averaged down to this width
    change_threshold: float = 0.7  # mean |gray difference| (0-255) above which a frame changes
    slow_lag_s: float = 0.25  # ... to the frame before, or to the frame this long before (slow fades)
    onset_threshold: float = 0.2  # a transition starts at the first frame differing by more than this
    merge_gap_s: float = 0.12  # changing runs closer than this are one transition
    min_still_s: float = 0.5  # a slide is still at least this long
    letterbox_level: float = 40.0  # frame rows/columns darker than this on average are letterbox bars
    binarize_frac: float = 0.85  # detector input: ink = darker than this fraction of the paper level
    staff_space_px: float = 9.0  # crops are scaled to this staff spacing (that of the corpus renders)
    min_page_mean: float = 150.0  # a darker page is a poor scan
    max_page_mean: float = 252.0  # a brighter page is blank
    min_ink_fraction: float = 0.005  # a page with less ink is blank
    max_saturation: float = 25.0  # mean HSV saturation (0-255) above this: a colour overlay
    min_audio_s: float = 1.0  # slide audio spans outside [min, max] are dropped
    max_audio_s: float = 120.0
    min_audio_rms: float = 1e-4  # a quieter span is silence
    min_crop_spaces: float = 8.0  # a system crop is at least this many staff spaces high
    max_crop_spaces: float = 16.0  # and at most this many per staff (more: two systems taken as one)
    staves: tuple[int, ...] | None = scans.PIANO  # staff counts of the systems kept (None: every system)
    min_aspect: float = 2.0  # and at least this many times wider than high
    max_gap_spaces: float = 3.0  # crops grow sideways over ink that continues them with gaps under this
    max_overlap: float = 0.1  # of the smaller box: more overlap with another system of the slide drops it
    sample_rate: int = SAMPLE_RATE
    seed: int = 0  # decides splits (by video)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    scan: scans.ScanConfig = field(default_factory=scans.ScanConfig)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool


@dataclass(frozen=True)
class Segmentation:
    transitions: list[tuple[int, int]]  # (first, last) changing frame of each transition
    slides: list[tuple[int, int]]  # (first, last) still frame of each slide
    fps: float
    frames: int

    def time(self, frame: int) -> float:
        return frame / self.fps


@dataclass(frozen=True)
class YtsvSummary:
    videos: int
    failed: int
    slides: int
    systems: int
    rejections: dict
    hours: float


# ------------------------------------------------------------------ ffmpeg
def _ffmpeg(tool: str = "ffmpeg") -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise NotAvailableError(f"{tool} is not installed (apt-get install ffmpeg; scripts/setup.sh does it)")
    return exe


def probe(video: Path) -> VideoInfo:
    """Size, frame rate, duration and audio presence of ``video``; BadInputError if ffprobe cannot read it."""
    if not Path(video).is_file():
        raise InputNotFoundError(f"no such video file: {video}")
    cmd = [_ffmpeg("ffprobe"), "-v", "error", "-show_streams", "-show_format", "-of", "json", str(video)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BadInputError(f"{video}: not a video ffmpeg can read ({done.stderr.strip()[-200:]})")
    info = json.loads(done.stdout)
    streams = info.get("streams", [])
    vids = [s for s in streams if s.get("codec_type") == "video"]
    if not vids:
        raise BadInputError(f"{video}: no video stream")
    v = vids[0]
    num, _, den = str(v.get("avg_frame_rate") or v.get("r_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    duration = float(info.get("format", {}).get("duration") or v.get("duration") or 0.0)
    if fps <= 0 or duration <= 0:
        raise BadInputError(f"{video}: no frame rate or duration in its header")
    return VideoInfo(int(v["width"]), int(v["height"]), fps, duration,
                     any(s.get("codec_type") == "audio" for s in streams))


def _frames(video: Path, width: int, height: int, fps: float, vf: str = "") -> Iterator[np.ndarray]:
    """rgb24 frames (height, width, 3) of ``video``, resampled to a constant ``fps``."""
    filters = f"fps={fps},{vf}scale={width}:{height}:flags=area,format=rgb24"
    cmd = [_ffmpeg(), "-v", "error", "-i", str(video), "-vf", filters, "-f", "rawvideo", "-"]
    size = width * height * 3
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        proc.stdout.close()
        proc.wait()


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def frame_changes(video: Path, info: VideoInfo, cfg: YtsvConfig) -> np.ndarray:
    """(N, 2) float: mean |gray difference| of each analysis frame to the one before, and to the
    one ``slow_lag_s`` before (0 where there is none)."""
    from collections import deque

    w = max(16, min(cfg.analysis_width, info.width)) // 2 * 2
    h = max(2, int(round(info.height * w / info.width)) // 2 * 2)
    lag = max(1, int(round(cfg.slow_lag_s * info.fps)))
    diffs, past = [], deque(maxlen=lag)
    for rgb in _frames(video, w, h, info.fps):
        gray = _gray(rgb)
        d1 = float(np.abs(gray - past[-1]).mean()) if past else 0.0
        dl = float(np.abs(gray - past[0]).mean()) if len(past) == lag else 0.0
        diffs.append((d1, dl))
        past.append(gray)
    if not diffs:
        raise BadInputError(f"{video}: no frame could be decoded")
    return np.asarray(diffs)


def stable_frames(video: Path, info: VideoInfo, indexes: list[int]) -> list[np.ndarray]:
    """Full-size rgb24 frames number ``indexes`` (in the constant-rate stream), in order."""
    if not indexes:
        return []
    select = "+".join(f"eq(n\\,{i})" for i in indexes)
    cmd = [_ffmpeg(), "-v", "error", "-i", str(video), "-vf", f"fps={info.fps},select='{select}',format=rgb24",
           "-fps_mode", "passthrough", "-f", "rawvideo", "-"]
    done = subprocess.run(cmd, capture_output=True)
    size = info.width * info.height * 3
    out = [np.frombuffer(done.stdout[k * size:(k + 1) * size], np.uint8).reshape(info.height, info.width, 3)
           for k in range(len(done.stdout) // size)]
    if len(out) != len(indexes):
        raise BadInputError(f"{video}: decoded {len(out)} of {len(indexes)} stable frames")
    return out


def video_audio(video: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio of ``video`` at ``sample_rate``; BadInputError without an audio stream."""
    cmd = [_ffmpeg(), "-v", "error", "-i", str(video), "-vn", "-ac", "1", "-ar", str(sample_rate),
           "-f", "f32le", "-"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        raise BadInputError(f"{video}: no audio could be decoded")
    return np.frombuffer(done.stdout, np.float32).copy()


# ------------------------------------------------------------------ slides
def segment(changes: np.ndarray, fps: float, cfg: YtsvConfig) -> Segmentation:
    """Transitions (runs of changing frames) and slides (still runs between them) of a video.

    ``changes`` is (N,) or (N, 2) (see :func:`frame_changes`): a frame changes when either
    difference exceeds ``change_threshold``; a run then starts earlier while the frames before
    it still differ from their predecessors by more than ``onset_threshold`` (the first,
    faint frames of a slow fade)."""
    changes = np.asarray(changes, dtype=np.float64).reshape(len(changes), -1)
    step = changes[:, 0]
    changing = np.flatnonzero((changes > cfg.change_threshold).any(axis=1))
    gap = max(1, int(round(cfg.merge_gap_s * fps)))
    runs: list[list[int]] = []
    for k in changing.tolist():
        if runs and k - runs[-1][1] <= gap:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    for i, run in enumerate(runs):
        floor = runs[i - 1][1] + 2 if i else 1
        while run[0] > floor and step[run[0] - 1] > cfg.onset_threshold:
            run[0] -= 1
    n, min_still = len(changes), max(1, int(round(cfg.min_still_s * fps)))
    bounds = [0, *[b for r in runs for b in (r[0], r[1] + 1)], n]
    stills = [(bounds[i], bounds[i + 1] - 1) for i in range(0, len(bounds), 2)]
    keep = [i for i, (a, b) in enumerate(stills) if b - a + 1 >= min_still]
    # transitions = runs between kept stills; a too-short still run is part of the transition around it
    transitions = [(stills[i][1] + 1, stills[j][0] - 1) for i, j in zip(keep, keep[1:])]
    return Segmentation(transitions, [stills[i] for i in keep], fps, n)


def slide_spans(seg: Segmentation, duration: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each slide: from the start of the transition that brought it to
    the start of the next one."""
    starts = [0.0, *[seg.time(a) for a, _ in seg.transitions]]
    ends = [*[seg.time(a) for a, _ in seg.transitions], duration]
    return list(zip(starts, ends))


def content_box(gray: np.ndarray, cfg: YtsvConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the frame without its letterbox/pillarbox bars (dark rows/columns)."""
    rows = np.flatnonzero(gray.mean(axis=1) > cfg.letterbox_level)
    cols = np.flatnonzero(gray.mean(axis=0) > cfg.letterbox_level)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def page_problem(rgb: np.ndarray, cfg: YtsvConfig) -> str | None:
    """Why a slide's page (letterbox removed) is no score page to crop, or None."""
    if rgb.shape[0] < 32 or rgb.shape[1] < 32:
        return "no page: the frame is letterbox only"
    gray = _gray(rgb)
    mean = float(gray.mean())
    if mean < cfg.min_page_mean:
        return f"poor scan: page too dark (mean intensity {mean:.0f} < {cfg.min_page_mean:g})"
    hi, lo = rgb.max(axis=2).astype(np.float32), rgb.min(axis=2).astype(np.float32)
    sat = float(np.mean(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1) * 255, 0)))
    if sat > cfg.max_saturation:
        return f"overlay: coloured page (mean saturation {sat:.0f} > {cfg.max_saturation:g})"
    ink = float((gray < cfg.binarize_frac * np.percentile(gray, 90)).mean())
    if mean > cfg.max_page_mean or ink < cfg.min_ink_fraction:
        return f"blank page: mean intensity {mean:.0f}, ink fraction {ink:.4f}"
    return None


def find_systems(gray: np.ndarray, cfg: YtsvConfig) -> tuple[np.ndarray, list[scans.ScanSystem]]:
    """(deskewed page, its systems) with the scans detector, on a binarized copy of the page:
    ink is darker than ``binarize_frac`` of the paper level (the 90th percentile), so that thin
    anti-aliased staff lines of a screen render count as ink."""
    binary = np.where(gray < cfg.binarize_frac * np.percentile(gray, 90), 0, 255).astype(np.uint8)
    angle = scans.estimate_skew(scans.ink_mask(binary), cfg.scan)
    page, binary = scans.deskew(np.clip(gray, 0, 255).astype(np.uint8), angle), scans.deskew(binary, angle)
    systems = scans.detect_systems(binary, cfg.scan)
    ink = binary < 128
    return page, [replace(s, box=widened(s.box, ink, s.space, cfg)) for s in systems]


def widened(box: tuple[int, int, int, int], ink: np.ndarray, space: float,
            cfg: YtsvConfig) -> tuple[int, int, int, int]:
    """``box`` grown left and right over the ink of its rows that continues it (gaps under
    ``max_gap_spaces`` staff spaces), plus the detector's margin: where broken staff lines of a
    poor scan cut the detected staff extent short. Never shrinks the box."""
    left, top, right, bottom = box
    cols = np.flatnonzero(ink[top:bottom].sum(axis=0) >= 2)
    gap, margin = cfg.max_gap_spaces * space, int(round(cfg.scan.margin_spaces * space))
    lo, hi = left, right
    for x in cols[cols < left][::-1]:
        if lo - x > gap:
            break
        lo = int(x)
    for x in cols[cols >= right]:
        if x - hi > gap:
            break
        hi = int(x) + 1
    w = ink.shape[1]
    return (max(0, lo - margin) if lo < left else left, top, min(w, hi + margin) if hi > right else right, bottom)


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection of two (left, top, right, bottom) boxes over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(w, 0) * max(h, 0) / small if small > 0 else 0.0


def crop_problem(system: scans.ScanSystem, others: list[scans.ScanSystem], cfg: YtsvConfig) -> str | None:
    """Why a detected system's crop is dropped (staff count, size, shape, overlap), or None."""
    left, top, right, bottom = system.box
    h, w = bottom - top, right - left
    if cfg.staves is not None and system.n_staves not in cfg.staves:
        return f"staff count: a system of {system.n_staves} staves (kept: {', '.join(map(str, cfg.staves))})"
    if h < cfg.min_crop_spaces * system.space:
        return f"crop too small: {h} px high < {cfg.min_crop_spaces:g} staff spaces of {system.space:.1f} px"
    if h > cfg.max_crop_spaces * system.n_staves * system.space:
        return (f"crop too large: {h} px high > {cfg.max_crop_spaces:g} staff spaces of {system.space:.1f} px "
                f"for each of its {system.n_staves} staves")
    if w < cfg.min_aspect * h:
        return f"crop not a system: {w}x{h} px, narrower than {cfg.min_aspect:g}x its height"
    worst = max((overlap(system.box, o.box) for o in others if o is not system), default=0.0)
    if worst > cfg.max_overlap:
        return f"crop overlaps another system: {worst:.2f} of its area > {cfg.max_overlap:g}"
    return None


def normalized_crop(page: np.ndarray, system: scans.ScanSystem, cfg: YtsvConfig) -> np.ndarray:
    """The system's crop resized so that its staff spacing is ``staff_space_px``."""
    from PIL import Image

    image = scans.crop(page, system)
    scale = cfg.staff_space_px / system.space
    size = (max(1, int(round(image.shape[1] * scale))), max(1, int(round(image.shape[0] * scale))))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


# ------------------------------------------------------------------ one video
@dataclass(frozen=True)
class _Video:
    path: Path
    piece_id: str
    piece_dir: Path
    split: str
    held_out: bool
    info: VideoInfo


def process_video(video: _Video, cfg: YtsvConfig) -> tuple[list[dict], list[dict], dict]:
    """(manifest rows, rejections, piece record) of one video; its files are written under piece_dir."""
    changes = frame_changes(video.path, video.info, cfg)
    seg = segment(changes, video.info.fps, cfg)
    if not seg.slides:
        raise BadInputError(f"{video.path}: no still slide of at least {cfg.min_still_s:g} s")
    if not video.info.has_audio:
        raise BadInputError(f"{video.path}: no audio stream")
    audio = video_audio(video.path, cfg.sample_rate)
    spans = slide_spans(seg, len(changes) / seg.fps)
    mids = [(a + b) // 2 for a, b in seg.slides]
    rows, rejections, slides = [], [], []
    for k, (rgb, span, mid) in enumerate(zip(stable_frames(video.path, video.info, mids), spans, mids)):
        slide_rows, slide_rejections, record = _process_slide(video, k, rgb, span, audio, len(rows), cfg)
        record["stable_time"] = round(seg.time(mid), 4)
        rows += slide_rows
        rejections += slide_rejections
        slides.append(record)
    piece = {"piece_id": video.piece_id, "source": str(video.path), "split": video.split,
             "video": asdict(video.info), "config": _config_record(cfg),
             "transitions": [{"start": round(seg.time(a), 4), "end": round(seg.time(b + 1), 4),
                              "first_frame": a, "last_frame": b} for a, b in seg.transitions],
             "slides": slides}
    return rows, rejections, piece


def _config_record(cfg: YtsvConfig) -> dict:
    record = asdict(cfg)
    record["scan"] = asdict(cfg.scan)
    return record


def _process_slide(video: _Video, k: int, rgb: np.ndarray, span: tuple[float, float], audio: np.ndarray,
                   first_system: int, cfg: YtsvConfig) -> tuple[list[dict], list[dict], dict]:
    """Rows and rejections of slide ``k`` (its audio and system crops written), and its record."""
    start, end = span
    left, top, right, bottom = content_box(_gray(rgb), cfg)
    record = {"slide": k, "start": round(start, 4), "end": round(end, 4), "content": [left, top, right, bottom],
              "systems": [], "rejected": None}

    def reject(reason: str, system: int | None = None, box: list[int] | None = None) -> dict:
        return {"piece_id": video.piece_id, "source": str(video.path), "slide": k, "system": system,
                "box": box, "start": round(start, 4), "end": round(end, 4), "reason": reason}

    page_rgb = rgb[top:bottom, left:right]
    clip = cut(audio, cfg.sample_rate, start, end)
    problem = _audio_problem(clip, end - start, cfg) or page_problem(page_rgb, cfg)
    systems: list[scans.ScanSystem] = []
    if problem is None:
        try:
            page, systems = find_systems(_gray(page_rgb), cfg)
        except BadInputError as e:
            problem = f"no system found: {e}"
    if problem is not None:
        record["rejected"] = problem
        return [], [reject(problem)], record
    wav = video.piece_dir / "slides" / f"{k:03d}.wav"
    write_wav(wav, clip, cfg.sample_rate)
    rows, rejections = [], []
    for system in systems:
        box = [system.box[0] + left, system.box[1] + top, system.box[2] + left, system.box[3] + top]
        why = crop_problem(system, systems, cfg)
        record["systems"].append({"box": box, "space": round(system.space, 3), "rejected": why})
        if why is not None:
            rejections.append(reject(why, None, box))
            continue
        png = video.piece_dir / "systems" / f"{first_system + len(rows):03d}.png"
        write_png(png, normalized_crop(page, system, cfg))
        rows.append(_row(video, first_system + len(rows), k, png, wav, span, box, system.space))
    return rows, rejections, record


def _audio_problem(clip: np.ndarray, length: float, cfg: YtsvConfig) -> str | None:
    if not cfg.min_audio_s <= length <= cfg.max_audio_s:
        return f"audio length: {length:.2f} s outside [{cfg.min_audio_s:g}, {cfg.max_audio_s:g}] s"
    rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64)))) if clip.size else 0.0
    if rms < cfg.min_audio_rms:
        return f"silent audio: rms {rms:.2e}"
    return None


def _row(video: _Video, system: int, slide: int, png: Path, wav: Path, span: tuple[float, float],
         box: list[int], space: float) -> dict:
    root = video.piece_dir.parent.parent
    start, end = span
    return {"piece_id": video.piece_id, "source": str(video.path), "split": video.split,
            "held_out": video.held_out, "system": system, "slide": slide,
            "png": png.relative_to(root).as_posix(), "wav": wav.relative_to(root).as_posix(), "scans": [],
            "start": round(start, 6), "end": round(end, 6), "duration": round(end - start, 6),
            "box": box, "staff_space": round(space, 3)}


# ------------------------------------------------------------------ many videos
def piece_id_of(video: Path) -> str:
    """The video's file name without suffix, lower-case, [a-z0-9-] only, starting with ``ytsv-``."""
    slug = "-".join(p for p in "".join(c if c.isalnum() else "-" for c in video.stem.lower()).split("-") if p)
    return slug if slug.startswith("ytsv-") else "ytsv-" + (slug or "video")


def build_ytsv(videos: list[Path], out_dir: Path, cfg: YtsvConfig,
               on_video: Callable[[str, str | None], None] | None = None) -> tuple[YtsvSummary, list[dict]]:
    """Every video into ``out_dir`` (resumable: a finished video is skipped); (summary, failures).

    A video that fails is recorded in errors.jsonl and the others go on."""
    ids = [piece_id_of(Path(v)) for v in videos]
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise BadInputError(f"two videos would write the same piece {clash[0]} (rename one)")
    failures = []
    for path, piece_id in zip(videos, ids):
        error = _one_video(Path(path), piece_id, out_dir, cfg)
        if error is not None:
            failures.append({"input": str(path), "error": error})
        if on_video is not None:
            on_video(piece_id, error)
    return _write_indexes(out_dir, len(videos), failures), failures


def _one_video(path: Path, piece_id: str, out_dir: Path, cfg: YtsvConfig) -> str | None:
    piece_dir = out_dir / PIECES / piece_id
    if (piece_dir / DONE).is_file():
        return None
    held = sources.origin_held_out_reason(str(path)) is not None
    split = "test" if held else sources.split_of(piece_id, cfg.seed, cfg.split_fractions)
    try:
        video = _Video(path, piece_id, piece_dir, split, held, probe(path))
        rows, rejections, piece = process_video(video, cfg)
    except BadInputError as e:
        write_json_atomic(piece_dir / "error.json", {"piece_id": piece_id, "source": str(path), "error": str(e)})
        return str(e)
    write_json_atomic(piece_dir / "piece.json", piece)
    write_jsonl_atomic(piece_dir / REJECTIONS, rejections)
    write_jsonl_atomic(piece_dir / PIECE_ROWS, rows)
    (piece_dir / "error.json").unlink(missing_ok=True)
    write_text_atomic(piece_dir / DONE, "")
    return None


def _write_indexes(out_dir: Path, videos: int, failures: list[dict]) -> YtsvSummary:
    """manifest.jsonl, rejections.jsonl and errors.jsonl of every video in ``out_dir``."""
    rows = finished_rows(out_dir)
    done = sorted(p.parent for p in Path(out_dir, PIECES).glob(f"*/{DONE}"))
    rejections = [r for d in done for r in read_jsonl(d / REJECTIONS)]
    errors = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out_dir, PIECES).glob("*/error.json"))]
    write_jsonl_atomic(out_dir / MANIFEST, rows)
    write_jsonl_atomic(out_dir / REJECTIONS, rejections)
    write_jsonl_atomic(out_dir / ERRORS, errors)
    slides = {(r["piece_id"], r["slide"]): r["duration"] for r in rows}
    reasons: dict[str, int] = {}
    for r in rejections:
        key = r["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return YtsvSummary(videos, len(failures), len(slides), len(rows), reasons, sum(slides.values()) / 3600)
