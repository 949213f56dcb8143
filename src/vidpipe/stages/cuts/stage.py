"""`cuts`: cut detection as an analysis stage of `vidpipe run` (`--cuts PRESET|transnetv2`), in the same pass
as the other stages, on the frames as decoded (it runs first).

Frames go through unchanged (the same tensors, regrouped into other batches). The stage holds each frame back
until its detector's events about it are final (`CutDetector.settled`, `TransNetV2Detector.settled`), then
settles it on the run's `CutBoard` (`use_cuts`) and lets it go: a stage after this one that reads the board
about a frame it has been given gets the final answer. On the board, a frame is after a hard cut when an event
says the frame starts a new shot, and in a soft transition when the pair it ends touches a dissolve or fade
(from the frame before the transition's first frame to the frame after its last), as interpolation across that
pair would show a ghost of both shots.

The hold is the detector's look-ahead: `SETTLE_LAG` (40) frames for the classical detector, 75 for TransNetV2
(a window predicts 50 frames once 25 more have arrived), longer only while a transition is still open. It is
capped at `HOLD_FACTOR` × that lag, so memory stays bounded through a long black: past the cap the oldest frames
leave with what is known then (counted in `report()` as `settled_early`; the board's answer for them never
changes, though the final events may then differ for those frames). The manifest gets the detector's final
events (`report()`), as `vidpipe cuts` writes them.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import torch

from ...errors import UsageError
from ...frames import FrameBatch
from ..base import Reach, Stage, StreamSpec
from ..cutboard import BoardCut, CutBoard
from . import transnetv2 as tn
from .detector import SETTLE_LAG, CutDetector, CutOptions
from .events import Event
from .presets import PRESET_NAMES

#: what `--cuts` takes besides `off`: a classical detector preset, or TransNetV2
DETECTORS: Final = (*PRESET_NAMES, "transnetv2")
#: frames TransNetV2 looks ahead before a frame's prediction: its window reaches CONTEXT frames past the STEP
#: frames it predicts
TRANSNET_LAG: Final = tn.STEP + tn.CONTEXT
#: the most frames held, as a multiple of the detector's look-ahead (see the module docstring)
HOLD_FACTOR: Final = 3


class Cuts(Stage):
    """Analysis stage: frames through unchanged, cut events out (`report()`), the run's `CutBoard` filled."""

    name = "cuts"
    unit = "frame_pair"
    detects_cuts = True

    def __init__(self, detector: str = "default") -> None:
        if detector not in DETECTORS:
            raise UsageError(f"invalid cut detector {detector!r}; valid: off, {', '.join(DETECTORS)}")
        self.detector = detector
        self.lag = TRANSNET_LAG if detector == "transnetv2" else SETTLE_LAG
        self._det = self._make()
        self.unit = self._det.unit
        self._reach = Reach(before=self._det.context, after=self.lag)
        self.context = self._reach.before + self._reach.after
        self._board: CutBoard | None = None
        self._reset()

    def _make(self) -> CutDetector | tn.TransNetV2Detector:
        if self.detector == "transnetv2":
            return tn.TransNetV2Detector(batch_windows=1)  # a window runs as soon as it can: the hold stays short
        return CutDetector(CutOptions(preset=self.detector))

    def _reset(self) -> None:
        self._held: deque[FrameBatch] = deque()
        self._seen = 0  # frames fed to the detector
        self._released = 0  # frames let go (settled)
        self._prev: int | None = None  # source index of the last frame settled
        self._done = False
        self.peak_held = 0
        self.settled_early = 0

    # -- Stage contract --
    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self._det = self._make()  # a fresh detector per run (a copy of this stage shares none of its state)
        self._det.setup(device, spec)
        self._reset()
        return spec

    def use_cuts(self, board: CutBoard | None) -> None:
        self._board = board

    @property
    def reach(self) -> Reach:
        """Its decisions look `before` frames back (the detector's window) and `lag` frames ahead."""
        return self._reach

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "detector": self.detector, "settings": self._det.signature()}

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        self._det.process(batch)
        self._held.append(batch)
        self._seen += len(batch)
        self.peak_held = max(self.peak_held, self._seen - self._released)
        upto = self._det.settled()
        if self._seen - upto > HOLD_FACTOR * self.lag:
            forced = self._seen - HOLD_FACTOR * self.lag
            self.settled_early += max(0, forced - max(upto, self._released))
            upto = forced
        return self._release(upto, self._det.known_events())

    def flush(self) -> FrameBatch | None:
        self._det.flush()
        self._done = True
        return self._release(self._seen, self._det.known_events())

    def report(self) -> dict[str, Any]:
        """The detector's events (as `vidpipe cuts` writes them; final after the stream's end) and how long
        frames were held."""
        events = self._det.known_events()
        return {
            "stage": self.name,
            "detector": self.detector,
            "events": [e.to_json() for e in events],
            "hard_cuts": sum(e.kind == "hard" for e in events),
            "soft_transitions": sum(e.kind == "soft" for e in events),
            "frames": self._seen,
            "final": self._done,
            "lookahead_frames": self.lag,
            "peak_held_frames": self.peak_held,
            "settled_early": self.settled_early,
        }

    # -- frames out --
    def _release(self, upto: int, events: list[Event]) -> FrameBatch | None:
        """Frames at stream positions before `upto` leave, each settled on the board first."""
        n = upto - self._released
        parts: list[FrameBatch] = []
        while n > 0 and self._held:
            b = self._held[0]
            if len(b) <= n:
                parts.append(self._held.popleft())
                n -= len(b)
            else:
                parts.append(b.slice(0, n))
                self._held[0] = b.slice(n, len(b))
                n = 0
        if not parts:
            return None
        out = parts[0] if len(parts) == 1 else FrameBatch.concat(parts)
        self._released += len(out)
        self._settle(out.index, events)
        return out

    def _settle(self, frames: list[int], events: list[Event]) -> None:
        if self._board is None:
            self._prev = frames[-1]
            return
        lo, hi = frames[0], frames[-1]
        hard = {e.frame: e.score for e in events if e.kind == "hard" and lo <= e.frame <= hi}
        soft = [
            (e.start, e.end, e.score)
            for e in events
            if e.kind == "soft" and e.start is not None and e.end is not None and e.start <= hi and e.end + 1 >= lo
        ]
        for f in frames:
            prev = f - 1 if self._prev is None else self._prev
            cut = None
            if f in hard:
                cut = BoardCut("hard", hard[f])
            else:
                # the pair (prev, f) touches a transition's frames
                score = next((sc for s, e, sc in soft if s <= f and prev <= e), None)
                cut = BoardCut("soft", score) if score is not None else None
            self._board.settle(f, cut)
            self._prev = f
