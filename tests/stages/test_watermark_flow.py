"""Motion-following copies (issue 17): a dense flow between a frame with a hole and another frame, the hole left
out of its data term and filled by the surroundings' flow (`flow.masked_flow`), and the copies it gives
(`remove._follow`, `remove._follow_sides`, `remove._chain`, `MarkMemory.carried`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from test_dewatermark import H, W, logo, marked
from test_matte import real_frames

from vidpipe.stages.watermark import remove
from vidpipe.stages.watermark.fill import dilate, local_shift, shift_bilinear, subpixel
from vidpipe.stages.watermark.flow import masked_flow, warp
from vidpipe.stages.watermark.remove import MarkMemory, remove_mark


def _scene() -> torch.Tensor:
    """A real frame (vtest's street, float 0..1), 3×H×W."""
    return real_frames("vtest.avi", 1, size=(W, H))[0].float() / 255


def _motion(dy: float, dx: float, wobble: float) -> torch.Tensor:
    """2×H×W: a translation (dy, dx) plus a smooth non-rigid part of amplitude `wobble` px (a stretch that
    varies over the frame, as a turning head or a zoom gives)."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    fy = dy + wobble * torch.sin(2 * math.pi * xs / W)
    fx = dx + wobble * torch.cos(2 * math.pi * ys / H)
    return torch.stack([fy, fx])


def _hole(y: int = 50, x: int = 70, h: int = 18, w: int = 22) -> torch.Tensor:
    hole = torch.zeros(1, H, W, dtype=torch.bool)
    hole[:, y : y + h, x : x + w] = True
    return hole


def test_the_flow_follows_a_non_rigid_motion_and_the_warp_recovers_the_hidden_patch() -> None:
    src = _scene()
    truth = _motion(2.0, -3.0, 1.5)
    ref = warp(src[None], truth[None])[0]  # the content at (y, x) of ref is at (y, x) + truth of src
    hole = _hole()
    hidden = torch.where(hole, torch.ones_like(ref), ref)  # an opaque white mark over the patch
    ring = dilate(hole[None], 6)[0] & ~hole
    dy, dx, _ = local_shift(hidden, src, ring, torch.zeros_like(hole), 24)
    fy, fx = subpixel(hidden, src, ring, torch.zeros_like(hole), dy, dx)
    est = masked_flow(hidden, src, ~hole, torch.ones_like(hole), (dy + fy, dx + fx))
    inner = hole[0]
    assert float((est - truth).abs()[:, inner].mean()) < 0.3, (est - truth).abs()[:, inner].mean()
    moved = warp(src[None], est[None])[0]
    shifted = shift_bilinear(src, dy + fy, dx + fx)  # the whole translation the copies took before
    err_flow = float((moved - ref).abs()[:, inner].mean())
    err_shift = float((shifted - ref).abs()[:, inner].mean())
    assert err_flow < 0.02 and err_flow < 0.5 * err_shift, (err_flow, err_shift)


def test_the_holes_pixels_give_no_data() -> None:
    src = _scene()
    ref = warp(src[None], _motion(-1.0, 2.0, 1.0)[None])[0]
    hole = _hole()
    a = torch.where(hole, torch.ones_like(ref), ref)
    b = torch.where(hole, torch.rand_like(ref), ref)  # anything under the hole
    seen = torch.ones_like(hole)
    assert torch.equal(masked_flow(a, src, ~hole, seen), masked_flow(b, src, ~hole, seen))
    # not so when the hole is taken as picture: its pixels pull the flow
    assert not torch.equal(masked_flow(a, src, seen, seen), masked_flow(b, src, seen, seen))


def _shot(count: int, wobble: float = 1.5) -> torch.Tensor:
    """`count` frames of one real frame moving by a pan of (1, −1) px a frame plus a growing non-rigid part."""
    src = _scene()
    return torch.stack([warp(src[None], _motion(k * 1.0, -k * 1.0, wobble * k / count)[None])[0] for k in range(count)])


def test_an_opaque_mark_over_a_non_rigid_motion_takes_flow_copies_from_the_free_frames() -> None:
    clean = _shot(8)
    alpha = logo(1.0, x=60, y=50)
    x = marked(clean[4:], alpha)  # the mark comes at frame 4: frames 0..3 are free
    support = torch.from_numpy(alpha > 0)
    copied, box, out = remove_mark(x, torch.from_numpy(alpha), None, free=clean[:4], when=([4, 5, 6, 7], [0, 1, 2, 3]))
    filled, _, _ = remove_mark(x, torch.from_numpy(alpha), None)
    y0, y1, x0, x1 = (int(v) for v in box)
    want = clean[4:, :, y0:y1, x0:x1]
    inner = support[y0:y1, x0:x1]
    err_copy = float((copied - want).abs()[:, :, inner].mean())
    err_fill = float((filled - want).abs()[:, :, inner].mean())
    assert out.propagated >= int(support.sum()) * 4
    assert err_copy < 0.5 * err_fill, (err_copy, err_fill)


def test_a_window_without_free_frames_chains_from_the_last_windows_copies() -> None:
    clean = _shot(12)
    alpha = torch.from_numpy(logo(1.0, x=60, y=50))
    x = marked(clean, alpha.numpy())
    memory = MarkMemory()
    # the first window: frames 0..1 free, the mark on 2..7
    remove_mark(x[2:8], alpha, None, free=clean[:2], memory=memory, when=(list(range(2, 8)), [0, 1]))
    assert sorted(memory.carried) == list(range(2, 8))
    # the next: frames 4..11 all hold the mark; 4..7 were copied last window, 8..11 chain on from them
    chained, box, out = remove_mark(
        x[4:], alpha, None, memory=MarkMemory(carried=memory.carried), when=(list(range(4, 12)), [])
    )
    alone, _, _ = remove_mark(x[4:], alpha, None)
    y0, y1, x0, x1 = (int(v) for v in box)
    inner = alpha[y0:y1, x0:x1] > 0
    want = clean[8:, :, y0:y1, x0:x1]
    err_chain = float((chained[4:] - want).abs()[:, :, inner].mean())
    err_alone = float((alone[4:] - want).abs()[:, :, inner].mean())
    assert out.propagated > 0 and err_chain < 0.5 * err_alone, (err_chain, err_alone)
    # a carried copy of another crop (another frame's pixels around the mark) is not taken
    other = {i + 1: v for i, v in memory.carried.items()}
    assert MarkMemory(carried=other).carried_at([3, 4], x[3:5, :3, y0:y1, x0:x1], inner) == {}
    np.testing.assert_equal(
        sorted(MarkMemory(carried=memory.carried).carried_at([4, 5], x[4:6, :3, y0:y1, x0:x1], inner)), [0, 1]
    )


def test_a_frame_between_free_frames_blends_both_sides_copies_by_their_nearness() -> None:
    clean = _shot(12)
    alpha = logo(1.0, x=60, y=50)
    support = torch.from_numpy(alpha > 0)
    x = marked(clean, alpha)[:, :3]
    ring = dilate(support[None, None], 6)[0] & ~support
    free = torch.cat([clean[:4], clean[8:]])  # the mark on frames 4..7
    clear = torch.ones_like(free[:, :1])
    when = ([4, 5, 6, 7], [0, 1, 2, 3, 8, 9, 10, 11])
    crop = x[4:8]
    rms = torch.zeros(len(free))
    moved, seen = remove._follow_sides(crop[1], support, ring, free, clear, rms, when, 1)  # frame 5
    before = remove._follow(crop[1], support, ring, free, clear, [3])  # frame 3
    after = remove._follow(crop[1], support, ring, free, clear, [4])  # frame 8
    assert before is not None and after is not None
    both = before[1] & after[1]
    want = torch.where(both, 0.6 * before[0] + 0.4 * after[0], torch.where(before[1], before[0], after[0]))
    assert torch.allclose(moved, want, atol=1e-6) and torch.equal(seen, before[1] | after[1])
