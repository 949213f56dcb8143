"""Timestamp planning for frame-rate changes, in exact `Fraction` arithmetic (seconds).

For every output frame the planner gives its exact time, its pts in the output time base, its display
duration, and where its pixels come from: source frame `src` when `tau == 0` (passed through untouched),
else the pair (`src`, `src + 1`) interpolated at `tau` in (0, 1).

Two targets:

* `fps=F`: a constant-rate grid `start + k/F` covering [start, end), where end is the source's end (last
  frame time plus its duration; `start + n/rate` for a constant-rate source). The output lasts as long as
  the input, so audio stays in sync: `ceil((end - start)·F)` frames; grid points after the last source
  frame hold it (`tau == 0`).
* `multi=N`: N-1 frames between each source pair. `n` source frames give `(n-1)·N + 1` frames (2 frames ×2
  → 3, one mid frame; 16 ×2 → 31): the last source frame is not followed by extra frames. Its `duration` is
  its own source duration instead (N output periods), so the durations still sum to the input's; a writer
  that stamps the last packet's duration keeps the container duration exact. `fill_tail=True` emits N-1
  held copies of it instead (n·N frames).

Whatever the target, the output durations sum to exactly `end - start`. Times never drift: each time is
computed from its index, never by adding up periods, and pts are rounded per frame from the exact time
(`Plan.exact` says whether any rounding happened, e.g. 60000/1001 fps in a 1/1000 time base).

RIFE HDv3 only makes the mid-point (τ = 1/2). `bisection_steps` rounds τ to the nearest dyadic value of a
given depth and lists the mid-point evaluations that reach it; `bisection_schedule` shares them between the
τ of one pair. 24→60 wants τ = 2/5 and 4/5 of the first pair: at depth 3 they become 3/8 (mid-points 1/2,
1/4, 3/8) and 3/4 (mid-points 1/2, 3/4), 1/2 being made once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..errors import StageError, UsageError

_HALF = Fraction(1, 2)
_ZERO = Fraction(0)


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    """One output frame. `time` and `duration` in seconds; `pts` in the plan's time base."""

    index: int
    time: Fraction
    pts: int
    duration: Fraction
    #: source frame index: the frame itself when `tau == 0`, else the left frame of the pair
    src: int
    #: position between `src` (0) and `src + 1` (1); 0 means pass `src` through untouched
    tau: Fraction

    @property
    def passthrough(self) -> bool:
        return self.tau == 0

    @property
    def pair(self) -> tuple[int, int] | None:
        return None if self.tau == 0 else (self.src, self.src + 1)


@dataclass(frozen=True, slots=True)
class Plan:
    frames: tuple[PlannedFrame, ...]
    time_base: Fraction
    #: constant output rate (fps target or multi over a constant-rate source); None for multi over VFR
    rate: Fraction | None
    start: Fraction
    end: Fraction
    #: every pts is exactly `time / time_base` (no rounding)
    exact: bool

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> Fraction:
        return self.end - self.start


def _frac_gcd(a: Fraction, b: Fraction) -> Fraction:
    """Largest g with a/g and b/g both integers (gcd(0, b) = |b|)."""
    return Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


def _check_target(fps: Fraction | None, multi: int | None) -> None:
    if (fps is None) == (multi is None):
        raise UsageError("give exactly one target: fps=Fraction(...) or multi=N")
    if fps is not None and (not isinstance(fps, Fraction | int) or fps <= 0):
        raise UsageError(f"target fps must be a positive Fraction (e.g. Fraction(60000, 1001)), got {fps!r}")
    if multi is not None and (not isinstance(multi, int) or isinstance(multi, bool) or multi < 1):
        raise UsageError(f"multi must be an integer ≥ 1 (2, 4, …), got {multi!r}")


