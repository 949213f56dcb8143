"""Opaque marks over a moving picture (issue 17): a copy from a mark-free frame found only by a shift is blended
with the frame's own fill (`remove.FREE_SHIFTED`), an unshifted one is taken whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dewatermark import H, W, logo, marked
from test_matte import real_frames

from vidpipe.stages.watermark import remove
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
