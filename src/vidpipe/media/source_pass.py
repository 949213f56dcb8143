"""The input file as a run will read it, for a pass over it before the main pass (`Stage.analyse_source`,
offered by `runtime.source_pass.analyse_sources`): the same range, deinterlacing and frame numbers (index 0 is
the first frame read), as RGB batches, ending where the run's writing ends (`--frames N`) plus the look-ahead
asked for."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

from ..frames import FrameBatch
from .info import MediaInfo
from .reader import ReaderOptions, VideoReader
from .yuv import PlanarBatch


@dataclass(frozen=True, slots=True)
class SourcePass:
    """The input as the run will read it: `reader` the run's reader options (its range included), `start` the
    first time the run writes (None: from the first frame read), `max_frames` how many it writes at most."""

    info: MediaInfo
    reader: ReaderOptions
    start: Fraction | None = None
    max_frames: int | None = None

    @property
    def path(self) -> str:
        return str(self.info.path)

    def batches(
        self, batch_size: int, after: int = 0, planar: bool = False, pin: bool = False
    ) -> Iterator[FrameBatch | PlanarBatch]:
        """RGB batches (no alpha, on the host) of the frames the run reads, numbered as the run numbers them;
        with `max_frames`, ending `after` frames past the last frame written. `planar`: the decoder's 4:2:0 planes
        instead where the reader offers them (`PlanarBatch`, pooled: hand each back with `done()`), for a pass
        that converts them on a GPU (swscale's RGB on the host bounded `--dewatermark auto`'s 1080p pass); RGB
        batches with `max_frames` (a batch is cut there). `pin`: the planes' pool page-locked (for CUDA)."""
        planar = planar and self.max_frames is None
        opts = replace(self.reader, batch_size=batch_size, keep_alpha=False, planar=planar, pin_memory=planar and pin)
        left: int | None = None  # frames still wanted once the last written one is read
        written = 0
        with VideoReader(self.info, opts) as reader:
            for batch in reader:
                assert planar or isinstance(batch, FrameBatch)  # planar=False: RGB batches
                if left is None and self.max_frames is not None:
                    times = batch.times()
                    for k, t in enumerate(times):
                        written += self.start is None or t >= self.start
                        if written == self.max_frames:
                            left = after + 1 + k  # frames of this batch up to the last written, then `after`
                            break
                if left is not None:
                    if left < len(batch):
                        batch = batch.slice(0, left)
                    left -= len(batch)
                if len(batch):
                    yield batch
                if left is not None and left <= 0:
                    return
