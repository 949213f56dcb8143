"""What probing a file tells: `MediaInfo` with one `StreamInfo` per stream and the video's details."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from ..frames import Colour


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInfo:
    index: int
    type: str  # video | audio | subtitle | attachment | data
    codec: str
    language: str | None = None
    title: str | None = None
    time_base: Fraction | None = None
    start_time: Fraction | None = None  # seconds
    duration: Fraction | None = None  # seconds
    metadata: dict[str, str] = field(default_factory=dict)
    # audio
    sample_rate: int | None = None
    channels: int | None = None
    layout: str | None = None
    # attachment
    filename: str | None = None
    mimetype: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoInfo:
    index: int
    codec: str
    width: int  # coded (stored) size, before rotation
    height: int
    pix_fmt: str
    colour: Colour
    alpha: bool
    #: average frame rate, exact; for VFR sources the mean rate
    rate: Fraction
    time_base: Fraction
    vfr: bool
    #: counter-clockwise display rotation in degrees (-180..180), from the display matrix
    rotation: int = 0
    sar: Fraction = Fraction(1)
    frames: int | None = None
    frames_exact: bool = False
    start_time: Fraction = Fraction(0)
    #: progressive | tff | bff | tb | bt (FFmpeg's field orders) | unknown: from the codec's flags or, where they
    #: say nothing, from idet on the first frames (media/probe.py)
    field_order: str = "unknown"
    #: each frame holds two fields from two moments: the stages would see combing (`--deinterlace`)
    interlaced: bool = False
    #: how the frame packs stereo views, from the first frame's STEREO3D side data (media/stereo.py: mono, sbs,
    #: tb, …); None: the metadata does not say
    stereo: str | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        """Width, height as shown (after rotation): what the reader emits."""
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height

    @property
    def dar(self) -> Fraction:
        return Fraction(self.width, self.height) * self.sar


@dataclass(frozen=True, slots=True, kw_only=True)
class Chapter:
    start: Fraction  # seconds
    end: Fraction
    title: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaInfo:
    path: str
    container: str
    size_bytes: int
    duration: Fraction | None
    bit_rate: int | None
    video: VideoInfo
    streams: tuple[StreamInfo, ...]
    chapters: tuple[Chapter, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    def of_type(self, kind: str) -> list[StreamInfo]:
        return [s for s in self.streams if s.type == kind]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: Fractions as "num/den" strings plus float seconds where useful."""
        return _jsonable(asdict(self)) | {"display_size": list(self.video.display_size)}

    def summary(self) -> dict[str, Any]:
        v = self.video
        w, h = v.display_size
        return {
            "path": self.path,
            "container": self.container,
            "video": f"{v.codec} {w}x{h} {v.pix_fmt} @ {float(v.rate):.3f} fps{' VFR' if v.vfr else ''}",
            "frames": v.frames,
            "scan": f"interlaced ({v.field_order})" if v.interlaced else v.field_order,
            **({"sar": f"{v.sar.numerator}:{v.sar.denominator}"} if v.sar != 1 else {}),
            "duration_s": float(self.duration) if self.duration is not None else None,
            "streams": [
                f"{s.index}:{s.type}:{s.codec}" + (f"({s.language})" if s.language else "") for s in self.streams
            ],
        }


def _jsonable(x: Any) -> Any:
    if isinstance(x, Fraction):
        return f"{x.numerator}/{x.denominator}" if x.denominator != 1 else str(x.numerator)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x
