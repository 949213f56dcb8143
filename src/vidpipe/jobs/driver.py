"""The segment driver of a job: one prepared input (its stages set up, its checkpoint open) is planned into
segments, each segment not done yet is run through the pipeline over its time window and checkpointed, and the
segments are joined into the output with its manifest. :mod:`vidpipe.jobs.runner` drives the inputs, uploads and
the sentinel around it; :mod:`vidpipe.jobs.segments` holds the planning, checkpoints and the lossless join.

Where a file may be split is the stages' call, through their declarations (`Stage.starts_mid_stream`,
`Stage.counts_frames`, `Stage.segment_grid`, `Stage.reach`), never their class. A segment's run decodes the
frames the chain reaches around it (`schedule.temporal.chain_reach` + `feed_span`: a recurrent stage's
pre-roll, a windowed stage's overlap, interpolation's look-ahead), runs the whole chain over them and writes
only its own frames (the pipeline's `TimeWindow` drops the rest after the chain), so the joined output is the
whole run's, frame for frame."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..errors import VidpipeError
from ..media.encoders import EncoderChoice
from ..media.info import MediaInfo
from ..media.probe import probe
from ..runtime.pipeline import RunOptions, TimeWindow, manifest_path, run, versions
from ..schedule.temporal import chain_reach, feed_span
from ..stages.base import Reach, Stage, StreamSpec
from . import atomic
from .disk import check_free_space, estimate_output_bytes
from .secrets import Redactor
from .segments import (
    FrameIndex,
    InputState,
    Segment,
    SegmentRecord,
    file_sha256,
    fsync_file,
    join_segments,
    plan_segments,
    scan_frames,
)
from .storage import file_digest

log = logging.getLogger(__name__)


def whole_file_reason(index: FrameIndex, stages: Sequence[Stage], on_corrupt: str) -> str | None:
    """Why a file must be processed in one segment (None: it can be split at keyframes). Segments start at a
    seek point, so files whose frames are stamped by their order cannot be split, nor can stages that cannot
    start mid-stream (`Stage.starts_mid_stream`: context without a finite reach that segments could feed); a
    stage that counts frames (`Stage.counts_frames`: interpolation's output grid) cannot split a file whose
    damaged frames may be dropped."""
    temporal = [s.name for s in stages if not s.starts_mid_stream]
    if index.container == "avi":
        return "AVI stores no presentation times"
    if index.pts_copies:
        return "its pts are copies of its dts (frames are stamped in order, which a seek loses)"
    if temporal:
        return f"stage {temporal[0]} needs context across frames"
    counting = [s.name for s in stages if s.counts_frames]
    if on_corrupt == "skip" and counting:
        return f"stage {counting[0]} counts frames and --on-corrupt skip may drop some"
    return None


def fed(seg: Segment, index: FrameIndex, reach: Reach) -> Segment:
    """`seg` with the times its run decodes: the frames `reach` needs around it (`feed_span`), from the first one
    through the last one (None: the stream's own first or last)."""
    first, stop = feed_span(reach, seg.first, seg.first + seg.frames, total=index.count)
    return replace(
        seg,
        feed=(None if first == 0 else index.times[first], None if stop >= index.count else index.times[stop - 1]),
    )


def plan_input(
    local: Path, stages: Sequence[Stage], seconds: Fraction | None, *, on_corrupt: str, name: str
) -> list[Segment]:
    """Segments of about `seconds` between keyframes (preferring an encoder's scene-cut keyframes), on the set-up
    `stages`' output grid, each fed the frames the chain reaches around it; one segment when the file cannot be
    split (`whole_file_reason`, two grids, a reach next to a grid). The jobs' driver and the GPU workers
    (`vidpipe.workers`) plan with it."""
    index = scan_frames(local)
    if seconds is None or index.count < 2:
        return plan_segments(index, None)
    why = whole_file_reason(index, stages, on_corrupt)
    if why:
        log.info("%s: processed whole (one segment): %s", name, why)
        return plan_segments(index, None)
    # the set-up stages' boundary rules (interpolation's output grid); two stages' grids are not combined
    rules = [r for s in stages if (r := s.segment_grid(index.times[0])) is not None]
    if len(rules) > 1:
        log.info("%s: %d stages place segment boundaries; processed whole (one segment)", name, len(rules))
        return plan_segments(index, None)
    reach = chain_reach(stages, index.times[0])
    if reach is None:
        log.info("%s: a stage's reach next to another's output grid; processed whole (one segment)", name)
        return plan_segments(index, None)
    plan = plan_segments(index, seconds, rules[0] if rules else None)
    log.info(
        "%s: %d segment(s) of about %gs, each fed %d frame(s) before and %d after",
        *(name, len(plan), float(seconds), reach.before, reach.after),
    )
    return [fed(seg, index, reach) if len(plan) > 1 else seg for seg in plan]


def segment_options(options: RunOptions, seg: Segment) -> RunOptions:
    """`options` for the run of one segment: its time window and feed, no manifest, and the video alone (the
    source's other streams are muxed once, by the join)."""
    return replace(
        options,
        window=TimeWindow(seg.start, seg.end, seg.feed),
        manifest=False,
        writer=replace(options.writer, copy_streams=False),
    )


@dataclass(kw_only=True)
class Prepared:
    """One input, set up: its stages on the device, what comes out, and its checkpoint."""

    name: str
    local: Path
    info: MediaInfo
    stages: list[Stage]
    out_spec: StreamSpec
    options: RunOptions
    choice: EncoderChoice
    state: InputState
    suffix: str
    final: Path
    #: segments found done and intact when this run began (not run again; the manifest marks them `reused`)
    reused: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class SegmentTask:
    """One segment of one input, for an executor that runs segments elsewhere (worker processes, Ray): the
    input `group` (a failing task fails its input's other tasks), what to read and where the segment file goes."""

    key: str  # unique in the job: `<output stem>#<n>/<of>`
    group: int
    input: Path
    output: Path
    segment: Segment
    info: MediaInfo
    stage_names: tuple[str, ...]


class SegmentExecutor(Protocol):
    """Runs a job's segments on several workers (`vidpipe.workers`: local processes, Ray actors); the job's
    driver process plans, checkpoints (`on_done`, called in the caller's thread as each segment's file is
    complete), joins and uploads. Built above `jobs` and handed to the runner (`JobRunner(executor=…)`)."""

    #: the device type the workers compute on (part of the checkpoint key, as a one-process run's device is)
    device_type: str

    def run(
        self, tasks: Sequence[SegmentTask], options: RunOptions, on_done: Callable[[SegmentTask, int, float], None]
    ) -> dict[int, VidpipeError]:
        """Run every task (each over `segment_options(options, task.segment)`); the groups that failed, with why.
        Raises Interrupted on SIGINT/SIGTERM and WorkerFailedError when a task kept killing its workers."""
        ...


class SegmentDriver:
    """Runs, checkpoints and joins the segments of prepared inputs (see the module docstring). `reached(point)` is
    called after each named step (`segment-done:N`, `join`): the job's own `JobRunner.reached`."""

    def __init__(
        self, *, segment_seconds: Fraction | None, mode: str, redactor: Redactor, reached: Callable[[str], None]
    ) -> None:
        self.segment_seconds, self.mode, self.redactor, self.reached = segment_seconds, mode, redactor, reached

    def run_segments(self, p: Prepared) -> float:
        """Run the segments not done yet, one after another in this process; seconds they took."""
        todo = self.pending(p)
        n = len(p.state.plan)
        for seg in todo:
            self.segment(p, seg, n)
        return sum(p.state.done[seg.index].seconds for seg in todo)

    def pending(self, p: Prepared) -> list[Segment]:
        """Plan the input (once: the plan is checkpointed) and return the segments not done yet, after checking the
        disk has room for them; the ones done and intact are kept (`p.reused`), never run again."""
        state = p.state
        if not state.plan:
            state.plan = self.plan(p)
            state.save()
        suffix = p.suffix
        todo = [seg for seg in state.plan if not state.verified_done(seg, suffix)]
        p.reused = frozenset(seg.index for seg in state.plan if seg not in todo)
        if todo:
            total = p.info.video.frames or sum(s.frames for s in state.plan) or 1
            left = sum(s.frames for s in todo) / total
            est = estimate_output_bytes(p.out_spec, p.info, p.choice, p.options.writer.encoder.lossless)
            check_free_space(
                {state.directory: int(est * left), p.final.parent: est}, f"{p.name} (~{est / 1e6:.0f} MB output)"
            )
        n = len(state.plan)
        for i in sorted(p.reused):
            log.info("%s: segment %d/%d already done", p.name, i + 1, n)
        return todo

    def plan(self, p: Prepared) -> list[Segment]:
        """Segments of about `segment_seconds` between keyframes, on the stages' grid; one when it cannot split."""
        return plan_input(p.local, p.stages, self.segment_seconds, on_corrupt=p.options.reader.on_corrupt, name=p.name)

    def segment(self, p: Prepared, seg: Segment, n: int) -> None:
        """Run segment `seg` (of `n`) over its time window into its own file, then checkpoint it."""
        out = p.state.segment_path(seg, p.suffix)
        started = time.monotonic()
        res = run(p.local, out, p.stages, segment_options(p.options, seg))
        self.record(p, seg, res.frames_out, time.monotonic() - started)

    def record(self, p: Prepared, seg: Segment, frames: int, seconds: float) -> None:
        """Checkpoint segment `seg`, its file complete (here or on a worker): flushed to disk, hashed, recorded."""
        out = p.state.segment_path(seg, p.suffix)
        fsync_file(out)
        p.state.done[seg.index] = SegmentRecord(
            file=out.name, size=out.stat().st_size, sha256=file_sha256(out), frames=frames, seconds=seconds
        )
        p.state.save()
        n = len(p.state.plan)
        log.info("%s: segment %d/%d done: %d frames in %.1fs", p.name, seg.index + 1, n, frames, seconds)
        self.reached(f"segment-done:{seg.index + 1}")

    def tasks(self, p: Prepared, todo: Sequence[Segment], group: int) -> list[SegmentTask]:
        """`todo` as tasks for an executor, each writing the file its checkpoint will name."""
        n, stem = len(p.state.plan), p.final.stem
        names = tuple(s.name for s in p.stages)
        return [
            SegmentTask(
                key=f"{stem}#{seg.index + 1}/{n}",
                group=group,
                input=p.local,
                output=p.state.segment_path(seg, p.suffix),
                segment=seg,
                info=p.info,
                stage_names=names,
            )
            for seg in todo
        ]

    def join(self, p: Prepared) -> None:
        """Join the segments into the output (with the source's other streams), record it, delete the segments."""
        state = p.state
        files = [state.segment_path(seg, p.suffix) for seg in state.plan]
        started = time.monotonic()
        join_segments(
            files,
            p.info,
            p.final,
            copy_streams=p.options.writer.copy_streams,
            after_segment=lambda i: self.reached("join") if i == 0 else None,
        )
        self.manifest(p, time.monotonic() - started)
        digest = file_digest(p.final)
        state.joined = {"file": p.final.name, "size": digest.size, "sha256": digest.sha256}
        state.save()
        for f in files:
            f.unlink(missing_ok=True)
        state.done.clear()
        state.save()
        log.info("%s: wrote %s (%d segment(s) joined)", p.name, p.final, len(files))

    def manifest(self, p: Prepared, join_s: float) -> None:
        try:
            out_summary: dict[str, Any] = probe(p.final).summary()
        except VidpipeError as e:
            out_summary = {"path": str(p.final), "probe_error": str(e)}
        doc = {
            "vidpipe": __version__,
            "input": p.info.summary(),
            "output": out_summary,
            "mode": self.mode,
            "stages": [s.signature() for s in p.stages],
            "checkpoint": {"key": p.state.key, "input_sha256": p.state.input_sha256},
            "segments": [s.to_json() | {"reused": s.index in p.reused} for s in p.state.plan],
            "join_s": round(join_s, 3),
            "versions": versions(),
        }
        atomic.write_json(manifest_path(p.final), self.redactor.redact_obj(doc))

    @staticmethod
    def intact(final: Path, joined: Mapping[str, Any]) -> bool:
        """The joined output a checkpoint records is still there, byte for byte."""
        try:
            return final.stat().st_size == joined.get("size") and file_sha256(final) == joined.get("sha256")
        except OSError:
            return False
