"""Carry the retrieval model's training features to a GPU machine, which has no corpus.

    python scripts/gpu_pack_retrieval.py pack --data C1 [--data C2 ...] --val-data V --config paper \
        -o OUT [--reuse-cache DIR] [--part-mb 36]
    python scripts/gpu_pack_retrieval.py unpack PARTS_DIR... --run RUN

`pack` computes (or reads) the features `umust train retrieval` would cache for the train rows
of each --data corpus and the validation rows of --val-data, and stores them compactly:
sheet strips once per system at 4 bits (16 ink levels), spectrograms as uint8 steps of 0.02
(log10(1 + magnitude) units), xz-compressed, split into parts of --part-mb each (a device
call carries at most 64 MiB with the repository). Spectrograms only depend on the audio
settings, so --reuse-cache may name the cache of a run with another sheet size.

`unpack` writes each corpus's manifest (train or valid rows only) back at its original path
and every row's features into RUN/cache under the names training looks up, so the unchanged
`umust train retrieval --data C1 ... --val-data V -o RUN` command finds them all there.
Held-out repertoire (Beethoven) is refused.
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import tarfile
from pathlib import Path

import numpy as np

SPEC_STEP = 0.02  # spectrogram quantisation step (log10(1 + magnitude) units)
INK_STEP = 17  # 255 / 15: 4-bit ink
BINS = 92  # spectrogram bands (FeatureConfig's)
SPEC_FILTERS = [{"id": lzma.FILTER_DELTA, "dist": BINS}, {"id": lzma.FILTER_LZMA2, "preset": 9}]


def _rows(corpus: Path, split: str) -> list[dict]:
    from umust_cli.retrieval.data import corpus_rows

    rows = corpus_rows(corpus, (split,))
    if split == "valid":
        rows = (rows or corpus_rows(corpus))[:300]  # what train_retrieval's validation reads
    held_out = [r["piece_id"] for r in rows if "beethoven" in r["piece_id"].lower()]
    if held_out:
        raise SystemExit(f"{corpus}: held-out repertoire in the {split} rows: {held_out[:3]}")
    return rows


def _features(row: dict, fcfg, reuse) -> tuple[np.ndarray, np.ndarray]:
    from umust_cli.retrieval.data import cache_path, image_of, row_features
    from umust_cli.retrieval.features import load_sheet

    if reuse is not None:
        old_dir, old_cfg = reuse
        old = cache_path(old_dir, row, old_cfg)
        if old.is_file():
            with np.load(old) as z:
                spec = z["spec"]
            return load_sheet(Path(row["root"]) / image_of(row, "png"), fcfg), spec
    return row_features(row, fcfg)


def _corpus_blob(rows: list[dict], fcfg, reuse, sheets: dict) -> tuple[bytes, list[int]]:
    """xz bytes of the rows' spectrograms (T-major uint8, concatenated) and their frame counts;
    each new system's 4-bit strip goes into ``sheets`` (keyed by piece and system)."""
    from tqdm import tqdm

    parts, frames = [], []
    for row in tqdm(rows, desc=Path(rows[0]["root"]).name, leave=False):
        strip, spec = _features(row, fcfg, reuse)
        sheets.setdefault((row["piece_id"], int(row["system"])),
                          np.round(strip / INK_STEP).astype(np.uint8))
        assert spec.shape[0] == BINS, spec.shape
        q = np.clip(np.round(spec.astype(np.float32) / SPEC_STEP), 0, 255).astype(np.uint8)
        parts.append(np.ascontiguousarray(q.T))
        frames.append(q.shape[1])
    return lzma.compress(b"".join(p.tobytes() for p in parts), format=lzma.FORMAT_XZ,
                         filters=SPEC_FILTERS), frames


