"""`job run` on several workers (`executor: local|ray`, `gpus:` in the spec; issue 19): the segments of every input
go to a :class:`~vidpipe.jobs.driver.SegmentExecutor` at once, longest first, and this process, the job's driver,
does everything else exactly as in one process, with the same code:

1. each input is prepared (an s3:// input downloaded into the work directory, probed, hashed, its checkpoint
   opened, its segments planned: `JobRunner._prepare`, `SegmentDriver.pending`); segments already done and intact
   are not handed out again (resume, the same checkpoint key);
2. the executor runs every pending segment of every input into the file its checkpoint names; as each one comes
   back, this process checkpoints it (`SegmentDriver.record`: fsync, sha256, state.json), so a job killed
   anywhere keeps every segment finished so far;
3. then, input by input, the segments are joined, the output uploaded and verified (`JobRunner._deliver`, one
   join and one upload path), and only after the last input the result JSON and the sentinel (`JobRunner._run`).

Inputs and segment files are paths: the work directory (downloads, checkpoints, segment files) must be one every
worker sees — on one host it always is; on a Ray cluster, a shared file system. S3 inputs are staged there by
this process, which must read them whole anyway (their sha256 is part of the checkpoint key; the planner scans
their keyframes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import Interrupted
from ..media.writer import partial_path
from .driver import Prepared, SegmentExecutor, SegmentTask

if TYPE_CHECKING:
    from .result import JobResult
    from .runner import JobOutcome, JobRunner


def run_inputs(
    runner: JobRunner, executor: SegmentExecutor, names: Sequence[str], result: JobResult, outcome: JobOutcome
) -> None:
    """Every input of the job through `executor` (module docstring); failures are recorded per input in `result`
    and `outcome`, as in one process. Raises Interrupted (every unfinished input recorded failed with it)."""
    started: dict[str, float] = {}
    ready: list[tuple[Prepared, bool]] = []  # (input, its output still to be joined)
    tasks: list[SegmentTask] = []
    unfinished = list(names)
    try:
        for name in names:
            result.start_input(name)
            started[name] = time.monotonic()
            try:
                p = runner._prepare(name)
                to_join = runner._to_join(p)
                if to_join:
                    tasks += runner.driver.tasks(p, runner.driver.pending(p), len(ready))
            except Interrupted:
                raise
            except Exception as e:
                runner._clean_input_temp()
                runner._input_failed(name, e, result, outcome)
                unfinished.remove(name)
                continue
            ready.append((p, to_join))

        def done(task: SegmentTask, frames: int, seconds: float) -> None:
            runner.driver.record(ready[task.group][0], task.segment, frames, seconds)

        failed = executor.run(tasks, ready[0][0].options, done) if tasks else {}
        for group, (p, to_join) in enumerate(ready):
            try:
                if group in failed:
                    raise failed[group]
                if to_join:
                    ran = [r.seconds for i, r in p.state.done.items() if i not in p.reused]
                    result.add_timing(p.name, "segments", sum(ran))
                final = runner._deliver(p, result, joined=not to_join)
                runner._stop.check()  # before the input is recorded ok, as in one process
            except Interrupted:
                raise
            except Exception as e:
                _clean(runner, p)
                runner._input_failed(p.name, e, result, outcome)
                unfinished.remove(p.name)
                continue
            runner._input_done(p.name, final, started[p.name], result, outcome)
            unfinished.remove(p.name)
    except Interrupted as e:
        runner._clean_input_temp()  # the input being prepared, if any
        for p, _ in ready:
            _clean(runner, p)
        for name in unfinished:
            result.fail_input(name, e)
        raise
    except Exception as e:  # the executor as a whole (a segment that kept killing its workers, Ray unreachable)
        err = runner._classify(e, "the workers")
        for name in unfinished:
            result.fail_input(name, err)
        if err is e:
            raise
        raise err from e


def _clean(runner: JobRunner, p: Prepared) -> None:
    """Remove the input's temp files (a partial join, atomic-write leftovers); its checkpoint stays."""
    runner._current = [partial_path(p.final), p.state.directory]
    runner._clean_input_temp()
