"""4:2:0 YUV ⇄ RGB in torch, so colour conversion can run on the GPU next to the model.

On the H100, swscale converts one 1080p frame in ~6 ms on one core (GPU-NOTES: 173 fps RGB→YUV), slower than
the model and the encoder; the same conversion on the GPU costs well under a millisecond, and a YUV 4:2:0
frame is half the bytes of RGB to move across PCIe. So the reader can hand over the decoder's planes as they
are (`PlanarBatch`), the pipeline converts them on the device, and converts the result back to the encoder's
planes before the download.

Layout of one frame in a `PlanarBatch` row: the Y plane (H×W), then U and V (⌈H/2⌉×⌈W/2⌉ each), packed with
no line padding (I420). 8-bit formats are uint8, 10-bit ones uint16 holding 0..1023.

Conversion follows the stream's matrix and range (BT.601/709/2020, SMPTE 240M, FCC; limited or full).
Chroma siting is MPEG-2/H.264's default ("left"): a chroma sample sits on the even luma column and halfway
between two luma rows, so upsampling is linear with those phases and downsampling averages the two rows and
filters [1 2 1]/4 across columns. swscale's unscaled path replicates chroma instead; the difference is
confined to sharp colour edges (tests compare the two by PSNR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import torch

from ..frames import Colour, from_float, max_value

#: planar formats handled here → bit depth
PLANAR_FORMATS: dict[str, int] = {"yuv420p": 8, "yuvj420p": 8, "yuv420p10le": 10}

#: (Kr, Kb) luma coefficients per matrix (FFmpeg names); anything else is treated as BT.601, as swscale does
_COEFFS: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt470bg": (0.299, 0.114),
    "smpte170m": (0.299, 0.114),
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
    "bt2020nc": (0.2627, 0.0593),
    "bt2020c": (0.2627, 0.0593),  # constant-luminance 2020 approximated by its non-constant matrix, like swscale
}


@dataclass(frozen=True, slots=True)
class PlanarFormat:
    pix_fmt: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.pix_fmt not in PLANAR_FORMATS:
            raise ValueError(f"planar format {self.pix_fmt!r} not handled; valid: {', '.join(PLANAR_FORMATS)}")

    @property
    def bit_depth(self) -> int:
        return PLANAR_FORMATS[self.pix_fmt]

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint16 if self.bit_depth > 8 else torch.uint8

    @property
    def chroma_size(self) -> tuple[int, int]:
        return (self.width + 1) // 2, (self.height + 1) // 2

    @property
    def elements(self) -> int:
        cw, ch = self.chroma_size
        return self.width * self.height + 2 * cw * ch

    def split(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the Y, U, V planes of an N×elements tensor: N×H×W, N×h×w, N×h×w."""
        n, w, h = data.shape[0], self.width, self.height
        cw, ch = self.chroma_size
        y = data[:, : w * h].view(n, h, w)
        u = data[:, w * h : w * h + cw * ch].view(n, ch, cw)
        v = data[:, w * h + cw * ch :].view(n, ch, cw)
        return y, u, v


@dataclass(slots=True, kw_only=True)
class PlanarBatch:
    """N frames as packed 4:2:0 planes (`data` N×elements), with the timing fields of a `FrameBatch`.

    `release(event)` hands the host buffer behind `data` back to its pool once the pixels have been consumed
    (`event`: a copy still reading from it); `ready` (CUDA) marks when an asynchronous download into `data`
    has finished."""

    data: torch.Tensor
    fmt: PlanarFormat
    pts: list[int]
    time_base: Fraction
    colour: Colour = field(default_factory=Colour)
    index: list[int] = field(default_factory=list)
    release: Callable[[torch.cuda.Event | None], None] | None = None
    ready: torch.cuda.Event | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 2 or self.data.shape[1] != self.fmt.elements or self.data.dtype != self.fmt.dtype:
            raise ValueError(
                f"PlanarBatch data {tuple(self.data.shape)} {self.data.dtype} does not hold {self.fmt} frames"
            )
        if len(self.pts) != self.data.shape[0]:
            raise ValueError(f"PlanarBatch has {self.data.shape[0]} frames but {len(self.pts)} pts")
        if not self.index:
            self.index = list(range(len(self.pts)))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def done(self, event: torch.cuda.Event | None = None) -> None:
        if self.release is not None:
            self.release(event)
            self.release = None


