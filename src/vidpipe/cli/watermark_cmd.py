"""`vidpipe watermark detect IN -o marks.json|mask.png`: the `--dewatermark auto` detection on its own.

Writes the marks (`save_marks`: spans, boxes, α and colour arrays beside the .json) or a PNG of the union mask
(α × 255), and a preview beside it (`NAME.preview.png`: a frame holding the first mark, the mask overlaid in red).
`vidpipe run … --dewatermark mask:marks.json` takes the .json back (a PNG too, as an opaque mask).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from .cuts_cmd import _device

if TYPE_CHECKING:
    import numpy as np

app = typer.Typer(help="watermark and logo detection (removal: vidpipe run --dewatermark)", no_args_is_help=True)

#: frames per detection window (the stage's windows are T + 2·overlap; a file is read once, window by window):
#: `stages.watermark.whole.DETECT_WINDOW`, written out so that `vidpipe --help` imports no torch (a test checks)
DETECT_WINDOW = 48


@app.command("detect")
def detect_cmd(
    input: Annotated[Path, typer.Argument(help="input video")],
    output: Annotated[Path, typer.Option("-o", "--output", help="marks .json, or a .png of the union mask")],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    window: Annotated[int, typer.Option(help="frames per detection window", min=8)] = DETECT_WINDOW,
) -> None:
    """Find overlays that stay put while the picture moves (Dekel et al.'s median of gradients, per window)."""
    import numpy as np

    from ..media.probe import probe
    from ..media.reader import ReaderOptions, VideoReader
    from ..stages.watermark.marks import save_marks
    from ..stages.watermark.whole import DETECT_BATCH, detect_clip

    if output.suffix.lower() not in (".json", ".png"):
        raise UsageError(f"--output {output} must end in .json (marks) or .png (mask)")
    dev = _device(device)
    info = probe(input)
    # made before the minutes of detection, not after them (as `vidpipe run -o` makes its folder)
    output.parent.mkdir(parents=True, exist_ok=True)
    with VideoReader(info, ReaderOptions(batch_size=DETECT_BATCH, keep_alpha=False)) as reader:
        found = detect_clip(reader, dev, window)
    marks, notes = found.marks, found.notes
    width, height = info.video.width, info.video.height
    union = np.zeros((height, width), np.float32)
    for m in marks:
        union = np.maximum(union, m.alpha)
    if output.suffix.lower() == ".json":
        save_marks(marks, output)
    else:
        write_png(output, (union * 255).round().astype(np.uint8))
    shown = found.preview if found.preview is not None else found.first_frame
    where = output.with_name(f"{output.stem}.preview.png")
    if shown is not None:
        write_png(where, overlay(shown, union))
    for n in notes:
        typer.echo(f"note: {n}", err=True)
    if not marks:
        typer.echo(f"no mark found in {input}: wrote an empty {output.suffix[1:]} to {output}; preview {where}")
        return
    for m in marks:
        typer.echo(f"mark frames {m.first}..{m.last} box {m.box(0.5)} ({m.source}, {m.info})")
    typer.echo(f"wrote {len(marks)} mark(s) to {output}; preview {where}")


def overlay(frame: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`frame` (H×W×3 uint8 or uint16) as 8-bit RGB with `alpha` (H×W 0..1) blended in red at 60 %."""
    import numpy as np

    rgb = frame.astype(np.float32) / (65535.0 if frame.dtype == np.uint16 else 255.0)
    a = (0.6 * alpha)[..., None]
    red = np.array([1.0, 0.0, 0.0], np.float32)
    return ((rgb * (1 - a) + red * a) * 255).round().clip(0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    """An 8-bit grey (H×W) or RGB (H×W×3) PNG through PyAV."""
    import av

    grey = image.ndim == 2
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = image.shape[1], image.shape[0], "gray" if grey else "rgb24"
        frame = av.VideoFrame.from_ndarray(image, format="gray" if grey else "rgb24")
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
