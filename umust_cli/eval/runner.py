"""Looping over examples: a progress bar, and (in corpus mode) going on past a bad file.

With ``keep_going`` a failing example (unreadable file, empty reference,
transcriber crash) is recorded in ``failed`` and the loop goes on; the result
then reports it at the end. Without it the first error is raised (explicit
file lists: the user named the file, so it is their input at fault).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")


@dataclass
class RunLog:
    """Options of one evaluation loop and the examples that failed in it."""

    keep_going: bool = False
    progress: bool = False
    failed: list[dict] = field(default_factory=list)

    def each(self, items: Sequence[T], label: str) -> Iterator[T]:
        """``items`` with a progress bar on stderr when ``progress`` (stdout stays clean for --json)."""
        if not self.progress or len(items) < 2:
            yield from items
            return
        from tqdm import tqdm

        yield from tqdm(items, desc=label, unit="ex", file=sys.stderr, dynamic_ncols=True)

    @contextlib.contextmanager
    def guard(self, name: str, *paths: object) -> Iterator[None]:
        """Run one example; with ``keep_going`` record its error instead of raising."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            if not self.keep_going:
                raise
            self.failed.append({"name": name, "files": [str(p) for p in paths],
                                "error": f"{type(e).__name__}: {e}"})


def progress_default() -> bool:
    """A progress bar when stderr is a terminal."""
    return sys.stderr.isatty()
