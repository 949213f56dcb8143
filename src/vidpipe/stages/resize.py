"""`resize`: scale every frame with torch interpolation (bicubic, bilinear or area) on the stage's device."""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..frames import FrameBatch, from_float, to_float
from .base import StreamSpec

Method = Literal["bicubic", "bilinear", "area"]
METHODS: tuple[Method, ...] = ("bicubic", "bilinear", "area")

_SIZE = re.compile(r"^(-1|\d+)x(-1|\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720'; one side may be -1 to keep the aspect ratio."""
    m = _SIZE.match(text.strip().lower())
    if not m or (m.group(1) == "-1" and m.group(2) == "-1") or "0" in (m.group(1), m.group(2)):
        raise UsageError(f"invalid size {text!r}; expected WxH such as 1280x720 (one side may be -1)")
    return int(m.group(1)), int(m.group(2))


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


class Resize:
    name = "resize"
    context = 0
    unit = "frame"

    def __init__(self, width: int, height: int, method: Method = "bicubic") -> None:
        if method not in METHODS:
            raise UsageError(f"invalid resize method {method!r}; valid: {', '.join(METHODS)}")
        self.width, self.height, self.method = width, height, method
        self.device = torch.device("cpu")
        self.size = (width, height)

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        w, h = self.width, self.height
        if w == -1:
            w = _even(h * spec.width / spec.height)
        if h == -1:
            h = _even(w * spec.height / spec.width)
        self.size = (w, h)
        crop = spec.crop_to
        if crop is not None:
            crop = (round(crop[0] * w / spec.width), round(crop[1] * h / spec.height))
        return spec.but(width=w, height=h, crop_to=crop)

    def process(self, batch: FrameBatch) -> FrameBatch:
        w, h = self.size
        if (batch.width, batch.height) == (w, h):
            return batch
        x = to_float(batch).to(self.device, non_blocking=True)
        kwargs: dict[str, Any] = {"mode": self.method}
        if self.method != "area":
            kwargs["align_corners"] = False
            kwargs["antialias"] = True  # downscaling without it aliases badly
        y = F.interpolate(x, size=(h, w), **kwargs)
        return batch.with_data(from_float(y, batch.data.dtype).contiguous(memory_format=torch.channels_last))

    def flush(self) -> None:
        return None

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "width": self.size[0], "height": self.size[1], "method": self.method}
