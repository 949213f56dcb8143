"""Worker processes on CPU (issue 19): many videos over 2 workers, one video split into segments over 2 workers
(upscale with a real model, and interpolation), frame for frame the single-process run; a worker SIGKILLed mid-item
has its item re-queued (output still identical); the same item killing its worker twice stops the run with
WorkerFailedError naming it; the CLI's `--gpus` through the test switch.

Each pool starts spawned interpreters that import torch (seconds each on a busy 2-core runner), so every test
here is `slow`. Frames go through FFV1 (lossless) so that the comparison sees the stages' output; the reference
runs with the compute threads each of the two workers gets (cores / 2), the same arithmetic."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import pytest
import torch
from worker_chains import KillingChain, failing_wide_chain, unbuildable_in_workers

from vidpipe.errors import ModelError, VidpipeError, WorkerFailedError
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.inputs import Job
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.testing import decode_all
from vidpipe.workers import RecipeStages, WorkerSlot, run_pool
from vidpipe.workers.plan import parts_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("worker_threads")]

#: a keyframe each second at 25 fps: a 3 s clip splits into 3 segments
GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
UPSCALE = {"upscale": "realesr-animevideov3-x2"}
INTERPOLATE = {"interpolate": "rife-hdv3", "multi": 2}
SLOTS = [WorkerSlot(i, "cpu", None, 2) for i in range(2)]


def _opts(progress: str = "none") -> RunOptions:
    return RunOptions(device="cpu", progress=progress, writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))  # type: ignore[arg-type]


def _single(src: Path, out: Path, values: dict[str, Any]) -> Path:
    run(src, out, RecipeStages(values)(), _opts())
    return out


def _same_frames(got: Path, want: Path) -> None:
    (gt, gf), (wt, wf) = decode_all(got), decode_all(want)
    assert gt == wt, "frame times differ"
    assert torch.equal(gf, wf), f"{got.name}: frames differ from the single-process run"


@pytest.fixture(scope="module")
def long_clip(make) -> Path:
    return make("w-long.mp4", size=(32, 24), frames=75, options=GOP)


def test_many_videos_over_two_workers_equal_their_single_runs(make, tmp_path: Path, capsys) -> None:
    clips = [
        make("w-m1.mp4", size=(32, 24), frames=12),
        make("w-m2.mp4", size=(48, 32), frames=20, source="mandelbrot"),
        make("w-m3.mp4", size=(32, 24), frames=6, source="smptehdbars"),
    ]
    jobs = [Job(c, tmp_path / "out" / f"{c.stem}.mkv") for c in clips]
    res = run_pool(jobs, RecipeStages(UPSCALE), _opts("json"), SLOTS)
    assert [v.status for v in res.videos] == ["done"] * 3
    for c, j in zip(clips, jobs, strict=True):
        _same_frames(j.output, _single(c, tmp_path / f"ref-{c.stem}.mkv", UPSCALE))
        assert json.loads(j.output.with_name(j.output.name + ".json").read_text())["frames_out"] > 0
    # longest first: w-m2 (20 × 48×32) went out before the others, and both workers took items
    first = {w.items[0] for w in res.workers if w.items}
    assert "w-m2.mkv" in first
    assert all(w.items for w in res.workers)
    assert sorted(k for w in res.workers for k in w.items) == sorted(j.output.name for j in jobs)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    workers = {v["worker"] for doc in lines for v in doc.get("per_video", [])}
    assert workers == {"cpu0", "cpu1"}  # per-worker lines in --progress json
    assert lines[-1]["event"] == "done" and lines[-1]["frames"] == sum(v.frames_out for v in res.videos)


def test_one_video_split_over_two_workers_is_the_single_run_upscale(long_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "split.mkv"
    res = run_pool([Job(long_clip, out)], RecipeStages(UPSCALE), _opts(), SLOTS)
    (video,) = res.videos
    assert video.status == "done" and video.segments == 3
    assert not parts_dir(out).exists()  # the part files are gone after the join
    _same_frames(out, _single(long_clip, tmp_path / "ref.mkv", UPSCALE))
    manifest = json.loads(out.with_name(out.name + ".json").read_text())
    assert [s["first"] for s in manifest["segments"]] == [0, 25, 50]
    assert {s["worker"] for s in manifest["segments"]} <= {"cpu0", "cpu1"}


def test_one_video_split_over_two_workers_is_the_single_run_interpolate(make, tmp_path: Path) -> None:
    clip = make("w-rife.mp4", size=(32, 24), frames=40, options={**GOP, "g": "10", "keyint_min": "10"})
    out = tmp_path / "rife.mkv"
    res = run_pool([Job(clip, out)], RecipeStages(INTERPOLATE), _opts(), SLOTS, segment_seconds=F(2, 5))
    assert res.videos[0].status == "done" and res.videos[0].segments > 1
    _same_frames(out, _single(clip, tmp_path / "ref.mkv", INTERPOLATE))


def test_a_killed_worker_has_its_segment_requeued(long_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed.mkv"
    marker = tmp_path / "killed-once"
    # the frame at 1.52 s lies in the second segment [1 s, 2 s): its worker dies there, once
    res = run_pool([Job(long_clip, out)], KillingChain(UPSCALE, F(38, 25), marker), _opts(), SLOTS)
    assert marker.exists()
    assert res.requeued == {"killed.mkv#2/3": 1}
    assert sum(w.deaths for w in res.workers) == 1
    assert sorted(res.reports) == ["killed.mkv#1/3", "killed.mkv#2/3", "killed.mkv#3/3"]  # each run to the end once
    _same_frames(out, _single(long_clip, tmp_path / "ref.mkv", UPSCALE))


def test_an_item_that_kills_its_worker_twice_fails_the_run_naming_it(long_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "doomed.mkv"
    with pytest.raises(WorkerFailedError, match=r"doomed\.mkv#2/3 failed 2 times") as e:
        run_pool([Job(long_clip, out)], KillingChain({"resize": "16x12"}, F(38, 25), None), _opts(), SLOTS)
    assert e.value.exit_code == 9
    assert not out.exists() and not parts_dir(out).exists()


def test_cli_gpus_cpu_n_runs_cpu_worker_processes(long_clip: Path, make, tmp_path: Path, cli) -> None:
    out = tmp_path / "cli.mkv"
    r = cli("run", str(long_clip), "-o", str(out), "--encoder", "ffv1", "--resize", "16x12", "--gpus", "cpu:2")
    assert r.returncode == 0, r.stderr
    assert "split into segments" in r.stderr and "2 workers (cpu0, cpu1)" in r.stderr
    ref = tmp_path / "ref.mkv"
    run(long_clip, ref, RecipeStages({"resize": "16x12"})(), _opts())
    _same_frames(out, ref)


def test_a_video_that_fails_by_itself_fails_alone(make, tmp_path: Path) -> None:
    narrow = make("w-narrow.mp4", size=(32, 24), frames=6)
    wide = make("w-wide.mp4", size=(64, 48), frames=6)
    jobs = [Job(c, tmp_path / f"{c.stem}.mkv") for c in (narrow, wide)]
    res = run_pool(jobs, failing_wide_chain, _opts(), SLOTS)
    assert [v.status for v in res.videos] == ["done", "failed"]
    assert "64 px wide" in res.videos[1].reason and res.videos[1].exit_code == 8  # StageError's code
    assert res.requeued == {}  # an error is not a death: nothing re-queued
    assert not jobs[1].output.exists()


def test_a_chain_no_worker_can_build_stops_the_run_with_its_error(make, tmp_path: Path) -> None:
    clip = make("w-m1.mp4", size=(32, 24), frames=12)
    with pytest.raises(VidpipeError, match="could not start: no such model: test-missing") as e:
        run_pool([Job(clip, tmp_path / "o.mkv")], unbuildable_in_workers, _opts(), SLOTS)
    assert e.value.exit_code == ModelError.exit_code
