"""Deinterlacing on the decode thread: FFmpeg's bwdif through a PyAV filter graph, on the decoded frames.

Why in the reader and not as a stage: bwdif works on the fields of the coded picture, i.e. on the YUV planes as
decoded (4:2:0 chroma of an interlaced picture is sited per field); after the reader's YUV → RGB conversion the
fields' chroma would already be mixed. The frames are on the CPU there anyway (stages run on the device), and a
rate change (one frame per field) is then known before any stage is set up (`output_spec`).

`Deinterlace.order`: `auto` deinterlaces what the probe found interlaced (the codec's field order, frame flags, or
idet on the first frames) and leaves progressive sources alone; `tff`/`bff` deinterlace every frame with that
field order whatever the probe said (the seed's `parity=tff`); `off` never does (an interlaced source is warned
of). Parity under `auto`: the probe's order (the codec's, else idet's), fixed for the clip; bwdif's own `auto` (each
frame's top-field-first flag) only where the probe found frames flagged interlaced but no order. Not bwdif's
`auto` throughout: a frame without the flag counts as bottom field first, and decoders leave it off where the
stream says nothing per picture (x264's tff=1 without pic_struct SEI, idet-found woven pictures), which plays
the fields of a top-field-first clip backwards.

`Deinterlace.mode`: `frame` (bwdif `send_frame`: one frame per frame, the source's pts) or `field` (`send_field`:
one frame per field, twice the rate; the second field's frame half-way to the next frame, so the pts are exact in
half the stream's time base, and a constant-rate source stays constant-rate: `output_spec`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

import av
import av.error

from ..errors import InputError, UsageError
from ..frames import StreamSpec
from .info import VideoInfo

FieldOrder = Literal["auto", "tff", "bff", "off"]
Mode = Literal["frame", "field"]
ORDERS: Final = ("auto", "tff", "bff", "off")
MODES: Final = ("frame", "field")
#: FFmpeg's field orders as the order the fields are shown in: tb = top coded first, bottom shown first
_SHOWN_FIRST: Final = {"tff": "tff", "bt": "tff", "bff": "bff", "tb": "bff"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Deinterlace:
    """What `--deinterlace ORDER --deinterlace-mode MODE` asks for (see the module docstring)."""

    order: FieldOrder = "off"
    mode: Mode = "frame"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise UsageError(f"invalid --deinterlace {self.order!r}; valid: {', '.join(ORDERS)}")
        if self.mode not in MODES:
            raise UsageError(f"invalid --deinterlace-mode {self.mode!r}; valid: {', '.join(MODES)}")

    def runs_on(self, video: VideoInfo) -> bool:
        """Whether this source is deinterlaced: a given order always, `auto` where the probe found fields."""
        return self.order in ("tff", "bff") or (self.order == "auto" and video.interlaced)

    def frames_per_frame(self, video: VideoInfo) -> int:
        return 2 if self.mode == "field" and self.runs_on(video) else 1

    def parity(self, video: VideoInfo, flagged: bool) -> str:
        """bwdif's `parity`: the order given, else the probe's, else each frame's flags where the first is flagged
        interlaced, else tff (what SD and HD broadcasts but DV use)."""
        if self.order in ("tff", "bff"):
            return self.order
        return _SHOWN_FIRST.get(video.field_order, "auto" if flagged else "tff")


def output_spec(spec: StreamSpec, video: VideoInfo, deinterlace: Deinterlace) -> StreamSpec:
    """The reader's stream under `deinterlace`: one frame per field doubles the rate and halves the time base
    (a constant-rate source gets an exact constant `rate`; a variable-rate one keeps None)."""
    if deinterlace.frames_per_frame(video) == 1:
        return spec
    nominal = spec.nominal_rate or video.rate
    return spec.but(
        time_base=spec.time_base / 2,
        rate=None if video.vfr else 2 * video.rate,
        nominal_rate=2 * nominal,
        frames=None if spec.frames is None else 2 * spec.frames,
    )


class Bwdif:
    """bwdif over a stream of decoded frames: `push` each (pts in `time_base`), then `finish`; both yield
    (pts, frame) in the output time base (`time_base`, or half of it for one frame per field)."""

    def __init__(self, deinterlace: Deinterlace, video: VideoInfo, time_base: Fraction) -> None:
        self.deinterlace, self.video, self.time_base = deinterlace, video, time_base
        self.out_time_base = time_base / 2 if deinterlace.mode == "field" else time_base
        self.args = ""
        self._graph: av.filter.Graph | None = None

    def _open(self, frame: av.VideoFrame) -> av.filter.Graph:
        mode = "send_field" if self.deinterlace.mode == "field" else "send_frame"
        self.args = f"mode={mode}:parity={self.deinterlace.parity(self.video, frame.interlaced_frame)}:deint=all"
        graph = av.filter.Graph()
        tb = self.time_base
        # the frames' matrix and range told up front: a buffer told none logs a warning when they come
        src = graph.add(
            "buffer",
            f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:time_base={tb.numerator}/"
            f"{tb.denominator}:colorspace={frame.colorspace}:range={frame.color_range}",
        )
        bwdif, sink = graph.add("bwdif", self.args), graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        return graph

    def push(self, pts: int, frame: av.VideoFrame) -> Iterator[tuple[int, av.VideoFrame]]:
        if self._graph is None:
            self._graph = self._open(frame)
        frame.pts, frame.time_base = pts, self.time_base  # ours (counted for AVI, restamped …), kept through bwdif
        self._graph.push(frame)
        yield from self._pull()

    def finish(self) -> Iterator[tuple[int, av.VideoFrame]]:
        if self._graph is not None:
            self._graph.push(None)  # bwdif holds one frame back (it looks at the next): end of stream gives it
            yield from self._pull()

    def _pull(self) -> Iterator[tuple[int, av.VideoFrame]]:
        assert self._graph is not None
        while True:
            try:
                out = self._graph.pull()
            except (BlockingIOError, av.error.EOFError):
                return
            # bwdif counts in half the input's time base (it can emit one frame per field)
            pts = out.pts * Fraction(out.time_base) / self.out_time_base
            if pts.denominator != 1:
                raise InputError(f"deinterlacer moved a frame off the output time base ({pts} ticks)")
            out.pts, out.time_base = int(pts), self.out_time_base
            yield int(pts), out
