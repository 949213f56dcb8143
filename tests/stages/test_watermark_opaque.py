"""Opaque marks over a moving picture (issue 17): a copy from a mark-free frame found only by a shift is taken at
the shift's fraction of a pixel and blended with the frame's own fill (`remove.FREE_SHIFTED`); an unshifted one
is taken whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dewatermark import H, W, logo, marked
from test_matte import real_frames

from vidpipe.stages.watermark import fill, remove
from vidpipe.stages.watermark.fill import local_shift, shift_bilinear, subpixel
from vidpipe.stages.watermark.remove import FREE_SHIFTED, _from_free, remove_mark


def _jump(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A panning shot (vtest's street: texture under the mark) whose opaque mark sits at one place for `count`
    frames, then elsewhere for `count`: (the frames with it, its α as a mask, the later frames, where those hold
    the other mark)."""
    big = real_frames("vtest.avi", 1, size=(2 * W, 2 * H))[0].float() / 255
    frames = torch.stack([big[:, 40 + 3 * i : 40 + 3 * i + H, 40 + 2 * i : 40 + 2 * i + W] for i in range(2 * count)])
    here, there = logo(1.0), logo(1.0, x=8, y=8)
    x = torch.cat([marked(frames[:count], here), marked(frames[count:], there)])
    mask = torch.from_numpy((here > 0).astype(np.float32))
    return x[:count], mask, x[count:], torch.from_numpy(there > 0).expand(count, *here.shape)


def test_a_copy_found_by_a_shift_weighs_less_than_an_unshifted_one() -> None:
    x, mask, free, _ = _jump(4)
    support = mask > 0
    # the same frames as their own mark-free source: the unshifted match is exact
    _, got, weight = _from_free(x[:, :3], support, x[:, :3], None)
    assert torch.equal(weight, torch.ones(4)) and bool(got.all(dim=0)[0][support].all())
    # the pan moved the picture: only a shift matches, and the copy weighs FREE_SHIFTED
    _, got, weight = _from_free(x[:, :3], support, free[:, :3], None)
    assert bool((weight == FREE_SHIFTED).any()) and bool(((weight == FREE_SHIFTED) | (weight == 0)).all())
    assert all(bool(got[t].any()) == bool(weight[t] > 0) for t in range(4))


def test_a_shifted_copy_is_blended_with_the_fill_by_its_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    # no motion-following copies (test_watermark_flow): the shifted copy is what this test weighs
    monkeypatch.setattr(remove, "FLOW_MATCH", -1.0)
    x, mask, free, dirty = _jump(4)
    _, _, weight = _from_free(x[:, :3], mask > 0, free[:, :3], None)
    assert bool((weight == FREE_SHIFTED).all()), weight  # every frame copied shifted: the blend is all there is
    blended, box, _ = remove_mark(x, mask, None, free=free, free_dirty=dirty)
    filled, box_fill, _ = remove_mark(x, mask, None)
    monkeypatch.setattr(remove, "FREE_SHIFTED", 1.0)
    copied, _, _ = remove_mark(x, mask, None, free=free, free_dirty=dirty)
    assert torch.equal(box, box_fill)
    want = FREE_SHIFTED * copied + (1 - FREE_SHIFTED) * filled
    assert torch.allclose(blended, want, atol=1e-5)
    # and the blend changes the copy: neither source alone
    assert not torch.allclose(blended, copied, atol=1e-3) and not torch.allclose(blended, filled, atol=1e-3)


def test_shift_bilinear_is_roll_for_whole_pixels_and_between_them_for_fractions() -> None:
    x, _, _, _ = _jump(1)
    img = x[0, :3]
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(shift_bilinear(img, 3.0, -2.0)[inner], torch.roll(img, (-3, 2), dims=(-2, -1))[inner])
    half = shift_bilinear(img, 0.0, 0.5)[inner]
    assert torch.allclose(half, 0.5 * (img + torch.roll(img, -1, dims=-1))[inner], atol=1e-6)


@pytest.mark.parametrize("frac", [(0.0, 0.3), (-0.25, 0.0), (0.4, -0.4)])
def test_subpixel_finds_the_fraction_of_a_pan(frac: tuple[float, float]) -> None:
    x, mask, _, _ = _jump(1)
    ref = x[0, :3]
    other = shift_bilinear(ref, -2 - frac[0], 1 - frac[1])  # ref's content at (y, x) lies at (y + 2 + fy, ...)
    hole = (mask > 0)[None]
    ring = torch.ones_like(hole)
    dy, dx, _ = local_shift(ref, other, ring, torch.zeros_like(hole), 6)
    fy, fx = subpixel(ref, other, ring, torch.zeros_like(hole), dy, dx)
    assert abs(dy + fy - (2 + frac[0])) < 0.15 and abs(dx + fx - (-1 + frac[1])) < 0.15, (dy, fy, dx, fx)


