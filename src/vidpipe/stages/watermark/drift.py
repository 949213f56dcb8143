"""Marks that hold still while the picture around them drifts slowly (issue 17, `--dewatermark auto`).

A still mark over a nearly still shot (a dialogue shot, a slow pan or zoom) gives Dekel's sub-window median no
sign: the scene's edges hold over `span` frames as well as the mark's. Over the whole window a slow drift does
move the scene (Megamind's still shot: 3.6 px in 48 frames at half size), never the mark. So, between the median
frames of the window's first and last `ends` frames:

1. edges held at the same place with the same polarity at both ends are closed into compact parts;
2. a part is a mark's where its surroundings (a ring `reach` px wide) match best at a shift other than none, and
   at that shift clearly better than at none (the scene drifted), while the part itself matches far better at no
   shift than at the surroundings' (it did not drift with them). A fixed camera's still scene matches best at no
   shift all round and is left alone; passers-by match no shift at all;
3. α's shape is the median frame's contrast against a smooth fill from around the part (a mark adds α·(W − B) to
   a picture that a fill continues), scaled to its 0.9 quantile; strokes thinner than 3 px (the scene's edges
   along the drift, which held too) are left out. Dropping the part's pixels that match better at the drift was
   tried: under a semi-transparent mark the picture's texture drifts too, and it cut the mark's inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .fill import _ssd_all_shifts, dilate, erode, harmonic
from .regions import components

if TYPE_CHECKING:
    from .detect import DetectOptions


@dataclass(frozen=True, kw_only=True)
class DriftOptions:
    #: frames at each end of the window whose medians are compared
    ends: int = 12
    #: least frames in the window, in sub-windows of `span`: over the stage's 32-frame CPU windows (16 kept and
    #: their context) Megamind's still shot gave a part of the scene (21 px changed outside the true box per frame)
    spans: int = 3
    #: least cosine between the two ends' median gradients at a held edge
    agree: float = 0.9
    #: the largest drift looked for (analysis px, each axis)
    radius: int = 4
    #: the surroundings match at their drift at most this share of their mismatch at none, and the part at no
    #: shift at most this share of its mismatch at the surroundings' drift (Megamind's still logo: 0.19, 0.19;
    #: on the eval's clean clips no part passed both)
    ratio: float = 0.5


def held_edges(grads: torch.Tensor, edge: float, opts: DriftOptions) -> torch.Tensor:
    """h×w bool: strong gradients in the same place and direction at both ends of the window (T×2C×h×w)."""
    e = grads[: opts.ends].median(0).values
    late = grads[-opts.ends :].median(0).values
    en, ln = e.norm(dim=0), late.norm(dim=0)
    cos = (e * late).sum(0) / (en * ln).clamp_min(1e-6)
    return (en > edge) & (ln > edge) & (cos > opts.agree)


def still_part(
    x: torch.Tensor, part: torch.Tensor, reach: int, opts: DriftOptions, median: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(its pixels, α's shape; h×w) of `part` (h×w bool) as a mark that held still against its drifting
    surroundings over `x` (T×C×h×w), or None where the surroundings did not drift or the part drifted with them."""
    r = opts.radius
    ys, xs = torch.nonzero(part, as_tuple=True)
    h, w = part.shape
    y0, y1 = max(0, int(ys.min()) - reach - r), min(h, int(ys.max()) + 1 + reach + r)
    x0, x1 = max(0, int(xs.min()) - reach - r), min(w, int(xs.max()) + 1 + reach + r)
    p = part[y0:y1, x0:x1]
    early = x[: opts.ends, :, y0:y1, x0:x1].median(0).values
    late = x[-opts.ends :, :, y0:y1, x0:x1].median(0).values
    ring = dilate(p[None, None], reach)[0, 0] & ~dilate(p[None, None], 2)[0, 0]
    ones = torch.ones_like(p[None], dtype=x.dtype)
    around = _ssd_all_shifts(late, ring[None].to(x.dtype), early, ones, r)
    inside = _ssd_all_shifts(late, p[None].to(x.dtype), early, ones, r)
    best = int(torch.argmin(around))
    dy, dx = best // around.shape[1] - r, best % around.shape[1] - r
    if (dy, dx) == (0, 0) or not bool(torch.isfinite(around[r, r])):
        return None
    if float(around.flatten()[best]) > opts.ratio * float(around[r, r]):
        return None  # the surroundings changed, but not by a drift
    if float(inside[r, r]) > opts.ratio * float(inside.flatten()[best]):
        return None  # the part drifted with them: the scene's
    m = (median if median is not None else x.median(0).values)[:, y0:y1, x0:x1]
    fill = harmonic(m[None], dilate(p[None, None], 1))[0]
    contrast = (m - fill).abs().amax(0) * p
    peak = float(contrast[p].quantile(0.9))
    if peak <= 0:
        return None
    shape = (contrast / peak).clamp(0, 1)
    thick = dilate(erode((shape >= 0.5)[None, None], 1), 1)
    shape = shape * dilate(thick, 1)[0, 0]
    out = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    out[y0:y1, x0:x1] = p
    strength = torch.zeros(h, w, dtype=x.dtype, device=x.device)
    strength[y0:y1, x0:x1] = shape
    return out, strength


def still_marks(
    x: torch.Tensor, grads: torch.Tensor, opts: DetectOptions, taken: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(pixels, held edges, α's shape) of each still mark over a drifting picture in `x` (T×C×h×w, gradients
    `grads`) away from the candidates `taken` already; none where the window is shorter than `spans` sub-windows."""
    from .detect import _misfit, _support  # detect calls this module

    if len(x) < max(opts.drift.spans * opts.span, 2 * opts.drift.ends):
        return []
    held = held_edges(grads, opts.edge, opts.drift)
    support = _support(held, opts.close, opts.gap)
    out = []
    median = x.median(0).values
    for p in components(support):
        if _misfit(p, opts) is not None or int((held & p).sum()) < opts.min_edges:
            continue
        if any(bool((t & p).any()) for t in taken):
            continue
        found = still_part(x, p, opts.reach, opts.drift, median)
        if found is not None:
            out.append((found[0], held & found[0], found[1]))
    return out
