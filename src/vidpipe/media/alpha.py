"""Alpha: which outputs can carry it, and its plane moved exactly between tensors and frames.

Outputs: ProRes 4444, FFV1 and PNG code alpha in the picture itself, so any container that holds them holds it.
libvpx codes VP9 alpha as a second picture that travels as packet side data, which only the Matroska muxer writes
(a BlockAddition, with `alpha_mode=1` on the track): VP9 in .mov or .mp4 would lose it without a word.

Planes: swscale scales a YUV format's alpha plane like a picture. RGBA → yuva420p rounds some values one level
off (8-bit 128..255 come out one lower or higher), and yuva → rgba64 widens by shifting (10-bit 1023 → 65472,
not 65535). A matte must survive a lossless round trip bit for bit, so the writer and the reader let swscale
convert the colour and move a planar alpha plane themselves, rescaled between bit depths with exact rounding.
Packed and RGB formats with alpha (rgba, bgra, rgba64, gbrap*) go through swscale unchanged (tested).
"""

from __future__ import annotations

import av
import numpy as np

#: encoder presets that can store alpha (media/encoders.py)
ALPHA_PRESETS = ("vp9", "prores", "ffv1", "ffv1-10", "png")
#: what to tell a user whose output cannot keep its alpha
ALPHA_OUTPUTS = (
    ".webm or .mkv with vp9 (yuva420p), .mov or .mkv with prores (4444, yuva444p10le), .mkv or .avi with ffv1 "
    "(lossless), or --encoder png (an RGBA image sequence)"
)
#: file extensions the Matroska/WebM muxers write: the only home of VP9's alpha side data
_MATROSKA_SUFFIXES = (".mkv", ".webm", ".mk3d")


def alpha_refusal(preset: str, suffix: str) -> str | None:
    """Why an output of encoder preset `preset` in a file named `*suffix` cannot carry alpha; None when it can."""
    if preset not in ALPHA_PRESETS:
        return f"{preset} cannot store alpha"
    if preset == "vp9" and suffix.lower() not in _MATROSKA_SUFFIXES:
        return f"VP9 alpha is carried only in .webm/.mkv (the {suffix or 'given'} muxer would drop it)"
    return None


def _alpha_plane(fmt: av.VideoFormat) -> tuple[int, int] | None:
    """(plane index, bits) of a planar, native-endian format whose alpha has a plane of its own; None otherwise
    (packed formats, big-endian ones, formats without alpha)."""
    if fmt.is_big_endian:
        return None
    comps = fmt.components
    alpha = [c for c in comps if c.is_alpha]
    if len(alpha) != 1 or any(c.plane == alpha[0].plane for c in comps if not c.is_alpha):
        return None
    return alpha[0].plane, alpha[0].bits


def rescale(values: np.ndarray, from_bits: int, to_bits: int) -> np.ndarray:
    """Integer code values from one depth to another, full range onto full range, rounded to nearest
    (255 → 1023 → 65535; 128 of 8 bits → 514 of 10 bits)."""
    if from_bits == to_bits:
        return values
    top_from, top_to = (1 << from_bits) - 1, (1 << to_bits) - 1
    wide = values.astype(np.uint64)
    return (wide * (2 * top_to) + top_from) // (2 * top_from)


def _plane_view(frame: av.VideoFrame, plane: int, bits: int) -> np.ndarray:
    p = frame.planes[plane]
    dtype = np.dtype("<u2") if bits > 8 else np.dtype(np.uint8)
    rows = np.frombuffer(p, dtype=dtype).reshape(-1, p.line_size // dtype.itemsize)
    return rows[: p.height, : p.width]


def write_alpha(frame: av.VideoFrame, alpha: np.ndarray) -> None:
    """Put `alpha` (H×W, uint8 or uint16 spanning its dtype's full range) into the frame's own alpha plane, if it
    has one (else the conversion that made the frame carried it exactly already)."""
    where = _alpha_plane(frame.format)
    if where is None:
        return
    plane, bits = where
    src_bits = 16 if alpha.dtype == np.uint16 else 8
    _plane_view(frame, plane, bits)[...] = rescale(alpha, src_bits, bits)


def read_alpha(frame: av.VideoFrame, dtype: np.dtype) -> np.ndarray | None:
    """The frame's alpha plane as H×W `dtype` (uint8 or uint16, full range), or None when it has no plane of its
    own (swscale's conversion is exact then)."""
    where = _alpha_plane(frame.format)
    if where is None:
        return None
    plane, bits = where
    out_bits = 16 if np.dtype(dtype) == np.uint16 else 8
    return rescale(_plane_view(frame, plane, bits), bits, out_bits).astype(dtype)
