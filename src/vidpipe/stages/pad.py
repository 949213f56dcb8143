"""`pad`: pad frames right and bottom to a multiple (edge pixels repeated), as models with a size multiple
need. With `crop_back` the writer crops the padding off again, so the output keeps the source size."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..frames import FrameBatch
from .base import Stage, StreamSpec


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class Pad(Stage):
    name = "pad"
    context = 0
    unit = "frame"

    def __init__(self, multiple: int, crop_back: bool = True) -> None:
        if multiple < 1:
            raise UsageError(f"pad multiple must be ≥ 1, got {multiple}")
        self.multiple, self.crop_back = multiple, crop_back

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        w, h = padded(spec.width, self.multiple), padded(spec.height, self.multiple)
        crop = spec.crop_to or ((spec.width, spec.height) if self.crop_back else None)
        return spec.but(width=w, height=h, crop_to=crop)

    def process(self, batch: FrameBatch) -> FrameBatch:
        pw = padded(batch.width, self.multiple) - batch.width
        ph = padded(batch.height, self.multiple) - batch.height
        if not (pw or ph):
            return batch
        x = batch.data.to(self.device, non_blocking=True)
        # replicate padding has no integer kernels: pad in float, which is exact for 8 and 16-bit values
        y = F.pad(x.float(), (0, pw, 0, ph), mode="replicate").to(x.dtype)
        return batch.with_data(y.contiguous(memory_format=torch.channels_last))

    def flush(self) -> None:
        return None

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "multiple": self.multiple, "crop_back": self.crop_back}
