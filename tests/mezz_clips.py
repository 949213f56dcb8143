"""Generated clips for the mezzanine tests: woven interlaced frames of a moving bar, letterboxed pictures, colour
bars tagged BT.601, and a DVD-like 720×576 anamorphic 25i clip with AC-3 audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: the bar moves this many pixels per field (1/50 s at 25i)
BAR_STEP = 4
BAR_WIDTH = 8
BAR_START = 8
GREY, WHITE = 60, 220


def moment(n: int, size: tuple[int, int]) -> np.ndarray:
    """Grey RGB picture with a white vertical bar at x = BAR_START + n·BAR_STEP (moment n of a 50 Hz scene)."""
    w, h = size
    arr = np.full((h, w, 3), GREY, np.uint8)
    x = BAR_START + n * BAR_STEP
    arr[:, x : x + BAR_WIDTH] = WHITE
    return arr


def woven(k: int, size: tuple[int, int], top_first: bool) -> np.ndarray:
    """Frame k of a 25i stream: the field shown first from moment 2k, the other from moment 2k+1."""
    first, second = moment(2 * k, size), moment(2 * k + 1, size)
    arr = first.copy()
    later_rows = slice(1, None, 2) if top_first else slice(0, None, 2)  # the second field's rows
    arr[later_rows] = second[later_rows]
    return arr


def bar_centre(rgb: np.ndarray) -> float:
    """The bar's x centre: brightness-weighted column mean above the grey."""
    cols = rgb[..., 1].astype(np.float64).mean(axis=0) - GREY
    cols = np.clip(cols, 0, None)
    return float((cols * np.arange(cols.size)).sum() / cols.sum())


def interlaced_clip(
    path: Path,
    *,
    codec: str = "libx264",
    top_first: bool = True,
    flagged: bool = True,
    frames: int = 8,
    height: int = 64,
) -> Path:
    """Woven bar frames at 25 fps (time base 1/25 in the codec, the container's own). `flagged`: coded as
    interlaced with its field order (x264 tff=1/bff=1); else coded progressive (a woven picture as it is). Wide
    enough for the bar's last position."""
    size = (-(-(2 * BAR_START + 2 * frames * BAR_STEP + BAR_WIDTH) // 16) * 16, height)
    options: dict[str, str] = {}
    if codec == "libx264":
        options["x264-params"] = ("tff=1" if top_first else "bff=1") + ":qp=0" if flagged else "qp=0"
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25, options=options)
        vs.width, vs.height, vs.pix_fmt = *size, "yuv420p"
        if codec != "libx264" and flagged:
            vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            vs.codec_context.field_order = 2 if top_first else 3  # AV_FIELD_TT / AV_FIELD_BB
        if codec == "mpeg4":
            vs.codec_context.options = {"qscale": "1"}
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(woven(k, size, top_first), format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def letterboxed_clip(
    path: Path, *, size: tuple[int, int], box: tuple[int, int, int, int], frames: int = 60, dark: range = range(0)
) -> Path:
    """testsrc2 inside `box` = (w, h, x, y) of a black (limited-range 16, with ±3 noise) frame; the frames in
    `dark` are black all over (a dark scene)."""
    w, h = size
    bw, bh, bx, by = box
    src = av.open(f"testsrc2=size={bw}x{bh}:rate=25", format="lavfi")
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for k, pic in zip(range(frames), src.decode(video=0), strict=False):
            yuv = np.zeros((h * 3 // 2, w), np.uint8)
            y = (16 + rng.integers(-3, 4, (h, w))).astype(np.uint8)
            if k not in dark:
                y[by : by + bh, bx : bx + bw] = pic.reformat(format="yuv420p").to_ndarray()[:bh]
            yuv[:h] = y
            yuv[h:] = 128
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = k
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    src.close()
    return path


def dvd_clip(path: Path, *, frames: int = 6, bars: int = 72) -> Path:
    """A DVD-like clip: 720×576 MPEG-2, 16:9 anamorphic (SAR 64:45), 25i top field first (woven fields of
    smptebars moving right, black letterbox bars of `bars` rows), untagged colour (BT.601 by size), AC-3 stereo."""
    w, h = 720, 576
    src = av.open(f"testsrc2=size={w}x{h - 2 * bars}:rate=50", format="lavfi")
    pics = [f.to_ndarray(format="rgb24") for _, f in zip(range(2 * frames), src.decode(video=0), strict=False)]
    src.close()
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg2video", rate=25, options={"qscale": "2"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.sample_aspect_ratio = vs.codec_context.sample_aspect_ratio = Fraction(64, 45)
        vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        vs.codec_context.field_order = 2  # AV_FIELD_TT: top field first, as PAL DVDs are
        a = out.add_stream("ac3", rate=48000)
        a.layout = "stereo"
        for k in range(frames):
            arr = np.zeros((h, w, 3), np.uint8)
            arr[bars : h - bars] = pics[2 * k]
            arr[bars + 1 : h - bars : 2] = pics[2 * k + 1][1::2]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        tone = av.open(f"sine=frequency=440:sample_rate=48000:duration={frames / 25}", format="lavfi")
        for fr in tone.decode(audio=0):
            fr.pts = None
            out.mux(a.encode(fr))
        tone.close()
        out.mux(a.encode())
    return path


def bars_clip(path: Path, *, frames: int = 2, size: tuple[int, int] = (160, 120)) -> Path:
    """SMPTE colour bars, 4:4:4 8-bit FFV1 tagged BT.601 525 (smpte170m primaries, transfer and matrix)."""
    w, h = size
    src = av.open(f"smptebars=size={w}x{h}:rate=25", format="lavfi")
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 6, 6, 6, 1
        for k, f in zip(range(frames), src.decode(video=0), strict=False):
            frame = f.reformat(format="yuv444p", dst_colorspace="smpte170m", dst_color_range="MPEG")
            frame.pts = k
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    src.close()
    return path
