"""What to run over a video, as plain values: the stage chain and run settings of `vidpipe run`.

`vidpipe run` (options), `vidpipe job run` (options or a YAML job spec) and container jobs (environment) all
describe a run with the same fields and build it here, so every entry point validates the same way and
builds the same stages. Building stages loads no weights (that happens in `Stage.setup`), so a recipe can be
checked before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import UsageError
from ..stages.registry import LEGACY_ORDERS, choice
from ..stages.registry import parse_rate as parse_rate  # re-exported: callers parse rates and tiles here
from ..stages.registry import parse_tile as parse_tile
from .progress import ProgressMode

if TYPE_CHECKING:
    from ..stages.base import Stage
    from .pipeline import RunOptions

ORDERS: Final = LEGACY_ORDERS
HWACCELS: Final = ("none", "auto", "cuda")
ON_CORRUPT: Final = ("fail", "skip")
#: the upload label a chain earns (jobs.keys.MODES): which model stages it runs
ChainMode = Literal["upscaled", "interpolated", "both", "result"]


def parse_time(value: str, what: str) -> Fraction:
    """Seconds (`90`, `2.5`) or [HH:]MM:SS[.frac] (`1:30`, `00:01:30.5`), as FFmpeg's -ss and -t take them; exact."""
    parts = value.strip().split(":")
    seconds = Fraction(0)
    try:
        if len(parts) > 3 or not all(p and "/" not in p for p in parts):
            raise ValueError(value)
        for p in parts:
            seconds = seconds * 60 + Fraction(p)
    except ValueError:
        raise UsageError(
            f"invalid {what} {value!r}; expected seconds (90, 2.5) or [HH:]MM:SS[.ms] (1:30, 00:01:30.5)"
        ) from None
    if seconds < 0:
        raise UsageError(f"{what} must be ≥ 0, got {value}")
    return seconds


def trimmed(options: RunOptions, *, start: str | None, duration: str | None, frames: int | None) -> RunOptions:
    """`vidpipe run --start/--duration/--frames`: a part of the input as a file of its own, starting at t=0. The
    video is cut by the time window segments use (`RunOptions.window`: the reader seeks to the keyframe at or
    before `start`, the pipeline drops output frames outside the window); the writer moves every stream back so
    the first frame is at 0 and cuts the copied streams to the video (`media.writer.Trim`)."""
    from dataclasses import replace

    from ..media.writer import Trim
    from .pipeline import TimeWindow

    if start is None and duration is None and frames is None:
        return options
    first = parse_time(start, "--start") if start is not None else None
    length = parse_time(duration, "--duration") if duration is not None else None
    if length == 0:
        raise UsageError("--duration must be > 0")
    end = None if length is None else (first or Fraction(0)) + length
    return replace(
        options,
        window=TimeWindow(start=first, end=end),
        writer=replace(options.writer, trim=Trim(end=end, max_frames=frames)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineRecipe:
    """The options of `vidpipe run` that say what is computed and how it is encoded (same names, same
    defaults). Values are the strings a user types (`fps="60000/1001"`, `tile="auto"`); `stages()` and
    `run_options()` check them and raise UsageError listing the valid values."""

    upscale: str | None = None
    outscale: float | None = None
    tile: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    kernels: str = "torch"
    interpolate: str | None = None
    fps: str | None = None
    multi: int | None = None
    scene_cut: str = "fill"
    cuts: str = "off"
    order: str = "upscale,interpolate"
    resize: str | None = None
    resize_method: str = "bicubic"
    pad: int | None = None
    encoder: str = "auto"
    crf: int | None = None
    speed: str | None = None
    bit_depth: int | None = None
    lossless: bool = False
    pix_fmt: str | None = None
    max_pixels: int | None = None
    device: str = "auto"
    batch_size: int = 8
    hwaccel: str = "none"
    on_corrupt: str = "fail"
    copy_streams: bool = True
    square_pixels: bool = False
    deinterlace: bool = False

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def stages(self) -> list[Stage]:
        """The stage chain in run order (stages.registry: pad, the model stages in `order`, resize), each built
        by its registry entry from these values."""
        # the registry imports torch and each stage only when building it: `vidpipe --help` and job specs stay light
        from ..stages.registry import build_chain

        return build_chain(self.to_dict())

    def run_options(self, progress: ProgressMode = "bar") -> RunOptions:
        from ..media.encoders import PRESETS, EncoderOptions
        from ..media.probe import max_pixels_limit
        from ..media.reader import ReaderOptions
        from ..media.writer import WriterOptions
        from .pipeline import RunOptions

        if self.batch_size < 1:
            raise UsageError(f"batch_size must be ≥ 1, got {self.batch_size}")
        return RunOptions(
            device=self.device,
            reader=ReaderOptions(
                batch_size=self.batch_size,
                hwaccel=choice(self.hwaccel, HWACCELS, "hwaccel"),  # type: ignore[arg-type]
                on_corrupt=choice(self.on_corrupt, ON_CORRUPT, "--on-corrupt value"),  # type: ignore[arg-type]
                deinterlace=self.deinterlace,
            ),
            writer=WriterOptions(
                encoder=EncoderOptions(
                    encoder=choice(self.encoder, PRESETS, "encoder"),  # type: ignore[arg-type]
                    crf=self.crf,
                    lossless=self.lossless,
                    speed=self.speed,
                    bit_depth=self.bit_depth,
                    pix_fmt=self.pix_fmt,
                ),
                copy_streams=self.copy_streams,
            ),
            progress=progress,
            max_pixels=max_pixels_limit(self.max_pixels),
        )

    def check(self) -> None:
        """Raise UsageError now for anything `stages()`/`run_options()` would refuse later."""
        self.stages()
        self.run_options()

    @property
    def mode(self) -> ChainMode:
        from ..stages.registry import mode_label

        return mode_label(self.to_dict())  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
