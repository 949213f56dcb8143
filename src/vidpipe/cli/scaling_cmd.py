"""`vidpipe bench scaling` (mounted in cli/app.py): one worker against N on the same input (`bench.scaling`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError


def scaling_cmd(
    gpus: Annotated[
        str | None, typer.Option(help="all | N | 0,2 (a GPU listed twice: two workers on it) | cpu:N (CPU workers)")
    ] = None,
    upscale: Annotated[str | None, typer.Option(help="SR model")] = None,
    interpolate: Annotated[str | None, typer.Option(help="RIFE model")] = None,
    multi: Annotated[int | None, typer.Option(min=2, help="frame-rate multiplier for --interpolate")] = None,
    resize: Annotated[str | None, typer.Option(help="resize to WxH (no model: decode/encode scaling alone)")] = None,
    case: Annotated[list[str] | None, typer.Option(help="long | short (repeatable; default both)")] = None,
    long_size: Annotated[str, typer.Option(help="the long clip's WxH")] = "1920x1080",
    long_seconds: Annotated[float, typer.Option(help="the long clip's length (25 fps)")] = 180.0,
    short_count: Annotated[int, typer.Option(min=1, help="short clips (mixed sizes)")] = 16,
    short_frames: Annotated[int, typer.Option(min=2, help="frames per short clip")] = 120,
    short_size: Annotated[
        list[str] | None, typer.Option(help="short clip sizes, cycled (repeatable; default 360p to 1080p)")
    ] = None,
    encoder: Annotated[str, typer.Option(help="h264 (lossless) | ffv1: outputs compared frame by frame")] = "h264",
    executor: Annotated[str, typer.Option(help="local (worker processes) | ray (local Ray cluster actors)")] = "local",
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/bench"),
    output: Annotated[Path | None, typer.Option(help="append the table to this markdown file")] = None,
) -> None:
    """Speed-up of N worker processes (one per GPU) over one, on one long clip split at keyframes and on many short
    clips; frame identity of the outputs and what bounded each run."""
    from ..bench.scaling import CASES, HEADER, SHORT_SIZES, run_scaling
    from ..stages.resize import parse_size
    from ..workers.devices import worker_slots

    slots = worker_slots(gpus)
    if not slots:
        raise UsageError("bench scaling needs CUDA devices (none is visible) or --gpus cpu:N")
    cases = case or list(CASES)
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise UsageError(f"invalid --case {bad[0]!r}; valid: {', '.join(CASES)}")
    if encoder not in ("h264", "ffv1"):
        raise UsageError(f"invalid --encoder {encoder!r}; valid: h264, ffv1 (lossless, so outputs can be compared)")
    if executor not in ("local", "ray"):
        raise UsageError(f"invalid --executor {executor!r}; valid: local, ray")
    values = {"upscale": upscale, "interpolate": interpolate, "multi": multi, "resize": resize}
    rows = run_scaling(
        slots,
        {k: v for k, v in values.items() if v is not None},
        cases=cases,  # type: ignore[arg-type]
        long_size=parse_size(long_size),
        long_seconds=long_seconds,
        short_count=short_count,
        short_frames=short_frames,
        short_sizes=[parse_size(s) for s in short_size] if short_size else SHORT_SIZES,
        encoder=encoder,
        work_dir=work_dir,
        executor=executor,  # type: ignore[arg-type]
    )
    lines = [
        f"workers: {', '.join(s.label for s in slots)}; command: vidpipe {' '.join(sys.argv[1:])}",
        HEADER,
        *(r.row() for r in rows),
    ]
    typer.echo("\n".join(lines))
    if output is not None:
        with output.open("a") as f:
            f.write("\n".join(lines) + "\n\n")