class Planner:
    """Streaming planner: `push` each source frame time in order, then `finish` once.

    Each call returns the output frames that became final. A frame is held back until the next output time is
    known (its duration is the gap to it), so frames come out at most one source frame late; the source frames
    a returned frame needs (`src`, and `src + 1` when interpolated) have always been pushed already.
    """

    def __init__(
        self,
        *,
        time_base: Fraction,
        fps: Fraction | None = None,
        multi: int | None = None,
        start: Fraction | None = None,
        fill_tail: bool | None = None,
    ) -> None:
        """`start` (fps target only): where the output grid begins, default the first source time.
        `fill_tail`: emit frames after the last source frame up to `end` (default: True for fps, False for
        multi)."""
        _check_target(fps, multi)
        if not isinstance(time_base, Fraction) or time_base <= 0:
            raise UsageError(f"time_base must be a positive Fraction, got {time_base!r}")
        if multi is not None and start is not None:
            raise UsageError("start applies to an fps target only; multi starts at the first source frame")
        self.time_base = time_base
        self.fps = Fraction(fps) if fps is not None else None
        self._period = 1 / self.fps if self.fps is not None else None
        self.multi = multi
        self.start = None if start is None else Fraction(start)
        self.fill_tail = (fps is not None) if fill_tail is None else fill_tail
        self.end: Fraction | None = None
        #: False once some pts had to be rounded
        self.exact = True
        self._n = 0
        self._last: Fraction | None = None
        self._gap: Fraction | None = None  # last source interval, the default duration of the last frame
        self._emitted = 0  # frames emitted, the pending one included: the next grid index
        self._pending: tuple[Fraction, int, Fraction] | None = None  # (time, src, tau) awaiting its duration
        self._index = 0  # next finalised output index
        self._last_pts: int | None = None
        self._finished = False

    @property
    def n_src(self) -> int:
        return self._n

    def _grid(self, k: int) -> Fraction:
        # From the index, never by accumulation: no drift however long the video.
        assert self._period is not None and self.start is not None
        return self.start + k * self._period

    def _emit(self, time: Fraction, src: int, tau: Fraction, out: list[PlannedFrame]) -> None:
        if self._pending is not None:
            out.append(self._finalise(*self._pending, time - self._pending[0]))
        self._pending = (time, src, tau)
        self._emitted += 1

    def _finalise(self, time: Fraction, src: int, tau: Fraction, duration: Fraction) -> PlannedFrame:
        ticks = time / self.time_base
        if ticks.denominator != 1:
            self.exact = False
        pts = math.floor(ticks + _HALF)  # nearest tick, halves up: deterministic, per frame
        if self._last_pts is not None and pts <= self._last_pts:
            raise UsageError(
                f"time base {self.time_base} is too coarse for output frames {duration}s apart "
                f"(two frames at pts {pts}); use a finer time base"
            )
        self._last_pts = pts
        frame = PlannedFrame(index=self._index, time=time, pts=pts, duration=duration, src=src, tau=tau)
        self._index += 1
        return frame

    def push(self, time: Fraction) -> list[PlannedFrame]:
        """Source frame number `n_src` is shown at `time` (seconds, exact)."""
        if self._finished:
            raise StageError("Planner.push after finish")
        if not isinstance(time, Fraction):
            time = Fraction(time)
        prev = self._last
        if prev is not None and time <= prev:
            raise StageError(f"source frame times must increase: frame {self._n} at {time} after {prev}")
        out: list[PlannedFrame] = []
        i = self._n - 1  # index of the frame at `prev`
        if self.start is None:
            self.start = time
        if self.multi is not None:
            if prev is not None:
                gap = time - prev
                for j in range(self.multi):
                    self._emit(prev + gap * j / self.multi, i, Fraction(j, self.multi), out)
        else:
            while (t := self._grid(self._emitted)) < time:
                if prev is None:  # grid points before the first source frame hold it
                    self._emit(t, 0, _ZERO, out)
                else:
                    self._emit(t, i, (t - prev) / (time - prev), out)
        if prev is not None:
            self._gap = time - prev
        self._last = time
        self._n += 1
        return out

    def finish(self, end: Fraction | None = None) -> list[PlannedFrame]:
        """End of the source: `end` = last frame time + its duration (default: the last source interval)."""
        if self._finished:
            raise StageError("Planner.finish called twice")
        self._finished = True
        last = self._last
        if last is None:
            return []
        if end is None:
            if self._gap is None:
                raise UsageError("a single source frame needs an explicit end time")
            end = last + self._gap
        end = Fraction(end)
        if end <= last:
            raise UsageError(f"end {end} must be after the last source frame time {last}")
        self.end = end
        out: list[PlannedFrame] = []
        i = self._n - 1
        if self.multi is not None:
            self._emit(last, i, _ZERO, out)
            if self.fill_tail:
                for j in range(1, self.multi):
                    self._emit(last + (end - last) * j / self.multi, i, _ZERO, out)
        else:
            while (t := self._grid(self._emitted)) < end and (self.fill_tail or t <= last):
                self._emit(t, i, _ZERO, out)
        if self._pending is not None:
            out.append(self._finalise(*self._pending, end - self._pending[0]))
            self._pending = None
        return out


def _default_time_base(
    times: Iterable[Fraction], end: Fraction, fps: Fraction | None, multi: int | None, start: Fraction | None
) -> Fraction:
    """The coarsest time base in which every output time is a whole number of ticks."""
    if fps is not None:
        return _frac_gcd(Fraction(start or 0), 1 / Fraction(fps))
    assert multi is not None
    g = Fraction(end)
    for t in times:
        g = _frac_gcd(g, Fraction(t))
    return g / multi


def _run(planner: Planner, times: Iterable[Fraction], end: Fraction, rate: Fraction | None) -> Plan:
    frames: list[PlannedFrame] = []
    for t in times:
        frames.extend(planner.push(t))
    frames.extend(planner.finish(end))
    assert planner.start is not None  # set by the first push
    return Plan(
        frames=tuple(frames),
        time_base=planner.time_base,
        rate=rate,
        start=planner.start,
        end=end,
        exact=planner.exact,
    )


