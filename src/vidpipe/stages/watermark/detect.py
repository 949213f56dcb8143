"""Finding overlays that stay put while the picture moves (issue 17, Build 2: `--dewatermark auto`,
`vidpipe watermark detect`).

Dekel et al. (CVPR 2017, "On the effectiveness of visible watermarks"): over many different pictures carrying one
mark, the per-pixel median of the image gradients keeps the mark's gradients and loses the pictures'. Over a
video the pictures are frames, so:

1. Frames go to an analysis resolution (area average, long side ≤ `analysis_side`) and their x/y gradients are
   taken per channel.
2. Over each sub-window of `span` frames, a pixel is a held edge where the median gradient is strong (`edge`)
   and nearly as strong as the mean gradient magnitude there (`agree`: moving content has strong gradients whose
   median is small). Edges are closed, their holes filled (a logo's flat inside has no gradient), isolated pixels
   dropped: Dekel's support, cut into connected parts.
3. Real footage holds still in places (a fixed camera, letterbox bars, a dialogue shot), and there Dekel's support
   is the scene too. A part is a mark only where its place and shape are a mark's (at most `max_cover` of the
   frame, not from one edge of the frame to the other, compact) and the picture says so:
   - over motion: a mark lets through none of the picture's change under it (opaque) or 1 − α of it. A part of
     Dekel's support whose surroundings move and which lets through at most `quiet` of their change is a mark
     (at most `through`: where two sub-windows agree); so is a part of the support of the attenuated held edges
     alone (each at most `quiet` of its neighbourhood's change), which reaches a mark next to the scene's still
     parts — unless it is a fragment of a held structure `host` times its size (a lamp post people walk behind);
   - over a still picture: a part whose pixels never change over the window (a mark carries none of the
     camera's noise) while its surroundings flicker; or a step: a compact region that changes at once between
     two frames and holds its new value while the picture around it holds still (`_steps`: a mark that came,
     went or jumped); the side of the step whose region a smooth fill from around it misses is the mark's.
   A mark that sits still over a still picture and never leaves gives no such sign; nor does anything in
   frames that never change (noted). Parts of sub-windows whose supports agree (IoU ≥ `same`) are one candidate
   with one gradient template.
4. Each frame's presence of a candidate: its gradients projected on the template over the template's edges
   (1: the mark as in the template, 0: absent, in between: faded). Runs of frames where it is present are the
   mark's spans, so a mark that jumps (Sora-style) or appears and disappears is one `Mark` per position and span.
5. α and W come from the frames where the mark is fully present (`estimate.estimate_blend`) at full resolution on
   a crop around the support, fitted on the background other frames showed under it (`fill.propagate`); where none
   did (a still background) α is how strongly each pixel stepped (steps) or held against its surroundings' change,
   with no colour (the remover then takes the background from the frames without the mark, or fills it), else 1.
   A mark found by its attenuated change takes its shape from its whole span too (`shape.span_alpha`): a
   sub-window's edge support misses a thin ring's side and fills a logo's inside.

Everything runs on the frames' device (a GPU window in one go), without loops over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .drift import DriftOptions, still_marks
from .estimate import estimate_blend
from .fade import FadeOptions, fade_shape, fade_span
from .fade import runs as _runs
from .fill import dilate, erode, propagate, pushpull
from .join import join_near
from .marks import Mark
from .regions import components_many, hosts, label, mask_box, running_median
from .remove import FEATHER, REACH, RING, SHIFT_RADIUS
from .shape import ShapeOptions, beyond, span_alpha, step_alpha
from .through import lets_through_all

#: α and W are estimated from the frames whose presence is at least this (the mark at full strength)
FULL = 0.8


@dataclass(frozen=True, kw_only=True)
class DetectOptions:
    #: frames per median (Dekel's collection size); a mark must hold still this long to be found
    span: int = 16
    #: long side of the analysis frames (px): mark edges survive a 4× area reduction of 1080p
    analysis_side: int = 480
    #: least median gradient magnitude (0..1 levels, over 3 channels × 2 directions) of a mark edge: a 0.25-α
    #: white mark over mid grey has ≈ 0.2 at its edge; compression noise stays under 0.03
    edge: float = 0.06
    #: median / mean gradient magnitude at a mark edge (1 where the edge never changes, ≈ 0 for moving content)
    agree: float = 0.6
    #: the closing radius (analysis px) that joins a mark's edges around its flat inside
    close: int = 2
    #: the widest flat inside (analysis px) between a mark's edges that counts as part of it
    gap: int = 24
    #: supports with IoU at least this are the same mark
    same: float = 0.5
    #: a part of the support covering more than this fraction of the frame is the scene, not a mark
    max_cover: float = 0.1
    #: a held edge is attenuated where its own change over time is at most this share of its neighbourhood's
    quiet: float = 0.5
    #: a part of Dekel's support is a mark where it lets through at most `quiet` of its ring's change, or at most
    #: this much in more than one sub-window (a 0.4-α ring logo over a pan, its inside included: ≈ 0.7)
    through: float = 0.75
    #: the neighbourhood's radius (analysis px)
    reach: int = 16
    #: a pixel's surroundings change as this quantile of its neighbourhood does (a mark may fill most of it)
    around: float = 0.5
    #: least change over time (0..1 levels, per frame) of a neighbourhood for an attenuated edge: a picture that
    #: does not change at all says nothing
    noise: float = 0.2 / 255
    #: a part's ring moves where its mean change over time (0..1 levels, per frame) is at least this (2 of 255)
    motion: float = 2 / 255
    #: least edge pixels in a part (analysis px)
    min_edges: int = 12
    #: frames each side of a step (a mark that came, went or jumped) whose medians are compared
    hold: int = 6
    #: least change (0..1 levels, any channel) of a step: a 0.25-α white mark over mid grey changes by ≈ 0.12
    step: float = 0.06
    #: most mean change per frame (0..1 levels, any channel) of a pixel that holds still (≈ 5 of 255: noise)
    held: float = 0.02
    #: least share of a step's change that happens between two consecutive frames
    abrupt: float = 0.7
    #: least share of a part's pixels that never change over the window (a mark over a still picture)
    constant: float = 0.4
    #: an attenuated part is a mark's only where Dekel's support around it is at most this many times its size
    #: (on the eval's clips: marks 5–37, a lamp post and a face's features 69–455)
    host: float = 50.0
    #: least pixels of a part (analysis px)
    min_area: int = 40
    #: least share of its bounding box a part fills (a mark is compact; a scene's fragments straggle)
    min_fill: float = 0.45
    #: a frame holds a mark when its presence (projection on the template) exceeds this: a fade's frames past
    #: half its strength are removed with the full mark's α (what a frame holds is not estimated per frame)
    present: float = 0.5
    #: least frames a mark holds in a window (a scene's part that holds still a moment is not a mark); a part of
    #: Dekel's support absent for fewer frames between frames where it is at full strength was occluded
    min_frames: int = 8
    #: a still mark over a drifting picture holds its strength: its presence between its first and last frames at
    #: full strength stays within 1 ± this (Megamind's still α-0.45 logo: 0.99–1.01; a dress edge: 0.91–1.56)
    steady: float = 0.3
    #: a mark found by its attenuated change takes its shape from its whole span as well (`shape.span_alpha`)
    span_shape: ShapeOptions = field(default_factory=ShapeOptions)
    #: a still mark over a picture that drifts slowly (`drift.still_marks`)
    drift: DriftOptions = field(default_factory=DriftOptions)
    #: a mark's shape from the frames of its shot without it (`fade.fade_shape`)
    fade: FadeOptions = field(default_factory=FadeOptions)
    #: candidates whose supports come within this many analysis px are one mark (`join.join_near`)
    join: int = 3
    #: estimate α and W (False: α = the support, opaque, e.g. for a preview)
    estimate: bool = True


@dataclass
class Detection:
    """What `detect_marks` found in a window of frames, and why it dropped what it dropped."""

    marks: list[Mark]
    notes: list[str] = field(default_factory=list)
    #: supports (H×W bool, full size) of candidates shown to be the scene by what their frames did (occluded,
    #: unsteady): a mark at the same place in another window of the input is the same feature of the scene
    scene: list[torch.Tensor] = field(default_factory=list)
    #: per mark (aligned with `marks`), its candidate's gradient template over its edges at the analysis size
    #: (2C×h×w): what `whole.detect_clip` looks for in the windows that did not find the mark
    templates: list[torch.Tensor] = field(default_factory=list)
    #: the window's frames at the analysis size (T×3×h×w float, `analysis_frames`)
    small: torch.Tensor | None = None


def analysis_factor(height: int, width: int, side: int) -> int:
    return max(1, -(-max(height, width) // side))


def gradients(frames: torch.Tensor) -> torch.Tensor:
    """T×C×h×w → T×2C×h×w forward differences in x then y (0 on the last column / row)."""
    t, c, h, w = frames.shape
    out = frames.new_zeros(t, 2 * c, h, w)
    torch.sub(frames[..., :, 1:], frames[..., :, :-1], out=out[:, :c, :, :-1])
    torch.sub(frames[..., 1:, :], frames[..., :-1, :], out=out[:, c:, :-1, :])
    return out


def fill_gaps(mask: torch.Tensor, gap: int) -> torch.Tensor:
    """A bool h×w mask with the gaps of up to `gap` px between its pixels filled, along rows and along columns
    alike (a pixel joins when the mask holds within `gap` px on both sides in its row and in its column): a
    logo's flat inside between its edges, without the loops of a flood fill. Concavities narrower than `gap` fill
    too; the estimate gives them α ≈ 0 where the picture shows through."""
    m = mask[None, None].float()
    k = gap + 1

    def seen(x: torch.Tensor, dim: int, forward: bool) -> torch.Tensor:
        # the mask holds somewhere in the `k` px before (forward) or after each pixel along `dim`
        size = (1, k) if dim == 3 else (k, 1)
        pad = (k - 1, 0, 0, 0) if dim == 3 else (0, 0, k - 1, 0)
        if not forward:
            pad = (pad[1], pad[0], pad[3], pad[2])
        return F.max_pool2d(F.pad(x, pad), size, stride=1) > 0

    rows = seen(m, 3, True) & seen(m, 3, False)
    cols = seen(m, 2, True) & seen(m, 2, False)
    return mask | (rows & cols)[0, 0]


def _support(edges: torch.Tensor, close: int, gap: int) -> torch.Tensor:
    # isolated edge pixels (noise, a corner of the scene that held still) are dropped before closing
    neighbours = F.avg_pool2d(edges[None, None].float(), 3, stride=1, padding=1)[0, 0] * 9
    edges = edges & (neighbours >= 3)
    closed = erode(dilate(edges[None, None], close), close)[0, 0]
    return fill_gaps(closed, gap)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


@dataclass
class _Candidate:
    support: torch.Tensor
    edges: torch.Tensor
    template: torch.Tensor
    windows: int
    #: 0..1 over the support: how strongly each pixel changed when the mark came or went (its α's shape where
    #: the picture under it held still and no blend could be fitted); None for marks found over motion
    strength: torch.Tensor | None = None
    #: found only by weak evidence (a part letting through more than `quiet` of its ring's change): kept only
    #: where more than one sub-window found it
    weak: bool = False
    #: found by its attenuated change (its shape is refined over its span: `shape.span_alpha`)
    attenuated: bool = False
    #: found over motion (Dekel's support) or in a sub-window of at least `span` frames
    confirmed: bool = True
    #: found still over a drifting picture (`drift.still_marks`)
    drift: bool = False

    @property
    def plain(self) -> bool:
        """Found as a part of Dekel's support alone: one that lets through little of its moving ring's change."""
        return self.strength is None and not self.attenuated


@dataclass
class _SubWindow:
    median: torch.Tensor  # 2C×h×w median gradient
    stable: torch.Tensor  # h×w bool: a strong gradient that holds over the sub-window
    change: torch.Tensor  # h×w: mean |I_t − I_t−1| over the sub-window's frames and channels


def _sub_window(x: torch.Tensor, g: torch.Tensor, opts: DetectOptions) -> _SubWindow:
    med = running_median(g, len(g))[0]  # g.median(0), by elementwise min and max (a CPU's median is slow)
    mag = med.norm(dim=0)
    mean_mag = g.norm(dim=1).mean(0)
    stable = (mag > opts.edge) & (mag >= opts.agree * mean_mag)
    change = (x[1:] - x[:-1]).abs().mean((0, 1)) if len(x) > 1 else torch.zeros_like(mag)
    return _SubWindow(med, stable, change)


def _local_quantile(x: torch.Tensor, radius: int, q: float) -> torch.Tensor:
    """h×w: the `q` quantile of `x` over a (2·radius + 1)² square around each pixel, taken on a 2× reduced map."""
    small = F.avg_pool2d(x[None, None], 2, ceil_mode=True)
    k = 2 * max(1, radius // 2) + 1
    cols = F.unfold(F.pad(small, (k // 2,) * 4, mode="replicate"), k)
    # k² is odd: the median is the 0.5 quantile exactly, found without sorting every column
    med = (cols.median(dim=1).values if q == 0.5 else cols.quantile(q, dim=1)).view(small.shape)
    return F.interpolate(med, size=x.shape, mode="bilinear", align_corners=False)[0, 0]


def _evidence(s: _SubWindow, opts: DetectOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(h×w bool: a sub-window's possible mark edges, h×w: the change over time around each pixel). Held edges
    where the picture changes less over time than around them: under a mark of opacity α the picture's change
    is (1 − α) of its surroundings' (none under an opaque one); a scene's held edges change as their
    surroundings do."""
    ref = _local_quantile(s.change, opts.reach, opts.around)
    return s.stable & (ref >= opts.noise) & (s.change <= opts.quiet * ref), ref


