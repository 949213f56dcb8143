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
from .bench_cmd import bench_app
from .common import choice as _choice
from .common import err
from .common import setup_logging as _setup_logging
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
app.add_typer(bench_app, name="bench")

log = logging.getLogger("vidpipe")


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
