"""Helpers shared by every command group: error reporting and JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Any, Callable, Iterator, TypeVar

import typer
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from umust_cli.errors import BadInputError, UmustError
from umust_cli.io import Terminated, signals_as_exceptions

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION_HELP = "Print machine-readable JSON on stdout instead of a table."


def fail(message: str, code: int) -> None:
    """Print one red line on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn umust's typed errors into one red line and exit 2 (bad input) or 1.

    SIGTERM/SIGHUP become an exception while the command runs (so no temporary
    output file is left behind) and exit with 128 + the signal number.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_as_exceptions():
                return func(*args, **kwargs)
        except UmustError as e:
            fail(_one_line(str(e)), e.exit_code)
        except Terminated as e:
            fail(str(e), 128 + e.signum)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # an internal failure: still one line, exit 1
            fail(_one_line(f"internal error: {type(e).__name__}: {e}"), 1)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _usage_error_as_one_line() -> Iterator[None]:
    try:
        yield
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as before
            raise
        where = e.ctx.command_path if e.ctx is not None else "umust"
        fail(_one_line(f"{e.format_message()} (see '{where} --help')"), e.exit_code)


class OneLineUsageErrors(TyperGroup):
    """The root group: a usage error of any command (a missing argument, an option out of its
    range, an unknown option, a bad choice) is one red line and exit 2 instead of Click's box.
    Parsing of the root happens in ``make_context``, that of every subcommand in ``invoke``."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_error_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_error_as_one_line():
            return super().invoke(ctx)


def _one_line(message: str) -> str:
    """Messages of libraries can hold newlines; the error stays one line."""
    return " ".join(message.split())


PARTIAL_FAILURE_EXIT = 3  # a batch command that did some of its inputs and failed on others


def check_distinct_outputs(plan: list[tuple[str, list[str]]]) -> None:
    """``plan``: (input, the output paths it writes) per input. BadInputError naming the
    inputs when two would write the same output (one would silently overwrite the other)."""
    by_output: dict[str, list[str]] = {}
    for src, outs in plan:
        for out in outs:
            by_output.setdefault(out, []).append(src)
    clashes = [f"{' and '.join(srcs)} -> {out}" for out, srcs in by_output.items() if len(srcs) > 1]
    if clashes:
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise BadInputError(f"several inputs would write the same output: {'; '.join(clashes[:3])}{more}; "
                            f"rename them or run them into different folders")


def finish_batch(failed: list[dict], total: int, done: int, what: str = "files") -> None:
    """After a batch that kept going past bad inputs: one line naming the failures (the first
    five), exit 2 when nothing was ``done``, PARTIAL_FAILURE_EXIT when some inputs were.
    Nothing happens when none failed. ``failed`` rows hold ``input`` and ``error``."""
    if not failed:
        return
    listed = [f"{row['input']}: {row['error']}" for row in failed[:5]]
    more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
    code = 2 if done == 0 else PARTIAL_FAILURE_EXIT
    fail(_one_line(f"{len(failed)} of {total} {what} failed: {'; '.join(listed)}{more}"), code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def not_yet(group: str, issue: str) -> typer.Typer:
    """A command group whose commands do not exist yet: it says so and exits 1."""
    app = typer.Typer(help=f"{group} (not implemented yet: {issue}).", no_args_is_help=False)

    @app.callback(invoke_without_command=True)
    def _missing(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            fail(f"'umust {group}' has no commands yet ({issue})", 1)

    return app
