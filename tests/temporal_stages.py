"""The temporal engine's integer test stages (issue 15), shared by the engine's identity tests
(tests/schedule/test_temporal_engine.py) and the job tests that split a video into segments
(tests/jobs/test_job_temporal.py). Integer arithmetic makes every output exact, on the CPU and on CUDA, so any
split that feeds them their reach must write the whole run's frames bit for bit. Also: `Recorder` (a copy of
what reaches it) and the runners' whole-run reference (`recurrent_whole`)."""

from __future__ import annotations

from typing import Any

import torch

from vidpipe.frames import FrameBatch
from vidpipe.schedule.oom import OomPolicy, OomRunner
from vidpipe.schedule.temporal import RecurrentRunner, WindowRunner
from vidpipe.stages.base import Stage
from vidpipe.stages.temporal import RecurrentStage, State, WindowedStage


class RunningMean(RecurrentStage):
    """Each output is the mean of its frame and the P−1 before it (fewer at the start and after a cut). The state
    is those frames, so P−1 frames of pre-roll rebuild it exactly. `oom_on_call`: the n-th `step` raises an
    out-of-memory error once (`ooms` counts them)."""

    name = "running-mean"

    def __init__(self, p: int, *, oom_on_call: int | None = None) -> None:
        self.preroll = p - 1
        self.p = p
        self.calls = 0
        self.ooms = 0
        self.oom_on_call = oom_on_call

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "p": self.p}

    def step(self, frames: FrameBatch, state: State | None) -> tuple[FrameBatch, State]:
        self.calls += 1
        if self.calls == self.oom_on_call:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        held = state[0] if state is not None else frames.data[:0]
        outs = []
        for f in frames.data:
            held = torch.cat([held, f[None]])[-self.p :]
            outs.append(held.to(torch.int32).sum(0) // len(held))
        return frames.with_data(torch.stack(outs).to(frames.data.dtype)), (held,)


class MovingAverage(WindowedStage):
    """Each output is the mean of the frames within ±k of it that the window holds: with overlap ≥ k, every kept
    frame sees all of its neighbours (or the stream's end). `oom_on_call`: the n-th window raises an
    out-of-memory error once; `sizes` lists the frames of every window run."""

    name = "moving-average"

    def __init__(self, k: int, *, window: int, overlap: int, oom_on_call: int | None = None) -> None:
        self.k, self.window, self.overlap = k, window, overlap
        self.calls = 0
        self.ooms = 0
        self.oom_on_call = oom_on_call
        self.sizes: list[int] = []

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "k": self.k, "window": self.window, "overlap": self.overlap}

    def process_window(self, frames: FrameBatch) -> FrameBatch:
        self.calls += 1
        self.sizes.append(len(frames))
        if self.calls == self.oom_on_call:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        x = frames.data.to(torch.int32)
        n = len(frames)
        outs = [
            x[max(0, i - self.k) : min(n, i + self.k + 1)].sum(0) // (min(n, i + self.k + 1) - max(0, i - self.k))
            for i in range(n)
        ]
        return frames.with_data(torch.stack(outs).to(frames.data.dtype))


class Recorder(Stage):
    """Keeps a copy of every frame that reaches it: what the temporal stage before it gave the writer."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[FrameBatch] = []

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        self.seen.append(batch.with_data(batch.data.clone()))
        return batch


def runner_oom(size: int) -> OomRunner:
    return OomRunner(size, policy=OomPolicy(backoff_s=0.0), sleep=lambda _s: None, release=lambda _d: None)


def drive(runner: RecurrentRunner | WindowRunner, parts: list[FrameBatch]) -> FrameBatch:
    outs = [o for b in parts if (o := runner.process(b)) is not None]
    if (tail := runner.flush()) is not None:
        outs.append(tail)
    return FrameBatch.concat(outs)


def recurrent_whole(v: FrameBatch, p: int, cuts: tuple[int, ...] = ()) -> FrameBatch:
    return drive(RecurrentRunner(RunningMean(p), runner_oom(len(v)), hard_cuts=cuts), [v])
