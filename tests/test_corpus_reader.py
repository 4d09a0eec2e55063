"""The one corpus reader: manifest rows, splits and the held-out check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from umust_cli.data import corpus
from umust_cli.errors import BadInputError, HeldOutRepertoireError, InputNotFoundError


def _row(piece: str, split: str, system: int = 0, source: str | None = None) -> dict:
    return {"piece_id": piece, "split": split, "system": system, "source": source or f"scores/{piece}.krn",
            "png": f"pieces/{piece}/systems/{system:03d}.png", "duration": 2.0}


def _corpus(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_rows_by_split_in_manifest_order(tmp_path):
    rows = [_row("b", "train"), _row("a", "test"), _row("a", "valid", 1), _row("c", "train", 2)]
    root = _corpus(tmp_path / "c", rows)
    assert corpus.read_manifest(root) == rows
    assert corpus.rows(root) == rows
    assert corpus.rows(root, []) == rows
    assert [r["piece_id"] for r in corpus.rows(root, ["train"])] == ["b", "c"]
    assert corpus.rows(root, ("valid", "test")) == rows[1:3]
    with pytest.raises(BadInputError, match="unknown split.*val.*choose from train, valid, test"):
        corpus.rows(root, ["val"])


def test_missing_folder_or_manifest(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such corpus folder"):
        corpus.read_manifest(tmp_path / "nope")
    with pytest.raises(InputNotFoundError, match="no manifest.jsonl.*umust dataset build"):
        corpus.rows(tmp_path)


def test_bad_json_line_is_named_as_file_and_line(tmp_path):
    root = _corpus(tmp_path, [_row("a", "train")])
    with open(root / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write("\n{not json\n")
    with pytest.raises(BadInputError, match=r"manifest.jsonl:3: not JSON"):
        corpus.read_manifest(root)
    (root / "manifest.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"manifest.jsonl:1: not a JSON object"):
        corpus.rows(root)


def test_a_build_in_progress_gives_its_finished_pieces(tmp_path):
    for piece, finished in (("a", True), ("b", False)):
        folder = tmp_path / "pieces" / piece
        folder.mkdir(parents=True)
        (folder / "rows.jsonl").write_text(json.dumps(_row(piece, "train")) + "\n", encoding="utf-8")
        if finished:
            (folder / "done").write_text("")
    assert [r["piece_id"] for r in corpus.rows(tmp_path)] == ["a"]
    with pytest.raises(InputNotFoundError):
        corpus.read_manifest(tmp_path)  # the manifest itself is still missing


def test_held_out_by_origin_not_by_the_corpus_path(tmp_path):
    assert corpus.is_held_out(_row("x", "test", source="kern/beethoven/sonata01-1.krn"))
    assert corpus.is_held_out(_row("x", "test", source="music21:beethoven/opus18no1"))
    assert not corpus.is_held_out(_row("x", "train", source="music21:bach/bwv66.6.mxl"))
    marked = dict(_row("x", "test", source="bpsd/Beethoven_Op002No1-01"), held_out=True)
    assert corpus.is_held_out(dict(marked, source="bpsd/op2"))  # an import's test-only row
    with pytest.raises(HeldOutRepertoireError, match="marked held_out"):
        corpus.check_training_rows([dict(marked, source="bpsd/op2")], tmp_path)
    # a corpus folder that happens to be called "beethoven" holds no held-out piece by that alone
    root = _corpus(tmp_path / "beethoven-study", [_row("a", "train")])
    corpus.check_training_rows(corpus.rows(root, ["train"]), root)


def test_check_training_rows_reads_the_composer_record(tmp_path):
    rows = [_row("ok", "train"), _row("hidden", "train", source="scores/op2.xml")]
    root = _corpus(tmp_path / "c", rows)
    score = root / "pieces" / "hidden" / "score.musicxml"
    score.parent.mkdir(parents=True)
    score.write_text('<score-partwise><identification><creator type="composer">Ludwig van Beethoven'
                     '</creator></identification></score-partwise>', encoding="utf-8")
    assert not corpus.is_held_out(rows[1])  # the row alone does not tell
    with pytest.raises(HeldOutRepertoireError, match="piece hidden.*composer record 'Ludwig van Beethoven'"):
        corpus.check_training_rows(rows, root)
    corpus.check_training_rows(rows[:1], root)
    with pytest.raises(HeldOutRepertoireError, match="in its path"):
        corpus.check_training_rows([_row("b", "train", source="beethoven/op2.krn")], root)
