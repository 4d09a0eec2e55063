"""Helpers shared by every command group: error reporting and JSON output."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION_HELP = "Print machine-readable JSON on stdout instead of a table."


def fail(message: str, code: int) -> None:
    """Print one red line on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn umust's typed errors into one red line and exit 2 (bad input) or 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from umust_cli.errors import UmustError

        try:
            return func(*args, **kwargs)
        except UmustError as e:
            fail(str(e), e.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # an internal failure: still one line, exit 1
            fail(f"internal error: {type(e).__name__}: {e}", 1)

    return wrapper  # type: ignore[return-value]


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
