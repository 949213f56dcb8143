"""The parent of `vidpipe run --gpus`: one worker process per GPU (`workers.worker`), the items of every video
(`workers.plan`) handed out longest first, split videos joined, dead workers' items re-queued.

- Dispatch: the pending items, in LPT order, are the run's one queue, held here; a worker that finishes is sent the
  next one at once. Knowing which worker holds which item is what makes re-queueing exact.
- A worker that dies (killed, a CUDA fault: `("fault", …)`, a pipe that breaks) has its item put back at the head
  of the queue, for a worker on another slot where one is alive, and a fresh process is started on its slot (at
  most `MAX_RESTARTS` per slot). The same item failing `MAX_ATTEMPTS` times fails the run with
  `WorkerFailedError` naming it. Items already finished are never run again; a killed worker's partial output is
  overwritten when the item runs again (writers go through a temp file, so nothing half-written is ever joined).
- An item that fails by itself (the worker reports a VidpipeError: a bad input, a stage error) fails its video; the
  other videos go on, as in one process (`runtime.multi`).
- A split video is joined (`jobs.segments.join_segments`: the segments' packets stream-copied with the source's
  other streams) as soon as its last segment is done, and its part files are deleted; its manifest records the
  segments and which worker ran each.
- Progress (`runtime.progress`): one line per running item labelled with its worker (JSON: `per_video` entries
  with `"worker"`), and the total with its ETA over every item.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Final, Literal

from .. import __version__
from ..errors import VidpipeError, WorkerFailedError
from ..jobs.segments import join_segments
from ..media.probe import probe
from ..paths import write_json
from ..runtime.inputs import Job
from ..runtime.pipeline import RunOptions, StopRequest, manifest_path
from ..runtime.progress import Progress, Totals
from ..schedule.costs import CostRow
from . import worker as worker_mod
from .devices import WorkerSlot
from .plan import VideoPlan, WorkItem, lpt_order, plan_videos
from .worker import ItemReport, StageFactory

log = logging.getLogger(__name__)

#: failures of one item (its worker died) before the run fails naming it
MAX_ATTEMPTS: Final = 2
#: fresh processes started on one slot after its worker died
MAX_RESTARTS: Final = 2
#: seconds a worker gets to exit after being told to stop (or terminated) before it is killed
STOP_GRACE_S: Final = 10.0

#: called in the parent as each item is done, before its video is finished (`job run` checkpoints its segments)
ItemDone = Callable[[WorkItem, ItemReport], None]


class RecipeStages:
    """A picklable stage factory from `PipelineRecipe` values (what `vidpipe run` builds its chain from)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = dict(values)

    def __call__(self) -> list[Any]:
        from ..runtime.recipe import PipelineRecipe

        return PipelineRecipe(**self.values).stages()


@dataclass(slots=True)
class PoolVideo:
    job: Job
    status: Literal["done", "skipped", "failed"]
    frames_out: int = 0
    reason: str = ""
    exit_code: int = 0
    segments: int = 1


@dataclass(slots=True)
class WorkerRecord:
    label: str
    #: seconds from its spawn until it could take items (interpreter, imports, stage chain), per process started
    ready_s: list[float] = field(default_factory=list)
    busy_s: float = 0.0
    items: list[str] = field(default_factory=list)
    deaths: int = 0


@dataclass(slots=True)
class PoolResult:
    videos: list[PoolVideo]
    workers: list[WorkerRecord]
    reports: dict[str, ItemReport]
    wall_s: float = 0.0
    join_s: float = 0.0
    #: items re-queued after their worker died, with how often
    requeued: dict[str, int] = field(default_factory=dict)

    @property
    def frames_out(self) -> int:
        return sum(v.frames_out for v in self.videos if v.status == "done")

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def failed(self) -> list[PoolVideo]:
        return [v for v in self.videos if v.status == "failed"]


@dataclass(slots=True, eq=False)
class _Worker:
    slot: WorkerSlot
    proc: BaseProcess
    conn: Connection
    ready: bool = False
    item: WorkItem | None = None
    dead: bool = False
    started: float = field(default_factory=time.monotonic)