def pack(a: argparse.Namespace) -> None:
    from umust_cli.model.retrieval import PRESETS
    from umust_cli.retrieval.train import features_for

    fcfg = features_for(PRESETS[a.config])
    reuse = None
    if a.reuse_cache:
        cfg = json.loads((a.reuse_cache.parent / "config.json").read_text())["features"]
        from umust_cli.retrieval.features import FeatureConfig
        reuse = (a.reuse_cache, FeatureConfig(**cfg))
    sheets: dict = {}
    files, index = {}, {"config": a.config, "corpora": []}
    for k, (corpus, split) in enumerate([(c, "train") for c in a.data] + [(a.val_data, "valid")]):
        rows = _rows(corpus, split)
        blob, frames = _corpus_blob(rows, fcfg, reuse, sheets)
        files[f"specs-{k}.xz"] = blob
        plain = [{key: v for key, v in r.items() if key != "root"} for r in rows]
        files[f"rows-{k}.json.xz"] = lzma.compress(json.dumps(plain).encode())
        index["corpora"].append({"root": str(corpus.resolve()), "split": split, "frames": frames})
    keys = sorted(sheets)
    index["sheets"] = [[p, s, *sheets[(p, s)].shape] for p, s in keys]
    files["sheets.xz"] = lzma.compress(b"".join(sheets[k].tobytes() for k in keys), preset=9)
    files["index.json"] = json.dumps(index).encode()
    _write_parts(files, a.out, a.part_mb)


def _write_parts(files: dict[str, bytes], out: Path, part_mb: float) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data, size = buf.getvalue(), int(part_mb * 2 ** 20)
    for i in range(0, len(data), size):
        part = out / f"part{i // size}"
        part.mkdir(parents=True, exist_ok=True)
        (part / f"pack.tar.{i // size:03d}").write_bytes(data[i: i + size])
    print(f"{len(data) / 2 ** 20:.1f} MiB in {-(-len(data) // size)} part(s) under {out}")


def unpack(a: argparse.Namespace) -> None:
    from umust_cli.model.retrieval import PRESETS
    from umust_cli.retrieval.data import cache_path, write_cached_features
    from umust_cli.retrieval.train import features_for

    pieces = sorted((p for d in a.parts for p in Path(d).glob("pack.tar.*")), key=lambda p: p.name)
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in pieces))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    index = json.loads(files["index.json"])
    fcfg = features_for(PRESETS[index["config"]])
    raw, sheets, at = lzma.decompress(files["sheets.xz"]), {}, 0
    for piece, system, h, w in index["sheets"]:
        sheets[(piece, system)] = (np.frombuffer(raw, np.uint8, h * w, at).reshape(h, w) * INK_STEP).astype(np.uint8)
        at += h * w
    for k, entry in enumerate(index["corpora"]):
        rows = json.loads(lzma.decompress(files[f"rows-{k}.json.xz"]))
        root = Path(str(a.prefix) + entry["root"]) if a.prefix else Path(entry["root"])
        root.mkdir(parents=True, exist_ok=True)
        (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        specs, at = lzma.decompress(files[f"specs-{k}.xz"]), 0
        for row, frames in zip(rows, entry["frames"]):
            q = np.frombuffer(specs, np.uint8, frames * BINS, at).reshape(frames, BINS).T
            at += frames * BINS
            spec = (q.astype(np.float32) * SPEC_STEP).astype(np.float16)
            write_cached_features(cache_path(a.run / "cache", dict(row, root=str(root)), fcfg),
                                  sheets[(row["piece_id"], int(row["system"]))], spec)
        print(f"{root}: {len(rows)} {entry['split']} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--val-data", type=Path, required=True)
    p.add_argument("--config", default="paper")
    p.add_argument("--reuse-cache", type=Path)
    p.add_argument("--part-mb", type=float, default=36.0)
    p.add_argument("-o", "--out", type=Path, required=True)
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path, nargs="+")
    u.add_argument("--run", type=Path, required=True)
    u.add_argument("--prefix", default="", help="Put the corpora under this folder (a local check).")
    a = ap.parse_args()
    pack(a) if a.cmd == "pack" else unpack(a)


if __name__ == "__main__":
    main()
