"""`vidpipe compare A B [C…]`: the compare page (and a still grid) of a reference A and the inputs made from it.

`compare` measures every reference frame against its match in each other input (`measure`), finds cuts in A
(the classical detector, `vidpipe cuts`' default, or events given), picks frames, and renders them: side by side,
a before/after slider per other input, crops at 100/200/400 %, an alpha checkerboard behind RGBA inputs and a
difference heat-map; then plots of PSNR, SSIM and flicker with the cuts marked.

VMAF: plotted only where PyAV's FFmpeg has the `libvmaf` filter (`vmaf_available`); the page says when it has
not (the PyPI wheels of PyAV are built without it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import av.filter
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..metrics import PSNR_CAP_DB, SSIM_SIGMA, SSIM_WINDOW
from ..paths import write_bytes
from . import images
from .measure import (
    CUT_PICKS,
    EVEN_PICKS,
    RESIZE,
    WORST_PICKS,
    Curves,
    Input,
    Picked,
    as_float,
    choose,
    collect,
    measure,
    open_inputs,
)
from .page import document, table
from .plots import Plot, Series, svg

log = logging.getLogger(__name__)

#: each image's height in the `--png` grid
GRID_ROW_HEIGHT = 240
#: the frames' images may take this much of the page (base64 included): with plots and tables a default page
#: stays under 10 MB; over it, every image is embedded smaller (`sections`), never fewer frames
IMAGE_BYTES = 9_000_000
#: … but never below this long side (a crop of a smaller image shows nothing the side-by-side does not)
MIN_SIDE = 480
#: plots draw at most this many points a curve: longer runs are summarised per bucket of frames, by the lowest
#: PSNR/SSIM and the highest flicker (the dips and spikes are what a reader looks for)
MAX_POINTS = 2000


@dataclass(frozen=True, slots=True)
class Cut:
    frame: int
    kind: str
    score: float
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareOptions:
    max_frames: int | None = None
    even: int = EVEN_PICKS
    at_cuts: int = CUT_PICKS
    worst: int = WORST_PICKS
    #: cuts in A: "auto" (detect), "off", a `vidpipe cuts` events JSON, or the events themselves
    cuts: str | Path | tuple[Cut, ...] = "auto"
    #: where the metrics run ("auto": CUDA when there is one)
    device: str = "auto"
    #: the byte budget of the frames' images (see `IMAGE_BYTES`)
    image_bytes: int = IMAGE_BYTES


@dataclass(slots=True)
class Comparison:
    inputs: list[Input]
    curves: Curves
    cuts: list[Cut]
    picks: list[Picked]
    image_bytes: int = IMAGE_BYTES


def vmaf_available() -> bool:
    return "libvmaf" in av.filter.filters_available


def find_cuts(ref: Input, how: str | Path | tuple[Cut, ...], max_frames: int | None) -> list[Cut]:
    """A's cuts: detected by `vidpipe cuts`' default detector, read from its events JSON, given, or none."""
    if isinstance(how, tuple):
        return [c for c in how if max_frames is None or c.frame < max_frames]
    if str(how) == "off":
        return []
    if str(how) == "auto":
        from ..stages.cuts.detector import CutDetector
        from ..stages.cuts.run import run_detector

        events = run_detector(ref.path, CutDetector()).events
    else:
        from ..stages.cuts.events import read_json

        events = read_json(Path(how))
    cuts = [Cut(e.frame, e.kind, e.score, float(e.time)) for e in events]
    return [c for c in cuts if max_frames is None or c.frame < max_frames]


def compare(paths: Sequence[str | Path], options: CompareOptions = CompareOptions()) -> Comparison:
    inputs = open_inputs(paths)
    from ..runtime.device import resolve_device

    curves = measure(inputs, max_frames=options.max_frames, device=resolve_device(options.device))
    cuts = find_cuts(inputs[0], options.cuts, options.max_frames)
    labels = [i.label for i in inputs]
    choices = choose(
        curves,
        labels,
        [(c.frame, c.kind, c.score) for c in cuts],
        even=options.even,
        at_cuts=options.at_cuts,
        worst=options.worst,
    )
    picks = collect(inputs, choices)
    return Comparison(inputs=inputs, curves=curves, cuts=cuts, picks=picks, image_bytes=options.image_bytes)


# ------------------------------------------------------------------------------------------------ the page
def _describe(inputs: Sequence[Input], curves: Curves) -> str:
    rows = []
    for k, i in enumerate(inputs):
        v = i.info.video
        matched = "reference" if k == 0 else f"{curves.matched[k]} of {curves.frames}"
        rows.append(
            [
                i.label,
                f"{v.display_size[0]}×{v.display_size[1]}",
                f"{float(v.rate):.3f}" if v.rate else "?",
                v.frames,
                v.codec,
                "yes" if i.alpha else "no",
                matched,
                f"{curves.mean('psnr', k):.3f}" if k and curves.mean("psnr", k) is not None else "",
                f"{curves.mean('ssim', k):.5f}" if k and curves.mean("ssim", k) is not None else "",
            ]
        )
    header = ["input", "size", "fps", "frames", "codec", "alpha", "frames matched", "mean PSNR dB", "mean SSIM"]
    return f'<section id="inputs"><h2>Inputs</h2>{table(header, rows)}</section>'


def _method(inputs: Sequence[Input]) -> str:
    w, h = inputs[0].size
    resized = [i.label for i in inputs[1:] if i.size != (w, h)]
    notes = [
        f"Reference: {escape(inputs[0].label)}. Each of its frames is matched with the frame of every other input "
        "nearest in time (times from each input's first frame), within half a reference frame period.",
        f"PSNR (peak = full intensity, capped at {PSNR_CAP_DB:g} dB) and SSIM (Gaussian {SSIM_WINDOW}×{SSIM_WINDOW}, "
        f"σ {SSIM_SIGMA}, valid window) per frame on R, G, B in 0..1: vidpipe.metrics, as `vidpipe eval` computes "
        "them.",
        f"Flicker: mean absolute difference from the previous matched frame, in 8-bit levels. Heat-map: mean "
        f"|A − X| over R, G, B, full colour at {images.HEAT_FULL_LEVELS:g} levels.",
    ]
    if resized:
        notes.append(
            f"{', '.join(map(escape, resized))}: measured at the reference's size {w}×{h} after resizing "
            f"({RESIZE['down']} averaging down, {RESIZE['up']} up); shown at that display size, crops from the "
            "input's own pixels."
        )
    notes.append(
        "VMAF: per frame with libvmaf."
        if vmaf_available()
        else "VMAF: n/a (this FFmpeg build, av.filter, has no libvmaf filter)."
    )
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def bucketed(values: Sequence[float | None], n: int, pick: Callable[[list[float]], float]) -> list[float | None]:
    """`values` in `n` consecutive buckets (`n` ≥ their count: unchanged), each summarised by `pick` of its
    defined values (None where it has none)."""
    if len(values) <= n:
        return list(values)
    out: list[float | None] = []
    for j in range(n):
        part = [v for v in values[j * len(values) // n : (j + 1) * len(values) // n] if v is not None]
        out.append(pick(part) if part else None)
    return out


def plots(c: Comparison, max_points: int = MAX_POINTS) -> str:
    labels = [i.label for i in c.inputs]
    marks = [(cut.time, f"{cut.kind} cut at frame {cut.frame}") for cut in c.cuts]
    others = range(1, len(c.inputs))
    t = c.curves.times
    x = t if len(t) <= max_points else [t[j * len(t) // max_points] for j in range(max_points)]

    def series(
        values: dict[int, list[float | None]], keys: Sequence[int], pick: Callable[[list[float]], float]
    ) -> list[Series]:
        return [Series(labels[k], bucketed(values[k], max_points, pick)) for k in keys]

    parts = [
        Plot("PSNR vs A (dB)", x, series(c.curves.psnr, others, min), markers=marks),
        Plot("SSIM vs A", x, series(c.curves.ssim, others, min), markers=marks),
        Plot(
            "Flicker: mean |frame − previous| (8-bit levels)",
            x,
            series(c.curves.flicker, range(len(c.inputs)), max),
            markers=marks,
        ),
    ]
    if len(t) > max_points:
        note = f"{len(t)} frames in {max_points} buckets: each point is the lowest PSNR/SSIM, highest flicker"
        parts[0] = Plot(parts[0].title + f" ({note})", x, parts[0].series, markers=marks)
    return (
        '<section id="plots"><h2>Per frame</h2><div class="plots">'
        + "".join(svg(p) for p in parts)
        + "</div></section>"
    )


def _figure(img_id: str, src: str, caption: str, alpha: bool) -> str:
    cls = ' class="checker"' if alpha else ""
    return (
        f'<figure><img id="{img_id}"{cls} src="{src}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _pick(n: int, p: Picked, inputs: Sequence[Input], curves: Curves, side: int) -> str:
    ref = p.frames[0]
    assert ref is not None
    w, h = inputs[0].size
    a = as_float(ref.data, (w, h))
    figs, heats, sliders, crops, scores = [], [], [], [], []
    hot: tuple[float, float] | None = None
    for k, (inp, f) in enumerate(zip(inputs, p.frames, strict=True)):
        if f is None:
            figs.append(f'<figure><p class="muted">{escape(inp.label)}: no frame within half a period</p></figure>')
            continue
        fid = f"p{n}-{k}"
        figs.append(_figure(fid, images.data_uri(f.data, side), f"{inp.label} · frame {f.index}", inp.alpha))
        crops.append(
            f'<div class="crop{" checker" if inp.alpha else ""}"><img data-from="{fid}" alt=""><span>'
            f"{escape(inp.label[:1])}</span></div>"
        )
        if k == 0:
            continue
        diff = images.difference(a, as_float(f.data, (w, h)))
        hot = hot or images.hottest(diff)
        heat = images.data_uri(images.heatmap(diff), side)
        heats.append(_figure(f"h{n}-{k}", heat, f"|A − {inp.label[:1]}|", False))
        scores.append(f"{escape(inp.label)}: PSNR {curves.psnr[k][p.choice.index]:.2f} dB, "
                      f"SSIM {curves.ssim[k][p.choice.index]:.4f}")  # fmt: skip
        sliders.append(
            f'<div class="slider" data-input="{k}"><img class="under" data-from="{fid}" alt="{escape(inp.label)}">'
            f'<img class="over" data-from="p{n}-0" alt="A"><div class="divider"></div>'
            f'<input type="range" min="0" max="100" value="50" aria-label="A ◀ ▶ {escape(inp.label[:1])}"></div>'
        )
    x, y = hot or (0.5, 0.5)
    zoom = (
        f'<div class="zoom" data-zoom="2" data-x="{x:.4f}" data-y="{y:.4f}">'
        + "".join(f'<button type="button" data-zoom="{z}">{z * 100}%</button>' for z in (1, 2, 4))
        + f'<div class="crops">{"".join(crops)}</div></div>'
    )
    head = (
        f"<h3>frame {p.choice.index} · {float(p.time):.3f} s · {escape(', '.join(p.choice.reasons))}</h3>"
        f'<p class="muted">{"; ".join(scores)}</p>'
    )
    return (
        f'<article class="pick" id="pick-{n}" data-frame="{p.choice.index}" data-width="{w}" data-height="{h}">'
        f'{head}<div class="row">{"".join(figs + heats)}</div>{"".join(sliders)}{zoom}</article>'
    )


def _picks(c: Comparison) -> tuple[str, int]:
    """The frames' HTML within `c.image_bytes`, and the long side their images were embedded at: the inputs' own
    (at most `images.MAX_SIDE`), lowered in proportion (areas scale with its square) until the images fit."""
    side = min(images.MAX_SIDE, max(max(i.size) for i in c.inputs))
    while True:
        out = "".join(_pick(n, p, c.inputs, c.curves, side) for n, p in enumerate(c.picks))
        if len(out) <= c.image_bytes or side <= MIN_SIDE:
            return out, side
        side = max(MIN_SIDE, int(side * math.sqrt(c.image_bytes / len(out)) * 0.95))


def sections(c: Comparison) -> list[str]:
    """The compare page's sections (the run report puts its own after them)."""
    picks, side = _picks(c)
    if side < min(images.MAX_SIDE, max(max(i.size) for i in c.inputs)):
        picks = (
            f'<p class="note" id="smaller">Images embedded at most {side} px long to keep the page small.</p>' + picks
        )
    cuts = ", ".join(f"{cut.frame} ({cut.kind})" for cut in c.cuts) or "none"
    return [
        _describe(c.inputs, c.curves),
        _method(c.inputs),
        plots(c),
        f'<section id="frames"><h2>Frames</h2><p class="note">Cuts in A: {escape(cuts)}. Drag a slider: A on the '
        f"left of the line. Click a frame to move the crops there.</p>{picks}</section>",
    ]


