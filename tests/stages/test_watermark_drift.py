"""`--dewatermark auto`'s still mark over a picture that drifts slowly (issue 17, `drift.still_marks`): over a
sub-window the scene's edges hold as well as the mark's; over the whole window only the mark's do."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidpipe.stages.watermark.detect import detect_marks, merge_marks

H, W, T = 72, 96, 48


def _scene(drift: bool, bar: bool = False) -> torch.Tensor:
    """T frames of a smooth random texture with sharp-edged blocks, moved 1 px right every 8 frames (`drift`);
    `bar`: with a dark bar of the scene (rows 24–27) whose long edges run along the drift."""
    g = torch.Generator().manual_seed(3)
    big = F.interpolate(torch.rand(1, 3, 14, 18, generator=g), size=(H + 8, W + 8), mode="bicubic")[0]
    big = big.clamp(0, 1) * 0.3 + 0.3
    for y, x, c in ((10, 12, 0.9), (50, 8, 0.1), (20, 60, 0.8), (50, 72, 0.15)):
        big[:, y : y + 10, x : x + 14] = c
    if bar:
        big[:, 28:32, 34:62] = 0.05
    noise = torch.randn(T, 3, H, W, generator=g) * 0.6 / 255
    shift = [t // 8 if drift else 0 for t in range(T)]
    return torch.stack([big[:, 4 : 4 + H, s : s + W] for s in shift]) + noise


def _badge(alpha: float) -> np.ndarray:
    a = np.zeros((H, W), np.float32)
    a[30:44, 36:56] = alpha
    return a


def _detect(x: torch.Tensor) -> list:
    x = (x.clamp(0, 1) * 255).round() / 255
    return merge_marks(detect_marks(x, list(range(len(x)))).marks)


def test_a_still_semi_transparent_mark_over_a_drifting_picture_is_found() -> None:
    a = _badge(0.45)
    x = _scene(drift=True)
    at = torch.from_numpy(a)[None, None]
    marked = at * torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1) + (1 - at) * x
    marks = _detect(marked)
    assert len(marks) == 1, [(m.first, m.last, m.box(0.0)) for m in marks]
    found, truth = marks[0].alpha >= 0.5 * marks[0].alpha.max(), a > 0.2
    iou = (found & truth).sum() / (found | truth).sum()
    assert (marks[0].first, marks[0].last) == (0, T - 1)
    assert iou >= 0.6, iou


def test_a_drifting_picture_without_a_mark_has_none() -> None:
    assert _detect(_scene(drift=True)) == []
    assert _detect(_scene(drift=False)) == []


def test_a_scene_edge_along_the_drift_next_to_the_mark_is_not_taken_with_it() -> None:
    # the scene's dark bar 2 px above the badge: its long edges hold at both ends of the window and close into one
    # part with the badge's (as Megamind's table edge above its still logo), but they match the drift as well as
    # no shift, and its ends drift
    x = _scene(drift=True, bar=True)
    a = _badge(0.45)
    at = torch.from_numpy(a)[None, None]
    marked = at * torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1) + (1 - at) * x
    marks = _detect(marked)
    assert len(marks) == 1, [(m.first, m.last, m.box(0.0)) for m in marks]
    found, truth = marks[0].alpha >= 0.5 * marks[0].alpha.max(), a > 0.2
    assert not found[:28].any(), np.nonzero(found[:28])
    assert (found & truth).sum() / (found | truth).sum() >= 0.6
