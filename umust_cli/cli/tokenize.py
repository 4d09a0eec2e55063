"""`umust tokenize`: files <-> token sequences, one command per modality."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from umust_cli import registry
from umust_cli.cli._common import JSON_OPTION_HELP, check_distinct_outputs, finish_batch, handle_errors, print_json
from umust_cli.errors import AudioError, BadInputError, ImageError, MidiError
from umust_cli.io import atomic_path, write_text_atomic

CODEC_HELP = "A shipped {} codec ({}) or a checkpoint folder."

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
    from umust_cli.inputs import load_lmx, require_score

    codec = NotationCodec(flavor=flavor)
    if decode:
        if output is None:
            raise BadInputError("--decode needs -o OUT.musicxml")
        write_text_atomic(output, codec.from_lmx(load_lmx(file)))
        _report(as_json, {"input": str(file), "output": str(output)}, f"wrote {output}")
        return
    src = require_score(file)
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
    import math

    from umust_cli.codecs.midi import MidiCodec, segments_to_text
    from umust_cli.inputs import load_midi

    codec = MidiCodec()
    if decode:
        if output is None:
            raise BadInputError("--decode needs -o OUT.mid")
        _midi_decode(codec, file, output)
        _report(as_json, {"input": str(file), "output": str(output)}, f"wrote {output}")
        return
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise BadInputError(f"--max-seconds must be a positive number of seconds, got {max_seconds}")
    if max_tokens is not None and max_tokens < 1:
        raise BadInputError(f"--max-tokens must be at least 1, got {max_tokens}")
    segments = codec.encode_segments(load_midi(file), max_seconds=max_seconds, max_tokens=max_tokens)
    text = segments_to_text(codec, segments)
    if output is not None:
        write_text_atomic(output, text)
    if as_json:
        print_json({"input": str(file), "output": str(output) if output else None,
                    "segments": [{"start": s.start, "end": s.end, "ids": s.ids} for s in segments]})
    elif output is None:
        typer.echo(text, nl=False)


def _midi_decode(codec, src: Path, output: Path) -> None:
    """Token text -> .mid; MidiError for text without notes or past MAX_MIDI_SECONDS."""
    from umust_cli.codecs.midi import text_to_segments
    from umust_cli.inputs import MAX_MIDI_SECONDS, load_text

    segments = text_to_segments(codec, load_text(src, "token file", error=MidiError))
    end = max((s.end for s in segments), default=0.0)
    if end > MAX_MIDI_SECONDS:
        raise MidiError(f"{src}: segments reach {end:.0f} s; the limit is {MAX_MIDI_SECONDS:.0f} s")
    pm = codec.decode_segments(segments)
    if not any(inst.notes for inst in pm.instruments):
        raise MidiError(f"{src}: the tokens hold no notes; nothing to write")
    with atomic_path(output) as tmp:
        pm.write(str(tmp))


def _report(as_json: bool, obj: dict, line: str) -> None:
    if as_json:
        print_json(obj)
    else:
        typer.echo(line)


# Batch commands (image, audio): every input is tried, failures are listed at the end in one
# line (exit 2 when all failed, 3 when some did); both print the same JSON:
# {"done": [{"input", "output", "variants": [...], <sizes>}], "failed": [{"input", "error"}]}.
@app.command("image")
@handle_errors
def image(
    files: List[Path] = typer.Argument(..., help="System images (.png), or code grids (.npy) with --decode."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the .npy code grids (or PNGs)."),
    codec_dir: Optional[str] = typer.Option(None, "--codec", metavar="NAME|PATH",
                                            help=CODEC_HELP.format("image", registry.describe("image-codec"))),
    decode: bool = typer.Option(False, "--decode", help="Read .npy code grids and write PNGs."),
    shifts: bool = typer.Option(False, "--shifts", help="Also write the 32 shifted variants (STEM.sNN.npy)."),
    rescale: bool = typer.Option(True, "--rescale/--no-rescale",
                                 help="Resize to the codec's staff spacing first (an image without "
                                      "staff lines is an error); --no-rescale encodes the pixels as they are."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Score images -> RQ-VAE codes as OUT/STEM.npy, or (--decode) code grids -> PNG.

    Each image is first resized so that its staff lines are as far apart as in the
    codec's training images (measured by run lengths). Each .npy holds one int16
    array of shape (4, H/16, W/16) of the resized image: row k is codebook k, so the
    height in patches travels with the codes; STEM.json beside it holds the factor
    ("scale") and the input's [H, W] ("size"), which --decode returns to. The token
    sequence is `umust_cli.codecs.image.flatten` of it (columns left to right, top to
    bottom, 4 codes per patch, local id k*1024 + code). Every file is tried; failures are
    listed at the end (exit status 2 when all failed, 3 when some did).
    """
    from umust_cli.codecs.image import SHIFTS_X, SHIFTS_Y, ImageCodec

    names = _plan(files, output, ".png" if decode else ".npy", 0 if decode or not shifts else SHIFTS_X * SHIFTS_Y)
    codec = ImageCodec.load(registry.resolve("image-codec", codec_dir), device=device)
    one = (lambda f, outs: _image_decode(codec, f, outs)) if decode else \
        (lambda f, outs: _image_encode(codec, f, outs, rescale))
    _run_batch(names, one, as_json)


