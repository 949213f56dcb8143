"""Stop points inside stages: how a run's stop request (SIGINT/SIGTERM, `runtime.pipeline.StopRequest`) reaches
work that takes longer than the grace a host gives (RunPod: 5 s from SIGTERM to SIGKILL).

The runtime hands a stage a `StopCheck`, a callable that raises `Interrupted` once the run was asked to stop
(the optional `set_stop_check` hook, see `stages.base`); the stage calls it between its own units of work:
tiles, frames, frame pairs. On the CPU a single unit can itself take many seconds (one 64-px tile of
Real-ESRGAN x4plus is 23 RRDB blocks, ~350 convolutions), so there `layer_checks` also calls it before every
leaf module of the network. Python runs a signal handler only between bytecodes, so while a convolution runs in
C++ the handler waits for it to return; the next check then raises. The work between two checks is one layer of
one unit, whatever the batch or frame size.

Items of a batch (frame pairs) go through the CPU in chunks of at most `CPU_LAYER_PIXELS` pixels (`cpu_chunks`):
a 1080p pair alone, small frames together, so the work between two checks stays bounded while small frames
keep every core busy.

On a GPU the layers are queued asynchronously and a network call returns long before its work is done, so the
checks between units suffice there and the layers carry no hooks (nor do compiled or CUDA-graph nets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: raises `Interrupted` when the run should stop; returns otherwise
StopCheck = Callable[[], None]

#: On the CPU, the pixels one layer may cover between two stop checks. One RIFE pair at 192×108 leaves most of a
#: 16-core host idle (its layers are many small ops): a pair at a time ran interpolation at half the speed of the
#: whole batch there (issue 15's A/B, docs/benchmarks.md); one 1080p frame is about this many pixels.
CPU_LAYER_PIXELS = 1920 * 1088


def cpu_chunks(n: int, pixels: int) -> list[slice]:
    """Slices of `n` items of `pixels` pixels each, as many items per slice as `CPU_LAYER_PIXELS` allows (≥ 1)."""
    step = max(1, CPU_LAYER_PIXELS // max(1, pixels))
    return [slice(k, min(n, k + step)) for k in range(0, n, step)]


def never() -> None:
    """The check of a stage no run has made interruptible (used directly, in tests or benchmarks)."""
    return None


@contextmanager
def layer_checks(net: torch.nn.Module, check: StopCheck) -> Iterator[None]:
    """`check()` before each leaf module of `net` runs, while the block lasts. The hooks are added per call and
    removed after it, so a network shared by several stages (copies share weights) never calls another run's
    check; for `never` nothing is added."""
    if check is never:
        yield
        return

    def before(_module: torch.nn.Module, _args: object) -> None:
        check()

    handles = [m.register_forward_pre_hook(before) for m in net.modules() if next(m.children(), None) is None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
