"""Frames as images for the page and the still grid, encoded by PyAV's FFmpeg (PIL is no run-time dependency):
JPEG for RGB, WebP with its alpha plane for RGBA, PNG for the grid; and the difference heat-map."""

from __future__ import annotations

import base64
from fractions import Fraction

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..frames import max_value

#: mjpeg's quantiser (2 best … 31): 3 keeps edges and grain visible at 400 % (≈ 100 KB for a 768×576 frame)
JPEG_QSCALE = 3
#: libwebp's quality for RGBA frames (lossy colour, the alpha plane lossless)
WEBP_QUALITY = 85
#: images are embedded at most this long on their long side (a 4K upscale is shown at 2048 px; 400 % crops of
#: such a frame are 200 % of its own pixels); the page may lower it to stay within its byte budget
MAX_SIDE = 2048
#: the heat-map's full colour: a mean absolute difference of this many 8-bit levels over R, G, B (or more)
HEAT_FULL_LEVELS = 32.0
#: the heat-map's colour ramp (black → purple → orange → pale yellow), stops evenly spaced over 0 … full
_RAMP = torch.tensor([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=torch.float32)


def to_uint8(frame: torch.Tensor) -> torch.Tensor:
    """C×H×W frame of any integer depth (or float 0..1) → C×H×W uint8."""
    if frame.dtype == torch.uint8:
        return frame
    if frame.is_floating_point():
        return (frame.clamp(0, 1) * 255).round().to(torch.uint8)
    return (frame.float() * (255 / max_value(frame.dtype))).round().clamp(0, 255).to(torch.uint8)


def fit_side(frame: torch.Tensor, max_side: int = MAX_SIDE) -> torch.Tensor:
    """`frame` (C×H×W uint8) shrunk by area averaging so its long side is at most `max_side`."""
    h, w = frame.shape[-2:]
    if max(w, h) <= max_side:
        return frame
    k = max_side / max(w, h)
    size = (max(1, round(h * k)), max(1, round(w * k)))
    return F.interpolate(frame[None].float(), size=size, mode="area")[0].round().clamp(0, 255).to(torch.uint8)


def _encode(array: np.ndarray, codec: str, src_fmt: str, pix_fmt: str, options: dict[str, str]) -> bytes:
    h, w = array.shape[:2]
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=src_fmt).reformat(format=pix_fmt)
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def encode(frame: torch.Tensor) -> tuple[str, bytes]:
    """C×H×W uint8 (3: RGB, 4: RGBA) → (MIME type, bytes): JPEG, or WebP keeping the alpha plane."""
    hwc = frame.permute(1, 2, 0).contiguous().cpu().numpy()
    if frame.shape[0] == 4:
        # yuva420p needs even sides: libwebp pads odd ones itself, so only the pixel format is asked for
        return "image/webp", _encode(hwc, "libwebp", "rgba", "yuva420p", {"quality": str(WEBP_QUALITY)})
    h, w = hwc.shape[:2]
    even = np.pad(hwc, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # 4:2:0 JPEG wants even sides
    data = _encode(even, "mjpeg", "rgb24", "yuvj420p", {"qscale": str(JPEG_QSCALE)})
    return "image/jpeg", data


def png(frame: torch.Tensor) -> bytes:
    """C×H×W uint8 RGB(A) → PNG bytes (the still grid)."""
    hwc = frame.permute(1, 2, 0).contiguous().cpu().numpy()
    rgba = frame.shape[0] == 4
    fmt = "rgba" if rgba else "rgb24"
    return _encode(hwc, "png", fmt, fmt, {})


def data_uri(frame: torch.Tensor, max_side: int = MAX_SIDE) -> str:
    """A frame (any depth, C×H×W) as a `data:` URI for an `<img>`, at most `max_side` long."""
    mime, data = encode(fit_side(to_uint8(frame), max_side))
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """H×W mean absolute difference over R, G, B in 8-bit levels of two float 0..1 frames (C×H×W, same size)."""
    return (a[:3].float() - b[:3].float()).abs().mean(0) * 255


def heatmap(diff: torch.Tensor) -> torch.Tensor:
    """H×W differences in 8-bit levels → 3×H×W uint8 colours of `_RAMP`, full at `HEAT_FULL_LEVELS`."""
    pos = (diff / HEAT_FULL_LEVELS).clamp(0, 1) * (len(_RAMP) - 1)
    lo = pos.floor().long().clamp(max=len(_RAMP) - 2)
    t = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t
    return rgb.round().to(torch.uint8).permute(2, 0, 1).contiguous()


def hottest(diff: torch.Tensor) -> tuple[float, float]:
    """Where the difference is largest, as (x, y) fractions of the frame: the centre of the 32×32 block (or the
    frame's sixteenth, if larger) with the highest mean, so one noisy pixel does not pick the crop."""
    h, w = diff.shape
    k = max(1, min(h, w, max(32, min(h, w) // 16)))
    s = max(1, k // 2)
    # ceil_mode: windows running off the right or bottom edge are averaged over their part inside the frame
    pooled = F.avg_pool2d(diff[None, None].float(), k, stride=s, ceil_mode=True)[0, 0]
    y, x = divmod(int(pooled.argmax()), pooled.shape[1])
    return ((x * s + min(x * s + k, w)) / 2 / w, (y * s + min(y * s + k, h)) / 2 / h)
