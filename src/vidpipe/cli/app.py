"""The `vidpipe` command: a thin layer that turns options into typed settings and calls the library.

A user error prints one line `error: …` and exits with the code of its class in `vidpipe.errors`.
"""

from __future__ import annotations

import json
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.logging import RichHandler

from ..errors import UsageError, VidpipeError
from ..media.encoders import PRESETS, EncoderOptions
from ..media.reader import ReaderOptions
from ..media.writer import WriterOptions
from ..runtime.pipeline import RunOptions, run
from ..stages.base import Stage
from ..stages.interpolate import SCENE_CUT_MODES, Interpolate
from ..stages.pad import Pad
from ..stages.resize import METHODS, Resize, parse_size
from ..stages.upscale import Upscale
from .cuts_cmd import app as cuts_app
from .eval_cmd import app as eval_app
from .models_cmd import app as models_app
from .monitor_cmd import app as monitor_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run AI models over video: streaming, exact timestamps, every stream kept.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to docs/benchmarks.md).")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
log = logging.getLogger("vidpipe")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    root = logging.getLogger("vidpipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise UsageError(f"invalid {what} {value!r}; valid: {', '.join(valid)}")
    return value


def _rate(value: str) -> Fraction:
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"invalid frame rate {value!r}; expected e.g. 60, 59.94 or 60000/1001") from None
    if rate <= 0:
        raise UsageError(f"frame rate must be > 0, got {value}")
    return rate


