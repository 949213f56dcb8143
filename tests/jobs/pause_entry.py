"""`python tests/jobs/pause_entry.py ARGS…` is `vidpipe ARGS…` with deterministic crash points, for the tests that
kill a job at a known step (SIGKILL, SIGTERM) and resume it. Production code holds no test hook: this script
installs one before the CLI starts.

With ``VIDPIPE_TEST_PAUSE_AT=<point>`` and ``VIDPIPE_TEST_BARRIER_DIR=<dir>``, the job writes
``<dir>/<point>.reached`` on reaching the point and waits there until ``<dir>/<point>.go`` exists (the test kills
it meanwhile). Points: ``segment:N`` (inside segment N, after its first batch), ``segment-done:N`` (segment N
checkpointed), ``join`` (after the first segment's packets are in the joined file), ``upload`` (key recorded,
before uploading), ``uploaded`` (verified, before the result JSON and sentinel). N counts from 1. The steps
after a segment are the job's own `JobRunner.reached` points; ``segment:N`` is a pass-through stage appended
to segment N's chain."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from vidpipe.frames import FrameBatch
from vidpipe.jobs import driver
from vidpipe.jobs.runner import JobRunner
from vidpipe.paths import write_bytes
from vidpipe.stages.base import Stage


class PausePoints:
    """Where the job waits, read from the environment (see the module docstring)."""

    #: a forgotten barrier must not hold a job for ever
    MAX_WAIT_S: Final = 300.0

    def __init__(self, env: Mapping[str, str]) -> None:
        self.point = env.get("VIDPIPE_TEST_PAUSE_AT") or None
        directory = env.get("VIDPIPE_TEST_BARRIER_DIR")
        self.dir = Path(directory) if directory else None

    def wants(self, point: str) -> bool:
        return self.point == point and self.dir is not None

    def reach(self, point: str) -> None:
        if not self.wants(point):
            return
        assert self.dir is not None
        name = point.replace(":", "-")
        write_bytes(self.dir / f"{name}.reached", str(os.getpid()).encode())
        deadline = time.monotonic() + self.MAX_WAIT_S
        while not (self.dir / f"{name}.go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)


class PauseStage(Stage):
    """A pass-through stage that holds the pipeline at a pause point after its first batch."""

    name = "test-pause"

    def __init__(self, points: PausePoints, point: str) -> None:
        self.points, self.point, self.fired = points, point, False

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        if not self.fired:
            self.fired = True
            self.points.reach(self.point)
        return batch


def install(points: PausePoints, setattr: Callable[[object, str, Any], None] = setattr) -> None:
    """The job's `reached` points wait at the barrier; segment N's chain (its file is ``seg_<N-1>``, see
    `jobs.segments.InputState.segment_path`) gets a `PauseStage`. In process, pass pytest's
    `monkeypatch.setattr`, so both are undone after the test."""
    setattr(JobRunner, "reached", lambda _self, point: points.reach(point))
    pipeline_run: Callable[..., Any] = driver.run

    def run(src: Path, dst: Path, stages: Sequence[Stage], options: Any) -> Any:
        point = f"segment:{int(dst.stem.removeprefix('seg_')) + 1}" if dst.stem.startswith("seg_") else ""
        if points.wants(point):
            stages = [*stages, PauseStage(points, point)]
        return pipeline_run(src, dst, stages, options)

    setattr(driver, "run", run)


if __name__ == "__main__":
    install(PausePoints(os.environ))
    from vidpipe.cli.app import main

    sys.argv[0] = "vidpipe"
    main()
