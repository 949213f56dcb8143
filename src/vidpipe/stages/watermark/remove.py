"""Removing one mark from the frames of a window, best information first (issue 17, Build 3).

On a crop around the mark (its box grown by the ring and the shift search, so the whole frame is never touched):
1. **invert** the blend where the mark is semi-transparent and its colour is known or estimated
   (`estimate.estimate_blend` where other frames showed the background, else `estimate.estimate_flat`: one
   opacity and flat colours, a fade's per-frame share): B = (I − α_t·W) / (1 − α_t), exact where α_t < `INVERT_MAX`;
2. **propagate** into the opaque rest (α ≥ `INVERT_MAX`, or pixels whose α could not be estimated): from other
   frames of the window where the background under it was visible (`fill.propagate`), or copied from the mark-free
   frames: unshifted, else warped by the dense motion between the two frames (`flow.masked_flow`: copies that
   follow non-rigid motion), chained from a copied neighbour where no free frame matches;
3. **fill** what no frame showed: where the surroundings are static over the window, one fill of the window's
   median picture serves every frame (nothing flickers); elsewhere each frame's own; the fill is `fill.harmonic`.
The hole is the mark's own pixels (α > 0), not dilated or feathered: α > 0 already holds every pixel the mark
touches, and each pixel outside it is the picture itself, which no fill matches (a 2 px dilation with a feather
ramp cost 2.8 dB in the box on the eval's clips, true masks). Pixels with α = 0 are the input's, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .estimate import FlatMemory, estimate_blend, estimate_flat
from .fill import RING_MATCH, dilate, harmonic, local_shift, propagate, shift_bilinear, subpixel, within
from .flow import inside, masked_flow, warp

#: α at or above this is treated as opaque: inverting it would amplify noise by 1 / (1 − α) ≥ 10
INVERT_MAX = 0.9
#: px around the mark whose background, seen in other frames, also feeds the α/W fit (and the crop's margin)
FEATHER = 2
#: px of surroundings whose motion decides whether another frame may fill the hole
RING = 6
#: largest shift (px) searched between two frames
SHIFT_RADIUS = 24
#: frames on each side a hole may be filled from
REACH = 12
#: a mark-free frame's picture is taken under the mark when its ring matches within this RMS (0..1 levels, about
#: 10 of 255), looser than `fill.RING_MATCH`: one frame's picture is copied, not a chain of shifts. The eval's true
#: masks (7 clips, half size, 24 frames) gave 26.6 / 27.7 / 28.3 / 28.4 dB in the box at 0.01 / 0.02 / 0.04 /
#: 0.06 (Telea 24.5)
FREE_MATCH = 0.04
#: mark-free frames tried shifted for a frame none matched unshifted: 28.27 → 28.48 dB on those clips (3)
FREE_TRIES = 3
#: a copy found shifted weighs this much against the frame's own fill: its integer shift, found per frame, makes
#: its texture jitter from frame to frame. Eval, true masks, half size, 48 frames: megamind's jumping opaque text
#: 34.43 / 34.11 / 34.44 / 34.51 dB, flicker 1.593 / 1.266 / 1.380 / 1.446 at 1 / 0.5 / 0.7 / 0.8; no other clip
#: copies shifted
FREE_SHIFTED = 0.7
#: a shifted copy matching worse than `FREE_MATCH` but within this is still taken where the mark is opaque (nothing
#: else saw there), its weight falling to 0 here: a frame between two copied ones is no step to a fill and back.
#: Megamind's jumping opaque text 34.53 / 34.68 / 34.79 / 34.83 dB, flicker 1.224 / 1.183 / 1.149 / 1.145 at
#: 0.04 (off) / 0.06 / 0.08 / 0.11; transnet's jumping logo 25.08 / 25.17 / 25.21 / 25.28, 3.623 / 3.645 / 3.640 /
#: 3.672; no other clip has such copies
FREE_LOOSE = 0.08
#: a copy's weight is the mean of its frame's and its neighbours' (a frame without a copy counts 0) under this
#: kernel over time: the match, and so the weight, is found per frame. Eval, true masks, half size, 48 frames:
#: megamind's jumping opaque text 35.96 / 35.99 / 36.00 / 35.99 dB, flicker 1.070 / 1.061 / 1.059 / 1.059 at none /
#: (1, 2, 1) / (1, 2, 3, 2, 1) / (1, 1, 1, 1, 1); transnet's jumping logo 25.21 / 25.19 / 25.17 / 25.15, flicker
#: 3.640 / 3.633 / 3.629 / 3.627
EASE = (1.0, 2.0, 3.0, 2.0, 1.0)
#: a frame with opaque pixels and no unshifted copy takes a motion-following copy (`_follow`: a dense flow from
#: the ring, carried smoothly across the hole, `flow.masked_flow`) from the nearest mark-free frames in time, the
#: first whose ring matches within this RMS after warping. Eval, true masks, half size, 48 frames: transnet's
#: jumping logo 26.24 / 26.98 / 26.96 / 26.95 / 26.98 / 26.88 dB, flicker 3.589 / 3.409 / 3.408 / 3.416 / 3.416 /
#: 3.447 at 0.03 / 0.04 / 0.06 / 0.08 / 0.1 / 0.12 (3.629 without flow copies); megamind's jumping text 37.05 /
#: 0.986 at all of them (36.00 / 1.059 without). A frame of another shot reads 0.14–0.16 there
FLOW_MATCH = 0.06
#: mark-free frames tried for a flow copy, nearest first (1, 2 or 3 gave the same on those clips)
FLOW_TRIES = 2
#: a frame with free frames on both sides in time blends their flow copies, the nearer weighing more (linearly in
#: time): megamind's jumping text 37.05 / 0.986 → 37.20 / 0.948 (the nearest side's copy alone before); transnet's
#: jumping logo has free frames on one side only (26.96 / 3.408 both ways)
FLOW_BLEND = True
#: a frame no free frame gives a flow copy takes one from a copied neighbour, the last window's copies included
#: (`_chain`, `MarkMemory.carried`): transnet's jumping logo 26.10 / 3.678 without (26.44 / 3.576 at `FLOW_MATCH`
#: 0.1), 26.96 / 3.408 with (its frames 32–35 lie in a window with no free frame); megamind's text unchanged
#: (every frame copied directly)
FLOW_CHAIN = True
#: at least this many frames with the mark before its α and W are estimated
MIN_FRAMES = 4


@dataclass
class Outcome:
    """What removal did (summed over marks and windows): pixel counts are frame-pixels."""

    inverted: int = 0
    propagated: int = 0
    filled: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"estimate": 0.0, "propagate": 0.0, "fill": 0.0})

    def add(self, other: Outcome) -> None:
        self.inverted += other.inverted
        self.propagated += other.propagated
        self.filled += other.filled
        for k, v in other.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


@dataclass
class MarkMemory:
    """What removal carries for one mark from window to window (crop-sized maps, no frames): its flat fit, the
    still fill with the median picture it was made from (reused while a window's median surroundings match: a fill
    per window stepped at window edges on a still shot), and the last window's copied frames' crops (`_chain`
    goes on from them where the next window has no free frame)."""

    flat: FlatMemory = field(default_factory=FlatMemory)
    still: torch.Tensor | None = None
    median: torch.Tensor | None = None
    hole: torch.Tensor | None = None
    #: the last window's frames with a full copy, by stream index: (its crop's pixels 3×h×w, where copied 1×h×w)
    carried: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def carried_at(
        self, times: list[int], crop: torch.Tensor, support: torch.Tensor
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The carried copies of the frames at stream indices `times`, by their position there: those whose
        pixels around the mark are `crop`'s (T×3×h×w; the same crop of the same frame)."""
        out = {}
        for k, i in enumerate(times):
            c = self.carried.get(i)
            if c is not None and c[0].shape == crop[k].shape and torch.equal(c[0] * ~support, crop[k] * ~support):
                out[k] = c
        return out