class WorkerPool:
    """Runs planned videos over worker processes; see the module docstring."""

    def __init__(
        self,
        make_stages: StageFactory,
        options: RunOptions,
        slots: Sequence[WorkerSlot],
        progress: Progress,
        totals: Totals,
        on_item: ItemDone | None = None,
    ) -> None:
        if not slots:
            raise VidpipeError("a worker pool needs at least one worker")
        self.make_stages, self.options, self.slots = make_stages, options, list(slots)
        self.progress, self._totals, self.on_item = progress, totals, on_item
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.records = {s.index: WorkerRecord(s.label) for s in self.slots}
        self.restarts: Counter[int] = Counter()
        self.attempts: Counter[str] = Counter()
        self.failed_on: dict[str, set[int]] = {}
        self.why: dict[str, list[str]] = {}
        self.done_frames: dict[str, int] = {}
        self.reports: dict[str, ItemReport] = {}
        self.join_s = 0.0

    # -- processes --
    def _spawn(self, slot: WorkerSlot) -> _Worker:
        mine, theirs = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=worker_mod.main, args=(slot, theirs, self.make_stages, self.options), name=f"vidpipe-{slot.label}"
        )
        proc.start()
        theirs.close()
        w = _Worker(slot, proc, mine)
        self.workers.append(w)
        return w

    def _alive(self) -> list[_Worker]:
        return [w for w in self.workers if not w.dead]

    def _stop_all(self, graceful: bool) -> None:
        for w in self._alive():
            try:
                if graceful:
                    w.conn.send(None)
                else:
                    w.proc.terminate()
            except (OSError, ValueError):
                pass  # its pipe is gone: it is exiting anyway
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
            w.dead = True

    # -- the run --
    def run(self, plans: list[VideoPlan]) -> PoolResult:
        t0 = time.monotonic()
        videos: dict[int, PoolVideo] = {}
        left: dict[int, set[str]] = {}
        for vi, p in enumerate(plans):
            if p.error is not None:
                videos[vi] = PoolVideo(p.job, "failed", reason=str(p.error), exit_code=p.error.exit_code)
                self.progress.video_ended(p.job.output.name, "failed", p.job.output.name)
            else:
                left[vi] = {it.key for it in p.items}
        items = {it.key: it for vi, p in enumerate(plans) if vi in left for it in p.items}
        pending = deque(lpt_order(list(items.values())))
        ok = False
        stop = StopRequest()  # SIGINT/SIGTERM: Interrupted within a second; the workers are terminated below
        try:
            with stop.installed():
                for s in self.slots:
                    self._spawn(s)
                while pending or any(w.item is not None for w in self._alive()):
                    stop.check()
                    self._dispatch(pending)
                    for w, msg in self._events():
                        if msg is None:
                            how = "it died" if w.proc.exitcode is None else f"exit {w.proc.exitcode}"
                            self._died(w, pending, how)
                        else:
                            self._handle(w, msg, plans, videos, left, pending)
            ok = True
        finally:
            self._stop_all(graceful=ok)
            if not ok:
                for p in plans:
                    if p.parts is not None:
                        shutil.rmtree(p.parts, ignore_errors=True)
        result = PoolResult(
            videos=[videos[vi] for vi in range(len(plans))],
            workers=[self.records[s.index] for s in self.slots],
            reports=self.reports,
            wall_s=time.monotonic() - t0,
            join_s=self.join_s,
            requeued=dict(self.attempts),
        )
        return result

    def _dispatch(self, pending: deque[WorkItem]) -> None:
        """Send the next item to each ready, idle worker: the first pending one that has not failed on its slot
        (unless no worker of another slot is alive to take it)."""
        alive = self._alive()
        for w in alive:
            if w.item is not None or not w.ready or not pending:
                continue
            others = {o.slot.index for o in alive if o is not w}
            pick = next(
                (
                    it
                    for it in pending
                    if w.slot.index not in self.failed_on.get(it.key, set())
                    or not others - self.failed_on.get(it.key, set())
                ),
                None,
            )
            if pick is None:
                continue
            pending.remove(pick)
            w.item = pick
            self.done_frames[pick.key] = 0
            self.progress.video_started(pick.key, f"{w.slot.label} {pick.key}", None, worker=w.slot.label)
            with contextlib.suppress(OSError, ValueError):  # it died meanwhile: its death re-queues the item
                w.conn.send(pick)

    def _events(self) -> list[tuple[_Worker, tuple[Any, ...] | None]]:
        """The messages of every worker that has some (None: it died), after waiting up to a second for any."""
        alive = self._alive()
        if not alive:
            raise WorkerFailedError("every worker process died; see the messages above")
        wait([w.conn for w in alive] + [w.proc.sentinel for w in alive], timeout=1.0)
        out: list[tuple[_Worker, tuple[Any, ...] | None]] = []
        for w in alive:
            broken = False
            try:
                while w.conn.poll():
                    out.append((w, w.conn.recv()))
            except (EOFError, OSError):
                broken = True
            if broken or not w.proc.is_alive():
                out.append((w, None))
        return out

    def _handle(
        self,
        w: _Worker,
        msg: tuple[Any, ...],
        plans: list[VideoPlan],
        videos: dict[int, PoolVideo],
        left: dict[int, set[str]],
        pending: deque[WorkItem],
    ) -> None:
        kind = msg[0]
        rec = self.records[w.slot.index]
        if kind == "ready":
            w.ready = True
            rec.ready_s.append(time.monotonic() - w.started)
            return
        if kind == "broken":  # its chain could not be built: every worker would fail the same way
            err = VidpipeError(f"worker {w.slot.label} could not start: {msg[1]}")
            err.exit_code = int(msg[2])
            raise err
        item = w.item
        if item is None or msg[1] != item.key:
            return  # a late message about an item the pool already dealt with
        if kind == "progress":
            self._progress(w, item, int(msg[2]), msg[3])
        elif kind == "done":
            report: ItemReport = msg[2]
            w.item = None
            self.reports[item.key] = report
            rec.busy_s += report.seconds
            rec.items.append(item.key)
            self._progress(w, item, report.frames_out, report.frames_out)
            self.progress.video_ended(item.key, "skipped" if report.skipped else "done")
            if self.on_item is not None:
                self.on_item(item, report)
            vi = item.video
            if vi in videos:
                return  # its video failed already
            left[vi].discard(item.key)
            if not left[vi]:
                videos[vi] = self._finish(plans[vi])
        elif kind == "failed":
            w.item = None
            self.progress.video_ended(item.key, "failed")
            vi = item.video
            if vi not in videos:
                videos[vi] = PoolVideo(plans[vi].job, "failed", reason=str(msg[2]), exit_code=int(msg[3]))
                log.error("%s failed: %s", plans[vi].job.input, msg[2])
                for it in [it for it in pending if it.video == vi]:
                    pending.remove(it)
        elif kind == "fault":
            self._died(w, pending, f"CUDA fault: {msg[2]}")

    def _progress(self, w: _Worker, item: WorkItem, frames: int, total: int | None) -> None:
        key = item.key
        line = self.progress.per_video.get(key)
        if line is not None and line.total is None and total is not None:  # the run now knows its output frames
            line.total = total
            self._totals.opened(key, item.frames, total)
            self.progress.set_total(self._totals.total())
        gained = frames - self.done_frames.get(key, 0)
        if gained > 0:
            self.done_frames[key] = frames
            self.progress.advance(gained, video=key)

    def _died(self, w: _Worker, pending: deque[WorkItem], how: str) -> None:
        if w.dead:
            return
        w.dead = True
        w.proc.join(STOP_GRACE_S)
        w.conn.close()
        rec = self.records[w.slot.index]
        rec.deaths += 1
        item, w.item = w.item, None
        where = f"worker {w.slot.label} (pid {w.proc.pid})"
        if item is not None:
            key = item.key
            self.attempts[key] += 1
            self.failed_on.setdefault(key, set()).add(w.slot.index)
            self.why.setdefault(key, []).append(f"{where}: {how}")
            done = self.done_frames.pop(key, 0)
            if done:
                self.progress.advance(-done, video=key)
            self.progress.video_ended(key, "failed")
            if self.attempts[key] >= MAX_ATTEMPTS:
                raise WorkerFailedError(
                    f"{key} failed {self.attempts[key]} times, its worker dying each time "
                    f"({'; '.join(self.why[key])}); the run stops"
                )
            log.warning("%s died on %s (%s); re-queued on a healthy worker", where, key, how)
            pending.appendleft(item)
        else:
            log.warning("%s died between items (%s)", where, how)
        if self.restarts[w.slot.index] < MAX_RESTARTS:
            self.restarts[w.slot.index] += 1
            self._spawn(w.slot)

    def _finish(self, plan: VideoPlan) -> PoolVideo:
        video, seconds = finish_video(plan, self.reports, self.options, [r.label for r in self.records.values()])
        self.join_s += seconds
        return video


