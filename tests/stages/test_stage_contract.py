"""The one Stage contract (issue 15, item 1): every stage subclasses `stages.base.Stage`, every optional hook has a
default there, a stage that defines only `process` runs through the scheduler's chain and the pipeline, and
runtime/, schedule/ and jobs/ never probe a stage for its hooks (item 2)."""

from __future__ import annotations

import inspect
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch

import vidpipe
from vidpipe.errors import DeviceOutOfMemoryError, StageError
from vidpipe.frames import FrameBatch
from vidpipe.jobs.runner import whole_file_reason
from vidpipe.jobs.segments import FrameIndex
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduledStage, ScheduleOptions, plan_stage, schedule_chain
from vidpipe.schedule.costs import cost_signature, signature_hash
from vidpipe.schedule.oom import OomPolicy
from vidpipe.stages.base import GridRule, Reach, Stage, StreamSpec
from vidpipe.stages.cuts.detector import CutDetector
from vidpipe.stages.cuts.transnetv2 import TransNetV2Detector
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.pad import Pad
from vidpipe.stages.resize import Resize
from vidpipe.stages.temporal import RecurrentStage, WindowedStage
from vidpipe.stages.upscale import Upscale

SRC = Path(vidpipe.__file__).parent

#: every stage class vidpipe ships (the registry of item 2 will list them; until then, by hand)
KNOWN = [Resize, Pad, Upscale, Interpolate, CutDetector, TransNetV2Detector, RecurrentStage, WindowedStage]

#: every hook the contract declares, with its default's behaviour checked below
HOOKS = [
    "setup",
    "flush",
    "signature",
    "report",
    "snapshot",
    "restore",
    "tiling",
    "set_tile",
    "cost_signature",
    "set_stop_check",
    "segment_grid",
]
DECLARATIONS = {
    "name": "stage",
    "context": 0,
    "unit": "frame",
    "dtype_name": None,
    "planar_input": False,
    "tile": None,
    "can_snapshot": False,
    "counts_frames": False,
}


class Minimal(Stage):
    """Only `process`: inverts the picture, so the output shows the stage ran."""

    name = "invert"

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch.with_data(255 - batch.data)


def _batch(n: int = 4, start: int = 0) -> FrameBatch:
    data = torch.arange(n * 3 * 4 * 6, dtype=torch.int32).reshape(n, 3, 4, 6).remainder(256).to(torch.uint8)
    idx = list(range(start, start + n))
    return FrameBatch(data=data, pts=[3000 * i for i in idx], time_base=Fraction(1, 90000), index=idx)


@pytest.mark.parametrize("cls", KNOWN, ids=lambda c: c.__name__)
def test_every_known_stage_subclasses_stage(cls: type) -> None:
    assert issubclass(cls, Stage)


def test_process_is_the_only_abstract_hook() -> None:
    assert Stage.__abstractmethods__ == frozenset({"process"})
    for hook in HOOKS:
        fn = getattr(Stage, hook)
        assert inspect.getdoc(fn), f"Stage.{hook} has no docstring"
    for prop in ("stateful", "reach", "starts_mid_stream"):
        assert inspect.getdoc(getattr(Stage, prop)), f"Stage.{prop} has no docstring"


def test_the_defaults_fit_a_stateless_per_frame_stage() -> None:
    s = Minimal()
    for attr, value in DECLARATIONS.items():
        if attr != "name":
            assert getattr(Stage, attr) == value, attr
    spec = StreamSpec(width=6, height=4, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))
    assert s.setup(torch.device("cpu"), spec) is spec
    assert s.flush() is None
    assert s.signature() == {"stage": "invert"} == s.cost_signature()
    assert s.report() == {}
    assert s.tiling() is None
    assert not s.stateful and not s.can_snapshot
    assert s.reach == Reach(0, 0) and s.starts_mid_stream
    assert s.segment_grid(Fraction(0)) is None
    s.set_stop_check(lambda: None)
    with pytest.raises(StageError, match="not tiled"):
        s.set_tile(128)


