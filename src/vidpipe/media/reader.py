"""VideoReader: a decode thread that yields `FrameBatch`es of RGB(A) tensors.

Memory is bounded by `queue_size × batch_size` frames. 8-bit sources give uint8, deeper sources uint16
(0..65535 whatever the depth). Frames are rotated upright when the stream carries a display rotation (the
output then has swapped dimensions and no rotation tag). Each tensor is N×C×H×W in channels-last memory,
the layout convolution nets run fastest in.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
import av.logging
import numpy as np
import torch

from ..errors import CorruptInputError, InputError, TruncatedInputError, UsageError
from ..frames import Colour, FrameBatch
from .alpha import read_alpha
from .buffers import HostBuffers
from .deinterlace import Bwdif, Deinterlace
from .info import MediaInfo
from .probe import _LIBVPX_ALPHA, open_input
from .threads import Producer
from .yuv import PLANAR_FORMATS, PlanarBatch, PlanarFormat, copy_frame_planes

log = logging.getLogger(__name__)

OnCorrupt = Literal["fail", "skip"]
HwAccel = Literal["none", "auto", "cuda"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderOptions:
    batch_size: int = 8
    queue_size: int = 4
    on_corrupt: OnCorrupt = "fail"
    #: "cuda"/"auto" try PyAV's cuvid decoder for the codec; "auto" falls back silently to software, "cuda"
    #: falls back with a warning (decoding on the CPU is always correct, only slower)
    hwaccel: HwAccel = "none"
    #: decoder threads; 0 lets FFmpeg pick from the core count
    threads: int = 0
    #: keep the alpha plane (RGBA) when the source has one
    keep_alpha: bool = True
    #: hand over 4:2:0 sources as packed YUV planes (`PlanarBatch`) for conversion on the device; sources with
    #: alpha, a rotation or another layout still come as RGB
    planar: bool = False
    #: page-locked host buffers (planar batches), for fast asynchronous copies to a CUDA device
    pin_memory: bool = False
    #: read from this time on (seconds): seek to the keyframe at or before it, drop frames before it
    start: Fraction | None = None
    #: stop after the first frame at or after this time (seconds); that frame is still given, as look-ahead
    #: context for stages such as interpolation (a segment's last pair)
    end: Fraction | None = None
    #: deinterlace (FFmpeg's bwdif: media/deinterlace.py): `auto` an interlaced source, `tff`/`bff` every frame
    #: with that field order; one frame per frame (the source's pts) or per field. `off`: an interlaced source is
    #: warned of and its woven frames go on as they are
    deinterlace: Deinterlace = field(default_factory=Deinterlace)


@dataclass(slots=True)
class ReaderStats:
    frames: int = 0
    corrupt_skipped: int = 0
    #: non-empty video packets demuxed: after damage, the decoder may drop frames without a word
    packets: int = 0
    decoder: str = ""
    warnings: list[str] = field(default_factory=list)


#: semi-planar layouts hardware decoders emit instead of the stream's planar format
_HW_LAYOUTS = ("nv12", "p010le", "p016le")
#: packets read ahead (compressed, held in memory) to tell a container whose presentation times are copies of its
#: decode times: a correct mux of a reordering codec offsets pts from dts within its first frames
STAMP_SAMPLE_PACKETS = 32


def pts_copy_dts(reorders: bool, head: Sequence[tuple[int | None, int | None]]) -> bool:
    """Whether a stream's first packets (pts, dts) say its pts are copies of its dts although its codec reorders
    frames (`has_b_frames`): an MP4 muxed without composition offsets (VLC 2.x's stream output, for one). Its
    frames' times then come from the packets in order, which a seek loses."""
    stamped = [(p, d) for p, d in head if p is not None]
    return reorders and bool(stamped) and all(p == d for p, d in stamped)


#: how far (in frame durations) a step between frames may be from a whole number of frames on a constant-rate
#: time line with holes
GRID_TOLERANCE = 0.1


@dataclass(slots=True)
class _Timeline:
    """The frames given, as a time line: whether every step is a whole number of nominal frame durations (a
    constant-rate stream, holes allowed), and how many frames such a line spans."""

    first: int | None = None
    last: int | None = None
    on_grid: bool = True

    def add(self, pts: int, step: Fraction) -> None:
        if self.last is not None:
            k = (pts - self.last) / step
            self.on_grid = self.on_grid and abs(k - round(k)) <= GRID_TOLERANCE
        if self.first is None:
            self.first = pts
        self.last = pts

    def spanned(self, step: Fraction) -> int | None:
        if not self.on_grid or self.first is None or self.last is None:
            return None
        return round((self.last - self.first) / step) + 1


def default_matrix(colour: Colour, height: int) -> Colour:
    """Fill in an unspecified YUV matrix the way players do (BT.709 for HD, BT.601 below), so that the
    reader's YUV→RGB and the writer's RGB→YUV agree and the output is tagged with what was assumed."""
    if colour.matrix != "unknown":
        return colour
    from dataclasses import replace

    return replace(colour, matrix="bt709" if height >= 720 else "smpte170m")


# swscale's names for the matrices we pass as src/dst colorspace
_SWS_MATRIX = {
    "bt709": "itu709",
    "bt470bg": "itu601",
    "smpte170m": "smpte170m",
    "smpte240m": "smpte240m",
    "fcc": "fcc",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}


def sws_matrix(colour: Colour) -> str:
    return _SWS_MATRIX.get(colour.matrix, "itu601")


def rgb_format(bit_depth: int, alpha: bool) -> str:
    if bit_depth > 8:
        return "rgba64le" if alpha else "rgb48le"
    return "rgba" if alpha else "rgb24"


class VideoReader:
    """Iterate to get batches; `stats` fills in as decoding goes. Use as a context manager or call close()."""

    def __init__(
        self, info: MediaInfo, options: ReaderOptions = ReaderOptions(), check: Callable[[], None] | None = None
    ) -> None:
        self.info = info
        self.options = options
        self.stats = ReaderStats()
        self._timeline = _Timeline()
        #: error-level messages of the demuxer (the first few): damage it skipped without raising
        self._demux_errors: list[str] = []
        v = info.video
        self.alpha = v.alpha and options.keep_alpha
        self.colour = default_matrix(v.colour, v.height)
        self.rgb_format = rgb_format(v.colour.bit_depth, self.alpha)
        self.dtype = torch.uint16 if v.colour.bit_depth > 8 else torch.uint8
        # counter-clockwise quarter turns that make the picture upright
        self._turns = (v.rotation // 90) % 4
        self.deinterlace = options.deinterlace.runs_on(v)
        #: frames out per decoded frame (2: one per field) and the time base they are stamped in
        self._per_frame = options.deinterlace.frames_per_frame(v)
        self.time_base = v.time_base / self._per_frame
        if v.interlaced and not self.deinterlace:
            msg = (
                f"interlaced source ({v.field_order}) processed as progressive frames: each holds two fields a "
                "field apart and the stages see the combing; use --deinterlace"
            )
            log.warning("decode: %s: %s", Path(info.path).name, msg)
            self.stats.warnings.append(msg)
        elif options.deinterlace.order == "auto" and not v.interlaced:
            log.info("decode: %s is progressive (%s); --deinterlace has nothing to do", Path(info.path).name,
                     v.field_order)  # fmt: skip
        self.planar: PlanarFormat | None = None
        if options.planar and v.pix_fmt in PLANAR_FORMATS and not self._turns and not self.alpha:
            self.planar = PlanarFormat(v.pix_fmt, v.width, v.height)
        self._producer: Producer[FrameBatch | PlanarBatch] = Producer(
            f"decode:{Path(info.path).name}", self._decode, maxsize=options.queue_size, check=check or (lambda: None)
        )

    # -- decode thread --
    def _open_decoder(self, vs: av.video.stream.VideoStream) -> Callable[[av.Packet], list[av.VideoFrame]]:
        """Software decoder of the stream, or the codec's cuvid decoder when asked for and it opens here."""
        opts = self.options
        if opts.hwaccel != "none" and self.alpha:
            # NVDEC hands out nv12/p010: no alpha plane. The matte is the point of such a source: keep the CPU.
            msg = "hardware decode keeps no alpha plane; decoding on the CPU to keep the source's alpha"
            (log.warning if opts.hwaccel == "cuda" else log.info)("decode: %s", msg)
            if opts.hwaccel == "cuda":
                self.stats.warnings.append(msg)
        elif opts.hwaccel != "none":
            name = f"{vs.codec_context.name}_cuvid"
            try:
                hw = av.codec.CodecContext.create(name, "r")
                hw.extradata = vs.codec_context.extradata
                hw.width, hw.height = vs.codec_context.width, vs.codec_context.height
                hw.open()
                self.stats.decoder = f"{name} (NVDEC)"
                log.info("decode: %s on NVDEC (%s)", Path(self.info.path).name, name)
                return hw.decode
            except (av.error.FFmpegError, av.codec.codec.UnknownCodecError, ValueError) as e:
                msg = f"hardware decode ({name}) unavailable here ({e}); decoding on the CPU"
                (log.warning if opts.hwaccel == "cuda" else log.info)("decode: %s", msg)
                if opts.hwaccel == "cuda":
                    self.stats.warnings.append(msg)
        libvpx = _LIBVPX_ALPHA.get(vs.codec_context.name)
        if self.alpha and libvpx:
            dec = av.codec.CodecContext.create(libvpx, "r")
            dec.extradata = vs.codec_context.extradata
            dec.thread_count = opts.threads  # libvpx's own threads; 0: one per core (up to 16)
            self.stats.decoder = f"{libvpx} (CPU, for the alpha plane)"
            log.info("decode: %s on the CPU with %s (keeps alpha)", Path(self.info.path).name, libvpx)
            return dec.decode
        cc = vs.codec_context
        cc.thread_type = "AUTO"
        cc.thread_count = opts.threads
        self.stats.decoder = f"{cc.name} (CPU, threads={'auto' if opts.threads == 0 else opts.threads})"
        log.info("decode: %s on the CPU with %s", Path(self.info.path).name, cc.name)
        return vs.decode

    def _decode(self, emit: Callable[[FrameBatch | PlanarBatch], None]) -> None:
        if self.planar is not None:
            self._decode_planar(emit)
            return
        tb = self.time_base
        n_batch = self.options.batch_size
        buf: np.ndarray | None = None
        pts: list[int] = []
        index: list[int] = []

        def flush_batch() -> None:
            nonlocal buf
            if not pts:
                return
            arr = buf[: len(pts)]  # type: ignore[index]
            data = torch.from_numpy(arr).permute(0, 3, 1, 2)  # NHWC storage = channels-last NCHW view
            if self._turns:
                data = torch.rot90(data, self._turns, dims=(2, 3)).contiguous(memory_format=torch.channels_last)
            emit(FrameBatch(data=data, pts=list(pts), time_base=tb, colour=self.colour, index=list(index)))
            buf = None  # the emitted batch owns that memory now
            pts.clear()
            index.clear()

        kwargs = {
            "format": self.rgb_format,
            "src_colorspace": sws_matrix(self.colour),
            "src_color_range": "JPEG" if self.colour.range == "pc" else "MPEG",
        }
        for p, frame in self._frames():
            arr = frame.to_ndarray(**kwargs)
            if arr.ndim == 2:  # some formats return planar gray
                arr = np.repeat(arr[..., None], 3, axis=2)
            if self.alpha:
                exact = read_alpha(frame, arr.dtype)  # swscale widens a YUV alpha plane by shifting
                if exact is not None:
                    arr[..., 3] = exact
            if buf is None:
                buf = np.empty((n_batch, *arr.shape), dtype=arr.dtype)
            buf[len(pts)] = arr
            pts.append(p)
            index.append(self.stats.frames)
            self.stats.frames += 1
            if len(pts) == n_batch:
                flush_batch()
        flush_batch()
        self._check_complete()

    def _frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames in order with their pts (in `self.time_base`), deinterlaced when asked for (`_decoded`
        tells the rest)."""
        if not self.deinterlace:
            yield from self._decoded()
            return
        bwdif = Bwdif(self.options.deinterlace, self.info.video, self.info.video.time_base)
        for p, frame in self._decoded():
            yield from bwdif.push(p, frame)
            if bwdif.args and "bwdif" not in self.stats.decoder:
                self.stats.decoder += f" + deinterlaced (bwdif {bwdif.args})"
        yield from bwdif.finish()

    def _decoded(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames in order with their pts; damaged ones and non-increasing times go to `_corrupt`."""
        v = self.info.video
        tb = v.time_base
        step = 1 / (v.rate * tb)  # pts ticks per frame, for sources that stamp no pts
        last_pts: int | None = None
        given = 0  # frames given so far (a deinterlacer after this holds some back: not `stats.frames`)
        with open_input(Path(self.info.path)) as c:
            vs = c.streams.video[0]
            decode = self._open_decoder(vs)
            # AVI stores no presentation times: with B-frames the pts FFmpeg guesses come out of order. Every
            # AVI index entry is one frame at the stream rate, so frames are stamped by count there.
            count_stamps = c.format.name == "avi"
            packets, stamps = self._packets_and_stamps(c, vs, count_stamps)
            check_landing = self._seek(c, vs, count_stamps or stamps is not None)
            if check_landing:
                packets = self._packets(c, vs)  # from the seek point, not the read-ahead
            try:
                for packet in packets:
                    if packet.size:
                        self.stats.packets += 1
                    if stamps is not None and packet.pts is not None:
                        heapq.heappush(stamps, packet.pts)
                    try:
                        frames = decode(packet)
                    except av.error.InvalidDataError as e:
                        self._corrupt(f"undecodable packet at pts {packet.pts}: {e.strerror}")
                        continue
                    for frame in frames:
                        if check_landing:
                            self._check_landing(frame, tb)
                            check_landing = False
                        if self._before_start(frame, tb):
                            continue
                        # taken before the damage check: a damaged frame still holds its place on the time line
                        stamp = heapq.heappop(stamps) if stamps else None
                        if frame.is_corrupt:
                            self._corrupt(f"damaged frame at pts {frame.pts}")
                            continue
                        p = None if count_stamps else (frame.pts if frame.pts is not None else frame.dts)
                        if stamp is not None:
                            p = stamp
                        if p is None:  # no usable timestamps: count frames at the nominal rate
                            p = round(given * step + v.start_time / tb)
                        if last_pts is not None and p <= last_pts:
                            self._corrupt(f"non-increasing pts {p} after {last_pts}")
                            continue
                        self._timeline.add(int(p), step)
                        last_pts = int(p)
                        if frame.format.name != v.pix_fmt and frame.format.name in _HW_LAYOUTS:
                            # NVDEC hands out nv12/p010; repacking to the source's planar layout first (lossless)
                            # gives the same RGB conversion, bit for bit, as the CPU path
                            frame = frame.reformat(format=v.pix_fmt)
                        given += 1
                        yield int(p), frame
                        if self.options.end is not None and p * tb >= self.options.end:
                            return  # the look-ahead frame is out (the decoder is drained below)
            finally:
                # however the walk ends (the window's end, the consumer gone, an error), the decoder's worker
                # threads are idle before the container frees it (see `_drain`); after the end of the file
                # this is a no-op
                self._drain(decode)

    def _decode_planar(self, emit: Callable[[FrameBatch | PlanarBatch], None]) -> None:
        """The same walk as `_decode`, copying each frame's planes as they are into pooled host buffers."""
        fmt = self.planar
        assert fmt is not None
        opts = self.options
        # queued batches + one being filled + one being uploaded, so the decoder never waits on the pool itself
        # batches dropped unreleased by close() never come back: waiting on the pool must see the close too
        check = self._producer.raise_if_cancelled
        pool = HostBuffers(fmt.elements, fmt.dtype, opts.queue_size + 3, pin=opts.pin_memory, check=check)
        buf: torch.Tensor | None = None
        pts: list[int] = []
        index: list[int] = []

        def flush_batch() -> None:
            nonlocal buf
            if not pts:
                return
            b = buf
            assert b is not None
            emit(
                PlanarBatch(
                    data=b[: len(pts)],
                    fmt=fmt,
                    pts=list(pts),
                    time_base=self.time_base,
                    colour=self.colour,
                    index=list(index),
                    release=lambda event, b=b: pool.put(b, event),  # type: ignore[misc]
                )
            )
            buf = None
            pts.clear()
            index.clear()

        for p, frame in self._frames():
            if frame.format.name != fmt.pix_fmt or (frame.width, frame.height) != (fmt.width, fmt.height):
                frame = frame.reformat(format=fmt.pix_fmt, width=fmt.width, height=fmt.height)
            if buf is None:
                buf = pool.get(opts.batch_size)
            copy_frame_planes(frame, fmt, buf[len(pts)])
            pts.append(p)
            index.append(self.stats.frames)
            self.stats.frames += 1
            if len(pts) == opts.batch_size:
                flush_batch()
        flush_batch()
        self._check_complete()

    def _packets_and_stamps(
        self, c: av.container.InputContainer, vs: av.video.stream.VideoStream, count_stamps: bool
    ) -> tuple[Iterator[av.Packet], list[int] | None]:
        """The stream's packets, and an empty heap of presentation times when the container's pts cannot be used.

        Some muxers (VLC 2.x's stream output, for one) write a reordering codec's frames with pts equal to dts
        (MP4 without composition offsets). The decoder still returns frames in display order, but each carries
        the pts of whichever packet completed it, so the times come out of order. The frames' real times are then
        the packets' times in increasing order: the caller pushes each packet's pts as it is demuxed and gives
        each decoded frame the smallest one left (exact for such files, VFR included). A frame the decoder never
        returns leaves its time unused: the count check at the end still reports it. The read-ahead that tells
        such a container is `STAMP_SAMPLE_PACKETS` packets, taken only for codecs that reorder."""
        packets = self._packets(c, vs)
        if count_stamps or not vs.codec_context.has_b_frames:
            return packets, None
        head = list(itertools.islice(packets, STAMP_SAMPLE_PACKETS))
        copies = pts_copy_dts(True, [(p.pts, p.dts) for p in head])
        if copies:
            log.info("decode: %s: pts are copies of dts (no composition offsets); frames stamped in display "
                     "order with the packets' times", Path(self.info.path).name)  # fmt: skip
        return itertools.chain(head, packets), [] if copies else None

    def _packets(self, c: av.container.InputContainer, vs: av.video.stream.VideoStream) -> Iterator[av.Packet]:
        """Demux the video stream; a damaged container tail is corruption, not a crash."""
        it = c.demux(vs)
        while True:
            # The demuxer's own log, caught on this thread only (decoder threads still log to the run's capture):
            # a demuxer that resyncs past damaged data says so at error level and nowhere else.
            with av.logging.Capture(local=True) as logs:
                try:
                    packet = next(it)
                except StopIteration:
                    packet = None
                except av.error.InvalidDataError as e:
                    self._corrupt(f"container damaged after frame {self.stats.frames}: {e.strerror}")
                    packet = None
            for level, name, message in logs:
                text = f"{name}: {message.strip()}"
                if level <= av.logging.ERROR and len(self._demux_errors) < 3:
                    self._demux_errors.append(text)
                if text not in self.stats.warnings:
                    self.stats.warnings.append(text)
            if packet is None:
                return
            yield packet  # the final empty packet flushes the decoder

    def _corrupt(self, what: str) -> None:
        if self.options.on_corrupt == "fail":
            raise CorruptInputError(
                f"{self.info.path}: {what} (use --on-corrupt skip to drop damaged frames and go on)"
            )
        self.stats.corrupt_skipped += 1
        if self.stats.corrupt_skipped <= 3:
            log.warning("decode: %s; skipped", what)

    # -- time range --
    def _seek(self, c: av.container.InputContainer, vs: av.video.stream.VideoStream, no_pts: bool) -> bool:
        """Seek to the keyframe at or before `options.start`; whether it did. `no_pts`: frames are stamped by
        their place in the stream (AVI, or pts copied from dts), which a seek loses."""
        start = self.options.start
        if start is None:
            return False
        if no_pts:
            why = "AVI stores no presentation times" if c.format.name == "avi" else "its pts are copies of its dts"
            raise UsageError(f"{self.info.path}: {why}, so it cannot be read from {start}s")
        c.seek(math.floor(start / self.info.video.time_base), stream=vs, backward=True, any_frame=False)
        return True

    def _check_landing(self, frame: av.VideoFrame, tb: Fraction) -> None:
        """The first frame after a seek must not lie after `start` (unless the stream begins later): an index
        that lands late would silently lose the frames in between."""
        start, v = self.options.start, self.info.video
        ts = frame.pts if frame.pts is not None else frame.dts
        if start is not None and ts is not None and ts * tb > start > v.start_time:
            raise InputError(
                f"{self.info.path}: seeking to {float(start):.3f}s landed at {float(ts * tb):.3f}s (inaccurate "
                "index); process it without segments"
            )

    @staticmethod
    def _drain(decode: Callable[[av.Packet], list[av.VideoFrame]]) -> None:
        """Stopping before the end of the file: flush the decoder first, as the end of the file would, so its
        worker threads are idle when it is freed (a worker logging through FFmpeg's Python log callback while
        the decoder is freed under the GIL deadlocks both). The frames it still gives are not needed."""
        with contextlib.suppress(av.error.FFmpegError):
            decode(None)  # type: ignore[arg-type]  # no packet: end of stream, flush

    def _before_start(self, frame: av.VideoFrame, tb: Fraction) -> bool:
        """Frames before `options.start` are dropped before any other check: frames decoded right after a seek
        may reference pictures that were never decoded."""
        start = self.options.start
        if start is None:
            return False
        ts = frame.pts if frame.pts is not None else frame.dts
        if ts is None:
            raise CorruptInputError(f"{self.info.path}: a frame without timestamps after seeking to {start}s")
        return bool(ts * tb < start)

    def _check_complete(self) -> None:
        if self.options.start is not None or self.options.end is not None:
            return  # a time range reads part of the file on purpose
        v = self.info.video
        decoded = self.stats.frames // self._per_frame  # source frames (one per field deinterlaced: two out each)
        if v.frames_exact and v.frames and decoded + self.stats.corrupt_skipped < v.frames:
            missing = v.frames - decoded - self.stats.corrupt_skipped
            what = (
                f"{missing} of {v.frames} frames lost after damage (the decoder never returned them)"
                if self.stats.corrupt_skipped
                else f"{missing} of {v.frames} frames missing at the end (file cut short?)"
            )
            if self.options.on_corrupt == "fail":
                raise TruncatedInputError(f"{self.info.path}: {what}; use --on-corrupt skip to go on without them")
            self.stats.corrupt_skipped += missing
            self.stats.warnings.append(what)
            log.warning("decode: %s", what)
        if not self.stats.corrupt_skipped and not self._demux_errors:
            return
        # After damage, frames can be lost without a word: a threaded decoder drops those beside a damaged frame
        # (how many depends on thread timing), a demuxer resyncs past a damaged cluster (the container's own
        # count then misses them too). Containers hold one packet per frame, and a constant-rate time line shows
        # its holes; whatever neither count covers yet is counted here. Only after damage: without it, fewer
        # frames than packets (packed B-frames) or a time line with holes (variable-rate recordings) are normal.
        step = 1 / (v.rate * v.time_base)
        for expected, where in (
            (self.stats.packets, "packets read"),
            (self._timeline.spanned(step), "the time line"),
        ):
            dropped = (expected or 0) - decoded - self.stats.corrupt_skipped
            if dropped > 0 and self.options.on_corrupt == "fail":
                raise CorruptInputError(
                    f"{self.info.path}: damaged frames: {dropped} lost (counted from {where}) where the demuxer "
                    f"skipped damaged data ({'; '.join(self._demux_errors)}); use --on-corrupt skip to go on"
                )
            if dropped > 0:
                self.stats.corrupt_skipped += dropped
                what = f"{dropped} more frames lost after damage (counted from {where})"
                self.stats.warnings.append(what)
                log.warning("decode: %s", what)

    # -- consumer side --
    def __iter__(self) -> Iterator[FrameBatch | PlanarBatch]:
        return iter(self._producer)

    @property
    def busy_s(self) -> float:
        """Seconds the decode thread worked (demux, decode, conversion), not waiting for room in its queue."""
        return self._producer.busy_s

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
