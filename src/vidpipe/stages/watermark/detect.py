"""Finding overlays that stay put while the picture moves (issue 17, Build 2: `--dewatermark auto`,
`vidpipe watermark detect`).

Dekel et al. (CVPR 2017, "On the effectiveness of visible watermarks"): over many different pictures carrying one
mark, the per-pixel median of the image gradients keeps the mark's gradients and loses the pictures'. Over a
video the pictures are frames, so:

1. Frames go to an analysis resolution (area average, long side ≤ `analysis_side`) and their x/y gradients are
   taken per channel.
2. Over each sub-window of `span` frames, a pixel is a mark edge where the median gradient is strong (`edge`) and
   nearly as strong as the mean gradient magnitude there (`agree`: moving content has strong gradients whose
   median is small). Edges are closed, their holes filled (a logo's flat inside has no gradient), isolated pixels
   dropped: the sub-window's support.
3. Sub-windows whose supports agree (IoU ≥ `same`) are one candidate mark with one gradient template. A candidate
   covering more than `max_cover` of the frame is not a mark but a picture that did not move (a static shot):
   dropped with a note, as a mark hiding under a static scene cannot be told from the scene.
4. Each frame's presence of a candidate: its gradients projected on the template over the template's edges
   (1: the mark as in the template, 0: absent, in between: faded). Runs of frames where it is present are the
   mark's spans, so a mark that jumps (Sora-style) or appears and disappears is one `Mark` per position and span.
5. α and W come from the frames where the mark is fully present (`estimate.estimate_blend`) at full resolution on
   a crop around the support, fitted on the background other frames showed under it (`fill.propagate`); where none
   did (a still background) α stays 1 on the support.

Everything runs on the frames' device (a GPU window in one go), without loops over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .estimate import estimate_blend
from .fill import dilate, propagate
from .marks import Mark
from .remove import FEATHER, REACH, RING, SHIFT_RADIUS

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
    #: a candidate covering more than this fraction of the frame is a static picture, not a mark
    max_cover: float = 0.25
    #: a frame holds a mark when its presence (projection on the template) exceeds this: a fade's frames past
    #: half its strength are removed with the full mark's α (what a frame holds is not estimated per frame)
    present: float = 0.5
    #: estimate α and W (False: α = the support, opaque, e.g. for a preview)
    estimate: bool = True


@dataclass
class Detection:
    """What `detect_marks` found in a window of frames, and why it dropped what it dropped."""

    marks: list[Mark]
    notes: list[str] = field(default_factory=list)


def analysis_factor(height: int, width: int, side: int) -> int:
    return max(1, -(-max(height, width) // side))


def gradients(frames: torch.Tensor) -> torch.Tensor:
    """T×C×h×w → T×2C×h×w forward differences in x then y (0 on the last column / row)."""
    gx = F.pad(frames[..., :, 1:] - frames[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(frames[..., 1:, :] - frames[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([gx, gy], dim=1)


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
    closed = dilate(edges[None, None], close)
    closed = ~dilate(~closed, close)[0, 0]
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


def _candidates(grads: torch.Tensor, opts: DetectOptions) -> list[_Candidate]:
    t = grads.shape[0]
    bounds = list(range(0, t, opts.span))
    if len(bounds) > 1 and t - bounds[-1] < opts.span // 2:
        bounds.pop()  # a short tail joins the window before it
    found: list[_Candidate] = []
    for n, a in enumerate(bounds):
        b = bounds[n + 1] if n + 1 < len(bounds) else t
        g = grads[a:b]
        med = g.median(dim=0).values
        mag = med.norm(dim=0)
        mean_mag = g.norm(dim=1).mean(0)
        edges = (mag > opts.edge) & (mag >= opts.agree * mean_mag)
        support = _support(edges, opts.close, opts.gap)
        if not bool(support.any()):
            continue
        for c in found:
            if _iou(c.support, support) >= opts.same:
                c.support |= support
                c.edges |= edges
                c.template += med
                c.windows += 1
                break
        else:
            found.append(_Candidate(support, edges, med.clone(), 1))
    for c in found:
        c.template /= c.windows
    return found


def _runs(presence: list[float], threshold: float) -> list[tuple[int, int]]:
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


def _full_size(mask: torch.Tensor, f: int, height: int, width: int) -> torch.Tensor:
    return mask.repeat_interleave(f, 0).repeat_interleave(f, 1)[:height, :width]


def _crop_box(mask: torch.Tensor, margin: int) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    h, w = mask.shape
    y0, y1 = max(0, int(ys.min()) - margin), min(h, int(ys.max()) + 1 + margin)
    x0, x1 = max(0, int(xs.min()) - margin), min(w, int(xs.max()) + 1 + margin)
    return y0, y1, x0, x1


def detect_marks(frames: torch.Tensor, indices: list[int], opts: DetectOptions | None = None) -> Detection:
    """The marks in a window of consecutive frames (T×3×H×W float 0..1, any device; `indices`: their stream frame
    numbers). No mark: an empty list (and the notes say why, where a candidate was dropped)."""
    opts = opts or DetectOptions()
    height, width = frames.shape[-2:]
    f = analysis_factor(height, width, opts.analysis_side)
    small = F.avg_pool2d(frames[:, :3].float(), f, ceil_mode=True) if f > 1 else frames[:, :3].float()
    grads = gradients(small)
    det = Detection([])
    for c in _candidates(grads, opts):
        cover = float(c.support.float().mean())
        if cover > opts.max_cover:
            det.notes.append(
                f"a still region covering {cover:.0%} of the frame (frames {indices[0]}..{indices[-1]}) is taken "
                f"for a static picture, not a mark (more than {opts.max_cover:.0%}): auto detection needs a "
                "picture that moves under the mark; give box:X,Y,W,H or mask:PATH instead"
            )
            continue
        e = c.edges & c.support
        tmpl = c.template * e
        norm = float((tmpl * tmpl).sum())
        if norm <= 0:
            continue
        presence = ((grads * tmpl).sum((1, 2, 3)) / norm).tolist()
        det.marks.extend(_marks_of(frames, indices, c, presence, f, opts))
    return det


def _marks_of(
    frames: torch.Tensor, indices: list[int], c: _Candidate, presence: list[float], f: int, opts: DetectOptions
) -> list[Mark]:
    height, width = frames.shape[-2:]
    runs = _runs(presence, opts.present)
    if not runs:
        return []
    support = dilate(_full_size(c.support, f, height, width)[None, None], max(1, f // 2))[0, 0]
    y0, y1, x0, x1 = _crop_box(support, 4 * f + 8)
    weights = torch.tensor([1.0 if p >= FULL else 0.0 for p in presence], device=frames.device)
    alpha = np.zeros((height, width), np.float32)
    colour: np.ndarray | None = None
    if opts.estimate and int(weights.sum()) >= 4:
        crop = frames[:, :3, y0:y1, x0:x1].float()
        sup = support[y0:y1, x0:x1]
        around = dilate(sup[None, None], FEATHER).expand(len(crop), 1, *sup.shape)
        # the background other frames showed under the mark: an unbiased fit (see estimate.estimate_blend)
        shown, unseen = propagate(crop, around, ring=RING, radius=SHIFT_RADIUS, reach=REACH)
        blend = estimate_blend(crop, sup, weights, background=shown, seen=around & ~unseen)
        alpha[y0:y1, x0:x1] = blend.alpha.cpu().numpy()
        colour = np.zeros((height, width, 3), np.float32)
        colour[y0:y1, x0:x1] = blend.colour.permute(1, 2, 0).cpu().numpy()
        inverted = float((blend.confident & (blend.alpha < 0.9)).float().sum())
    else:
        alpha[support.cpu().numpy()] = 1.0
        inverted = 0.0
    if not alpha.any():
        return []
    marks = []
    for a, b in runs:
        info: dict[str, float | int | str] = {
            "presence": round(float(np.mean(presence[a:b])), 3),
            "windows": c.windows,
            "estimated_pixels": int(inverted),
        }
        marks.append(Mark(indices[a], indices[b - 1], alpha, colour, "auto", info))
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
