"""Black borders of a whole clip (`--crop auto`): the picture's box over frames sampled across it.

Like FFmpeg's cropdetect, a row (column) is picture where its mean luma is above `LIMIT` (cropdetect's default
24 of 255: limited-range black is 16, a DVD's noisy bars stay under it). Unlike cropdetect, which reports a box per
frame, one box holds for the clip: the union of the boxes of `SAMPLES` frames spread over it (seeked to, each
the first frame decoded from a keyframe at or before its time), so nothing any sample shows is cut, and a dark
scene (a sample with no row above the limit) is ignored rather than taken for a border. The box is then widened
outwards to the source's chroma grid (even rows and columns for 4:2:0), so the crop moves no chroma sample.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from ..errors import InputError
from .encoders import layout
from .info import MediaInfo
from .probe import open_input

log = logging.getLogger(__name__)

#: mean luma (of 255) above which a row or column is picture: cropdetect's default `limit`
LIMIT = 24
#: frames sampled across the clip
SAMPLES = 12
#: a clip this short (frames) is read from the start instead of seeked through
SEEK_LEAST_FRAMES = 4 * SAMPLES


@dataclass(frozen=True, slots=True)
class Box:
    """A crop: `width`×`height` at (`x`, `y`) of a `frame` = (width, height) picture."""

    width: int
    height: int
    x: int
    y: int
    frame: tuple[int, int]

    def scaled(self, width: int, height: int, grid: tuple[int, int] = (1, 1)) -> Box:
        """The same box in a picture scaled to width × height, widened outwards to multiples of `grid`."""
        sx, sy = Fraction(width, self.frame[0]), Fraction(height, self.frame[1])
        x0, y0 = _down(self.x * sx, grid[0]), _down(self.y * sy, grid[1])
        x1 = min(width, _up((self.x + self.width) * sx, grid[0]))
        y1 = min(height, _up((self.y + self.height) * sy, grid[1]))
        return Box(x1 - x0, y1 - y0, x0, y0, (width, height))


def _down(v: Fraction | int, step: int) -> int:
    return int(v // step) * step


def _up(v: Fraction | int, step: int) -> int:
    return -int(-v // step) * step


def _picture(values: np.ndarray) -> tuple[int, int] | None:
    """[first, last + 1) of the entries above LIMIT; None when none is."""
    above = np.flatnonzero(values > LIMIT)
    return (int(above[0]), int(above[-1]) + 1) if above.size else None


def frame_box(luma: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the picture in one luma frame (0..255), None for a frame with none (black)."""
    rows = _picture(luma.mean(axis=1))
    if rows is None:
        return None
    cols = _picture(luma[rows[0] : rows[1]].mean(axis=0))  # columns over the picture's rows: bars do not dilute
    if cols is None:
        return None
    return cols[0], rows[0], cols[1], rows[1]


def _samples(info: MediaInfo) -> list[np.ndarray]:
    """Luma (8-bit, upright) of up to SAMPLES frames spread over the clip."""
    v = info.video
    turns = (v.rotation // 90) % 4
    out: list[np.ndarray] = []
    with open_input(Path(info.path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        length = info.duration or (Fraction(v.frames) / v.rate if v.frames else None)
        if (v.frames is not None and v.frames < SEEK_LEAST_FRAMES) or length is None or c.format.name == "avi":
            # short (or unseekable by time): every k-th frame from the start
            step = max(1, (v.frames or SAMPLES) // SAMPLES)
            frames = itertools.islice(c.decode(vs), 0, None, step)
            out = [_luma(f, turns) for f in itertools.islice(frames, SAMPLES)]
        else:
            for i in range(SAMPLES):
                t = v.start_time + length * Fraction(2 * i + 1, 2 * SAMPLES)
                c.seek(int(t / v.time_base), stream=vs, backward=True, any_frame=False)
                frame = next(iter(c.decode(vs)), None)
                if frame is not None:
                    out.append(_luma(frame, turns))
    return out


def _luma(frame: av.VideoFrame, turns: int) -> np.ndarray:
    luma = frame.to_ndarray(format="gray").astype(np.float32)
    return np.rot90(luma, turns) if turns else luma


def detect(info: MediaInfo) -> Box:
    """The clip's picture box in its upright frames (the reader's), on the source's chroma grid; the whole frame
    when no sample shows any picture (a black clip: nothing to tell a border by)."""
    w, h = info.video.display_size
    try:
        boxes = [b for b in map(frame_box, _samples(info)) if b is not None]
    except (av.error.FFmpegError, StopIteration) as e:
        raise InputError(f"{info.path}: --crop auto could not sample frames: {e}") from e
    if not boxes:
        log.warning("crop: no sampled frame of %s shows any picture; nothing cropped", Path(info.path).name)
        return Box(w, h, 0, 0, (w, h))
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    lay = layout(info.video.pix_fmt)
    grid = lay.subsampling if lay.family == "yuv" else (1, 1)
    if (info.video.rotation // 90) % 2:
        grid = (grid[1], grid[0])
    box = Box(x1 - x0, y1 - y0, x0, y0, (w, h)).scaled(w, h, grid)
    log.info("crop: %s: picture %dx%d at %d,%d of %dx%d (%d samples)", Path(info.path).name, box.width, box.height,
             box.x, box.y, w, h, len(boxes))  # fmt: skip
    return box