# Audio code files: ``OUTDIR/<stem>.npy`` holds an int16 array of shape (4, frames):
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
    codec_dir: Optional[str] = typer.Option(None, "--codec", metavar="NAME|PATH",
                                            help=CODEC_HELP.format("audio", registry.describe("audio-codec"))),
    decode: bool = typer.Option(False, "--decode", help="Read .npy codes and write .wav files."),
    shifts: bool = typer.Option(False, "--shifts", help="Also write the 9 shifted variants as STEM.sNN.npy "
                                "(NN 00..08: shifts -20..+20 samples in steps of 5; s04 is unshifted)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help=JSON_OPTION_HELP),
) -> None:
    """Encode sound files to (4, frames) code arrays, or decode code arrays to audio.

    Every file is tried; failures are listed at the end (exit status 2 when all
    failed, 3 when some did).
    """
    from umust_cli.codecs.audio import SHIFTS, AudioCodec

    names = _plan(files, output, ".wav" if decode else ".npy", 0 if decode or not shifts else len(SHIFTS))
    codec = AudioCodec.load(registry.resolve("audio-codec", codec_dir), device=device)
    one = (lambda f, outs: _audio_decode_one(codec, f, outs)) if decode else \
        (lambda f, outs: _audio_encode_one(codec, f, outs))
    _run_batch(names, one, as_json)


def _plan(files: list[Path], outdir: Path, suffix: str, variants: int) -> list[tuple[Path, list[Path]]]:
    """(input, [main output, shift variants...]) per input; BadInputError when the output folder
    is a file or two inputs would write the same output (same stem from two folders)."""
    if outdir.exists() and not outdir.is_dir():
        raise BadInputError(f"-o {outdir} is a file; give a folder for the outputs")
    plan = [(f, [outdir / f"{f.stem}{suffix}"] + [outdir / f"{f.stem}.s{i:02d}{suffix}" for i in range(variants)])
            for f in files]
    check_distinct_outputs([(str(f), [str(o) for o in outs]) for f, outs in plan])
    return plan


def _run_batch(plan: list[tuple[Path, list[Path]]], one, as_json: bool) -> None:
    """Try every input; report done ones (stdout) and end with one line for the failures."""
    done, failed = [], []
    for src, outs in plan:
        try:
            row = one(src, outs)
            done.append({"input": str(src), "output": str(outs[0]), "variants": [str(o) for o in outs[1:]], **row})
        except BadInputError as e:
            failed.append({"input": str(src), "error": str(e)})
    if as_json:
        print_json({"done": done, "failed": failed})
    else:
        for row in done:
            more = f" + {len(row['variants'])} shifted variants" if row["variants"] else ""
            typer.echo(f"{row['input']} -> {row['output']} ({row['summary']}){more}")
    finish_batch(failed, len(plan), len(done))


def _image_encode(codec, src: Path, outs: list[Path], rescale: bool) -> dict:
    import json

    import numpy as np

    from umust_cli.codecs.image import grid_of
    from umust_cli.inputs import MAX_SYSTEM_PIXELS, load_image

    gray = load_image(src, max_pixels=MAX_SYSTEM_PIXELS)
    variants = codec.encode_variants(gray, shifts=len(outs) > 1, rescale=rescale)
    variants = variants[:1] + variants if len(outs) > 1 else variants  # STEM.npy, then s00 (= it) .. s31
    for dest, codes in zip(outs, variants):
        _save_codes(dest, grid_of(codes))
    main = variants[0]
    write_text_atomic(outs[0].with_suffix(".json"),
                      json.dumps({"scale": main.scale, "size": list(main.size)}) + "\n")
    shape = [4, *main.shape]
    return {"shape": shape, "tokens": int(np.prod(shape)), "scale": round(main.scale, 4),
            "summary": f"{shape[1]} x {shape[2]} patches, scale {main.scale:.3f}"}