def _coeffs(colour: Colour) -> tuple[float, float, float]:
    kr, kb = _COEFFS.get(colour.matrix, _COEFFS["smpte170m"])
    return kr, 1.0 - kr - kb, kb


def _levels(colour: Colour, bit_depth: int) -> tuple[float, float, float, float]:
    """(luma offset, luma span, chroma centre, chroma span) in code values of `bit_depth`."""
    s = float(1 << (bit_depth - 8))
    if colour.range == "pc":
        top = float((1 << bit_depth) - 1)
        return 0.0, top, 128.0 * s, top
    return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s


def _upsample(c: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N×2×h×w chroma → N×2×H×W: rows at phase ¼/¾ between samples, columns co-sited on even pixels."""
    n, k, h, w = c.shape
    prev = torch.cat([c[:, :, :1], c[:, :, :-1]], dim=2)
    nxt = torch.cat([c[:, :, 1:], c[:, :, -1:]], dim=2)
    rows = torch.stack([0.75 * c + 0.25 * prev, 0.75 * c + 0.25 * nxt], dim=3).reshape(n, k, 2 * h, w)
    right = torch.cat([rows[..., 1:], rows[..., -1:]], dim=3)
    cols = torch.stack([rows, 0.5 * (rows + right)], dim=4).reshape(n, k, 2 * h, 2 * w)
    return cols[:, :, :height, :width]


def _downsample(c: torch.Tensor) -> torch.Tensor:
    """N×2×H×W chroma → N×2×⌈H/2⌉×⌈W/2⌉ with the siting of `_upsample`. The filters, rows (−1 3 3 −1)/4 around
    each sample and columns (−1 2 6 2 −1)/8 centred on it, pass no Nyquist-rate detail (no aliasing) and are the
    exact inverse of `_upsample`, so a decode → encode round trip keeps the chroma planes (up to rounding)."""
    if c.shape[2] % 2:
        c = torch.cat([c, c[:, :, -1:]], dim=2)
    if c.shape[3] % 2:
        c = torch.cat([c, c[..., -1:]], dim=3)
    top, bottom = c[:, :, 0::2], c[:, :, 1::2]
    above = torch.cat([top[:, :, :1], bottom[:, :, :-1]], dim=2)  # row 2i-1 (edge repeated)
    below = torch.cat([top[:, :, 1:], bottom[:, :, -1:]], dim=2)  # row 2i+2
    rows = 0.75 * (top + bottom) - 0.25 * (above + below)
    w = rows.shape[3]
    pad = torch.cat([rows[..., :1], rows[..., :1], rows, rows[..., -1:], rows[..., -1:]], dim=3)
    taps = [pad[..., k : k + w : 2] for k in range(5)]  # columns 2j-2 … 2j+2
    return (6 * taps[2] + 2 * (taps[1] + taps[3]) - (taps[0] + taps[4])) / 8


def planes_to_rgb(data: torch.Tensor, fmt: PlanarFormat, colour: Colour, out_dtype: torch.dtype) -> torch.Tensor:
    """N×elements planes → N×3×H×W RGB in `out_dtype` (uint8/uint16 full scale, or float 0..1), channels-last."""
    y, u, v = fmt.split(data)
    y0, ys, c0, cs = _levels(colour, fmt.bit_depth)
    yf = (y.float() - y0) / ys
    c = (torch.stack([u, v], dim=1).float() - c0) / cs
    c = _upsample(c, fmt.height, fmt.width)
    cb, cr = c[:, 0], c[:, 1]
    kr, kg, kb = _coeffs(colour)
    r = yf + 2 * (1 - kr) * cr
    b = yf + 2 * (1 - kb) * cb
    g = (yf - kr * r - kb * b) / kg
    rgb = torch.stack([r, g, b], dim=1).clamp_(0.0, 1.0)
    return from_float(rgb, out_dtype).contiguous(memory_format=torch.channels_last)


def planes_to_rgb_frames(data: torch.Tensor, fmt: PlanarFormat, colour: Colour, out: torch.Tensor) -> torch.Tensor:
    """`planes_to_rgb` of N×elements planes into `out` (N×3×H×W, its dtype) frame by frame: the float temporaries
    of one frame, not of the batch, beside whatever else holds the device; returns `out`."""
    for i in range(len(data)):
        out[i : i + 1] = planes_to_rgb(data[i : i + 1], fmt, colour, out.dtype)
    return out


def rgb_to_planes(rgb: torch.Tensor, fmt: PlanarFormat, colour: Colour) -> torch.Tensor:
    """N×3×H×W RGB (uint8/uint16 full scale or float 0..1) → N×elements planes of `fmt`."""
    scale = max_value(rgb.dtype)
    x = rgb.float() if scale == 1.0 else rgb.float() / scale
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    kr, kg, kb = _coeffs(colour)
    yf = kr * r + kg * g + kb * b
    c = torch.stack([(b - yf) / (2 * (1 - kb)), (r - yf) / (2 * (1 - kr))], dim=1)
    c = _downsample(c)
    y0, ys, c0, cs = _levels(colour, fmt.bit_depth)
    top = float((1 << fmt.bit_depth) - 1)
    yq = (yf * ys + y0).round_().clamp_(0, top)
    cq = (c * cs + c0).round_().clamp_(0, top)
    n = x.shape[0]
    flat = torch.cat([yq.reshape(n, -1), cq.reshape(n, -1)], dim=1)  # c is N×2×h×w: U plane then V plane
    return flat.to(torch.int32).to(fmt.dtype)


def copy_frame_planes(frame: av.VideoFrame, fmt: PlanarFormat, dst: torch.Tensor) -> None:
    """Copy a decoded frame's planes (which carry line padding) into one packed row `dst` (host memory)."""
    itemsize = 2 if fmt.bit_depth > 8 else 1
    npdtype = np.uint16 if itemsize == 2 else np.uint8
    out = dst.numpy() if dst.dtype == torch.uint8 else dst.view(torch.int16).numpy().view(np.uint16)
    cw, ch = fmt.chroma_size
    offset = 0
    for plane, (pw, ph) in zip(frame.planes, ((fmt.width, fmt.height), (cw, ch), (cw, ch)), strict=True):
        src = np.frombuffer(plane, dtype=npdtype).reshape(-1, plane.line_size // itemsize)[:ph, :pw]
        out[offset : offset + pw * ph].reshape(ph, pw)[...] = src
        offset += pw * ph


def frame_from_planes(row: torch.Tensor, fmt: PlanarFormat) -> av.VideoFrame:
    """An encoder-ready frame from one packed row (host memory). 8-bit even-sized frames wrap the buffer without
    a copy: the caller keeps `row` untouched until the encoder has taken the frame."""
    if fmt.bit_depth == 8:
        arr = row.numpy()
        if fmt.width % 2 == 0 and fmt.height % 4 == 0:  # PyAV derives the height from rows·2/3, in steps of 4
            return av.VideoFrame.from_numpy_buffer(arr.reshape(fmt.height * 3 // 2, fmt.width), format="yuv420p")
    else:
        arr = row.view(torch.int16).numpy().view(np.uint16)
    frame = av.VideoFrame(fmt.width, fmt.height, "yuv420p" if fmt.bit_depth == 8 else fmt.pix_fmt)
    itemsize = arr.itemsize
    cw, ch = fmt.chroma_size
    offset = 0
    for plane, (pw, ph) in zip(frame.planes, ((fmt.width, fmt.height), (cw, ch), (cw, ch)), strict=True):
        dst = np.frombuffer(plane, dtype=arr.dtype).reshape(-1, plane.line_size // itemsize)[:ph, :pw]
        dst[...] = arr[offset : offset + pw * ph].reshape(ph, pw)
        offset += pw * ph
    return frame


def fit(rgb: torch.Tensor, crop: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop N×C×H×W frames to `crop` (w, h; a stage's padding cropped back), then repeat the last column/row up
    to `size` (odd sizes made even for 4:2:0)."""
    (cw, ch), (width, height) = crop, size
    x = rgb[:, :, :ch, :cw]
    if x.shape[3] < width:
        x = torch.cat([x, x[..., -1:].expand(-1, -1, -1, width - x.shape[3])], dim=3)
    if x.shape[2] < height:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, height - x.shape[2], -1)], dim=2)
    return x
