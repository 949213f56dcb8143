"""Segments: planning (keyframes, cuts, interpolation's grid), reading a time range, segmented runs equal to one
plain run, checkpoints refused when they belong to another job, the disk pre-flight."""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction as F
from pathlib import Path

import pytest
import torch

from vidpipe.errors import DiskFullError, OutputError
from vidpipe.jobs import runner as runner_mod
from vidpipe.jobs.runner import disk_full, run_job
from vidpipe.jobs.segments import (
    CheckpointError,
    FrameIndex,
    GridRule,
    InputState,
    Segment,
    join_segments,
    plan_segments,
    scan_frames,
)
from vidpipe.jobs.spec import build_spec
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.media.synth import AudioTrack
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, TimeWindow, run
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.resize import Resize
from vidpipe.testing import decode_all

pytestmark = pytest.mark.timeout(180)

#: keyframe every second at 25 fps: 3-segment jobs with 1-second segments
GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # 64×48 frames gain nothing from more compute threads, and OpenMP threads spinning on a shared, busy
    # 2-core runner made the interpolation runs here 5-10× slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip(make) -> Path:
    """3 s at 25 fps, H.264 with B-frames (pts ≠ dts), a keyframe each second, AAC audio."""
    return make("job-seg.mp4", size=(64, 48), frames=75, options=GOP, audio=[AudioTrack()])


def _opts(encoder: str = "ffv1", **kw: object) -> RunOptions:
    return RunOptions(
        device="cpu",
        progress="none",
        manifest=False,
        writer=WriterOptions(encoder=EncoderOptions(encoder=encoder), **kw),  # type: ignore[arg-type]
    )


def _index(n: int, rate: F, keys: list[int], start: F = F(0)) -> FrameIndex:
    return FrameIndex(times=tuple(start + i / rate for i in range(n)), keyframes=frozenset(keys), container="mp4")


def test_plan_puts_boundaries_on_keyframes_near_each_length():
    idx = _index(300, F(25), list(range(0, 300, 25)))
    plan = plan_segments(idx, F(3))
    assert [s.first for s in plan] == [0, 75, 150, 225]
    assert plan[0].start is None and plan[-1].end is None
    assert [s.start for s in plan[1:]] == [F(3), F(6), F(9)]
    assert [s.end for s in plan[:-1]] == [F(3), F(6), F(9)]
    assert sum(s.frames for s in plan) == 300
    assert len(plan_segments(idx, None)) == len(plan_segments(idx, F(0))) == 1
    # 10.4 s in 5-s pieces: a boundary at 10 s would leave 0.36 s (< a quarter), so the last piece takes it
    short = _index(260, F(25), list(range(0, 260, 25)))
    assert [s.first for s in plan_segments(short, F(5))] == [0, 125]


def test_plan_prefers_an_encoders_scene_cut_keyframe():
    # regular GOP of 50 frames; x264 put a keyframe at a cut (frame 90), 10 frames before the regular one
    keys = [0, 50, 90, 140, 190, 240]
    plan = plan_segments(_index(260, F(25), keys), F(4))  # target 100 frames; 90 is within a quarter of that
    assert plan[1].first == 90


def test_plan_follows_interpolations_output_grid():
    keys = list(range(0, 200, 12))
    rule = GridRule(start=F(0), rate=F(25), out_rate=F(60))  # 25 → 60: only every 5th frame lies on the grid
    plan = plan_segments(_index(200, F(25), keys), F(2), rule)
    assert len(plan) > 1
    assert all(s.first % 5 == 0 and s.first % 12 == 0 for s in plan)
    # a timeline off the counted grid (here every frame after the first is 7 ms late): the input stays whole
    late = tuple(F(0) if i == 0 else F(i * 40 + 7, 1000) for i in range(200))
    vfr = FrameIndex(times=late, keyframes=frozenset(keys), container="mkv")
    assert len(plan_segments(vfr, F(2), GridRule(start=F(0), rate=F(25), out_rate=None))) == 1


def test_reader_time_range_seeks_and_keeps_one_frame_of_look_ahead(clip):
    info = probe(clip)
    times: list[F] = []
    with VideoReader(info, ReaderOptions(start=F(1), end=F(2), batch_size=4)) as r:
        for b in r:
            times += b.times()
    assert times == [F(25 + i, 25) for i in range(26)]  # 1.00 s … 2.00 s: the frame at `end` is the look-ahead
    assert TimeWindow(F(1), F(2)).select(None) is None


def test_segmented_run_equals_one_plain_run_frame_for_frame(clip, tmp_path):
    index = scan_frames(clip)
    plan = plan_segments(index, F(1))
    assert len(plan) == 3 and [s.start for s in plan] == [None, F(1), F(2)]
    files = []
    for seg in plan:
        out = tmp_path / f"seg{seg.index}.mkv"
        run(clip, out, [Resize(48, 32)], _seg_opts(seg))
        files.append(out)
    joined = tmp_path / "joined.mkv"
    join_segments(files, probe(clip), joined)
    plain = tmp_path / "plain.mkv"
    run(clip, plain, [Resize(48, 32)], _opts())
    t_plain, f_plain = decode_all(plain)
    t_join, f_join = decode_all(joined)
    assert t_join == t_plain and len(t_plain) == 75
    assert torch.equal(f_join, f_plain)
    assert [s.type for s in probe(joined).streams] == [s.type for s in probe(plain).streams] == ["video", "audio"]