def _misfit(part: torch.Tensor, opts: DetectOptions, outline: torch.Tensor | None = None) -> str | None:
    """Why a connected part's size or place is not a mark's ("": too small or straggling); its compactness is
    judged on `outline` (the part closed, e.g. a word's letters joined) when given."""
    rows, cols = part.any(1), part.any(0)
    ends = [rows[:2].any(), rows[-2:].any(), cols[:2].any(), cols[-2:].any()]
    shape = part if outline is None else outline
    if outline is not None:
        rows, cols = outline.any(1), outline.any(0)
    sums = [part.sum(), shape.sum(), rows.sum(), cols.sum()]
    # one round trip to the host: the cover (float32, exact in float64), the edges touched and the counts
    cover, top, bottom, left, right, area, filled, height, width = torch.stack(
        [part.float().mean().double(), *(v.double() for v in ends + sums)]
    ).tolist()
    if cover > opts.max_cover:
        return f"a held region covering {cover:.0%} of the frame (a mark covers at most {opts.max_cover:.0%})"
    if (top and bottom) or (left and right):
        return "a held region from one edge of the frame to the other (a letterbox or pillarbox bar)"
    if area < opts.min_area or int(filled) / (int(height) * int(width)) < opts.min_fill:
        return ""
    return None


def _ring(part: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels within `width` px of `part` (a square) and not in it: dilated on a crop around the part."""
    y0, y1, x0, x1 = mask_box(part, width)
    sub = part[y0:y1, x0:x1]
    out = torch.zeros_like(part)
    out[y0:y1, x0:x1] = dilate(sub[None, None], width)[0, 0] & ~sub
    return out


def _lets_through(part: torch.Tensor, change: torch.Tensor, opts: DetectOptions) -> float:
    """The share of its ring's change over time that `part` as a whole lets through (inf where the ring hardly
    moves: nothing to compare; where only a few passers-by move it, its median stays under half of `motion`)."""
    ring = change[_ring(part, opts.close + 2)]
    around = float(ring.mean())
    if around < opts.motion or float(ring.median()) < opts.motion / 2:
        return float("inf")
    return float(change[part].mean()) / around


def _keep(
    part: torch.Tensor,
    edges: torch.Tensor,
    change: torch.Tensor,
    constant: torch.Tensor,
    opts: DetectOptions,
    moving: bool = False,
) -> str | None:
    """Why a connected part of the support is not a mark (None: it is taken for one). Over a moving picture its
    attenuated held edges are a mark's; over a still one only a part with none of the camera's noise (every
    pixel the same over the window while its surroundings flicker) is."""
    why = _misfit(part, opts)
    if why is not None:
        return why
    if int((edges & part).sum()) < opts.min_edges:
        return ""
    ring = _ring(part, opts.close + 1)
    if (
        not moving
        and float(change[_ring(part, opts.close + 2)].median()) < opts.motion
        and not (
            float(constant[part].float().mean()) >= opts.constant
            and float(constant[ring].float().mean()) <= opts.constant / 2
        )
    ):
        return (
            "held edges over a picture that hardly moves: a mark there cannot be told from the scene; "
            "give box:X,Y,W,H or mask:PATH instead"
        )
    return None


def _shape(part: torch.Tensor, quiet: torch.Tensor) -> torch.Tensor:
    """The pixels of `part` that are quiet, closed by 1 px (a noisy pixel does not punch a hole)."""
    kept = part & quiet
    closed = erode(dilate(kept[None, None], 1), 1)[0, 0]
    return part & closed


def _candidates(x: torch.Tensor, grads: torch.Tensor, opts: DetectOptions, notes: list[str]) -> list[_Candidate]:
    t = grads.shape[0]
    bounds = list(range(0, t, opts.span))
    if len(bounds) > 1 and t - bounds[-1] < opts.span // 2:
        bounds.pop()  # a short tail joins the window before it
    ends = [*bounds[1:], t]
    subs = [_sub_window(x[a:b], grads[a:b], opts) for a, b in zip(bounds, ends, strict=True)]
    if all(float(s.change.max()) == 0 for s in subs):
        notes.append(
            "nothing changes over these frames: a mark cannot be told from the picture under it; "
            "give box:X,Y,W,H or mask:PATH instead"
        )
        return []
    found: list[_Candidate] = []
    constant = (x[1:] - x[:-1]).abs().amax((0, 1)) == 0
    # the attenuated change over fewer than `span` frames (a tail) only confirms a mark found otherwise: alone, a
    # part of the scene that holds still a moment passes for one (8 frames of Megamind did)
    full = [b - a >= opts.span for a, b in zip(bounds, ends, strict=True)]
    for s, whole_window in zip(subs, full, strict=True):
        edges, ref = _evidence(s, opts)
        # how much less than its surroundings each pixel changes (1 under an opaque mark, α under one of opacity
        # α): α's shape where no blend can be fitted
        held = (1 - s.change / ref.clamp_min(1e-6)).clamp(0, 1)
        # parts of the held edges' support (Dekel's: the mark itself where the picture moves all around it,
        # as in a pan), then parts of the support of the attenuated edges alone (a mark next to a scene's still
        # parts, whose held edges join Dekel's support to the mark's)
        plain = _support(s.stable, opts.close, opts.gap)
        plain_labels = label(plain)
        found_parts, sizes, host_of, plain_parts = hosts(_support(edges, opts.close, opts.gap), plain_labels)
        lets = lets_through_all(*plain_labels, plain_parts, s.change, opts, _lets_through)
        parts = [(p, True, v > opts.quiet) for p, v in zip(plain_parts, lets, strict=True) if v <= opts.through]
        # a fragment of a much larger held structure (a lamp post people walk behind) is the scene's
        for p, size, host in zip(found_parts, sizes, host_of, strict=True):
            if host <= opts.host * size:
                parts.append((p, False, False))
        taken: list[torch.Tensor] = []
        for part, whole, weak in parts:
            why = _keep(part, edges | (s.stable & part), s.change, constant, opts, moving=whole)
            if why is not None or any(int((t & part).sum()) >= opts.same * int(part.sum()) for t in taken):
                if why and why not in notes:
                    notes.append(why)
                continue
            taken.append(part)
            if not whole:
                # the mark's own pixels: those of the part whose change is attenuated as its edges' is (the gap
                # filling also took the picture between a logo's ring and its inside, or between letters)
                part = _shape(part, s.change <= opts.quiet * ref)
            e = (edges | s.stable) & part
            strength = None if whole else held * beyond(part)
            for c in found:
                if _iou(c.support, part) >= opts.same:
                    c.support |= part
                    c.edges |= e
                    c.template += s.median * part
                    c.windows += 1
                    if c.strength is not None and strength is not None:
                        c.strength = c.strength + strength
                    c.weak &= weak
                    c.attenuated |= not whole
                    c.confirmed |= whole_window or whole
                    break
            else:
                found.append(
                    _Candidate(part.clone(), e, s.median * part, 1, strength, weak, not whole, whole_window or whole)
                )
    found = [c for c in found if (not c.weak or c.windows > 1) and (c.confirmed or not any(full))]
    for c in _steps(x, grads, opts):
        if not any(_iou(o.support, c.support) >= opts.same for o in found):
            found.append(c)
    for part, e, strength in still_marks(x, grads, opts, [c.support for c in found]):
        found.append(_Candidate(part, e, grads.median(0).values * part, 1, strength, drift=True))
    for c in found:
        c.template /= c.windows
        if c.strength is not None:
            c.strength /= c.windows
    return found


def _steps(x: torch.Tensor, grads: torch.Tensor, opts: DetectOptions) -> list[_Candidate]:
    """Marks that came, went or jumped over a still picture: at a frame where a compact region of a still
    picture changes at once and holds its new value (the medians of `hold` frames before and after differ there)
    while the picture around it holds throughout. The side of the step that holds the mark is the one whose
    region does not continue its surroundings (a smooth fill from around it misses it more)."""
    k = opts.hold
    t = len(x)
    if t < 2 * k or k < 2:
        return []
    change = (x[1:] - x[:-1]).abs().amax(1)  # (T−1)×h×w
    # still: the pixel holds on each side of τ (its mean change within a side is at most noise), for every τ = k …
    # T − k at once: calm[i] over change[i : i + k − 1]
    calm = change.unfold(0, k - 1, 1).mean(-1) < opts.held
    still_all = calm[: t - 2 * k + 1] & calm[k:]
    # a step (d > `step`, `abrupt` of it between two frames) needs a still pixel that changed at τ by more than
    # `abrupt`·`step`: the medians are taken only at the τ where one did
    maybe = still_all & (change[k - 1 : t - k] > opts.abrupt * opts.step)
    best: list[tuple[float, _Candidate]] = []
    steps = torch.nonzero(maybe.flatten(1).any(1)).flatten().tolist()
    if not steps:
        return []
    meds = running_median(x, k)  # meds[i]: the median of x[i : i + k]
    # every candidate τ at once (S = len(steps)): the step, where it is abrupt, and the parts it makes, labelled
    # in one search (`components_many`): one τ at a time cost a search and its host round trips each
    at = torch.tensor(steps, device=x.device)
    ds = (meds[at + k] - meds[at]).abs().amax(1)  # S×h×w
    # abrupt: the change happens between two frames (a slow drift adds up to as much over `hold` frames)
    stepped_all = (ds > opts.step) & still_all[at] & (change[at + k - 1] >= opts.abrupt * ds)
    blobs_all = components_many(dilate(stepped_all[:, None], opts.close)[:, 0])
    for n, i in enumerate(steps):
        tau, still = k + i, still_all[i]
        mb, ma = meds[tau - k], meds[tau]
        d, stepped, blobs = ds[n], stepped_all[n], blobs_all[n]
        if not blobs:
            continue
        # every blob's area in one round trip: most are specks that `_misfit` refuses as too small whatever else
        # it finds, and asking it blob by blob was a third of detection's small operations at 1080p
        parts = torch.stack(blobs) & stepped
        for blob, part, area in zip(blobs, parts, parts.flatten(1).sum(1).tolist(), strict=True):
            if area < opts.min_area or _misfit(part, opts, blob) is not None:
                continue
            ring = _ring(blob, opts.close + 1)
            if float(still[ring | part].float().mean()) < 0.9 or float(d[ring].median()) > opts.step / 4:
                continue  # the surroundings moved or changed too: the scene, not a mark
            hole = part[None, None].expand(2, 1, *part.shape)
            sides = torch.stack([mb, ma])
            miss = ((sides - pushpull(sides, hole)).abs().amax(1)[:, part]).mean(1)
            mark_side = 1 if float(miss[1]) > float(miss[0]) else 0
            g = grads[tau : tau + k] if mark_side else grads[tau - k : tau]
            med = g.median(0).values
            e = dilate(part[None, None], 1)[0, 0] & (med.norm(dim=0) > opts.edge)
            if int(e.sum()) < opts.min_edges:
                continue
            score = float(d[part].mean()) * int(part.sum())
            # α's shape: the step over its strong part (where the mark is at full strength against the picture),
            # out to its faint rim (under `step`, but the mark's: left out, it spoils the ring that matches the
            # frames without the mark)
            rim = dilate(part[None, None], opts.close)[0, 0] & (d > opts.step / 4)
            strength = (d / d[part].quantile(0.9).clamp_min(1e-6)).clamp(0, 1) * (part | rim)
            strength = step_alpha(*((ma, mb) if mark_side else (mb, ma)), strength, part | rim, opts.step)
            cand = _Candidate(part | rim, e, med * dilate(part[None, None], 1)[0, 0], 1, strength)
            for i, (sc, c) in enumerate(best):
                if _iou(c.support, part) >= opts.same:
                    if score > sc:
                        best[i] = (score, cand)
                    break
            else:
                best.append((score, cand))
    return [c for _, c in best]


def _full_size(mask: torch.Tensor, f: int, height: int, width: int) -> torch.Tensor:
    return mask.repeat_interleave(f, 0).repeat_interleave(f, 1)[:height, :width]


def analysis_frames(frames: torch.Tensor, side: int) -> tuple[torch.Tensor, int]:
    """(frames T×3×H×W float 0..1 area-reduced to a long side ≤ `side`, the reduction factor)."""
    height, width = frames.shape[-2:]
    f = analysis_factor(height, width, side)
    return (F.avg_pool2d(frames[:, :3].float(), f, ceil_mode=True) if f > 1 else frames[:, :3].float()), f


def presence_any_background(grads: torch.Tensor, template: torch.Tensor) -> list[float]:
    """Per frame of `grads` (T×2C×h×w, `gradients` of analysis-size frames), how much of a found mark's `template`
    (2C×h×w, its gradients over its edges) it shows, over any background: each channel's projection counts by its
    size, since a blended mark's edge flips sign in a channel where the background is brighter than the mark (a
    logo found over a light sky, then over a black shot); ≈ 1 where the mark is as found, ≈ 0 where absent."""
    per = (grads * template).sum((2, 3)).abs().sum(1)
    return (per / (template * template).sum().clamp_min(1e-12)).tolist()


def detect_marks(frames: torch.Tensor, indices: list[int], opts: DetectOptions | None = None) -> Detection:
    """The marks in a window of consecutive frames (T×3×H×W float 0..1, any device; `indices`: their stream frame
    numbers). No mark: an empty list (and the notes say why, where a candidate was dropped)."""
    opts = opts or DetectOptions()
    height, width = frames.shape[-2:]
    small, f = analysis_frames(frames, opts.analysis_side)
    grads = gradients(small)
    det = Detection([], small=small)
    for c in join_near(_candidates(small, grads, opts, det.notes), opts.join):
        e = c.edges & c.support
        tmpl = c.template * e
        norm = float((tmpl * tmpl).sum())
        if norm <= 0:
            continue
        presence = ((grads * tmpl).sum((1, 2, 3)) / norm).tolist()
        why = _in_the_scene(c, presence, opts)
        if why is not None:
            if why not in det.notes:
                det.notes.append(why)
            det.scene.append(_full_size(c.support, f, height, width))
            continue
        found = _marks_of(frames, small, indices, c, presence, f, opts)
        det.marks.extend(found)
        det.templates.extend(tmpl for _ in found)
    return det


def _dips(presence: list[float], low: float, high: float, full: float) -> list[tuple[int, int, float, float]]:
    """(start, stop, least, most presence) of each run of frames whose presence is outside [low, high], between
    the first and the last frame whose presence is at least `full`."""
    at = [i for i, p in enumerate(presence) if p >= full]
    out: list[tuple[int, int, float, float]] = []
    if not at:
        return out
    start = None
    for i in range(at[0], at[-1] + 2):
        outside = i <= at[-1] and not low <= presence[i] <= high
        if outside and start is None:
            start = i
        elif not outside and start is not None:
            out.append((start, i, min(presence[start:i]), max(presence[start:i])))
            start = None
    return out


def _in_the_scene(c: _Candidate, presence: list[float], opts: DetectOptions) -> str | None:
    """Why a candidate's frames show it to be the scene's, not an overlay's (None: they do not). An overlay is in
    front of everything: what moves past it never hides it, and it does not change its strength by itself.
    - a part of Dekel's support alone (`_Candidate.plain`: it lets through little of its moving ring's change)
      that drops under full strength (`FULL`) for at least 2 and fewer than `min_frames` frames, under `present`
      in one of them, between frames where it is at full strength was hidden by something passing in front of it
      (a walker stepping on a stain of the pavement). One frame is not enough (the picture under a mark may
      match its edges a moment, as `fade.runs` allows), and a mark that leaves and comes back is away longer;
    - a still mark over a drifting picture (`drift`) keeps its strength while the picture drifts under it: a
      scene's edge that held still (a dress's edge) grows and fades with the light and the picture beside it."""
    if c.plain:
        dips = _dips(presence, FULL, float("inf"), FULL)
        if any(2 <= b - a < opts.min_frames and least < opts.present for a, b, least, _ in dips):
            return "a held part of the picture hidden for a few frames by something passing in front of it: the scene's"
    if c.drift and _dips(presence, 1 - opts.steady, 1 + opts.steady, FULL):
        return "a still edge over a drifting picture whose strength changes: the scene's"
    return None


def _soft(strength: torch.Tensor, support: torch.Tensor, f: int) -> np.ndarray:
    """A candidate's step strength at full size as α (H×W, 0 off the support)."""
    height, width = support.shape
    full = _full_size(strength, f, height, width) * support
    return full.float().cpu().numpy().astype(np.float32)


