"""Presets of the classical detector and the policy that picks one (seed S1, §2.1–2.2).

The knobs are the sides the heavy features run at: SSIM at `ssim_max_side`, Farneback flow at
`flow_max_side` (longest side, pixels; never upscaled). `fast` also gates both behind a histogram cascade.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import UsageError

PresetName = Literal["quality", "default", "fast"]
PRESET_NAMES: tuple[PresetName, ...] = ("quality", "default", "fast")

#: policy bucket edges on the short side S (seed §2.2): S ≤ 320 → quality; 320 < S ≤ 720 → default; above →
#: default, and fast only when the scheduler asks for it (throughput emergency)
QUALITY_MAX_SHORT_SIDE = 320
DEFAULT_MAX_SHORT_SIDE = 720


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    name: PresetName
    ssim_max_side: int
    flow_max_side: int
    #: compute SSIM and flow only for pairs the cheap histogram difference flags
    hard_cuts_cascade: bool = False
    #: the dissolve test's flow check (share of the change flow cannot explain) runs first between the
    #: thumbnails, and at `flow_max_side` only where that is undecided. Not a seed knob: `fast` needs it to stay
    #: ahead of PySceneDetect's ContentDetector, as Farneback costs ~10 ms a pair at 256 px, ~1.4 ms at 96 px,
    #: and a 20-frame dissolve asks for ~40 pairs
    soft_flow_gate: bool = False


PRESETS: dict[str, Preset] = {
    "quality": Preset(name="quality", ssim_max_side=640, flow_max_side=384),
    "default": Preset(name="default", ssim_max_side=512, flow_max_side=320),
    "fast": Preset(name="fast", ssim_max_side=384, flow_max_side=256, hard_cuts_cascade=True, soft_flow_gate=True),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown cut preset {name!r}; valid: {', '.join(PRESET_NAMES)}") from None


def choose_preset(short_side: int, *, emergency: bool = False) -> Preset:
    """The policy: which preset a frame of short side `short_side` gets. `emergency` (the scheduler is
    overloaded) switches only the S > 720 bucket to `fast`; smaller inputs are cheap enough not to."""
    if short_side <= 0:
        raise UsageError(f"short side must be positive, got {short_side}")
    if short_side <= QUALITY_MAX_SHORT_SIDE:
        return PRESETS["quality"]
    if short_side <= DEFAULT_MAX_SHORT_SIDE:
        return PRESETS["default"]
    return PRESETS["fast"] if emergency else PRESETS["default"]
