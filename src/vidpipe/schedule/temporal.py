"""The temporal engine: drives recurrent and windowed stages (`vidpipe.stages.temporal`) over a stream of
batches, one process or one share of a video at a time, under the seed's OOM policy.

- `RecurrentRunner` carries the stage's state from batch to batch. Batches go through the scheduler's
  `OomRunner.run_stateful`: the state from before a sub-batch is kept (the stage's `step` is pure), so an
  out-of-memory retry re-runs the same frames from the same state. At a hard cut the state starts afresh when
  the stage asks for it: cuts given up front (`hard_cuts`, e.g. a share's known cuts) and those the run's cut
  detector settles on its `CutBoard` (`use_cuts`; the analysis stage runs first, so a frame's answer is final
  when the frame arrives here). Frames before `emit_from` are pre-roll: run, never written.
- `WindowRunner` buffers at most `T + 2 * overlap` frames (plus the batch being added), cuts the stream into
  windows of T kept frames with their context, and keeps or cross-fades the outputs per the stage's seam rule.
  T is the `OomRunner`'s batch size: an OOM re-runs the same kept frames as shorter windows (halved, then 1 on
  the last attempt), each with its full context.
- `feed_span` tells segmentation (jobs, several GPUs) which frames to decode for a share [start, end) of a
  video, from the reach `chain_reach` adds up over a chain's stages (jobs call both; multi-GPU shares are to),
  so nothing special-cases a stage.

Both runners emit only frames whose source index lies in [emit_from, emit_to): a share of a video decodes its
context, runs it, and writes its own frames alone. A job segment leaves them at their defaults (every frame
emitted) and drops what lies outside its time window after the whole chain instead
(`runtime.pipeline.TimeWindow`): each stage of a chain must pass on the context the next one needs, so per-stage
bounds would have to be worked out stage by stage, while one window at the chain's end holds for any chain, in
times that also hold across a rate change. What that costs is computing at most the chain's reach of frames on
each side of a segment that are then dropped. Over any split into shares and batches (and any window
length, for a stage whose output reaches no further than its overlap), the frames written are those of a run
over the whole video (tests/schedule/test_temporal_engine.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from fractions import Fraction

import torch

from ..errors import StageError
from ..frames import FrameBatch
from ..stages.base import Stage
from ..stages.cutboard import CutBoard
from ..stages.temporal import Reach, RecurrentStage, State, WindowedStage
from .oom import OomRunner


def feed_span(
    reach: Reach, start: int, end: int, *, total: int | None = None, hard_cuts: Collection[int] = ()
) -> tuple[int, int]:
    """Source frames [first, stop) to decode so frames [start, end) come out as in a whole run. A hard cut at or
    before `start` that resets the state (pass the cuts only for stages that reset at cuts) makes earlier frames
    unnecessary."""
    if not 0 <= start <= end:
        raise StageError(f"a share of a video must have 0 ≤ start ≤ end, got {start}..{end}")
    first = max(0, start - reach.before)
    first = max([first, *(c for c in hard_cuts if first < c <= start)])
    stop = end + reach.after
    return first, stop if total is None else min(total, stop)


def chain_reach(stages: Sequence[Stage], start: Fraction) -> Reach | None:
    """The source frames set-up `stages` need around a share's output (pre-roll and look-ahead): their reaches
    added (`Reach.__add__`), over a source whose first frame is at `start`. None when that sum would not count
    source frames: a stage that lays its own output grid (`segment_grid`, a rate change such as interpolation's)
    counts its frames from its first input frame, so another stage's pre-roll before it would move that grid,
    and a reach after it counts frames of that grid, not the source's: a job processes such a chain's input
    whole."""
    gridded = [s.segment_grid(start) is not None for s in stages]
    if any(gridded) and any(s.reach != Reach() for s, g in zip(stages, gridded, strict=True) if not g):
        return None
    return sum((s.reach for s in stages), Reach())


def _select(batch: FrameBatch, lo: int, hi: int | None) -> FrameBatch | None:
    """The frames of `batch` whose source index lies in [lo, hi) (indices increase within a batch)."""
    keep = [i for i, ix in enumerate(batch.index) if ix >= lo and (hi is None or ix < hi)]
    if not keep:
        return None
    if keep[-1] - keep[0] + 1 != len(keep):
        raise StageError(f"source indices of a batch are out of order: {batch.index[:8]}…")
    return batch if len(keep) == len(batch) else batch.slice(keep[0], keep[-1] + 1)


class RecurrentRunner:
    """Runs a `RecurrentStage` over batches in stream order (see the module docstring)."""

    def __init__(
        self,
        stage: RecurrentStage,
        oom: OomRunner,
        *,
        emit_from: int = 0,
        emit_to: int | None = None,
        hard_cuts: Iterable[int] = (),
    ) -> None:
        self.stage = stage
        self.oom = oom
        self.emit_from = emit_from
        self.emit_to = emit_to
        self.cuts = frozenset(hard_cuts) if stage.reset_at_cuts else frozenset()
        #: the run's detected cuts (`use_cuts`); None: only `hard_cuts`
        self.board: CutBoard | None = None
        self.state: State | None = None

    def use_cuts(self, board: CutBoard | None) -> None:
        """Read hard cuts from the run's board too (when the stage resets at cuts)."""
        self.board = board if self.stage.reset_at_cuts else None

    def _is_cut(self, frame: int) -> bool:
        return frame in self.cuts or (self.board is not None and self.board.hard_cut(frame))

    def snapshot(self) -> State | None:
        return self.state

    def restore(self, state: object) -> None:
        self.state = state  # type: ignore[assignment]

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        fed = _select(batch, 0, self.emit_to)  # frames past the share's end change nothing it writes
        if fed is None:
            return None
        out = self.oom.run_stateful(fed, self._run, self.snapshot, self.restore)
        return None if out is None else _select(out, self.emit_from, self.emit_to)

    def flush(self) -> FrameBatch | None:
        return None

    def _run(self, batch: FrameBatch) -> FrameBatch:
        parts: list[FrameBatch] = []
        start = 0
        cut = [self._is_cut(ix) for ix in batch.index]
        bounds = [i for i in range(1, len(batch)) if cut[i]]
        for stop in [*bounds, len(batch)]:
            piece = batch.slice(start, stop)
            if cut[start]:
                self.state = None
            out, self.state = self.stage.step(piece, self.state)
            if len(out) != len(piece):
                raise StageError(f"{self.stage.name}: step returned {len(out)} frames for {len(piece)}")
            parts.append(out)
            start = stop
        return FrameBatch.concat(parts)


class WindowRunner:
    """Runs a `WindowedStage` over batches in stream order (see the module docstring). `oom`'s batch size is the
    window's kept length T (the scheduler may plan it below the stage's `window`)."""

    def __init__(self, stage: WindowedStage, oom: OomRunner, *, emit_from: int = 0, emit_to: int | None = None):
        stage.check_window()
        self.stage = stage
        self.oom = oom
        self.emit_from = emit_from
        self.emit_to = emit_to
        #: single-frame views of the frames fed, positions [_base, _fed)
        self._frames: deque[FrameBatch] = deque()
        self._base = 0
        self._fed = 0
        #: position of the next window's first kept frame, once the first frame to write has arrived
        self._next: int | None = None
        #: position one past the last frame to write, once known
        self._end: int | None = None
        #: crossfade: a window's outputs past its kept frames, keyed by the position where they start
        self._tails: dict[int, FrameBatch] = {}
        #: the most frames held at once (memory is bounded by T + 2·overlap + one batch)
        self.peak_held = 0

    def use_cuts(self, board: CutBoard | None) -> None:
        """Windows run across cuts: a windowed stage declares no reset (its overlap sees both shots)."""
        return None

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        o = self.stage.overlap
        for i, ix in enumerate(batch.index):
            if self._end is not None and self._fed >= self._end + o:
                break  # context enough past the last frame to write
            if self.emit_to is not None and ix >= self.emit_to and self._end is None:
                self._end = self._fed
            if self._next is None and ix >= self.emit_from and self._end is None:
                self._next = self._fed
            self._frames.append(batch.slice(i, i + 1))
            self._fed += 1
        self.peak_held = max(self.peak_held, len(self._frames))
        return self._run_ready(final=False)

    def flush(self) -> FrameBatch | None:
        if self._end is None:
            self._end = self._fed
        out = self._run_ready(final=True)
        self._frames.clear()
        self._tails.clear()
        return out

    def _run_ready(self, *, final: bool) -> FrameBatch | None:
        o = self.stage.overlap
        parts: list[FrameBatch] = []
        while self._next is not None and (self._end is None or self._next < self._end):
            stop = self._next + self.oom.size
            if self._end is not None:
                stop = min(stop, self._end)
            if not final and self._fed < stop + o:
                break  # its right context has not arrived yet
            device = self._frames[0].device
            parts.extend(self.oom.run_ranges(stop - self._next, device, self._window_at(self._next)))
            self._next = stop
        # frames no later window needs: everything before the next one's left context
        keep_from = self._fed - o if self._next is None else self._next - o
        while self._frames and self._base < keep_from:
            self._frames.popleft()
            self._base += 1
        return FrameBatch.concat(parts) if parts else None

    def _window_at(self, origin: int) -> Callable[[int, int], FrameBatch]:
        """`fn(a, b)` for `run_ranges`: kept frames origin+a .. origin+b−1, run as one window with context."""

        def run(a: int, b: int) -> FrameBatch:
            lo, hi = origin + a, origin + b
            o = self.stage.overlap
            first = max(self._base, lo - o)
            last = min(self._fed, hi + o)
            frames = FrameBatch.concat([self._frames[p - self._base] for p in range(first, last)])
            fade = self.stage.seam == "crossfade" and not (self._end is not None and hi >= self._end)
            # only the outputs kept (and a crossfade's tail) are asked for: context frames' outputs are never used
            stop = min(last, hi + self.stage.fade) if fade else hi
            out = self.stage.process_part(frames, lo - first, stop - first)
            if len(out) != stop - lo:
                raise StageError(f"{self.stage.name}: {stop - lo} outputs of a window of {len(frames)} frames asked"
                                 f" for, {len(out)} given")  # fmt: skip
            kept = out.slice(0, hi - lo)
            if self.stage.seam == "crossfade":
                kept = self._crossfade(lo, kept)
                tail = out.slice(hi - lo, stop - lo)
                if fade and len(tail):
                    self._tails[hi] = tail
            return kept

        return run

    def _crossfade(self, lo: int, kept: FrameBatch) -> FrameBatch:
        """Blend the previous window's outputs for the first kept frames into these ones: weight (j+1)/(fade+1)
        for this window at the j-th frame past the seam."""
        tail = self._tails.pop(lo, None)
        if tail is None:
            return kept
        n = min(len(tail), len(kept))
        w = torch.arange(1, n + 1, device=kept.device, dtype=torch.float32) / (self.stage.fade + 1)
        w = w.view(n, 1, 1, 1)
        mixed = tail.data[:n].float() * (1 - w) + kept.data[:n].float() * w
        if not kept.data.is_floating_point():
            mixed = mixed.round()
        data = torch.cat([mixed.to(kept.data.dtype), kept.data[n:]])
        return kept.with_data(data)
