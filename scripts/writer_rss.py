"""Host memory and throughput of the video writer's parallel chunk encoders (issue 18).

Feeds the real `VideoWriter` (as `vidpipe run` does on CUDA: packed 4:2:0 `PlanarBatch`es) generated frames, a
panning gradient with a little noise so the encoder has work, and samples the process's RSS.

    PYTHONPATH=src python scripts/writer_rss.py throttled --size 4096x1728 --fps 8 --seconds 30 --cores 16
    PYTHONPATH=src python scripts/writer_rss.py throughput --size 1920x1080 --workers 1 2 4 --frames 150
    PYTHONPATH=src python scripts/writer_rss.py encoder-memory --size 4096x1728 --codec h264:veryfast

`--cores N` makes `os.cpu_count()` answer N, so the writer's auto sizing (encoder count, threads per encoder)
is the one of an N-core host; the encoding itself still runs on this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidpipe.bench.io import _RssSampler
from vidpipe.frames import Colour, StreamSpec
from vidpipe.media.chunked import ChunkedEncoder
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import VideoWriter, WriterOptions
from vidpipe.media.yuv import PlanarBatch, PlanarFormat

#: the source rate of `vidpipe bench vsr`'s input (bench/vsr.py SEED_RATE): 50-frame chunks
RATE = Fraction(25)
#: columns the picture pans per frame, and the canvas's extra width to pan over
PAN, PAN_SPAN = 6, 512
#: frames per `write` call (the pipeline downloads a window in pieces; a few frames each here)
BATCH = 4


def _canvas(width: int, height: int) -> np.ndarray:
    """Packed I420 rows (height·3/2 × width + PAN_SPAN): smooth waves plus ±6 levels of noise."""
    rows, cols = height * 3 // 2, width + PAN_SPAN
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    waves = 128 + 60 * np.sin(x / 37.0) * np.cos(y / 23.0) + 40 * np.sin((x + 2 * y) / 91.0)
    waves += np.random.default_rng(0).integers(-6, 7, (rows, cols)).astype(np.float32)
    return np.clip(waves, 0, 255).astype(np.uint8)


def _batches(
    canvas: np.ndarray, fmt: PlanarFormat, frames: int, fps: float | None, burst: int
) -> Iterator[PlanarBatch]:
    """`frames` frames of `canvas` in batches of BATCH, at `fps` frames a second on average (None: as fast as
    they are taken), `burst` at a time (a windowed model hands over its window's frames at once)."""
    t0 = time.monotonic()
    for start in range(0, frames, BATCH):
        n = min(BATCH, frames - start)
        data = torch.empty(n, fmt.elements, dtype=torch.uint8)
        for i in range(n):
            off = ((start + i) * PAN) % PAN_SPAN
            data[i] = torch.from_numpy(np.ascontiguousarray(canvas[:, off : off + fmt.width]).reshape(-1))
        if fps is not None:
            due = (start // burst + 1) * burst if burst > BATCH else start + n
            delay = t0 + due / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield PlanarBatch(data=data, fmt=fmt, pts=list(range(start, start + n)), time_base=1 / RATE)


def _writer(out: Path, size: tuple[int, int], encoder: EncoderOptions, workers: int | None) -> VideoWriter:
    w, h = size
    spec = StreamSpec(width=w, height=h, time_base=1 / RATE, nominal_rate=RATE)
    return VideoWriter(out, spec, Colour(matrix="bt709"), None, WriterOptions(encoder=encoder, encode_workers=workers))


def _slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over the second half of the samples (the first half holds the ramp-up)."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    t = np.array([s[0] for s in half])
    mb = np.array([s[1] for s in half], dtype=np.float64)
    return float(np.polyfit(t, mb, 1)[0] * 60)


class _Contexts:
    """Counts the chunk encoders at work at once (each holds its codec context from start to end of `_work`)."""

    def __init__(self) -> None:
        self.alive = self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def install(self) -> None:
        work = ChunkedEncoder._work

        def counted(enc: ChunkedEncoder, chunk: Any) -> Any:
            with self._lock:
                self.alive += 1
                self.most = max(self.most, self.alive)
                self.threads.add(threading.current_thread().name)
            try:
                return work(enc, chunk)
            finally:
                with self._lock:
                    self.alive -= 1

        ChunkedEncoder._work = counted  # type: ignore[method-assign]


CONTEXTS = _Contexts()


def run_feed(
    size: tuple[int, int],
    frames: int,
    fps: float | None,
    workers: int | None,
    encoder: EncoderOptions,
    burst: int = 1,
    timeline: float = 0.0,
) -> dict[str, object]:
    """Write `frames` frames through a fresh writer; RSS (MB) before, peak, last, slope; fps; encoder layout."""
    fmt = PlanarFormat("yuv420p", *size)
    canvas = _canvas(*size)
    with tempfile.TemporaryDirectory() as tmp:
        writer = _writer(Path(tmp) / "out.mkv", size, encoder, workers)
        base = _RssSampler.rss_mb()
        t0 = time.perf_counter()
        with _RssSampler() as rss:
            for batch in _batches(canvas, fmt, frames, fps, burst):
                writer.write(batch)
            stats = writer.close()
        wall = time.perf_counter() - t0
        size_mb = (Path(tmp) / "out.mkv").stat().st_size / 1e6
    if timeline:
        marks = [f"{t:.0f}s {mb}" for i, (t, mb) in enumerate(rss.samples) if i % max(1, round(timeline / 0.25)) == 0]
        print("RSS MB over time: " + ", ".join(marks))
    return {
        "base": base,
        "peak": max(mb for _, mb in rss.samples),
        "last": rss.samples[-1][1],
        "slope": _slope_mb_per_min(rss.samples),
        "fps": frames / wall,
        "wall": wall,
        "parallel": stats.parallel or "one encoder",
        "contexts_at_once": CONTEXTS.most,
        "pool_threads": len(CONTEXTS.threads),
        "out_mb": size_mb,
    }


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _encoder(text: str) -> EncoderOptions:
    """`preset[:speed]`, e.g. h264:veryfast, hevc, vp9, prores."""
    preset, _, speed = text.partition(":")
    return EncoderOptions(encoder=preset, speed=speed or None)  # type: ignore[arg-type]


def _workers(text: str) -> int | None:
    return None if text == "auto" else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=0, help="make os.cpu_count() answer this (0: the real count)")
    sub = ap.add_subparsers(dest="mode", required=True)
    th = sub.add_parser("throttled", help="frames at a fixed rate, RSS over time")
    th.add_argument("--size", type=_size, default=(4096, 1728))
    th.add_argument("--fps", type=float, default=8.0)
    th.add_argument("--seconds", type=float, default=30.0)
    th.add_argument("--workers", type=_workers, default=None, help="auto or a count (--encode-workers)")
    th.add_argument("--codec", type=_encoder, default=_encoder("h264:veryfast"))
    th.add_argument("--burst", type=int, default=1, help="frames handed over at once (a model's window)")
    th.add_argument("--timeline", type=float, default=5.0, help="print RSS every this many seconds (0: never)")
    tp = sub.add_parser("throughput", help="frames as fast as the writer takes them, per encoder count")
    tp.add_argument("--size", type=_size, default=(1920, 1080))
    tp.add_argument("--frames", type=int, default=150)
    tp.add_argument("--workers", type=_workers, nargs="+", default=[1, 2, 4])
    tp.add_argument("--codec", type=_encoder, default=_encoder("h264:veryfast"))
    em = sub.add_parser("encoder-memory", help="one encoder's RSS over the frames it is given, per pixel")
    em.add_argument("--size", type=_size, default=(1920, 1080))
    em.add_argument("--codec", default="h264:veryfast")
    em.add_argument("--frames", type=int, default=60)
    em.add_argument("--threads", type=int, default=4, help="encoder threads (4: one of 4 encoders on 16 cores)")
    em.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    CONTEXTS.install()
    if a.cores:
        os.cpu_count = lambda: a.cores  # type: ignore[assignment]
    torch.set_num_threads(1)
    print(f"# this machine: {len(os.sched_getaffinity(0))} cores; os.cpu_count() answers {os.cpu_count()}")

    if a.mode == "throttled":
        shown = "auto" if a.workers is None else a.workers
        frames = round(a.seconds * a.fps)
        r = run_feed(a.size, frames, a.fps, a.workers, a.codec, a.burst, a.timeline)
        print(
            f"throttled {a.size[0]}x{a.size[1]} {frames} frames at {a.fps:g} fps in bursts of {a.burst}, "
            f"workers {shown} "
            f"({r['parallel']}): RSS before {r['base']} MB, peak {r['peak']} MB, last {r['last']} MB, "
            f"slope over the second half {r['slope']:+.0f} MB/min; {r['fps']:.1f} fps taken; "
            f"{r['contexts_at_once']} encoders at work at most, on {r['pool_threads']} pool threads"
        )
    elif a.mode == "throughput":
        for workers in a.workers:
            r = run_feed(a.size, a.frames, None, workers, a.codec)
            shown = "auto" if workers is None else workers
            print(
                f"throughput {a.size[0]}x{a.size[1]} {a.frames} frames, workers {shown} "
                f"({r['parallel']}): {r['fps']:.2f} fps, peak RSS {r['peak']} MB (before {r['base']} MB)"
            )
    elif not a.isolated:  # each encoder in a fresh process: freed memory of one does not hide the next's
        cmd = [sys.executable, __file__, "encoder-memory", "--isolated", "--size", f"{a.size[0]}x{a.size[1]}"]
        cmd += ["--codec", a.codec, "--frames", str(a.frames), "--threads", str(a.threads)]
        subprocess.run(cmd, check=True)
    else:
        enc = _encoder(a.codec)
        enc = EncoderOptions(encoder=enc.encoder, speed=enc.speed, threads=a.threads)
        r = run_feed(a.size, a.frames, None, 0, enc)
        w, h = a.size
        delta = int(r["peak"]) - int(r["base"])  # type: ignore[call-overload]
        print(
            f"encoder-memory {a.codec} {w}x{h}, {a.threads} threads, {a.frames} frames: peak − before = {delta} MB "
            f"= {delta * 2**20 / (w * h):.0f} bytes/pixel ({r['fps']:.1f} fps)"
        )


if __name__ == "__main__":
    main()