def run_pool(
    jobs: Sequence[Job],
    make_stages: StageFactory,
    options: RunOptions,
    slots: Sequence[WorkerSlot],
    *,
    split: bool | None = None,
    segment_seconds: Fraction | None = None,
    cost_rows: Sequence[CostRow] | None = None,
) -> PoolResult:
    """Run `make_stages()`'s chain over every job on one worker process per slot; see the module docstring.
    `split`: None splits videos into segments when there are fewer videos than workers; True/False force it."""
    planning = make_stages()
    plans = plan_videos(
        jobs, planning, options, len(slots), split=split, segment_seconds=segment_seconds, rows=cost_rows
    )
    del planning
    return run_plans(plans, make_stages, options, slots, label=f"{len(jobs)} video(s)")


def run_plans(
    plans: list[VideoPlan],
    make_stages: StageFactory,
    options: RunOptions,
    slots: Sequence[WorkerSlot],
    *,
    label: str,
    on_item: ItemDone | None = None,
) -> PoolResult:
    """Run planned items (`run_pool`'s, or a job's segments: `workers.job_executor`) with one progress display."""
    items = [it for p in plans for it in p.items]
    totals = Totals({it.key: it.frames for it in items})
    progress = Progress(
        options.progress, totals.total(), f"{label}, {len(items)} item(s) on {len(slots)} workers", videos=len(items)
    )
    progress.stage = ", ".join(s.label for s in slots)
    pool = WorkerPool(make_stages, options, slots, progress, totals, on_item)
    ok = False
    progress.start()
    try:
        result = pool.run(plans)
        ok = not result.failed
    finally:
        progress.finish(ok)
    return result


