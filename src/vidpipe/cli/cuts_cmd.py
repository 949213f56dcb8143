"""`vidpipe cuts IN -o cuts.json`: cut detection (`detect_cmd`, mounted as the top-level command `cuts`).

Scoring is `vidpipe eval cuts` (`eval_cmd.cuts_cmd`); `bench_cmd` is mounted as `vidpipe bench cuts` (speed beside
PySceneDetect, cost tables).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from ..runtime.recipe import ON_CORRUPT, choice

if TYPE_CHECKING:
    import torch


def _device(name: str) -> torch.device:
    import torch  # here, not with the module: `vidpipe --help` stays fast

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"invalid device {name!r}; valid: auto, cpu, cuda, cuda:N") from e


def detect_cmd(
    input: Annotated[Path, typer.Argument(help="input video")],
    output: Annotated[Path, typer.Option("-o", "--output", help="events JSON")],
    detector: Annotated[str, typer.Option(help="hard,soft,motion (any of them) | transnetv2")] = "hard,soft",
    preset: Annotated[str | None, typer.Option(help="quality | default | fast (default: by short side)")] = None,
    analysis_width: Annotated[int | None, typer.Option(help="analysis frame box width")] = None,
    analysis_height: Annotated[int | None, typer.Option(help="analysis frame box height")] = None,
    analysis_fps: Annotated[str | None, typer.Option(help="analyse at this rate (e.g. 15 or 30000/1001)")] = None,
    core_optical_flow: Annotated[Path | None, typer.Option(help="flow.npz of core_optical_flow to reuse")] = None,
    prefer_core_optical_flow: Annotated[bool, typer.Option(help="reuse it when the frame axis matches")] = False,
    require_core_optical_flow: Annotated[bool, typer.Option(help="fail unless it can be reused")] = False,
    csv: Annotated[Path | None, typer.Option(help="also write CSV here")] = None,
    edl: Annotated[Path | None, typer.Option(help="also write a CMX3600 EDL here")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (TransNetV2, analysis resize)")] = "auto",
    on_corrupt: Annotated[str, typer.Option(help="fail | skip damaged or missing frames (counted)")] = "fail",
) -> None:
    """Cut detection: hard cuts, dissolves/fades, motion cuts in INPUT, written as JSON (plus CSV/EDL when asked)."""
    from ..stages.cuts.detector import CutDetector, CutOptions
    from ..stages.cuts.events import write_csv, write_edl, write_json
    from ..stages.cuts.flow_reuse import FlowReuse
    from ..stages.cuts.run import run_detector
    from ..stages.cuts.transnetv2 import TransNetV2Detector

    choice(on_corrupt, ON_CORRUPT, "--on-corrupt value")
    dev = _device(device)
    stage: CutDetector | TransNetV2Detector
    if detector == "transnetv2":
        stage = TransNetV2Detector()
    else:
        kinds = tuple(k.strip() for k in detector.split(",") if k.strip())
        reuse = None
        if prefer_core_optical_flow or require_core_optical_flow:
            if core_optical_flow is None:
                raise UsageError("--prefer/--require-core-optical-flow need --core-optical-flow PATH/flow.npz")
            reuse = FlowReuse.open(core_optical_flow, "require" if require_core_optical_flow else "prefer")
        try:
            fps = Fraction(analysis_fps) if analysis_fps else None
        except ValueError as e:
            raise UsageError(f"invalid --analysis-fps {analysis_fps!r}") from e
        opts = CutOptions(
            detectors=kinds,  # type: ignore[arg-type]
            preset=preset,
            analysis_width=analysis_width,
            analysis_height=analysis_height,
            analysis_fps=fps,
        )
        stage = CutDetector(opts, flow_reuse=reuse)
    result = run_detector(input, stage, device=dev, on_corrupt=on_corrupt)  # type: ignore[arg-type]
    write_json(result.events, output)
    if csv:
        write_csv(result.events, csv)
    if edl:
        write_edl(result.events, edl, rate=result.rate, frames=result.frames, title=input.stem)
    skipped = f", {result.skipped} skipped as damaged or missing" if result.skipped else ""
    typer.echo(
        f"{len(result.events)} events in {result.frames} frames{skipped} ({result.fps:.1f} fps) → {output}", err=True
    )


def bench_cmd(
    size: Annotated[str, typer.Option(help="speed table input size WxH")] = "1280x720",
    repeat: Annotated[int, typer.Option(min=1, help="runs per method or cost row; the best counts")] = 1,
    speed: Annotated[bool, typer.Option(help="measure the speed table")] = True,
    transnetv2: Annotated[bool, typer.Option(help="include TransNetV2 (CPU) in the speed table")] = True,
    costs: Annotated[
        Path | None, typer.Option(help="measure the cost tables into this folder (resource_costs)")
    ] = None,
    bucket: Annotated[list[int] | None, typer.Option(help="cost table short-side bucket, repeatable")] = None,
    cost_frames: Annotated[int, typer.Option(min=2, help="frames per cost measurement")] = 150,
    work_dir: Annotated[Path, typer.Option(help="where the bench clips are built")] = Path(".cache/bench"),
) -> None:
    """Speed of our presets beside PySceneDetect's detectors on one CPU (markdown table), and the cost tables."""
    import shlex
    import sys

    from ..bench import cuts as bc
    from ..stages.resize import parse_size

    command = shlex.join(["vidpipe", *sys.argv[1:]])
    w, h = parse_size(size)
    work_dir.mkdir(parents=True, exist_ok=True)
    if speed:
        path, truth = bc.bench_clip(work_dir, (w, h))
        rows = bc.speed_table(path, truth, transnetv2=transnetv2, repeat=repeat, log=lambda m: typer.echo(m, err=True))
        typer.echo(bc.speed_markdown(rows, path=path, command=command))
    if costs is not None:
        base, _ = bc.bench_clip(work_dir, bc.BASE_SIZE)
        frames, rate = bc.base_frames(base, cost_frames)
        source = f"{base.name}: first {len(frames)} frames, scaled bicubic to each size"
        tables = bc.cost_rows(frames, rate, buckets=bucket or bc.COST_BUCKETS, source=source, repeat=repeat,
                              log=lambda m: typer.echo(m, err=True))  # fmt: skip
        for path in bc.write_costs(costs, tables, command=command, source=source):
            typer.echo(f"cost table → {path}", err=True)