def _tile(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UsageError(f"invalid tile {value!r}; valid: auto, 0 (whole frames) or a size in pixels")
    return int(value)


@app.command("run")
def run_cmd(
    input: Annotated[Path, typer.Argument(help="input video file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="output file (.mp4 .mkv .mov .webm …)")],
    upscale: Annotated[str | None, typer.Option(help="SR model: registry name, imported name or weights file")] = None,
    outscale: Annotated[float | None, typer.Option(help="final scale after the model (default: the model's)")] = None,
    tile: Annotated[str, typer.Option(help="auto | 0 (whole frames) | N px tiles")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | fp16 | bf16 | fp32 (auto: fp16 on CUDA, fp32 on CPU)")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile model stages (GPU; warm-up first)")] = False,
    interpolate: Annotated[str | None, typer.Option(help="RIFE model: rife-hdv3 | rife-4.6 | … | weights file")] = None,
    fps: Annotated[str | None, typer.Option(help="target frame rate for --interpolate, e.g. 60 or 60000/1001")] = None,
    multi: Annotated[int | None, typer.Option(min=2, help="frame-rate multiplier for --interpolate")] = None,
    scene_cut: Annotated[str, typer.Option(help="fill | blend: what replaces synthesis across a cut")] = "fill",
    order: Annotated[str, typer.Option(help="upscale,interpolate | interpolate,upscale")] = "upscale,interpolate",
    resize: Annotated[str | None, typer.Option(help="resize to WxH (one side may be -1)")] = None,
    resize_method: Annotated[str, typer.Option(help="bicubic | bilinear | area")] = "bicubic",
    pad: Annotated[int | None, typer.Option(help="pad frames to a multiple of N (cropped back on output)")] = None,
    encoder: Annotated[str, typer.Option(help="auto | " + " | ".join(PRESETS[1:]))] = "auto",
    crf: Annotated[int | None, typer.Option(help="quality for crf encoders (lower is better)")] = None,
    speed: Annotated[str | None, typer.Option(help="encoder speed preset (x264/x265 names, SVT-AV1 0-13)")] = None,
    bit_depth: Annotated[int | None, typer.Option(help="force output bit depth: 8 or 10")] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="lossless encoding (h264, hevc, vp9)")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="frames per batch")] = 8,
    hwaccel: Annotated[str, typer.Option(help="none | auto | cuda (NVDEC decode)")] = "none",
    on_corrupt: Annotated[str, typer.Option(help="fail | skip damaged frames (counted in the manifest)")] = "fail",
    copy_streams: Annotated[bool, typer.Option(help="copy audio/subtitles/attachments/chapters")] = True,
    progress: Annotated[str, typer.Option(help="bar | json | none")] = "bar",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, warnings only")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Decode INPUT, run the chosen stages, encode to OUTPUT with every other stream copied."""
    _setup_logging(quiet, verbose)
    stages: list[Stage] = []
    if pad is not None:
        stages.append(Pad(pad))
    models: dict[str, Stage] = {}
    if upscale is not None:
        models["upscale"] = Upscale(upscale, outscale=outscale, tile=_tile(tile), dtype=dtype, compile=compile)
    if interpolate is not None:
        if (fps is None) == (multi is None):
            raise UsageError("--interpolate needs exactly one of --fps or --multi")
        models["interpolate"] = Interpolate(
            interpolate,
            fps=_rate(fps) if fps else None,
            multi=multi,
            scene_cut=_choice(scene_cut, SCENE_CUT_MODES, "--scene-cut mode"),
            dtype=dtype,  # type: ignore[arg-type]
        )
    elif fps is not None or multi is not None:
        raise UsageError("--fps/--multi need --interpolate MODEL")
    orders = ("upscale,interpolate", "interpolate,upscale")
    stages += [models[k] for k in _choice(order, orders, "--order").split(",") if k in models]
    if resize is not None:
        w, h = parse_size(resize)
        stages.append(Resize(w, h, _choice(resize_method, METHODS, "resize method")))  # type: ignore[arg-type]
    opts = RunOptions(
        device=device,
        reader=ReaderOptions(
            batch_size=batch_size,
            hwaccel=_choice(hwaccel, ("none", "auto", "cuda"), "hwaccel"),
            on_corrupt=_choice(on_corrupt, ("fail", "skip"), "--on-corrupt value"),
        ),  # type: ignore[arg-type]
        writer=WriterOptions(
            encoder=EncoderOptions(
                encoder=_choice(encoder, PRESETS, "encoder"),  # type: ignore[arg-type]
                crf=crf,
                lossless=lossless,
                speed=speed,
                bit_depth=bit_depth,
            ),
            copy_streams=copy_streams,
        ),
        progress="none" if quiet else _choice(progress, ("bar", "json", "none"), "progress mode"),  # type: ignore[arg-type]
    )
    result = run(input, output, stages, opts)
    if not quiet and progress != "json":
        err.print(
            f"wrote {result.output} ({result.frames_out} frames, {result.fps:.1f} fps, "
            f"{result.wall_s:.1f} s); manifest {result.output}.json"
        )


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="where the sample and the result go")] = Path("out/demo"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Generate a sample clip and run the main job on it."""
    from .demo import run_demo

    _setup_logging(quiet=False, verbose=False)
    result = run_demo(out, RunOptions(device=device))
    err.print(f"demo: wrote {result.output} ({result.frames_out} frames, {result.fps:.1f} fps); manifest beside it")


@app.command("probe")
def probe_cmd(
    input: Annotated[Path, typer.Argument(help="media file")],
    as_json: Annotated[bool, typer.Option("--json", help="full JSON")] = False,
    count: Annotated[bool, typer.Option(help="demux the whole file for an exact frame count")] = False,
) -> None:
    """Describe a media file: streams, rate, VFR, colour, rotation, chapters."""
    from ..media.probe import probe

    info = probe(input, count_frames=count)
    if as_json:
        typer.echo(json.dumps(info.to_json(), indent=2))
        return
    s = info.summary()
    v = info.video
    typer.echo(f"{s['path']}: {s['container']}, {s['duration_s']} s, {info.size_bytes} bytes")
    typer.echo(f"  video: {s['video']}, {v.frames} frames{' (exact)' if v.frames_exact else ' (estimated)'}")
    typer.echo(
        f"  colour: {v.colour.primaries}/{v.colour.transfer}/{v.colour.matrix} range={v.colour.range} "
        f"{v.colour.bit_depth}-bit{' HDR' if v.colour.is_hdr else ''}{' alpha' if v.alpha else ''}"
        f"{f' rotation={v.rotation}' if v.rotation else ''}"
    )
    for st in info.streams:
        if st.index != v.index:
            typer.echo(
                f"  #{st.index} {st.type}: {st.codec}"
                + (f" [{st.language}]" if st.language else "")
                + (f" {st.filename}" if st.filename else "")
            )
    for ch in info.chapters:
        typer.echo(f"  chapter {float(ch.start):.3f}-{float(ch.end):.3f} {ch.title or ''}")


@app.command("doctor")
def doctor_cmd(
    device: Annotated[str, typer.Option(help="device to check: auto | cpu | cuda:N")] = "auto",
) -> None:
    """What this machine can do: versions, GPUs, hardware decoders/encoders that really open."""
    from ..runtime.doctor import report

    _setup_logging(quiet=True, verbose=False)
    for line in report(device):
        typer.echo(line)


@bench_app.command("io")
def bench_io_cmd(
    seconds: Annotated[float, typer.Option(help="length of the generated 1080p clip")] = 10.0,
    rss_seconds: Annotated[float, typer.Option(help="length of the RSS run (0 skips it)")] = 120.0,
    work_dir: Annotated[Path, typer.Option(help="where clips are generated")] = Path(".cache/bench"),
    output: Annotated[Path | None, typer.Option(help="append a results section to this markdown")] = None,
) -> None:
    """Decode fps, encode fps per preset, pipeline overhead vs a bare PyAV loop, RSS over a long run."""
    from ..bench.io import run_io_bench

    _setup_logging(quiet=False, verbose=False)
    run_io_bench(seconds=seconds, rss_seconds=rss_seconds, work_dir=work_dir, markdown=output)


@bench_app.command("upscale")
def bench_upscale_cmd(
    model: Annotated[list[str], typer.Option(help="model name or weights path (repeatable)")],
    size: Annotated[list[str], typer.Option(help="input WxH, one per --model")],
    dtype: Annotated[str, typer.Option(help="fp16 | bf16 | fp32")] = "fp16",
    mode: Annotated[list[str] | None, typer.Option(help="eager | cudnn | compile | compile-graphs")] = None,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    e2e_frames: Annotated[int, typer.Option(help="frames for the end-to-end run (0 skips it)")] = 0,
    outscale: Annotated[float | None, typer.Option(help="outscale for the end-to-end run")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile in the end-to-end run")] = False,
    device: Annotated[str, typer.Option()] = "cuda",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Model-only (several execution modes) and end-to-end frames/s of SR models on a GPU."""
    from ..bench.upscale import MODES, end_to_end, model_only
    from ..runtime.device import describe, resolve_device

    _setup_logging(quiet=True, verbose=False)
    if len(model) != len(size):
        raise UsageError("give one --size per --model")
    dev = resolve_device(device)
    typer.echo(f"device: {describe(dev)}")
    typer.echo("| model | input | dtype | mode | batch | frames/s | warm-up s |\n|---|---|---|---|---:|---:|---:|")
    for m, sz in zip(model, size, strict=True):
        w, h = parse_size(sz)
        for r in model_only(m, (w, h), device=dev, dtype=dtype, modes=mode or MODES, batch=batch):
            typer.echo(r.row())
        if e2e_frames:
            fps, manifest = end_to_end(
                m, (w, h), device=dev, frames=e2e_frames, work_dir=work_dir, outscale=outscale, compile=compile
            )
            typer.echo(
                f"end-to-end {Path(m).stem} {sz} → {manifest['output']['video']}: {fps:.1f} fps "
                f"(encoder {manifest['encoder']['codec']}, decoder {manifest['decoder']})"
            )


@bench_app.command("interpolate")
def bench_interpolate_cmd(
    model: Annotated[list[str], typer.Option(help="rife-hdv3 | v4.6 | v4.22 | v4.25 (4.x: random weights)")],
    size: Annotated[str, typer.Option(help="frame WxH")] = "1920x1080",
    dtype: Annotated[str, typer.Option(help="fp16 | bf16 | fp32")] = "fp16",
    mode: Annotated[list[str] | None, typer.Option(help="eager | compile | compile-graphs")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="pairs per call (repeatable)")] = None,
    device: Annotated[str, typer.Option()] = "cuda",
) -> None:
    """Model-only interpolated frames/s of IFNet variants on a GPU."""
    from ..bench.interpolate import MODES, model_only
    from ..runtime.device import describe, resolve_device

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    w, h = parse_size(size)
    typer.echo(f"device: {describe(dev)}")
    typer.echo("| model | weights | input | dtype | mode | batch | frames/s | warm-up s |")
    typer.echo("|---|---|---|---|---|---:|---:|---:|")
    for m in model:
        for b in batch or [1]:
            for r in model_only(m, (w, h), device=dev, dtype=dtype, modes=mode or MODES, batch=b):
                typer.echo(r.row())


app.add_typer(models_app, name="models")
app.add_typer(monitor_app, name="monitor")
app.add_typer(cuts_app, name="cuts")
app.add_typer(eval_app, name="eval")


def _fail(message: str, code: int) -> None:
    # plain write: one unwrapped line, whatever the terminal width
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="vidpipe")
        if isinstance(rv, int) and rv:  # typer.Exit(code) comes back as a return value in this mode
            sys.exit(rv)
    except VidpipeError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as e:
        e.show()
        sys.exit(UsageError.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
