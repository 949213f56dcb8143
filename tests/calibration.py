"""Time bounds that hold on a busy machine (issue 22, item 12): every time limit in the tests is a quiet-machine
figure multiplied by a slowdown factor measured here, never a fixed number of seconds.

The factor is the larger of two views of the machine's contention, and never below 1:
- a fixed single-threaded CPU workload, timed now (median of a few runs), against its time on a quiet 2-core
  runner (`QUIET_WORKLOAD_S`): what one thread of a test gets of a core, and how fast the core is;
- the 1-minute load average per CPU: the same contention, smoothed over the last minute, so that a quiet moment
  during the measurement does not hide a busy machine.
The figure is re-measured when older than `RECALIBRATE_S` (the load moves during an hour-long run).
`VIDPIPE_TEST_SLOWDOWN=F` forces the factor (CI on a known machine, or to reproduce a timeout).

tests/conftest.py scales every pytest-timeout limit and `run_cli` timeout by it and offers it as the
`calibration` and `scaled` fixtures; helpers outside fixtures import `scaled` from here (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass

#: iterations of the workload's integer loop (~45 ms of one quiet core)
WORKLOAD_ITERATIONS = 500_000
#: the workload's time on a quiet 2-core runner: its CPU time measured beside other work (which, unlike wall time,
#: contention does not stretch), min of 10 runs, on the 2-core CI machine of issue 22
QUIET_WORKLOAD_S = 0.045
#: runs per measurement; the median is kept
RUNS = 3
#: a measurement older than this is taken again
RECALIBRATE_S = 120.0
ENV_FORCE = "VIDPIPE_TEST_SLOWDOWN"


@dataclass(frozen=True, kw_only=True)
class Calibration:
    workload_s: float  # the workload's median wall time now
    load_per_cpu: float  # 1-minute load average / usable CPUs
    factor: float  # ≥ 1: what every quiet-machine time bound is multiplied by
    forced: bool = False  # the factor came from VIDPIPE_TEST_SLOWDOWN
    at: float = 0.0  # time.monotonic() of the measurement

    def scale(self, seconds: float) -> float:
        return seconds * self.factor

    def describe(self) -> str:
        how = (
            f"{ENV_FORCE}={self.factor:g}"
            if self.forced
            else f"workload {self.workload_s * 1e3:.0f} ms (quiet {QUIET_WORKLOAD_S * 1e3:.0f} ms), "
            f"load {self.load_per_cpu:.1f} per CPU"
        )
        return f"time bounds ×{self.factor:.2f} ({how})"


def _workload(n: int = WORKLOAD_ITERATIONS) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def measure() -> Calibration:
    now = time.monotonic()
    forced = os.environ.get(ENV_FORCE)
    if forced:
        return Calibration(workload_s=0.0, load_per_cpu=0.0, factor=max(1.0, float(forced)), forced=True, at=now)
    walls = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        _workload()
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    load = os.getloadavg()[0] / _cpus()
    return Calibration(workload_s=wall, load_per_cpu=load, factor=max(1.0, wall / QUIET_WORKLOAD_S, load), at=now)


_lock = threading.Lock()
_last: Calibration | None = None


def current() -> Calibration:
    """The latest calibration, measured again when older than RECALIBRATE_S."""
    global _last
    with _lock:
        if _last is None or time.monotonic() - _last.at > RECALIBRATE_S:
            _last = measure()
        return _last


def scaled(seconds: float) -> float:
    """A quiet-machine time bound, stretched for this machine's current load."""
    return current().scale(seconds)
