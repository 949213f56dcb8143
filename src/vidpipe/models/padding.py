"""The one padding rule for models that need H and W to be multiples of some number.

`padded_size` decides the size; `Padding` remembers the original size and is the only thing that pads and
crops back, so a stage cannot pad with one multiple and crop with another. Padding goes on the right and
bottom only, so pixel (0, 0) stays put and cropping is a slice.

For RIFE the multiple is `multiple_for_scale(32, scale)`: 32 at scale 1, 64 at scale 0.5 ("UHD" mode); a model
with a deeper pyramid (RIFE 4.25) has a larger base. Other models pass their `ModelSpec.size_multiple`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import UsageError

PadMode = Literal["replicate", "constant", "reflect"]


def multiple_for_scale(base: int, scale: float) -> int:
    """The multiple a model of base multiple `base` needs when run at `scale` (`int(base / scale)`, never less
    than `base`): at scale 0.5 RIFE's pyramid levels are twice as coarse, so each needs twice the size."""
    if base < 1 or scale <= 0:
        raise UsageError(f"multiple_for_scale needs base ≥ 1 and scale > 0, got base={base}, scale={scale}")
    m = base / scale
    if m != int(m):
        raise UsageError(f"{base} / scale {scale} is not a whole number of pixels; use a power-of-two scale")
    return max(base, int(m))


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of `multiple`."""
    if height < 1 or width < 1:
        raise UsageError(f"frame size must be positive, got {width}×{height}")
    if multiple < 1:
        raise UsageError(f"size multiple must be ≥ 1, got {multiple}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


@dataclass(frozen=True, slots=True)
class Padding:
    """The padding of one frame size to one multiple; pads inputs and crops outputs of that size."""

    height: int
    width: int
    multiple: int

    def __post_init__(self) -> None:
        padded_size(self.height, self.width, self.multiple)  # validates

    @property
    def padded(self) -> tuple[int, int]:
        return padded_size(self.height, self.width, self.multiple)

    @property
    def is_noop(self) -> bool:
        return self.padded == (self.height, self.width)

    def pad(self, x: torch.Tensor, mode: PadMode = "replicate") -> torch.Tensor:
        """…×H×W → …×H'×W'. `replicate` (default) continues the edge pixels, so a flow model sees no
        artificial black border to track (the official RIFE scripts pad with zeros: `mode="constant"`)."""
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise UsageError(f"pad: expected …×{self.height}×{self.width}, got {tuple(x.shape)}")
        ph, pw = self.padded
        if self.is_noop:
            return x
        if mode == "reflect" and (ph - self.height >= self.height or pw - self.width >= self.width):
            mode = "replicate"  # reflect cannot pad by more than the size itself (tiny frames)
        # F.pad's replicate/reflect want a batch dim: flatten any leading dims to one.
        lead = x.shape[:-2]
        y = x.reshape(-1, 1, self.height, self.width) if mode != "constant" else x
        y = F.pad(y, (0, pw - self.width, 0, ph - self.height), mode=mode)
        return y.reshape(*lead, ph, pw)

    def crop(self, y: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """Back to the original size; `scale` for models whose output is `scale`× their input (SR)."""
        ph, pw = self.padded
        if tuple(y.shape[-2:]) != (ph * scale, pw * scale):
            raise UsageError(
                f"crop: expected …×{ph * scale}×{pw * scale} (padded {pw}×{ph} × {scale}), got {tuple(y.shape)}"
            )
        return y[..., : self.height * scale, : self.width * scale]


def padding_for(x: torch.Tensor, multiple: int) -> Padding:
    """The `Padding` of tensor `x` (…×H×W) to `multiple`."""
    return Padding(int(x.shape[-2]), int(x.shape[-1]), multiple)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: PadMode = "replicate") -> tuple[torch.Tensor, Padding]:
    """Pad `x` and return the `Padding` that crops the result back."""
    p = padding_for(x, multiple)
    return p.pad(x, mode), p
