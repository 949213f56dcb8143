"""Cross-video micro-batches: never mixing buckets (or anything else the seed says must match), never more than 8
videos, each video's frames in order and exactly as when processed alone."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import pytest
import torch
from sched_helpers import frames

from vidpipe.errors import StageError, UsageError
from vidpipe.frames import FrameBatch
from vidpipe.schedule import crossvideo as cv
from vidpipe.schedule.costs import bucket_for
from vidpipe.schedule.oom import OomRunner

#: five clips of mixed resolutions: two 360 bucket, two 720 bucket (different shapes), one 1080
CLIPS = {"a": (640, 360, 7), "b": (1280, 720, 12), "c": (960, 720, 5), "d": (1920, 1080, 9), "e": (480, 360, 3)}


def _key(batch: FrameBatch, **changes: object) -> cv.BatchKey:
    fields: dict[str, object] = {
        "component": "upscale",
        "model_signature": "0123456789abcdef",
        "runtime": "inprocess",
        "preprocessing": {"resize": "none"},
    }
    fields.update(changes)
    return cv.BatchKey.make(frames=batch, **fields)  # type: ignore[arg-type]


def _pending() -> tuple[list[cv.Pending], dict[str, int]]:
    pending, buckets = [], {}
    for v, (w, h, n) in CLIPS.items():
        one = frames(1, w, h)
        pending.append(cv.Pending(video=v, key=_key(one), frames=n))
        buckets[v] = bucket_for(w, h)
    return pending, buckets


def _check_plan(plan: list[cv.MicroBatch], pending: list[cv.Pending], batch_size: int) -> None:
    covered: dict[str, list[int]] = defaultdict(list)
    for mb in plan:
        assert 1 <= len(mb.videos) <= cv.MAX_VIDEOS_PER_MICRO_BATCH
        assert len(set(mb.videos)) == len(mb.videos)
        assert 1 <= mb.frames <= batch_size
        for p in mb.parts:
            covered[p.video] += range(p.start, p.stop)
    for p in pending:
        assert covered[p.video] == list(range(p.frames))  # every frame once, in order


@pytest.mark.parametrize("batch_size", [1, 4, 8, 64])
def test_five_mixed_clips_never_mix_buckets(batch_size: int) -> None:
    pending, buckets = _pending()
    plan = cv.plan(pending, batch_size)
    _check_plan(plan, pending, batch_size)
    for mb in plan:
        assert len({buckets[v] for v in mb.videos}) == 1  # from the clips' real sizes, not the key
    # the two 720-bucket clips differ in shape, so they never share a tensor either
    assert not any({"b", "c"} <= set(mb.videos) for mb in plan)


def test_mixed_plan_groups_what_matches() -> None:
    pending, _ = _pending()
    plan = cv.plan(pending, 64)
    assert sorted(mb.videos for mb in plan) == [("a",), ("b",), ("c",), ("d",), ("e",)]
    # same bucket and shape: 640×360 twice → one micro-batch
    one = frames(1, 640, 360)
    twins = [cv.Pending(video=v, key=_key(one), frames=3) for v in ("x", "y")]
    assert [mb.videos for mb in cv.plan(twins, 64)] == [("x", "y")]


def test_hard_cap_of_eight_videos() -> None:
    one = frames(1, 640, 360)
    pending = [cv.Pending(video=f"v{i:02}", key=_key(one), frames=3) for i in range(20)]
    plan = cv.plan(pending, 1000)
    _check_plan(plan, pending, 1000)
    assert [len(mb.videos) for mb in plan] == [8, 8, 4]
    with pytest.raises(UsageError, match="hard cap"):
        cv.plan(pending, 8, max_videos=9)


@pytest.mark.parametrize(
    "change",
    [
        {"component": "matte"},
        {"model_signature": "fedcba9876543210"},
        {"runtime": "triton"},
        {"preprocessing": {"resize": "fit"}},
    ],
)
def test_any_difference_in_the_seed_fields_splits(change: dict[str, object]) -> None:
    one = frames(1, 640, 360)
    pending = [
        cv.Pending(video="x", key=_key(one), frames=2),
        cv.Pending(video="y", key=_key(one, **change), frames=2),
    ]
    assert [mb.videos for mb in cv.plan(pending, 64)] == [("x",), ("y",)]


def test_spill_keeps_each_videos_order() -> None:
    one = frames(1, 64, 36)
    pending = [cv.Pending(video=v, key=_key(one), frames=n) for v, n in (("x", 5), ("y", 6), ("z", 2))]
    plan = cv.plan(pending, 4)
    assert [[(p.video, p.start, p.stop) for p in mb.parts] for mb in plan] == [
        [("x", 0, 4)],
        [("x", 4, 5), ("y", 0, 3)],
        [("y", 3, 6), ("z", 0, 1)],
        [("z", 1, 2)],
    ]


def _per_frame(x: torch.Tensor) -> torch.Tensor:
    """A function whose output frame depends on its input frame only (as a frame-independent stage)."""
    return torch.flip(x, dims=[-1]) // 2 + 7


def test_outputs_are_identical_to_solo_runs() -> None:
    # CLIPS at a tenth of their size (kept small for speed): five shapes, two copies of each
    clips = {
        f"{v}{k}": frames(n, w // 10, h // 10, seed=k * 10 + i)
        for k in range(2)
        for i, (v, (w, h, n)) in enumerate(CLIPS.items())
    }
    keys = {v: _key(b) for v, b in clips.items()}
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        return _per_frame(x)

    out = cv.run(clips, keys, fn, batch_size=8)
    assert max(seen) == 8 and len(seen) < sum(len(b) for b in clips.values())  # batched across videos
    for v, b in clips.items():
        assert torch.equal(out[v].data, _per_frame(b.data))
        assert (out[v].pts, out[v].index, out[v].time_base) == (b.pts, b.index, b.time_base)


def test_outputs_identical_with_oom_recovery_inside() -> None:
    clips = {v: frames(n, 64, 36, seed=i) for i, (v, n) in enumerate((("x", 5), ("y", 6), ("z", 9)))}
    keys = {v: _key(b) for v, b in clips.items()}
    calls = [0]

    def model(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] in (1, 4):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return _per_frame(x)

    runner = OomRunner(8, sleep=lambda s: None, release=lambda d: None)
    out = cv.run(clips, keys, lambda x: runner.run(x, model), batch_size=8)
    for v, b in clips.items():
        assert torch.equal(out[v].data, _per_frame(b.data))
    assert len(runner.events) == 2


def test_scatter_refuses_a_changed_frame_count() -> None:
    one = frames(1, 64, 36)
    mb = cv.MicroBatch(key=_key(one), parts=(cv.Part(video="x", start=0, stop=3),))
    with pytest.raises(StageError, match="one output frame per input frame"):
        cv.scatter(mb, torch.zeros((6, 3, 36, 64)))


def test_bad_pending_is_refused() -> None:
    one = frames(1, 64, 36)
    with pytest.raises(UsageError, match="twice"):
        cv.plan([cv.Pending(video="x", key=_key(one), frames=1)] * 2, 4)
    with pytest.raises(UsageError):
        cv.plan([], 0)


def test_key_records_shape_dtype_and_bucket() -> None:
    b = FrameBatch(data=torch.zeros((1, 4, 720, 960), dtype=torch.uint16), pts=[0], time_base=Fraction(1, 25))
    k = _key(b)
    assert (k.bucket, k.frame_shape, k.dtype) == (720, (4, 720, 960), "uint16")
    assert k.preprocessing == (("resize", "none"),)
