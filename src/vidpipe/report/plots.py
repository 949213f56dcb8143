"""Line plots as inline SVG, written here: a plot is a few polylines, axes and markers, which needs no plotting
package (matplotlib would add a dependency and ~10 MB of install for what is 80 lines; its SVG is also far larger
than the few hundred bytes of points per curve written here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

#: the drawing's own units; the SVG scales to its box's width (CSS), so one file reads on a phone and a monitor
WIDTH, HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 26, 30
#: one colour per series, in order (colour-blind safe: Okabe–Ito)
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    #: one value per x; None where there is none (an unmatched frame)
    values: Sequence[float | None]


@dataclass(frozen=True, slots=True)
class Plot:
    title: str
    x: Sequence[float]
    series: Sequence[Series]
    x_label: str = "s"
    y_label: str = ""
    #: vertical markers (cuts), at x values, with their labels
    markers: Sequence[tuple[float, str]] = field(default_factory=tuple)
    #: fixed y range, else the data's (padded)
    y_range: tuple[float, float] | None = None


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About `n` round tick values covering lo..hi."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def svg(plot: Plot) -> str:
    """The plot as an `<svg>` element: each series a `<polyline>` per run of defined values (`data-points`: its
    point count), cut markers as `<line class="marker">`, a legend and round-numbered axes."""
    xs = list(plot.x)
    values = [v for s in plot.series for v in s.values if v is not None and math.isfinite(v)]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    if plot.y_range is not None:
        y0, y1 = plot.y_range
    elif values:
        y0, y1 = min(values), max(values)
        pad = (y1 - y0) * 0.05 or max(abs(y1) * 0.05, 1e-3)
        y0, y1 = y0 - pad, y1 + pad
    else:
        y0, y1 = 0.0, 1.0
    pw, ph = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return _TOP + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    out = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(plot.title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text class="title" x="{_LEFT}" y="16">{escape(plot.title)}</text>',
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}"/>',
    ]
    for t in _ticks(y0, y1):
        y = py(t)
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x0, x1, 6):
        x = px(t)
        out.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 12}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(
        f'<text class="tick" x="{WIDTH - _RIGHT}" y="{HEIGHT - 1}" text-anchor="end">{escape(plot.x_label)}</text>'
    )
    if plot.y_label:
        out.append(f'<text class="tick" x="4" y="{_TOP - 6}">{escape(plot.y_label)}</text>')
    for x, label in plot.markers:
        if x0 <= x <= x1:
            out.append(
                f'<line class="marker" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{_TOP}" y2="{_TOP + ph}">'
                f"<title>{escape(label)}</title></line>"
            )
    for k, s in enumerate(plot.series):
        colour = COLOURS[k % len(COLOURS)]
        runs: list[list[str]] = [[]]
        for x, v in zip(xs, s.values, strict=True):
            if v is None or not math.isfinite(v):
                runs.append([])
            else:
                runs[-1].append(f"{px(x):.1f},{py(v):.1f}")
        for run in (r for r in runs if r):
            # a lone point is drawn as a dot (a polyline of one point is invisible)
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle data-series="{escape(s.label)}" cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            else:
                out.append(
                    f'<polyline data-series="{escape(s.label)}" data-points="{len(run)}" fill="none" '
                    f'stroke="{colour}" points="{" ".join(run)}"/>'
                )
        lx = _LEFT + 8 + 170 * k
        out.append(f'<rect x="{lx}" y="{_TOP + 6}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text class="legend" x="{lx + 14}" y="{_TOP + 15}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
