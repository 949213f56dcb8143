"""Timing shared by the model benchmarks: CUDA events around many calls after a warm-up (the wall clock on the
CPU, where calls return when their work is done)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ..errors import UsageError


def timed_seconds(call: Callable[[], object], iters: int, device: torch.device) -> float:
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(iters):
            call()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    for _ in range(iters):
        call()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000


def steady_rate(
    call: Callable[[], object], device: torch.device, *, seconds: float = 3.0, warmup: int = 3
) -> tuple[float, float]:
    """(calls per second in steady state, warm-up seconds): warm-up calls (compilation, autotuning, cuDNN
    planning) are timed apart, then enough calls to fill about `seconds`."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warm = time.perf_counter() - t0
    once = timed_seconds(call, 3, device) / 3
    iters = max(5, int(seconds / max(once, 1e-4)))
    return iters / timed_seconds(call, iters, device), warm


def check_gpu_modes(device: torch.device, modes: Sequence[str], valid: Sequence[str], what: str) -> None:
    """Model benchmarks measure GPU speed in named execution modes: refuse anything else up front."""
    if device.type != "cuda":
        raise UsageError(f"bench {what} measures GPU speed; run it where a CUDA device exists")
    bad = [m for m in modes if m not in valid]
    if bad:
        raise UsageError(f"invalid mode {bad[0]!r}; valid: {', '.join(valid)}")


#: bench mode → torch.compile mode: max-autotune (kernel choice by timing) with or without CUDA graphs, and
#: reduce-overhead (default kernels in CUDA graphs: minutes less compilation)
COMPILE_MODES = {
    "compile": "max-autotune-no-cudagraphs",
    "compile-graphs": "max-autotune",
    "reduce-overhead": "reduce-overhead",
}


def compiled(net: torch.nn.Module, mode: str) -> Callable[..., torch.Tensor]:
    """The module as a bench mode runs it: eager, or torch.compile in one of `COMPILE_MODES`; shapes are static
    in a benchmark, so `dynamic=False`."""
    if mode not in COMPILE_MODES:
        return net
    return torch.compile(net, mode=COMPILE_MODES[mode], dynamic=False)  # type: ignore[return-value]


def release(device: torch.device) -> None:
    """Between modes: drop cached blocks and compiled graphs so each mode starts clean."""
    torch.cuda.empty_cache()
    torch._dynamo.reset()
