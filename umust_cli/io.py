"""Small file helpers: atomic writes so that a failure leaves no partial file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

from umust_cli.errors import BadInputError, InputNotFoundError

TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """A terminating signal (SIGTERM, SIGHUP) arrived; raised so that ``finally`` blocks run.

    A BaseException like KeyboardInterrupt: ``except Exception`` in a batch loop
    does not swallow it. ``signum`` is the signal; the CLI exits with 128 + signum.
    """

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in this process (so
    ``atomic_path`` removes its temporary file); other processes (forked workers) keep the
    default action. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if os.getpid() != owner:  # a forked worker inherited the handler: die as usual
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    The temporary name keeps ``dest``'s suffix so that libraries which pick a
    format from the extension (soundfile, PIL, pretty_midi) still work.
    On any exception (and on SIGTERM inside :func:`signals_as_exceptions`, which
    every CLI command runs in) the temporary file is removed and ``dest`` is untouched.
    A ``dest`` that is a folder, or whose folder cannot be made or written, is a BadInputError.
    """
    dest = Path(dest)
    tmp_path = None
    try:
        tmp_path = _make_temp(dest)
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _make_temp(dest: Path) -> Path:
    """An empty file with the usual mode beside ``dest``; BadInputError where none can be made."""
    if dest.is_dir():
        raise BadInputError(f"output {dest} is a folder; give a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    except (FileExistsError, NotADirectoryError) as e:
        raise BadInputError(f"cannot write {dest}: a file is in the way of its folder ({e.filename})") from e
    except OSError as e:  # permission denied, read-only file system, no space
        raise BadInputError(f"cannot write {dest}: {e.strerror or e}") from e
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_jsonl_atomic(dest: str | os.PathLike, rows: Iterable[object]) -> None:
    """One JSON object a line (keys sorted), written atomically: the manifests and logs of corpora."""
    write_text_atomic(dest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_json_atomic(dest: str | os.PathLike, obj: object) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, raising InputNotFoundError if it is not a file."""
    p = Path(path)
    if p.is_dir():
        raise BadInputError(f"{p} is a folder, expected a file")
    if not p.is_file():
        raise InputNotFoundError(f"no such file: {p}")
    return p
