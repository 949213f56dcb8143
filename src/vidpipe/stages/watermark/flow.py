"""Dense motion between two crops with a hole, for copies that follow non-rigid motion (issue 17).

`masked_flow` is a coarse-to-fine Horn–Schunck: the data term (the linearised brightness constancy of all three
channels) weighs only pixels visible in both crops, so the hole gives no data and the smoothness term alone
carries the surroundings' flow across it (a harmonic fill of the flow, as `fill.harmonic` fills pixels). The
data term is robust (Charbonnier, re-weighted at each warp): a person crossing part of the ring pulls the flow
less. It starts from a whole translation (`fill.local_shift`'s answer), which takes the large motion; the flow
adds what a translation cannot follow. All torch, on the crops' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: smoothness weight against the data term (levels 0..1 squared): the flow's pull towards its 4 neighbours' mean.
#: Eval, true masks, half size, 48 frames (`remove.FLOW_MATCH` 0.1): transnet's jumping logo 26.70 / 26.98 / 26.77
#: / 26.53 dB, flicker 3.856 / 3.416 / 3.453 / 3.499 at 1e-3 / 2e-3 / 4e-3 / 8e-3; megamind's jumping text 37.06 /
#: 37.05 / 36.98 / 36.90, 0.979 / 0.986 / 1.001 / 1.016
SMOOTH = 2e-3
#: Charbonnier ε of the data term (0..1 levels): residuals well above it weigh as 1 / |r|. On those clips transnet
#: 26.79 / 26.98 / 26.44 dB, flicker 3.450 / 3.416 / 4.004 at 0.005 / 0.01 / 0.03, and 26.16 / 3.802 with a plain
#: quadratic data term; megamind 36.99 / 37.05 / 37.03 / 36.80, 0.999 / 0.986 / 0.984 / 1.081
ROBUST_EPS = 0.01
#: the coarsest level's short side in px
COARSEST = 8
#: warps (re-linearisations) per level and Jacobi sweeps per warp: transnet 26.57 / 3.489 with 2 warps, 26.68 /
#: 3.542 with 30 sweeps, 26.92 / 3.400 with 120 (twice the time for little)
WARPS = 4
SWEEPS = 60


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """`x` (N×C×h×w) sampled at (y + flow[:, 0], x + flow[:, 1]) (flow N×2×h×w, px), bilinear, the edge clamped."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + flow[:, 0]
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + flow[:, 1]
    grid = torch.stack([2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def inside(flow: torch.Tensor) -> torch.Tensor:
    """N×1×h×w bool: where (y + flow_y, x + flow_x) lies within the crop."""
    h, w = flow.shape[-2:]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1) + flow[:, 0]
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w) + flow[:, 1]
    return ((ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1))[:, None]


def _down(x: torch.Tensor, wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half size, each pixel the weighted mean of its 2×2 cell (weight `wt`), and the cell's mean weight."""
    s = F.avg_pool2d(x * wt, 2, ceil_mode=True)
    ws = F.avg_pool2d(wt, 2, ceil_mode=True)
    return s / ws.clamp_min(1e-6), ws


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences along y and x (one-sided at the edge)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]), 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])


def _mean4(f: torch.Tensor) -> torch.Tensor:
    """Each pixel's 4 neighbours' mean (the edge mirrors its last pixel)."""
    p = F.pad(f, (1, 1, 1, 1), mode="replicate")
    return 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])


def masked_flow(
    ref: torch.Tensor,
    src: torch.Tensor,
    ref_seen: torch.Tensor,
    src_seen: torch.Tensor,
    start: tuple[float, float] = (0.0, 0.0),
    *,
    smooth: float | None = None,
) -> torch.Tensor:
    """2×h×w (dy, dx): the content at (y, x) of `ref` is at (y + dy, x + dx) of `src` (C×h×w crops, 0..1).
    `ref_seen` / `src_seen` (1×h×w bool): the pixels each shows of the picture (not a hole); only pixels seen in
    both take part in the data term, the rest take their neighbours' flow. `start`: a whole translation to begin
    from (dy, dx); `smooth`: `SMOOTH` unless given."""
    smooth = SMOOTH if smooth is None else smooth
    levels = [(ref[None], src[None], ref_seen[None].to(ref.dtype), src_seen[None].to(ref.dtype))]
    while min(levels[-1][0].shape[-2:]) >= 2 * COARSEST:
        r, s, rw, sw = levels[-1]
        r2, rw2 = _down(r, rw)
        s2, sw2 = _down(s, sw)
        levels.append((r2, s2, (rw2 > 0.99).to(r.dtype), (sw2 > 0.99).to(r.dtype)))
    scale = 2 ** (len(levels) - 1)
    h, w = levels[-1][0].shape[-2:]
    flow = torch.tensor([start[0] / scale, start[1] / scale], dtype=ref.dtype, device=ref.device)
    flow = flow.view(1, 2, 1, 1).expand(1, 2, h, w).clone()
    for k, (r, s, rw, sw) in enumerate(reversed(levels)):
        if k:
            flow = 2 * F.interpolate(flow, size=r.shape[-2:], mode="bilinear", align_corners=False)
        flow = _refine(r, s, rw, sw, flow, smooth)
    return flow[0]


def _refine(
    ref: torch.Tensor, src: torch.Tensor, ref_w: torch.Tensor, src_w: torch.Tensor, flow: torch.Tensor, smooth: float
) -> torch.Tensor:
    """`WARPS` linearisations of the data term around `flow` (1×2×h×w), each solved by `SWEEPS` Jacobi sweeps."""
    for _ in range(WARPS):
        ws = warp(src, flow)
        seen = ref_w * (warp(src_w, flow) > 0.99).to(ref.dtype) * inside(flow).to(ref.dtype)
        gy, gx = _grad(ws)
        rt = ws - ref  # the residual at the current flow
        # Charbonnier: each pixel's data weight 1 / sqrt(r² + ε²), normalised to 1 at r = 0
        rob = ROBUST_EPS / (rt.pow(2).sum(1, keepdim=True) + ROBUST_EPS**2).sqrt()
        wd = seen * rob
        a11 = (wd * (gy * gy).sum(1, keepdim=True))[:, 0]
        a12 = (wd * (gy * gx).sum(1, keepdim=True))[:, 0]
        a22 = (wd * (gx * gx).sum(1, keepdim=True))[:, 0]
        b1 = (wd * (gy * rt).sum(1, keepdim=True))[:, 0]
        b2 = (wd * (gx * rt).sum(1, keepdim=True))[:, 0]
        base = flow
        k = 4 * smooth
        det = (a11 + k) * (a22 + k) - a12 * a12
        cur = flow
        for _ in range(SWEEPS):
            m = _mean4(cur) - base  # the neighbours' mean, as an increment on `base`
            r1 = k * m[:, 0] - b1
            r2 = k * m[:, 1] - b2
            d1 = ((a22 + k) * r1 - a12 * r2) / det
            d2 = ((a11 + k) * r2 - a12 * r1) / det
            cur = base + torch.stack([d1, d2], 1)
        flow = cur
    return flow
