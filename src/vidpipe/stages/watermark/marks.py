"""A watermark as the detector finds it and the remover takes it: where it is, when it is there, how opaque.

The one contract between detection (`vidpipe watermark detect`, `--dewatermark auto`), the user's own marks
(`box:`/`mask:`), removal and the evaluation. Frame numbers are the stream's frame indices (`FrameBatch.indices`,
0 = the first decoded frame), so a mark found over a sliding window and a mark given as a time span mean the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UsageError

#: a mark with no known end lasts to the end of the stream
OPEN_END = -1


@dataclass(frozen=True)
class Mark:
    """One overlay over a span of frames `first..last` (inclusive; `last = OPEN_END`: to the end).

    `alpha` is the per-pixel opacity (H×W float32 in [0, 1], the frame's size): 1 where the mark hides the picture,
    between 0 and 1 where it is blended over it, 0 where it is absent. A user's box or mask has no estimate and
    reads as opaque (1 inside). `colour` (H×W×3 float32 in [0, 1], RGB) is the mark's colour where the detector
    estimated it from many frames, so a semi-transparent mark can be inverted exactly (I = a·W + (1 − a)·B);
    None when unknown.
    """

    first: int
    last: int
    alpha: np.ndarray
    colour: np.ndarray | None = None
    #: where the numbers came from: "auto", "box", "mask"
    source: str = "auto"
    #: free-form facts for the manifest (the detector's score, the window it was found in, …)
    info: dict[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.alpha.ndim != 2 or self.alpha.dtype != np.float32:
            raise ValueError(f"Mark.alpha must be H×W float32, got {self.alpha.dtype} {self.alpha.shape}")
        if self.colour is not None and self.colour.shape != (*self.alpha.shape, 3):
            raise ValueError(f"Mark.colour must be H×W×3 like alpha {self.alpha.shape}, got {self.colour.shape}")
        if self.first < 0 or (self.last != OPEN_END and self.last < self.first):
            raise ValueError(f"Mark span {self.first}..{self.last} is empty or negative")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames the mark belongs to."""
        return self.alpha.shape[1], self.alpha.shape[0]

    def covers(self, index: int) -> bool:
        return index >= self.first and (self.last == OPEN_END or index <= self.last)

    def box(self, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) bounding the pixels with alpha > threshold; None if there are none."""
        ys, xs = np.nonzero(self.alpha > threshold)
        if len(xs) == 0:
            return None
        x0, y0 = int(xs.min()), int(ys.min())
        return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def save_marks(marks: list[Mark], path: Path) -> None:
    """`path` (.json): the spans, boxes and facts; each mark's alpha (and colour) beside it as `path.stem.N.npz`."""
    path = Path(path)
    entries = []
    for n, m in enumerate(marks):
        arrays = path.with_name(f"{path.stem}.{n}.npz")
        payload = {"alpha": m.alpha} if m.colour is None else {"alpha": m.alpha, "colour": m.colour}
        np.savez_compressed(arrays, **payload)
        entries.append(
            {
                "first": m.first,
                "last": m.last,
                "size": list(m.size),
                "box": m.box(0.5),
                "source": m.source,
                "info": m.info,
                "arrays": arrays.name,
            }
        )
    path.write_text(json.dumps({"version": 1, "marks": entries}, indent=2))


def load_marks(path: Path) -> list[Mark]:
    """The marks `save_marks` wrote (a UsageError naming the file when it is not such a file)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        marks = []
        for e in doc["marks"]:
            with np.load(path.with_name(e["arrays"])) as z:
                colour = z["colour"].astype(np.float32) if "colour" in z.files else None
                marks.append(
                    Mark(int(e["first"]), int(e["last"]), z["alpha"].astype(np.float32), colour, e["source"], e["info"])
                )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path} is not a marks file written by `vidpipe watermark detect`: {err}") from err
    return marks
