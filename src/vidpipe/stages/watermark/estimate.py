"""A mark's colour W and opacity α from many frames (issue 17, Build 3, semi-transparent marks).

Under the mark every frame is I_t = α·W + (1 − α)·B_t. The background B_t is unknown, but its slowly varying
part is well predicted by a smooth fill of the frame from around the mark (`fill.pushpull`): B̂_t. Over frames
where the background changes, I_t against B̂_t is then a line per pixel, slope 1 − α (one slope for the three
channels: α is per pixel) and intercept α·W per channel, found by least squares. The residual B_t − B̂_t (the
background's fine detail) lands in the fit's error, not its slope, as long as it is unrelated to B̂_t's changes.

Where B̂ hardly varies (a static shot, or a mark too large for its surroundings to predict) the slope is not
determined: such pixels are `confident` False there. `estimate_flat` then fits a mark of one opacity α0 (times a
per-frame share when it fades) and a few flat colours over every frame at once, which needs no moving background:
on the eval's true masks (7 clips, half size) the still logo went 27.8 → 40.6 dB in the box, transnet's still text
26.4 → 31.9, the fading logo 26.9 → 30.9 (the remover filled them before).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fill import dilate, erode, harmonic, pushpull

#: the background prediction must vary by at least this (RMS over frames and channels, 0..1 levels: ~4 of 255)
#: for a pixel's slope to be trusted
MIN_SPREAD = 0.015
#: α below this is no mark at all (a fit's noise on clean pixels)
ALPHA_FLOOR = 0.04
#: a pixel's fit needs at least this many frames with its background known
MIN_SAMPLES = 4
#: the fill around the support is taken this many px out, past the mark's anti-aliased rim
GUARD = 2
#: `estimate_flat`: α0 is the median of the projected α at or above this share of their 95th percentile
HIGH_SHARE = 0.8
#: `estimate_flat`: a part of the mark needs this many high px for its own opacity reading
PART_PX = 8
#: `estimate_flat`: a part reading an opacity above this share of the mark's median one sets the mark's α0 (the
#: parts of one mark disagree by 1–5 % on the eval's other clips: their noise, left alone)
ONE_GAP = 1.05
#: `estimate_flat`: a pixel whose projected α is at least this share of α0 is the core (α0 exactly)
CORE = 0.9
#: `estimate_flat`: an interior pixel (1 px in) stays core unless its projected α is below this share of α0
CORE_INNER = 0.75
#: `estimate_flat`: a fading mark's frame takes the background reading of the free frames whose picture around
#: the mark differs from it by at most this times the least such difference (same shot; `_alike_zero`)
ALIKE = 1.5
#: `estimate_flat`: rounds of core / rim decision
REFINE = 2
#: `estimate_flat`: a frame whose share of the mark's α is below this share of the largest makes the mark a fading
#: one (α scaled per frame); above it every frame is taken to hold the same α (no per-frame noise, no flicker:
#: transnet's static text, α 0.6, spread to 0.9 by its moving background alone)
FADE_SPREAD = 0.75
#: `estimate_flat`: a mark's core whose colour varies by no more than this (median absolute deviation, 0..1:
#: one level of 255) is opaque
OPAQUE_MAD = 1 / 255
#: `estimate_flat`: an opaque mark's rim pixels projected below this α are inverted, not filled
OPAQUE_RIM = 0.5
#: `estimate_flat`: an opaque mark's part needs this many interior px to read its colour from
OPAQUE_CORE_PX = 16
#: `estimate_flat`: the rim is re-fitted against the inverted core only below this α0 (above it the core's
#: inversion amplifies noise by 1 / (1 − α0) ≥ 10 and the remover fills it instead)
RIM_REFIT_MAX = 0.9
#: `estimate_flat`: the RMS of W − B̂ (0..1) below which α is not determined (mark and background alike)
MIN_LEVER = 0.05


@dataclass(frozen=True)
class Blend:
    """A mark's estimate on a crop: α (h×w), W (3×h×w), where the estimate holds (h×w bool) and, from
    `estimate_flat`, each frame's share of α (T,: a fading mark's α_t = scale_t · α; ones when it holds still)."""

    alpha: torch.Tensor
    colour: torch.Tensor
    confident: torch.Tensor
    scale: torch.Tensor | None = None


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


def labels(mask: torch.Tensor) -> torch.Tensor:
    """Connected parts (8-neighbour) of an h×w bool mask: each its own integer > 0, 0 outside."""
    h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(h, w)
    lab = torch.where(mask, ids, torch.zeros_like(ids))
    while True:
        grown = torch.where(mask, F.max_pool2d(lab[None, None], 3, 1, 1)[0, 0], lab)
        if torch.equal(grown, lab):
            return lab.long()
        lab = grown


def spread_labels(lab: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """`lab` (h×w long, 0 = none) grown over `region` (h×w bool): each pixel takes a nearest labelled one's."""
    lab = torch.where(region, lab, torch.zeros_like(lab))
    while True:
        grown = F.max_pool2d(lab[None, None].float(), 3, 1, 1)[0, 0].long()
        new = torch.where(region & (lab == 0), grown, lab)
        if torch.equal(new, lab):
            return lab
        lab = new


