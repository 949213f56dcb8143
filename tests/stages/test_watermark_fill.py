"""`watermark.fill.propagate`: its frame pairs checked and copied all at once give what one pair at a time gave
(the loop below, with `shifted_rms` per pair: bit for bit)."""

from __future__ import annotations

import pytest
import torch

from vidpipe.stages.watermark import fill
from vidpipe.stages.watermark.fill import RING_MATCH, dilate, local_shift, propagate, shifted_rms, within


def _one_pair_at_a_time(frames, holes, *, ring, radius, reach):
    out, left = frames.clone(), holes.clone()
    t_count = frames.shape[0]
    rings = dilate(holes, ring) & ~holes
    pos = [(0, 0)]
    for t in range(1, t_count):
        dy, dx, rms = local_shift(frames[t - 1], frames[t], rings[t - 1], holes[t], radius)
        pos.append((pos[-1][0] + dy, pos[-1][1] + dx) if rms <= RING_MATCH else pos[-1])
    h, w = frames.shape[-2:]
    for t in range(t_count):
        for s in sorted((s for s in range(t_count) if s != t and abs(s - t) <= reach), key=lambda s: abs(s - t)):
            dy, dx = pos[s][0] - pos[t][0], pos[s][1] - pos[t][1]
            if (dy == 0 and dx == 0) or abs(dy) >= h or abs(dx) >= w:
                continue
            if shifted_rms(frames[t], rings[t], frames[s], holes[s], dy, dx) > RING_MATCH:
                continue
            src = torch.roll(frames[s], (-dy, -dx), dims=(-2, -1))
            seen = torch.roll(~holes[s], (-dy, -dx), dims=(-2, -1)) & (within(h, w, dy, dx, frames.device) > 0)
            take = left[t] & seen
            out[t] = torch.where(take, src, out[t])
            left[t] &= ~take
    return out, left


def _panned(t: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured picture panned 1–3 px a frame (some frames jolted by noise: pairs the ring rejects) and a
    moving square hole."""
    g = torch.Generator().manual_seed(seed)
    big = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 3 * size, 3 * size, generator=g), 5, 1, 2)[0]
    frames, holes, y, x = [], [], size, size
    for k in range(t):
        f = big[:, y : y + size, x : x + size].clone()
        if k % 5 == 3:
            f += 0.2 * torch.rand(f.shape, generator=g)
        frames.append(f)
        hole = torch.zeros(1, size, size, dtype=torch.bool)
        hole[:, 10 + k % 3 : 26 + k % 3, 12 : 30 - k % 2] = True
        holes.append(hole)
        y, x = y + 1 + k % 2, x + 2 - k % 3
    return torch.stack(frames), torch.stack(holes)


@pytest.mark.parametrize("batched", [False, True])
def test_propagate_equals_one_pair_at_a_time(monkeypatch, batched: bool) -> None:
    # batched: as on a GPU, every distance's sources in one round and every pair in one chunk
    monkeypatch.setattr(fill, "_batched", lambda device: batched)
    for seed in range(3):
        frames, holes = _panned(12, 40, seed)
        got = propagate(frames, holes, ring=4, radius=6, reach=5)
        want = _one_pair_at_a_time(frames, holes, ring=4, radius=6, reach=5)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert 0 < int(want[1].sum()) < int(holes.sum())  # some pixels filled, not all


def test_propagate_in_chunks_of_pairs(monkeypatch) -> None:
    monkeypatch.setattr(fill, "_batched", lambda device: True)
    frames, holes = _panned(10, 32, 7)
    monkeypatch.setattr(fill, "PAIR_BYTES", 1 << 30)  # all pairs at once
    whole = propagate(frames, holes, ring=4, radius=6, reach=4)
    monkeypatch.setattr(fill, "PAIR_BYTES", 3 * 32 * 32 * 4 * 5)  # 5 pairs at a time
    chunked = propagate(frames, holes, ring=4, radius=6, reach=4)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_local_shifts_equal_local_shift_per_pair(monkeypatch) -> None:
    # crops past COARSE_SIDE: the coarse search, then the refinement around it
    frames, holes = _panned(7, 100, 3)
    frames = torch.cat([frames, frames.flip(-1)], -1)[..., :150]  # 100×150: reduced by 3 for the coarse search
    holes = torch.cat([holes, holes], -1)[..., :150]
    rings = dilate(holes, 6) & ~holes
    want = [local_shift(frames[t - 1], frames[t], rings[t - 1], holes[t], 12) for t in range(1, 7)]
    monkeypatch.setattr(fill, "CPU_PAIR_BYTES", 1 << 30)  # all pairs at once, as on a GPU
    assert fill.local_shifts(frames[:-1], frames[1:], rings[:-1], holes[1:], 12) == want
    assert len({(dy, dx) for dy, dx, _ in want}) > 1
    monkeypatch.setattr(fill, "CPU_PAIR_BYTES", 1)  # one pair at a time
    assert fill.local_shifts(frames[:-1], frames[1:], rings[:-1], holes[1:], 12) == want


def _harmonic_whole_frame(x, hole, sweeps):
    """`harmonic` as it was: the sweeps over the whole frame."""
    y = fill.pushpull(x, hole)
    cross = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])
    kernel = cross.view(1, 1, 3, 3).expand(x.shape[1], 1, 3, 3)
    for _ in range(sweeps):
        mean = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        y = torch.where(hole.expand_as(x), mean, y)
    return y


@pytest.mark.parametrize("place", ["inside", "corner", "edges"])
def test_harmonic_on_the_holes_box_equals_the_whole_frame(place: str) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 37, 51, generator=g)
    hole = torch.zeros(3, 1, 37, 51, dtype=torch.bool)
    spots = {"inside": (9, 20, 14, 30), "corner": (0, 12, 40, 51), "edges": (0, 37, 20, 26)}[place]
    y0, y1, x0, x1 = spots
    hole[0, :, y0:y1, x0:x1] = True
    hole[2, :, y0 + 1 : y1, x0 : x1 - 2] = True  # frame 1 has none
    got = fill.harmonic(x, hole, sweeps=30)
    assert torch.equal(got, _harmonic_whole_frame(x, hole, 30))
    assert torch.equal(got[~hole.expand_as(x)], x[~hole.expand_as(x)])
    assert torch.equal(fill.harmonic(x, torch.zeros_like(hole)), x)
