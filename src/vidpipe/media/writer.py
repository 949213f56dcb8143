"""VideoWriter: encode batches and mux them with every other stream of the source.

- Video is encoded with the preset chosen in `encoders.resolve`; colour tags follow the source (the matrix the
  reader assumed is the one used and tagged here, so colours round-trip).
- Timestamps: frames are written with the pts and time base they carry. 1:1 stages keep the source's pts, so
  VFR timelines come out identical; rate-changing stages hand exact constant-rate pts.
- Audio, subtitle, data and attachment streams, chapters and metadata are stream-copied from the source.
  Audio is re-encoded only when the output container cannot hold its codec (logged); a subtitle or attachment
  the container cannot hold is dropped with a warning (use .mkv to keep everything).
- A frame-rate conform (`WriterOptions.conform`, media/conform.py) re-times the frames to the target rate and
  moves every other stream with them: audio stretched and re-encoded, subtitles and chapters scaled.
- Odd dimensions with 4:2:0 chroma are padded by one row/column, repeating the edge pixels (nothing of the
  picture is cut; the extra line is a copy of its neighbour).
- The output is written to a hidden temp file beside the target and renamed over it only on success;
  `abort()` removes it. The writer never deletes what it did not make: a folder is never an output file, and a
  PNG sequence (`--encoder png` only) goes into a new or empty folder, or replaces its own earlier frames
  (frame files alone, its manifest beside them). `check_target` refuses a target it would not or could not
  write before any frame is decoded.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import torch

from ..errors import DiskFullError, OutputError, UsageError
from ..frames import Colour, FrameBatch, StreamSpec
from .alpha import write_alpha
from .chunked import CHUNKABLE, ChunkedEncoder
from .colour import MATRIX, PRIMARIES, TRANSFER, code_of, target_colour
from .conform import AudioStretch, Conform, RateCheck, describe, encoder_for, retime_spu, source_rate
from .encoders import (
    REALTIME_ENCODERS,
    EncoderChoice,
    EncoderOptions,
    check_frame_size,
    drop_realtime_scheduling,
    resolve,
)
from .info import MediaInfo
from .reader import rgb_format, sws_matrix
from .yuv import PlanarBatch, PlanarFormat, frame_from_planes

log = logging.getLogger(__name__)

#: parallel chunks: their length (IDR interval) in seconds and frames; auto sizing of the encoder count
CHUNK_SECONDS = 2
MIN_CHUNK_FRAMES = 48
AUTO_CORES_PER_WORKER = 4
AUTO_MAX_WORKERS = 4
#: host memory auto chunking may fill: the frames of the open chunks ((workers + 1) chunks, all full when the
#: encoders are the bottleneck) and the encoders themselves. A CUDA run's process holds 1–1.5 GB of host RSS for
#: torch and CUDA alone, and issue 18 asks for under 3 GB: 4096×1728 (BasicVSR++ ×4 of 1024×432) gets one encoder
#: (two would need 2.8 GB; four peaked at 3974 MB on the H100 host); 1080p up to 60 fps and 1440p25 keep the 4 that
#: encode them faster when the encoder bounds the run (RIFE ×2), 1440p30 gets 3 (docs/benchmarks.md, "Writer host
#: memory")
WRITER_MEMORY_BYTES = 5 << 29
#: resident bytes per pixel of one encoder instance with 4 threads (one of 4 on 16 cores), the larger of the figures
#: at 1920×1080 and 4096×1728 (scripts/writer_rss.py encoder-memory; docs/benchmarks.md, "Writer host memory"), by
#: codec and x264/x265 preset; a preset not listed takes its codec's figure. Most of it is frames in flight, so it
#: grows with the lookahead: x264 veryfast looks 10 frames ahead, medium 40 (and slow ones up to 60: more than this)
ENCODER_BYTES_PER_PIXEL: dict[str, int] = {
    "libx264": 195,  # medium
    "libx264:ultrafast": 84,  # veryfast's: no more lookahead than it
    "libx264:superfast": 84,
    "libx264:veryfast": 84,
    "libx265": 201,  # fast (the hevc preset's default)
    "libvpx-vp9": 133,
    "prores_ks": 16,
}

#: how far (seconds) copied packets may run ahead of the video when interleaving
INTERLEAVE_AHEAD_S = Fraction(1, 2)
#: trimmed output: the copied streams are read from this far before the part (a keyframe at or before it)
TRIM_SEEK_MARGIN_S = Fraction(1)
#: trimmed output: copying ends once a packet starts this far past the part (the streams' interleaving slack)
TRIM_LATE_S = Fraction(5)

#: the colour tags a codec context and a frame both carry
_COLOUR_ATTRS = ("color_primaries", "color_trc", "colorspace", "color_range")
_AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "webm": "libopus", "avi": "libmp3lame", "matroska": "aac"}
#: Opus bit rate per channel when audio is re-encoded to it (96 kb/s stereo, FFmpeg's own default for stereo, which
#: it would otherwise pick with a warning in every WebM run's log)
OPUS_BPS_PER_CHANNEL = 48_000


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterOptions:
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    #: copy audio/subtitle/data/attachment streams, chapters and metadata from the source
    copy_streams: bool = True
    #: parallel chunk encoders (x264/x265; media/chunked.py): None = auto (one per 4 cores from 8 cores, at most
    #: 4, fewer where their frames and encoders would pass WRITER_MEMORY_BYTES), 0 or 1 = one ordinary encoder
    encode_workers: int | None = None
    #: a part of the source as a file of its own, starting at t=0 (`vidpipe run --start/--duration/--frames`)
    trim: Trim | None = None
    #: re-time the output to another frame rate, every frame kept (`vidpipe run --conform`, media/conform.py)
    conform: Conform | None = None
    #: the output's YUV matrix and colour tags (`--colour-matrix`, media/colour.py `target_colour`): keep the source's
    colour: str = "keep"


@dataclass(frozen=True, slots=True, kw_only=True)
class Trim:
    """A part of the source written as a file of its own (`vidpipe run --start/--duration/--frames`).

    The frames arrive cut already (the reader's and pipeline's time window). The writer moves every stream back
    by the first frame's source time, so the output starts at t=0, and copies of the other streams only the
    packets that start within the video's span (from the first frame to the end of the last, and before `end`):
    audio stays in sync with the picture exactly, its first packet starting up to one packet (~21 ms of AAC)
    after the first frame. A subtitle that started before the first frame is not shown. Chapters are moved
    alike and clipped to the span."""

    #: source time (seconds) where the part ends, if it is given as a time (the last frame starts before it)
    end: Fraction | None = None
    #: write at most this many frames (the pipeline stops reading there too)
    max_frames: int | None = None


@dataclass(slots=True)
class WriterStats:
    frames: int = 0
    encoder: str = ""
    pix_fmt: str = ""
    copied: list[str] = field(default_factory=list)
    reencoded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: packets of re-encoded audio that did not decode (damaged), dropped: their stretch of sound is missing
    audio_dropped_packets: int = 0
    warnings: list[str] = field(default_factory=list)
    padded: tuple[int, int] | None = None
    #: how the video was encoded in parallel chunks, if it was
    parallel: str | None = None
    #: the frame-rate conform applied (media.conform.describe), if any
    conform: dict[str, Any] | None = None


def encoder_bytes_per_pixel(choice: EncoderChoice) -> int:
    """Resident bytes per pixel one instance of the chosen encoder holds (ENCODER_BYTES_PER_PIXEL)."""
    preset = choice.options.get("preset")
    return ENCODER_BYTES_PER_PIXEL.get(f"{choice.codec}:{preset}", ENCODER_BYTES_PER_PIXEL[choice.codec])


def auto_workers(choice: EncoderChoice, width: int, height: int, chunk_frames: int, cores: int) -> int:
    """Parallel chunk encoders for a codec in CHUNKABLE on `cores` cores (0 = one ordinary encoder): one per
    AUTO_CORES_PER_WORKER cores from twice that, at most AUTO_MAX_WORKERS, and no more than keep the open chunks'
    frames and the encoders within WRITER_MEMORY_BYTES. At 8K one chunk alone is gigabytes, and there one encoder
    measured faster anyway; at 4096×1728 one x264 instance holds ~560 MB (docs/benchmarks.md)."""
    if cores < 2 * AUTO_CORES_PER_WORKER:
        return 0
    pixels = width * height
    chunk_bytes = pixels * 3 // 2 * (2 if choice.bit_depth > 8 else 1) * chunk_frames  # 4:2:0 planes
    encoder_bytes = pixels * encoder_bytes_per_pixel(choice)
    workers = min(AUTO_MAX_WORKERS, cores // AUTO_CORES_PER_WORKER)
    while workers > 1 and (workers + 1) * chunk_bytes + workers * encoder_bytes > WRITER_MEMORY_BYTES:
        workers -= 1
    return workers if workers > 1 else 0


def partial_path(target: Path) -> Path:
    """The hidden temp name beside `target` (same suffix, so the muxer is the same)."""
    return target.with_name(f".{target.stem}.vidpipe-partial{target.suffix}")


#: the frame files of a PNG sequence, in its folder
FRAME_NAME = "%08d.png"
_FRAME_FILE = re.compile(r"\d{8}\.png")


@functools.cache
def muxer_extensions() -> frozenset[str]:
    """File extensions FFmpeg guesses an output container from (what `av.open(path, "w")` does)."""
    found: set[str] = set()
    for name in av.formats_available:
        fmt = av.ContainerFormat(name)
        if fmt.is_output:
            found.update(e.strip().lower() for e in fmt.extensions)
    return frozenset(found)


def _own_frames(folder: Path) -> list[Path] | None:
    """The frame files of a PNG sequence this writer made in `folder` earlier (none for an empty folder), or
    None when the folder holds anything else or has no manifest beside it (frames named like ours, someone
    else's): only those may be replaced."""
    entries = list(folder.iterdir())
    if not entries:
        return []
    manifest = folder.with_name(folder.name + ".json")
    if manifest.is_file() and all(e.is_file() and _FRAME_FILE.fullmatch(e.name) for e in entries):
        return entries
    return None


def _refuse(target: Path, png: bool) -> None:
    """Targets never written, whatever the file system allows (nothing is created or read but the folder)."""
    if png:
        if target.is_dir() and _own_frames(target) is None:
            raise OutputError(
                f"{target} is a folder that is not empty; a PNG sequence goes into a new or empty folder "
                "(vidpipe replaces only its own earlier frames)"
            )
        if target.exists() and not target.is_dir():
            raise OutputError(f"{target} is a file; a PNG sequence goes into a new or empty folder")
        return
    if target.is_dir():
        raise OutputError(f"{target} is a folder; name an output file such as {target / 'out.mkv'}")
    ext = target.suffix.lower().lstrip(".")
    if not ext:
        raise UsageError(
            f"output {target} has no extension: name a file (.mkv, .mp4, .mov, .webm, …), a folder (end it with "
            "'/'), or use --encoder png for a PNG sequence in that folder"
        )
    if ext not in muxer_extensions():
        raise UsageError(f"no container format for output extension .{ext}; use .mkv, .mp4, .mov, .webm, .avi, …")


def _os_error(e: OSError, what: str) -> OutputError:
    cls = DiskFullError if e.errno in (errno.ENOSPC, errno.EDQUOT) else OutputError
    return cls(f"{what}: {e.strerror or e}")


def _ffmpeg_error(e: av.error.FFmpegError, what: str) -> OutputError:
    """FFmpeg's write errors are OSErrors with an errno: a full disk is a DiskFullError, as it is in jobs."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what}: disk full ({e.strerror or e}); free space or write elsewhere")
    return OutputError(f"{what}: {e}")


def check_target(target: Path, options: WriterOptions = WriterOptions()) -> None:
    """Raise now, before anything is decoded, for an output the writer would refuse or could not write: a
    folder as a file, a PNG sequence into a folder holding anything but its own frames, no extension or one
    no container goes with (UsageError), a folder that cannot be made or written to (read-only file system,
    /proc; OutputError). Makes the target's folder, as writing would; leaves nothing else behind."""
    target = Path(target)
    _refuse(target, options.encoder.encoder == "png")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(e, f"cannot make the output folder {folder}") from e
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".vidpipe-write-check-")
    except OSError as e:
        raise _os_error(e, f"cannot write into {folder}") from e
    os.close(fd)
    os.unlink(probe)


