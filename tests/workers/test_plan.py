"""`--gpus` parsing, the CPU test switch, expected costs and LPT order, and which videos are split (no worker
process is started here)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction as F
from pathlib import Path

import pytest

from vidpipe.errors import UsageError
from vidpipe.media.probe import probe
from vidpipe.runtime.inputs import Job
from vidpipe.runtime.pipeline import RunOptions, TimeWindow
from vidpipe.schedule.costs import CostRow, InputBucket, Provenance
from vidpipe.workers import RecipeStages
from vidpipe.workers.devices import parse_gpus, worker_slots
from vidpipe.workers.plan import expected_cost, lpt_order, parts_dir, plan_videos

GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}


def test_parse_gpus_all_count_and_list() -> None:
    visible = ["0", "1", "2", "3"]
    assert parse_gpus("all", visible) == visible
    assert parse_gpus("2", visible) == ["0", "1"]
    assert parse_gpus("0,2", visible) == ["0", "2"]
    assert parse_gpus("1,1", visible) == ["1", "1"]  # two workers sharing one GPU
    # positions among the visible devices: CUDA_VISIBLE_DEVICES=4,6 makes --gpus 1 mean GPU 6
    assert parse_gpus("1,", ["4", "6"]) == ["6"]


@pytest.mark.parametrize("bad", ["5", "0", "0,9", "x", "all"])
def test_parse_gpus_refuses_what_is_not_there(bad: str) -> None:
    with pytest.raises(UsageError, match="--gpus"):
        parse_gpus(bad, [] if bad == "all" else ["0", "1"])


def test_worker_slots_from_visible_devices_share_a_listed_gpu() -> None:
    slots = worker_slots("0,0,1", env={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert [(s.gpu, s.device, s.share) for s in slots] == [("3", "cuda:0", 2), ("3", "cuda:0", 2), ("5", "cuda:0", 1)]
    assert [s.label for s in slots] == ["gpu3", "gpu3", "gpu5"]
    assert worker_slots(None, env={"CUDA_VISIBLE_DEVICES": ""}) == []  # none visible: the run stays in-process
    with pytest.raises(UsageError, match="no CUDA device"):
        worker_slots("2", env={"CUDA_VISIBLE_DEVICES": ""})


def test_cpu_n_starts_n_cpu_workers_each_with_its_share() -> None:
    for env in ({"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "0,1"}):  # with or without GPUs
        assert [(s.device, s.gpu, s.share) for s in worker_slots("cpu:3", env)] == [("cpu", None, 3)] * 3
        assert [s.label for s in worker_slots(" cpu:2", env)] == ["cpu0", "cpu1"]
    for bad in ("cpu:0", "cpu:", "cpu:two", "cpu:-1"):
        with pytest.raises(UsageError, match="cpu:N takes a count"):
            worker_slots(bad, {"CUDA_VISIBLE_DEVICES": ""})


def _row(component: str, short: int, ms: float) -> CostRow:
    w = round(short * 16 / 9)
    prov = Provenance(commit="x", date="d", gpu="g", torch="t", cuda="c")
    return CostRow(
        component=component,
        unit="frame",
        input_bucket=InputBucket(short_side=short, width=w, height=short),
        runtime="inprocess",
        model_signature="s",
        dtype="fp16",
        gpu_memory_per_task_mb=1.0,
        cpu_rss_peak_mb=None,
        latency_ms_per_unit=ms,
        max_batch_size_component=8,
        cross_video_batching=True,
        provenance=prov,
    )


def test_expected_cost_follows_the_tables_then_pixels(make) -> None:
    small = probe(make("w-small.mp4", size=(64, 48), frames=10))
    big = probe(make("w-big.mp4", size=(128, 96), frames=10))
    rows = [_row("upscale", 360, 10.0), _row("interpolate", 360, 30.0)]
    # same bucket: cost ∝ frames × pixels × the rows' latency per pixel, added over the chain
    assert expected_cost(big, 10, ["upscale"], rows) == pytest.approx(4 * expected_cost(small, 10, ["upscale"], rows))
    assert expected_cost(small, 20, ["upscale"], rows) == pytest.approx(2 * expected_cost(small, 10, ["upscale"], rows))
    both = expected_cost(small, 10, ["upscale", "interpolate"], rows)
    assert both == pytest.approx(4 * expected_cost(small, 10, ["upscale"], rows))
    assert expected_cost(small, 10, ["upscale"], []) == 10 * 64 * 48  # no table: frames × pixels


def test_lpt_puts_the_longest_first_and_splits_only_when_workers_outnumber_videos(make, tmp_path: Path) -> None:
    a = make("w-a.mp4", size=(64, 48), frames=20)
    b = make("w-b.mp4", size=(128, 96), frames=15)
    c = make("w-c.mp4", size=(64, 48), frames=75, options=GOP)
    jobs = [Job(p, tmp_path / f"{p.stem}.mkv") for p in (a, b, c)]
    opts = RunOptions(device="cpu", progress="none")
    chain = RecipeStages({"resize": "32x24"})()
    plans = plan_videos(jobs, chain, opts, 2, rows=[])
    assert all(len(p.items) == 1 and not p.split for p in plans)  # 3 videos ≥ 2 workers: whole
    order = [it.key for it in lpt_order([it for p in plans for it in p.items])]
    assert order == ["w-c.mkv", "w-b.mkv", "w-a.mkv"]  # 75×64×48 > 15×128×96 > 20×64×48

    (one,) = plan_videos(jobs[2:], chain, opts, 2, rows=[])  # one video, two workers: split at its keyframes
    assert one.split and one.parts == parts_dir(jobs[2].output)
    assert [it.segment.first for it in one.items if it.segment] == [0, 25, 50]
    assert [it.key for it in one.items] == ["w-c.mkv#1/3", "w-c.mkv#2/3", "w-c.mkv#3/3"]
    # a part of a video (--start/--duration) and an image sequence stay whole
    part = replace(opts, window=TimeWindow(F(1), F(2)))
    assert not plan_videos(jobs[2:], chain, part, 2, rows=[])[0].split
    assert not plan_videos([Job(c, tmp_path / "seq")], chain, opts, 2, rows=[])[0].split


def test_a_missing_input_is_planned_as_failed(tmp_path: Path) -> None:
    (plan,) = plan_videos([Job(tmp_path / "nope.mp4", tmp_path / "o.mkv")], [], RunOptions(device="cpu"), 2, rows=[])
    assert plan.error is not None and not plan.items


def test_cli_refuses_gpus_and_executor_options_that_do_not_fit(make, tmp_path: Path, cli) -> None:
    clip = make("w-a.mp4", size=(64, 48), frames=20)
    out = str(tmp_path / "o.mkv")
    r = cli("run", str(clip), "-o", out, "--gpus", "2", "--device", "cpu")
    assert r.returncode == 2 and "--gpus picks the devices itself" in r.stderr
    r = cli("run", str(clip), "-o", out, "--gpus", "cpu:2", "--device", "cuda")
    assert r.returncode == 2 and "--gpus cpu:2 takes --device auto or cpu" in r.stderr
    r = cli("run", str(clip), "-o", out, "--address", "auto")
    assert r.returncode == 2 and "--address goes with --executor ray" in r.stderr
    r = cli("run", str(clip), "-o", out, "--executor", "slurm")
    assert r.returncode == 2 and "valid: local, ray" in r.stderr
    assert not Path(out).exists()
