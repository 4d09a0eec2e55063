"""`umust retrieve`: find score passages from recordings and back (Carvalho & Widmer, ISMIR 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli import registry
from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors, print_json
from umust_cli.errors import BadInputError, InputNotFoundError
from umust_cli.io import require_file

app = typer.Typer(help="Audio <-> sheet-music passage retrieval: build an index, search it.", no_args_is_help=True)

MODEL_HELP = (f"A shipped retrieval model ({registry.describe('retrieval')}) or a checkpoint "
              "folder. rendered: trained on engraved scores; small: about 5x faster on score images on a CPU, "
              "less accurate; scans: a small model fine-tuned on real scanned pages too.")
WINDOW_HELP = "Recordings are cut into passages of this many seconds."
HOP_HELP = "Seconds between the starts of consecutive passages of a recording."


@app.command("index")
@handle_errors
def index(
    inputs: List[Path] = typer.Argument(..., help="System images, score PDFs, recordings, or corpus "
                                                  "folders of 'umust dataset build'."),
    output: Path = typer.Option(..., "-o", "--output", help="Index file to write (.npz)."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME|PATH", help=MODEL_HELP),
    split: List[str] = typer.Option(["test"], "--split", help="Corpus folders: split(s) to index (repeatable)."),
    modality: str = typer.Option("sheet", "--modality", help="Corpus folders: index sheet, audio or both."),
    pages: bool = typer.Option(False, "--pages", help="Images are whole score pages: index every piano "
                                                      "system found on them (PDFs always are)."),
    window: float = typer.Option(8.0, "--window", min=0.5, help=WINDOW_HELP),
    hop: float = typer.Option(4.0, "--hop", min=0.1, help=HOP_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Embed every system image, every system of each score page or PDF, and every passage of
    each recording into one index file."""
    import numpy as np

    from umust_cli.retrieval import index as idx
    from umust_cli.retrieval.embed import load_retrieval_model, model_id

    if modality not in ("sheet", "audio", "both"):
        raise BadInputError(f"--modality must be sheet, audio or both, not {modality!r}")
    net, fcfg, config = load_retrieval_model(model)
    windows = idx.WindowConfig(window, hop)
    embs, entries = [], []
    for path in inputs:
        if idx.is_corpus(path):
            kinds = ("sheet", "audio") if modality == "both" else (modality,)
            e, rows = idx.embed_corpus(net, fcfg, path, split, kinds, progress=not as_json)
        elif path.is_file():
            e, rows = idx.embed_files(net, fcfg, [path], windows, pages)
        else:
            raise InputNotFoundError(f"no such file or corpus folder: {path}")
        embs.append(e)
        entries.extend(rows)
    name = registry.shipped_name("retrieval", model)
    info = {"id": model_id(config), "path": f"shipped:{name}" if name else str(Path(model).resolve()),
            "step": config.get("step")}
    idx.RetrievalIndex(np.concatenate(embs), entries, info).save(output)
    counts = {k: sum(e["kind"] == k for e in entries) for k in ("sheet", "audio")}
    if as_json:
        print_json({"index": str(output), "entries": len(entries), **counts, "model": info})
        return
    typer.echo(f"indexed {counts['sheet']} sheet and {counts['audio']} audio passage(s) into {output}")


@app.command("search")
@handle_errors
def search(
    query: Path = typer.Argument(..., help="A system image, an audio excerpt, or a whole recording "
                                           "(cut into passages: one result list each)."),
    index_path: Path = typer.Option(..., "--index", help="Index file of 'umust retrieve index'."),
    k: int = typer.Option(10, "-k", "--top", min=1, help="Matches per query passage."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME|PATH",
                                        help=MODEL_HELP + " Must be the index's model."),
    window: float = typer.Option(8.0, "--window", min=0.5, help=WINDOW_HELP),
    hop: float = typer.Option(4.0, "--hop", min=0.1, help=HOP_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Rank the index's passages of the other modality by cosine distance to the query."""
    from umust_cli.retrieval import index as idx
    from umust_cli.retrieval.embed import load_retrieval_model, model_id

    index = idx.RetrievalIndex.load(index_path)
    if model is None and index.model.get("path") not in (None, "shipped"):  # "shipped:NAME" or a folder
        model = index.model["path"]
    net, fcfg, config = load_retrieval_model(model)
    if model_id(config) != index.model.get("id"):
        raise BadInputError(f"{index_path} was built with another model (id {index.model.get('id')}); "
                            "pass that model with --model or rebuild the index")
    kind, embs, queries = idx.embed_query(net, fcfg, require_file(query), idx.WindowConfig(window, hop))
    results = idx.search(index, embs, kind, k)
    if as_json:
        print_json({"query": str(query), "kind": kind,
                    "results": [{"query": q, "matches": m} for q, m in zip(queries, results)]})
        return
    for q, matches in zip(queries, results):
        where = f" {q['start']:.1f}-{q['end']:.1f} s" if "start" in q else ""
        typer.echo(f"{q['file']}{where}:")
        for m in matches:
            typer.echo(f"  {m['rank']:>3}  {m['distance']:.4f}  {_location(m)}")


def _location(entry: dict) -> str:
    parts = [entry.get("piece_id") or entry["file"]]
    if entry.get("page") is not None:
        parts.append(f"page {entry['page']}")
    if entry.get("system") is not None:
        parts.append(f"system {entry['system']}")
    if entry.get("measures"):
        parts.append(f"measures {entry['measures'][0]}-{entry['measures'][1]}")
    if entry.get("start") is not None:
        parts.append(f"{entry['start']:.1f}-{entry['end']:.1f} s")
    return ", ".join(parts)