class VideoWriter:
    def __init__(
        self,
        target: Path,
        spec: StreamSpec,
        colour: Colour,
        source: MediaInfo | None,
        options: WriterOptions = WriterOptions(),
    ) -> None:
        self.target = Path(target)
        self.spec = spec
        self.colour = target_colour(colour, options.colour)
        self.source = source
        self.options = options
        self.stats = WriterStats()
        # a PNG sequence only when asked for: a path without an extension is refused, never guessed a folder
        self.png = options.encoder.encoder == "png"
        _refuse(self.target, self.png)
        self.choice: EncoderChoice = resolve(
            options.encoder,
            suffix=".png" if self.png else self.target.suffix,
            source_depth=spec.bit_depth,
            alpha=spec.alpha,
            source_pix_fmt=source.video.pix_fmt if source is not None else None,
            # an alpha the source did not have was made on the way (a matte): never dropped in `auto`
            alpha_made=spec.alpha and not (source is not None and source.video.alpha),
        )
        self.stats.encoder = self.choice.codec
        self.stats.pix_fmt = self.choice.pix_fmt
        self.tmp = partial_path(self.target)
        self._out: av.container.OutputContainer | None = None
        self._vs: av.video.stream.VideoStream | None = None
        self._copy: _StreamCopier | None = None
        self._chunked: ChunkedEncoder | None = None
        self._closed = False
        self._alpha_warned = False
        self._frame_tags: dict[str, int] = {}
        #: trimmed output: the first frame's pts (every stream moves back by its time) and the video's end (s)
        self._shift = 0
        self._video_end = Fraction(0)
        #: the frames' rate as they arrive, and as written (the conform's target, else the same)
        self._rate_in = spec.rate or spec.nominal_rate or Fraction(25)
        self._rate_out = self._rate_in
        self._conform: Conform | None = None
        self._rate_check: RateCheck | None = None
        conform = options.conform
        if conform is not None and not self.png:
            self._rate_in = source_rate(spec, source)  # a VFR source is refused here, before any decoding
            if self._rate_in == conform.rate:
                log.info("conform: the frames are at %s fps already; nothing to re-time", conform.rate)
            else:
                self._conform, self._rate_out = conform, conform.rate
                self._rate_check = RateCheck(self._rate_in)
                self.stats.conform = describe(conform, self._rate_in)
                log.info("conform: %s → %s fps, durations × %s", self._rate_in, conform.rate, self._scale)

    @property
    def _scale(self) -> Fraction:
        """Output time per source time: source rate / target rate under a conform, else 1."""
        return self._rate_in / self._rate_out

    # -- setup --
    def frame_size(self) -> tuple[int, int]:
        """Encoded size: the stream's (cropped back if a stage padded it), made a multiple of the chroma
        subsampling (even for 4:2:0)."""
        w, h = self.spec.crop_to or (self.spec.width, self.spec.height)
        sx, sy = self.choice.chroma_step
        return w + -w % sx, h + -h % sy

    def planar_format(self) -> PlanarFormat | None:
        """The packed 4:2:0 planes this writer takes in place of RGB (converted on the device by the caller),
        or None when the encoder wants another layout or an alpha plane."""
        if self.png or self.choice.pix_fmt not in ("yuv420p", "yuv420p10le") or (self.spec.alpha and self.choice.alpha):
            return None
        return PlanarFormat(self.choice.pix_fmt, *self.frame_size())

    def _open(self, first: FrameBatch | PlanarBatch) -> None:
        ch = self.choice
        w, h = self.frame_size()
        check_frame_size(ch, w, h)
        if (w, h) != (self.spec.crop_to or (self.spec.width, self.spec.height)):
            self.stats.padded = (w, h)
            log.info("encode: odd size padded to %dx%d for 4:2:0 (edge pixels repeated)", w, h)
        try:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            if self.png:
                self.tmp.mkdir(exist_ok=True)
                out = av.open(str(self.tmp / FRAME_NAME), "w", format="image2")
            else:
                out = av.open(str(self.tmp), "w")
        except OSError as e:  # PyAV's errors are OSErrors too
            raise _os_error(e, f"cannot write {self.target}") from e
        except ValueError as e:  # no container for the name
            raise OutputError(f"cannot write {self.target}: {e}") from e
        try:
            rate = self._rate_out
            # a conform stamps frame n at n × 1/target; otherwise frames keep their own times
            time_base = self._conform.time_base if self._conform is not None else first.time_base
            vs = out.add_stream(ch.codec, rate=rate, options=ch.options)
            vs.width, vs.height, vs.pix_fmt = w, h, ch.pix_fmt
            vs.time_base = time_base
            if self.spec.sar != 1:
                # the container's (MP4 pasp, Matroska display size) and the bitstream's (H.264/HEVC VUI)
                vs.sample_aspect_ratio = vs.codec_context.sample_aspect_ratio = self.spec.sar
            rate_frames = max(MIN_CHUNK_FRAMES, round(CHUNK_SECONDS * rate))
            workers = self._workers(w, h, rate_frames)
            threads = self.options.encoder.threads or (max(1, (os.cpu_count() or 1) // workers) if workers else 0)
            self._configure(vs.codec_context, time_base, threads)
            # on every frame too: some encoders write the frame's tags into the bitstream, not the stream's
            # (prores_ks's frame header: without these a ProRes output decodes as unspecified primaries/transfer)
            self._frame_tags = {a: getattr(vs.codec_context, a) for a in _COLOUR_ATTRS}
            if workers:
                chunk = rate_frames

                def make_context() -> av.codec.context.CodecContext:
                    ctx = av.CodecContext.create(ch.codec, "w")
                    ctx.width, ctx.height, ctx.pix_fmt, ctx.framerate = w, h, ch.pix_fmt, rate
                    ctx.options = dict(ch.options)
                    ctx.flags |= av.codec.context.Flags.global_header  # SPS/PPS in the container, as `vs` has
                    if self.spec.sar != 1:
                        ctx.sample_aspect_ratio = self.spec.sar
                    self._configure(ctx, time_base, threads)
                    return ctx

                self._chunked = ChunkedEncoder(make_context, workers=workers, chunk_frames=chunk, time_base=time_base)
                self.stats.parallel = f"{workers} encoders × {threads} threads, chunks of {chunk} frames"
                log.info("encode: %s in parallel chunks (%s)", ch.codec, self.stats.parallel)
            self._vs = vs
            if self.options.trim is not None:
                self._shift = first.pts[0]
            if self.source is not None and self.options.copy_streams and not self.png:
                self._copy = _StreamCopier(
                    self.source, out, self.stats, self._trim_span(first.time_base), self._conform, self._scale
                )
            elif self.source is not None and self.png and len(self.source.streams) > 1:
                self._warn("png sequence output holds video only; audio/subtitle streams are not written")
            self._out = out
        except BaseException:
            out.close()
            raise

    def _trim_span(self, time_base: Fraction) -> tuple[Fraction, Fraction | None] | None:
        """(source time of the first frame, output time where the video will end or None) of a trimmed output;
        None when not trimmed. The end is that of the last frame before `Trim.end` or of the `max_frames`th, at
        the stream's rate: the chapters need it before any frame is known, and copied packets are muxed ahead
        of the video (the copier stops at the video's true end if that comes sooner)."""
        trim = self.options.trim
        if trim is None:
            return None
        offset = self._shift * time_base
        rate, out_rate = self._rate_in, self._rate_out
        ends = [Fraction(math.ceil((trim.end - offset) * rate)) / out_rate] if trim.end is not None else []
        if trim.max_frames is not None:
            ends.append(trim.max_frames / out_rate)
        return offset, min(ends, default=None)

    def _workers(self, width: int, height: int, chunk_frames: int) -> int:
        """Parallel chunk encoders: asked for, or `auto` (0 = one ordinary encoder)."""
        asked = self.options.encode_workers
        if self.png or self.choice.codec not in CHUNKABLE:
            return 0
        if asked is not None:
            return asked if asked > 1 else 0
        return auto_workers(self.choice, width, height, chunk_frames, os.cpu_count() or 1)

    def _configure(self, cc: av.codec.context.CodecContext, time_base: Fraction, threads: int) -> None:
        cc.time_base = time_base
        if threads:
            cc.thread_count = threads
        c = self.colour
        if not self.png and not self.choice.pix_fmt.startswith(("yuv", "gray", "ya")):
            # RGB output carries no YUV matrix and is full range whatever the source's YUV was
            cc.color_range, cc.colorspace = 2, 0
            c = Colour(primaries=c.primaries, transfer=c.transfer, matrix="unknown", range="pc")
        cc.color_range = 2 if c.range == "pc" else 1
        for attr, table, name in (
            ("colorspace", MATRIX, c.matrix),
            ("color_primaries", PRIMARIES, c.primaries),
            ("color_trc", TRANSFER, c.transfer),
        ):
            code = code_of(table, name)
            if code is not None:  # unknown stays unspecified rather than guessed
                setattr(cc, attr, code)

    def _warn(self, msg: str) -> None:
        log.warning("encode: %s", msg)
        self.stats.warnings.append(msg)

    # -- frames --
    def _frames(self, batch: FrameBatch) -> Iterator[av.VideoFrame]:
        data = batch.data
        if data.is_floating_point():
            raise OutputError("writer expects integer frames (uint8/uint16); a stage returned float data")
        if batch.alpha and not self.choice.alpha:
            if not self.spec.alpha and not self._alpha_warned:
                self._alpha_warned = True  # resolve() warned of or refused the alpha it knew of; this one it did not
                self._warn("frames carry alpha but the stream was declared without it; the alpha channel is dropped")
            data = data[:, :3]
        if self.spec.crop_to:
            cw, ch = self.spec.crop_to
            data = data[:, :, :ch, :cw]
        if self.stats.padded:
            pw, ph = self.stats.padded
            if data.shape[3] < pw:
                data = torch.cat([data, data[:, :, :, -1:].expand(-1, -1, -1, pw - data.shape[3])], dim=3)
            if data.shape[2] < ph:
                data = torch.cat([data, data[:, :, -1:, :].expand(-1, -1, ph - data.shape[2], -1)], dim=2)
        alpha = int(data.shape[1]) == 4
        deep = data.dtype == torch.uint16
        fmt = rgb_format(16 if deep else 8, alpha)
        nhwc = data.permute(0, 2, 3, 1).cpu()
        arr = nhwc.numpy() if not deep else nhwc.view(torch.int16).numpy().view(np.uint16)
        target = self.choice.pix_fmt
        kwargs: dict[str, str] = {"format": target}
        if not self.png:
            kwargs |= {
                "dst_colorspace": sws_matrix(self.colour),
                "dst_color_range": "JPEG" if self.colour.range == "pc" else "MPEG",
            }
        for i in range(arr.shape[0]):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[i]), format=fmt)
            frame = frame.reformat(**kwargs)
            if alpha:
                write_alpha(frame, arr[i, :, :, 3])  # swscale rounds a YUV alpha plane off by a level
            self._stamp(frame, batch.pts[i], batch.time_base)
            yield frame

    def _planar_frames(self, batch: PlanarBatch) -> Iterator[av.VideoFrame]:
        if batch.ready is not None:  # the asynchronous download into this host buffer
            batch.ready.synchronize()
        for i in range(len(batch)):
            # a chunk encoder takes the frame later, after the pooled buffer is reused: give it its own copy
            row = batch.data[i].clone() if self._chunked is not None else batch.data[i]
            frame = frame_from_planes(row, batch.fmt)
            self._stamp(frame, batch.pts[i], batch.time_base)
            yield frame

    def _stamp(self, frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        """The frame's colour tags and output time: its own (moved back for a trimmed output), or under a conform
        the next slot of the target rate's grid (its source time checked against the constant-rate timeline)."""
        for attr, value in self._frame_tags.items():
            setattr(frame, attr, value)
        if self._conform is None or self._rate_check is None:
            frame.pts, frame.time_base = pts - self._shift, time_base
            return
        self._rate_check.check(pts * time_base)
        frame.pts, frame.time_base = self._rate_check.count - 1, self._conform.time_base

    def write(self, batch: FrameBatch | PlanarBatch) -> None:
        if self._out is None:
            self._open(batch)
        assert self._out is not None and self._vs is not None
        frames = self._planar_frames(batch) if isinstance(batch, PlanarBatch) else self._frames(batch)
        trim = self.options.trim
        try:
            for frame in frames:
                if trim is not None:
                    if trim.max_frames is not None and self.stats.frames >= trim.max_frames:
                        break  # the pipeline stops sending; frames already on their way are not written
                    self._video_end = frame.pts * frame.time_base + 1 / self._rate_out
                if self._chunked is not None:
                    self._chunked.encode(frame)
                    for pkt in self._chunked.ready():
                        self._mux_video(pkt)
                else:
                    if self._copy is not None:
                        self._copy.until(frame.pts * frame.time_base + INTERLEAVE_AHEAD_S)
                    self._out.mux(self._vs.encode(frame))
                    if self.stats.frames == 0 and self._vs.codec_context.name in REALTIME_ENCODERS:
                        drop_realtime_scheduling()  # the encoder opened on the first frame (see REALTIME_ENCODERS)
                self.stats.frames += 1
        except av.error.FFmpegError as e:
            raise _ffmpeg_error(e, f"encoding {self.target.name} failed") from e
        finally:
            if isinstance(batch, PlanarBatch):  # the encoder has taken (copied) every frame of the buffer
                batch.done()

    def close(self) -> WriterStats:
        """Flush the encoder, mux what is left of the copied streams, and move the file into place."""
        if self._closed:
            return self.stats
        if self._out is None:
            raise OutputError(f"no frames were produced for {self.target}")
        try:
            assert self._vs is not None
            if self._chunked is not None:
                for pkt in self._chunked.finish():
                    self._mux_video(pkt)
            else:
                self._out.mux(self._vs.encode())
            if self._copy is not None:
                if self.options.trim is not None:
                    self._copy.stop_at(self._video_end)
                self._copy.until(None)
            self._out.close()
        except av.error.FFmpegError as e:
            self.abort()
            raise _ffmpeg_error(e, f"finishing {self.target.name} failed") from e
        finally:
            if self._copy is not None:
                self._copy.close()
        self._closed = True
        try:
            if self.png and self.target.is_dir():
                self._clear_own_frames()
            self.tmp.replace(self.target)
        except OSError as e:
            self.abort()
            raise _os_error(e, f"moving the finished output into place as {self.target} failed") from e
        return self.stats

    def _clear_own_frames(self) -> None:
        """Empty the PNG folder of this writer's earlier frames (checked again: it may have changed since the
        writer was made); the empty folder is then replaced by the new one."""
        frames = _own_frames(self.target)
        if frames is None:
            _refuse(self.target, png=True)  # raises, naming why
            return
        for f in frames:
            f.unlink()
        self.target.rmdir()

    def _mux_video(self, pkt: av.Packet) -> None:
        assert self._out is not None and self._vs is not None
        if self._copy is not None and pkt.pts is not None:
            self._copy.until(pkt.pts * pkt.time_base + INTERLEAVE_AHEAD_S)
        pkt.stream = self._vs
        self._out.mux(pkt)

    def abort(self) -> None:
        """Drop everything written so far; the target is left untouched."""
        self._closed = True
        if self._chunked is not None:
            self._chunked.cancel()
        for closable in (self._copy, self._out):
            if closable is not None:
                try:
                    closable.close()
                except Exception as e:  # the file is removed anyway; say why closing failed
                    log.debug("abort: closing %s failed: %s", closable, e)
        try:
            if self.tmp.is_dir():
                shutil.rmtree(self.tmp)
            else:
                self.tmp.unlink(missing_ok=True)
        except OSError as e:  # a read-only or vanished file system: the error that brought us here says more
            log.warning("could not remove the partial output %s: %s", self.tmp, e.strerror or e)


def encoder_rate(codec: str, rate: int) -> int:
    """The sample rate to encode `rate` audio at: its own where the encoder takes it, else the nearest higher one
    it does (Opus, WebM's codec, takes 8/12/16/24/48 kHz only: 44.1 kHz goes up to 48), else its highest. PyAV's
    encoder resamples the frames to it."""
    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)


