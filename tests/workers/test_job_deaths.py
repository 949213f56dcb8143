"""`job run` on worker processes whose worker dies mid-segment (SIGKILL from a test stage, tests/workers/
worker_chains.py): once, the segment is re-queued and the job's output is still the single run's, frame for frame;
every time, the job fails with WorkerFailedError (exit 9) naming the segment, its input recorded failed, no
output, and the segments finished meanwhile stay checkpointed for the next run. Spawned workers: `slow`."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import pytest
import torch
from worker_chains import KillingChain

from jobspec import write_job_spec
from vidpipe.errors import WorkerFailedError
from vidpipe.jobs.runner import run_job
from vidpipe.jobs.spec import load_spec
from vidpipe.runtime.pipeline import run
from vidpipe.testing import decode_all
from vidpipe.workers.job_executor import executor_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("worker_threads")]

GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
STAGES = {"upscale": "realesr-animevideov3-x2"}
PIPELINE = {**STAGES, "encoder": "ffv1", "device": "cpu"}
#: a frame of the second of three 1-second segments
KILL_AT = F(38, 25)


def test_job_segment_whose_worker_dies_once_is_requeued_twice_fails_the_job(make, tmp_path: Path) -> None:
    clip = make("jd-long.mp4", size=(32, 24), frames=75, options=GOP)
    once, always = tmp_path / "once", tmp_path / "always"
    for d in (once, always):
        d.mkdir()

    spec = load_spec(write_job_spec(once, [str(clip)], PIPELINE, seconds=1, gpus="cpu:2"), env={})
    marker = once / "killed-once"
    outcome = run_job(spec, env={}, executor=executor_for(spec, KillingChain(STAGES, KILL_AT, marker)))
    assert marker.exists() and outcome.ok, outcome.errors
    ref = once / "ref.mkv"
    run(clip, ref, spec.pipeline.stages(), spec.pipeline.run_options(progress="none"))
    (gt, gf), (wt, wf) = decode_all(outcome.outputs[0]), decode_all(ref)
    assert gt == wt and torch.equal(gf, wf), "the job's output differs from the single-process run"

    spec = load_spec(write_job_spec(always, [str(clip)], PIPELINE, seconds=1, gpus="cpu:2"), env={})
    outcome = run_job(spec, env={}, executor=executor_for(spec, KillingChain(STAGES, KILL_AT, None)))
    assert not outcome.ok and outcome.exit_code == WorkerFailedError.exit_code == 9
    assert "jd-long_upscaled#2/3 failed 2 times" in outcome.errors[0]
    doc = json.loads((always / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["status"] == "failed"
    assert not list(spec.output_dir.glob("*.mkv"))
    state = next((spec.work_dir / "state").glob("jd-long-*/state.json"))
    assert "1" not in json.loads(state.read_text())["done"], "the segment that killed its workers is checkpointed"
