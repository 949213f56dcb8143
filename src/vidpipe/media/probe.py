"""probe(path) -> MediaInfo, with every bad input mapped to one class of the error tree."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ..errors import (
    EmptyInputError,
    InputNotFoundError,
    InputTooLargeError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedInputError,
    UnsupportedFormatError,
    UsageError,
)
from ..frames import Colour
from .colour import MATRIX, PRIMARIES, TRANSFER, name_of
from .info import Chapter, MediaInfo, StreamInfo, VideoInfo
from .stereo import packing_of_frame

log = logging.getLogger(__name__)

#: packets looked at to decide VFR: enough to see a pattern, cheap (demux only, no decode)
VFR_SAMPLE_PACKETS = 600
#: CFR tolerance on packet pts steps: timestamps rounded to the time base wobble by one tick (29.97 fps in a
#: 1/1000 time base steps 33, 34, 33 …), and a file remuxed from Matroska keeps that millisecond wobble in a
#: finer time base; anything wider than this is a real rate change
VFR_TOLERANCE_TICKS = 2
VFR_TOLERANCE_S = Fraction(11, 10000)
VFR_TOLERANCE_REL = Fraction(1, 100)

#: default cap on pixels per frame for a run: 8192×8192 (64 MiP) holds every 8K format (7680×4320, 8192×4320) and
#: square 8K; a 16000×16000 frame is 768 MB as RGB, and a run holds dozens of frames in its queues
DEFAULT_MAX_PIXELS = 8192 * 8192
#: environment variable overriding the default cap (0: no cap); `--max-pixels` overrides both
MAX_PIXELS_ENV = "VIDPIPE_MAX_PIXELS"

# Pixel-format families the reader converts to RGB; anything else (bayer, hardware surfaces, bitstreams) is refused.
_SUPPORTED_PREFIXES = (
    "yuv",
    "yuvj",
    "yuva",
    "nv12",
    "nv16",
    "nv21",
    "nv24",
    "p010",
    "p016",
    "p210",
    "p216",
    "p410",
    "p416",
    "rgb",
    "bgr",
    "gbr",
    "argb",
    "abgr",
    "rgba",
    "bgra",
    "0rgb",
    "0bgr",
    "gray",
    "ya8",
    "ya16",
    "pal8",
    "xv30",
    "xv36",
    "y210",
    "y212",
    "v30x",
    "vuya",
    "ayuv",
)

#: FFmpeg's AVFieldOrder (0: unknown)
_FIELD_ORDERS = {1: "progressive", 2: "tff", 3: "bff", 4: "tb", 5: "bt"}
#: codecs with interlaced coding tools: when one flags no field order, idet looks at the first frames. Others
#: (ffv1, vp9, av1, png …) are taken as progressive: idet reads fine synthetic detail (testsrc2) as combing. HEVC
#: is among the others: it has no interlaced coding tools, and its fields (coded as pictures of their own) are
#: announced by SEI, which FFmpeg's decoder turns into the frames' interlaced flag; idet called every small
#: progressive HEVC clip of testsrc2 interlaced (tff, 24 of 24 frames at 160x120).
_INTERLACED_CODECS = {"mpeg2video", "mpeg1video", "h264", "mpeg4", "vc1", "wmv3", "dvvideo", "prores", "mjpeg"}
#: frames idet looks at, and the share of them it must call interlaced (tff or bff) for the source to be
IDET_FRAMES = 24
IDET_SHARE = Fraction(2, 3)

#: decoders that read the alpha plane of VP8/VP9 in WebM (FFmpeg's native vp8/vp9 decoders drop it)
_LIBVPX_ALPHA = {"vp8": "libvpx", "vp9": "libvpx-vp9"}

# File signatures of containers we know: a file that starts like one but will not open was cut short.
_SIGNATURES = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP (offset 4)
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"wide"),
    (4, b"free"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (0, b"RIFF"),  # AVI
    (0, b"OggS"),
    (0, b"FLV"),
)


def colour_of(cc: av.video.codeccontext.VideoCodecContext, bit_depth: int) -> Colour:
    return Colour(
        primaries=name_of(PRIMARIES, cc.color_primaries),
        transfer=name_of(TRANSFER, cc.color_trc),
        matrix=name_of(MATRIX, cc.colorspace),
        range="pc" if cc.color_range == 2 else "tv",
        bit_depth=bit_depth,
    )


def pix_fmt_depth(pix_fmt: str) -> tuple[int, bool]:
    """(bit depth of the deepest component, has alpha) for an FFmpeg pixel format name."""
    fmt = av.video.format.VideoFormat(pix_fmt)
    depth = max(c.bits for c in fmt.components) if fmt.components else 8
    alpha = any(c.is_alpha for c in fmt.components) if fmt.components else False
    if pix_fmt == "pal8":  # palette entries may carry alpha; treat as RGBA only if asked elsewhere
        alpha = False
    return depth, alpha


def max_pixels_limit(asked: int | None = None) -> int:
    """The pixel cap of a run: `asked` (from `--max-pixels`), else `$VIDPIPE_MAX_PIXELS`, else the default; 0 means
    no cap."""
    if asked is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        if not env.isdigit():
            raise UsageError(f"{MAX_PIXELS_ENV}={env!r} is not a pixel count; expected e.g. 33177600 or 0 (no cap)")
        asked = int(env)
    if asked < 0:
        raise UsageError(f"--max-pixels must be ≥ 0 (0: no cap), got {asked}")
    return asked


def check_pixels(path: Path | str, width: int, height: int, limit: int) -> None:
    """Refuse frames over the cap (exit 3), naming the size, the cap and how to raise it."""
    if limit and width * height > limit:
        raise InputTooLargeError(
            f"{path}: frames of {width}x{height} ({width * height} pixels) exceed the pixel cap of {limit} "
            f"(default {DEFAULT_MAX_PIXELS} = 8192x8192); raise it with --max-pixels N or {MAX_PIXELS_ENV}=N "
            "(0: no cap) if this host has the memory"
        )


def _idet(first: av.VideoFrame, rest: Iterator[av.VideoFrame], tb: Fraction) -> str | None:
    """FFmpeg's idet over the first frames: "tff" or "bff" when most of them look interlaced, else None."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=first.width, height=first.height, format=first.format.name, time_base=tb)
    idet, sink = graph.add("idet"), graph.add("buffersink")
    src.link_to(idet)
    idet.link_to(sink)
    graph.configure()
    seen = 0
    last: av.VideoFrame | None = None
    for frame in itertools.chain([first], itertools.islice(rest, IDET_FRAMES - 1)):
        graph.push(frame)
        seen += 1
        with contextlib.suppress(BlockingIOError, av.error.EOFError):
            while True:
                last = graph.pull()
    graph.push(None)
    with contextlib.suppress(BlockingIOError, av.error.EOFError):
        while True:
            last = graph.pull()
    if last is None:
        return None
    md = last.metadata  # counts over every frame so far, the multi-frame (steadier) verdict
    tff, bff = (float(md.get(f"lavfi.idet.multiple.{k}", 0)) for k in ("tff", "bff"))
    if seen < 4 or tff + bff < IDET_SHARE * seen:
        return None
    return "tff" if tff >= bff else "bff"


