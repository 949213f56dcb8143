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
from .progress import ProgressMode

if TYPE_CHECKING:
    from ..stages.base import Stage
    from .pipeline import RunOptions

ORDERS: Final = ("upscale,interpolate", "interpolate,upscale")
HWACCELS: Final = ("none", "auto", "cuda")
ON_CORRUPT: Final = ("fail", "skip")
#: the upload label a chain earns (jobs.keys.MODES): which model stages it runs
ChainMode = Literal["upscaled", "interpolated", "both", "result"]


def choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise UsageError(f"invalid {what} {value!r}; valid: {', '.join(valid)}")
    return value


def parse_rate(value: str) -> Fraction:
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"invalid frame rate {value!r}; expected e.g. 60, 59.94 or 60000/1001") from None
    if rate <= 0:
        raise UsageError(f"frame rate must be > 0, got {value}")
    return rate


def parse_tile(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UsageError(f"invalid tile {value!r}; valid: auto, 0 (whole frames) or a size in pixels")
    return int(value)


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

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def stages(self) -> list[Stage]:
        """The stage chain in run order: pad, the model stages in `order`, resize."""
        # torch and the stages are imported here, not with the module: `vidpipe --help` and job specs stay light
        from ..stages.interpolate import SCENE_CUT_MODES, Interpolate
        from ..stages.pad import Pad
        from ..stages.resize import METHODS, Resize, parse_size
        from ..stages.upscale import Upscale

        stages: list[Stage] = []
        if self.pad is not None:
            stages.append(Pad(self.pad))
        models: dict[str, Stage] = {}
        if self.upscale is not None:
            models["upscale"] = Upscale(
                self.upscale,
                outscale=self.outscale,
                tile=parse_tile(self.tile),
                dtype=self.dtype,
                compile=self.compile,
                kernels=self.kernels,
            )
        if self.interpolate is not None:
            if (self.fps is None) == (self.multi is None):
                raise UsageError("--interpolate needs exactly one of --fps or --multi")
            models["interpolate"] = Interpolate(
                self.interpolate,
                fps=parse_rate(self.fps) if self.fps else None,
                multi=self.multi,
                # --multi k lasts as long as the input, as --fps does: n·k frames, the last one held k−1 periods
                # (the stage's own default, (n−1)·k+1 frames, ends a source period early and audio overhangs)
                fill_tail=True if self.multi is not None else None,
                scene_cut=choice(self.scene_cut, SCENE_CUT_MODES, "--scene-cut mode"),  # type: ignore[arg-type]
                dtype=self.dtype,
            )
        elif self.fps is not None or self.multi is not None:
            raise UsageError("--fps/--multi need --interpolate MODEL")
        stages += [models[k] for k in choice(self.order, ORDERS, "--order").split(",") if k in models]
        if self.resize is not None:
            w, h = parse_size(self.resize)
            stages.append(Resize(w, h, choice(self.resize_method, METHODS, "resize method")))  # type: ignore[arg-type]
        return stages

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
        if self.upscale is not None and self.interpolate is not None:
            return "both"
        if self.upscale is not None:
            return "upscaled"
        if self.interpolate is not None:
            return "interpolated"
        return "result"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
