"""Segment-parallel encoding: consecutive closed chunks of the stream, each encoded by its own encoder instance.

With no NVENC the CPU encoder is often the slowest stage, and one libx264 instance does not keep 16 cores
busy at 1080p–1440p (frame threads wait on each other's reference rows, the lookahead is one thread):
on the H100 host (16 cores, x264 veryfast, medians of 3) 4 instances × 4 threads encode 86 vs 81 fps at 1440p
and 118 vs 72 fps at 1080p against one instance with every thread (docs/benchmarks.md, "Pipeline").
Each chunk starts with an IDR (key) frame and is complete in itself, and every
instance has the same settings (hence the same SPS/PPS in the container's global header), so the chunks'
packets laid end to end in order are one valid stream: the join is lossless, no re-encode.

Memory is bounded: at most `workers + 1` chunks are open, each holding its not-yet-encoded frames.
Each finished chunk's encoder is freed, and the C heap trimmed after it (`trim_heap`): each pool thread's
glibc arena otherwise keeps much of the freed encoder's pages, so RSS climbs towards the sum of them all
(docs/benchmarks.md, "Writer host memory").
"""

from __future__ import annotations

import ctypes
import functools
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction

import av

#: codecs whose instances produce identical global headers and closed chunks (others encode in one instance):
#: x264/x265 (IDR per chunk), libvpx-vp9 (a chunk opens with a key frame; no global header; each packet carries
#: its alpha plane as side data, so WebM alpha survives the join) and prores_ks (intra-only). One libvpx instance
#: with alpha encodes two VP9 streams a frame and caps a 1080p matte run at 15 fps on the H100 host's 16 cores.
CHUNKABLE = ("libx264", "libx265", "libvpx-vp9", "prores_ks")

_END = object()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded into the process: its own libc's
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system; False where that cannot be done (no glibc).

    A large x264/x265 encoder (~560 MB at 4096×1728) takes much of its memory from glibc's arenas, in blocks
    below the mmap threshold (which rises to 32 MB as big blocks are freed); freed, those pages stay resident
    for reuse, one arena per pool thread. Measured: RSS rose from ~0.9 to ~1.25 GB over 10 chunks with one
    4096×1728 encoder at a time, and stayed at ~1 GB with this after each (docs/benchmarks.md)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class _Chunk:
    def __init__(self) -> None:
        self.frames: queue.Queue[object] = queue.Queue()
        self.count = 0
        self.future: Future[list[av.Packet]] | None = None


class ChunkedEncoder:
    """`encode(frame)` frames in presentation order; `ready()` yields packets of the leading finished chunks;
    `finish()` flushes and yields the rest. Packets come in stream order with the encoder's time base."""

    def __init__(
        self,
        make_context: Callable[[], av.codec.context.CodecContext],
        *,
        workers: int,
        chunk_frames: int,
        time_base: Fraction,
    ) -> None:
        self._make = make_context
        self.workers, self.chunk_frames, self.time_base = workers, chunk_frames, time_base
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="encode-chunk")
        self._chunks: deque[_Chunk] = deque()
        self._open: _Chunk | None = None
        self._last_dts: int | None = None
        self.chunks = 0
        self._lock = threading.Lock()

    def _work(self, chunk: _Chunk) -> list[av.Packet]:
        packets = self._encode(chunk)
        trim_heap()  # the chunk's encoder is gone with `_encode`'s frame: return its memory (module doc)
        return packets

    def _encode(self, chunk: _Chunk) -> list[av.Packet]:
        ctx = self._make()
        packets: list[av.Packet] = []
        while (frame := chunk.frames.get()) is not _END:
            packets += ctx.encode(frame)  # type: ignore[arg-type]
        packets += ctx.encode(None)
        return packets

    def encode(self, frame: av.VideoFrame) -> None:
        if self._open is None:
            # back-pressure: a new chunk waits until the oldest unfinished one is done
            while sum(1 for c in self._chunks if c.future is not None and not c.future.done()) > self.workers:
                next(c for c in self._chunks if c.future is not None and not c.future.done()).future.result()  # type: ignore[union-attr]
            chunk = _Chunk()
            chunk.future = self._pool.submit(self._work, chunk)
            self._chunks.append(chunk)
            self._open = chunk
            self.chunks += 1
        self._open.frames.put(frame)
        self._open.count += 1
        if self._open.count >= self.chunk_frames:
            self._close_open()

    def _close_open(self) -> None:
        if self._open is not None:
            self._open.frames.put(_END)
            self._open = None

    def _drain(self, wait: bool) -> Iterator[av.Packet]:
        while self._chunks:
            head = self._chunks[0]
            assert head.future is not None
            if head is self._open or (not wait and not head.future.done()):
                return
            self._chunks.popleft()
            for pkt in head.future.result():
                yield self._restamp(pkt)

    def _restamp(self, pkt: av.Packet) -> av.Packet:
        """Keep decode times strictly increasing across a chunk boundary (each instance starts its own dts
        count a few frames before its first pts; with a constant rate that never overlaps, with a variable
        one it can by a tick)."""
        pkt.time_base = self.time_base
        if pkt.dts is not None:
            if self._last_dts is not None and pkt.dts <= self._last_dts:
                pkt.dts = self._last_dts + 1
            self._last_dts = pkt.dts
        return pkt

    def ready(self) -> Iterator[av.Packet]:
        yield from self._drain(wait=False)

    def finish(self) -> Iterator[av.Packet]:
        self._close_open()
        yield from self._drain(wait=True)
        self._pool.shutdown()

    def cancel(self) -> None:
        for c in self._chunks:
            if c.future is not None:
                c.future.cancel()
            c.frames.put(_END)
        self._pool.shutdown(wait=True, cancel_futures=True)
