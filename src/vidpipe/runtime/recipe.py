"""What to run over a video, as plain values: the stage chain and run settings of `vidpipe run`.

`vidpipe run` (options), `vidpipe job run` (options or a YAML job spec) and container jobs (environment) all
describe a run with the same fields and build it here, so every entry point validates the same way and
builds the same stages. Building stages loads no weights (that happens in `Stage.setup`), so a recipe can be
checked before any work starts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
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
ChainMode = Literal["upscaled", "interpolated", "matted", "both", "result"]


#: named sets of `vidpipe run` options (`--preset NAME`); an option the user gives overrides the preset's.
#: mezzanine-dvd is the S4 seed's mezzanine step (issue 18 item 3), option for option:
#:   bwdif=mode=send_frame:parity=tff:deint=all        → deinterlace tff, one frame per frame
#:   zscale=w=1024:h=576:filter=bicubic                → resize 1024x576 with zimg's bicubic (Catmull–Rom)
#:   zscale matrixin=bt470bg:matrix=bt709 + -color_*   → colour_matrix bt709 (matrix converted, tags BT.709)
#:   setsar=1                                          → square_pixels (a 16:9 720x576 DVD is 1024x576 shown)
#:   crop=1024:432:0:72                                → crop (after resize, its default place)
#:   -c:v prores_ks -profile:v 3 -pix_fmt yuv422p10le  → encoder prores-hq
#: One difference: the seed drops audio and subtitles (-an -sn) and maps them from the DVD in its final encode;
#: vidpipe carries them in the mezzanine instead (its later runs, `--conform` above all, take the streams of their
#: input), so they are kept; `--no-copy-streams` drops them as the seed does.
RUN_PRESETS: Final[dict[str, dict[str, Any]]] = {
    "mezzanine-dvd": {
        "deinterlace": "tff",
        "deinterlace_mode": "frame",
        "resize": "1024x576",
        "resize_method": "catrom",
        "colour_matrix": "bt709",
        "square_pixels": True,
        "crop": "1024:432:0:72",
        "encoder": "prores-hq",
    },
}


def with_preset(name: str, values: Mapping[str, Any], given: set[str]) -> dict[str, Any]:
    """`values` (every option of a run) with preset `name`'s options in place of those the user did not give."""
    if name not in RUN_PRESETS:
        raise UsageError(f"unknown preset {name!r}; valid: {', '.join(RUN_PRESETS)}")
    return dict(values) | {k: v for k, v in RUN_PRESETS[name].items() if k not in given}


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


@dataclass(frozen=True, kw_only=True, init=False)
class PipelineRecipe:
    """The options of `vidpipe run` that say what is computed and how it is encoded (same names, same
    defaults). Values are the strings a user types (`fps="60000/1001"`, `tile="auto"`); `stages()` and
    `run_options()` check them and raise UsageError listing the valid values.

    The run settings (order, encoding, decoding, device) are the fields below. The stage options are those of
    the stage registry (`stages.registry.stage_options()`, read when a recipe is made): keywords of the
    constructor like the fields (`PipelineRecipe(upscale=…, fps="60")`), read as attributes (`recipe.fps`), kept
    in `stage_values` with every registered option's default filled in. A stage added to the registry is taken
    here with no edit."""

    order: str = "upscale,interpolate"
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
    #: off | auto | tff | bff (media/deinterlace.py); a bool of old is taken as auto / off
    deinterlace: str = "off"
    deinterlace_mode: str = "frame"
    #: keep | bt709 | smpte170m | bt470bg: the output's YUV matrix and tags (media/colour.py, `target_colour`)
    colour_matrix: str = "keep"
    #: parallel chunk encoders (x264/x265); None: auto (media.writer.WriterOptions)
    encode_workers: int | None = None
    #: every registered stage option → its value (not a `vidpipe run` option itself; hash=False: a dict)
    stage_values: dict[str, Any] = field(default_factory=dict, hash=False)

    def __init__(self, *, stage_values: Mapping[str, Any] | None = None, **values: Any) -> None:
        # `stage_values` (what dataclasses.replace passes back) is the base the keywords override
        from ..stages.registry import stage_options

        options = stage_options()
        settings = _settings()
        unknown = [n for n in values if n not in options and n not in settings]
        if unknown:
            raise TypeError(
                f"PipelineRecipe() got unknown option(s) {', '.join(unknown)}; valid: {', '.join(self.field_names())}"
            )
        for name, f in settings.items():
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            object.__setattr__(self, name, values.get(name, default))
        base = dict(stage_values or {})
        given = {n: values[n] if n in values else base.get(n, o.default) for n, o in options.items()}
        object.__setattr__(self, "stage_values", given)

    def __getattr__(self, name: str) -> Any:
        # only reached when no field has the name: a stage option (`recipe.upscale`)
        if name != "stage_values" and name in self.__dict__.get("stage_values", {}):
            return self.__dict__["stage_values"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every option a recipe takes: the registered stage options, then the run settings."""
        from ..stages.registry import stage_options

        return (*stage_options(), *_settings())

    @classmethod
    def field_types(cls) -> dict[str, type]:
        """Each option's value type (bool, int, float or str; None is always allowed where the default is None)."""
        from ..stages.registry import stage_options

        types_ = {n: o.type for n, o in stage_options().items()}
        for name, hint in typing.get_type_hints(cls).items():
            if name in _settings():
                types_[name] = next(iter(set(typing.get_args(hint)) - {types.NoneType} or {hint}))
        return types_

    def stages(self) -> list[Stage]:
        """The stage chain in run order (stages.registry: pad, the model stages in `order`, resize), each built
        by its registry entry from these values."""
        # the registry imports torch and each stage only when building it: `vidpipe --help` and job specs stay light
        from ..stages.registry import build_chain

        return build_chain(self.to_dict())

    def run_options(self, progress: ProgressMode = "bar") -> RunOptions:
        from ..media.colour import TARGETS
        from ..media.deinterlace import Deinterlace
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
                deinterlace=Deinterlace(order=_field_order(self.deinterlace), mode=self.deinterlace_mode),  # type: ignore[arg-type]
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
                colour=choice(self.colour_matrix, TARGETS, "--colour-matrix"),
                encode_workers=self.encode_workers,
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
        return self.stage_values | {name: getattr(self, name) for name in _settings()}


def _field_order(value: str | bool | None) -> str:
    """`deinterlace` as an order; True/False (the flag of old, a job spec's `1`/`0`) mean auto/off."""
    if isinstance(value, bool) or value is None:
        return "auto" if value else "off"
    return {"1": "auto", "true": "auto", "yes": "auto", "0": "off", "false": "off", "no": "off"}.get(
        value.lower(), value
    )


def _settings() -> dict[str, Field[Any]]:
    """The run settings: PipelineRecipe's fields but `stage_values`."""
    return {f.name: f for f in fields(PipelineRecipe) if f.name != "stage_values"}