def test_temporal_stages_declare_their_reach_and_are_driven_by_the_engine() -> None:
    class Rec(RecurrentStage):
        preroll = 3

        def step(self, frames: FrameBatch, state: Any) -> Any:
            return frames, ()

    r = Rec()
    # a finite reach is fed by segments and shares (schedule.temporal.feed_span): it can start mid-stream
    assert r.reach == Reach(3, 0) and r.starts_mid_stream
    with pytest.raises(StageError, match="temporal engine"):
        r.process(_batch())


def test_interpolate_declares_its_segment_grid_and_state() -> None:
    s = Interpolate(fps=Fraction(60))
    assert s.can_snapshot and s.stateful and s.counts_frames and s.starts_mid_stream
    s.src_rate = Fraction(25)  # what setup() reads from the stream
    assert s.segment_grid(Fraction(1)) == GridRule(start=Fraction(1), rate=Fraction(25), out_rate=Fraction(60))


def _index(n: int = 10) -> FrameIndex:
    times = [Fraction(i, 25) for i in range(n)]
    return FrameIndex(times=tuple(times), keyframes=frozenset({0, 5}), container="matroska")


def test_whole_file_reason_asks_the_stages_declarations() -> None:
    class Held(Minimal):
        context = 2

    class Counting(Minimal):
        counts_frames = True

    assert whole_file_reason(_index(), [Minimal()], "fail") is None
    assert "stage invert needs context" in (whole_file_reason(_index(), [Held()], "fail") or "")
    assert whole_file_reason(_index(), [Counting()], "fail") is None
    assert "counts frames" in (whole_file_reason(_index(), [Counting()], "skip") or "")


def test_a_minimal_stage_runs_through_the_chain() -> None:
    spec = StreamSpec(width=6, height=4, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))
    dev = torch.device("cpu")
    stage = Minimal()
    plan = plan_stage(stage, spec, dev, ScheduleOptions(), reader_batch=4)
    assert plan.source == "no model" and plan.tile is None
    (sched,) = schedule_chain([stage], [spec], dev, ScheduleOptions(), reader_batch=4)
    b = _batch()
    out = sched.process(b)
    assert out is not None and torch.equal(out.data, 255 - b.data)
    assert sched.flush() is None
    assert sched.schedule_report()["tile"] is None
    assert cost_signature(stage) == signature_hash({"stage": "invert"})


def test_a_minimal_stage_runs_through_the_pipeline(make, tmp_path: Path) -> None:
    clip = make("contract-6.mkv", size=(64, 48), frames=6, rate=Fraction(24))
    res = run(clip, tmp_path / "o.mkv", [Minimal()], RunOptions())
    assert res.frames_out == 6
    manifest = res.manifest
    assert manifest["stages"] == [{"stage": "invert"}]
    assert "invert" not in manifest["stage_reports"]  # an empty report is left out


class _Oom(Minimal):
    def __init__(self) -> None:
        self.calls = 0

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.calls += 1
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")


def test_state_without_snapshot_is_not_retried_and_no_state_is() -> None:
    spec = StreamSpec(width=6, height=4, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))
    dev = torch.device("cpu")
    policy = OomPolicy()

    class Held(_Oom):
        context = 1

    plan = plan_stage(Held(), spec, dev, ScheduleOptions(), reader_batch=4)
    held = Held()
    with pytest.raises(DeviceOutOfMemoryError, match="not retried"):
        ScheduledStage(held, plan, dev, policy=policy, sleep=lambda _s: None).process(_batch())
    assert held.calls == 1
    free = _Oom()
    with pytest.raises(DeviceOutOfMemoryError):
        ScheduledStage(free, plan, dev, policy=policy, sleep=lambda _s: None).process(_batch())
    assert free.calls == policy.attempts


PROBE = re.compile(r"isinstance\(.*Interpolate|hasattr\(stage|getattr\(stage|getattr\(s,|getattr\(self\.stage")


@pytest.mark.parametrize("folder", ["runtime", "schedule", "jobs"])
def test_no_probing_of_stage_hooks(folder: str) -> None:
    hits = [
        f"{path.relative_to(SRC)}:{i}: {line.strip()}"
        for path in sorted((SRC / folder).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if PROBE.search(line)
    ]
    assert hits == []
