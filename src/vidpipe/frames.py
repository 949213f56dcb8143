"""Frames as they travel between reader, stages and writer.

A `FrameBatch` is N frames of one video: an N×C×H×W tensor (uint8, uint16 or float in 0..1) on some device,
with the presentation timestamps of each frame, the time base they are counted in, the colour description and
the source frame numbers. Rates and time bases are `Fraction`s, never floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from .errors import StageError

# torch is imported where a tensor is handled, not here: `vidpipe probe` reads `Colour` and must not pay for
# torch (issue 24; tests/test_startup.py checks it stays out)
if TYPE_CHECKING:
    import torch

#: dtypes a batch may hold (torch's names); integer batches use the full range of their bit depth.
_INT_DTYPES = ("uint8", "uint16")
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Colour:
    """Colour description carried from the source to the encoder (FFmpeg enum names, lower case)."""

    primaries: str = "unknown"  # e.g. bt709, bt2020
    transfer: str = "unknown"  # e.g. bt709, smpte2084 (PQ), arib-std-b67 (HLG)
    matrix: str = "unknown"  # e.g. bt709, bt470bg, bt2020nc
    range: str = "tv"  # tv (limited) | pc (full)
    bit_depth: int = 8

    @property
    def is_hdr(self) -> bool:
        return self.transfer in ("smpte2084", "arib-std-b67")


@dataclass(slots=True, kw_only=True)
class FrameBatch:
    """N frames: `data` N×C×H×W (C = 3 RGB or 4 RGBA), `pts[i]` in `time_base` units, `index[i]` = source
    frame number (or output frame number after a rate change)."""

    data: torch.Tensor
    pts: list[int]
    time_base: Fraction
    colour: Colour = field(default_factory=Colour)
    index: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        d = self.data
        if d.ndim != 4:
            raise StageError(f"FrameBatch.data must be N×C×H×W, got shape {tuple(d.shape)}")
        n, c = d.shape[0], d.shape[1]
        if c not in (3, 4):
            raise StageError(f"FrameBatch.data must have 3 (RGB) or 4 (RGBA) channels, got {c}")
        if _dtype_name(d.dtype) not in _INT_DTYPES + _FLOAT_DTYPES:
            raise StageError(f"FrameBatch.data dtype {d.dtype} not supported; valid: uint8, uint16, float*")
        if len(self.pts) != n:
            raise StageError(f"FrameBatch has {n} frames but {len(self.pts)} pts")
        if not self.index:
            self.index = list(range(n))
        elif len(self.index) != n:
            raise StageError(f"FrameBatch has {n} frames but {len(self.index)} indices")
        if not isinstance(self.time_base, Fraction) or self.time_base <= 0:
            raise StageError(f"FrameBatch.time_base must be a positive Fraction, got {self.time_base!r}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def alpha(self) -> bool:
        return int(self.data.shape[1]) == 4

    @property
    def height(self) -> int:
        return int(self.data.shape[2])

    @property
    def width(self) -> int:
        return int(self.data.shape[3])

    @property
    def device(self) -> torch.device:
        return self.data.device

    def times(self) -> list[Fraction]:
        """Presentation times in seconds, exact."""
        return [p * self.time_base for p in self.pts]

    def with_data(self, data: torch.Tensor) -> FrameBatch:
        """Same frames and timing, new pixels (a 1:1 stage's result)."""
        return replace(self, data=data)

    def slice(self, start: int, stop: int) -> FrameBatch:
        return replace(self, data=self.data[start:stop], pts=self.pts[start:stop], index=self.index[start:stop])

    @staticmethod
    def concat(batches: list[FrameBatch]) -> FrameBatch:
        if not batches:
            raise StageError("cannot concatenate zero batches")
        first = batches[0]
        for b in batches[1:]:
            if b.time_base != first.time_base:
                raise StageError(f"time bases differ: {first.time_base} vs {b.time_base}")
        import torch

        return replace(
            first,
            data=torch.cat([b.data for b in batches]),
            pts=[p for b in batches for p in b.pts],
            index=[i for b in batches for i in b.index],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """What a stream of batches looks like at one point of the chain.

    `rate` is None while frames keep their source timestamps (1:1 stages; VFR kept); a stage that changes the
    rate sets an exact constant `rate` and emits pts in `time_base`.
    """

    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None = None
    alpha: bool = False
    bit_depth: int = 8
    #: the source's average rate, for progress and planning (never used to stamp frames of 1:1 stages)
    nominal_rate: Fraction | None = None
    #: exact or estimated frame count expected at this point, if known
    frames: int | None = None
    #: (width, height) the writer crops frames back to (set by `pad` with crop_back; size-changing stages scale
    #: it with the frame)
    crop_to: tuple[int, int] | None = None
    #: sample (pixel) aspect ratio: the picture is shown width × sar wide. Scaling both sides alike keeps it;
    #: a stage that changes the frame's shape sets it so the display aspect stays (or says why not)
    sar: Fraction = Fraction(1)
    #: how the source packs stereo (VR) views into a frame, as its metadata or file name states it
    #: (`media.stereo`: mono, sbs, tb, …); None: it does not say. Set from the probe by the runtime
    #: (`runtime.pipeline.source_spec`); `--layout auto` reads it (stages.matte)
    stereo: str | None = None
    #: the input file the stream was decoded from, for stages that look at the source as a whole before the run
    #: (`--crop auto` samples its borders); None: frames handed in without a file. Set by the runtime
    source: str | None = None

    def but(self, **changes: Any) -> StreamSpec:
        return replace(self, **changes)


def max_value(dtype: torch.dtype) -> float:
    """The value that means full intensity. uint16 always spans 0..65535 whatever the source depth (10-bit
    white is 65535): FFmpeg's rgb48 conversion scales that way, and the writer scales back."""
    name = _dtype_name(dtype)
    if name == "uint8":
        return 255.0
    if name == "uint16":
        return 65535.0
    return 1.0


def to_float(batch: FrameBatch, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Pixels as float in 0..1 (what models eat), float32 unless `dtype` says otherwise."""
    return float_pixels(batch.data, dtype)


def float_pixels(
    data: torch.Tensor, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """`data`'s pixels as float in 0..1 on `device` (None: where they are). The integers cross to the device
    first and are converted there: a quarter of float32's bytes over the bus, and no pass over the frames on
    one host core (a 48-frame 1080p window is 1.2 GB of float32)."""
    import torch

    if device is not None:
        data = data.to(device)  # blocking: a pinned source may be a reader's pooled buffer, reused once handed back
    scale = max_value(data.dtype)
    x = data.to(dtype or torch.float32)
    return x if scale == 1.0 else x / scale


def from_float(x: torch.Tensor, like: torch.dtype) -> torch.Tensor:
    """Back from float 0..1 to the integer dtype of the source (round to nearest, clamp)."""
    import torch

    if _dtype_name(like) in _FLOAT_DTYPES:
        return x.to(like)
    scale = max_value(like)
    y = (x.float().clamp_(0.0, 1.0) * scale).round_()
    if like == torch.uint16:
        # torch has few uint16 kernels: go through int32, which every device supports.
        return y.to(torch.int32).to(torch.uint16)
    return y.to(like)
