"""Run a cut detector over a file: probe, stream the reader's batches through it, return the events."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import torch

from ...frames import FrameBatch
from ...media.probe import probe
from ...media.reader import ReaderOptions, VideoReader
from ..base import StreamSpec
from .events import Event


class EventStage(Protocol):
    events: list[Event]

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec: ...

    def process(self, batch: FrameBatch) -> FrameBatch | None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CutRun:
    events: list[Event]
    frames: int
    rate: Fraction
    width: int
    height: int
    wall_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def run_detector(path: Path, stage: EventStage, *, device: torch.device | None = None, batch_size: int = 8) -> CutRun:
    info = probe(path)
    v = info.video
    w, h = v.display_size
    dev = device or torch.device("cpu")
    stage.setup(dev, StreamSpec(width=w, height=h, time_base=v.time_base, nominal_rate=v.rate, frames=v.frames))
    t0 = time.perf_counter()
    n = 0
    with VideoReader(info, ReaderOptions(batch_size=batch_size, keep_alpha=False)) as reader:
        for batch in reader:
            n += len(batch)
            stage.process(batch if dev.type == "cpu" else batch.with_data(batch.data.to(dev, non_blocking=True)))
    stage.flush()
    return CutRun(events=stage.events, frames=n, rate=v.rate, width=w, height=h, wall_s=time.perf_counter() - t0)