def _image_decode(codec, src: Path, outs: list[Path]) -> dict:
    from PIL import Image

    from umust_cli.codecs.image import PATCH
    from umust_cli.codecs.vocab import CODEBOOK_SIZE, NUM_CODEBOOKS
    from umust_cli.inputs import MAX_SYSTEM_PIXELS, check_pixels, load_codes

    grid = load_codes(src, ndim=(3,), high=CODEBOOK_SIZE)
    if grid.shape[0] != NUM_CODEBOOKS:
        raise ImageError(f"{src} has shape {grid.shape}; expected ({NUM_CODEBOOKS}, H/16, W/16) codes")
    check_pixels(grid.shape[1] * PATCH, grid.shape[2] * PATCH, f"decoded from {src}", MAX_SYSTEM_PIXELS)
    img = codec.decode(_image_codes(grid, src.with_suffix(".json")))
    with atomic_path(outs[0]) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return {"shape": [int(n) for n in img.shape], "summary": f"{img.shape[1]} x {img.shape[0]} px"}


def _image_codes(grid, meta: Path):
    """Codes of a code grid with the scale and size of its STEM.json (if there is one)."""
    import json

    from umust_cli.codecs.image import codes_of
    from umust_cli.inputs import MAX_SYSTEM_PIXELS, check_pixels, load_text

    if not meta.is_file():
        return codes_of(grid)
    try:
        record = json.loads(load_text(meta, "code metadata"))
        scale, size = float(record["scale"]), [int(n) for n in record["size"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{meta} is not the scale/size record of a code grid: {e}") from e
    if not (0.05 < scale < 20 and len(size) == 2 and min(size) > 0):
        raise ImageError(f"{meta}: scale {scale} or size {size} is out of range")
    check_pixels(size[0], size[1], f"decoded from {meta}", MAX_SYSTEM_PIXELS)
    return codes_of(grid, scale, size)


def _audio_encode_one(codec, src: Path, outs: list[Path]) -> dict:
    from umust_cli.codecs.audio import SAMPLE_RATE, shift_variants
    from umust_cli.inputs import load_audio

    samples, _ = load_audio(src, SAMPLE_RATE)
    variants = [samples] + (shift_variants(samples) if len(outs) > 1 else [])
    for dest, x in zip(outs, variants):
        codes = codec.encode_codes(x)  # (4, frames)
        _save_codes(dest, codes)
        if dest is outs[0]:
            shape = [int(n) for n in codes.shape]
    return {"shape": shape, "tokens": shape[0] * shape[1], "summary": f"{shape[1]} frames"}


def _audio_decode_one(codec, src: Path, outs: list[Path]) -> dict:
    import numpy as np
    import soundfile

    from umust_cli.codecs.audio import HOP, SAMPLE_RATE, unflatten
    from umust_cli.codecs.vocab import CODEBOOK_SIZE, NUM_CODEBOOKS
    from umust_cli.inputs import MAX_AUDIO_SECONDS, load_codes

    arr = load_codes(src, ndim=(1, 2))
    if arr.ndim == 1:  # local ids k * 1024 + code
        try:
            arr = unflatten(arr)
        except ValueError as e:
            raise AudioError(f"{src} is not a sequence of audio token ids: {e}") from e
    if arr.shape[0] != NUM_CODEBOOKS or arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise AudioError(f"{src} is not a ({NUM_CODEBOOKS}, frames) array of codes in [0, {CODEBOOK_SIZE})")
    seconds = arr.shape[1] * HOP / SAMPLE_RATE
    if seconds > MAX_AUDIO_SECONDS:
        raise AudioError(f"{src} would decode to {seconds:.0f} s of audio; the limit is {MAX_AUDIO_SECONDS:.0f} s")
    audio = np.clip(codec.decode_codes(arr), -1.0, 1.0)
    with atomic_path(outs[0]) as tmp:
        soundfile.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {"shape": [int(audio.size)], "summary": f"{audio.size / SAMPLE_RATE:.3f} s"}


def _save_codes(dest: Path, codes) -> None:
    import numpy as np

    with atomic_path(dest) as tmp:
        np.save(tmp, codes.astype(np.int16))
