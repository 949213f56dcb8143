"""Temporal stages: what a stage whose output frame depends on other frames declares. The engine that drives
them (carried state, windows, pre-roll, OOM retries) is `vidpipe.schedule.temporal`.

Two shapes (docs/architecture.md, "Temporal engine"):
- **Recurrent** (RVM matting): state carried from frame to frame. `step(frames, state) -> (frames, state)` is a
  pure function of its arguments: it never changes `state`'s tensors in place, so the engine keeps the state
  from before a call and an out-of-memory retry re-runs the same frames from the same state. `state` is None at
  the start of the stream, after a hard cut (when `reset_at_cuts`) and at a mid-stream start before the
  pre-roll; the stage builds its initial state from the first frames it sees. `preroll` frames are fed before
  the first frame a run writes when it starts mid-video (a job segment, one GPU's share): their outputs are
  dropped; they only bring the state where a run from the start would have it.
- **Windowed** (BasicVSR++): `process_window(frames)` maps a window of consecutive frames to as many output
  frames; the engine feeds windows of `window` kept frames with up to `overlap` frames of context on each side
  (fewer at the stream's ends), keeps each window's kept frames, and at the seams either picks them (`pick`) or
  blends the last `fade` context outputs of one window into the first kept outputs of the next (`crossfade`).
  Memory is bounded by `window + 2 * overlap` frames, never by the video's length; on out-of-memory the window
  shrinks under the seed's policy (halved, then 1 kept frame on the last attempt), over the same frames.

Both declare their `reach`: the frames they need before the first and after the last frame they output. Job
segments and multi-GPU shares ask `schedule.temporal.feed_span` for the frames to decode from it, and never
special-case a stage.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import StageError, UsageError
from ..frames import FrameBatch
from .base import Reach, Stage

#: a recurrent stage's carried state: tensors on the stage's device (None: start afresh)
State = tuple[torch.Tensor, ...]

#: how a windowed stage's outputs meet at a window boundary
Seam = Literal["pick", "crossfade"]


class _EngineDriven(Stage):
    """A temporal stage is a `Stage` whose process/flush the engine's runners provide (`schedule.temporal`): it
    declares its shape instead, and is never called batch by batch directly."""

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        raise StageError(f"stage {self.name} runs through the temporal engine (vidpipe.schedule.temporal)")

    @property
    def stateful(self) -> bool:
        """Its output frame depends on earlier frames (a carried state, a window) even with no `context` held: one
        copy never serves two videos (runtime.multi), whatever its pre-roll."""
        return True


class RecurrentStage(_EngineDriven):
    """A stage that carries state from frame to frame (see the module docstring)."""

    name: str = "recurrent"
    #: frames fed (and not written) before a mid-stream start so the state matches a run from the start
    preroll: int = 0
    #: start afresh at a hard cut (a new shot shares nothing with the last one)
    reset_at_cuts: bool = True

    @property
    def reach(self) -> Reach:
        return Reach(before=self.preroll)

    def probe_call(self, batch: FrameBatch) -> object:
        """The cost probe's unit: a step over the batch from a fresh state."""
        return self.step(batch, None)

    @abstractmethod
    def step(self, frames: FrameBatch, state: State | None) -> tuple[FrameBatch, State]:
        """Output frames for `frames` (as many, same pts and indices) and the state after the last one.
        Must not modify `state`'s tensors in place."""

    def step_many(self, frames: Sequence[FrameBatch], states: Sequence[State | None]) -> list[tuple[FrameBatch, State]]:
        """`step` over several independent streams at once (cross-video batching, `schedule.crossvideo`): entry i
        is `step(frames[i], states[i])`, each stream with its own state. The runtime calls it only for streams
        whose copies of the stage have one signature and whose batches have one shape (frames, channels, size,
        dtype), so a stage whose network takes a batch dimension may run them as one batch (`Matte`: B videos ×
        T frames). Same purity as `step`. Default: a loop over `step`."""
        return [self.step(f, s) for f, s in zip(frames, states, strict=True)]


class WindowedStage(_EngineDriven):
    """A stage that computes a window of frames at once (see the module docstring)."""

    name: str = "windowed"
    #: kept frames per window (T), before any out-of-memory shrink
    window: int = 16
    #: context frames fed on each side of the kept ones
    overlap: int = 0
    seam: Seam = "pick"
    #: with `crossfade`, frames blended at each seam (≤ overlap)
    fade: int = 0

    @property
    def reach(self) -> Reach:
        return Reach(before=self.overlap, after=self.overlap)

    def check_window(self) -> None:
        """The declarations are consistent (the engine calls this before the first window)."""
        if self.window < 1:
            raise UsageError(f"{self.name}: window must be ≥ 1 frame, got {self.window}")
        if self.overlap < 0:
            raise UsageError(f"{self.name}: overlap must be ≥ 0 frames, got {self.overlap}")
        if self.seam not in ("pick", "crossfade"):
            raise UsageError(f"{self.name}: seam must be 'pick' or 'crossfade', got {self.seam!r}")
        if self.seam == "crossfade" and not 1 <= self.fade <= self.overlap:
            raise UsageError(f"{self.name}: a crossfade needs 1 ≤ fade ≤ overlap ({self.overlap}), got {self.fade}")

    def probe_call(self, batch: FrameBatch) -> object:
        """The cost probe's unit: the batch as one window."""
        return self.process_window(batch)

    @abstractmethod
    def process_window(self, frames: FrameBatch) -> FrameBatch:
        """Output frames for a window of consecutive frames: as many, in order, same pts and indices."""

    def process_part(self, frames: FrameBatch, start: int, stop: int) -> FrameBatch:
        """The outputs of frames[start:stop] only, each computed with the whole window as its context: what the
        engine keeps of a window (its kept frames, and a crossfade's tail). By default `process_window`'s outputs,
        sliced; a stage whose per-frame output work is heavy (BasicVSR++'s ×4 reconstruction) computes only these
        frames' outputs instead, the same values."""
        return self.process_window(frames).slice(start, stop)
