"""An analysis pass over the input file before the main pass, for stages that look at it as a whole first
(`Stage.analyse_source`: `--dewatermark auto` detects its marks over the whole input, as `vidpipe watermark
detect` does, then removes them as the user's own).

The pass reads the frames the run's reader will give (same range, deinterlacing, frame numbers: index 0 is the
first frame read) as RGB batches, restricted to those the run writes (`--start/--duration`: the reader's range;
`--frames N`: N frames from the window's start, plus the look-ahead the stage asks for). Only a stage that
receives the source's frames is offered the pass: one after a stage that changes frames (anything but an
analysis-only stage) is not, and keeps its own way (per window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..media.info import MediaInfo
from ..media.reader import ReaderOptions
from ..media.source_pass import SourcePass

if TYPE_CHECKING:
    from ..stages.base import Stage
    from .pipeline import RunOptions


def analyse_sources(stages: Sequence[Stage], info: MediaInfo, reader: ReaderOptions, options: RunOptions) -> None:
    """Offer the pass (`Stage.analyse_source`) to each stage that gets the source's frames: those up to the
    first that changes frames (itself included)."""
    from ..stages.registry import STAGES

    window, trim = options.window, options.writer.trim
    source = SourcePass(
        info,
        reader,
        start=window.start if window is not None else None,
        max_frames=trim.max_frames if trim is not None else None,
    )
    for stage in stages:
        stage.analyse_source(source)
        entry = STAGES.get(stage.name)
        if entry is None or not entry.analysis_only:
            return
