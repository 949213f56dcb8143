"""`resize`: scale every frame on the stage's device: torch interpolation (bicubic, bilinear, area) or a chosen
kernel (catrom, mitchell, lanczos, spline16, spline36: stages/resample.py).

Pixel aspect: an explicit WxH of another shape keeps the display aspect by setting the output's sample aspect
ratio (SAR); a side given as -1 follows the stored pixels and the SAR stays. With `square_pixels` the output
has square pixels: a -1 side (or both, for `--square-pixels` alone) follows the display aspect, and an explicit
WxH is stretched to exactly that shape, which is logged when it changes the display aspect.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..frames import FrameBatch, from_float, to_float
from .base import Stage, StreamSpec
from .resample import KERNELS, resample

log = logging.getLogger(__name__)

Method = Literal["bicubic", "bilinear", "area", "catrom", "mitchell", "lanczos", "spline16", "spline36"]
#: torch's own (bicubic: a = −0.75, antialiased when downscaling) and the kernels of stages/resample.py
METHODS: tuple[Method, ...] = ("bicubic", "bilinear", "area", *KERNELS)  # type: ignore[assignment]

_SIZE = re.compile(r"^(-1|\d+)x(-1|\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720'; one side may be -1 to keep the aspect ratio."""
    m = _SIZE.match(text.strip().lower())
    if not m or (m.group(1) == "-1" and m.group(2) == "-1") or "0" in (m.group(1), m.group(2)):
        raise UsageError(f"invalid size {text!r}; expected WxH such as 1280x720 (one side may be -1)")
    return int(m.group(1)), int(m.group(2))


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


class Resize(Stage):
    name = "resize"
    context = 0
    unit = "frame"

    def __init__(self, width: int, height: int, method: Method = "bicubic", *, square_pixels: bool = False) -> None:
        if method not in METHODS:
            raise UsageError(f"invalid resize method {method!r}; valid: {', '.join(METHODS)}")
        self.width, self.height, self.method = width, height, method
        self.square_pixels = square_pixels
        self.device = torch.device("cpu")
        self.size = (width, height)

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        w, h = self.width, self.height
        # the shape a -1 side follows: the display's with square_pixels, else the stored pixels'
        aspect = Fraction(spec.width, spec.height) * (spec.sar if self.square_pixels else 1)
        if w == -1 and h == -1:  # square the pixels without losing resolution: widen wide pixels, heighten tall ones
            if spec.sar >= 1:
                h = spec.height
            else:
                w = spec.width
        if w == -1:
            w = _even(h * aspect)
        if h == -1:
            h = _even(w / aspect)
        self.size = (w, h)
        display = Fraction(spec.width, spec.height) * spec.sar
        if self.square_pixels:
            sar = Fraction(1)
            if Fraction(w, h) != display and self.width != -1 and self.height != -1:
                log.warning(
                    "resize: %dx%d with square pixels changes the display aspect from %s to %s (stretched)",
                    w, h, _ratio(display), _ratio(Fraction(w, h)),
                )  # fmt: skip
        elif self.width == -1 or self.height == -1:
            sar = spec.sar  # scaled alike on both sides
        else:
            # the display aspect stays: another shape is stored with non-square pixels (FFmpeg keeps 16-bit terms)
            sar = (display * h / w).limit_denominator(65535)
            if sar != spec.sar:
                log.info("resize: %dx%d stored with pixel aspect %s, display aspect %s kept", w, h, _ratio(sar),
                         _ratio(display))  # fmt: skip
        crop = spec.crop_to
        if crop is not None:
            crop = (round(crop[0] * w / spec.width), round(crop[1] * h / spec.height))
        return spec.but(width=w, height=h, crop_to=crop, sar=sar)

    def process(self, batch: FrameBatch) -> FrameBatch:
        w, h = self.size
        if (batch.width, batch.height) == (w, h):
            return batch
        x = to_float(batch).to(self.device, non_blocking=True)
        if self.method in KERNELS:
            y = resample(x, (w, h), self.method)
            return batch.with_data(from_float(y, batch.data.dtype).contiguous(memory_format=torch.channels_last))
        kwargs: dict[str, Any] = {"mode": self.method}
        if self.method != "area":
            kwargs["align_corners"] = False
            kwargs["antialias"] = True  # downscaling without it aliases badly
        y = F.interpolate(x, size=(h, w), **kwargs)
        return batch.with_data(from_float(y, batch.data.dtype).contiguous(memory_format=torch.channels_last))

    def flush(self) -> None:
        return None

    def signature(self) -> dict[str, Any]:
        sig = {"stage": self.name, "width": self.size[0], "height": self.size[1], "method": self.method}
        return sig | ({"square_pixels": True} if self.square_pixels else {})


def _ratio(x: Fraction) -> str:
    return f"{x.numerator}:{x.denominator}"