def plan_constant(
    rate: Fraction,
    count: int,
    *,
    start: Fraction = Fraction(0),
    fps: Fraction | None = None,
    multi: int | None = None,
    time_base: Fraction | None = None,
    fill_tail: bool | None = None,
) -> Plan:
    """Plan for `count` source frames at constant `rate` from `start` (frame i at `start + i/rate`)."""
    _check_target(fps, multi)
    if not isinstance(rate, Fraction | int) or rate <= 0:
        raise UsageError(f"source rate must be a positive Fraction, got {rate!r}")
    if count < 1:
        raise UsageError(f"source frame count must be ≥ 1, got {count}")
    rate, start = Fraction(rate), Fraction(start)
    end = start + count / rate
    # multi over a constant rate is the grid start + k/(N·rate), like an fps target
    out_rate = Fraction(fps) if fps is not None else rate * (multi or 1)
    if time_base is None:
        time_base = _frac_gcd(start, 1 / out_rate)
    planner = Planner(
        time_base=time_base,
        fps=fps,
        multi=multi,
        start=start if fps is not None else None,
        fill_tail=fill_tail,
    )
    return _run(planner, (start + i / rate for i in range(count)), end, out_rate)


def plan_times(
    times: Sequence[Fraction],
    *,
    end: Fraction | None = None,
    fps: Fraction | None = None,
    multi: int | None = None,
    start: Fraction | None = None,
    time_base: Fraction | None = None,
    fill_tail: bool | None = None,
) -> Plan:
    """Plan for source frames shown at `times` (seconds, increasing; VFR allowed). `end` = when the last frame
    stops showing (default: last time + the last interval)."""
    _check_target(fps, multi)
    if not times:
        raise UsageError("no source frame times")
    if end is None:
        if len(times) < 2:
            raise UsageError("a single source frame needs an explicit end time")
        end = times[-1] + (times[-1] - times[-2])
    end = Fraction(end)
    if time_base is None:
        first = Fraction(times[0]) if start is None else Fraction(start)
        time_base = _default_time_base(times, end, fps, multi, first)
    planner = Planner(time_base=time_base, fps=fps, multi=multi, start=start, fill_tail=fill_tail)
    return _run(planner, (Fraction(t) for t in times), end, Fraction(fps) if fps is not None else None)


# ------------------------------------------------------------------------------ HDv3: mid-point bisection


@dataclass(frozen=True, slots=True, order=True)
class MidStep:
    """One mid-point evaluation within a pair: the frame at `mid` = model(frame at `left`, frame at `right`),
    τ = 1/2. Positions are τ within the pair; 0 and 1 are the source frames themselves. `level` 1 is the first
    split (mid 1/2); steps of one level are independent of each other, so a stage can batch them."""

    level: int
    mid: Fraction
    left: Fraction
    right: Fraction


def nearest_dyadic(tau: Fraction, depth: int) -> Fraction:
    """τ rounded to the nearest multiple of 1/2**depth (halves up). May be 0 or 1: a source frame."""
    if depth < 0:
        raise UsageError(f"bisection depth must be ≥ 0, got {depth}")
    tau = Fraction(tau)
    if not 0 <= tau <= 1:
        raise UsageError(f"tau must be in [0, 1], got {tau}")
    d = 2**depth
    return Fraction(math.floor(tau * d + _HALF), d)


def bisection_steps(tau: Fraction, depth: int) -> tuple[Fraction, list[MidStep]]:
    """(τ', steps): τ' is the dyadic τ actually produced, `steps` the mid-point evaluations, in order, that
    make it. No steps when τ' is 0 or 1 (use the source frame); fewer than `depth` when τ' is coarser."""
    target = nearest_dyadic(tau, depth)
    steps: list[MidStep] = []
    lo, hi, level = Fraction(0), Fraction(1), 0
    if target in (lo, hi):
        return target, steps
    while True:
        level += 1
        mid = (lo + hi) / 2
        steps.append(MidStep(level=level, mid=mid, left=lo, right=hi))
        if mid == target:
            return target, steps
        lo, hi = (mid, hi) if target > mid else (lo, mid)


def bisection_schedule(taus: Iterable[Fraction], depth: int) -> tuple[dict[Fraction, Fraction], list[MidStep]]:
    """For the τ wanted from one pair: {τ: τ'} and the union of their steps, each once, level by level."""
    approx: dict[Fraction, Fraction] = {}
    steps: set[MidStep] = set()
    for tau in taus:
        t2, s = bisection_steps(tau, depth)
        approx[Fraction(tau)] = t2
        steps.update(s)
    return approx, sorted(steps)
