"""`job run` on several workers: the job spec's `executor: local|ray`, `address` and `gpus: all|N|0,2|cpu:N`
(`VIDPIPE_EXECUTOR`, `VIDPIPE_ADDRESS`, `VIDPIPE_GPUS`) pick worker processes on this host or Ray actors, as
`vidpipe run --gpus/--executor/--address` do; `executor_for` builds the `jobs.driver.SegmentExecutor` the runner
hands every input's pending segments to (`jobs.fanout`).

A job's segments become the pool's items (`plan.WorkItem`: one per segment, its output the file the checkpoint
names), one `VideoPlan` per input and never joined here: the job's driver checkpoints each item as it comes back
(`on_item`) and joins, uploads and writes the sentinel itself. Dispatch, re-queueing after a worker's death,
`WorkerFailedError` after two, progress: the pool's and Ray driver's own code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError, VidpipeError
from ..jobs.driver import SegmentTask
from ..jobs.spec import EXECUTORS
from ..runtime.inputs import Job
from ..runtime.pipeline import RunOptions
from .devices import WorkerSlot, pool_slots, ray_actors
from .plan import VideoPlan, WorkItem, expected_cost
from .pool import ItemDone, PoolResult, RecipeStages, run_plans
from .ray_executor import connect, import_ray, run_ray_plans
from .worker import ItemReport, StageFactory

if TYPE_CHECKING:
    from ..jobs.driver import SegmentExecutor
    from ..jobs.spec import JobSpec


def _plans(tasks: Sequence[SegmentTask]) -> tuple[list[VideoPlan], list[int]]:
    """One plan per input that has tasks, holding them as items (never `parts`: the pool joins nothing), and the
    input `group` of each plan."""
    groups = list(dict.fromkeys(t.group for t in tasks))
    plans: list[VideoPlan] = []
    for vi, g in enumerate(groups):
        mine = [t for t in tasks if t.group == g]
        plan = VideoPlan(Job(mine[0].input, mine[0].output), mine[0].info)
        plan.items = [
            WorkItem(
                key=t.key,
                video=vi,
                input=t.input,
                output=t.output,
                frames=t.segment.frames,
                cost=expected_cost(t.info, t.segment.frames, t.stage_names),
                segment=t.segment,
            )
            for t in mine
        ]
        plans.append(plan)
    return plans, groups


def _failures(result: PoolResult) -> dict[int, VidpipeError]:
    out: dict[int, VidpipeError] = {}
    for vi, video in enumerate(result.videos):
        if video.status == "failed":
            err = VidpipeError(video.reason)
            err.exit_code = video.exit_code or VidpipeError.exit_code
            out[vi] = err
    return out


class _Executor(ABC):
    """Shared by both executors: tasks → plans, reports → the job's `on_done`."""

    device_type = "cuda"

    def __init__(self, make_stages: StageFactory) -> None:
        self.make_stages = make_stages

    def run(
        self, tasks: Sequence[SegmentTask], options: RunOptions, on_done: Callable[[SegmentTask, int, float], None]
    ) -> dict[int, VidpipeError]:
        plans, groups = _plans(tasks)
        by_key = {t.key: t for t in tasks}

        def item_done(item: WorkItem, report: ItemReport) -> None:
            on_done(by_key[item.key], report.frames_out, report.seconds)

        result = self._run(plans, options, item_done)
        return {groups[vi]: e for vi, e in _failures(result).items()}

    @abstractmethod
    def _run(self, plans: list[VideoPlan], options: RunOptions, on_item: ItemDone) -> PoolResult: ...


class PoolExecutor(_Executor):
    """Segments on worker processes of this host, one per slot (`--gpus`)."""

    def __init__(self, slots: Sequence[WorkerSlot], make_stages: StageFactory) -> None:
        super().__init__(make_stages)
        self.slots = list(slots)
        self.device_type = self.slots[0].device.split(":")[0]

    def _run(self, plans: list[VideoPlan], options: RunOptions, on_item: ItemDone) -> PoolResult:
        return run_plans(plans, self.make_stages, options, self.slots, label="job", on_item=on_item)


class RayExecutor(_Executor):
    """Segments on Ray actors, one per GPU (`num_gpus=1`: the actors compute on `cuda`)."""

    def __init__(self, address: str | None, actors: int | None, make_stages: StageFactory) -> None:
        import_ray()  # a UsageError now, before any input is downloaded, where Ray is not installed
        super().__init__(make_stages)
        self.address, self.actors = address, actors

    def _run(self, plans: list[VideoPlan], options: RunOptions, on_item: ItemDone) -> PoolResult:
        n = connect(self.address, self.actors)
        return run_ray_plans(plans, self.make_stages, options, n, label="job", on_item=on_item)


def executor_for(spec: JobSpec, make_stages: StageFactory | None = None) -> SegmentExecutor | None:
    """The executor the spec asks for (`make_stages`: the workers' chain, default the spec's pipeline); None where
    the job stays in one process (`executor: local` with one GPU or none and no `gpus`, or a CPU device)."""
    make = make_stages or RecipeStages(spec.pipeline.to_dict())
    if spec.executor == "ray":
        return RayExecutor(spec.address, ray_actors(spec.gpus), make)
    if spec.executor != "local":
        raise UsageError(f"invalid executor {spec.executor!r}; valid: {', '.join(EXECUTORS)}")
    slots = pool_slots(spec.gpus, spec.pipeline.device)
    if len(slots) > 1 or (slots and spec.gpus is not None):
        return PoolExecutor(slots, make)
    return None