class _StreamCopier:
    """Copies the source's non-video streams into `out`, interleaved by time with the video. Output time is
    (source time - `offset`) × `scale`: a trimmed output moves back by its offset, a conform scales."""

    def __init__(
        self,
        source: MediaInfo,
        out: av.container.OutputContainer,
        stats: WriterStats,
        span: tuple[Fraction, Fraction | None] | None = None,
        conform: Conform | None = None,
        scale: Fraction = Fraction(1),
    ) -> None:
        self.stats = stats
        self.src = av.open(source.path, "r", metadata_errors="replace")
        self.out = out
        #: trimmed output (`Trim`): source time that becomes t=0, and the output time where copying stops
        self.trimmed = span is not None
        self.offset, self.stop = span or (Fraction(0), None)
        #: a conform: every audio track stretched and re-encoded, other packets and chapters re-timed
        self.conform, self.scale = conform, scale
        self.retimed = self.trimmed or scale != 1
        self.stretch: dict[int, AudioStretch] = {}
        fmt = out.format.name.split(",")[0]
        supported = out.supported_codecs
        self.map: dict[int, av.stream.Stream] = {}
        self.transcode: dict[int, tuple[av.codec.context.CodecContext, av.stream.Stream]] = {}
        #: per re-encoded stream: packets its decoder refused
        self._undecodable: dict[int, int] = {}
        out.metadata.update({k: v for k, v in self.src.metadata.items() if k.lower() != "encoder"})
        chapters = self.src.chapters()
        if self.retimed:
            chapters = self._moved_chapters(chapters)
        if chapters:
            try:
                out.set_chapters(chapters)
            except (av.error.FFmpegError, ValueError) as e:
                self._drop(f"chapters ({e})")
        video_index = source.video.index
        for s in self.src.streams:
            if s.index == video_index:
                continue
            label = f"#{s.index} {s.type}"
            if s.type == "video":
                self._drop(f"{label} (extra video stream)")
                continue
            if s.type == "attachment":
                if fmt == "matroska":
                    out.add_attachment(s.name, s.mimetype, bytes(s.data))
                    stats.copied.append(f"{label} {s.name}")
                else:
                    self._drop(f"{label} {s.name} (container {fmt} holds no attachments)")
                continue
            codec = s.codec_context.name if s.type in ("audio", "subtitle") else None
            if codec is None:
                self._drop(f"{label} (data streams are not copied)")
                continue
            if s.type == "audio" and conform is not None:
                target = encoder_for(conform, codec, supported, _AUDIO_FALLBACK.get(fmt, "aac"))
                self._transcode(s, label, target, f"stretched × {scale} ({conform.pitch} pitch)")
                self.stretch[s.index] = AudioStretch(scale, conform.pitch, self._output_time)
            elif codec in supported:
                o = out.add_stream_from_template(s)
                self._meta(s, o)
                self.map[s.index] = o
                stats.copied.append(f"{label} {codec}" + (f" ({s.language})" if s.language else ""))
            elif s.type == "audio":
                self._transcode(s, label, _AUDIO_FALLBACK.get(fmt, "aac"), f"{fmt} cannot hold {codec}")
            else:
                self._drop(f"{label} {codec} (container {fmt} cannot hold it; use .mkv)")
        wanted = [self.src.streams[i] for i in [*self.map, *self.transcode]]
        if self.offset > TRIM_SEEK_MARGIN_S:  # from a keyframe a little before the part: packets before it are dropped
            self.src.seek(int((self.offset - TRIM_SEEK_MARGIN_S) * av.time_base))
        self._packets: Iterator[av.Packet] | None = self.src.demux(*wanted) if wanted else None
        self._pending: av.Packet | None = None

    def _transcode(self, s: av.stream.Stream, label: str, target: str, why: str) -> None:
        """Re-encode audio stream `s` to `target` (at a sample rate the encoder takes; a conform's bit rate, else
        the track's where known, Opus's per channel)."""
        dec = s.codec_context
        rate = encoder_rate(target, dec.sample_rate)
        o = self.out.add_stream(target, rate=rate)
        o.layout = dec.layout
        asked = self.conform.audio_bitrate if self.conform is not None else None
        if asked is not None:
            o.bit_rate = asked
        elif target == "libopus":
            o.bit_rate = OPUS_BPS_PER_CHANNEL * dec.layout.nb_channels
        elif self.conform is not None and dec.bit_rate:
            o.bit_rate = dec.bit_rate
        self._meta(s, o)
        self.transcode[s.index] = (dec, o)
        resampled = f" at {rate} Hz (from {dec.sample_rate})" if rate != dec.sample_rate else ""
        msg = f"{label} {dec.name} re-encoded to {target}{resampled}: {why}"
        log.info("encode: %s", msg)
        self.stats.reencoded.append(msg)

    def _output_time(self, t: Fraction) -> Fraction:
        return (t - self.offset) * self.scale

    def _drop(self, what: str) -> None:
        msg = f"stream not written: {what}"
        log.warning("encode: %s", msg)
        self.stats.dropped.append(what)
        self.stats.warnings.append(msg)

    @staticmethod
    def _meta(src: av.stream.Stream, dst: av.stream.Stream) -> None:
        # Matroska's per-stream statistics tags (DURATION, NUMBER_OF_FRAMES, …) describe the old file
        dst.metadata.update({k: v for k, v in src.metadata.items() if not k.isupper()})
        dst.disposition = src.disposition

    def _moved_chapters(self, chapters: list[Any]) -> list[Any]:
        """Chapters on the output's timeline: moved back by a trim's offset and clipped to the part (empty ones
        dropped), scaled by a conform."""
        kept = []
        for ch in chapters:
            tb = ch["time_base"]
            start = max(Fraction(0), self._output_time(ch["start"] * tb))
            end = self._output_time(ch["end"] * tb)
            if self.stop is not None:
                end = min(end, self.stop)
            if end > start:
                kept.append({**ch, "start": round(start / tb), "end": round(end / tb)})
        return kept

    def stop_at(self, t: Fraction) -> None:
        """A trimmed output's video ends at output time t: no copied packet starts at or after it."""
        self.stop = t if self.stop is None else min(self.stop, t)

    def _outside(self, pkt: av.Packet) -> bool | None:
        """Whether a packet falls outside a trimmed output's span (None: past it, with room for interleaving)."""
        start = self._output_time((pkt.pts if pkt.pts is not None else pkt.dts) * pkt.time_base)
        if self.stop is not None and start >= self.stop:
            return None if start >= self.stop + TRIM_LATE_S else True
        return start < 0

    def until(self, t: Fraction | None) -> None:
        """Mux copied packets whose time is ≤ t seconds of the output (all of them when t is None)."""
        if self._packets is None:
            return
        while True:
            pkt = self._pending
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    self._packets = None
                    self._flush_transcoders()
                    return
            if pkt.dts is None and pkt.pts is None:
                self._pending = None  # demuxer flush packets carry nothing
                continue
            ts = pkt.dts if pkt.dts is not None else pkt.pts
            if t is not None and self._output_time(ts * pkt.time_base) > t:
                self._pending = pkt
                return
            self._pending = None
            if self.trimmed:
                outside = self._outside(pkt)
                if outside is None:  # every stream is past the part: stop demuxing
                    self._packets = None
                    self._flush_transcoders()
                    return
                if outside:
                    continue
            if self.retimed and pkt.stream.index not in self.stretch:  # a stretch stamps its own output
                pkt = self._move(pkt)
            self._mux(pkt)

    def _move(self, pkt: av.Packet) -> av.Packet:
        """A copied packet onto the output's timeline (in its own time base)."""
        shift = round(self.offset / pkt.time_base)
        if pkt.pts is not None:
            pkt.pts = round((pkt.pts - shift) * self.scale)
        if pkt.dts is not None:
            pkt.dts = round((pkt.dts - shift) * self.scale)
        if self.scale != 1:
            pkt.duration = round(pkt.duration * self.scale)
            if pkt.stream.codec_context.name == "dvdsub":  # its display end is inside the packet
                retimed = av.Packet(retime_spu(bytes(pkt), self.scale))
                retimed.pts, retimed.dts, retimed.duration = pkt.pts, pkt.dts, pkt.duration
                retimed.time_base, retimed.stream = pkt.time_base, pkt.stream
                return retimed
        return pkt

    def _mux(self, pkt: av.Packet) -> None:
        idx = pkt.stream.index
        if idx in self.map:
            pkt.stream = self.map[idx]
            self.out.mux(pkt)
            return
        dec = self.transcode[idx][0]
        try:
            frames = dec.decode(pkt)
        except av.error.InvalidDataError as e:
            # a damaged packet (Megamind.avi's first AC3 one): re-encode what decodes, count what does not
            self._undecodable[idx] = self._undecodable.get(idx, 0) + 1
            self.stats.audio_dropped_packets += 1
            log.debug("encode: audio packet of #%d at %s did not decode: %s", idx, pkt.pts, e)
            return
        for frame in frames:
            self._encode_audio(idx, frame)

    def _encode_audio(self, idx: int, frame: av.AudioFrame | None) -> None:
        """Encode a decoded frame of stream `idx` (through its stretch under a conform; None: flush that)."""
        enc = self.transcode[idx][1]
        stretch = self.stretch.get(idx)
        if stretch is not None:
            for out in stretch.push(frame):
                self.out.mux(enc.encode(out))
            return
        if frame is None:
            return
        if frame.pts is not None and frame.time_base is not None:
            # keep the track's start offset: restamp in samples of the encoder's rate
            frame.pts = round(frame.pts * frame.time_base * frame.sample_rate)
            frame.time_base = Fraction(1, frame.sample_rate)
        self.out.mux(enc.encode(frame))

    def _flush_transcoders(self) -> None:
        for idx, (dec, enc) in self.transcode.items():
            for frame in dec.decode(None):
                self._encode_audio(idx, frame)
            self._encode_audio(idx, None)
            self.out.mux(enc.encode(None))
            if idx in self._undecodable:
                n = self._undecodable[idx]
                msg = f"#{idx} audio {dec.name}: {n} damaged packets did not decode and were dropped"
                log.warning("encode: %s", msg)
                self.stats.warnings.append(msg)

    def close(self) -> None:
        self.src.close()
