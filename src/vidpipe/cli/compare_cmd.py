"""`vidpipe compare A B [C…] --html report.html [--png grid.png]`: the inputs side by side against A (see
`vidpipe.report.compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError


def compare_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="A (the reference) then the videos to compare with it")],
    html: Annotated[Path | None, typer.Option(help="write the self-contained HTML report here")] = None,
    png: Annotated[Path | None, typer.Option(help="write a still grid (frames and heat-maps) here")] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="measure A's first N frames (default: all)")] = None,
    frames: Annotated[int, typer.Option(min=0, help="evenly spaced frames shown")] = 6,
    at_cuts: Annotated[int, typer.Option(min=0, help="frames shown at A's strongest cuts")] = 4,
    worst: Annotated[int, typer.Option(min=0, help="worst frames by PSNR shown per input")] = 3,
    cuts: Annotated[str, typer.Option(help="cuts in A: auto (detect) | off | a `vidpipe cuts` events JSON")] = "auto",
    device: Annotated[str, typer.Option(help="where metrics run: auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """PSNR/SSIM and flicker per frame of each input against A (matched by time, measured at A's size), and
    chosen frames side by side, with a slider, zoomed crops and a difference heat-map."""
    from ..report.compare import CompareOptions, compare, write_html, write_png

    if html is None and png is None:
        raise UsageError("nothing to write: give --html REPORT.html and/or --png GRID.png")
    if cuts not in ("auto", "off") and not Path(cuts).is_file():
        raise UsageError(f"--cuts {cuts!r}: not auto, off or an events JSON file")
    options = CompareOptions(max_frames=max_frames, even=frames, at_cuts=at_cuts, worst=worst, cuts=cuts, device=device)
    result = compare(inputs, options)
    for k in range(1, len(result.inputs)):
        psnr, ssim = result.curves.mean("psnr", k), result.curves.mean("ssim", k)
        means = "no frame matched" if psnr is None else f"mean PSNR {psnr:.3f} dB, SSIM {ssim:.5f}"
        typer.echo(f"{result.inputs[k].label} vs A: {means} ({result.curves.matched[k]}/{result.curves.frames} frames)")
    if html is not None:
        typer.echo(f"→ {write_html(result, html)}", err=True)
    if png is not None:
        typer.echo(f"→ {write_png(result, png)}", err=True)