def finish_video(
    plan: VideoPlan, reports: dict[str, ItemReport], options: RunOptions, labels: Sequence[str]
) -> tuple[PoolVideo, float]:
    """The last item of a video is done: join a split one (its manifest names the worker, `labels[report.worker]`,
    of each segment) and say what came out; the join's seconds."""
    frames = sum(reports[it.key].frames_out for it in plan.items)
    if plan.parts is None:
        report = reports[plan.items[0].key]
        return PoolVideo(plan.job, "skipped" if report.skipped else "done", frames), 0.0
    assert plan.info is not None
    started = time.monotonic()
    files = [it.output for it in plan.items]
    join_segments(files, plan.info, plan.job.output, copy_streams=options.writer.copy_streams)
    seconds = time.monotonic() - started
    if options.manifest:
        _manifest(plan, reports, labels, frames, seconds)
    shutil.rmtree(plan.parts, ignore_errors=True)
    log.info("wrote %s (%d segments joined in %.2f s)", plan.job.output, len(files), seconds)
    return PoolVideo(plan.job, "done", frames, segments=len(files)), seconds


def _manifest(
    plan: VideoPlan, reports: dict[str, ItemReport], labels: Sequence[str], frames: int, join_s: float
) -> None:
    from ..runtime.pipeline import versions

    assert plan.info is not None
    try:
        out: dict[str, Any] = probe(plan.job.output).summary()
    except VidpipeError as e:
        out = {"path": str(plan.job.output), "probe_error": str(e)}
    doc = {
        "vidpipe": __version__,
        "input": plan.info.summary(),
        "output": out,
        "frames_out": frames,
        "segments": [
            it.segment.to_json() | {"worker": labels[reports[it.key].worker], "seconds": reports[it.key].seconds}
            for it in plan.items
            if it.segment is not None
        ],
        "join_s": round(join_s, 3),
        "versions": versions(),
    }
    write_json(manifest_path(plan.job.output), doc)
