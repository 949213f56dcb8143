"""The one padding rule: sizes, multiples per RIFE scale, pad/crop round trips and misuse."""

from __future__ import annotations

import random

import pytest
import torch

from vidpipe.errors import UsageError
from vidpipe.models.padding import Padding, multiple_for_scale, pad_to_multiple, padded_size


@pytest.mark.parametrize(
    ("h", "w", "m", "expected"),
    [
        (793, 1058, 32, (800, 1088)),
        (2160, 3840, 64, (2176, 3840)),  # 4K in UHD mode: 2160 is not a multiple of 64
        (2160, 3840, 32, (2176, 3840)),
        (576, 768, 32, (576, 768)),  # already aligned: untouched
        (1, 1, 32, (32, 32)),
        (1080, 1920, 1, (1080, 1920)),
    ],
)
def test_padded_size(h: int, w: int, m: int, expected: tuple[int, int]) -> None:
    assert padded_size(h, w, m) == expected


def test_padded_size_is_the_smallest_multiple() -> None:
    rng = random.Random(0)
    for _ in range(500):
        h, w, m = rng.randint(1, 5000), rng.randint(1, 5000), rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 3, 7])
        ph, pw = padded_size(h, w, m)
        assert ph % m == 0 and pw % m == 0
        assert h <= ph < h + m and w <= pw < w + m


def test_multiple_for_scale() -> None:
    assert [multiple_for_scale(32, s) for s in (1.0, 0.5, 0.25, 2.0)] == [32, 64, 128, 32]
    assert multiple_for_scale(64, 0.5) == 128  # RIFE 4.25 in UHD mode
    with pytest.raises(UsageError, match="whole number"):
        multiple_for_scale(32, 0.3)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(("h", "w", "m"), [(793, 1058, 32), (17, 5, 64), (64, 64, 64)])
def test_pad_then_crop_gives_back_the_input(dtype: torch.dtype, h: int, w: int, m: int) -> None:
    x = (torch.rand(2, 3, h, w) * 255).to(dtype)
    y, pad = pad_to_multiple(x, m)
    assert tuple(y.shape[-2:]) == padded_size(h, w, m)
    assert torch.equal(y[..., :h, :w], x)  # padding is right/bottom only: pixels keep their place
    assert torch.equal(pad.crop(y), x)


def test_pad_modes() -> None:
    x = torch.rand(1, 3, 5, 7)
    rep = Padding(5, 7, 8).pad(x)
    assert torch.equal(rep[..., 5:, :7], x[..., 4:5, :].expand(1, 3, 3, 7))  # edge row continued
    assert torch.equal(rep[..., :5, 7:], x[..., :, 6:7].expand(1, 3, 5, 1))
    zero = Padding(5, 7, 8).pad(x, mode="constant")
    assert float(zero[..., 5:, :].abs().sum()) == 0.0
    tiny = Padding(2, 2, 32).pad(torch.rand(1, 3, 2, 2), mode="reflect")  # reflect cannot pad by > size
    assert tiny.shape == (1, 3, 32, 32)


def test_crop_of_a_scaled_output() -> None:
    pad = Padding(793, 1058, 4)
    ph, pw = pad.padded
    sr = torch.rand(1, 3, ph * 2, pw * 2)
    assert pad.crop(sr, scale=2).shape == (1, 3, 793 * 2, 1058 * 2)


def test_misuse_is_refused() -> None:
    pad = Padding(793, 1058, 32)
    with pytest.raises(UsageError, match="expected"):
        pad.pad(torch.rand(1, 3, 800, 1058))
    with pytest.raises(UsageError, match="crop"):
        pad.crop(torch.rand(1, 3, 793, 1058))  # an unpadded tensor cannot be "cropped back"
    with pytest.raises(UsageError):
        Padding(0, 10, 32)
    with pytest.raises(UsageError):
        padded_size(10, 10, 0)
