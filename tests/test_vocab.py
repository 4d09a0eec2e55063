"""Unified vocabulary: layout, conversion, persistence and mismatch errors."""

from __future__ import annotations

import json

import pytest

from umust_cli.codecs.base import MODALITIES
from umust_cli.codecs.vocab import CODEBOOK_SIZE, NUM_CODEBOOKS, PAD, SEP, Vocabulary
from umust_cli.errors import CheckpointError, VocabularyMismatchError


def small() -> Vocabulary:
    return Vocabulary(notation=("measure", "G4", "quarter"), midi=("shift:0", "pitch:60", "eos"))


def test_ranges_are_disjoint_and_cover_everything():
    v = small()
    seen = {PAD, SEP}
    for m in MODALITIES:
        seen |= {v.sos(m), v.eos(m)}
    assert seen == set(range(10))
    for m in MODALITIES:
        r = set(v.range(m))
        assert not r & seen
        seen |= r
    assert seen == set(range(len(v)))
    assert len(v.range("image")) == len(v.range("audio")) == NUM_CODEBOOKS * CODEBOOK_SIZE


def test_global_local_round_trip_and_names():
    v = small()
    g = v.to_global("midi", [0, 1, 2])
    assert v.to_local("midi", g) == [0, 1, 2]
    assert [v.name(i) for i in g] == ["shift:0", "pitch:60", "eos"]
    assert v.name(v.offset("image") + 1024 + 5) == "img:q1:5"
    wrapped = v.wrap("notation", [2, 0])
    assert wrapped[0] == v.sos("notation") and wrapped[-1] == v.eos("notation")
    assert [v.name(i) for i in wrapped[1:-1]] == ["quarter", "measure"]


def test_out_of_range_ids_are_rejected():
    v = small()
    with pytest.raises(ValueError):
        v.to_global("notation", [3])
    with pytest.raises(ValueError):
        v.to_local("notation", [v.offset("midi")])


def test_save_load_round_trip(tmp_path):
    v = small()
    v.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == v and loaded.fingerprint() == v.fingerprint()
    loaded.check_matches(v)


def test_mismatch_and_malformed_are_clear_errors(tmp_path):
    other = Vocabulary(notation=("measure", "G4", "half"), midi=small().midi)
    with pytest.raises(VocabularyMismatchError, match="notation"):
        small().check_matches(other)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    payload = small().to_json()
    del payload["midi"]
    (tmp_path / "partial.json").write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="malformed"):
        Vocabulary.load(tmp_path / "partial.json")
    with pytest.raises(CheckpointError, match="no vocabulary"):
        Vocabulary.load(tmp_path / "missing.json")


def test_default_vocabulary_holds_every_codec_token():
    from umust_cli.codecs.midi import MidiCodec
    from umust_cli.codecs.notation import NotationCodec
    from umust_cli.codecs.vocab import default_vocabulary

    v = default_vocabulary()
    notation, midi = NotationCodec(), MidiCodec()
    assert len(v.range("notation")) == notation.vocab_size
    assert len(v.range("midi")) == midi.vocab_size
    lmx_ids = [notation.token_names().index(t) for t in ("measure", "G4", "quarter")]
    assert [v.name(i) for i in v.to_global("notation", lmx_ids)] == ["measure", "G4", "quarter"]
    assert v.name(v.to_global("midi", [midi.token_id("pitch:60")])[0]) == "pitch:60"
    assert len(v) == 10 + 2 * 4096 + notation.vocab_size + midi.vocab_size
