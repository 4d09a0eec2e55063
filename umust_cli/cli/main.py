"""`umust`: the top-level command. Each group lives in its own module."""

from __future__ import annotations

import typer

from umust_cli import __version__
from umust_cli.cli._common import OneLineUsageErrors
from umust_cli.cli import dataset, eval as eval_cmd, retrieve, tokenize, train, translate

app = typer.Typer(
    name="umust",
    cls=OneLineUsageErrors,
    help="Translate music between score images, notation (LMX), performance MIDI and audio.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tokenize.app, name="tokenize")
app.add_typer(train.app, name="train")
app.command("translate")(translate.translate)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(dataset.app, name="dataset")
app.add_typer(retrieve.app, name="retrieve")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"umust {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Translate music between score images, notation (LMX), performance MIDI and audio."""


def run() -> None:
    app()
