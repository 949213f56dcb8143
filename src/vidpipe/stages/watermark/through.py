"""How much of its surroundings' change each held part lets through, for every part at once (issue 17,
`--dewatermark auto`, detection's speed on busy pictures).

Detection asks of each part of Dekel's support whether it lets through at most `through` of its ring's change over
time (`detect._lets_through`: the ring's mean and median, the part's mean, three host round trips a part). A busy
picture (FFmpeg's cellauto: 960 parts in one 1080p window) made that loop most of detection. Here the ring of every
part (the pixels within `width` px of it, not in it: one window of labels per pixel) and its statistics come at
once, with float64 sums; a part is dropped on them only where the answer is clear by far more than their rounding
(`MARGIN`); the rest (a mark's candidates: a handful) are measured by the exact per-part function, so what
detection decides is what the loop decided, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .detect import DetectOptions

#: relative margin on the float64 means against the exact float32 ones (their rounding differs by ~1e-7)
MARGIN = 1e-3
#: fewer parts than this are measured by the exact function alone (the batched pass would cost more): on a GPU a
#: part's three round trips cost, on a CPU the batched pass's window of labels per pixel does (about 100 ms at
#: 1080p's analysis size, the loop about 0.7 ms a part)
FEW = 16
CPU_FEW = 150


def ring_stats(
    labels: torch.Tensor, ids: torch.Tensor, values: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per component of `labels` (h×w, ids ascending as `regions.label` gives them): (the mean of `values` over its
    ring, float64; the ring's median, exactly as torch's (the lower of two middle values); its own mean of
    `values`, float64; the ring's size). The ring: the pixels within `width` px (a square) of the component and
    not in it, as `detect._ring` takes it."""
    k = len(ids)
    h, w = labels.shape
    dev = labels.device
    idx = torch.where(labels > 0, torch.searchsorted(ids, labels), k)  # h×w: the component's index (k: none)
    size = 2 * width + 1
    # size²×(h·w): the components around each pixel (indices are exact in float32)
    near = F.unfold(F.pad(idx[None, None].float(), (width,) * 4, value=k), size).long()[0]
    own = idx.flatten()[None].expand_as(near)
    pix = torch.arange(h * w, device=dev)[None].expand_as(near)
    keep = (near < k) & (near != own)
    # one (pixel, component) pair however often the component appears around the pixel
    pairs = torch.unique(near[keep] * (h * w) + pix[keep])
    comp, at = pairs // (h * w), pairs % (h * w)
    v = values.flatten()[at]
    counts = torch.zeros(k, dtype=torch.long, device=dev).index_add_(0, comp, torch.ones_like(comp))
    sums = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, comp, v.double())
    # sorted by component, then by value (pairs are sorted by component already: a stable sort by value within)
    order = torch.sort(v, stable=True).indices
    order = order[torch.sort(comp[order], stable=True).indices]
    start = counts.cumsum(0) - counts
    median = v[order][(start + (counts - 1).clamp_min(0) // 2).clamp(max=max(len(v) - 1, 0))] if len(v) else v
    flat = idx.flatten()  # the component's own pixels, into a last bin for none
    own_n = torch.zeros(k + 1, dtype=torch.long, device=dev).index_add_(0, flat, torch.ones_like(flat))[:k]
    own_sum = torch.zeros(k + 1, dtype=torch.float64, device=dev).index_add_(0, flat, values.flatten().double())[:k]
    median = median if len(v) else torch.zeros(k, dtype=values.dtype, device=dev)
    return sums / counts.clamp_min(1), median, own_sum / own_n.clamp_min(1), counts


def lets_through_all(
    labels: torch.Tensor,
    ids: torch.Tensor,
    parts: list[torch.Tensor],
    change: torch.Tensor,
    opts: DetectOptions,
    exact: Callable[[torch.Tensor, torch.Tensor, DetectOptions], float],
) -> list[float]:
    """`exact(part, change, opts)` (`detect._lets_through`) for each of `parts` (the components of `labels`, in
    order) where it might be at most `opts.through`; inf where the batched statistics rule that out by far."""
    if len(parts) < (FEW if labels.device.type == "cuda" else CPU_FEW):
        return [exact(p, change, opts) for p in parts]
    around, median, own, n = (t.tolist() for t in ring_stats(labels, ids, change, opts.close + 2))
    out = []
    for p, a, m, o, c in zip(parts, around, median, own, n, strict=True):
        # the exact answer is inf (the ring hardly moves) or above `through`: clearly so, by MARGIN
        still = c > 0 and (a < opts.motion * (1 - MARGIN) or m < opts.motion / 2)
        through = c > 0 and a >= opts.motion * (1 + MARGIN) and o > opts.through * a * (1 + MARGIN)
        out.append(float("inf") if still or through else exact(p, change, opts))
    return out