def _marks_of(
    frames: torch.Tensor,
    small: torch.Tensor,
    indices: list[int],
    c: _Candidate,
    presence: list[float],
    f: int,
    opts: DetectOptions,
) -> list[Mark]:
    height, width = frames.shape[-2:]
    runs = [(a, b) for a, b in _runs(presence, opts.present) if b - a >= opts.min_frames]
    if not runs:
        return []
    support = dilate(_full_size(c.support, f, height, width)[None, None], max(1, f // 2))[0, 0]
    y0, y1, x0, x1 = mask_box(support, max(4 * f + 8, FEATHER + max(RING, SHIFT_RADIUS) + 1))  # as removal crops
    weights = torch.tensor([1.0 if p >= FULL else 0.0 for p in presence], device=frames.device)
    alpha = np.zeros((height, width), np.float32)
    colour: np.ndarray | None = None
    soft = False
    if opts.estimate and int(weights.sum()) >= 4:
        crop = frames[:, :3, y0:y1, x0:x1].float()
        sup = support[y0:y1, x0:x1]
        around = dilate(sup[None, None], FEATHER).expand(len(crop), 1, *sup.shape)
        # the background other frames showed under the mark: an unbiased fit (see estimate.estimate_blend)
        shown, unseen = propagate(crop, around, ring=RING, radius=SHIFT_RADIUS, reach=REACH)
        blend = estimate_blend(crop, sup, weights, background=shown, seen=around & ~unseen)
        inverted = float((blend.confident & (blend.alpha < 0.9)).float().sum())
        if c.strength is not None and float(blend.confident.float().sum()) < 0.5 * float(sup.float().sum()):
            alpha = _soft(c.strength, support, f)  # hardly a blend: the shape, its colour left to the remover
            soft = True
        else:
            alpha[y0:y1, x0:x1] = blend.alpha.cpu().numpy()
            colour = np.zeros((height, width, 3), np.float32)
            colour[y0:y1, x0:x1] = blend.colour.permute(1, 2, 0).cpu().numpy()
    elif c.strength is not None:
        alpha = _soft(c.strength, support, f)
        soft = True
        inverted = 0.0
    else:
        alpha[support.cpu().numpy()] = 1.0
        inverted = 0.0
    if not alpha.any():
        return []
    marks = []
    for a, b in runs:
        shape, start, stop = None, a, b
        if soft and c.attenuated:
            shape = span_alpha(
                small[a:b], c.support, alpha, f, opts.span_shape, reach=opts.reach, around=opts.around, noise=opts.noise
            )
        if (
            soft
            and c.attenuated
            and (faded := fade_shape(small, c.support, presence, (a, b), FULL, opts.fade)) is not None
        ):
            shape = _full_size(faded, f, height, width).float().cpu().numpy()
            start, stop = fade_span(small, faded, (a, b), opts.fade)  # a fade's faint frames
        info: dict[str, float | int | str] = {
            "presence": round(float(np.mean(presence[a:b])), 3),
            "windows": c.windows,
            "estimated_pixels": int(inverted),
        }
        marks.append(Mark(indices[start], indices[stop - 1], alpha if shape is None else shape, colour, "auto", info))
    return marks


def merge_marks(marks: list[Mark], same: float = 0.5) -> list[Mark]:
    """Marks of consecutive windows that are one mark (their spans touch or overlap, their supports agree)
    joined into one span; α and W averaged, weighted by frames."""
    out: list[Mark] = []
    for m in sorted(marks, key=lambda m: m.first):
        for i, prev in enumerate(out):
            if prev.last + 1 < m.first:
                continue
            a, b = prev.alpha > 0.1, m.alpha > 0.1
            union = int((a | b).sum())
            if union and int((a & b).sum()) / union >= same:
                out[i] = _joined(prev, m)
                break
        else:
            out.append(m)
    return out


def _joined(a: Mark, b: Mark) -> Mark:
    na, nb = a.last - a.first + 1, b.last - b.first + 1
    wa, wb = np.float32(na / (na + nb)), np.float32(nb / (na + nb))
    colour = None
    if a.colour is not None and b.colour is not None:
        colour = (a.colour * wa + b.colour * wb).astype(np.float32)
    info = dict(a.info) | {"windows": int(a.info.get("windows", 1)) + int(b.info.get("windows", 1))}
    return Mark(a.first, max(a.last, b.last), (a.alpha * wa + b.alpha * wb).astype(np.float32), colour, a.source, info)
