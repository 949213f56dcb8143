"""The detector's fast feature paths agree with their plain definitions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidpipe.stages.cuts import features as ft


def _texture(h: int, w: int, seed: int = 0, cells: tuple[int, int] | None = None) -> np.ndarray:
    """Smooth random colour texture: bicubic from `cells` (w, h) random values (default: one per 8 px)."""
    rng = np.random.default_rng(seed)
    cw, ch = cells or (w // 8, h // 8)
    small = rng.random((ch, cw, 3), dtype=np.float32) * 255
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_halve_to_stops_at_the_smallest_level_not_below_the_target() -> None:
    img = _texture(720, 1280)
    assert ft.halve_to(img, (384, 216)).shape == (360, 640, 3)
    assert ft.halve_to(img, (320, 180)).shape == (180, 320, 3)
    assert ft.halve_to(img, (1280, 720)) is img
    odd = _texture(360, 642)[:, :641]  # an odd side cannot be halved exactly
    assert ft.halve_to(odd, (96, 54)) is odd


@pytest.mark.parametrize(
    ("src", "dst"), [((1280, 720), (384, 216)), ((1920, 1080), (256, 144)), ((480, 360), (96, 72))]
)
def test_resize_is_close_to_an_area_average(src: tuple[int, int], dst: tuple[int, int]) -> None:
    # detail down to 4 px of the target: what a detector can see at that size
    img = _texture(src[1], src[0], seed=src[0], cells=(dst[0] // 4, dst[1] // 4))
    ours = ft.resize(img, dst).astype(np.float32)
    area = cv2.resize(img, dst, interpolation=cv2.INTER_AREA).astype(np.float32)
    assert ours.shape == area.shape
    # box-of-boxes and a final bilinear step stay within about a level of the exact area average
    assert float(np.abs(ours - area).mean()) < 1.5
    # and, like it, average pixel noise away where one bilinear step (which skips pixels) lets it alias through
    noise = np.random.default_rng(1).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    spread = {
        "ours": ft.resize(noise, dst).std(),
        "area": cv2.resize(noise, dst, interpolation=cv2.INTER_AREA).std(),
        "bilinear": cv2.resize(noise, dst, interpolation=cv2.INTER_LINEAR).std(),
    }
    assert spread["ours"] < 1.5 * spread["area"] < 0.75 * spread["bilinear"], spread


def test_blend_fit_is_the_least_squares_fit() -> None:
    rng = np.random.default_rng(3)
    a, b, noise = (rng.random((54, 96, 3), dtype=np.float32) for _ in range(3))
    for alpha in (0.0, 0.3, 0.8):
        m = ((1 - alpha) * a + alpha * b + 0.05 * noise).astype(np.float32)
        d = b - a
        want = float(((m - a) * d).sum()) / float((d * d).sum())
        r = m - a - want * d
        got = ft.blend_fit(a, m, b)
        assert got[0] == pytest.approx(want, abs=1e-5)
        assert got[1] == pytest.approx(float(np.sqrt((r * r).sum() / (d * d).sum())), rel=1e-4)
        assert got[2] == pytest.approx(float(np.abs(d).mean()), rel=1e-5)
        assert ft.blend_alpha(a, m, b, float((d.astype(np.float64) ** 2).sum())) == pytest.approx(got[0], abs=1e-6)
    assert ft.blend_fit(a, a, a + 0.01, min_diff=0.05) == (0.0, float("inf"), pytest.approx(0.01, rel=1e-3))


def test_mean_luma_is_the_mean_of_grey() -> None:
    img = _texture(90, 160, seed=5)
    thumb = img.astype(np.float32) / 255.0
    assert ft.mean_luma(thumb) == pytest.approx(float(ft.grey(img).mean()) / 255.0, abs=2e-3)
