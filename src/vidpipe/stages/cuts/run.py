"""Run a cut detector over a file: probe, stream the reader's batches through it, return the events."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import torch

from ...media.probe import probe
from ...media.reader import OnCorrupt, ReaderOptions, VideoReader
from ...media.yuv import PlanarBatch
from ..base import StreamSpec
from .events import Event


class EventStage(Protocol):
    events: list[Event]
    planar_input: bool

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec: ...

    def process(self, batch: Any) -> Any: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CutRun:
    events: list[Event]
    frames: int
    rate: Fraction
    width: int
    height: int
    wall_s: float
    #: frames the reader dropped as damaged or missing (`on_corrupt="skip"`); frame numbers count the rest
    skipped: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


#: frames per batch read: 8 RGB 720p frames (22 MB) stay under glibc's largest mmap threshold (32 MB; 16 do not),
#: so RGB batch buffers are reused instead of mapped and faulted in afresh (measured ~0.7 ms a 720p frame)
BATCH = 8


def run_detector(
    path: Path,
    stage: EventStage,
    *,
    device: torch.device | None = None,
    batch_size: int = BATCH,
    on_corrupt: OnCorrupt = "fail",
) -> CutRun:
    """Stream `path` through `stage` and return its events. A stage with `planar_input` gets the decoder's 4:2:0
    planes on the CPU (where the source has them): the RGB conversion of every frame is skipped. `on_corrupt` is
    the reader's: damaged or missing frames stop the run, or are dropped and counted in `CutRun.skipped`."""
    info = probe(path)
    v = info.video
    w, h = v.display_size
    dev = device or torch.device("cpu")
    stage.setup(dev, StreamSpec(width=w, height=h, time_base=v.time_base, nominal_rate=v.rate, frames=v.frames))
    planar = dev.type == "cpu" and stage.planar_input
    t0 = time.perf_counter()
    n = 0
    opts = ReaderOptions(batch_size=batch_size, keep_alpha=False, planar=planar, on_corrupt=on_corrupt)
    with VideoReader(info, opts) as reader:
        for batch in reader:
            n += len(batch)
            if isinstance(batch, PlanarBatch):
                stage.process(batch)
                batch.done()  # the stage keeps no view of the pooled buffer
            else:
                stage.process(batch if dev.type == "cpu" else batch.with_data(batch.data.to(dev, non_blocking=True)))
    stage.flush()
    wall_s = time.perf_counter() - t0
    skipped = reader.stats.corrupt_skipped
    return CutRun(events=stage.events, frames=n, rate=v.rate, width=w, height=h, wall_s=wall_s, skipped=skipped)
