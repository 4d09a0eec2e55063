"""Atomic writes leave no partial file behind."""

from __future__ import annotations

import pytest

from umust_cli.io import atomic_path, write_text_atomic


def test_atomic_write_replaces_on_success(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    write_text_atomic(dest, "first")
    write_text_atomic(dest, "second")
    assert dest.read_text() == "second"
    assert [p.name for p in dest.parent.iterdir()] == ["out.txt"]


def test_failure_leaves_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "out.wav"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            assert tmp.suffix == ".wav" and tmp.parent == tmp_path
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_atomic_write_uses_the_usual_file_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_a_folder_or_a_file_in_the_way_is_bad_input(tmp_path):
    from umust_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="is a folder"):
        write_text_atomic(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="in the way"):
        write_text_atomic(tmp_path / "file" / "out.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_sigterm_inside_the_block_removes_the_temporary_file(tmp_path):
    import os
    import signal

    from umust_cli.io import Terminated, signals_as_exceptions

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as info:
        with signals_as_exceptions(), atomic_path(tmp_path / "out.npy") as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM and str(info.value) == "terminated by SIGTERM"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the old handler is back
