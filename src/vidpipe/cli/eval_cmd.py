"""`vidpipe eval …`: quality evaluations (mount `app` as the `eval` sub-command).

`vidpipe eval interpolate CLIP`: drop every other frame, rebuild it with RIFE and with a linear blend, print
mean PSNR/SSIM of both against the dropped frames (`vidpipe.eval.interpolate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..eval.interpolate import DEFAULT_BATCH

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
    batch: Annotated[int, typer.Option(min=1, help="pairs per network call")] = DEFAULT_BATCH,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Mean PSNR/SSIM of the model's and a linear blend's rebuilt frames, and the model's margin in dB."""
    from ..eval.interpolate import evaluate
    from ..jobs.atomic import write_json
    from ..stages.resize import parse_size

    wh = parse_size(size) if size else None
    result = evaluate(clip, model, device, max_frames=max_frames, start=start, size=wh, batch=batch)
    typer.echo(result.table())
    if json_out is not None:
        write_json(json_out, result.to_json())
        typer.echo(f"→ {json_out}", err=True)