def _seg_opts(seg: Segment) -> RunOptions:
    """A segment's run: its window, video only (the join adds the other streams)."""
    return replace(_opts(copy_streams=False), window=TimeWindow(seg.start, seg.end))


def test_segmented_interpolation_keeps_the_whole_runs_grid(make, tmp_path):
    # 25 → 60 fps: a boundary must sit on a source frame that is also on the 60-fps grid (every 5th frame)
    src = make("job-seg-interp.mp4", size=(64, 48), frames=20, options={"g": "5", "sc_threshold": "0"})
    index = scan_frames(src)
    rule = GridRule(start=index.times[0], rate=F(25), out_rate=F(60))
    plan = plan_segments(index, F(1, 4), rule)
    assert [s.first for s in plan] == [0, 5, 10, 15]
    files = []
    for seg in plan:
        out = tmp_path / f"i{seg.index}.mkv"
        run(src, out, [Interpolate("rife-hdv3", fps=F(60))], _seg_opts(seg))
        files.append(out)
    joined = tmp_path / "joined.mkv"
    join_segments(files, probe(src), joined)
    plain = tmp_path / "plain.mkv"
    run(src, plain, [Interpolate("rife-hdv3", fps=F(60))], _opts())
    t_plain, _ = decode_all(plain)
    t_join, _ = decode_all(joined)
    assert len(t_join) == len(t_plain) == 48  # 20 × 60/25
    assert t_join == t_plain


def test_join_refuses_segments_encoded_differently(clip, tmp_path):
    a, b = tmp_path / "a.mkv", tmp_path / "b.mkv"
    run(clip, a, [], _seg_opts(plan_segments(scan_frames(clip), F(1))[0]))
    run(clip, b, [Resize(32, 24)], _seg_opts(plan_segments(scan_frames(clip), F(1))[1]))
    with pytest.raises(OutputError, match="encoded differently \\(size"):
        join_segments([a, b], probe(clip), tmp_path / "j.mkv")
    assert not list(tmp_path.glob(".j.vidpipe-partial*"))


def test_checkpoint_of_another_job_is_refused(tmp_path):
    sig = {"stages": [{"stage": "resize", "width": 64}], "container": ".mkv"}
    state = InputState(directory=tmp_path, key="k1", input_sha256="a" * 64, signature=sig)
    state.save()
    assert InputState.open(tmp_path, key="k1", input_sha256="a" * 64, signature=sig).key == "k1"
    other = {**sig, "stages": [{"stage": "resize", "width": 32}]}
    with pytest.raises(CheckpointError, match=r"the pipeline \(stages\) differ"):
        InputState.open(tmp_path, key="k1", input_sha256="a" * 64, signature=other)
    with pytest.raises(CheckpointError, match="the input's sha256"):
        InputState.open(tmp_path, key="k1", input_sha256="b" * 64, signature=sig)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        InputState.open(tmp_path, key="k1", input_sha256="a" * 64, signature=sig)


def _local_spec(clip: Path, tmp_path: Path, **pipeline: object):
    doc = {
        "inputs": [str(clip)],
        "output": {"dir": str(tmp_path / "out"), "container": "mkv", "upload": False},
        "pipeline": {"encoder": "ffv1", "device": "cpu", **pipeline},
        "segments": {"seconds": 1},
        "result_json": str(tmp_path / "result.json"),
        "sentinel": str(tmp_path / "DONE"),
    }
    return build_spec(doc, base_dir=tmp_path, env={}, workspace=tmp_path / "none")


def _hash(path: Path) -> str:
    times, frames = decode_all(path)
    return hashlib.sha256(repr(times).encode() + frames.numpy().tobytes()).hexdigest()


def test_other_parameters_start_afresh_beside_the_old_checkpoint(clip, tmp_path):
    first = run_job(_local_spec(clip, tmp_path, resize="48x32"), env={})
    second = run_job(_local_spec(clip, tmp_path, resize="32x24"), env={})
    assert first.ok and second.ok
    states = sorted((tmp_path / "out" / ".vidpipe-work" / "state").iterdir())
    assert len(states) == 2  # keyed by input and parameters: two checkpoints, neither mixed into the other
    assert probe(second.outputs[0]).video.width == 32
    again = run_job(_local_spec(clip, tmp_path, resize="32x24"), env={})  # already joined: nothing redone
    assert again.ok and _hash(again.outputs[0]) == _hash(second.outputs[0])
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "succeeded" and doc["sentinel"] is None  # uploads off: never a sentinel


def test_preflight_refuses_a_disk_that_is_clearly_too_small(clip, tmp_path, monkeypatch):
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(runner_mod.shutil, "disk_usage", lambda _p: Usage)
    outcome = run_job(_local_spec(clip, tmp_path, resize="48x32"), env={})
    assert not outcome.ok and outcome.exit_code == DiskFullError.exit_code == 4
    assert "not enough disk space" in outcome.errors[0]
    assert not list((tmp_path / "out").rglob("seg_*"))  # refused before any segment was written
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["inputs"][0]["error"]["class"] == "DiskFullError"


def test_disk_full_is_found_through_wrapped_errors():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/seg.mkv")
        except OSError as e:
            raise OutputError("encoding seg.mkv failed") from e
    except OutputError as wrapped:
        found = disk_full(wrapped)
    assert isinstance(found, DiskFullError) and "/x/seg.mkv" in str(found)
    assert disk_full(OutputError("no frames")) is None
