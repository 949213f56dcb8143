"""Filling what a mark hides, best information first (issue 17, Build 3); all on torch, any device.

- `pushpull`: the fast classical spatial fill — a masked image pyramid averaged down (holes carry no weight) and
  pulled back up bilinearly, so a hole takes the smooth continuation of its surroundings at every scale.
- `harmonic`: that fill relaxed to the membrane through the hole's border (each hole pixel the mean of its four
  neighbours, known pixels fixed): no pyramid blocks, the border met with no step.
- `local_shifts` + `propagate`: fill from other frames where the background under the mark was visible. The
  motion model is a translation of the mark's surroundings (a ring around the hole), found by masked
  sum-of-squared-differences over every shift at once (three correlations) at a coarse scale, then refined to the
  pixel; a frame pair is used only where that shift explains the ring well (`RING_MATCH`), so a shot with motion
  the model cannot follow falls through to the spatial fill instead of pasting the wrong picture.
- `feather`: a weight that ramps from 0 at a hole's edge to 1 `width` pixels inside it, so the fill meets the
  picture without a seam (the hole is the mark dilated by that width: the ramp lies on the mark-free band).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .regions import mask_box

#: a frame pair's shift is trusted when the ring's RMS difference after the shift is below this (0..1 levels:
#: about 5 of 255, what compression noise and small non-rigid motion leave on a true match)
RING_MATCH = 0.02
#: the coarse shift search works on crops of at most this many pixels on the long side
COARSE_SIDE = 64
#: a level's own average is trusted fully where at least 1 / PULL_GAIN of its cell holds picture, below that it
#: is blended with the next coarser level's: with 1 (a whole cell needed) a thin hole's fill took far-off picture
#: (true masks on the eval's 7 clips, half size, 24 frames: 19.7 dB in the box with 1, 21.0 with 4)
PULL_GAIN = 4.0
#: Jacobi sweeps that relax a push-pull fill to the harmonic one: on the eval's true masks (7 clips, half size, 48
#: frames) the 4 clips that are filled, not copied, gained 0.4–2.6 dB in the box over push-pull alone (vtest's
#: static opaque logo 14.67 → 16.94, transnet's jumping logo 22.48 → 25.08); 100 and 1000 sweeps agree within 0.01
HARMONIC_SWEEPS = 100
#: `propagate` and `local_shifts` work on this many bytes of shifted crops at a time on a GPU (all of a window's
#: frame pairs at once, in a few large operations), and on `CPU_PAIR_BYTES` elsewhere (what stays in a CPU's caches:
#: 2^28 made the shift search 2.8× slower on a CPU than one pair at a time, 2^22 as fast)
PAIR_BYTES = 1 << 28
CPU_PAIR_BYTES = 1 << 22


def pushpull(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """`x` (N×C×H×W float) with the pixels where `hole` (N×1×H×W bool) is set replaced by a smooth fill from the
    rest; other pixels unchanged. A frame that is all hole stays as it is (nothing to fill from)."""
    w = (~hole).to(x.dtype)
    levels: list[tuple[torch.Tensor, torch.Tensor]] = []
    cur, cw = x * w, w
    while True:
        levels.append((cur, cw))
        if min(cur.shape[-2:]) <= 1:
            break
        cur = F.avg_pool2d(cur, 2, ceil_mode=True)
        cw = F.avg_pool2d(cw, 2, ceil_mode=True)
    # pull: from the coarsest level up, the normalised average where weight exists, the coarser fill elsewhere
    up: torch.Tensor | None = None
    for cur, cw in reversed(levels):
        norm = cur / cw.clamp_min(1e-6)
        conf = (cw * PULL_GAIN).clamp(0, 1) if up is not None else (cw > 0).to(x.dtype)
        if up is not None:
            up = F.interpolate(up, size=cur.shape[-2:], mode="bilinear", align_corners=False)
            norm = conf * norm + (1 - conf) * up
        up = norm
    assert up is not None
    return torch.where(hole, up, x)


def harmonic(x: torch.Tensor, hole: torch.Tensor, sweeps: int = HARMONIC_SWEEPS) -> torch.Tensor:
    """`x` (N×C×H×W float) with the pixels where `hole` (N×1×H×W bool) is set replaced by the harmonic fill of the
    rest: `pushpull`'s fill, then `sweeps` Jacobi sweeps of Laplace's equation inside the hole (the frame's edge
    mirrors its last pixel); other pixels unchanged."""
    y = pushpull(x, hole)
    try:
        # the sweeps change only the hole's pixels and read only their neighbours: its box and 1 px around it
        y0, y1, x0, x1 = mask_box(hole.flatten(0, 1).any(0), 1)
    except ValueError:
        return y  # no hole
    cross = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], dtype=x.dtype, device=x.device)
    kernel = cross.view(1, 1, 3, 3).expand(x.shape[1], 1, 3, 3)
    sub = y[..., y0:y1, x0:x1]
    inside = hole[..., y0:y1, x0:x1].expand_as(sub)
    for _ in range(sweeps):
        mean = F.conv2d(F.pad(sub, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        sub = torch.where(inside, mean, sub)
    y[..., y0:y1, x0:x1] = sub
    return y


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A bool N×1×H×W mask grown by `radius` pixels (a square)."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A bool N×1×H×W mask shrunk by `radius` pixels (a square); past the frame's edge counts as inside."""
    return ~dilate(~mask, radius)