def html(c: Comparison, title: str | None = None) -> str:
    title = title or "vidpipe compare: " + " vs ".join(i.path.name for i in c.inputs)
    return document(title, [f"<h1>{escape(title)}</h1>", *sections(c)])


def write_html(c: Comparison, path: Path, title: str | None = None) -> Path:
    write_bytes(path, html(c, title).encode())
    return path


# ------------------------------------------------------------------------------------------------ the still
def _row_image(frame: torch.Tensor, height: int) -> torch.Tensor:
    """C×H×W uint8 → 3×height×W' uint8 (alpha composited on grey)."""
    x = frame.float()
    if x.shape[0] == 4:
        al = x[3:] / 255
        x = x[:3] * al + 128 * (1 - al)
    h, w = x.shape[-2:]
    width = max(1, round(w * height / h))
    return F.interpolate(x[None], size=(height, width), mode="area")[0].round().clamp(0, 255).to(torch.uint8)


def grid(c: Comparison, height: int = GRID_ROW_HEIGHT) -> torch.Tensor:
    """One row per picked frame: every input, then the heat-maps; 3×H×W uint8."""
    if not c.picks:
        raise UsageError("no frames to show in the grid: ask for some (--frames, --at-cuts, --worst)")
    w, h = c.inputs[0].size
    rows = []
    for p in c.picks:
        ref = p.frames[0]
        assert ref is not None
        a = as_float(ref.data, (w, h))
        cells = [_row_image(images.to_uint8(f.data), height) for f in p.frames if f is not None]
        cells += [
            _row_image(images.heatmap(images.difference(a, as_float(f.data, (w, h)))), height)
            for f in p.frames[1:]
            if f is not None
        ]
        rows.append(torch.cat([F.pad(x, (0, 4), value=255) for x in cells], dim=2))
    width = max(r.shape[-1] for r in rows)
    rows = [F.pad(r, (0, width - r.shape[-1], 0, 4), value=255) for r in rows]
    return torch.cat(rows, dim=1)


def write_png(c: Comparison, path: Path) -> Path:
    write_bytes(path, images.png(grid(c)))
    return path
