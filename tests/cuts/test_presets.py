"""Preset knobs (seed S1 §2.2) and the preset policy on every bucket edge."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from vidpipe.errors import UsageError
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.presets import PRESETS, choose_preset, get_preset


def test_knobs_are_the_seeds() -> None:
    assert (PRESETS["quality"].ssim_max_side, PRESETS["quality"].flow_max_side) == (640, 384)
    assert (PRESETS["default"].ssim_max_side, PRESETS["default"].flow_max_side) == (512, 320)
    assert (PRESETS["fast"].ssim_max_side, PRESETS["fast"].flow_max_side) == (384, 256)
    assert PRESETS["fast"].hard_cuts_cascade
    assert not PRESETS["default"].hard_cuts_cascade and not PRESETS["quality"].hard_cuts_cascade
    # our own speed-up of `fast` (not a seed knob) stays out of the presets accuracy is judged on
    assert PRESETS["fast"].soft_flow_gate
    assert not PRESETS["default"].soft_flow_gate and not PRESETS["quality"].soft_flow_gate


@pytest.mark.parametrize(
    ("short_side", "emergency", "expected"),
    [
        (1, False, "quality"),
        (320, False, "quality"),
        (320, True, "quality"),
        (321, False, "default"),
        (321, True, "default"),
        (720, False, "default"),
        (720, True, "default"),
        (721, False, "default"),
        (721, True, "fast"),
        (2160, False, "default"),
        (2160, True, "fast"),
    ],
)
def test_policy_edges(short_side: int, emergency: bool, expected: str) -> None:
    assert choose_preset(short_side, emergency=emergency).name == expected


def test_bad_values_name_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="quality, default, fast"):
        get_preset("turbo")
    with pytest.raises(UsageError):
        choose_preset(0)


@pytest.mark.parametrize(
    ("size", "emergency", "expected"),
    [
        ((640, 320), False, "quality"),  # S = 320, the top of the quality bucket
        ((321, 640), False, "default"),  # portrait: the short side is the width
        ((1280, 720), True, "default"),  # S = 720: emergency does not reach this bucket
        ((720, 1280), False, "default"),
        ((1280, 721), True, "fast"),
        ((2160, 3840), False, "default"),
    ],
)
def test_detector_applies_the_policy_on_the_short_side(size: tuple[int, int], emergency: bool, expected: str) -> None:
    det = CutDetector(CutOptions(emergency=emergency))
    det.setup(torch.device("cpu"), StreamSpec(width=size[0], height=size[1], time_base=Fraction(1, 25)))
    assert det.preset is not None and det.preset.name == expected
    assert det.signature()["preset"] == expected