def feather(hole: torch.Tensor, width: int) -> torch.Tensor:
    """Weights in [0, 1] for a bool N×1×H×W hole: 0 outside, rising to 1 `width` pixels inside its edge."""
    if width <= 0:
        return hole.float()
    inside = hole.float()
    # erosions by 1..width px: the weight counts how many of them still hold the pixel
    acc = torch.zeros_like(inside)
    cur = inside
    for _ in range(width):
        cur = -F.max_pool2d(-cur, 3, stride=1, padding=1)
        acc += cur
    return (inside + acc) / (width + 1)


def _ssd_all_shifts(
    ref: torch.Tensor, ref_w: torch.Tensor, other: torch.Tensor, other_w: torch.Tensor, radius: int
) -> torch.Tensor:
    """Mean squared difference between `ref` and `other` shifted by every (dy, dx) in [−radius, radius]², each
    pixel weighted by `ref_w`·(shifted `other_w`). ref/other: C×h×w, weights 1×h×w. Returns (2r+1)×(2r+1), inf
    where fewer than 8 pixels take part (`_ssd_all_shifts_batch` for one pair)."""
    return _ssd_all_shifts_batch(ref[None], ref_w[None], other[None], other_w[None], radius)[0]


def _ssd_all_shifts_batch(
    ref: torch.Tensor, ref_w: torch.Tensor, other: torch.Tensor, other_w: torch.Tensor, radius: int
) -> torch.Tensor:
    """`_ssd_all_shifts` for B pairs at once: ref/other B×C×h×w, weights B×1×h×w; returns B×S×S. Every shift at
    once: windows of the padded `other` (a strided view)."""
    h, w = ref.shape[-2:]
    pad = (radius, radius, radius, radius)
    o = F.pad(other, pad).unfold(2, h, 1).unfold(3, w, 1)  # B×C×S×S×h×w
    ow = F.pad(other_w, pad).unfold(2, h, 1).unfold(3, w, 1)[:, 0]  # B×S×S×h×w
    wt = ow * ref_w[:, 0, None, None]
    n = wt.sum((-2, -1))
    ssd = (((o - ref[:, :, None, None]) ** 2).sum(1) * wt).sum((-2, -1))
    return torch.where(n >= 8, ssd / n.clamp_min(1) / ref.shape[1], torch.full_like(ssd, float("inf")))


