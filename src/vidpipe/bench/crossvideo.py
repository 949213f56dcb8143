"""`vidpipe bench crossvideo`: throughput of many small videos with cross-video micro-batches vs one by one.

The same generated clips (default 8 × 360p, 120 frames each, a different lavfi source per clip) are upscaled
three ways, after an untimed warm-up run that pays CUDA and cuDNN start-up:
  one by one     `pipeline.run` per clip, as a loop over `vidpipe run` calls would (the model is set up per clip);
  cross-video    `run_many`: every clip open at once, the upscale stage fed micro-batches of frames from up to 8
                 clips (seed 001 §0);
  no batching    `run_many` with cross-video batching off: the same rounds and threads, each clip's frames alone,
                 which separates the gain of batching from that of overlapping many decoders and encoders.
Figures are output frames per second of wall time, start-up and model loading included; colour conversion runs on
the CPU in all three (the multi-input runner does not convert on the device yet, so neither does the baseline).
Each clip's output of the cross-video run is then compared with its one-by-one output, frame by frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..media.encoders import EncoderOptions
from ..media.synth import ClipSpec, cached_clip
from ..media.writer import WriterOptions
from ..runtime.multi import Job, MultiResult, run_many
from ..runtime.pipeline import RunOptions, run
from ..schedule.chain import ScheduleOptions
from ..stages.base import Stage
from ..stages.upscale import Upscale
from ..testing import decode_all

#: lavfi sources the clips cycle through, so that no two neighbouring clips are the same picture
SOURCES = ("testsrc2", "smptehdbars", "mandelbrot", "rgbtestsrc", "testsrc", "yuvtestsrc", "pal100bars", "cellauto")


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    frames: int
    wall_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def row(self) -> str:
        return f"| {self.label} | {self.frames} | {self.wall_s:.2f} | {self.fps:.1f} |"


@dataclass(frozen=True, slots=True)
class CrossVideoReport:
    device: str
    one_by_one: Figure
    cross_video: Figure
    no_batching: Figure
    micro_batches: int
    mean_videos_per_micro_batch: float
    mean_frames_per_micro_batch: float
    #: largest absolute pixel difference between cross-video and one-by-one outputs (0: identical)
    max_diff: int

    def lines(self) -> list[str]:
        return [
            f"device: {self.device}",
            "| run | frames | wall s | frames/s |",
            "|---|---:|---:|---:|",
            self.one_by_one.row(),
            self.cross_video.row(),
            self.no_batching.row(),
            f"cross-video / one by one: {self.cross_video.fps / max(self.one_by_one.fps, 1e-9):.2f}×; "
            f"{self.micro_batches} micro-batches, {self.mean_videos_per_micro_batch:.1f} videos and "
            f"{self.mean_frames_per_micro_batch:.1f} frames each on average",
            f"outputs vs one by one: max pixel difference {self.max_diff}",
        ]


def make_clips(work_dir: Path, count: int, size: tuple[int, int], frames: int) -> list[Path]:
    work_dir.mkdir(parents=True, exist_ok=True)
    return [
        cached_clip(
            work_dir / f"xv-{i}-{size[0]}x{size[1]}-{frames}.mp4",
            ClipSpec(size=size, rate=Fraction(30), frames=frames, source=SOURCES[i % len(SOURCES)]),
        )
        for i in range(count)
    ]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_crossvideo(
    device: torch.device,
    *,
    model: str = "realesr-animevideov3-x2",
    clips: int = 8,
    size: tuple[int, int] = (640, 360),
    frames: int = 120,
    work_dir: Path = Path(".cache/bench"),
    speed: str = "veryfast",
) -> CrossVideoReport:
    sources = make_clips(work_dir / "crossvideo", clips, size, frames)
    out = work_dir / "crossvideo-out"
    opts = RunOptions(
        device=str(device),
        progress="none",
        colour_on_device="off",
        writer=WriterOptions(encoder=EncoderOptions(encoder="h264", speed=speed)),  # type: ignore[arg-type]
        schedule=ScheduleOptions(skip_finished=False),
    )

    def stages() -> list[Stage]:
        return [Upscale(model)]

    run(sources[0], out / "warm-up.mkv", stages(), opts)
    solo_dir, cross_dir, plain_dir = out / "one-by-one", out / "cross-video", out / "no-batching"
    t0 = time.perf_counter()
    solo_frames = sum(run(src, solo_dir / src.name, stages(), opts).frames_out for src in sources)
    solo = time.perf_counter() - t0
    results: dict[str, MultiResult] = {}

    def many(name: str, where: Path, cross: bool) -> None:
        results[name] = run_many([Job(s, where / s.name) for s in sources], stages(), opts, cross_video=cross)

    cross = _timed(lambda: many("cross", cross_dir, True))
    plain = _timed(lambda: many("plain", plain_dir, False))
    mbs = results["cross"].micro_batches
    diff = 0
    for src in sources:
        a, b = decode_all(solo_dir / src.name)[1], decode_all(cross_dir / src.name)[1]
        diff = max(diff, int((a.int() - b.int()).abs().max()) if a.shape == b.shape else 255)
    return CrossVideoReport(
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        one_by_one=Figure(f"one by one ({clips} × `pipeline.run`)", solo_frames, solo),
        cross_video=Figure("cross-video micro-batches (run_many)", results["cross"].frames_out, cross),
        no_batching=Figure("run_many, cross-video batching off", results["plain"].frames_out, plain),
        micro_batches=len(mbs),
        mean_videos_per_micro_batch=sum(len(set(m.videos)) for m in mbs) / max(1, len(mbs)),
        mean_frames_per_micro_batch=sum(m.frames for m in mbs) / max(1, len(mbs)),
        max_diff=diff,
    )
