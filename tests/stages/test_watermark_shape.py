"""`--dewatermark auto`'s α shapes (issue 17, `shape.step_alpha`, `shape.beyond`): a step's α is its share of
the mark's colour against the picture, not its size; a support from forward differences reaches a mark's right
and lower edges."""

from __future__ import annotations

import torch

from vidpipe.stages.watermark.shape import beyond, step_alpha


def test_step_alpha_is_full_over_a_picture_near_the_marks_colour() -> None:
    # an opaque white mark (rows 4–9, columns 4–15) over a picture whose left half is dark and right half light:
    # the step's size is 0.9 on the left and 0.3 on the right, α is 1 on both
    clear = torch.full((3, 14, 20), 0.1)
    clear[:, :, 10:] = 0.7
    region = torch.zeros(14, 20, dtype=torch.bool)
    region[4:10, 4:16] = True
    marked = torch.where(region, torch.ones_like(clear), clear)
    size = (marked - clear).abs().amax(0)
    strength = (size / size[region].quantile(0.9)).clamp(0, 1) * region
    assert float(strength[5, 12]) < 0.5  # the step's size alone: the right half falls under half the peak
    alpha = step_alpha(marked, clear, strength, region, 0.06)
    assert torch.allclose(alpha[region], torch.ones(int(region.sum())))
    assert not bool(alpha[~region].any())


def test_step_alpha_keeps_the_strength_where_the_picture_is_the_marks_colour() -> None:
    clear = torch.full((3, 8, 8), 0.5)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 2:6] = True
    marked = clear.clone()
    marked[:, 2:6, 2:4] = 1.0  # the mark's left half shows, its right half lies over a picture of its colour
    clear[:, 2:6, 4:6] = 1.0
    marked[:, 2:6, 4:6] = 1.0
    strength = region.float() * 0.5
    alpha = step_alpha(marked, clear, strength, region, 0.06)
    assert torch.allclose(alpha[2:6, 2:4], torch.ones(4, 2))
    assert torch.allclose(alpha[2:6, 4:6], torch.full((4, 2), 0.5))


def test_beyond_adds_the_pixel_after_each_forward_difference_edge() -> None:
    # a mark on columns 3–6 and rows 2–5: forward differences mark columns 2 and 6 and rows 1 and 5, one px
    # short of its right and lower edges on the after side
    part = torch.zeros(10, 10, dtype=torch.bool)
    part[2:5, 3:6] = True
    out = beyond(part)
    assert bool(out[2:5, 6].all()) and bool(out[5, 3:6].all())
    assert not bool(out[2:5, 2].any()) and not bool(out[1, 3:6].any())
    assert not bool(out[5, 6])  # the diagonal corner is not added
    assert bool((out & part).eq(part).all())