def _rolled(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """B×C×h×w: each x[b] rolled by (−dy[b], −dx[b]) as `torch.roll` (the shifts on the device)."""
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device)[None] + dy[:, None]).remainder(h)  # B×h
    xs = (torch.arange(w, device=x.device)[None] + dx[:, None]).remainder(w)
    rows = x.gather(2, ys[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return rows.gather(3, xs[:, None, None, :].expand(-1, x.shape[1], h, -1))


def local_shifts(
    ref: torch.Tensor, other: torch.Tensor, ring: torch.Tensor, hole_other: torch.Tensor, radius: int
) -> list[tuple[int, int, float]]:
    """`local_shift` for B pairs at once (ref/other B×C×h×w, ring/hole_other B×1×h×w bool), in chunks of at most
    `PAIR_BYTES` of shifted crops, with one round trip to the host: [(dy, dx, rms)] per pair, as it gives them."""
    b, c, h, w = ref.shape
    if b == 0:
        return []
    f = max(1, -(-max(h, w) // COARSE_SIDE))
    r = max(1, radius // f)
    ch, cw = -(-h // f), -(-w // f)
    each = c * max(((2 * r + 1) ** 2) * ch * cw if f > 1 else 0, (2 * f + 1) ** 2 * h * w) * ref.element_size()
    step = max(1, _budget(ref.device) // each)
    found = []
    for i in range(0, b, step):
        rf, ot, rg, ho = ref[i : i + step], other[i : i + step], ring[i : i + step], hole_other[i : i + step]
        rw, ow = rg.float(), (~ho).float()
        if f > 1:
            cw_r, cw_o = F.avg_pool2d(rw, f, ceil_mode=True), F.avg_pool2d(ow, f, ceil_mode=True)
            c_r = F.avg_pool2d(rf * rw, f, ceil_mode=True) / cw_r.clamp_min(1e-6)
            c_o = F.avg_pool2d(ot * ow, f, ceil_mode=True) / cw_o.clamp_min(1e-6)
            ssd = _ssd_all_shifts_batch(c_r, (cw_r > 0.99).float(), c_o, (cw_o > 0.99).float(), r)
            k = ssd.flatten(1).argmin(1)
            cy, cx = (k // ssd.shape[2] - r) * f, (k % ssd.shape[2] - r) * f
        else:
            cy = cx = torch.zeros(len(rf), dtype=torch.long, device=ref.device)
        # refine at full resolution around the coarse answer: shift `other` by it, search ±f
        ys = torch.arange(h, device=ref.device)[None] + cy[:, None]
        xs = torch.arange(w, device=ref.device)[None] + cx[:, None]
        valid = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]).float()[:, None]
        ssd = _ssd_all_shifts_batch(rf, rw, _rolled(ot, cy, cx), _rolled(ow, cy, cx) * valid, f)
        k = ssd.flatten(1).argmin(1)
        dy, dx = k // ssd.shape[2] - f + cy, k % ssd.shape[2] - f + cx
        found.append(
            torch.stack([dy.double(), dx.double(), ssd.flatten(1).gather(1, k[:, None])[:, 0].sqrt().double()])
        )
    return [(int(dy), int(dx), rms) for dy, dx, rms in torch.cat(found, 1).T.tolist()]


def local_shift(
    ref: torch.Tensor, other: torch.Tensor, ring: torch.Tensor, hole_other: torch.Tensor, radius: int
) -> tuple[int, int, float]:
    """(dy, dx, rms): the content at (y, x) of `ref` is at (y + dy, x + dx) of `other`, judged on `ring` (1×h×w
    bool, the surroundings of the hole in `ref`), ignoring `other`'s own hole. ref/other: C×h×w float crops.
    A coarse search over ±`radius` on crops pooled to `COARSE_SIDE`, refined at full resolution (`local_shifts`
    for one pair)."""
    return local_shifts(ref[None], other[None], ring[None], hole_other[None], radius)[0]


def within(h: int, w: int, dy: int, dx: int, device: torch.device) -> torch.Tensor:
    """1×h×w: 1 where (y + dy, x + dx) lies inside an h×w frame (what `torch.roll` by (−dy, −dx) wraps is 0)."""
    ys = torch.arange(h, device=device).view(h, 1) + dy
    xs = torch.arange(w, device=device).view(1, w) + dx
    return ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).float()[None]


def shifted_rms(
    ref: torch.Tensor, ring: torch.Tensor, other: torch.Tensor, hole_other: torch.Tensor, dy: int, dx: int
) -> float:
    """RMS difference over `ring` between `ref` and `other` shifted by (dy, dx), ignoring `other`'s hole and
    what falls outside it (inf when too little is left to judge)."""
    src = torch.roll(other, (-dy, -dx), dims=(-2, -1))
    w = ring & torch.roll(~hole_other, (-dy, -dx), dims=(-2, -1))
    w &= within(*ref.shape[-2:], dy, dx, ref.device) > 0
    n = int(w.sum())
    if n < 8:
        return float("inf")
    return float((((ref - src) ** 2) * w).sum() / (n * ref.shape[0])) ** 0.5


def subpixel(
    ref: torch.Tensor, other: torch.Tensor, ring: torch.Tensor, hole_other: torch.Tensor, dy: int, dx: int
) -> tuple[float, float]:
    """The fraction (each in [−0.5, 0.5]) to add to the integer shift (dy, dx) from `local_shift`: on each axis, the
    vertex of the parabola through the ring's squared error at −1, 0 and +1 px (0 where that is not a minimum)."""
    e0 = shifted_rms(ref, ring, other, hole_other, dy, dx) ** 2

    def vertex(minus: tuple[int, int], plus: tuple[int, int]) -> float:
        em = shifted_rms(ref, ring, other, hole_other, *minus) ** 2
        ep = shifted_rms(ref, ring, other, hole_other, *plus) ** 2
        den = em - 2 * e0 + ep
        if not (den > 1e-12) or max(em, ep) == float("inf"):
            return 0.0
        return max(-0.5, min(0.5, 0.5 * (em - ep) / den))

    return vertex((dy - 1, dx), (dy + 1, dx)), vertex((dy, dx - 1), (dy, dx + 1))


def shift_bilinear(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """`x` (C×h×w) sampled at (y + dy, x + dx), bilinear, the frame's edge clamped: `torch.roll` by (−dy, −dx)
    for a fractional shift."""
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + dy).clamp(0, h - 1)
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + dx).clamp(0, w - 1)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top, bot = x[:, y0], x[:, y1]
    top = top[:, :, x0] * (1 - wx) + top[:, :, x1] * wx
    bot = bot[:, :, x0] * (1 - wx) + bot[:, :, x1] * wx
    return top * (1 - wy) + bot * wy


def propagate(
    frames: torch.Tensor, holes: torch.Tensor, *, ring: int, radius: int, reach: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill each frame's hole from the other frames (nearest in time first) where a translation of the hole's
    surroundings explains the picture and puts a visible pixel under the hole.

    The translation between consecutive frames is searched (`local_shift`, up to `radius` px), and a farther
    pair's is their sum, checked on the ring before use. frames: T×C×h×w float crops; holes: T×1×h×w bool.
    `ring`: the surroundings' width in px; `reach`: how many frames away a source may be. Returns (frames with
    what was found written into the holes, T×1×h×w bool: the hole pixels that are still unfilled)."""
    out = frames.clone()
    left = holes.clone()
    t_count = frames.shape[0]
    rings = dilate(holes, ring) & ~holes
    # where frame t's content is in frame 0's coordinates, up to a constant: the sum of consecutive shifts
    pos = [(0, 0)]
    if _batched(frames.device):
        shifts = local_shifts(frames[:-1], frames[1:], rings[:-1], holes[1:], radius)
    else:  # the same, one pair at a time: a CPU ran the batched search 1.5× slower
        shifts = [local_shift(frames[t - 1], frames[t], rings[t - 1], holes[t], radius) for t in range(1, t_count)]
    for dy, dx, rms in shifts:
        pos.append((pos[-1][0] + dy, pos[-1][1] + dx) if rms <= RING_MATCH else pos[-1])
    h, w = frames.shape[-2:]
    # a frame takes its sources nearest first, the earlier of two as near: all frames' sources at distances
    # d … d + step − 1 at once, for the frames whose hole is not filled yet, with a round trip to the host per
    # round, not per frame and source: on a GPU every distance in one round, on a CPU one distance a round (most
    # holes are filled by the nearest few sources: the farther ones' checks would cost more than they save)
    active = list(range(t_count))
    far = min(reach, t_count - 1)
    step = far if _batched(frames.device) else 1
    for d0 in range(1, far + 1, step):
        pairs = [
            (t, s, pos[s][0] - pos[t][0], pos[s][1] - pos[t][1])
            for t in active
            for d in range(d0, min(far, d0 + step - 1) + 1)
            for s in (t - d, t + d)
            if 0 <= s < t_count
        ]
        # less those whose shift is none (the hole covers the same picture) or leaves nothing of the crop
        pairs = [(t, s, dy, dx) for t, s, dy, dx in pairs if (dy or dx) and abs(dy) < h and abs(dx) < w]
        if pairs:
            _take_first(frames, holes, rings, pairs, out, left)
        active = [t for t, more in zip(active, left[active].flatten(1).any(1).tolist(), strict=True) if more]
        if not active:
            break
    return out, left


def _take_first(
    frames: torch.Tensor,
    holes: torch.Tensor,
    rings: torch.Tensor,
    pairs: list[tuple[int, int, int, int]],
    out: torch.Tensor,
    left: torch.Tensor,
) -> None:
    """Fill `out` where `left` (both updated in place) from the pairs (t, s, dy, dx) whose shift explains frame t's
    ring (`shifted_rms` within `RING_MATCH`), each pixel from the first such pair of its frame, in their order."""
    h, w = frames.shape[-2:]
    c = frames.shape[1]
    # each pair's ring RMS after its shift, with one round trip to the host, in chunks of `PAIR_BYTES` of crops
    chunk = max(1, _budget(frames.device) // (c * h * w * frames.element_size()))
    sums, counts = [], []
    for i in range(0, len(pairs), chunk):
        part = pairs[i : i + chunk]
        src, seen = _shifted_sources(frames, holes, part)
        tt = torch.tensor([p[0] for p in part], device=frames.device)
        wt = rings[tt] & seen
        counts.append(wt.flatten(1).sum(1))
        sums.append((((frames[tt] - src) ** 2) * wt).flatten(1).sum(1))
    n, sq = torch.cat(counts).tolist(), torch.cat(sums).tolist()
    trusted = [k for k in range(len(pairs)) if n[k] >= 8 and _rms(sq[k], n[k] * c) <= RING_MATCH]
    if not trusted:
        return
    by_frame: dict[int, list[int]] = {}
    for k in trusted:
        by_frame.setdefault(pairs[k][0], []).append(k)
    ts = sorted(by_frame)
    most = max(len(v) for v in by_frame.values())
    step = max(1, _budget(frames.device) // (most * c * h * w * frames.element_size()))
    for i in range(0, len(ts), step):
        group = ts[i : i + step]
        chosen_pairs = [pairs[k] for t in group for k in by_frame[t]]
        src, seen = _shifted_sources(frames, holes, chosen_pairs)
        # slot j of frame t's row: its j-th trusted pair (len(chosen_pairs): none, never seen)
        slots = torch.full((len(group), most), len(chosen_pairs), dtype=torch.long)
        at = 0
        for r, t in enumerate(group):
            slots[r, : len(by_frame[t])] = torch.arange(at, at + len(by_frame[t]))
            at += len(by_frame[t])
        slots = slots.to(frames.device)
        seen = torch.cat([seen, seen.new_zeros(1, *seen.shape[1:])])
        src = torch.cat([src, src.new_zeros(1, *src.shape[1:])])
        tt = torch.tensor(group, device=frames.device)
        hit = seen[slots] & left[tt][:, None]  # G×K×1×h×w
        got = hit.any(1)
        # the first source that saw a pixel wins: the later ones written first, each earlier one over them
        values = out[tt]
        for j in range(most - 1, -1, -1):
            values = torch.where(hit[:, j], src[slots[:, j]], values)
        out[tt] = values
        left[tt] &= ~got


def _batched(device: torch.device) -> bool:
    """Whether `device` takes work in large batches (a GPU: its launches and round trips cost, not its work)."""
    return device.type == "cuda"


def _budget(device: torch.device) -> int:
    return PAIR_BYTES if _batched(device) else CPU_PAIR_BYTES


def _rms(ssd: float, n: int) -> float:
    """As `shifted_rms` rounds it: the float32 mean of the squared differences over `n` pixels' channels (the
    caller passes the sum and count), to the power 0.5 in double."""
    return float(np.float32(ssd) / np.float32(n)) ** 0.5


def _shifted_sources(
    frames: torch.Tensor, holes: torch.Tensor, pairs: list[tuple[int, int, int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair (t, s, dy, dx): frame s rolled by (−dy, −dx) (P×C×h×w, as `torch.roll`), and where it shows
    picture (P×1×h×w bool: not s's hole and not wrapped around the crop's edge)."""
    h, w = frames.shape[-2:]
    dev = frames.device
    s = torch.tensor([p[1] for p in pairs], device=dev)
    dy = torch.tensor([p[2] for p in pairs], device=dev)
    dx = torch.tensor([p[3] for p in pairs], device=dev)
    ys = torch.arange(h, device=dev)[None] + dy[:, None]  # P×h: the source row under each row
    xs = torch.arange(w, device=dev)[None] + dx[:, None]
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # P×h×w
    yi, xi = ys.remainder(h), xs.remainder(w)
    rows = frames[s[:, None], :, yi]  # P×h×C×w
    src = rows.gather(3, xi[:, None, None, :].expand(-1, h, frames.shape[1], -1)).permute(0, 2, 1, 3)
    shown = ~holes[s[:, None], 0, yi]  # P×h×w
    shown = shown.gather(2, xi[:, None, :].expand(-1, h, -1))
    return src.contiguous(), (shown & inside)[:, None]
