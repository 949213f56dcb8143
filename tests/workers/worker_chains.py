"""Stage chains the worker tests hand to `run_pool` (picklable: workers are spawned and build their own), and a
pass-through stage that SIGKILLs its own worker process when a given frame reaches it: the test hook for a worker
dying mid-item. vidpipe itself has no such hook."""

from __future__ import annotations

import multiprocessing
import os
import signal
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidpipe.errors import ModelError, StageError
from vidpipe.frames import FrameBatch
from vidpipe.stages.base import Stage
from vidpipe.workers import RecipeStages


class KillAt(Stage):
    """Passes frames on unchanged; the process running it is SIGKILLed when the frame shown at `at` seconds
    reaches it, once per `marker` file (the first death creates it), or every time without one."""

    name = "kill-at"

    def __init__(self, at: Fraction, marker: Path | None) -> None:
        self.at, self.marker = at, marker

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name}

    def process(self, batch: FrameBatch) -> FrameBatch:
        if any(t == self.at for t in batch.times()) and (self.marker is None or not self.marker.exists()):
            if self.marker is not None:
                self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


class KillingChain:
    """`vidpipe run`'s chain for `values`, then `KillAt`."""

    def __init__(self, values: dict[str, Any], at: Fraction, marker: Path | None) -> None:
        self.chain, self.at, self.marker = RecipeStages(values), at, marker

    def __call__(self) -> list[Stage]:
        return [*self.chain(), KillAt(self.at, self.marker)]


class FailWide(Stage):
    """Raises StageError on frames wider than `width` (one video of a run fails by itself)."""

    name = "fail-wide"

    def __init__(self, width: int) -> None:
        self.width = width

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.data.shape[-1] > self.width:
            raise StageError(f"fail-wide: a frame {batch.data.shape[-1]} px wide")
        return batch


def failing_wide_chain() -> list[Stage]:
    return [FailWide(40)]


def unbuildable_in_workers() -> list[Stage]:
    """Builds in the parent (which plans) and fails in every worker process."""
    if multiprocessing.parent_process() is not None:
        raise ModelError("no such model: test-missing")
    return []
