"""Rhythm readers side by side on the LMX they write (OMR SER), with the rule's own ceiling.

    python bench/rhythm_reading.py --data CORPUS --rhythm-reader RUN/best [--rhythm-reader B]
                                   [--split valid] [--limit N] [--json OUT]

Every system of the split with an image and LMX, its engraving and its scanned-look copies, is
read by each ``--rhythm-reader`` (a pitch reader of the ``rhythmic`` or ``beamed`` classes); its
reading is written as LMX (``data.rhythm.write_reading``) opened by the reference's own
attributes (``header_tokens``: clefs, key, time) and scored against the reference as `umust eval
omr` scores (pooled token edit distance over reference tokens), as read and with its measures
fitted to the reference's time signature (row ``(fitted)``, ``data.measure_fit``). The rows
``oracle rhythmic`` and ``oracle beamed`` write the reference's own classes of each target through
the same rule: what a perfect reader would score. The product's OMR takes the attributes from
the translator's decoding, the key reader and the measures instead; `umust translate --data
--task omr` and `umust eval omr` measure that. The first reader is compared with its fitted
reading, and the first two readers with each other, system by system (copies apart): systems
each reads better.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from umust_cli.codecs.image import load_gray  # noqa: E402
from umust_cli.data import corpus as corpus_io  # noqa: E402
from umust_cli.data.measure_fit import fit_staff  # noqa: E402
from umust_cli.data.rhythm import header_tokens, meter, write_reading  # noqa: E402
from umust_cli.data.staff_images import staff_image  # noqa: E402
from umust_cli.data.staff_order import staff_classes  # noqa: E402
from umust_cli.errors import ImageError  # noqa: E402
from umust_cli.eval import metrics as M  # noqa: E402
from umust_cli.eval.report import read_lmx_tokens  # noqa: E402
from umust_cli.translate.engines import load_rhythm_reader  # noqa: E402


def systems(corpus: Path, split: str, limit: int | None) -> list[tuple[str, list[str], dict[str, Path]]]:
    """(key, reference LMX tokens, {copy: image}) of the split's systems with both."""
    out = []
    for row in corpus_io.system_rows(corpus, (split,))[:limit]:
        if not row.get("png") or not row.get("lmx") or not (corpus / row["lmx"]).is_file():
            continue
        copies = {"engraved": corpus / row["png"]}
        copies.update({f"scan{k}": corpus / s for k, s in enumerate(row.get("scans") or ())})
        out.append((f"{row['piece_id']}/{int(row['system']):03d}", read_lmx_tokens(corpus / row["lmx"]),
                    {c: p for c, p in copies.items() if p.is_file()}))
    return out


def written(staves: list[list[int]], ref: list[str], target: str) -> list[str]:
    """The LMX of one system's class ids (``target``: rhythmic or beamed) per staff, opened by the
    reference's attributes."""
    return write_reading(staves, header_tokens(ref), target)


def fitted(read: tuple, ref: list[str], per_column: int, target: str) -> list[list[int]]:
    """A reader's ``read_scored`` of one system with each staff's measures fitted to the
    reference's time signature (``data.measure_fit``; as read without one)."""
    _, staves, scores = read
    length, _ = meter(header_tokens(ref))
    ids = [[c for _, c in staff] for staff in staves]
    if not length:
        return ids
    return [fit_staff(i, [p for p, _ in staff], lp, length, per_column, target=target)
            for i, staff, lp in zip(ids, staves, scores)]


def score(reader, items, target: str) -> dict[str, dict[str, list]]:
    """Per row ("read", "fitted"; the oracle's "read" only: the reference's own ``target`` classes)
    and copy kind ("engraved", "scanned"): each system's SerCounts of the LMX written."""
    out = {row: {"engraved": [], "scanned": []} for row in (("read",) if reader is None else ("read", "fitted"))}
    for key, ref, copies in items:
        for copy, path in copies.items():
            kind = "engraved" if copy == "engraved" else "scanned"
            if reader is None:
                out["read"][kind].append(M.ser_counts(written(staff_classes(ref, target), ref, target), ref))
                continue
            try:
                read = reader.read_scored([staff_image(load_gray(path), reader.cfg.height)])[0]
            except ImageError:
                for row in out.values():
                    row[kind].append(M.ser_counts([], ref))
                continue
            out["read"][kind].append(M.ser_counts(written([[c for _, c in s] for s in read[1]], ref, target), ref))
            out["fitted"][kind].append(M.ser_counts(written(fitted(read, ref, reader.cfg.per_column, target), ref,
                                                            target), ref))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rhythm-reader", action="append", default=[], help="a rhythm-reader checkpoint (repeat)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    items = systems(args.data, args.split, args.limit)
    results, report = {}, {"split": args.split, "systems": len(items)}
    for name in ["oracle rhythmic", "oracle beamed", *args.rhythm_reader]:
        reader = None if name.startswith("oracle ") else load_rhythm_reader(Path(name)).eval()
        target = name.split()[1] if reader is None else reader.cfg.ctc_target
        for row, counts in score(reader, items, target).items():
            label = name if row == "read" else f"{name} (fitted)"
            results[label] = counts
            report[label] = {kind: round(M.pooled_ser(c), 4) for kind, c in counts.items() if c}
            print(label, report[label], flush=True)
    pairs = [(n, f"{n} (fitted)") for n in args.rhythm_reader[:1]] + [tuple(args.rhythm_reader[:2])]
    for a_name, b_name in (p for p in pairs if len(p) == 2):
        a, b = results[a_name], results[b_name]
        report[f"paired: {b_name} vs {a_name}"] = paired = {
            kind: {"b_better": sum(y.ser < x.ser for x, y in zip(a[kind], b[kind])),
                   "a_better": sum(y.ser > x.ser for x, y in zip(a[kind], b[kind]))} for kind in a}
        print(f"paired: {b_name} vs {a_name}", paired)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
