"""Comparing 8-bit frames that went through a float model by two routes (issue 22, item 12).

A forward pass is bit-exact only against itself: another batch size, another weight layout or another thread count
makes oneDNN sum in another order, a few ulps apart. Rounded to 8 bits, an ulp moves a value only where it sat on a
rounding edge: a level, on a handful of values. A lost, repeated, reordered or wrong frame moves most of them by
many levels. Where identity is the promise (pass-through frames, resume and segment joins of deterministic integer
paths, the same call repeated), tests keep `torch.equal`.
"""

from __future__ import annotations

import torch

#: levels one rounding flip can move a value: 1 in RGB; 3 in RGB decoded from 4:2:0 (a flipped value moves Y and
#: the 2×2 chroma average by one level each, and the YUV → RGB matrix adds them up to ~1 + 1.8 = 2.8)
RGB_LEVELS = 1
YUV420_LEVELS = 3
#: values allowed to differ at all: rounding flips are rare (≪ 0.1 %); a changed frame differs nearly everywhere
MAX_DIFFERING_FRACTION = 0.01


def assert_frames_close(got: torch.Tensor, want: torch.Tensor, *, levels: int = RGB_LEVELS, what: str = "") -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.to(torch.int32) - want.to(torch.int32)).abs()
    worst = int(diff.max()) if diff.numel() else 0
    differing = float((diff > 0).float().mean()) if diff.numel() else 0.0
    assert worst <= levels, f"{what}: a value is {worst} levels off (rounding moves at most {levels})"
    assert differing <= MAX_DIFFERING_FRACTION, f"{what}: {differing:.2%} of values differ"
