"""`--executor ray` on a local Ray cluster (the session-scoped `ray_cluster`, tests/conftest.py: 2 fake GPUs, the actors
run on the CPU): many videos and one video split into segments, frame for frame the single-process run (which the
local pool's tests show it equals too), and an actor SIGKILLed mid-segment re-queued. Skipped without Ray (the
`ray` extra)."""

from __future__ import annotations

from fractions import Fraction as F
from pathlib import Path
from typing import Any

import pytest
import torch
from worker_chains import KillingChain

from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.inputs import Job
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.testing import decode_all
from vidpipe.workers import RecipeStages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.usefixtures("worker_threads")]

GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
UPSCALE = {"upscale": "realesr-animevideov3-x2"}
INTERPOLATE = {"interpolate": "rife-hdv3", "multi": 2}


def _opts() -> RunOptions:
    return RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))


def _same_as_single(got: Path, src: Path, tmp_path: Path, values: dict[str, Any] = UPSCALE) -> None:
    ref = tmp_path / f"ref-{got.name}"
    run(src, ref, RecipeStages(values)(), _opts())
    (gt, gf), (wt, wf) = decode_all(got), decode_all(ref)
    assert gt == wt and torch.equal(gf, wf), f"{got.name}: Ray's output differs from the single-process run"


def test_ray_many_videos_and_a_split_one(ray_cluster: Any, make, tmp_path: Path) -> None:
    from vidpipe.workers.ray_executor import run_ray

    clips = [make("r-1.mp4", size=(32, 24), frames=8), make("r-2.mp4", size=(48, 32), frames=10, source="mandelbrot")]
    jobs = [Job(c, tmp_path / f"{c.stem}.mkv") for c in clips]
    res = run_ray(jobs, RecipeStages(UPSCALE), _opts())
    assert [v.status for v in res.videos] == ["done", "done"] and len(res.workers) == 2
    for c, j in zip(clips, jobs, strict=True):
        _same_as_single(j.output, c, tmp_path)

    long = make("r-long.mp4", size=(32, 24), frames=75, options=GOP)
    out = tmp_path / "split.mkv"
    res = run_ray([Job(long, out)], RecipeStages(UPSCALE), _opts())
    assert res.videos[0].segments == 3
    _same_as_single(out, long, tmp_path)


def test_ray_split_interpolation_is_the_single_run(ray_cluster: Any, make, tmp_path: Path) -> None:
    """Interpolation across segments on Ray actors: each segment's look-ahead pair is the next one's first frame,
    and the join gives the single run's frames and times exactly (as the local pool's test does)."""
    from vidpipe.workers.ray_executor import run_ray

    clip = make("r-rife.mp4", size=(32, 24), frames=40, options={**GOP, "g": "10", "keyint_min": "10"})
    out = tmp_path / "rife.mkv"
    res = run_ray([Job(clip, out)], RecipeStages(INTERPOLATE), _opts(), segment_seconds=F(2, 5))
    assert res.videos[0].status == "done" and res.videos[0].segments > 1
    _same_as_single(out, clip, tmp_path, INTERPOLATE)


def test_ray_actor_killed_mid_segment_is_requeued(ray_cluster: Any, make, tmp_path: Path) -> None:
    from vidpipe.workers.ray_executor import run_ray

    long = make("r-long.mp4", size=(32, 24), frames=75, options=GOP)
    out = tmp_path / "killed.mkv"
    marker = tmp_path / "killed-once"
    res = run_ray([Job(long, out)], KillingChain(UPSCALE, F(38, 25), marker), _opts())
    assert marker.exists() and res.requeued == {"killed.mkv#2/3": 1}
    _same_as_single(out, long, tmp_path)
