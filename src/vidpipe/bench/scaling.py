"""`vidpipe bench scaling`: one worker against N on the same input (issue 19 item 4; issue 20 measures it on
several GPUs).

Two cases, each run by the worker pool (`vidpipe.workers`) with one worker, then with N:
  long    one long generated clip (default 1080p, 180 s, a keyframe every 2 s), split at keyframes across the N
          workers and joined; the one-worker run processes it whole;
  short   16 short generated clips of mixed sizes (360p to 1080p), whole videos handed out longest first.
Both runs pay the same start-up (spawned workers importing torch and loading the models), so the speed-up is
the end-to-end figure a user sees. Outputs are encoded losslessly (H.264 `--lossless` by default) so the N-worker
output can be compared with the one-worker output frame for frame (decoded side by side, never held whole).

What bounded a run, in seconds: `start` (the slowest worker's spawn until it could take items), `busy` (the
busiest worker's item seconds) against the mean (`imbalance` = busiest − mean), `join` (the segments' stream copy),
and `decode` (the long input decoded alone in this process, once: a worker can go no faster than its share of
that). The bound named is the largest of start, imbalance, join and decode ÷ N (the ideal N-worker time being the
one-worker busy time ÷ N).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch

from ..media.encoders import EncoderOptions
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.synth import ClipSpec, cached_clip
from ..media.writer import WriterOptions
from ..runtime.inputs import Job
from ..runtime.pipeline import RunOptions
from ..schedule.chain import ScheduleOptions
from ..workers.devices import WorkerSlot
from ..workers.pool import PoolResult, RecipeStages, run_pool
from .crossvideo import SOURCES

Case = Literal["long", "short"]
CASES: tuple[Case, ...] = ("long", "short")
#: the short case's sizes, cycled over its clips: mixed, so LPT has something to order
SHORT_SIZES: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (960, 540), (1920, 1080))
#: a keyframe every 2 s at 25 fps: segments can start every 2 s
LONG_GOP = {"g": "50", "keyint_min": "50", "sc_threshold": "0"}

HEADER = (
    "| case | stages | workers | videos | frames out | wall s | frames/s | speed-up | of N | start s | busy s "
    "(max/mean) | join s | decode s | identical | bounded by |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
)


@dataclass(frozen=True, slots=True)
class ScalingRow:
    case: Case
    stages: str
    workers: int
    videos: int
    frames_out: int
    wall_s: float
    start_s: float
    busy_max_s: float
    busy_mean_s: float
    join_s: float
    decode_s: float | None
    speedup: float | None = None
    identical: bool | None = None
    bound: str = ""

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def row(self) -> str:
        speed = f"{self.speedup:.2f}×" if self.speedup is not None else "1 (baseline)"
        of_n = f"{self.speedup / self.workers:.2f}" if self.speedup is not None else ""
        same = {None: "", True: "yes", False: "**no**"}[self.identical]
        decode = f"{self.decode_s:.1f}" if self.decode_s is not None else ""
        return (
            f"| {self.case} | {self.stages} | {self.workers} | {self.videos} | {self.frames_out} | {self.wall_s:.1f} | "
            f"{self.fps:.1f} | {speed} | {of_n} | {self.start_s:.1f} | {self.busy_max_s:.1f}/{self.busy_mean_s:.1f} | "
            f"{self.join_s:.2f} | {decode} | {same} | {self.bound} |"
        )


def long_clip(work_dir: Path, size: tuple[int, int], seconds: float) -> Path:
    frames = round(seconds * 25)
    return cached_clip(
        work_dir / f"scaling-long-{size[0]}x{size[1]}-{frames}.mp4",
        ClipSpec(size=size, rate=Fraction(25), frames=frames, options=dict(LONG_GOP)),
    )


def short_clips(work_dir: Path, count: int, frames: int, sizes: Sequence[tuple[int, int]] = SHORT_SIZES) -> list[Path]:
    out = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        spec = ClipSpec(size=(w, h), rate=Fraction(25), frames=frames, source=SOURCES[i % len(SOURCES)])
        out.append(cached_clip(work_dir / f"scaling-short-{i}-{w}x{h}-{frames}.mp4", spec))
    return out


def decode_seconds(path: Path) -> float:
    """Seconds to decode `path` to RGB alone, in this process (what one worker's reader does for all of it)."""
    t0 = time.perf_counter()
    with VideoReader(probe(path), ReaderOptions()) as r:
        for _ in r:
            pass
    return time.perf_counter() - t0


def same_frames(a: Path, b: Path) -> bool:
    """Two videos decode to the same frames (times and pixels), batch by batch."""
    with VideoReader(probe(a), ReaderOptions()) as ra, VideoReader(probe(b), ReaderOptions()) as rb:
        left = iter(_frames(ra))
        for ta, fa in _frames(rb):
            tb, fb = next(left, (None, None))
            if tb != ta or fb is None or not torch.equal(fa, fb):
                return False
        return next(left, None) is None


def _frames(reader: VideoReader) -> Any:
    for b in reader:
        for i, t in enumerate(b.times()):
            yield t, b.data[i]


def _row(case: Case, what: str, res: PoolResult, decode_s: float | None) -> ScalingRow:
    busy = [w.busy_s for w in res.workers]
    return ScalingRow(
        case=case,
        stages=what,
        workers=len(res.workers),
        videos=len(res.videos),
        frames_out=res.frames_out,
        wall_s=res.wall_s,
        start_s=max((max(w.ready_s) for w in res.workers if w.ready_s), default=0.0),
        busy_max_s=max(busy),
        busy_mean_s=sum(busy) / len(busy),
        join_s=res.join_s,
        decode_s=decode_s,
    )


def _bound(row: ScalingRow) -> str:
    parts = {
        "start-up": row.start_s,
        "imbalance": row.busy_max_s - row.busy_mean_s,
        "join": row.join_s,
        "decode": (row.decode_s or 0.0) / row.workers,
    }
    name, seconds = max(parts.items(), key=lambda kv: kv[1])
    return f"{name} ({seconds:.1f} s)"


def run_scaling(
    slots: Sequence[WorkerSlot],
    values: dict[str, Any],
    *,
    cases: Sequence[Case] = CASES,
    long_size: tuple[int, int] = (1920, 1080),
    long_seconds: float = 180.0,
    short_count: int = 16,
    short_frames: int = 120,
    short_sizes: Sequence[tuple[int, int]] = SHORT_SIZES,
    encoder: str = "h264",
    work_dir: Path = Path(".cache/bench"),
    executor: Literal["local", "ray"] = "local",
) -> list[ScalingRow]:
    """One-worker and N-worker rows for each case (see the module docstring); N = len(slots). `executor="ray"`:
    N Ray actors instead of local worker processes (a local cluster unless one is initialised)."""
    what = ", ".join(f"{k} {v}" for k, v in values.items() if v not in (None, False)) or "copy"
    make = RecipeStages(values)
    opts = RunOptions(
        progress="none",
        writer=WriterOptions(encoder=EncoderOptions(encoder=encoder, lossless=encoder != "ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(skip_finished=False),
    )
    src_dir, out_dir = work_dir / "scaling", work_dir / "scaling-out"
    one = [WorkerSlot(0, slots[0].device, slots[0].gpu, 1)]
    rows: list[ScalingRow] = []
    what += " (Ray)" if executor == "ray" else ""
    for case in cases:
        if case == "long":
            inputs = [long_clip(src_dir, long_size, long_seconds)]
            decode_s: float | None = decode_seconds(inputs[0])
        else:
            inputs = short_clips(src_dir, short_count, short_frames, short_sizes)
            decode_s = None
        results: list[tuple[PoolResult, Path]] = []
        for run_slots in (one, list(slots)):
            where = out_dir / f"{case}-{len(run_slots)}"
            shutil.rmtree(where, ignore_errors=True)
            jobs = [Job(p, where / f"{p.stem}.mkv") for p in inputs]
            if executor == "ray":
                from ..workers.ray_executor import run_ray

                results.append((run_ray(jobs, make, opts, workers=len(run_slots)), where))
            else:
                results.append((run_pool(jobs, make, opts, run_slots), where))
        (base, base_dir), (many, many_dir) = results
        identical = all(same_frames(base_dir / f"{p.stem}.mkv", many_dir / f"{p.stem}.mkv") for p in inputs)
        row = replace(
            _row(case, what, many, decode_s),
            speedup=base.wall_s / many.wall_s if many.wall_s > 0 else None,
            identical=identical,
        )
        rows += [_row(case, what, base, decode_s), replace(row, bound=_bound(row))]
    return rows
