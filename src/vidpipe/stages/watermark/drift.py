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
   tried: under a semi-transparent mark the picture's texture drifts too, and it cut the mark's inside;
4. the part is cut back to what lies between its held edges that did not drift: a held edge pixel did not
   drift where its 3×3 neighbourhood matches at no shift at most `edge_ratio` of its mismatch at the
   surroundings' drift (at least `min_edges` of them); their support's parts with `bound` of the largest part's
   edges, followed along held edges under `ratio` (hysteresis), bound the mark: it is what lies between them
   along a row or a column. A scene's edge along the drift next to the mark, held at both ends and closed into
   the part with it, is dropped (Megamind's table edge above its still logo). An edge along the drift is
   ambiguous (it matches both ways: a rectangle's top and bottom too), so it bounds nothing and stays only
   between others; the mark's inside is never judged (the picture drifting under a semi-transparent mark would
   cut it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

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
    #: a held edge pixel did not drift where its 3×3 neighbourhood matches at no shift at most this share of its
    #: mismatch at the surroundings' drift (Megamind's still logo: its ring's edges 0–0.25, the table edge
    #: beside it 0.5–1; an edge along the drift, a mark's or the scene's, about 1)
    edge_ratio: float = 0.25
    #: the parts of the undrifted edges' support with at least this share of the largest part's edges bound the
    #: mark (a few scene pixels that happen to match better unshifted do not)
    bound: float = 0.25
    #: steps (analysis px) the undrifted edges follow held edges that match at no shift at most `ratio` of the drift
    follow: int = 8


def held_edges(grads: torch.Tensor, edge: float, opts: DriftOptions) -> torch.Tensor:
    """h×w bool: strong gradients in the same place and direction at both ends of the window (T×2C×h×w)."""
    e = grads[: opts.ends].median(0).values
    late = grads[-opts.ends :].median(0).values
    en, ln = e.norm(dim=0), late.norm(dim=0)
    cos = (e * late).sum(0) / (en * ln).clamp_min(1e-6)
    return (en > edge) & (ln > edge) & (cos > opts.agree)


def undrifted(early: torch.Tensor, late: torch.Tensor, dy: int, dx: int, ratio: float) -> torch.Tensor:
    """h×w bool: the pixels whose 3×3 neighbourhood in `late` (C×h×w) matches `early` at no shift at most
    `ratio` of its mismatch at the drift (dy, dx) (late[y, x] against early[y + dy, x + dx])."""
    h, w = early.shape[-2:]
    r = max(abs(dy), abs(dx))
    shifted = F.pad(early[None], (r, r, r, r), mode="replicate")[0, :, r + dy : r + dy + h, r + dx : r + dx + w]
    still = F.avg_pool2d(((late - early) ** 2).sum(0)[None, None], 3, stride=1, padding=1)[0, 0]
    drifted = F.avg_pool2d(((late - shifted) ** 2).sum(0)[None, None], 3, stride=1, padding=1)[0, 0]
    return still <= ratio * drifted


def between(mask: torch.Tensor, gap: int) -> torch.Tensor:
    """h×w bool: `mask` and the pixels with `mask` within `gap` px on both sides along their row or their column
    (`detect.fill_gaps` asks for both: a rectangle's two side edges alone would not fill it)."""
    m = mask[None, None].float()
    k = gap + 1

    def seen(pad: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
        return F.max_pool2d(F.pad(m, pad), size, stride=1)[0, 0] > 0

    rows = seen((k - 1, 0, 0, 0), (1, k)) & seen((0, k - 1, 0, 0), (1, k))
    cols = seen((0, 0, k - 1, 0), (k, 1)) & seen((0, 0, 0, k - 1), (k, 1))
    return mask | rows | cols


def still_part(
    x: torch.Tensor,
    part: torch.Tensor,
    reach: int,
    opts: DriftOptions,
    median: torch.Tensor | None = None,
    edges: tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(its pixels, α's shape; h×w) of `part` (h×w bool) as a mark that held still against its drifting
    surroundings over `x` (T×C×h×w), or None where the surroundings did not drift or the part drifted with them.
    `edges`: (the held edges (h×w bool), the support of edges, least edges, widest gap): the part is cut back to
    what lies between its held edges that did not drift (module docstring, 4)."""
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
    if edges is not None:
        held, support, least, gap = edges
        kept = held[y0:y1, x0:x1] & p & undrifted(early, late, dy, dx, opts.edge_ratio)
        parts = [(c, int((c & kept).sum())) for c in components(support(kept) & p)]
        if sum(n for _, n in parts) < least:
            return None
        top = max(n for _, n in parts)
        # an edge along the drift matches at it about as well as at none (a rectangle's top and bottom as well as
        # the table's edge): the part is what lies between its undrifted edges along a row or a column
        bounds = torch.stack([c for c, n in parts if n >= opts.bound * top]).any(0)
        # ... and along them the held edges that match at no shift at most `ratio` of the drift (hysteresis: a
        # side of a mark whose neighbourhood takes in more of the drifting picture)
        weak = held[y0:y1, x0:x1] & p & undrifted(early, late, dy, dx, opts.ratio)
        for _ in range(opts.follow):
            bounds = bounds | (dilate(bounds[None, None], 1)[0, 0] & weak)
        p = p & between(bounds, gap)
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
        found = still_part(
            x,
            p,
            opts.reach,
            opts.drift,
            median,
            (held, lambda e: _support(e, opts.close, opts.gap), opts.min_edges, opts.gap),
        )
        if found is not None and _misfit(found[0], opts) is None:
            out.append((found[0], held & found[0], found[1]))
    return out
