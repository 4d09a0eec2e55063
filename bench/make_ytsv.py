"""Score-following test videos from a built corpus, with their truth (for `umust dataset ytsv`).

A video shows slides of 1-3 consecutive systems of one piece (the corpus's engraved PNGs,
or the slide given a mild scanned look: small rotation and warp, paper tone, blur, noise,
JPEG), left-aligned on a white page that is scaled into a letterboxed/pillarboxed frame
(black bars). Each slide lasts as long as its systems' audio; the audio track is the
systems' wav files one after another (FluidSynth renders of the corpus build). The change
into a slide is a hard cut, a cross-fade or a left-to-right wipe (``--fade-s`` long)
that starts at the slide's first audio sample: frame k (time k / fps) is the first one of
the transition when k / fps >= that time. Video: libx264 + aac, muxed with ffmpeg.

The truth JSON beside each video lists the transitions (time, kind), the slides (start,
end, scanned or not) and each system's box in frame pixels: the ink box of its PNG on the
page, scaled and offset like the page.

    python bench/make_ytsv.py --corpus CORPUS --seed 1 -o OUT [--slides 8] [--fps 20] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umust_cli.data.augment import ScanLookConfig, scan_look  # noqa: E402
from umust_cli.data.corpus import system_rows  # noqa: E402
from umust_cli.data.render import ink_box  # noqa: E402
from umust_cli.inputs import load_audio, load_image  # noqa: E402

SCAN_LOOK = ScanLookConfig(max_rotation_deg=0.3, warp_strength=0.5, warp_cell=256, noise_std=(0.0, 8.0),
                           blur_sigma=(0.0, 0.7), binarize_prob=0.2, jpeg_quality=(50, 90))
KINDS = ("cut", "fade", "wipe")


def compose_page(systems: list[np.ndarray], gap: int = 24, margin: int = 30) -> tuple[np.ndarray, list[list[int]]]:
    """Systems stacked left-aligned on a white page; (page, ink boxes [left, top, right, bottom) per system)."""
    width = max(s.shape[1] for s in systems) + 2 * margin
    height = sum(s.shape[0] for s in systems) + gap * (len(systems) - 1) + 2 * margin
    page = np.full((height, width), 255, np.uint8)
    boxes, y = [], margin
    for s in systems:
        page[y:y + s.shape[0], margin:margin + s.shape[1]] = s
        top, bottom, left, right = ink_box(s)
        boxes.append([margin + left, y + top, margin + right + 1, y + bottom + 1])
        y += s.shape[0] + gap
    return page, boxes


def place(page: np.ndarray, boxes: list[list[int]], size: tuple[int, int]) -> tuple[np.ndarray, list[list[float]]]:
    """The page scaled to fit a (width, height) frame, centred on black bars; boxes moved with it."""
    width, height = size
    scale = min(width / page.shape[1], height / page.shape[0])
    w, h = int(round(page.shape[1] * scale)), int(round(page.shape[0] * scale))
    frame = np.zeros((height, width), np.uint8)
    x0, y0 = (width - w) // 2, (height - h) // 2
    frame[y0:y0 + h, x0:x0 + w] = np.asarray(Image.fromarray(page).resize((w, h), Image.Resampling.LANCZOS))
    moved = [[round(x0 + b[0] * scale, 1), round(y0 + b[1] * scale, 1), round(x0 + b[2] * scale, 1),
              round(y0 + b[3] * scale, 1)] for b in boxes]
    return frame, moved


def frame_at(k: int, fps: float, slides: list[np.ndarray], starts: list[float], kinds: list[str],
             fade_s: float) -> np.ndarray:
    """Frame number k of the timeline (slide i from starts[i]; kinds[i] brings slide i in)."""
    t = k / fps
    i = max(j for j, s in enumerate(starts) if s <= t + 1e-9)
    first = int(np.ceil(starts[i] * fps - 1e-9))
    steps = max(1, int(round(fade_s * fps)))
    a = (k - first + 1) / steps
    if i == 0 or kinds[i] == "cut" or a >= 1:
        return slides[i]
    prev, cur = slides[i - 1], slides[i]
    if kinds[i] == "fade":
        return np.round(prev * (1 - a) + cur * a).astype(np.uint8)
    out = prev.copy()  # wipe, left to right
    edge = int(round(a * cur.shape[1]))
    out[:, :edge] = cur[:, :edge]
    return out


def write_video(path: Path, slides: list[np.ndarray], starts: list[float], kinds: list[str], audio: np.ndarray,
                sample_rate: int, fps: float, fade_s: float) -> float:
    """Encode the slides (gray frames) with the audio into ``path`` (libx264 + aac); its duration (s)."""
    duration = len(audio) / sample_rate
    wav = path.with_suffix(".tmp.wav")
    import soundfile

    soundfile.write(str(wav), audio, sample_rate, subtype="PCM_16")
    h, w = slides[0].shape
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{w}x{h}",
           "-framerate", str(fps), "-i", "-", "-i", str(wav), "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        for k in range(int(np.ceil(duration * fps))):
            proc.stdin.write(frame_at(k, fps, slides, starts, kinds, fade_s).tobytes())
    finally:
        proc.stdin.close()
        proc.wait()
        wav.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise SystemExit(f"ffmpeg failed on {path}")
    return duration


def choose_slides(rows: list[dict], n: int, rng: np.random.Generator) -> list[list[dict]]:
    """n slides of 1-3 consecutive systems of one piece (a piece with enough systems)."""
    sizes = rng.integers(1, 4, size=n).tolist()
    pieces: dict[str, list[dict]] = {}
    for r in rows:
        pieces.setdefault(r["piece_id"], []).append(r)
    fit = sorted(p for p, rs in pieces.items() if len(rs) >= sum(sizes))
    systems = pieces[fit[int(rng.integers(len(fit)))]]
    first = int(rng.integers(len(systems) - sum(sizes) + 1))
    out, k = [], first
    for s in sizes:
        out.append(systems[k:k + s])
        k += s
    return out


def make_video(corpus: Path, out: Path, seed: int, n: int, fps: float, size: tuple[int, int],
               scan_prob: float, fade_s: float) -> dict:
    rng = np.random.default_rng(seed)
    groups = choose_slides(system_rows(corpus), n, rng)
    frames, starts, kinds, truth_slides, audio, t = [], [], [], [], [], 0.0
    for i, group in enumerate(groups):
        page, boxes = compose_page([load_image(Path(r["root"]) / r["png"]) for r in group])
        scanned = bool(rng.random() < scan_prob)
        if scanned:
            page = scan_look(page, SCAN_LOOK, int(rng.integers(2**31)))
        frame, moved = place(page, boxes, size)
        clips = [load_audio(Path(r["root"]) / r["wav"])[0] for r in group]
        kind = "first" if i == 0 else str(rng.choice(KINDS))
        length = sum(len(c) for c in clips) / 44100
        truth_slides.append({"start": round(t, 6), "end": round(t + length, 6), "scanned": scanned,
                             "transition_in": kind, "systems": [
                                 {"piece_id": r["piece_id"], "system": r["system"], "box": b}
                                 for r, b in zip(group, moved)]})
        frames.append(frame)
        starts.append(t)
        kinds.append(kind)
        audio.extend(clips)
        t += length
    path = out / f"ytsv-seed{seed}.mp4"
    duration = write_video(path, frames, starts, kinds, np.concatenate(audio), 44100, fps, fade_s)
    truth = {"video": path.name, "fps": fps, "size": list(size), "duration": round(duration, 6),
             "fade_s": fade_s, "seed": seed, "slides": truth_slides,
             "transitions": [{"time": s["start"], "kind": s["transition_in"]} for s in truth_slides[1:]]}
    path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="a corpus made by 'umust dataset build'")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--scan-prob", type=float, default=0.5, help="chance that a slide gets the scanned look")
    ap.add_argument("--fade-s", type=float, default=0.5)
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    w, h = (int(x) for x in args.size.split("x"))
    truth = make_video(args.corpus, args.output, args.seed, args.slides, args.fps, (w, h), args.scan_prob, args.fade_s)
    print(f"{truth['video']}: {len(truth['slides'])} slides, {truth['duration']:.1f} s, transitions "
          f"{[x['kind'] for x in truth['transitions']]}")


if __name__ == "__main__":
    main()
