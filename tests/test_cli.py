"""The CLI frame: groups, error mapping, fast imports, generated docs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from umust_cli.cli._common import handle_errors
from umust_cli.cli.main import app
from umust_cli.errors import AudioError, RenderError

from .conftest import REPO

runner = CliRunner()


def test_help_lists_every_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("tokenize", "train", "translate", "eval", "dataset"):
        assert group in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("umust ")


def test_translate_without_inputs_says_what_is_missing():
    result = runner.invoke(app, ["translate"])
    assert result.exit_code == 2 and "Missing option '-o'" in result.output
    result = runner.invoke(app, ["translate", "-o", "out.wav"])
    assert result.exit_code == 2 and "give INPUTS" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_import_stays_light():
    code = ("import sys, umust_cli.cli.main; "
            "print(','.join(m for m in ('torch','verovio','music21','librosa','pretty_midi','dac',"
            "'fluidsynth','lmx','mir_eval','scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at CLI start-up: {out.stdout}"


def _app_raising(exc: Exception) -> typer.Typer:
    demo = typer.Typer()

    @demo.command()
    @handle_errors
    def go() -> None:
        raise exc

    return demo


def test_bad_input_is_one_line_exit_2():
    result = runner.invoke(_app_raising(AudioError("clip.wav is silent")), [])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: clip.wav is silent"]


def test_internal_failure_exit_1():
    assert runner.invoke(_app_raising(RenderError("verovio crashed")), []).exit_code == 1
    result = runner.invoke(_app_raising(ZeroDivisionError("boom")), [])
    assert result.exit_code == 1 and "internal error: ZeroDivisionError" in result.output


def test_a_message_with_newlines_is_still_one_line():
    result = runner.invoke(_app_raising(RuntimeError("size mismatch for a\n\tsize mismatch for b")), [])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: internal error: RuntimeError: size mismatch for a size mismatch for b"]


def test_man_pages_and_completions_are_current():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "gen_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + "\nregenerate with: python tools/gen_docs.py"


def test_man_page_documents_every_command_and_option():
    from umust_cli.cli._docs import command_tree, man_pages

    tree = command_tree()
    pages = man_pages(tree)
    assert set(pages) == {"umust.1"} | {f"umust-{g.path[-1]}.1" for g in tree.subcommands}
    tokenize = pages["umust-tokenize.1"]
    assert '.SS "umust tokenize notation"' in tokenize
    assert "\\fB\\-\\-decode\\fR" in tokenize


def _bash_complete(words: list[str]) -> list[str]:
    script = REPO / "completions" / "umust.bash"
    quoted = " ".join(f"'{w}'" for w in words)
    cmd = (f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
           "_umust; printf '%s\\n' \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.split()


def test_bash_completion_completes_groups_commands_and_options():
    assert _bash_complete(["umust", "tok"]) == ["tokenize"]
    assert _bash_complete(["umust", "tokenize", ""]) == ["audio", "image", "midi", "notation"]
    assert _bash_complete(["umust", "tokenize", "midi", "x.mid", "--max"]) == ["--max-seconds", "--max-tokens"]


@pytest.mark.parametrize("command", ["key-reader", "pitch-reader", "note-reader"])
def test_reader_trainers_option_defaults_are_their_train_configs(command):
    """`umust train key-reader|pitch-reader|note-reader` write their defaults in the options (help shows them
    without importing torch); each must be the TrainConfig's own, or a run started without an
    option would not be the documented default."""
    from dataclasses import asdict

    from typer.main import get_command

    from umust_cli.train import key_reader, note_reader, pitch_reader

    cfg = {"key-reader": key_reader.TrainConfig, "pitch-reader": pitch_reader.TrainConfig,
           "note-reader": note_reader.TrainConfig}[command]()
    fields = {**asdict(cfg.model), **{k: v for k, v in asdict(cfg).items() if k != "model"}}
    fields["target"], fields["no_scans"] = fields.get("ctc_target"), not getattr(cfg, "scans", True)
    options = {p.name: p.default for p in get_command(app).commands["train"].commands[command].params}
    shared = sorted(set(options) & set(fields))
    expected = {"batch_size", "lr", "warmup_steps", "decay_steps", "channels", "seed"}
    expected |= {"crop_seconds", "hidden", "precision", "onset_threshold"} if command == "note-reader" else {"no_scans"}
    assert expected <= set(shared)
    assert {k: options[k] for k in shared} == {k: fields[k] for k in shared}
