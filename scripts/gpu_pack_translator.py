#!/usr/bin/env python3
"""Carry the translators' training material to a GPU machine, and the small steps of the
device-side script (`scripts/gpu-translator.sh`).

    python scripts/gpu_pack_translator.py pack CORPUS --codes CODES [--codes CODES2] -o .gpu/translator \
        [--wheels WHEEL_DIR] [--budget-mib N]
    python scripts/gpu_pack_translator.py unpack PACK DEST        # on the device: PACK -> a corpus folder
    python scripts/gpu_pack_translator.py save-every RUN --seconds 120 --default N
    python scripts/gpu_pack_translator.py init-weights KIND       # the shipped folder of KIND, or nothing
    python scripts/gpu_pack_translator.py export RUNS EXPORT i2a a2i   # fp16 folders, files < 16 MiB
    python scripts/gpu_pack_translator.py summary RUNS EXPORT i2a a2i --started EPOCH

`pack` writes what `umust train translator` reads and nothing else: the train and valid rows of
the manifest (never test rows; held-out repertoire is refused), each system's LMX and MIDI
files, and the code arrays of `umust dataset tokenize` (image, scanned-look image, audio, with
their shift variants), as one bzip2 tar (`data.tar.bz2`; bzip2 measured 9.5 bits per 10-bit
image code, xz 9.6, zlib 11.2). What does not fit the budget is left out in this order: extra
shift variants first, then the train split's scanned-look copies, then whole train systems
(their image and audio codes together, so that image->audio pairs stay pairs); the LMX/MIDI
tokens and the valid split always travel. `pack.json` reports sizes, counts and hours.

The budget (default) is what a device call carries, 64 MiB, less the repository that travels
with it (tracked and untracked-not-ignored files), the wheels and a 2 MiB margin. Wheels given
with --wheels are copied into the pack; bulky files they do not need here (pretty_midi's
6 MB soundfont) are dropped from them. No torch here: the device side runs this before any
install.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CARRY_LIMIT = 64 * 2**20
MARGIN = 2 * 2**20
FILE_LIMIT = 16 * 2**20 - 2**16  # a device call brings back files of at most 16 MiB
BLOCK = 900_000                  # bzip2's block: compressed output lags the input by at most one
DATA = "data.tar.bz2"
REPORT = "pack.json"
SPLITS = ("train", "valid")
# the manifest keys the trainer reads (its files, split, the held-out check)
ROW_KEYS = ("piece_id", "system", "split", "png", "wav", "lmx", "mid", "scans", "source", "held_out")
CODE_SUFFIX = {"image": ".image.npy", "audio": ".audio.npy"}
SLIM_SUFFIXES = (".sf2",)        # soundfonts inside wheels (pretty_midi's, for synthesis only)
FRAMES_PER_S = 44100 / 512       # audio codec frames per second (codecs.audio SAMPLE_RATE / HOP)


# ---------------------------------------------------------------------------
# What travels
# ---------------------------------------------------------------------------

@dataclass
class CodeFile:
    """One code array to carry: where it is, its split, kind and how many variants travel."""

    rel: str                      # path in the pack (and under a codes folder)
    src: Path
    split: str
    kind: str                     # image | scan | audio
    shape: tuple
    keep: int = 1                 # variants kept (the unshifted one first)

    def variant_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * 2

    def seconds(self) -> float:
        return self.shape[2] / FRAMES_PER_S if self.kind == "audio" else 0.0


@dataclass
class Plan:
    rows: list[dict]
    tokens: list[tuple[str, Path]]                                # (rel, file): LMX, MIDI, corpus files
    groups: list[list[CodeFile]] = field(default_factory=list)     # priority order: the last are left out first


def read_rows(corpus: Path) -> list[dict]:
    """The train and valid rows, refusing held-out repertoire (the corpus reader's rule)."""
    sys.path.insert(0, str(REPO))
    from umust_cli.data import corpus as corpus_io

    rows = corpus_io.rows(corpus, SPLITS)
    corpus_io.check_training_rows(rows, corpus)
    rows = [{k: r[k] for k in ROW_KEYS if k in r} for r in rows]
    return sorted(rows, key=lambda r: (r["split"] != "valid", r["piece_id"], int(r["system"])))


def code_file(codes: list[Path], rel: str, split: str, kind: str) -> CodeFile | None:
    """The code array of a row's file ``rel`` (png, scanK.png or wav) if a codes folder has it."""
    code_rel = str(Path(rel).with_suffix(CODE_SUFFIX["audio" if kind == "audio" else "image"]))
    for root in codes:
        path = root / code_rel
        if path.is_file():
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return CodeFile(code_rel, path, split, kind, tuple(arr.shape))
    return None


def plan(corpus: Path, codes: list[Path], seed: int) -> Plan:
    """Every file that may travel, grouped in priority order (tokens and valid codes first)."""
    rows = read_rows(corpus)
    tokens = [(name, corpus / name) for name in ("build.json", "vocabulary.json") if (corpus / name).is_file()]
    tokens += [(r[k], corpus / r[k]) for r in rows for k in ("lmx", "mid") if r.get(k) and (corpus / r[k]).is_file()]
    out = Plan(rows, tokens)
    train = [r for r in rows if r["split"] == "train"]
    order = np.random.default_rng(seed).permutation(len(train))
    out.groups += [_system_files(codes, r, scans=True) for r in rows if r["split"] == "valid"]
    out.groups += [_system_files(codes, train[i], scans=False) for i in order]
    out.groups += [[f] for i in order for f in _scan_files(codes, train[i])]
    return out


def plan_files(p: Plan) -> list[CodeFile]:
    """Every code file of the plan, in priority order."""
    return [f for g in p.groups for f in g]


def _system_files(codes: list[Path], row: dict, scans: bool) -> list[CodeFile]:
    files = [code_file(codes, row[k], row["split"], kind)
             for k, kind in (("png", "image"), ("wav", "audio")) if row.get(k)]
    return [f for f in files if f is not None] + (_scan_files(codes, row) if scans else [])


def _scan_files(codes: list[Path], row: dict) -> list[CodeFile]:
    files = [code_file(codes, rel, row["split"], "scan") for rel in row.get("scans") or ()]
    return [f for f in files if f is not None]


def variant_order(kind: str, n: int) -> list[int]:
    """The variants of a code array in the order they travel: the unshifted one first (image
    variant 0; audio variant (n-1)//2, the shift of -20+5i samples that is 0), then evenly
    spread: each next one as far as possible from those already taken."""
    first = (n - 1) // 2 if kind == "audio" else 0
    taken = [first]
    while len(taken) < n:
        rest = [v for v in range(n) if v not in taken]
        taken.append(max(rest, key=lambda v: (min(abs(v - t) for t in taken), -v)))
    return taken


# ---------------------------------------------------------------------------
# Choosing within the budget
# ---------------------------------------------------------------------------

def bz2_ratio(files: list[CodeFile], most: int = 48) -> float:
    """Compressed / raw bytes of the unshifted variant of up to ``most`` of ``files``. Variants
    of one system share codes, so more variants compress better (audio, 9: 0.55 against 0.67):
    the estimate errs on the safe side."""
    sample = files[:: max(1, len(files) // most)][:most]
    raw = b"".join(np.load(f.src, allow_pickle=False)[variant_order(f.kind, f.shape[0])[0]].tobytes()
                   for f in sample)
    return len(bz2.compress(raw, 9)) / max(1, len(raw))


def choose(p: Plan, budget: int, ratios: dict[str, float]) -> tuple[list[CodeFile], int]:
    """Files that fit ``budget`` bytes (compressed, estimated) with their ``keep`` set: whole groups
    in priority order at one variant each, then one more variant at a time round-robin; and the
    number of groups left out."""
    chosen, used, dropped = [], 0, 0
    for group in p.groups:
        cost = sum(_est(f, ratios) for f in group)
        if dropped or used + cost > budget:
            dropped += 1
            continue
        chosen += group
        used += cost
    most = max((f.shape[0] for f in chosen), default=1)
    for k in range(2, most + 1):
        for f in chosen:
            if f.shape[0] >= k and used + _est(f, ratios) <= budget:
                f.keep, used = k, used + _est(f, ratios)
    return chosen, dropped


def _est(f: CodeFile, ratios: dict[str, float]) -> int:
    return int(f.variant_bytes() * ratios["audio" if f.kind == "audio" else "image"]) + 600


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

class _Counter(io.RawIOBase):
    """A file that counts the bytes written through it."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.f.write(b)
        self.n += len(b)
        return len(b)


def _add(tar: tarfile.TarFile, rel: str, data: bytes) -> None:
    info = tarfile.TarInfo(rel)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _npy(f: CodeFile) -> bytes:
    arr = np.load(f.src, allow_pickle=False)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr[variant_order(f.kind, arr.shape[0])[:f.keep]]), allow_pickle=False)
    return buf.getvalue()


def write_pack(p: Plan, chosen: list[CodeFile], out: Path, budget: int) -> list[CodeFile]:
    """data.tar.bz2 in priority order; returns the code files written (a size check stops early
    should the estimate be off)."""
    written = []
    with open(out / DATA, "wb") as raw:
        counter = _Counter(raw)
        with bz2.BZ2File(counter, "wb", compresslevel=9) as bz, tarfile.open(fileobj=bz, mode="w") as tar:
            _add(tar, "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in p.rows).encode())
            for rel, path in p.tokens:
                _add(tar, rel, path.read_bytes())
            for f in chosen:
                data = _npy(f)
                if counter.n + BLOCK + len(data) > budget:
                    break
                _add(tar, f.rel, data)
                written.append(f)
    return written


# ---------------------------------------------------------------------------
# Wheels and the repository that travel beside the pack
# ---------------------------------------------------------------------------

def slim_wheel(src: Path, dst: Path) -> None:
    """Copy a wheel without the files it does not need here (SLIM_SUFFIXES) and their RECORD lines."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if item.filename.endswith(SLIM_SUFFIXES):
                continue
            data = zin.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.split(b",")[0].endswith(tuple(s.encode() for s in SLIM_SUFFIXES)))
            zout.writestr(item, data)


def copy_wheels(wheels: Path | None, out: Path) -> list[dict]:
    if wheels is None:
        return []
    target = out / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    listed = []
    for src in sorted(wheels.glob("*.whl")):
        slim_wheel(src, target / src.name)
        listed.append({"wheel": src.name, "bytes": (target / src.name).stat().st_size})
    return listed


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call carries of the repository: tracked and untracked-not-ignored files."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=repo,
                               check=True, capture_output=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

def report(p: Plan, written: list[CodeFile], sizes: dict, ratios: dict[str, float], dropped: int) -> dict:
    by = {}
    for f in written:
        d = by.setdefault(f"{f.split}/{f.kind}", {"files": 0, "variants": 0, "raw_bytes": 0, "audio_hours": 0.0})
        d["files"] += 1
        d["variants"] += f.keep
        d["raw_bytes"] += f.variant_bytes() * f.keep
        d["audio_hours"] = round(d["audio_hours"] + f.seconds() / 3600, 4)
    audio_s = sum(f.seconds() * f.keep for f in written if f.kind == "audio")
    codes = sizes["data_bytes"] - sizes["tokens_bytes"]
    per_s = ratios["audio"] * 4 * 2 * FRAMES_PER_S      # compressed bytes per second, one variant
    images = [f for f in plan_files(p) if f.kind == "image"]
    per_image = ratios["image"] * sum(f.variant_bytes() for f in images) / max(1, len(images))
    room = CARRY_LIMIT - sizes["tree_bytes"] - sizes["wheels_bytes"] - sizes["tokens_bytes"] - MARGIN
    return {
        "rows": {s: sum(r["split"] == s for r in p.rows) for s in SPLITS},
        "code_files": by, "groups_left_out": dropped,
        "image_systems": sum(1 for f in written if f.kind == "image"),
        "scan_systems": sum(1 for f in written if f.kind == "scan"),
        "audio_hours_all_variants": round(audio_s / 3600, 4),
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "image_bits_per_code": round(ratios["image"] * 16, 3),
        "audio_bytes_per_second": round(per_s, 1),
        "fit": {"audio_hours_in_64MiB": round(CARRY_LIMIT / per_s / 3600, 2),
                "audio_hours_beside_repo": round(room / per_s / 3600, 2),
                "image_systems_beside_repo": int(room / max(1.0, per_image))},     # one variant each
        **sizes, "codes_bytes": codes,
    }


def pack(corpus: Path, codes: list[Path], out: Path, wheels: Path | None, budget_mib: float | None,
         seed: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    listed = copy_wheels(wheels, out)
    sizes = {"tree_bytes": tree_bytes(), "wheels_bytes": sum(w["bytes"] for w in listed)}
    budget = (int(budget_mib * 2**20) if budget_mib is not None
              else CARRY_LIMIT - sizes["tree_bytes"] - sizes["wheels_bytes"] - MARGIN)
    p = plan(corpus, codes, seed)
    files = plan_files(p)
    measured = {k: [f for f in files if (f.kind == "audio") == (k == "audio")] for k in ("image", "audio")}
    ratios = {k: bz2_ratio(v) for k, v in measured.items() if v}
    est = {"image": ratios.get("image", 0.6), "audio": ratios.get("audio", 0.6)}
    tokens_est = len(bz2.compress(b"".join(path.read_bytes() for _, path in p.tokens), 9))
    chosen, dropped = choose(p, budget - tokens_est - BLOCK, est)
    written = write_pack(p, chosen, out, budget)
    sizes.update(budget_bytes=budget, data_bytes=(out / DATA).stat().st_size, tokens_bytes=tokens_est,
                 wheels=listed)
    if sizes["data_bytes"] > budget:
        raise SystemExit(f"the pack is {sizes['data_bytes']} bytes, over its budget of {budget}")
    rep = report(p, written, sizes, est, dropped + len(chosen) - len(written))
    rep["measured"] = sorted(ratios)
    (out / REPORT).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    return rep


def unpack(pack_dir: Path, dest: Path) -> str:
    """Extract ``pack_dir``'s data into ``dest`` as a corpus folder with its codes; nothing to do
    when ``dest`` already holds this pack (a warm machine's second call)."""
    stamp = (pack_dir / REPORT).read_text(encoding="utf-8")
    if (dest / REPORT).is_file() and (dest / REPORT).read_text(encoding="utf-8") == stamp:
        return f"{dest} already holds this pack"
    if dest.exists():
        shutil.rmtree(dest)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(pack_dir / DATA, "r:bz2") as tar:
        tar.extractall(partial, filter="data")
    (partial / REPORT).write_text(stamp, encoding="utf-8")
    partial.rename(dest)
    return f"unpacked {pack_dir / DATA} into {dest}"


def save_every(run: Path, seconds: float, default: int) -> int:
    """Steps per ``seconds`` at the rate of the run's last training segment in its log (time_s
    restarts at each call), or ``default`` when the run has no such rows yet."""
    rows = []
    log = run / "train_log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if "time_s" in row:
                rows = [row] if rows and row["time_s"] < rows[-1]["time_s"] else rows + [row]
    if len(rows) < 2 or rows[-1]["time_s"] <= rows[0]["time_s"]:
        return default
    rate = (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time_s"] - rows[0]["time_s"])
    return max(1, int(rate * seconds))


def init_weights(kind: str) -> str:
    """The shipped weights folder of ``kind`` (registry) when this install has it, else ''."""
    sys.path.insert(0, str(REPO))
    from umust_cli import registry
    from umust_cli.errors import CheckpointError

    try:
        folder = registry.resolve(kind, None)
    except (ValueError, CheckpointError):     # kind not registered yet, or its folder missing
        return ""
    return str(folder) if (folder / "model.safetensors").is_file() else ""


def export(run: Path, dest: Path, most: int = FILE_LIMIT) -> list[str]:
    """The run's best validation checkpoint (else its last) as a shippable fp16 folder; a file
    over ``most`` bytes (a device call brings back files < 16 MiB) is cut into NAME.partNN,
    joined again with ``cat NAME.part* > NAME``."""
    sys.path.insert(0, str(REPO))
    from umust_cli.checkpoint import VOCABULARY, export_fp16
    from umust_cli.codecs.vocab import Vocabulary

    src = run / "best" if (run / "best" / "model.safetensors").is_file() else run
    export_fp16(src, dest, Vocabulary.load(src / VOCABULARY))
    for f in sorted(dest.iterdir()):
        if f.stat().st_size > most:
            data = f.read_bytes()
            for k in range(0, len(data), most):
                (dest / f"{f.name}.part{k // most:02d}").write_bytes(data[k:k + most])
            f.unlink()
    return [f"{f.name} {f.stat().st_size}" for f in sorted(dest.iterdir())]


def summary(runs: Path, export_dir: Path, directions: list[str], started: float) -> dict:
    """Each run's last step, loss and validation scores, and the call's wall time (summary.json)."""
    import time

    out = {"wall_s": round(time.time() - started, 1)}
    for d in directions:
        rows = [json.loads(x) for x in (runs / d / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
                if x.strip()] if (runs / d / "train_log.jsonl").is_file() else []
        steps = [r for r in rows if "loss" in r and "step" in r]
        evals = [r["eval"] for r in rows if "eval" in r]
        out[d] = {"step": steps[-1]["step"] if steps else 0, "loss": steps[-1]["loss"] if steps else None,
                  "time_s": steps[-1].get("time_s") if steps else None, "eval": evals[-1] if evals else None,
                  "exported": sorted(f.name for f in (export_dir / f"translator-{d}").glob("*"))}
    (export_dir / "summary.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="corpus + codes -> a carryable folder")
    a.add_argument("corpus", type=Path)
    a.add_argument("--codes", type=Path, action="append", default=[],
                   help="folder of code files (repeatable; the first that has a file wins; default: the corpus)")
    a.add_argument("-o", "--output", type=Path, required=True)
    a.add_argument("--wheels", type=Path, help="folder of the wheels the device lacks (copied, slimmed)")
    a.add_argument("--budget-mib", type=float, help="data budget (default: 64 MiB less repository, wheels, margin)")
    a.add_argument("--seed", type=int, default=0, help="order of the train systems when not all fit")
    u = sub.add_parser("unpack", help="pack folder -> corpus folder (on the device)")
    u.add_argument("pack", type=Path)
    u.add_argument("dest", type=Path)
    s = sub.add_parser("save-every", help="steps per --seconds at the run's last measured rate")
    s.add_argument("run", type=Path)
    s.add_argument("--seconds", type=float, default=120)
    s.add_argument("--default", type=int, required=True)
    i = sub.add_parser("init-weights", help="the shipped folder of a registry kind, or nothing")
    i.add_argument("kind")
    e = sub.add_parser("export", help="each run's best (else last) checkpoint as EXPORT/translator-DIRECTION")
    e.add_argument("runs", type=Path)
    e.add_argument("export_dir", type=Path)
    e.add_argument("directions", nargs="+")
    m = sub.add_parser("summary", help="the runs' last steps and scores as summary.json")
    m.add_argument("runs", type=Path)
    m.add_argument("export_dir", type=Path)
    m.add_argument("directions", nargs="+")
    m.add_argument("--started", type=float, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.corpus, args.codes or [args.corpus], args.output, args.wheels,
                              args.budget_mib, args.seed), indent=2))
    elif args.cmd == "unpack":
        print(unpack(args.pack, args.dest))
    elif args.cmd == "save-every":
        print(save_every(args.run, args.seconds, args.default))
    elif args.cmd == "init-weights":
        print(init_weights(args.kind))
    elif args.cmd == "export":
        for d in args.directions:       # one process: torch is imported once
            print("\n".join(f"translator-{d}/{line}" for line in export(args.runs / d, args.export_dir / f"translator-{d}")))
    else:
        print(json.dumps(summary(args.runs, args.export_dir, args.directions, args.started), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
