"""A mark's shape from how much of the picture's change it holds back (issue 17, `--dewatermark auto`).

Once detection knows where a mark found over a still or slow picture is and in which frames it is present, its
pixels are those whose change over those frames is attenuated against the picture around it: (1 − α) of it under
a mark of opacity α, none under an opaque one. Over all of a mark's frames this is far less noisy than over one
sub-window, and unlike the support of its held edges it reaches the whole of a thin ring or a word's letters.
The surroundings' change is measured outside the mark's region (a large mark fills most of a neighbourhood, and
a quantile over it would be the mark's own attenuated change)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .fill import dilate, erode


@dataclass(frozen=True, kw_only=True)
class ShapeOptions:
    #: the support the sub-windows found, grown by this (analysis px): a thin ring's or a letter's missed side
    grow: int = 2
    #: least share of the peak a pixel holds back to be the mark's
    least: float = 0.25
    #: α is this share the span's attenuation and the rest the sub-windows' shape: the span's is less noisy
    #: where the picture moves under the mark, the sub-windows' edge support holds where it is still there
    #: (on the eval's clips, pooled IoU 0.600 at 0.7, 0.589 at 1.0, 0.588 at 0.5)
    share: float = 0.7


def _outside_quantile(change: torch.Tensor, region: torch.Tensor, radius: int, q: float) -> torch.Tensor:
    """h×w: the `q` quantile of `change` over the pixels outside `region` in a (2·radius + 1)² square around
    each pixel, taken on a 2× reduced map; where a square holds none, the quantile over every pixel outside."""
    masked = torch.where(region, torch.full_like(change, float("nan")), change)
    small = F.avg_pool2d(masked[None, None], 2, ceil_mode=True)  # NaN where any of the 4 is in the region
    k = 2 * max(1, radius // 2) + 1
    cols = F.unfold(F.pad(small, (k // 2,) * 4, mode="replicate"), k)
    local = torch.nanquantile(cols, q, dim=1).view(small.shape)
    rest = change[~region]
    fallback = float(rest.quantile(q)) if rest.numel() else 0.0
    local = torch.nan_to_num(local, nan=fallback)
    return F.interpolate(local, size=change.shape, mode="bilinear", align_corners=False)[0, 0]


def held_shape(
    frames: torch.Tensor, support: torch.Tensor, *, grow: int, reach: int, around: float, least: float, noise: float
) -> torch.Tensor | None:
    """h×w α's shape (0..1, 1 at the mark's strongest pixels) over `frames` (T×C×h×w, the mark present in each):
    how much less than its surroundings each pixel near `support` (grown by `grow` px) changes, scaled by its
    0.9 quantile over the mark, kept where at least `least` of the peak and connected to `support`. None where
    the picture around does not change enough (at least `noise` per frame) to say. The mark must be there: over
    clean footage the pixels that happen to change least would be taken for it."""
    if len(frames) < 2:
        return None
    change = (frames[1:] - frames[:-1]).abs().mean((0, 1))
    region = dilate(support[None, None], grow)[0, 0]
    # soft edges and the rim a mark's blur spreads are left out of the reference
    ref = _outside_quantile(change, dilate(region[None, None], 1)[0, 0], reach, around)
    if float(ref[region].median()) < noise:
        return None
    held = (1 - change / ref.clamp_min(1e-6)).clamp(0, 1) * region
    inside = held[support]
    # the mark is there (detection took it); its strongest pixels scale the rest
    peak = float(inside.quantile(0.9)) if inside.numel() else 0.0
    if peak <= 0:
        return None
    alpha = (held / peak).clamp(0, 1)
    kept = alpha >= least
    # a noisy pixel does not punch a hole; parts that do not touch the support are the scene's
    kept = erode(dilate(kept[None, None], 1), 1)[0, 0] & region
    seeds = kept & support
    for _ in range(2 * grow + 2):
        seeds = dilate(seeds[None, None], 1)[0, 0] & kept
    return alpha * seeds


def span_alpha(
    frames: torch.Tensor,
    support: torch.Tensor,
    alpha: np.ndarray,
    f: int,
    opts: ShapeOptions,
    *,
    reach: int,
    around: float,
    noise: float,
) -> np.ndarray | None:
    """A mark's α (H×W, full size) over one span of its frames (`frames`: T×C×h×w at the analysis resolution,
    `f` times smaller): `opts.share` of `held_shape` and the rest `alpha` (the sub-windows' shape) scaled to peak
    1. None where the span says nothing (see `held_shape`)."""
    held = held_shape(frames, support, grow=opts.grow, reach=reach, around=around, least=opts.least, noise=noise)
    peak = float(alpha.max())
    if held is None or peak <= 0 or not bool((held > 0).any()):
        return None
    height, width = alpha.shape
    # blocks of f×f full-size pixels per analysis pixel, as detection's masks are brought to full size
    full = held.repeat_interleave(f, 0).repeat_interleave(f, 1)[:height, :width].float().cpu().numpy()
    return (opts.share * full + (1 - opts.share) * alpha / peak).astype(np.float32)


def step_alpha(
    marked: torch.Tensor, clear: torch.Tensor, strength: torch.Tensor, region: torch.Tensor, least: float
) -> torch.Tensor:
    """h×w α (0..1, 0 off `region`) of a one-colour mark from the medians of frames with it (`marked`, C×h×w) and
    without it (`clear`): a mark of colour W and opacity α makes each pixel α·W + (1 − α)·B, so α is the step's
    share of W − B, W the mark side's median colour over the strongest (0.9 quantile) of `strength` (the step's
    size, 0..1 over `region`). The step's size alone is α·|W − B|: where the picture under the mark is nearer
    its colour, a pixel of full α came out weaker and the eval's half-maximum cut it. Where W − B is under
    `least` (the mark's colour over a picture of its colour) or the fit falls below `strength`, `strength`
    stands, so α only grows inside the step's region."""
    inside = strength[region]
    if inside.numel() == 0:
        return strength
    top = region & (strength >= inside.quantile(0.9))
    colour = marked[:, top].median(dim=1).values[:, None, None]
    ref = colour - clear
    size = (ref * ref).sum(0)
    fit = ((marked - clear) * ref).sum(0) / size.clamp_min(1e-6)
    fit = torch.where(size >= least * least, fit.clamp(0, 1), torch.zeros_like(fit))
    return torch.maximum(strength, fit) * region


def beyond(part: torch.Tensor) -> torch.Tensor:
    """h×w bool: `part` and the pixel right of and below each of its pixels. Forward differences put an edge on
    the pixel before each step, so a support found from them stops a pixel short of a mark's right and lower
    edges (transnet's ring logo lost its right and lower rims to the eval's half-maximum)."""
    out = part.clone()
    out[:, 1:] |= part[:, :-1]
    out[1:, :] |= part[:-1, :]
    return out
