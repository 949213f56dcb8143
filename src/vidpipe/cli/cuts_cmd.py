"""`vidpipe cuts IN -o cuts.json`: cut detection (mount `app` as the `cuts` sub-command).

Also `vidpipe cuts eval --truth T.json PRED.json` and `vidpipe cuts compare` (the side-by-side table).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..errors import UsageError

app = typer.Typer(no_args_is_help=True, help="Cut detection: hard cuts, dissolves/fades, motion cuts.")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"invalid device {name!r}; valid: auto, cpu, cuda, cuda:N") from e


@app.command("detect")
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
) -> None:
    """Detect cuts in INPUT and write the events as JSON (plus CSV/EDL when asked)."""
    from ..stages.cuts.detector import CutDetector, CutOptions
    from ..stages.cuts.events import write_csv, write_edl, write_json
    from ..stages.cuts.flow_reuse import FlowReuse
    from ..stages.cuts.run import run_detector
    from ..stages.cuts.transnetv2 import TransNetV2Detector

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
    result = run_detector(input, stage, device=dev)
    write_json(result.events, output)
    if csv:
        write_csv(result.events, csv)
    if edl:
        write_edl(result.events, edl, rate=result.rate, frames=result.frames, title=input.stem)
    typer.echo(f"{len(result.events)} events in {result.frames} frames ({result.fps:.1f} fps) → {output}", err=True)


@app.command("eval")
def eval_cmd(
    pred: Annotated[Path, typer.Argument(help="predicted events JSON")],
    truth: Annotated[Path, typer.Option(help="true events JSON")],
    tolerance: Annotated[int, typer.Option(min=0, help="frames")] = 2,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Precision/recall/F1 of PRED against --truth (hard and soft separately, and overall)."""
    from ..eval.cuts import evaluate_files

    scores = evaluate_files(truth, pred, tolerance)
    if as_json:
        typer.echo(json.dumps({k: v.to_json() for k, v in scores.items()}, indent=1))
        return
    for k, s in scores.items():
        typer.echo(f"{k:<8} P={s.precision:.3f} R={s.recall:.3f} F1={s.f1:.3f} (tp {s.tp}, fp {s.fp}, fn {s.fn})")


@app.command("compare")
def compare_cmd(
    out_dir: Annotated[Path, typer.Option(help="where the built clips go")] = Path(".cache/cuts_eval"),
    seed: Annotated[int, typer.Option()] = 0,
    clips: Annotated[int, typer.Option(min=1)] = 4,
    boundaries: Annotated[int, typer.Option(min=1, help="per clip")] = 12,
    tolerance: Annotated[int, typer.Option(min=0)] = 2,
    json_out: Annotated[Path | None, typer.Option(help="also write the rows as JSON")] = None,
) -> None:
    """Build the seeded dataset and print ours, PySceneDetect's and TransNetV2 side by side."""
    from ..eval.cuts import build_dataset, compare, rows_json, table

    built = build_dataset(out_dir, seed=seed, clips=clips, boundaries_per_clip=boundaries)
    rows = compare(built, tolerance=tolerance)
    typer.echo(
        f"{sum(len(c.events) for c in built)} boundaries, {sum(c.frames for c in built)} frames, tol {tolerance}"
    )
    typer.echo(table(rows))
    if json_out:
        json_out.write_text(rows_json(rows))
