"""`vidpipe run … --executor ray [--address auto|ray://…]`: the same items as the local workers (`workers.plan`:
whole videos, or segments split at keyframes), run by Ray actors, one per GPU (`num_gpus=1`; Ray sets each actor's
`CUDA_VISIBLE_DEVICES`), each keeping its stage chain, models loaded, between items (`worker.run_item`).

The driver (this process) plans, hands items out longest first to whichever actor is idle, joins split videos
(`pool.finish_video`) and reports like the local pool (`PoolResult`). An actor that dies (`RayActorError`: killed,
its node lost) has its item re-queued and is replaced by a fresh actor; the same item losing its actor twice
fails the run with `WorkerFailedError`, as locally. Inputs and outputs are paths every node sees (a shared file
system); S3 inputs and uploads stay with `job run`. Ray is an optional extra (`pip install vidpipe[ray]`),
imported only here, only when this executor is asked for.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from ..errors import UsageError, VidpipeError, WorkerFailedError
from ..runtime.inputs import Job
from ..runtime.pipeline import RunOptions
from ..runtime.progress import Progress, Totals
from .plan import VideoPlan, WorkItem, lpt_order, plan_videos
from .pool import MAX_ATTEMPTS, ItemDone, PoolResult, PoolVideo, WorkerRecord, finish_video
from .worker import ItemReport, StageFactory, run_item

log = logging.getLogger(__name__)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'vidpipe[ray]'") from None
    return ray


class RayWorker:
    """The actor: its chain built once, on the GPU Ray gave it (the CPU where none is: fake GPU resources)."""

    def __init__(self, index: int, make_stages: StageFactory, options: RunOptions, cpu_share: int) -> None:
        from dataclasses import replace

        import torch

        self.index = index
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // cpu_share))
        self.options = replace(options, device=device, progress="none")
        self.stages = make_stages()

    def run(self, item: WorkItem) -> ItemReport:
        return run_item(self.stages, self.options, item, self.index)


def run_ray(
    jobs: Sequence[Job],
    make_stages: StageFactory,
    options: RunOptions,
    *,
    address: str | None = None,
    workers: int | None = None,
    split: bool | None = None,
    segment_seconds: Fraction | None = None,
) -> PoolResult:
    """Run `make_stages()`'s chain over every job on Ray actors (module docstring). `workers`: actors to start
    (default: the cluster's GPUs); `address`: a cluster to join (None: the one already initialised, else a
    local one)."""
    n = connect(address, workers)
    plans = plan_videos(jobs, make_stages(), options, n, split=split, segment_seconds=segment_seconds)
    return run_ray_plans(plans, make_stages, options, n, label=f"{len(jobs)} video(s)")


def connect(address: str | None, workers: int | None) -> int:
    """Join the cluster at `address` (None: the one already initialised, else a local one); how many actors to
    start (`workers`, default the cluster's GPUs)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    n = workers or int(ray.cluster_resources().get("GPU", 0))
    if n < 1:
        raise UsageError("--executor ray: the cluster has no GPU (give --gpus N to start N actors anyway)")
    return n


def run_ray_plans(
    plans: list[VideoPlan],
    make_stages: StageFactory,
    options: RunOptions,
    n: int,
    *,
    label: str,
    on_item: ItemDone | None = None,
) -> PoolResult:
    """Run planned items (`run_ray`'s, or a job's segments: `workers.job_executor`) on `n` actors of the cluster
    `connect` joined; `on_item` is called here, in the driver, as each item is done."""
    ray = import_ray()
    items = [it for p in plans for it in p.items]
    totals = Totals({it.key: it.frames for it in items})
    progress = Progress(options.progress, totals.total(), f"{label} on {n} Ray actors", videos=len(items))
    progress.start()
    ok = False
    try:
        result = _Driver(ray, make_stages, options, n, progress, on_item).run(plans)
        ok = not result.failed
    finally:
        progress.finish(ok)
    return result


class _Driver:
    def __init__(
        self,
        ray: Any,
        make_stages: StageFactory,
        options: RunOptions,
        n: int,
        progress: Progress,
        on_item: ItemDone | None = None,
    ) -> None:
        self.ray, self.make_stages, self.options, self.n, self.progress = ray, make_stages, options, n, progress
        self.on_item = on_item
        self.actor_class = ray.remote(num_gpus=1)(RayWorker)
        self.records = [WorkerRecord(f"ray{i}") for i in range(n)]
        self.attempts: Counter[str] = Counter()
        self.reports: dict[str, ItemReport] = {}
        self.join_s = 0.0

    def _actor(self, i: int) -> Any:
        return self.actor_class.remote(i, self.make_stages, self.options, self.n)

    def run(self, plans: list[VideoPlan]) -> PoolResult:
        from ray.exceptions import RayActorError, RayTaskError

        t0 = time.monotonic()
        videos: dict[int, PoolVideo] = {
            vi: PoolVideo(p.job, "failed", reason=str(p.error), exit_code=p.error.exit_code)
            for vi, p in enumerate(plans)
            if p.error is not None
        }
        left = {vi: {it.key for it in p.items} for vi, p in enumerate(plans) if p.error is None}
        pending = deque(lpt_order([it for vi, p in enumerate(plans) if vi in left for it in p.items]))
        actors = [self._actor(i) for i in range(self.n)]
        busy: dict[Any, tuple[int, WorkItem]] = {}  # object ref → (actor index, item)
        ok = False
        try:
            while pending or busy:
                idle = [i for i in range(self.n) if i not in {a for a, _ in busy.values()}]
                for i in idle:
                    if pending:
                        item = pending.popleft()
                        busy[actors[i].run.remote(item)] = (i, item)
                        self.progress.video_started(item.key, f"ray{i} {item.key}", None, worker=f"ray{i}")
                (ref,), _ = self.ray.wait(list(busy), num_returns=1)
                i, item = busy.pop(ref)
                try:
                    report: ItemReport = self.ray.get(ref)
                except RayActorError as e:  # the actor died: re-queue on a fresh one
                    self._died(i, item, e, pending)
                    actors[i] = self._actor(i)
                    continue
                except RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    err = cause if isinstance(cause, VidpipeError) else VidpipeError(str(e).splitlines()[0])
                    self.progress.video_ended(item.key, "failed")
                    if item.video not in videos:
                        videos[item.video] = PoolVideo(plans[item.video].job, "failed", reason=str(err),
                                                       exit_code=err.exit_code)  # fmt: skip
                        for it in [it for it in pending if it.video == item.video]:
                            pending.remove(it)
                    continue
                self.reports[item.key] = report
                self.records[i].busy_s += report.seconds
                self.records[i].items.append(item.key)
                self.progress.advance(report.frames_out, video=item.key)
                self.progress.video_ended(item.key, "skipped" if report.skipped else "done")
                if self.on_item is not None:
                    self.on_item(item, report)
                if item.video in videos:
                    continue
                left[item.video].discard(item.key)
                if not left[item.video]:
                    video, seconds = finish_video(plans[item.video], self.reports, self.options,
                                                  [r.label for r in self.records])  # fmt: skip
                    videos[item.video], self.join_s = video, self.join_s + seconds
            ok = True
        finally:
            for a in actors:
                self.ray.kill(a)
            if not ok:
                for p in plans:
                    if p.parts is not None:
                        shutil.rmtree(p.parts, ignore_errors=True)
        return PoolResult(
            videos=[videos[vi] for vi in range(len(plans))],
            workers=self.records,
            reports=self.reports,
            wall_s=time.monotonic() - t0,
            join_s=self.join_s,
            requeued=dict(self.attempts),
        )

    def _died(self, i: int, item: WorkItem, e: Exception, pending: deque[WorkItem]) -> None:
        self.records[i].deaths += 1
        self.attempts[item.key] += 1
        self.progress.video_ended(item.key, "failed")
        how = str(e).splitlines()[0]
        if self.attempts[item.key] >= MAX_ATTEMPTS:
            raise WorkerFailedError(
                f"{item.key} failed {self.attempts[item.key]} times, its Ray actor dying each time ({how}); "
                "the run stops"
            )
        log.warning("Ray actor ray%d died on %s (%s); re-queued", i, item.key, how)
        pending.appendleft(item)
