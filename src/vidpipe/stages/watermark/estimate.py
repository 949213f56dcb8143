"""A mark's colour W and opacity α from many frames (issue 17, Build 3, semi-transparent marks).

Under the mark every frame is I_t = α·W + (1 − α)·B_t. The background B_t is unknown, but its slowly varying
part is well predicted by a smooth fill of the frame from around the mark (`fill.pushpull`): B̂_t. Over frames
where the background changes, I_t against B̂_t is then a line per pixel, slope 1 − α (one slope for the three
channels: α is per pixel) and intercept α·W per channel, found by least squares. The residual B_t − B̂_t (the
background's fine detail) lands in the fit's error, not its slope, as long as it is unrelated to B̂_t's changes.

Where B̂ hardly varies (a static shot, or a mark too large for its surroundings to predict) the slope is not
determined: such pixels are `confident` False and the remover treats them as opaque (filled, not inverted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fill import dilate, pushpull

#: the background prediction must vary by at least this (RMS over frames and channels, 0..1 levels: ~4 of 255)
#: for a pixel's slope to be trusted
MIN_SPREAD = 0.015
#: α below this is no mark at all (a fit's noise on clean pixels)
ALPHA_FLOOR = 0.04
#: a pixel's fit needs at least this many frames with its background known
MIN_SAMPLES = 4
#: the fill around the support is taken this many px out, past the mark's anti-aliased rim
GUARD = 2


@dataclass(frozen=True)
class Blend:
    """A mark's estimate on a crop: α (h×w), W (3×h×w), and where the estimate holds (h×w bool)."""

    alpha: torch.Tensor
    colour: torch.Tensor
    confident: torch.Tensor


def estimate_blend(
    frames: torch.Tensor,
    support: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    background: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
) -> Blend:
    """α and W inside `support` (h×w bool) from `frames` (T×3×h×w float 0..1, a crop around the mark in which
    it is present); `weights` (T,) count frames (0: leave out). Outside the support α is 0.

    The background is predicted by a smooth fill from around the mark unless `background` (T×3×h×w) gives it,
    valid where `seen` (T×1×h×w bool): the exact picture another frame showed there (`fill.propagate`). A smooth
    prediction misses the background's detail, which biases α upwards (the regressor's error attenuates the
    slope); propagated pixels are the background itself, so their fit is unbiased."""
    t = frames.shape[0]
    if background is None:
        hole = dilate(support[None, None], GUARD).expand(t, 1, *support.shape)
        background = pushpull(frames, hole)
        seen = torch.ones(t, 1, *support.shape, dtype=torch.bool, device=frames.device)
    assert seen is not None, "background needs seen"
    w = torch.ones(t, device=frames.device) if weights is None else weights.to(frames.device, frames.dtype)
    w = w.view(t, 1, 1, 1) * seen.to(frames.dtype)
    count = w.sum(0)
    w = w / count.clamp_min(1e-6)
    mi = (frames * w).sum(0)
    mb = (background * w).sum(0)
    di, db = frames - mi, background - mb
    cov = (di * db * w).sum((0, 1))
    var = (db * db * w).sum((0, 1))
    slope = (cov / var.clamp_min(1e-9)).clamp(0, 1)
    alpha = 1 - slope
    colour = ((mi - slope * mb) / alpha.clamp_min(1e-3)).clamp(0, 1)
    confident = ((var / 3).sqrt() >= MIN_SPREAD) & (count[0] >= MIN_SAMPLES)
    alpha = torch.where(confident, alpha, torch.ones_like(alpha))
    alpha = torch.where(support & (alpha >= ALPHA_FLOOR), alpha, torch.zeros_like(alpha))
    return Blend(alpha=alpha, colour=colour, confident=confident & support)
