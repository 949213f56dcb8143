"""Job segments feed a temporal stage its reach (issue 15, item 3): a job over a lossless clip with the recurrent
test stage (pre-roll) or the windowed one (overlap), split into several segments, writes the frames of the
whole-file job bit for bit, also with an out-of-memory error injected mid-segment and when it resumes from a
checkpoint. The test stages join the registry for the test only (`STAGES` monkeypatched)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from fractions import Fraction as F
from pathlib import Path

import pytest
import torch

from temporal_stages import MovingAverage, RunningMean
from vidpipe.jobs.driver import fed
from vidpipe.jobs.runner import JobOutcome, JobRunner, run_job
from vidpipe.jobs.segments import FrameIndex, Segment
from vidpipe.jobs.spec import build_spec
from vidpipe.stages.base import Reach, Stage
from vidpipe.stages.registry import STAGES, StageEntry
from vidpipe.testing import decode_all

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]

FRAMES = 60
#: a keyframe every 10 frames and 0.4-s segments at 25 fps: six segments, boundaries at 10, 20, …, 50
GOP = {"g": "10"}
SECONDS = 0.4
SEGMENTS = 6
#: the recurrent stage's frames per mean (pre-roll P − 1) and the windowed stage's ±K, window and overlap
P, K, WINDOW = 6, 3, 4


@pytest.fixture(scope="module")
def clip(make) -> Path:
    """2.4 s at 25 fps, FFV1 (lossless), a keyframe every 10 frames."""
    return make("job-temporal.mkv", size=(64, 48), frames=FRAMES, codec="ffv1", options=GOP)


def _build(shape: str, oom_on_call: int | None = None) -> Stage:
    if shape == "recurrent":
        return RunningMean(P, oom_on_call=oom_on_call)
    return MovingAverage(K, window=WINDOW, overlap=K, oom_on_call=oom_on_call)


def _register(monkeypatch: pytest.MonkeyPatch, factory: Callable[[], Stage]) -> list[Stage]:
    """A test-only registry entry that every job of this test runs (after the stages the spec asks for); the
    stages it built, to look at after the job."""
    built: list[Stage] = []

    def build(_values: object) -> Stage:
        built.append(factory())
        return built[-1]

    entry = StageEntry(
        name="temporal-test", module=__name__, task="geometry", unit="frame", wanted=lambda _v: True, build=build
    )
    monkeypatch.setitem(STAGES, entry.name, entry)
    return built


def _run_job(clip: Path, tmp: Path, seconds: float) -> JobOutcome:
    """Run the job (local output, no upload) over `clip` in segments of `seconds` (0: whole)."""
    doc = {
        "inputs": [str(clip)],
        "output": {"dir": str(tmp / "out"), "container": "mkv", "upload": False},
        "pipeline": {"encoder": "ffv1", "device": "cpu"},
        "segments": {"seconds": seconds},
        "result_json": str(tmp / "result.json"),
        "sentinel": str(tmp / "DONE"),
    }
    return run_job(build_spec(doc, base_dir=tmp, env={}, workspace=tmp / "none"), env={})


def _job(clip: Path, tmp: Path, seconds: float) -> Path:
    """`_run_job`, which must succeed; the output it wrote."""
    outcome = _run_job(clip, tmp, seconds)
    assert outcome.ok, outcome.errors
    return outcome.outputs[0]


def _plan(out: Path) -> list[Segment]:
    manifest = json.loads(out.with_name(out.name + ".json").read_text())
    return [Segment.from_json(s) for s in manifest["segments"]]


def _same_frames(a: Path, b: Path) -> None:
    t_a, f_a = decode_all(a)
    t_b, f_b = decode_all(b)
    assert len(t_a) == FRAMES and t_a == t_b
    assert torch.equal(f_a, f_b)


def test_a_segment_records_the_times_its_reach_decodes() -> None:
    idx = FrameIndex(times=tuple(F(i, 25) for i in range(30)), keyframes=frozenset({0, 10, 20}), container="matroska")
    seg = Segment(index=1, first=10, frames=10, start=F(10, 25), end=F(20, 25))
    # from the first frame reached through the last one, in source times
    assert fed(seg, idx, Reach(3, 2)).feed == (F(7, 25), F(21, 25))
    assert fed(seg, idx, Reach()).feed == (F(10, 25), F(19, 25))
    # reaching past the stream's ends: open there
    assert fed(seg, idx, Reach(12, 12)).feed == (None, None)
    again = fed(seg, idx, Reach(3, 2))
    assert Segment.from_json(json.loads(json.dumps(again.to_json()))) == again


@pytest.fixture(scope="module", params=["recurrent", "windowed"])
def whole(request, clip, tmp_path_factory) -> tuple[str, Path]:
    """(shape, the whole-file job's output) for each test stage."""
    shape = request.param
    with pytest.MonkeyPatch.context() as mp:
        _register(mp, lambda: _build(shape))
        out = _job(clip, tmp_path_factory.mktemp(f"whole-{shape}"), 0)
    assert len(_plan(out)) == 1
    return shape, out


def test_segments_fed_their_reach_write_the_whole_runs_frames(whole, clip, tmp_path, monkeypatch) -> None:
    shape, reference = whole
    _register(monkeypatch, lambda: _build(shape))
    out = _job(clip, tmp_path, SECONDS)
    plan = _plan(out)
    assert [s.first for s in plan] == [10 * i for i in range(SEGMENTS)]
    # each segment after the first decodes its pre-roll (P − 1 or K frames) before its first frame, each one
    # before the last its look-ahead (K frames for the windowed stage, none for the recurrent one) past its end
    before, after = (P - 1, 0) if shape == "recurrent" else (K, K)
    rate = F(25)
    for s in plan[1:]:
        assert s.feed is not None and s.feed[0] == (s.first - before) / rate
    for s in plan[:-1]:
        assert s.feed is not None and s.feed[1] == (s.first + s.frames + after - 1) / rate
    _same_frames(out, reference)


def test_without_the_reach_the_segments_would_differ(whole, clip, tmp_path, monkeypatch) -> None:
    """The identity above depends on the reach: the same stage declaring none is split at the same boundaries
    and its segments start cold, so the frames at the boundaries differ from the whole run's."""
    shape, reference = whole

    def blind() -> Stage:
        stage = _build(shape)
        if isinstance(stage, RunningMean):
            stage.preroll = 0
            return stage
        return _NoReach(K, window=WINDOW, overlap=K)

    _register(monkeypatch, blind)
    out = _job(clip, tmp_path, SECONDS)
    assert len(_plan(out)) == SEGMENTS
    _, got = decode_all(out)
    _, want = decode_all(reference)
    assert not torch.equal(got, want)
    boundary = 30  # a frame right after a boundary lacks its neighbours before it in the cold segment
    assert not torch.equal(got[boundary], want[boundary])


class _NoReach(MovingAverage):
    """The windowed test stage claiming it needs no frames around its output (it does: ±K)."""

    @property
    def reach(self) -> Reach:
        return Reach()


def test_an_oom_mid_segment_changes_nothing(whole, clip, tmp_path, monkeypatch) -> None:
    shape, reference = whole
    # batches of 8 from the reader: a recurrent segment of 10 frames + pre-roll is two steps, a windowed one is
    # four windows of 4 kept frames, so these calls fall inside the second segment
    call = 4 if shape == "recurrent" else 6
    built = _register(monkeypatch, lambda: _build(shape, oom_on_call=call))
    out = _job(clip, tmp_path, SECONDS)
    assert len(_plan(out)) == SEGMENTS
    # the spec's check builds the chain once more; only the running one met the error
    assert sum(s.ooms for s in built) == 1  # type: ignore[attr-defined]
    _same_frames(out, reference)


def test_a_segmented_job_resumes_from_its_checkpoint(whole, clip, tmp_path, monkeypatch, caplog) -> None:
    shape, reference = whole
    _register(monkeypatch, lambda: _build(shape))

    class Killed(RuntimeError):
        pass

    def die_after_two(_self: JobRunner, point: str) -> None:
        if point == "segment-done:2":
            raise Killed("stopped after segment 2 (injected)")

    with monkeypatch.context() as mp:
        mp.setattr(JobRunner, "reached", die_after_two)
        failed = _run_job(clip, tmp_path, SECONDS)
    assert not failed.ok and "injected" in failed.errors[0]
    state = json.loads(next((tmp_path / "out" / ".vidpipe-work" / "state").glob("*/state.json")).read_text())
    assert sorted(state["done"]) == ["0", "1"] and len(state["plan"]) == SEGMENTS
    with caplog.at_level(logging.INFO, logger="vidpipe"):
        out = _job(clip, tmp_path, SECONDS)
    assert f"segment 2/{SEGMENTS} already done" in caplog.text
    assert f"segment 3/{SEGMENTS} already done" not in caplog.text
    _same_frames(out, reference)