class StepError(RuntimeError):
    """A removal step failed; `step` names it (the stage turns it into a StageError naming the step)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


@contextmanager
def _timed(out: Outcome, step: str, device: torch.device) -> Iterator[None]:
    """Adds the step's seconds to `out` (after the device has finished it); an error becomes a StepError."""
    t0 = time.perf_counter()
    try:
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except StepError:
        raise
    except Exception as e:
        raise StepError(step, e) from e
    finally:
        out.seconds[step] = out.seconds.get(step, 0.0) + time.perf_counter() - t0


def crop_box(alpha: torch.Tensor, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): the box of alpha > 0 grown by `margin`, within the frame; None when alpha is empty."""
    ys, xs = torch.nonzero(alpha > 0, as_tuple=True)
    if len(ys) == 0:
        return None
    h, w = alpha.shape
    return (
        max(0, int(ys.min()) - margin),
        min(h, int(ys.max()) + 1 + margin),
        max(0, int(xs.min()) - margin),
        min(w, int(xs.max()) + 1 + margin),
    )


def remove_mark(
    frames: torch.Tensor,
    alpha: torch.Tensor,
    colour: torch.Tensor | None,
    *,
    estimate: bool = True,
    free: torch.Tensor | None = None,
    free_dirty: torch.Tensor | None = None,
    memory: MarkMemory | None = None,
    ramp: torch.Tensor | None = None,
    when: tuple[list[int], list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Outcome]:
    """Remove one mark from `frames` (T×C×H×W float 0..1, every frame holding the mark; C may be 4: alpha is
    left alone). `alpha` H×W, `colour` 3×H×W or None (estimated from the frames when `estimate`, else the mark is
    treated as opaque). `free` (F×C×H×W): frames of the window without this mark (before it came, after it went or
    jumped), with `free_dirty` (F×H×W bool) the pixels other marks cover in them. `memory`: the mark's flat fit and
    still fill from earlier windows, refined with these frames and used in their place (no step at a window's edge);
    `ramp` (T,) each frame's way from the earlier windows' fit to this one's (`FlatMemory.merge`). `when`: the
    frames' and the free frames' stream indices (flow copies come from the nearest free frames in time, and with
    `memory` the copied frames are carried to the next window by these indices; without it, flow copies come from
    the free frames whose surroundings match best).
    Returns (the crop's new pixels T×C×h×w, the crop box as a 4-tensor y0,y1,x0,x1 — pixels that may differ lie
    inside it — and the outcome)."""
    out = Outcome()
    dev = frames.device
    box = crop_box(alpha, FEATHER + max(RING, SHIFT_RADIUS) + 1)
    if box is None:
        return frames[:, :, :0, :0], torch.zeros(4, dtype=torch.long), out
    y0, y1, x0, x1 = box
    crop = frames[:, :3, y0:y1, x0:x1].float()
    a = alpha[y0:y1, x0:x1].to(dev, torch.float32)
    t = crop.shape[0]
    support = a > 0
    # the background under the whole mark, from the frames where it was visible: the exact samples the blend's
    # fit needs, and the first choice for the opaque part
    around = dilate(support[None, None], FEATHER)[0].expand(t, 1, *support.shape)
    with _timed(out, "propagate", dev):
        shown, unseen = propagate(crop, around, ring=RING, radius=SHIFT_RADIUS, reach=REACH)
    with _timed(out, "estimate", dev):
        if colour is not None:
            w = colour[:, y0:y1, x0:x1].to(dev, torch.float32)
            known = support
        elif estimate and t >= MIN_FRAMES:
            blend = estimate_blend(crop, support, background=shown, seen=around & ~unseen)
            # where no frame showed the background (a still shot), one opacity and flat colours over all frames
            # the frames without the mark pin a fade's shares (what the background alone reads)
            flat = estimate_flat(crop, support, None if free is None else free[:, :3, y0:y1, x0:x1].float())
            if memory is not None:
                flat = memory.flat.merge(flat, ramp)
            per_frame = flat.alpha * flat.scale.view(t, 1, 1)  # a fading mark's α scales over time
            a = torch.where(blend.confident, blend.alpha, torch.where(flat.confident, per_frame, a))
            w = torch.where(blend.confident, blend.colour, flat.colour)
            known = blend.confident | flat.confident
        else:
            w, known = torch.zeros_like(crop[0]), torch.zeros_like(support)
        a = a.expand(t, *support.shape)[:, None]  # T×1×h×w: per frame
        invert = known & (a > 0) & (a < INVERT_MAX)
        clean = torch.where(invert, (crop - a * w) / (1 - a).clamp_min(1e-3), crop).clamp(0, 1)
        # the hole is the mark's own pixels: every pixel it touches has α > 0, and a pixel outside it is the
        # picture itself, which no fill beats (dilating by 2 px cost 2.8 dB in the box on the eval's clips)
        hole = support & ~invert & ~(known & (a <= 0))
        out.inverted = int(invert.sum())
    got = torch.zeros_like(hole)
    part = torch.zeros_like(hole)  # copied with a weight below 1: filled as well, then the two blended
    weight = torch.ones(t, device=dev)
    times = None if when is None else when[0]
    carried = memory.carried_at(times, crop, support) if memory is not None and times is not None else {}
    if (free is not None and len(free)) or carried:
        with _timed(out, "propagate", dev):
            if free is not None and len(free):
                dirty = free_dirty[:, None, y0:y1, x0:x1] if free_dirty is not None else None
                bare, got, weight = _from_free(crop, support, free[:, :3, y0:y1, x0:x1].float(), dirty, hole, when)
            else:
                bare, got, weight = crop.clone(), torch.zeros_like(hole), torch.zeros(t, device=dev)
            if FLOW_CHAIN:
                ring = dilate(support[None, None], RING)[0] & ~support
                _chain(crop, support, ring, hole, bare, got, weight, times, carried)
            # the copy's offset from this frame around the mark, carried smoothly inside (seamless cloning): another
            # moment's picture meets this one's surroundings. Eval, true masks, half size: megamind's jumping
            # opaque text 33.66 → 34.43 dB, flicker 1.674 → 1.592; the other clips within ±0.03 dB
            hole_all = support[None, None].expand(t, 1, *support.shape)
            bare = (bare + harmonic(crop - bare, hole_all)).clamp(0, 1)
            # each copy's weight eased over its neighbours in time: a weight chosen per frame (its match, shifted
            # or not) stepped between copy and fill from frame to frame
            weight = ease(weight, got.flatten(1).any(1), EASE)
            # the background itself, seen when the mark was away: better than any inversion or fill
            part = got & (weight < 1).view(-1, 1, 1, 1)
            got &= ~part
            clean = torch.where(got, bare, clean)
            out.propagated += int(got.sum())
    if bool(hole.any()):
        with _timed(out, "fill", dev):
            left = hole & unseen & ~got
            take = hole & ~unseen & ~got
            clean = torch.where(take, shown, clean)
            out.propagated += int(take.sum())
            clean = _spatial_fill(clean, hole, left, memory)
            out.filled = int(left.sum())
    if bool(part.any()):
        k = weight.view(-1, 1, 1, 1)
        clean = torch.where(part, k * bare + (1 - k) * clean, clean)
    result = frames[:, :, y0:y1, x0:x1].float().clone()
    touched = (support[None, None] | hole).expand_as(clean)
    result[:, :3] = torch.where(touched, clean, result[:, :3])
    if memory is not None and times is not None:
        # the frames copied in full, for the next window's chain (its frames past this window's free frames)
        full = [k for k in range(t) if bool(got[k].any())]
        memory.carried = {times[k]: (result[k, :3].clone(), got[k].clone()) for k in full}
    return result, torch.tensor(box), out


def ease(weight: torch.Tensor, has: torch.Tensor, kernel: tuple[float, ...] = EASE) -> torch.Tensor:
    """`weight` (T,: each frame's copy's weight) where `has` (T, bool: the frame has a copy) is set, replaced by
    its `kernel`-weighted mean over the neighbouring frames (an odd kernel centred on the frame; those past the
    ends left out; a neighbour without a copy counts with its weight, 0); elsewhere unchanged."""
    r = len(kernel) // 2
    t = len(weight)
    acc = torch.zeros_like(weight)
    n = torch.zeros_like(weight)
    for i, k in enumerate(kernel):
        o = i - r
        lo, hi = max(0, -o), min(t, t - o)
        if lo < hi:
            acc[lo:hi] += k * weight[lo + o : hi + o]
            n[lo:hi] += k
    return torch.where(has, acc / n.clamp_min(1e-9), weight)


def _from_free(
    crop: torch.Tensor,
    support: torch.Tensor,
    free: torch.Tensor,
    dirty: torch.Tensor | None,
    opaque: torch.Tensor | None = None,
    when: tuple[list[int], list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per frame of `crop` (T×3×h×w), the mark-free frame of `free` (F×3×h×w) whose surroundings of the mark
    (a `RING` px ring) match it best, unshifted: a still camera, or the same moment of a scene, shows there the
    background the mark hides. Where none matches, the `FREE_TRIES` best are tried again shifted (`local_shift`,
    up to `SHIFT_RADIUS` px: the camera moved). Returns (that frame's pixels T×3×h×w, T×1×h×w bool: where they
    are taken — the support, where the match is within `FREE_MATCH` and no other mark covered the free frame, and
    (T,) each frame's copy's weight: 1 unshifted, `FREE_SHIFTED` shifted). A shifted match within `FREE_LOOSE` is
    taken where `opaque` (T×1×h×w bool: the pixels nothing else recovers; none when not given), weighing less the
    worse it matches; every copy for a frame with opaque pixels is taken at its shift's fraction of a pixel. A frame
    with opaque pixels and no unshifted match first tries a motion-following copy (`_follow_sides`, weight 1; `when`
    the frames' and free frames' stream indices), the shifted one only where none matches."""
    ring = (dilate(support[None, None], RING)[0] & ~support).float()  # 1×h×w
    clear = torch.ones_like(free[:, :1]) if dirty is None else (~dirty).float()
    w = ring * clear  # F×1×h×w
    n = w.sum((1, 2, 3)) * crop.shape[1]
    # one frame at a time: F×h×w at once, not T×F×h×w (a 1080p logo's crop over a GPU window)
    rms = torch.stack([(((f[None] - free) ** 2) * w).sum((1, 2, 3)) for f in crop]) / n.clamp_min(1)
    rms = torch.where(n >= 8 * crop.shape[1], rms.sqrt(), torch.full_like(rms, float("inf")))
    best = rms.argmin(1)
    ok = rms.gather(1, best[:, None])[:, 0] <= FREE_MATCH
    bare = free[best]
    got = support[None, None] & ok.view(-1, 1, 1, 1) & (clear[best] > 0)
    weight = ok.float()
    h, w_ = support.shape
    for t in range(len(crop)):
        if bool(ok[t]):
            if opaque is not None and bool(opaque[t].any()):
                # an opaque mark's copy, unshifted, still moved by a fraction of a pixel: megamind's jumping opaque
                # text 34.79 → 35.96 dB, flicker 1.149 → 1.070; for every pixel of a semi-transparent one (no
                # opaque part) it cost vtest's jumping text 0.46 dB and megamind's fading logo 0.57, so not there
                b = int(best[t])
                fy, fx = subpixel(crop[t], free[b], ring > 0, clear[b] == 0, 0, 0)
                bare[t] = shift_bilinear(free[b], fy, fx)
            continue
        if opaque is not None and bool(opaque[t].any()):
            found = _follow_sides(crop[t], support, ring > 0, free, clear, rms[t], when, t)
            if found is not None:
                bare[t], got[t] = found
                weight[t] = 1.0
                continue
        for s in rms[t].argsort()[:FREE_TRIES].tolist():
            dy, dx, r = local_shift(crop[t], free[s], ring > 0, clear[s] == 0, SHIFT_RADIUS)
            if r > (FREE_LOOSE if opaque is not None else FREE_MATCH):
                continue
            # to the fraction of a pixel: an integer shift found per frame jitters the copy by up to 1 px between
            # frames (megamind's jumping opaque text: 34.44 → 34.53 dB, flicker 1.380 → 1.224)
            fy, fx = subpixel(crop[t], free[s], ring > 0, clear[s] == 0, dy, dx)
            bare[t] = shift_bilinear(free[s], dy + fy, dx + fx)
            seen = torch.roll(clear[s] > 0, (-dy, -dx), dims=(-2, -1)) & (within(h, w_, dy, dx, crop.device) > 0)
            got[t] = support[None] & seen
            weight[t] = FREE_SHIFTED * min(1.0, (FREE_LOOSE - r) / (FREE_LOOSE - FREE_MATCH))
            if r > FREE_MATCH and opaque is not None:
                got[t] &= opaque[t]
            break
    return bare, got, weight


def _chain(
    crop: torch.Tensor,
    support: torch.Tensor,
    ring: torch.Tensor,
    opaque: torch.Tensor,
    bare: torch.Tensor,
    got: torch.Tensor,
    weight: torch.Tensor,
    times: list[int] | None,
    carried: dict[int, tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Frames with opaque pixels and no full copy take a flow copy from a neighbour in time that has one (its
    picture with the copy in its hole, seamlessly corrected), nearest to a copied frame first: the motion a
    step from a neighbour must follow is smaller than from the farther free frame. `carried` (frame → pixels,
    where copied): the earlier window's copies, taken as they are for those frames. `bare`, `got`, `weight`
    updated in place."""
    for k, (pixels, where) in carried.items():
        if not (float(weight[k]) >= 1 and bool(got[k].any())):
            bare[k], got[k], weight[k] = pixels, where, 1.0
    pos = list(range(len(crop))) if times is None else list(times)
    at = {p: k for k, p in enumerate(pos)}
    done = {k for k in range(len(crop)) if float(weight[k]) >= 1 and bool(got[k].any())}
    todo = {k for k in range(len(crop)) if k not in done and bool(opaque[k].any())}
    while todo:
        ready = [(k, at[pos[k] + d]) for k in sorted(todo) for d in (-1, 1) if at.get(pos[k] + d) in done]
        if not ready:
            return
        for k, j in ready:
            if k not in todo:
                continue
            todo.discard(k)
            hole_j = support[None] & ~got[j]
            fixed = (bare[j] + harmonic((crop[j] - bare[j])[None], support[None, None])[0]).clamp(0, 1)
            src = torch.where(got[j], fixed, crop[j])
            found = _follow(crop[k], support, ring, src[None], (~hole_j).float()[None], [0])
            if found is not None:
                bare[k], got[k], _ = found
                weight[k] = 1.0
                done.add(k)


def _follow_sides(
    ref: torch.Tensor,
    support: torch.Tensor,
    ring: torch.Tensor,
    free: torch.Tensor,
    clear: torch.Tensor,
    rms: torch.Tensor,
    when: tuple[list[int], list[int]] | None,
    t: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Frame `t`'s flow copy (`_follow`): from the nearest free frames before it and after it in time (`when`),
    the two blended by their nearness where both match (`FLOW_BLEND`), else the one that does; without `when`,
    from the free frames whose ring matches best unshifted (`rms`, F,)."""
    if when is None:
        found = _follow(ref, support, ring, free, clear, rms.argsort().tolist()[:FLOW_TRIES])
        return None if found is None else found[:2]
    at, pos = when[0][t], when[1]
    if not FLOW_BLEND:  # the nearest of either side first
        order = sorted(range(len(free)), key=lambda k: (abs(pos[k] - at), pos[k]))
        found = _follow(ref, support, ring, free, clear, order[:FLOW_TRIES])
        return None if found is None else found[:2]
    sides = [
        sorted((k for k in range(len(free)) if pos[k] < at), key=lambda k: at - pos[k]),
        sorted((k for k in range(len(free)) if pos[k] > at), key=lambda k: pos[k] - at),
    ]
    copies = [c for side in sides if (c := _follow(ref, support, ring, free, clear, side[:FLOW_TRIES])) is not None]
    if len(copies) < 2:
        return copies[0][:2] if copies else None
    (a, seen_a, sa), (b, seen_b, sb) = copies
    wa = (pos[sb] - at) / (pos[sb] - pos[sa])  # the nearer frame weighs more, linearly in time
    both = seen_a & seen_b
    moved = torch.where(both, wa * a + (1 - wa) * b, torch.where(seen_a, a, b))
    return moved, seen_a | seen_b


def _follow(
    ref: torch.Tensor,
    support: torch.Tensor,
    ring: torch.Tensor,
    free: torch.Tensor,
    clear: torch.Tensor,
    order: list[int],
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """A motion-following copy for `ref` (3×h×w, the mark on `support` h×w): the first free frame of `order`
    whose ring (1×h×w bool) matches within `FLOW_MATCH` after warping by the dense flow between the two
    (`flow.masked_flow`, begun at the ring's whole shift): (that frame warped 3×h×w, 1×h×w bool: the support
    where the warp reads a clear pixel of it, that frame's index in `free`), or None."""
    for s in order:
        dy, dx, _ = local_shift(ref, free[s], ring, clear[s] == 0, SHIFT_RADIUS)
        fy, fx = subpixel(ref, free[s], ring, clear[s] == 0, dy, dx)
        flow = masked_flow(ref, free[s], ~support[None], clear[s] > 0, (dy + fy, dx + fx))[None]
        moved = warp(free[s][None], flow)[0]
        seen = ((warp(clear[s][None], flow) > 0.99) & inside(flow))[0]
        w = ring & seen
        n = int(w.sum())
        if n < 8:
            continue
        rms = float((((moved - ref) ** 2) * w).sum() / (n * ref.shape[0])) ** 0.5
        if rms <= FLOW_MATCH:
            return moved, support[None] & seen, s
    return None


def _spatial_fill(
    clean: torch.Tensor, hole: torch.Tensor, left: torch.Tensor, memory: MarkMemory | None = None
) -> torch.Tensor:
    """Fill `left` (T×1×h×w, inside `hole`): from the window's median picture where a frame's surroundings are
    the median's (a static background: one fill for all, no flicker), else from the frame alone. With `memory`,
    an earlier window's still fill serves while this window's median matches its median around the hole."""
    if not bool(left.any()):
        return clean
    ring = dilate(hole[:1], RING) & ~hole[:1]
    median = clean.median(dim=0, keepdim=True).values
    m = memory
    if m and m.still is not None and m.median is not None and _same_still(m.median, m.hole, median, hole[:1], ring):
        median, still = m.median, m.still
    else:
        still = harmonic(median, hole[:1])
        if m is not None:
            m.still, m.median, m.hole = still, median, hole[:1].clone()
    static = (_ring_rms(clean, median, ring) <= RING_MATCH).view(-1, 1, 1, 1)
    own = harmonic(clean, hole)
    fill = torch.where(static, still.expand_as(clean), own)
    return torch.where(left, fill, clean)


def _ring_rms(x: torch.Tensor, ref: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """Per frame of `x` (T×C×h×w), the RMS difference from `ref` (1×C×h×w) over `ring` (1×h×w bool)."""
    err = ((x - ref) ** 2 * ring).sum((1, 2, 3)) / (ring.sum() * x.shape[1]).clamp_min(1)
    return err.sqrt()


def _same_still(
    old: torch.Tensor, old_hole: torch.Tensor | None, median: torch.Tensor, hole: torch.Tensor, ring: torch.Tensor
) -> bool:
    """Whether an earlier window's median picture (and hole) stands for this one's: the same hole, and the same
    surroundings within `RING_MATCH`."""
    return old_hole is not None and torch.equal(old_hole, hole) and float(_ring_rms(median, old, ring)[0]) <= RING_MATCH