def test_a_loose_shifted_match_is_taken_only_where_the_mark_is_opaque_and_weighs_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remove, "FLOW_MATCH", -1.0)  # shifted copies only, as in the test above
    x, mask, free, _ = _jump(4)
    support = mask > 0
    # noise on the mark-free frames: the shift still explains the ring, within FREE_LOOSE but not FREE_MATCH
    noisy = (free[:, :3] + 0.06 * torch.randn(free[:, :3].shape, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    _, got, weight = _from_free(x[:, :3], support, noisy, None)
    assert not bool(got.any()) and bool((weight == 0).all())  # strict without `opaque`
    opaque = torch.zeros(4, 1, *support.shape, dtype=torch.bool)
    opaque[:, :, :99] = True  # the upper half of the mark (rows 88..109) opaque, the rest inverted
    _, got, weight = _from_free(x[:, :3], support, noisy, None, opaque)
    assert bool((weight > 0).all()) and bool((weight < FREE_SHIFTED).all()), weight
    assert bool(got.any()) and not bool((got & ~opaque).any()) and bool((support[None, None] & ~opaque).any())


def test_an_opaque_marks_unshifted_copy_follows_a_fraction_of_a_pixel() -> None:
    big = real_frames("vtest.avi", 1, size=(2 * W, 2 * H))[0].float() / 255
    clean = torch.stack([big[:, 40 + 3 * i : 40 + 3 * i + H, 40 + 2 * i : 40 + 2 * i + W] for i in range(2)])
    here = logo(1.0)
    x, support = marked(clean, here), torch.from_numpy(here > 0)
    # the mark-free frames: the same picture moved by 0.4 px, which the unshifted match accepts
    free = torch.stack([shift_bilinear(f, 0.0, -0.4) for f in clean])
    opaque = support[None, None].expand(2, 1, *support.shape)
    rough, _, w_rough = _from_free(x[:, :3], support, free, None)
    fine, got, w_fine = _from_free(x[:, :3], support, free, None, opaque)
    assert bool((w_rough == 1).all()) and bool((w_fine == 1).all()) and bool(got[:, :, support].all())
    # the copy is the free frame moved back by the fraction the ring shows (the picture moved 0.4 px)
    ring = fill.dilate(support[None, None], remove.RING)[0] & ~support
    fy, fx = subpixel(x[0, :3], free[0], ring, torch.zeros_like(ring), 0, 0)
    assert abs(fy) < 0.15 and abs(fx - 0.4) < 0.15, (fy, fx)
    assert torch.allclose(fine[0], shift_bilinear(free[0], fy, fx))
    assert torch.equal(rough, free)  # without `opaque`: the frame as it is


def test_ease_averages_a_copys_weight_over_its_neighbours_in_time() -> None:
    # frames 0–1 copied unshifted (1), 2 shifted (0.7), 3 without a copy (0), 4 unshifted again
    weight = torch.tensor([1.0, 1.0, 0.7, 0.0, 1.0])
    has = weight > 0
    eased = remove.ease(weight, has, (1.0, 2.0, 1.0))
    want = torch.tensor([(2 * 1 + 1) / 3, (1 + 2 + 0.7) / 4, (1 + 1.4 + 0) / 4, 0.0, (0 + 2) / 3])
    assert torch.allclose(eased, want)
    # a frame without a copy stays without one; equal weights stay as they are; a 1-tap kernel changes nothing
    assert float(eased[3]) == 0.0
    same = torch.full((6,), FREE_SHIFTED)
    assert torch.allclose(remove.ease(same, torch.ones(6, dtype=torch.bool)), same)
    assert torch.equal(remove.ease(weight, has, (1.0,)), weight)


def test_a_copys_weight_eases_between_copied_and_filled_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remove, "FLOW_MATCH", -1.0)  # shifted copies only, as above
    x, mask, free, dirty = _jump(4)
    real = remove._from_free

    def one_missing(*args: object, **kw: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bare, got, weight = real(*args, **kw)  # type: ignore[arg-type]
        got[1], weight[1] = False, 0.0  # frame 1 finds no copy: its neighbours' weights ease towards the fill
        return bare, got, weight

    monkeypatch.setattr(remove, "_from_free", one_missing)
    eased, box, _ = remove_mark(x, mask, None, free=free, free_dirty=dirty)
    y0, y1, x0, x1 = (int(v) for v in box)
    monkeypatch.setattr(remove, "EASE", (1.0,))
    stepped, _, _ = remove_mark(x, mask, None, free=free, free_dirty=dirty)
    filled, _, _ = remove_mark(x, mask, None)
    # frame 1 is the fill either way; frames 0 and 2 move from the stepped blend towards the fill
    assert torch.allclose(eased[1], stepped[1], atol=1e-6) and torch.allclose(eased[1], filled[1], atol=1e-5)
    for t in (0, 2):
        hole = (mask[y0:y1, x0:x1] > 0).expand_as(eased[t, :3])
        near = (eased[t, :3] - filled[t, :3]).abs()[hole].mean()
        far = (stepped[t, :3] - filled[t, :3]).abs()[hole].mean()
        assert float(near) < float(far), t
