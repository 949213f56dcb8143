"""`vidpipe bench io`: decode and encode speed, pipeline overhead against a bare PyAV loop, and host RSS over a
long run. Prints a markdown section (and appends it to a file when asked) with machine, date and commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..media.encoders import EncoderOptions
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.synth import ClipSpec, cached_clip
from ..media.writer import WriterOptions
from ..runtime.pipeline import RunOptions, run, versions
from ..stages.resize import Resize

#: 1080p input, as the issue's overhead target is stated at 1080p
SIZE = (1920, 1080)
RATE = Fraction(30)
#: frames used for each isolated encoder figure (slow encoders make longer runs pointless here)
ENCODE_FRAMES = 60
ENCODE_PRESETS = ("h264", "hevc", "av1", "vp9", "prores", "ffv1")
#: the loop compared against the pipeline: x264 at the speed users pick for throughput
LOOP_CODEC, LOOP_SPEED = "libx264", "veryfast"


def _commit() -> str:
    """The commit measured: `VIDPIPE_COMMIT` (set where the tree travels without .git), else git's HEAD."""
    if os.environ.get("VIDPIPE_COMMIT"):
        return os.environ["VIDPIPE_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def _bare_decode(path: Path, to_rgb: bool) -> int:
    n = 0
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for frame in c.decode(vs):
            if to_rgb:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n


def _reader_decode(path: Path) -> int:
    with VideoReader(probe(path), ReaderOptions(batch_size=8)) as r:
        return sum(len(b) for b in r)


def _bare_loop(src: Path, dst: Path, rgb: bool) -> int:
    """decode → (RGB ndarray → frame) → encode, one thread, the loop a user would write with PyAV."""
    n = 0
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        enc = out.add_stream(LOOP_CODEC, rate=vs.average_rate, options={"crf": "18", "preset": LOOP_SPEED})
        enc.width, enc.height, enc.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        enc.time_base = vs.time_base
        enc.codec_context.time_base = vs.time_base
        for frame in c.decode(vs):
            if rgb:
                arr = frame.to_ndarray(format="rgb24")
                f2 = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
                f2.pts, f2.time_base = frame.pts, frame.time_base
                frame = f2
            else:
                frame.pict_type = av.video.frame.PictureType.NONE  # let x264 place its own keyframes
            out.mux(enc.encode(frame))
            n += 1
        out.mux(enc.encode())
    return n


def _encode_only(frames: np.ndarray, preset: str, dst_dir: Path) -> float:
    import torch

    from ..frames import Colour, FrameBatch
    from ..media.writer import VideoWriter
    from ..stages.base import StreamSpec

    suffix = ".mov" if preset == "prores" else ".mkv"
    spec = StreamSpec(width=SIZE[0], height=SIZE[1], time_base=1 / RATE, nominal_rate=RATE)
    w = VideoWriter(
        dst_dir / f"enc-{preset}{suffix}",
        spec,
        Colour(matrix="bt709"),
        None,
        WriterOptions(encoder=EncoderOptions(encoder=preset)),
    )  # type: ignore[arg-type]
    data = torch.from_numpy(frames).permute(0, 3, 1, 2)
    t0 = time.perf_counter()
    for i in range(0, len(frames), 8):
        w.write(FrameBatch(data=data[i : i + 8], pts=list(range(i, min(i + 8, len(frames)))), time_base=1 / RATE))
    w.close()
    return len(frames) / (time.perf_counter() - t0)


class _RssSampler:
    def __init__(self, interval: float = 0.25) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @staticmethod
    def rss_mb() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
        return 0

    def _run(self, interval: float) -> None:
        # a sample at the start and one at the end (below) besides every `interval`: a run shorter than one
        # interval had none, and its peak read 0 (tests/bench/test_bench_vsr.py's tiny baseline, now and then)
        self._t0 = time.monotonic()
        self._sample()
        while not self._stop.wait(interval):
            self._sample()

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._t0, self.rss_mb()))

    def __enter__(self) -> _RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def run_io_bench(*, seconds: float, rss_seconds: float, work_dir: Path, markdown: Path | None) -> str:
    work_dir.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * RATE)
    src = work_dir / f"bench-1080p-{frames}.mp4"
    cached_clip(
        src,
        ClipSpec(size=SIZE, rate=RATE, frames=frames, source="testsrc2", options={"crf": "18", "preset": "veryfast"}),
    )
    rows: list[str] = []

    n, t = _timed(lambda: _bare_decode(src, to_rgb=False))
    rows.append(f"| decode, bare PyAV (yuv frames) | {n / t:.1f} |")
    n, t = _timed(lambda: _bare_decode(src, to_rgb=True))
    rows.append(f"| decode, bare PyAV + to RGB ndarray | {n / t:.1f} |")
    n, t = _timed(lambda: _reader_decode(src))
    rows.append(f"| decode, vidpipe VideoReader (RGB uint8 batches) | {n / t:.1f} |")

    with av.open(str(src)) as c:
        sample = np.stack(
            [f.to_ndarray(format="rgb24") for _, f in zip(range(ENCODE_FRAMES), c.decode(video=0), strict=False)]
        )
    for preset in ENCODE_PRESETS:
        rows.append(f"| encode {preset} (vidpipe writer, defaults) | {_encode_only(sample, preset, work_dir):.1f} |")

    n, t_yuv = _timed(lambda: _bare_loop(src, work_dir / "loop-yuv.mp4", rgb=False))
    rows.append(f"| bare PyAV decode→encode, frames passed as YUV ({LOOP_CODEC} {LOOP_SPEED}) | {n / t_yuv:.1f} |")
    n, t_rgb = _timed(lambda: _bare_loop(src, work_dir / "loop-rgb.mp4", rgb=True))
    loop_fps = n / t_rgb
    rows.append(f"| bare PyAV decode→RGB→encode ({LOOP_CODEC} {LOOP_SPEED}) | {loop_fps:.1f} |")
    opts = RunOptions(
        device="cpu",
        progress="none",
        writer=WriterOptions(encoder=EncoderOptions(encoder="h264", crf=18, speed=LOOP_SPEED)),
    )
    res = run(src, work_dir / "pipe-identity.mp4", [], opts)
    rows.append(f"| vidpipe identity pipeline (same encoder) | {res.fps:.1f} |")
    ratio = res.fps / loop_fps

    rss_lines: list[str] = []
    if rss_seconds > 0:
        long_frames = int(rss_seconds * RATE)
        long_src = work_dir / f"bench-1080p-{long_frames}.mp4"
        cached_clip(
            long_src,
            ClipSpec(
                size=SIZE,
                rate=RATE,
                frames=long_frames,
                source="testsrc2",
                options={"crf": "23", "preset": "ultrafast"},
            ),
        )
        ropts = RunOptions(
            device="cpu",
            progress="none",
            writer=WriterOptions(encoder=EncoderOptions(encoder="h264", speed="ultrafast")),
        )
        with _RssSampler() as s:
            r2 = run(long_src, work_dir / "rss-resize.mp4", [Resize(1280, 720)], ropts)
        tenth = [mb for t, mb in s.samples if t <= r2.wall_s * 0.1] or [s.samples[0][1]]
        rest = [mb for t, mb in s.samples if t > r2.wall_s * 0.1] or tenth
        rss_lines = [
            f"RSS over a {rss_seconds:.0f}-s 1080p run through `resize` to 720p ({r2.frames_out} frames, "
            f"{r2.fps:.1f} fps): peak in the first 10% {max(tenth)} MB, peak over the rest {max(rest)} MB, "
            f"last sample {s.samples[-1][1]} MB ({len(s.samples)} samples).",
        ]

    v = versions()
    head = [
        f"### bench io — {dt.date.today().isoformat()}, commit {_commit()}",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"PyAV {v['av']} / FFmpeg {v['ffmpeg']}, torch {v['torch']}.",
        f"Input: generated testsrc2 {SIZE[0]}x{SIZE[1]} @ {RATE} fps, {frames} frames, H.264. "
        f"Command: `vidpipe bench io --seconds {seconds:g} --rss-seconds {rss_seconds:g}`.",
        "",
        "| measurement | frames/s |",
        "|---|---:|",
    ]
    tail = ["", f"Identity pipeline / bare RGB loop: **{ratio:.1%}** (target ≥ 90%).", *rss_lines, ""]
    text = "\n".join(head + rows + tail)
    print(text)
    if markdown is not None:
        with markdown.open("a") as f:
            f.write("\n" + text + "\n")
    return text
