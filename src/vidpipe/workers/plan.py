"""What the workers get: whole videos, or segments of videos split at keyframes, ordered longest first.

- Expected cost (`expected_cost`): for each stage, the cost tables' latency per unit at the video's resolution
  bucket (`schedule.costs`: any model signature and device of that component, the mean; scaled by the area
  over the bucket's measured size) times its frames; a stage without a row counts frames × pixels at the mean
  per-pixel rate of the rows found, and a chain without any row is frames × pixels. Only the order matters
  (LPT: the longest item first, each worker taking the next when it finishes), so rows of another GPU serve.
- Splitting (`plan_videos`): with fewer videos than workers, each video is planned into segments by the jobs'
  planner (`jobs.driver.plan_input`: keyframes near multiples of the length, preferring an encoder's
  scene-cut keyframes, the cheap hard-cut signal already in the file; interpolation's grid; each fed the
  pre-roll/look-ahead the stages declare), about `SEGMENTS_PER_WORKER` per worker. A video that cannot split
  (the planner's reasons), a part of a video (`--start/--duration/--frames`), a conform, or an image sequence
  stays whole.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Final

from ..errors import VidpipeError
from ..jobs.driver import plan_input
from ..jobs.segments import Segment
from ..media.info import MediaInfo
from ..media.probe import probe
from ..runtime.inputs import Job
from ..runtime.pipeline import RunOptions, source_spec
from ..schedule.costs import TABLES_DIR, CostRow, bucket_for, load_dir
from ..stages.base import Stage

log = logging.getLogger(__name__)

#: segments planned per worker for a split video: enough for a worker that finishes early to take another,
#: few enough that each segment's pre-roll and its encoder's start stay small
SEGMENTS_PER_WORKER: Final = 4


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit a worker runs: a whole video into its output, or one segment of a video into its part file."""

    key: str
    video: int
    input: Path
    output: Path
    frames: int
    cost: float
    segment: Segment | None = None


@dataclass(slots=True)
class VideoPlan:
    """One input: its items (one whole item, or its segments in order) and, when split, where the parts go."""

    job: Job
    info: MediaInfo | None
    items: list[WorkItem] = field(default_factory=list)
    parts: Path | None = None
    #: why it could not be opened (the video is reported failed, nothing runs)
    error: VidpipeError | None = None

    @property
    def split(self) -> bool:
        return self.parts is not None


def _latencies(rows: Sequence[CostRow]) -> dict[tuple[str, int], float]:
    """Mean latency per pixel-normalised unit, by (component, bucket)."""
    found: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        area = r.input_bucket.width * r.input_bucket.height
        found[(r.component, r.input_bucket.short_side)].append(r.latency_ms_per_unit / area)
    return {k: sum(v) / len(v) for k, v in found.items()}


def expected_cost(
    info: MediaInfo, frames: int, components: Sequence[str], rows: Sequence[CostRow] | None = None
) -> float:
    """Relative cost of `frames` frames of `info`'s video through stages named `components` (module docstring)."""
    w, h = info.video.display_size
    pixels = frames * w * h
    table = _latencies(load_dir(TABLES_DIR, strict=False) if rows is None else rows)
    if not table:
        return float(pixels)
    bucket = bucket_for(w, h)
    mean = sum(table.values()) / len(table)
    cost = 0.0
    for name in components or ("copy",):
        at = [v for (c, b), v in table.items() if c == name and b == bucket] or [
            v for (c, _), v in table.items() if c == name
        ]
        cost += (sum(at) / len(at) if at else mean) * pixels
    return cost


def lpt_order(items: Sequence[WorkItem]) -> list[WorkItem]:
    """Longest expected cost first (ties: input order), the order the workers take items in."""
    return sorted(items, key=lambda it: -it.cost)


def _splittable(job: Job, options: RunOptions) -> bool:
    return (
        options.window is None
        and options.writer.conform is None
        and options.writer.encoder.encoder != "png"
        and job.output.suffix != ""
    )


def parts_dir(output: Path) -> Path:
    """Where a split video's segment files wait for the join: hidden, beside the output."""
    return output.parent / f".{output.name}.vidpipe-parts"


def plan_videos(
    jobs: Sequence[Job],
    planning_stages: Sequence[Stage],
    options: RunOptions,
    workers: int,
    *,
    split: bool | None = None,
    segment_seconds: Fraction | None = None,
    rows: Sequence[CostRow] | None = None,
) -> list[VideoPlan]:
    """Each job's items. `planning_stages` are the chain set up on the CPU by the caller for the first video and
    set up again here for each one split (their reach and grid, never frames). `split` None: split when there
    are fewer videos than workers."""
    want_split = len(jobs) < workers if split is None else split
    names = [s.name for s in planning_stages]
    plans: list[VideoPlan] = []
    for vi, job in enumerate(jobs):
        try:
            info = probe(job.input)
        except VidpipeError as e:
            plans.append(VideoPlan(job, None, error=e))
            continue
        frames = info.video.frames or 0
        plan = VideoPlan(job, info)
        segments: list[Segment] = []
        if want_split and _splittable(job, options) and workers > 1:
            segments = _segments(job, info, planning_stages, options, workers, segment_seconds)
        if len(segments) > 1:
            plan.parts = parts_dir(job.output)
            plan.items = [
                WorkItem(
                    key=f"{job.output.name}#{seg.index + 1}/{len(segments)}",
                    video=vi,
                    input=job.input,
                    output=plan.parts / f"seg_{seg.index:05d}{job.output.suffix}",
                    frames=seg.frames,
                    cost=expected_cost(info, seg.frames, names, rows),
                    segment=seg,
                )
                for seg in segments
            ]
        else:
            plan.items = [
                WorkItem(
                    key=job.output.name,
                    video=vi,
                    input=job.input,
                    output=job.output,
                    frames=frames,
                    cost=expected_cost(info, frames, names, rows),
                )
            ]
        plans.append(plan)
    return plans


def _segments(
    job: Job,
    info: MediaInfo,
    stages: Sequence[Stage],
    options: RunOptions,
    workers: int,
    seconds: Fraction | None,
) -> list[Segment]:
    import torch

    spec = source_spec(info, options.reader.keep_alpha)
    for s in stages:  # on the CPU: the planner reads rates, reaches and grids, never frames
        spec = s.setup(torch.device("cpu"), spec)
    if seconds is None:
        length = info.duration or Fraction(0)
        seconds = Fraction(length) / (SEGMENTS_PER_WORKER * workers) if length else None
    if not seconds:
        return []
    return plan_input(job.input, stages, seconds, on_corrupt=options.reader.on_corrupt, name=job.input.name)
