"""`crop`: cut every frame to a box, given (`--crop W:H:X:Y`, FFmpeg's crop=w:h:x:y, in the frames this stage
receives) or found (`--crop auto`: the clip's black borders, media/borders.py).

Its default place is after `resize`, so `--resize 1024x576 --crop 1024:432:0:72` reads as the S4 seed's
`zscale=w=1024:h=576,…,crop=1024:432:0:72`. An auto box is measured on the source's frames and scaled to the frames
this stage receives (the stages before it scale, never shift, the picture), widened outwards to even pixels.
The pixel aspect stays; a slice of the batch on its device, so pixels are kept exactly.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..errors import UsageError
from ..frames import FrameBatch
from .base import Stage, StreamSpec

_BOX = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
#: an auto box in the frames the stage receives lies on this grid (4:2:0 and 4:2:2 outputs keep whole chroma)
AUTO_GRID = (2, 2)


def parse_crop(text: str) -> tuple[int, int, int, int] | None:
    """`W:H:X:Y` → (w, h, x, y); `auto` → None."""
    if text.strip().lower() == "auto":
        return None
    m = _BOX.match(text.strip())
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise UsageError(f"invalid crop {text!r}; expected W:H:X:Y such as 1024:432:0:72, or auto")
    w, h, x, y = (int(g) for g in m.groups())
    return w, h, x, y


class Crop(Stage):
    name = "crop"
    context = 0
    unit = "frame"
    #: the box never changes after setup: a batch re-run after an out-of-memory error needs nothing restored
    can_snapshot = True

    def __init__(self, box: tuple[int, int, int, int] | None) -> None:
        """`box` = (w, h, x, y) in the frames received; None: the clip's black borders (needs the source file)."""
        self.asked = box
        self.box = box
        self.device = torch.device("cpu")

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        picture = spec.crop_to or (spec.width, spec.height)  # a pad before: its padding is not picture
        if self.asked is None:
            self.box = self._detect(spec, picture)
        assert self.box is not None
        w, h, x, y = self.box
        if x + w > picture[0] or y + h > picture[1]:
            raise UsageError(
                f"crop {w}:{h}:{x}:{y} does not fit the {picture[0]}x{picture[1]} frames it is given "
                "(W:H:X:Y in the frames after the stages before it: resize comes first)"
            )
        return spec.but(width=w, height=h, crop_to=None)

    @staticmethod
    def _detect(spec: StreamSpec, picture: tuple[int, int]) -> tuple[int, int, int, int]:
        from ..media.borders import detect
        from ..media.probe import probe

        if spec.source is None:
            raise UsageError("--crop auto looks at the input file's frames, and these frames come from none")
        found = detect(probe(spec.source)).scaled(*picture, AUTO_GRID)
        return found.width, found.height, found.x, found.y

    @property
    def stateful(self) -> bool:
        """An auto box is its file's: such a crop is one copy per video, never one copy serving the frames of
        several (runtime/multi.py shares only stages without state)."""
        return self.asked is None

    def process(self, batch: FrameBatch) -> FrameBatch:
        assert self.box is not None
        w, h, x, y = self.box
        if (x, y, w, h) == (0, 0, batch.width, batch.height):
            return batch
        return batch.with_data(batch.data[:, :, y : y + h, x : x + w].contiguous(memory_format=torch.channels_last))

    def flush(self) -> None:
        return None

    def signature(self) -> dict[str, Any]:
        sig: dict[str, Any] = {"stage": self.name, "box": list(self.box) if self.box else None}
        return sig | ({"auto": True} if self.asked is None else {})
