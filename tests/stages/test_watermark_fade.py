"""`--dewatermark auto`'s shape of a mark from the frames of its shot without it (issue 17, `fade.fade_shape`):
a logo fading out over a still talking head, where how much each pixel held back the picture's change
(`shape.held_shape`) took a blob around the logo."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidpipe.stages.watermark.fade import FadeOptions, fade_shape, fade_span, runs, shots
from vidpipe.stages.watermark.shape import held_shape

H, W, T = 48, 64, 40


def _ring() -> np.ndarray:
    """A ring and a dot, α 1 (scaled by the fade)."""
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot(yy - 24, xx - 32)
    return (((r > 6) & (r < 10)) | (r < 3)).astype(np.float32)


def _scene(moving: bool) -> torch.Tensor:
    """T frames of a smooth random texture with 0.6-level noise; `moving`: shifted 1 px right each frame."""
    g = torch.Generator().manual_seed(5)
    big = F.interpolate(torch.rand(1, 3, 10, 14, generator=g), size=(H, W + T), mode="bicubic")[0]
    big = big.clamp(0, 1) * 0.4 + 0.3
    noise = torch.randn(T, 3, H, W, generator=g) * 0.6 / 255
    return torch.stack([big[:, :, (t if moving else 0) : (t if moving else 0) + W] for t in range(T)]) + noise


def _fading(x: torch.Tensor, shape: np.ndarray) -> tuple[torch.Tensor, list[float]]:
    """The mark (yellow, α 0.7) at full strength over frames 0..19, fading out over 20..27, gone after; its
    presence per frame."""
    strength = [1.0 if t < 20 else max(0.0, 1 - (t - 19) / 9) for t in range(T)]
    a = torch.from_numpy(shape)[None, None] * 0.7 * torch.tensor(strength).view(T, 1, 1, 1)
    colour = torch.tensor([1.0, 0.8, 0.1]).view(1, 3, 1, 1)
    return ((a * colour + (1 - a) * x).clamp(0, 1) * 255).round() / 255, strength


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / max(1, int((a | b).sum())))


def test_a_fade_over_a_still_picture_gives_the_marks_own_pixels() -> None:
    truth = torch.from_numpy(_ring() > 0)
    x, strength = _fading(_scene(moving=False), _ring())
    blob = torch.zeros(H, W, dtype=torch.bool)  # what a sub-window's support gives: the logo's box, filled
    blob[13:36, 21:44] = True
    (run,) = runs(strength, 0.5)
    shape = fade_shape(x, blob, strength, run, 0.8)
    assert shape is not None
    found = shape >= 0.5 * float(shape.max())
    # measured 0.964; the span's held change over the same frames (what detection used before): 0.000
    assert _iou(found, truth) >= 0.9, _iou(found, truth)
    held = held_shape(x[run[0] : run[1]], blob, grow=2, reach=16, around=0.5, least=0.25, noise=0.2 / 255)
    assert held is None or _iou(held >= 0.5 * float(held.max()), truth) < 0.5


def test_a_moving_picture_or_a_mark_that_never_leaves_gives_no_shape() -> None:
    blob = torch.from_numpy(_ring() > 0)
    x, strength = _fading(_scene(moving=True), _ring())
    assert fade_shape(x, blob, strength, runs(strength, 0.5)[0], 0.8) is None  # the difference is the scene's
    x, _ = _fading(_scene(moving=False), _ring())
    assert fade_shape(x, blob, [1.0] * T, (0, T), 0.8) is None  # no frame without it


def test_a_cut_splits_the_shots_and_a_still_shots_noise_does_not() -> None:
    x = _scene(moving=False)
    assert shots(x, FadeOptions()) == [(0, T)]
    x[25:] = 1 - x[25:]
    assert shots(x, FadeOptions()) == [(0, 25), (25, T)]


def _square_fading(steps: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of a still noisy picture carrying a white square whose strength in each frame is `steps`'."""
    g = torch.Generator().manual_seed(3)
    picture = torch.rand(3, 24, 24, generator=g) * 0.5
    shape = torch.zeros(24, 24, dtype=torch.bool)
    shape[8:16, 8:16] = True
    frames = []
    for k in steps:
        frame = picture + 0.01 * torch.randn(3, 24, 24, generator=g)
        frames.append(torch.where(shape, frame + 0.7 * k * (1 - frame), frame))
    return torch.stack(frames), shape


def test_fade_span_reaches_back_to_the_first_faint_frame_of_a_fade() -> None:
    # six mark-free frames, a fade-in over frames 6–11 (1/7 … 6/7), full from 12; a halfway test starts it at 9
    steps = [0.0] * 6 + [(i + 1) / 7 for i in range(6)] + [1.0] * 12
    frames, shape = _square_fading(steps)
    assert fade_span(frames, shape, (9, 24), FadeOptions()) == (6, 24)


def test_fade_span_leaves_a_mark_that_comes_at_once_and_noise_alone() -> None:
    frames, shape = _square_fading([0.0] * 9 + [1.0] * 15)
    assert fade_span(frames, shape, (9, 24), FadeOptions()) == (9, 24)
