"""`umust tokenize`: files <-> token sequences, one command per modality."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors, print_json

app = typer.Typer(help="Turn files into tokens and tokens back into files.", no_args_is_help=True)


@app.command("notation")
@handle_errors
def notation(
    file: Path = typer.Argument(..., help="MusicXML/.mxl/kern/MEI score, or an .lmx file with --decode."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write an .lmx file (version/flavor header, ---, tokens) or, with --decode, the .musicxml."),
    decode: bool = typer.Option(False, "--decode", help="Read LMX tokens and write MusicXML."),
    flavor: str = typer.Option("core", "--flavor", help="LMX flavor: core or extended."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Print a score's LMX tokens, or (--decode) turn LMX back into MusicXML."""
    from umust_cli.codecs.notation import NotationCodec, lmx_file_text
    from umust_cli.errors import BadInputError
    from umust_cli.io import require_file, write_text_atomic

    codec = NotationCodec(flavor=flavor)
    src = require_file(file)
    if decode:
        if output is None:
            raise BadInputError("--decode needs -o OUT.musicxml")
        write_text_atomic(output, codec.from_lmx(src.read_text(encoding="utf-8")))
        _report(as_json, {"input": str(src), "output": str(output)}, f"wrote {output}")
        return
    lmx = codec.to_lmx(src)
    if output is not None:
        write_text_atomic(output, lmx_file_text(lmx, flavor))
    if as_json:
        print_json({"input": str(src), "output": str(output) if output else None,
                    "flavor": flavor, "tokens": lmx.split()})
    elif output is None:
        typer.echo(lmx)


@app.command("midi")
@handle_errors
def midi(
    file: Path = typer.Argument(..., help="A .mid file, or a token text file with --decode."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write the token text (or, with --decode, the .mid) here."),
    decode: bool = typer.Option(False, "--decode", help="Read MIDI event tokens and write a .mid file."),
    max_seconds: float = typer.Option(10.0, "--max-seconds", help="Longest segment in seconds."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most tokens per segment."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Print a performance's MT3-style event tokens (one segment a line), or decode them."""
    from umust_cli.codecs.midi import MidiCodec, segments_to_text, text_to_segments
    from umust_cli.errors import BadInputError
    from umust_cli.io import atomic_path, require_file

    codec = MidiCodec()
    src = require_file(file)
    if decode:
        if output is None:
            raise BadInputError("--decode needs -o OUT.mid")
        pm = codec.decode_segments(text_to_segments(codec, src.read_text(encoding="utf-8")))
        with atomic_path(output) as tmp:
            pm.write(str(tmp))
        _report(as_json, {"input": str(src), "output": str(output)}, f"wrote {output}")
        return
    segments = codec.encode_segments(src, max_seconds=max_seconds, max_tokens=max_tokens)
    text = segments_to_text(codec, segments)
    if output is not None:
        with atomic_path(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if as_json:
        print_json({"input": str(src), "output": str(output) if output else None,
                    "segments": [{"start": s.start, "end": s.end, "ids": s.ids} for s in segments]})
    elif output is None:
        typer.echo(text, nl=False)


def _report(as_json: bool, obj: dict, line: str) -> None:
    if as_json:
        print_json(obj)
    else:
        typer.echo(line)
