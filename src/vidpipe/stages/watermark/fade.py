"""A mark's shape from the frames of its own shot where it is gone (issue 17, `--dewatermark auto`).

A mark that fades out (or in, or jumps away) while the picture under it holds still leaves, in the same shot,
frames with it and frames without it. Between the median of the first (its presence at full strength) and the
median of the second, the picture is the same and only the mark differs: α·(W − B) at each of its pixels and
nothing elsewhere. Where that difference is at least `least` of its 0.9 quantile over the mark's support is the
mark; over a talking head (Megamind's fade: the mark over a mouth) it is far sharper than how much each pixel
held back the picture's small change (`shape.held_shape`), which took a blob around the logo.

A shot ends at a cut (a frame whose mean change is `cut` times the window's median change): across a cut the
picture differs everywhere. Where the picture around the mark changed between the two sets of frames (motion,
a pan), the difference is the scene's too and nothing is returned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .fill import dilate, erode


@dataclass(frozen=True, kw_only=True)
class FadeOptions:
    #: a frame whose mean change (0..1 levels) is this many times the window's median change starts a shot
    cut: float = 8.0
    #: ... and at least this much (10 of 255): a still shot's noise does not cut it
    least_cut: float = 10 / 255
    #: least frames with the mark at full strength, and without it, in the shot
    frames: int = 3
    #: the support grown by this (analysis px) bounds the shape (a thin ring's or a letter's missed side)
    grow: int = 2
    #: least share of the peak difference a pixel of the mark has
    least: float = 0.25
    #: the median difference in a ring around the mark at most this share of the mark's peak: the picture held
    #: (Megamind's fade: 0.03)
    still: float = 0.15
    #: the ring's width (analysis px)
    ring: int = 4
    #: most median change per frame (0..1 levels, any channel) in the ring over the shot: the picture holds still
    #: (Megamind's fade: 1.2 of 255; transnet's jumping logo over a moving shot, where the difference took the
    #: scene around the logo: 10.5)
    motion: float = 3 / 255
    #: a frame next to the run is the fade's where its strength (`fade_span`) exceeds the highest of its shot's
    #: mark-free frames by this share of the full mark (Megamind's fade: its first frame, at 0.11 of full α,
    #: 0.17 over them; the mark-free frames of a shot spread over 0.07)
    faint: float = 0.05


def runs(presence: list[float], threshold: float) -> list[tuple[int, int]]:
    """(start, stop) runs of frames where `presence` exceeds `threshold`; a single frame below it between two
    that hold the mark (a moment where the picture under it matched the mark's own edges) does not split a run."""
    held = [p > threshold for p in presence]
    for i in range(1, len(held) - 1):
        held[i] = held[i] or (held[i - 1] and held[i + 1])
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(held):
        if not held[i]:
            i += 1
            continue
        j = i
        while j < len(held) and held[j]:
            j += 1
        out.append((i, j))
        i = j
    return out


def shots(x: torch.Tensor, opts: FadeOptions) -> list[tuple[int, int]]:
    """(start, stop) of each shot of the frames `x` (T×C×h×w): cut where a frame's mean change is `cut` times
    the window's median change and at least `least_cut`."""
    if len(x) < 2:
        return [(0, len(x))]
    change = (x[1:] - x[:-1]).abs().mean((1, 2, 3))
    level = max(opts.least_cut, opts.cut * float(change.median()))
    cuts = [i + 1 for i, c in enumerate(change.tolist()) if c >= level]
    bounds = [0, *cuts, len(x)]
    return list(itertools.pairwise(bounds))


def fade_shape(
    x: torch.Tensor,
    support: torch.Tensor,
    presence: list[float],
    run: tuple[int, int],
    full: float,
    opts: FadeOptions | None = None,
) -> torch.Tensor | None:
    """h×w α's shape (1 on the mark's pixels, else 0) of the mark on `support` (h×w bool) present over `run`
    (start, stop) of the frames `x` (T×C×h×w; `presence`: each frame's, `full`: at full strength), from a shot
    holding frames at full strength in the run and frames outside it; None where no shot does or the picture
    around the mark moved."""
    opts = opts or FadeOptions()
    a, b = run
    best: tuple[int, list[int], list[int]] | None = None
    for s, e in shots(x, opts):
        with_mark = [t for t in range(max(s, a), min(e, b)) if presence[t] >= full]
        without = [t for t in range(s, e) if not a <= t < b]
        n = min(len(with_mark), len(without))
        if n >= opts.frames and (best is None or n > best[0]):
            best = (n, with_mark, without)
    if best is None:
        return None
    _, with_mark, without = best
    s, e = min(with_mark + without), max(with_mark + without) + 1
    diff = (x[with_mark].median(0).values - x[without].median(0).values).abs().amax(0)
    region = dilate(support[None, None], opts.grow)[0, 0]
    ring = dilate(region[None, None], opts.ring)[0, 0] & ~region
    inside = diff[support]
    if not bool(ring.any()) or inside.numel() == 0:
        return None
    peak = float(inside.quantile(0.9))
    if peak <= 0 or float(diff[ring].median()) > opts.still * peak:
        return None
    if float((x[s + 1 : e] - x[s : e - 1]).abs().amax(1).mean(0)[ring].median()) > opts.motion:
        return None  # the picture moves: the difference is the scene's too
    alpha = (diff / peak).clamp(0, 1) * region
    kept = alpha >= opts.least
    # a noisy pixel does not punch a hole; parts that do not touch the support are the scene's
    kept = erode(dilate(kept[None, None], 1), 1)[0, 0] & region
    seeds = kept & support
    for _ in range(2 * opts.grow + 2):
        seeds = dilate(seeds[None, None], 1)[0, 0] & kept
    # the mark's pixels at full α: a fade's difference is α·(W − B), whose size follows the picture under it
    return seeds.to(x.dtype) if bool(seeds.any()) else None


def fade_span(x: torch.Tensor, shape: torch.Tensor, run: tuple[int, int], opts: FadeOptions) -> tuple[int, int]:
    """`run` (start, stop) grown by the frames next to it where the mark on `shape` (h×w, 1 on its pixels) is
    fading in or out: a presence test halfway (`runs`) starts a fade late and ends it early. In each shot, the
    difference D between the median of its frames in the run and of those outside it is α·(W − B) on the mark and
    each frame's strength is its difference from the latter projected on D (1: as in the run, 0: gone). The
    lower half of the frames outside the run hold no mark: a frame joins where its strength exceeds their
    highest by `faint`, rises toward the run and touches it (frames that join stay within the shot)."""
    a, b = run
    first, stop = a, b
    weight = shape.to(x.dtype)
    for s, e in shots(x, opts):
        within = [t for t in range(max(a, s), min(b, e))]
        outside = [t for t in range(s, e) if not a <= t < b]
        if len(within) < opts.frames or len(outside) < 2 * opts.frames:
            continue
        base = x[outside].median(0).values
        d = (x[within].median(0).values - base) * weight
        norm = float((d * d).sum())
        if norm <= 0:
            continue
        level = ((x[s:e] - base) * d).sum((1, 2, 3)) / norm
        strength = dict(zip(range(s, e), level.tolist(), strict=True))
        free = sorted(strength[t] for t in outside)[: len(outside) // 2]
        floor = free[-1] + opts.faint
        if s <= a - 1 < e and a in strength:
            t = a - 1
            while t >= s and floor < strength[t] <= strength[t + 1]:
                t -= 1
            first = min(first, t + 1)
        if s <= b < e and b - 1 in strength:
            t = b
            while t < e and floor < strength[t] <= strength[t - 1]:
                t += 1
            stop = max(stop, t)
    return first, stop
