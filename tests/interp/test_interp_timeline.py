"""The timestamp planner: frame counts, exact times and pts, pairs and τ, durations, zero drift, streaming,
and HDv3's mid-point bisection."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from fractions import Fraction as Fr

import pytest

from vidpipe.errors import StageError, UsageError
from vidpipe.stages.timeline import (
    MidStep,
    Plan,
    Planner,
    bisection_schedule,
    bisection_steps,
    nearest_dyadic,
    plan_constant,
    plan_times,
)

NTSC_FILM = Fr(24000, 1001)
NTSC_60 = Fr(60000, 1001)


def check_plan(plan: Plan, times: Sequence[Fr]) -> None:
    """Every invariant a plan must hold against its source times (independent of how it was computed)."""
    n = len(times)
    frames = plan.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert sum(f.duration for f in frames) == plan.end - plan.start  # output lasts exactly as the input
    for a, b in itertools.pairwise(frames):
        assert b.time == a.time + a.duration and a.duration > 0
        assert b.pts > a.pts
    assert frames[-1].time + frames[-1].duration == plan.end
    for f in frames:
        assert plan.start <= f.time < plan.end
        assert f.pts == math.floor(f.time / plan.time_base + Fr(1, 2))
        assert 0 <= f.tau < 1 and 0 <= f.src < n
        if f.tau:
            t0, t1 = times[f.src], times[f.src + 1]
            assert t0 < f.time < t1 and f.tau == (f.time - t0) / (t1 - t0)
            assert f.pair == (f.src, f.src + 1) and not f.passthrough
        else:
            # a source frame shown at its own time, or held after the last / before the first one
            assert (
                f.time == times[f.src] or (f.src == n - 1 and f.time > times[-1]) or (f.src == 0 and f.time < times[0])
            )
            assert f.pair is None and f.passthrough


def grid(rate: Fr, n: int, start: Fr = Fr(0)) -> list[Fr]:
    return [start + i / rate for i in range(n)]


def test_two_frames_times_two_is_one_mid_frame() -> None:
    plan = plan_constant(Fr(24), 2, multi=2)
    assert [(f.src, f.tau) for f in plan.frames] == [(0, 0), (0, Fr(1, 2)), (1, 0)]
    assert [f.pts for f in plan.frames] == [0, 1, 2] and plan.time_base == Fr(1, 48)
    assert sum(1 for f in plan.frames if f.tau) == 1
    check_plan(plan, grid(Fr(24), 2))


@pytest.mark.parametrize("n", [2, 3, 16, 25])
@pytest.mark.parametrize("multi", [1, 2, 3, 4])
def test_multi_gives_n_minus_1_times_multi_plus_1(n: int, multi: int) -> None:
    plan = plan_constant(Fr(24), n, multi=multi)
    assert len(plan) == (n - 1) * multi + 1  # 16 ×2 → 31: no frames after the last source frame
    assert plan.frames[-1].duration == Fr(1, 24)  # …which keeps its own duration: the total is unchanged
    assert plan.rate == 24 * multi and plan.exact
    check_plan(plan, grid(Fr(24), n))
    tail = plan_constant(Fr(24), n, multi=multi, fill_tail=True)
    assert len(tail) == n * multi and all(f.src == n - 1 for f in tail.frames[-multi:])
    check_plan(tail, grid(Fr(24), n))


def test_24_to_60_exact_count_and_pts() -> None:
    plan = plan_constant(Fr(24), 24, fps=Fr(60))  # one second
    assert len(plan) == 60 and plan.time_base == Fr(1, 60) and plan.exact
    assert [f.pts for f in plan.frames] == list(range(60))
    assert [f.time for f in plan.frames] == [Fr(k, 60) for k in range(60)]
    # 5 outputs per 2 sources: τ 0, 2/5, 4/5 then 1/5, 3/5; frames on source times pass through
    assert [(f.src, f.tau) for f in plan.frames[:6]] == [
        (0, 0), (0, Fr(2, 5)), (0, Fr(4, 5)), (1, Fr(1, 5)), (1, Fr(3, 5)), (2, 0)
    ]  # fmt: skip
    assert [f.index for f in plan.frames if f.passthrough and f.time == f.src / Fr(24)] == list(range(0, 60, 5))
    assert [(f.src, f.tau) for f in plan.frames[-2:]] == [(23, 0), (23, 0)]  # after 23/24 s: held
    check_plan(plan, grid(Fr(24), 24))
    # Other time bases: 1/90000 stays exact, 1/1000 rounds per frame, never drifting.
    ts = plan_constant(Fr(24), 24, fps=Fr(60), time_base=Fr(1, 90000))
    assert [f.pts for f in ts.frames] == [1500 * k for k in range(60)] and ts.exact
    ms = plan_constant(Fr(24), 24, fps=Fr(60), time_base=Fr(1, 1000))
    assert not ms.exact and all(abs(f.pts * Fr(1, 1000) - f.time) <= Fr(1, 2000) for f in ms.frames)


def test_one_hour_ntsc_film_to_ntsc_60_has_zero_drift() -> None:
    n = 86_314  # 3600.01 s at 24000/1001
    plan = plan_constant(NTSC_FILM, n, fps=NTSC_60)
    assert len(plan) == math.ceil(n / NTSC_FILM * NTSC_60) == 215_785
    assert plan.time_base == Fr(1001, 60000) and plan.exact
    assert plan.end == n / NTSC_FILM and sum(f.duration for f in plan.frames) == plan.end
    period = Fr(1001, 60000)
    for k, f in enumerate(plan.frames):
        # closed form, independent of the planner: 2 sources every 5 outputs
        src, rem = divmod(2 * k, 5)
        if src >= n - 1:
            src, rem = n - 1, 0  # the last source frame is held to the end
        assert (f.time, f.pts, f.src, f.tau) == (k * period, k, src, Fr(rem, 5)), k
    last = plan.frames[-1]
    assert last.time + last.duration == plan.end and last.duration == period  # 2.5·n is whole


def test_ntsc_film_to_60() -> None:
    n = 240
    times = grid(NTSC_FILM, n)
    plan = plan_constant(NTSC_FILM, n, fps=Fr(60))
    assert len(plan) == math.ceil(Fr(n) / NTSC_FILM * 60) == 601
    assert [f.pts for f in plan.frames] == list(range(601))
    # k/60 is a source time only where 400 | i: within 10 s only frame 0; the last two grid points are held
    assert [f.index for f in plan.frames if f.passthrough] == [0, 599, 600]
    check_plan(plan, times)


def test_24_to_70() -> None:
    plan = plan_constant(Fr(24), 24, fps=Fr(70))
    assert len(plan) == 70 and plan.exact
    assert [f.index for f in plan.frames if f.passthrough] == [0, 35, 68, 69]  # 35 | 12k, then the tail
    assert all(f.tau == Fr(12 * f.index, 35) - f.src for f in plan.frames[:68])
    check_plan(plan, grid(Fr(24), 24))


def test_30_to_120_matches_times_4() -> None:
    fps = plan_constant(Fr(30), 30, fps=Fr(120))
    multi = plan_constant(Fr(30), 30, multi=4)
    assert len(fps) == 120 and len(multi) == 117 and fps.time_base == multi.time_base == Fr(1, 120)
    key = [(f.time, f.pts, f.src, f.tau) for f in multi.frames]
    assert [(f.time, f.pts, f.src, f.tau) for f in fps.frames[:117]] == key
    assert all(f.src == 29 and f.passthrough for f in fps.frames[116:])
    check_plan(fps, grid(Fr(30), 30))


@pytest.mark.parametrize(
    ("rate", "fps"), [(Fr(25), Fr(60)), (NTSC_FILM, Fr(50)), (Fr(30000, 1001), Fr(24)), (Fr(60), Fr(24))]
)
def test_output_duration_equals_input_within_one_frame(rate: Fr, fps: Fr) -> None:
    for n in (1, 2, 7, 100):
        plan = plan_constant(rate, n, fps=fps)
        assert abs(len(plan) / fps - n / rate) < 1 / fps  # frame count × period vs the source duration
        check_plan(plan, grid(rate, n))


def test_variable_frame_rate_source() -> None:
    rng = random.Random(1)
    times = [Fr(0)]
    for _ in range(60):
        times.append(times[-1] + Fr(rng.choice([1001, 1001, 2002, 500]), 30000))  # VFR with drops
    plan = plan_times(times, fps=Fr(60))
    check_plan(plan, times)
    assert plan.exact  # the default time base divides every output time
    doubled = plan_times(times, multi=2)
    assert len(doubled) == 2 * len(times) - 1 and doubled.rate is None
    check_plan(doubled, times)


def test_streaming_planner_needs_no_future_frames() -> None:
    rate, n = NTSC_FILM, 50
    batch = plan_constant(rate, n, fps=Fr(60))
    planner = Planner(time_base=batch.time_base, fps=Fr(60))
    got = []
    for i, t in enumerate(grid(rate, n)):
        for f in planner.push(t):
            assert f.src + (1 if f.tau else 0) <= i  # every frame it needs is already there
            got.append(f)
    got.extend(planner.finish(n / rate))
    assert tuple(got) == batch.frames


def test_start_before_first_source_frame_holds_it() -> None:
    times = [Fr(1, 10) + Fr(i, 25) for i in range(5)]
    plan = plan_times(times, fps=Fr(50), start=Fr(0))
    assert [(f.time, f.src, f.tau) for f in plan.frames[:5]] == [(Fr(k, 50), 0, 0) for k in range(5)]
    check_plan(plan, times)


def test_misuse_is_refused() -> None:
    with pytest.raises(UsageError, match="exactly one target"):
        plan_constant(Fr(24), 10, fps=Fr(60), multi=2)
    with pytest.raises(UsageError, match="exactly one target"):
        plan_constant(Fr(24), 10)
    with pytest.raises(UsageError, match="multi"):
        plan_constant(Fr(24), 10, multi=0)
    with pytest.raises(UsageError, match="positive Fraction"):
        plan_constant(Fr(24), 10, fps=Fr(-60))
    with pytest.raises(StageError, match="increase"):
        plan_times([Fr(0), Fr(1, 24), Fr(1, 24)], fps=Fr(60))
    with pytest.raises(UsageError, match="too coarse"):
        plan_constant(Fr(24), 10, fps=Fr(60), time_base=Fr(1, 24))
    with pytest.raises(UsageError, match="explicit end"):
        plan_times([Fr(0)], fps=Fr(60))
    planner = Planner(time_base=Fr(1, 60), fps=Fr(60))
    planner.push(Fr(0))
    planner.finish(Fr(1))
    with pytest.raises(StageError, match="after finish"):
        planner.push(Fr(2))


# ------------------------------------------------------------------------- HDv3 mid-point bisection


def test_bisection_to_two_fifths() -> None:
    tau, steps = bisection_steps(Fr(2, 5), depth=3)
    assert tau == Fr(3, 8)
    assert steps == [
        MidStep(level=1, mid=Fr(1, 2), left=Fr(0), right=Fr(1)),
        MidStep(level=2, mid=Fr(1, 4), left=Fr(0), right=Fr(1, 2)),
        MidStep(level=3, mid=Fr(3, 8), left=Fr(1, 4), right=Fr(1, 2)),
    ]


def test_bisection_edge_cases() -> None:
    assert bisection_steps(Fr(1, 2), 5) == (Fr(1, 2), [MidStep(level=1, mid=Fr(1, 2), left=Fr(0), right=Fr(1))])
    assert bisection_steps(Fr(97, 100), 3) == (Fr(1), [])  # nearest is the right source frame: no model run
    assert bisection_steps(Fr(1, 100), 3) == (Fr(0), [])
    assert nearest_dyadic(Fr(1, 3), 0) == 0 and nearest_dyadic(Fr(2, 3), 0) == 1
    assert nearest_dyadic(Fr(1, 4), 1) == Fr(1, 2)  # ties go up
    with pytest.raises(UsageError):
        nearest_dyadic(Fr(1, 3), -1)
    with pytest.raises(UsageError):
        nearest_dyadic(Fr(3, 2), 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_bisection_is_within_half_a_step_and_each_step_is_computable(depth: int) -> None:
    rng = random.Random(depth)
    for _ in range(200):
        tau = Fr(rng.randint(1, 999), 1000)
        approx, steps = bisection_steps(tau, depth)
        assert abs(approx - tau) <= Fr(1, 2 ** (depth + 1))
        assert len(steps) <= depth
        known = {Fr(0), Fr(1)}
        for s in steps:
            assert s.left in known and s.right in known and s.mid == (s.left + s.right) / 2
            known.add(s.mid)
        assert approx in known


def test_schedule_shares_mid_points_level_by_level() -> None:
    approx, steps = bisection_schedule([Fr(2, 5), Fr(4, 5)], depth=3)
    assert approx == {Fr(2, 5): Fr(3, 8), Fr(4, 5): Fr(3, 4)}
    assert [s.mid for s in steps] == [Fr(1, 2), Fr(1, 4), Fr(3, 4), Fr(3, 8)]  # 1/2 once
    assert [s.level for s in steps] == sorted(s.level for s in steps)