def extreme_colour(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The colour W (3,) where the ray from `background` through `image` (3, each 0..1) leaves the RGB cube: of
    the W on that line (I = α·W + (1 − α)·B holds for each with its own α) the most saturated, the smallest α."""
    d = image - background
    room = torch.where(d > 0, (1 - background) / d.clamp_min(1e-9), background / (-d).clamp_min(1e-9))
    step = room.min().clamp(1.0, 1e6)  # W is at least as far from B as I is
    return (background + step * d).clamp(0, 1)


def estimate_flat(frames: torch.Tensor, support: torch.Tensor, free: torch.Tensor | None = None) -> Blend:
    """α and W inside `support` (h×w bool) of a mark of one opacity α0 (its anti-aliased rim less) and a few flat
    colours, from `frames` (T×3×h×w, the mark the same in each), with no need for the background to move.

    1. B̂: the harmonic fill of the support from around it (the pixels outside a true mask are the picture).
    2. W per part of the mark (the parts of its 1 px erosion, each support pixel joined to the nearest): the
       line from the part's mean B̂ through its mean I holds W whatever α0 is; `extreme_colour` takes its most
       saturated point, the smallest α0 (a static background cannot tell them apart, and an α0 too small only
       lowers the core's contrast, one too large amplifies it). Megamind's logo, α 0.45: 0.42.
    3. α per pixel: I − B̂ projected on W − B̂ over all frames; α0 the median of the high ones (the core's);
       each frame's share of α0 (a fade) when their projections spread past `FADE_SPREAD`; a part whose own W
       needs a larger α0 sets it for all (`_one_opacity`). `free` (F×3×h×w: frames of the shot without the
       mark) read what the background alone projects to, taken off each frame's reading: the eval's fading logo's
       shares came out 0.22 for 0.11 on its first frame without it (flicker 0.807 → 0.761).
    4. `REFINE` times (`_refine`): the core (a pixel whose α, projected against the mean of its four neighbours'
       inverted background, is at least `CORE` × α0) takes α0 exactly and is inverted, so its detail comes back;
       the rest (the anti-aliased rim, 1–2 px) is filled between the outside and the inverted core and
       re-projected (≤ α0).
    Pixels where W and B̂ are too alike to tell α (`MIN_LEVER`) are not `confident`, nor any of an opaque mark
    (its core one flat colour, `OPAQUE_MAD`, or α0 ≥ `RIM_REFIT_MAX`): the remover fills those."""
    t, _, h, w = frames.shape
    hole = support[None, None].expand(t, 1, h, w)
    bg = harmonic(frames, hole)
    core0 = erode(support[None, None], 1)[0, 0]
    lab = spread_labels(labels(core0 if bool(core0.any()) else support), support)
    lab = torch.where(support & (lab == 0), labels(support) + int(lab.max()), lab)  # parts with no core
    colour = torch.zeros_like(frames[0])
    for j in lab[support].unique().tolist():
        part = lab == j
        inner = part & core0 if bool((part & core0).any()) else part
        colour[:, part] = extreme_colour(frames[:, :, inner].mean((0, 2)), bg[:, :, inner].mean((0, 2)))[:, None]
    scale = torch.ones(t, dtype=frames.dtype, device=frames.device)
    proj, den = _project(frames, bg, colour, scale)
    high = support & (proj >= HIGH_SHARE * proj[support].quantile(0.95))
    if not bool(high.any()):
        return Blend(alpha=support.to(frames.dtype), colour=colour, confident=torch.zeros_like(support), scale=scale)
    if _flat_core(frames, core0, lab):
        return _opaque_rim(frames, support, core0, lab, bg, scale)
    # each frame's share of α: the median over the high pixels of its own projection, over the largest one's
    lever = colour - bg
    each = ((frames - bg) * lever).sum(1)[:, high] / (lever * lever).sum(1)[:, high].clamp_min(1e-9)
    if bool((each.median(1).values < FADE_SPREAD * each.median(1).values.max()).any()):
        zero = None
        if free is not None and len(free):
            fb = harmonic(free, support[None, None].expand(len(free), 1, h, w))
            lev = colour - fb
            zero = (((free - fb) * lev).sum(1)[:, high] / (lev * lev).sum(1)[:, high].clamp_min(1e-9)).median(1).values
            zero = _alike_zero(frames, free, support, zero)
        scale = _shares(each.median(1).values, zero)
        proj, den = _project(frames, bg, colour, scale)
    alpha0 = float(proj[high].median().clamp(ALPHA_FLOOR, 1.0))
    colour, alpha0, proj = _one_opacity(frames, bg, colour, scale, lab, core0, high, proj, alpha0)
    if alpha0 >= RIM_REFIT_MAX:
        none = torch.zeros_like(support)
        return Blend(alpha=support.to(frames.dtype), colour=colour, confident=none, scale=scale)
    # strokes a few px wide first: only what projects near α0 is core. Where the support's inside (2 px in and
    # next to it) then projects to α0 nearly everywhere, it is a solid inside whose texture would move single
    # pixels' projections by ±10 % of α0: all of it is core (megamind's still logo, α 0.45: 31.1 → 39.6 dB on its
    # pixels; vtest's text, partly covered inside, keeps the first reading: 34.9 dB, 28.4 taken as solid)
    alpha, scale1, den, back = _refine(frames, support, colour, alpha0, scale, proj, interior=False, free=free)
    deep = erode(support[None, None], 2)[0, 0]
    thick = core0 & dilate(deep[None, None], 1)[0, 0]
    if bool(thick.any()):
        around = F.conv2d(F.pad(back, (1, 1, 1, 1), mode="replicate"), _CROSS.to(back).expand(3, 1, 3, 3), groups=3)
        loo = _project(frames, around, colour, scale1)[0][thick] / alpha0
        if float(loo.quantile(0.25)) >= CORE:
            alpha, scale1, den, _ = _refine(frames, support, colour, alpha0, scale, proj, interior=True, free=free)
    confident = support & (den / (3 * t) >= MIN_LEVER**2)
    return Blend(alpha=alpha, colour=colour, confident=confident, scale=scale1)


def _one_opacity(
    frames: torch.Tensor,
    bg: torch.Tensor,
    colour: torch.Tensor,
    scale: torch.Tensor,
    lab: torch.Tensor,
    core0: torch.Tensor,
    high: torch.Tensor,
    proj: torch.Tensor,
    alpha0: float,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """(W, α0, α per pixel) with one opacity for every part: each part's W was put where its own line leaves the
    cube (its smallest α); a part needing more than `ONE_GAP` × α0 sets α0, and every part's W moves along its
    line to that α0. A median over all parts let the largest part's α0 invert a part whose W lies farther out:
    the eval's fading logo (α 0.7, an orange part at 0.58, a blue one at 0.67) read 0.61 and its blue part came
    out 31 levels too dark in red."""
    each = {}
    for j in lab[high].unique().tolist():
        part = high & (lab == j)
        if int(part.sum()) >= PART_PX:
            each[j] = float(proj[part].median())
    if not each or max(each.values()) <= ONE_GAP * alpha0:
        return colour, alpha0, proj
    top = min(1.0, max(each.values()))
    colour = colour.clone()
    for j in lab[lab > 0].unique().tolist():
        part = lab == j
        inner = part & core0 if bool((part & core0).any()) else part
        b = bg[:, :, inner].mean((0, 2))
        # on the line from the part's mean B̂ through its mean I: α·(W − B̂) stays the same
        colour[:, part] = (b + (colour[:, part].mean(1) - b) * each.get(j, alpha0) / top).clamp(0, 1)[:, None]
    return colour, top, _project(frames, bg, colour, scale)[0]


def _refine(
    frames: torch.Tensor,
    support: torch.Tensor,
    colour: torch.Tensor,
    alpha0: float,
    scale: torch.Tensor,
    proj: torch.Tensor,
    interior: bool,
    free: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`estimate_flat`'s step 4: (α, each frame's share, the projection's lever, the inverted background). With
    `interior`, the support 2 px in (and 1 px in where next to it) is core whatever it projects to: a logo's
    solid inside, whose texture moves the projection by ±10 % of α0; without, only what projects near α0
    (strokes a few px wide, whose centres are partly covered)."""
    t, _, h, w = frames.shape
    core1 = erode(support[None, None], 1)[0, 0]
    deep = erode(support[None, None], 2)[0, 0] if interior else torch.zeros_like(support)
    thick = core1 & dilate(deep[None, None], 1)[0, 0]
    alpha = torch.where(support, proj.clamp(0, alpha0), torch.zeros_like(proj))
    alpha = torch.where(support & (thick | (proj >= CORE * alpha0)), torch.full_like(alpha, alpha0), alpha)
    fading = not bool((scale == 1).all())
    cross = _CROSS.to(frames).expand(3, 1, 3, 3)
    den = torch.zeros_like(proj)
    back = frames
    for _ in range(REFINE):
        s = scale.view(t, 1, 1, 1)
        back = torch.where(support, (frames - s * alpha * colour) / (1 - s * alpha), frames).clamp(0, 1)
        around = F.conv2d(F.pad(back, (1, 1, 1, 1), mode="replicate"), cross, groups=3)
        loo = _project(frames, around, colour, scale)[0] / alpha0
        core = deep | (thick & (loo >= CORE_INNER)) | (support & (loo >= CORE))
        if fading and bool(core.any()):
            # each frame's share again, against the neighbours' background (1 px away, not the whole mark's)
            lever = colour - around
            each = ((frames - around) * lever).sum(1)[:, core] / (lever * lever).sum(1)[:, core].clamp_min(1e-9)
            zero = None
            if free is not None and len(free):
                fa = F.conv2d(F.pad(free, (1, 1, 1, 1), mode="replicate"), cross, groups=3)
                lev = colour - fa
                zero = ((free - fa) * lev).sum(1)[:, core] / (lev * lev).sum(1)[:, core].clamp_min(1e-9)
                zero = _alike_zero(frames, free, support, zero.median(1).values)
            scale = _shares(each.median(1).values, zero)
            s = scale.view(t, 1, 1, 1)
        rim = support & ~core
        inner = ((frames - s * alpha0 * colour) / (1 - s * alpha0)).clamp(0, 1)
        bg = harmonic(torch.where(core, inner, frames), rim[None, None].expand(t, 1, h, w))
        proj, den = _project(frames, bg, colour, scale)
        alpha = torch.where(core, torch.full_like(alpha, alpha0), torch.where(rim, proj.clamp(0, alpha0), alpha))
    s = scale.view(t, 1, 1, 1)
    back = torch.where(support, (frames - s * alpha * colour) / (1 - s * alpha).clamp_min(1e-3), frames).clamp(0, 1)
    return alpha, scale, den, back


def _opaque_rim(
    frames: torch.Tensor,
    support: torch.Tensor,
    core: torch.Tensor,
    lab: torch.Tensor,
    bg: torch.Tensor,
    scale: torch.Tensor,
) -> Blend:
    """An opaque mark: W is its core's colour exactly; only the faint part of its anti-aliased rim (projected
    α below `OPAQUE_RIM`) is `confident`, to be inverted, the rest filled."""
    # 2 px in and next to it: a stroke 1–2 px wide is anti-aliased all through, its 1 px erosion not one colour
    solid = core & dilate(erode(support[None, None], 2), 1)[0, 0]
    colour = torch.zeros_like(frames[0])
    known = torch.zeros_like(support)
    for j in lab[support].unique().tolist():
        part = lab == j
        if int((part & solid).sum()) >= OPAQUE_CORE_PX:  # a part whose solid inside shows its colour
            colour[:, part] = frames[:, :, part & solid].transpose(0, 1).reshape(3, -1).median(1).values[:, None]
            known |= part
    proj, den = _project(frames, bg, colour, scale)
    alpha = torch.where(support, proj.clamp(0, 1), torch.zeros_like(proj))
    confident = known & ~core & (alpha < OPAQUE_RIM) & (den / (3 * frames.shape[0]) >= MIN_LEVER**2)
    return Blend(
        alpha=torch.where(confident, alpha, support.to(alpha)), colour=colour, confident=confident, scale=scale
    )


def _alike_zero(frames: torch.Tensor, free: torch.Tensor, support: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Per frame (T,), what the frames without the mark that show the most alike picture read (`zero`: each free
    frame's reading, F,): the median over the free frames whose picture around the mark is within `ALIKE` of the
    closest one's. A cut changes what the background alone projects to (the eval's fading logo: +0.05 before its
    cut, −0.017 after), so one reading for all frames put the shares before the cut 0.06 too high."""
    around = ~dilate(support[None, None], GUARD)[0, 0]
    if not bool(around.any()):
        return zero.median().expand(frames.shape[0])
    d = (frames[:, None, :, around] - free[None, :, :, around]).abs().mean((2, 3))  # T×F
    near = d <= ALIKE * d.min(1, keepdim=True).values + 1e-6
    picked = torch.where(near, zero[None].expand_as(d), torch.full_like(d, float("nan")))
    return picked.nanmedian(1).values


def _shares(each: torch.Tensor, zero: torch.Tensor | None = None) -> torch.Tensor:
    """Each frame's share of α from its projected α (T,): over the median of the frames within `FADE_SPREAD` of
    the largest (the frames where the mark is at full strength count as 1, not the noisiest one). `zero` (T,):
    what each frame's background alone reads (`_alike_zero`), taken off."""
    if zero is not None:  # what a frame without the mark reads: the background's detail, not the mark
        each = each - zero
    top = each[each >= FADE_SPREAD * each.max()].median().clamp_min(1e-6)
    return (each / top).clamp(0, 1)


def _flat_core(frames: torch.Tensor, core: torch.Tensor, lab: torch.Tensor) -> bool:
    """Whether every part's core is one colour in every frame (median deviation ≤ `OPAQUE_MAD`): an opaque
    mark, which shows nothing of the picture behind it; a semi-transparent one carries the picture's texture."""
    for j in lab[core].unique().tolist():
        v = frames[:, :, core & (lab == j)]
        centre = v.transpose(0, 1).reshape(3, -1).median(1).values.view(1, 3, 1)
        if float((v - centre).abs().median()) > OPAQUE_MAD:
            return False
    return bool(core.any())


_CROSS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3)


def _project(
    frames: torch.Tensor, background: torch.Tensor, colour: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(α per pixel: I_t − B_t projected on scale_t · (W − B_t) over frames and channels, that lever's Σ|·|²)."""
    lever = (colour - background) * scale.view(-1, 1, 1, 1)
    den = (lever * lever).sum((0, 1))
    return ((frames - background) * lever).sum((0, 1)) / den.clamp_min(1e-9), den


#: `FlatMemory`: a mark's estimate stops changing once this many frames' worth (Σ each frame's share) fed it
SETTLED = 32.0


@dataclass
class FlatMemory:
    """One mark's `estimate_flat` carried across the stage's windows: each window's α, W and confidence join a
    running mean weighted by its frames' shares, and every window inverts with that mean. Each window fitting its
    own made the output step at window edges (the eval's fading logo: 3.2 and 2.2 levels of flicker there, 0.3
    elsewhere). Once `SETTLED` frames fed it, it stays fixed. Holds three h×w maps, never frames."""

    alpha: torch.Tensor | None = None
    colour: torch.Tensor | None = None
    confident: torch.Tensor | None = None
    weight: float = 0.0

    def merge(self, flat: Blend, ramp: torch.Tensor | None = None) -> Blend:
        """`flat` (a window's fit on the same crop) with this window's own per-frame shares but the mean's α, W
        and confidence (a fade's shares are relative to its strongest frames: comparable across windows). `ramp`
        (T,: 0 at the last frame the previous window wrote, 1 at this one's last) moves α and W from the previous
        mean to the new one frame by frame (T×h×w, T×3×h×w), so no window edge steps."""
        before = (self.alpha, self.colour) if self.alpha is not None and self.alpha.shape == flat.alpha.shape else None
        scale = flat.scale if flat.scale is not None else torch.ones(1, device=flat.alpha.device)
        if self.alpha is None or self.alpha.shape != flat.alpha.shape:
            self.alpha, self.colour, self.confident, self.weight = flat.alpha, flat.colour, flat.confident.float(), 0.0
        if self.weight < SETTLED:
            w, k = float(scale.sum()), self.weight
            mean = lambda old, new: (old * k + new * w) / max(k + w, 1e-9)  # noqa: E731
            self.alpha = mean(self.alpha, flat.alpha)
            self.colour = mean(self.colour, flat.colour)
            self.confident = mean(self.confident, flat.confident.float())
            self.weight = k + w
        assert self.colour is not None and self.confident is not None
        alpha, colour = self.alpha, self.colour
        if ramp is not None and before is not None and before[1] is not None:
            lam = ramp.to(alpha).view(-1, 1, 1)
            alpha = before[0] + lam * (alpha - before[0])
            colour = before[1] + lam[:, None] * (colour - before[1])
        return Blend(alpha=alpha, colour=colour, confident=self.confident >= 0.5, scale=flat.scale)