def _scan(
    cc: av.video.codeccontext.VideoCodecContext, first: av.VideoFrame, rest: Iterator[av.VideoFrame], tb: Fraction
) -> tuple[str, bool]:
    """(field order, interlaced): the codec's flags when it sets them, else idet for codecs that can code fields."""
    order = _FIELD_ORDERS.get(cc.field_order or 0, "unknown")
    if order not in ("progressive", "unknown") or first.interlaced_frame:
        return order, True
    if order == "unknown" and cc.name in _INTERLACED_CODECS:
        try:
            found = _idet(first, rest, tb)
        except (av.error.FFmpegError, ValueError) as e:  # a layout idet refuses, damage in the first frames
            log.debug("probe: idet could not run (%s); scan left unknown", e)
            return order, False
        return (found, True) if found else ("progressive", False)
    return order, False


def _check_file(path: Path) -> int:
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise InputNotFoundError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyInputError(f"{path}: file is empty (0 bytes)")
    return size


def _looks_like_container(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(16)
    return any(head[off : off + len(sig)] == sig for off, sig in _SIGNATURES)


def open_input(path: Path) -> av.container.InputContainer:
    """av.open with FFmpeg's failures mapped to our errors (missing, empty, not media, truncated)."""
    _check_file(path)
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.InvalidDataError as e:
        if _looks_like_container(path):
            raise TruncatedInputError(
                f"{path}: the container is damaged or cut short (e.g. MP4 index 'moov' missing): {e.strerror}"
            ) from None
        raise NotMediaError(f"{path}: not a video file FFmpeg can read ({e.strerror})") from None
    except av.error.FFmpegError as e:
        raise NotMediaError(f"{path}: cannot open: {e.strerror}") from None


def _frac(x: object) -> Fraction | None:
    if x is None:
        return None
    return Fraction(x)  # type: ignore[arg-type]


def _stream_info(s: av.stream.Stream) -> StreamInfo:
    tb = _frac(s.time_base)
    md = dict(s.metadata)
    cc = s.codec_context if s.type in ("video", "audio", "subtitle") else None
    codec = cc.name if cc is not None else (md.get("codec") or "none")
    if s.type == "attachment" or s.type == "data":
        try:
            codec = s.codec_context.name  # type: ignore[union-attr]
        except Exception:  # attachment streams have no decoder context in some builds
            codec = md.get("mimetype", "none")
    start = s.start_time * tb if (s.start_time is not None and tb) else None
    dur = s.duration * tb if (s.duration is not None and tb) else None
    info: dict[str, object] = {}
    if s.type == "audio" and cc is not None:
        info = {"sample_rate": cc.sample_rate, "channels": cc.channels, "layout": cc.layout.name}
    if s.type == "attachment":
        info = {"filename": md.get("filename"), "mimetype": md.get("mimetype")}
    return StreamInfo(
        index=s.index,
        type=s.type,
        codec=codec,
        language=md.get("language"),
        title=md.get("title"),
        time_base=tb,
        start_time=start,
        duration=dur,
        metadata=md,
        **info,
    )  # type: ignore[arg-type]


def _packet_pts(container: av.container.InputContainer, vs: av.video.stream.VideoStream, limit: int) -> list[int]:
    pts: list[int] = []
    try:
        for pkt in container.demux(vs):
            if pkt.pts is not None:
                pts.append(pkt.pts)
            if len(pts) >= limit:
                break
    except av.error.FFmpegError:
        pass  # a damaged tail does not change what the head says about the rate
    return sorted(pts)


def _is_vfr(pts: list[int], tb: Fraction) -> bool:
    steps = [b - a for a, b in itertools.pairwise(pts) if b > a]
    if len(steps) < 2:
        return False
    mean = Fraction(sum(steps), len(steps))
    tol = max(Fraction(VFR_TOLERANCE_TICKS), mean * VFR_TOLERANCE_REL, VFR_TOLERANCE_S / tb)
    return any(abs(s - mean) > tol for s in steps)


def probe(path: str | Path, *, count_frames: bool = False, max_pixels: int = 0) -> MediaInfo:
    """Describe a media file. Cheap: opens the container, demuxes a few hundred packets and decodes one frame
    (for rotation and the real pixel format). `count_frames=True` demuxes everything for an exact count.
    `max_pixels` (0: none): refuse larger frames from the header, before anything is decoded."""
    path = Path(path)
    size = _check_file(path)
    with open_input(path) as c:
        if not c.streams.video:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "none"
            raise NoVideoStreamError(f"{path}: no video stream (streams found: {kinds})")
        vs = c.streams.video[0]
        cc = vs.codec_context
        check_pixels(path, cc.width, cc.height, max_pixels)
        pix_fmt = cc.pix_fmt or ""
        if not pix_fmt:
            raise UnsupportedFormatError(f"{path}: video stream has no known pixel format (codec {cc.name})")
        if not pix_fmt.startswith(_SUPPORTED_PREFIXES):
            raise UnsupportedFormatError(
                f"{path}: pixel format {pix_fmt!r} is not supported; valid families: " + ", ".join(_SUPPORTED_PREFIXES)
            )
        depth, alpha = pix_fmt_depth(pix_fmt)
        if cc.name in _LIBVPX_ALPHA and vs.metadata.get("alpha_mode") == "1":
            # WebM/Matroska carry VP8/VP9 alpha beside the picture; FFmpeg's native decoders ignore it
            alpha, pix_fmt = True, "yuva420p"
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        sample = _packet_pts(c, vs, VFR_SAMPLE_PACKETS)
        vfr = _is_vfr(sample, tb)
        rate = _frac(vs.average_rate) or _frac(vs.guessed_rate) or _frac(vs.base_rate)
        if not rate and len(sample) > 1:
            rate = Fraction(len(sample) - 1) / ((sample[-1] - sample[0]) * tb)
        if not rate:
            raise UnsupportedFormatError(f"{path}: cannot determine a frame rate for the video stream")
        rotation = 0
        field_order, interlaced = "unknown", False
        stereo = None
        try:
            c.seek(0)
            decoded = c.decode(vs)
            frame = next(decoded)
            rotation = round(frame.rotation or 0)
            stereo = packing_of_frame(frame)
            field_order, interlaced = _scan(cc, frame, decoded, tb)
            if frame.format.name != pix_fmt and not (
                alpha and cc.name in _LIBVPX_ALPHA
            ):  # decoders may report a different layout than the header
                pix_fmt = frame.format.name
                depth, alpha = pix_fmt_depth(pix_fmt)
        except (StopIteration, av.error.FFmpegError):
            log.debug("probe: first frame of %s did not decode; rotation assumed 0", path)
        start = vs.start_time * tb if vs.start_time is not None else Fraction(0)
        duration = Fraction(c.duration, av.time_base) if c.duration else None
        frames: int | None = vs.frames or None
        exact = frames is not None  # an index count (MP4, AVI) is exact whatever the timing
        if count_frames or (frames is None and size < 64 * 1024 * 1024):
            c.seek(0)
            frames = sum(1 for p in c.demux(vs) if p.size)
            exact = True
        elif frames is None and duration is not None:
            frames = round(duration * rate)
        video = VideoInfo(
            index=vs.index,
            codec=cc.name,
            width=cc.width,
            height=cc.height,
            pix_fmt=pix_fmt,
            colour=colour_of(cc, depth),
            alpha=alpha,
            rate=rate,
            time_base=tb,
            vfr=vfr,
            rotation=rotation,
            sar=_frac(vs.sample_aspect_ratio) or _frac(cc.sample_aspect_ratio) or Fraction(1),
            frames=frames,
            frames_exact=exact,
            start_time=start,
            field_order=field_order,
            interlaced=interlaced,
            stereo=stereo,
        )
        chapters = tuple(
            Chapter(
                start=Fraction(ch["start"]) * Fraction(ch["time_base"]),
                end=Fraction(ch["end"]) * Fraction(ch["time_base"]),
                title=(ch.get("metadata") or {}).get("title"),
            )
            for ch in c.chapters()
        )
        return MediaInfo(
            path=str(path),
            container=c.format.name,
            size_bytes=size,
            duration=duration,
            bit_rate=c.bit_rate or None,
            video=video,
            streams=tuple(_stream_info(s) for s in c.streams),
            chapters=chapters,
            metadata=dict(c.metadata),
        )
