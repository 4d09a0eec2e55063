"""`umust tokenize`: files <-> token sequences, one command per modality."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli.cli._common import JSON_OPTION_HELP, handle_errors, print_json

CODEC_HELP = "{} codec checkpoint folder (default: the one shipped in the package)."

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


@app.command("image")
@handle_errors
def image(
    files: list[Path] = typer.Argument(..., help="System images (.png), or code grids (.npy) with --decode."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the .npy code grids (or PNGs)."),
    codec_dir: Optional[Path] = typer.Option(None, "--codec", help=CODEC_HELP.format("image")),
    decode: bool = typer.Option(False, "--decode", help="Read .npy code grids and write PNGs."),
    shifts: bool = typer.Option(False, "--shifts", help="Also write the 32 shifted variants (STEM.sNN.npy)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Score images -> RQ-VAE codes as OUT/STEM.npy, or (--decode) code grids -> PNG.

    Each .npy holds one int16 array of shape (4, H/16, W/16): row k is codebook
    k, so the height in patches travels with the codes. The token sequence is
    `umust_cli.codecs.image.flatten` of it (columns left to right, top to bottom,
    4 codes per patch, local id k*1024 + code). Bad files are reported at the end.
    """
    from umust_cli.codecs.base import shipped_codec
    from umust_cli.codecs.image import ImageCodec
    from umust_cli.errors import BadInputError, UmustError

    codec = ImageCodec.load(codec_dir or shipped_codec("image"), device=device)
    results, failed = [], []
    for f in files:
        try:
            written = _image_decode(codec, f, output) if decode else _image_encode(codec, f, output, shifts)
            results.append({"input": str(f), "outputs": written})
        except (UmustError, ValueError, OSError) as e:
            failed.append({"input": str(f), "error": str(e)})
    if as_json:
        print_json({"done": results, "failed": failed})
    else:
        for r in results:
            typer.echo(f"{r['input']} -> {', '.join(r['outputs'])}")
    if failed:
        detail = "; ".join(f"{x['input']}: {x['error']}" for x in failed)
        raise BadInputError(f"{len(failed)} of {len(files)} files failed: {detail}")


def _image_encode(codec, src: Path, outdir: Path, shifts: bool) -> list[str]:
    import numpy as np

    from umust_cli.codecs.image import load_gray, shift_variants
    from umust_cli.io import atomic_path, require_file

    gray = load_gray(require_file(src))
    variants = shift_variants(gray) if shifts else [gray]
    written = []
    for n, img in enumerate(variants):
        dest = outdir / (f"{src.stem}.s{n:02d}.npy" if shifts else f"{src.stem}.npy")
        with atomic_path(dest) as tmp:
            np.save(tmp, codec.encode_grid(img).astype(np.int16))
        written.append(str(dest))
    return written


def _image_decode(codec, src: Path, outdir: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    from umust_cli.io import atomic_path, require_file

    grid = np.load(require_file(src), allow_pickle=False)
    dest = outdir / f"{src.stem}.png"
    img = codec.decode_grid(grid)
    with atomic_path(dest) as tmp:
        Image.fromarray(img).save(tmp)
    return [str(dest)]


# Audio code files: Code files: ``OUTDIR/<stem>.npy`` holds an int16 array of shape (4, frames):
# row k is codebook k, values in [0, 1024), one column per 512 samples at
# 44.1 kHz. The codec's local token ids are these codes frame by frame,
# ``k * 1024 + code`` (``umust_cli.codecs.audio.flatten``). ``--decode`` reads
# such files (or 1-D arrays of local ids) and writes ``OUTDIR/<stem>.wav``
# (44.1 kHz mono, 16-bit). ``--shifts`` also writes ``OUTDIR/<stem>.sNN.npy``
# for the 9 shift-augmentation variants (NN = 00..08 for -20..+20 samples).
@app.command("audio")
@handle_errors
def audio(
    files: List[Path] = typer.Argument(..., help="Sound files (WAV, FLAC, ...), or .npy code files with --decode."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: <stem>.npy per input (<stem>.wav with --decode)."),
    codec_dir: Optional[Path] = typer.Option(None, "--codec", help=CODEC_HELP.format("audio")),
    decode: bool = typer.Option(False, "--decode", help="Read .npy codes and write .wav files."),
    shifts: bool = typer.Option(False, "--shifts", help="Also write the 9 shifted variants as STEM.sNN.npy "
                                "(NN 00..08: shifts -20..+20 samples in steps of 5; s04 is unshifted)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Encode sound files to (4, frames) code arrays, or decode code arrays to audio.

    Every file is tried; failures are listed at the end and make the exit status 2.
    """
    from umust_cli.codecs.audio import AudioCodec
    from umust_cli.codecs.base import shipped_codec
    from umust_cli.errors import BadInputError

    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise BadInputError(f"several inputs would write the same output name: {', '.join(dupes)}")
    codec = AudioCodec.load(codec_dir or shipped_codec("audio"), device=device)
    done, failed = [], []
    for f in files:
        try:
            done.append(_audio_decode_one(codec, f, output) if decode else _audio_encode_one(codec, f, output, shifts))
        except BadInputError as e:
            failed.append({"input": str(f), "error": str(e)})
    _audio_report(done, failed, as_json)
    if failed:
        raise BadInputError(f"{len(failed)} of {len(files)} files failed")


def _audio_encode_one(codec, src: Path, outdir: Path, shifts: bool) -> dict:
    from umust_cli.codecs.audio import load_audio, shift_variants

    audio = load_audio(src)
    codes = codec.encode_codes(audio)  # (4, frames)
    dest = outdir / f"{src.stem}.npy"
    _audio_save_codes(dest, codes)
    variants = shift_variants(audio) if shifts else []
    for i, shifted in enumerate(variants):
        _audio_save_codes(outdir / f"{src.stem}.s{i:02d}.npy", codec.encode_codes(shifted))
    return {"input": str(src), "output": str(dest), "frames": int(codes.shape[1]),
            "tokens": int(codes.size), "shift_variants": len(variants)}


def _audio_save_codes(dest: Path, codes) -> None:
    import numpy as np

    from umust_cli.io import atomic_path

    with atomic_path(dest) as tmp:
        np.save(tmp, codes.astype(np.int16))


def _audio_decode_one(codec, src: Path, outdir: Path) -> dict:
    import numpy as np
    import soundfile

    from umust_cli.codecs.audio import SAMPLE_RATE, unflatten
    from umust_cli.errors import AudioError
    from umust_cli.io import atomic_path, require_file

    try:
        arr = np.load(require_file(src), allow_pickle=False)
        codes = unflatten(arr) if arr.ndim == 1 else arr
    except (OSError, ValueError) as e:
        raise AudioError(f"{src} is not a code array: {e}") from e
    audio = np.clip(codec.decode_codes(codes), -1.0, 1.0)
    dest = outdir / f"{src.stem}.wav"
    with atomic_path(dest) as tmp:
        soundfile.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {"input": str(src), "output": str(dest), "samples": int(audio.size),
            "seconds": round(audio.size / SAMPLE_RATE, 3)}


def _audio_report(done: list[dict], failed: list[dict], as_json: bool) -> None:
    if as_json:
        print_json({"ok": done, "failed": failed})
        return
    for row in done:
        size = f"{row['frames']} frames" if "frames" in row else f"{row['seconds']} s"
        typer.echo(f"{row['input']} -> {row['output']} ({size})")
    for row in failed:
        typer.secho(f"failed: {row['input']}: {row['error']}", fg=typer.colors.RED, err=True)
