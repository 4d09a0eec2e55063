"""The one table of shipped weights: names, defaults, paths and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from umust_cli import registry
from umust_cli.errors import CheckpointError

WEIGHTS = Path(registry.__file__).resolve().parent / "weights"


def test_every_registered_folder_is_shipped():
    for kind, table in registry.MODELS.items():
        assert registry.DEFAULTS[kind] in table
        for name, folder in table.items():
            assert (WEIGHTS / folder / "config.json").is_file(), (kind, name)
            assert (WEIGHTS / folder / "model.safetensors").is_file(), (kind, name)


def test_default_name_and_old_spellings_resolve_to_the_same_folder():
    default = registry.resolve("retrieval", None)
    assert default == WEIGHTS / "retrieval"
    assert registry.resolve("retrieval", "rendered") == default
    assert registry.resolve("retrieval", "shipped") == default
    assert registry.resolve("retrieval", "shipped:scans") == WEIGHTS / "retrieval-scans"
    assert registry.resolve("retrieval", "small") == WEIGHTS / "retrieval-small"
    assert registry.resolve("image-codec", None) == WEIGHTS / "image-codec"
    assert registry.resolve("audio-codec", "small") == WEIGHTS / "audio-codec"


def test_a_folder_path_is_returned_as_given(tmp_path):
    assert registry.resolve("retrieval", tmp_path) == tmp_path
    assert registry.resolve("image-codec", str(tmp_path)) == tmp_path


def test_unknown_name_or_missing_folder_names_the_available_models(tmp_path):
    with pytest.raises(CheckpointError, match="rendered, small, scans") as err:
        registry.resolve("retrieval", "big")
    assert "does not exist" in str(err.value)
    with pytest.raises(CheckpointError, match="shipped models: small"):
        registry.resolve("audio-codec", tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder"):
        registry.resolve("audio-codec", tmp_path / "file")
    with pytest.raises(CheckpointError):
        registry.resolve("retrieval", "shipped:big")


def test_available_lists_the_default_first_and_unknown_kind_is_a_bug():
    assert registry.available("retrieval") == ["rendered", "small", "scans"]
    assert registry.available("image-codec") == ["small"]
    assert registry.describe("retrieval") == "rendered (default), small, scans"
    with pytest.raises(ValueError, match="unknown kind"):
        registry.available("translator")


def test_shipped_name_for_reports(tmp_path):
    assert registry.shipped_name("retrieval", None) == "rendered"
    assert registry.shipped_name("retrieval", "shipped:small") == "small"
    assert registry.shipped_name("retrieval", WEIGHTS / "retrieval-scans") == "scans"
    assert registry.shipped_name("retrieval", tmp_path) is None
    assert registry.shipped_name("image-codec", WEIGHTS / "retrieval") is None


def test_the_registry_does_not_import_torch():
    code = "import sys, umust_cli.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
