"""`job run` on several workers (issue 19): the spec's `executor`/`address`/`gpus` (and `VIDPIPE_*`), a job's
inputs and segments over two CPU worker processes (`gpus: cpu:2`, the CI form of `--gpus`) and over Ray actors
with an s3:// input and a verified upload to the real S3 server (SeaweedFS), each output frame for frame the
single-process run; and a split job stopped by a real SIGTERM after its first checkpointed segment, run again:
the finished segments are not recomputed (same files, the manifest's `reused`), the output is the same.

The worker runs start spawned interpreters (or Ray actors) that import torch: `slow`. Frames go through FFV1
(lossless), so the comparison sees the stages' output; the reference runs with the compute threads each of the
two workers gets (cores / 2), the same arithmetic."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from framecheck import YUV420_LEVELS, assert_frames_close
from jobspec import write_job_spec
from vidpipe.errors import Interrupted, UsageError
from vidpipe.jobs.runner import JobRunner, run_job
from vidpipe.jobs.spec import JobSpec, build_spec, load_spec
from vidpipe.runtime.pipeline import run
from vidpipe.testing import decode_all
from vidpipe.workers.job_executor import PoolExecutor, RayExecutor, executor_for

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("worker_threads")]

#: a keyframe each second at 25 fps: 1-second segments
GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
UPSCALE = {"upscale": "realesr-animevideov3-x2", "encoder": "ffv1", "device": "cpu"}


def _doc(tmp: Path, **top: Any) -> dict[str, Any]:
    return {"inputs": [str(tmp / "a.mp4")], "output": {"dir": str(tmp / "out")}, **top}


# -- the spec ------------------------------------------------------------------------------------------------


def test_spec_fields_and_their_environment(tmp_path: Path) -> None:
    spec = build_spec(_doc(tmp_path, gpus="cpu:2"), base_dir=tmp_path, env={})
    assert (spec.executor, spec.address, spec.gpus) == ("local", None, "cpu:2")
    ex = executor_for(spec)
    assert isinstance(ex, PoolExecutor) and [s.device for s in ex.slots] == ["cpu", "cpu"]
    assert ex.device_type == "cpu"
    # YAML reads `gpus: 2` as a number; the environment fills what the spec leaves out, the spec wins
    env = {"VIDPIPE_EXECUTOR": "ray", "VIDPIPE_ADDRESS": "ray://head:10001", "VIDPIPE_GPUS": "4"}
    spec = build_spec(_doc(tmp_path, gpus=2), base_dir=tmp_path, env=env)
    assert (spec.executor, spec.address, spec.gpus) == ("ray", "ray://head:10001", "2")
    local = build_spec(_doc(tmp_path, executor="local"), base_dir=tmp_path, env=env)
    assert (local.executor, local.address) == ("local", None)  # the environment's address serves Ray only
    if not torch.cuda.is_available():  # no GPU and no `gpus`: the job stays in this process, as `vidpipe run` does
        assert executor_for(build_spec(_doc(tmp_path), base_dir=tmp_path, env={})) is None
    pytest.importorskip("ray")
    ray_ex = executor_for(spec)
    assert isinstance(ray_ex, RayExecutor) and (ray_ex.address, ray_ex.actors) == ("ray://head:10001", 2)


@pytest.mark.parametrize(
    ("top", "env", "message"),
    [
        ({"executor": "dask"}, {}, "invalid executor 'dask'; valid: local, ray"),
        ({}, {"VIDPIPE_EXECUTOR": "slurm"}, "VIDPIPE_EXECUTOR: invalid executor 'slurm'"),
        ({"address": "auto"}, {}, "it goes with executor: ray"),
        ({"executor": "ray", "gpus": "cpu:2"}, {}, "Ray's actors take GPUs"),
    ],
)
def test_spec_refuses_bad_worker_fields(tmp_path: Path, top: dict, env: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_spec(_doc(tmp_path, **top), base_dir=tmp_path, env=env)


def test_bad_gpus_fail_where_the_workers_start(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cpu:N takes a count"):
        executor_for(build_spec(_doc(tmp_path, gpus="cpu:x"), base_dir=tmp_path, env={}))
    with pytest.raises(UsageError, match="takes --device auto or cpu, not cuda"):
        executor_for(build_spec(_doc(tmp_path, gpus="cpu:2", pipeline={"device": "cuda"}), base_dir=tmp_path, env={}))


# -- runs ----------------------------------------------------------------------------------------------------


def _reference(spec: JobSpec, src: Path, out: Path) -> Path:
    """The single-process run of the job's pipeline (what `vidpipe run` makes of `src`)."""
    run(src, out, spec.pipeline.stages(), spec.pipeline.run_options(progress="none"))
    return out


def _same_frames(got: Path, want: Path) -> None:
    (gt, gf), (wt, wf) = decode_all(got), decode_all(want)
    assert gt == wt, f"{got.name}: frame times differ"
    assert torch.equal(gf, wf), f"{got.name}: frames differ from the single-process run"


def _result(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "result.json").read_text())


def _manifest(output: Path) -> dict[str, Any]:
    return json.loads(output.with_name(output.name + ".json").read_text())


@pytest.mark.slow
def test_job_over_two_cpu_workers_equals_the_single_run(make, tmp_path: Path, cli) -> None:
    long = make("jw-long.mp4", size=(32, 24), frames=75, options=GOP)
    short = make("jw-short.mp4", size=(48, 32), frames=10, source="mandelbrot")
    path = write_job_spec(tmp_path, [str(long), str(short)], UPSCALE, seconds=1)
    r = cli("job", "run", str(path), "--gpus", "cpu:2", "--progress", "json")  # the option adds `gpus` to the spec
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"worker": "cpu1"' in r.stdout, "no progress line from the second worker process"
    doc = _result(tmp_path)
    assert doc["status"] == "succeeded" and [i["status"] for i in doc["inputs"]] == ["ok", "ok"]
    spec = load_spec(path, env={})
    out_long, out_short = (spec.output_dir / f"{c.stem}_upscaled.mkv" for c in (long, short))
    assert [i["outputs"][0]["path"] for i in doc["inputs"]] == [str(out_long), str(out_short)]
    _same_frames(out_long, _reference(spec, long, tmp_path / "ref-long.mkv"))
    _same_frames(out_short, _reference(spec, short, tmp_path / "ref-short.mkv"))
    segs = _manifest(out_long)["segments"]
    assert len(segs) == 3 and not any(s["reused"] for s in segs)
    # the segment files are gone after the join; the checkpoint records the join
    state = next((spec.work_dir / "state").glob("jw-long-*/state.json"))
    assert json.loads(state.read_text())["joined"]["file"] == out_long.name
    assert not list(state.parent.glob("seg_*"))


class _StopAfterFirstSegment(JobRunner):
    """SIGTERMs its own process as soon as one segment is checkpointed: a real signal, at a known step."""

    def reached(self, point: str) -> None:
        if point.startswith("segment-done:"):
            os.kill(os.getpid(), signal.SIGTERM)


class _WatchSegments(JobRunner):
    """Notes each segment file's (inode, mtime) when the join starts (they are deleted after it)."""

    seen: dict[str, tuple[int, int]]

    def reached(self, point: str) -> None:
        if point == "join":
            state = next((self.spec.work_dir / "state").glob("*/state.json")).parent
            self.seen = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in state.glob("seg_*")}


@pytest.mark.slow
def test_split_job_stopped_by_sigterm_resumes_without_redoing_finished_segments(make, tmp_path: Path) -> None:
    clip = make("jw-resume.mp4", size=(32, 24), frames=150, options=GOP)  # 6 segments of 1 s
    path = write_job_spec(tmp_path, [str(clip)], UPSCALE, seconds=1, gpus="cpu:2")
    spec = load_spec(path, env={})
    with pytest.raises(Interrupted):
        _StopAfterFirstSegment(spec, env={}, executor=executor_for(spec)).run()
    assert _result(tmp_path)["inputs"][0]["status"] == "failed"
    state_dir = next((spec.work_dir / "state").glob("jw-resume-*"))
    done = json.loads((state_dir / "state.json").read_text())["done"]
    assert 1 <= len(done) < 6, f"{len(done)} of 6 segments done before the stop took effect"
    before = {r["file"]: ((state_dir / r["file"]).stat().st_ino, (state_dir / r["file"]).stat().st_mtime_ns)
              for r in done.values()}  # fmt: skip
    assert not list(state_dir.glob(".*vidpipe-partial*")), "a stopped worker left a partial segment"

    again = _WatchSegments(spec, env={}, executor=executor_for(spec))
    outcome = again.run()
    assert outcome.ok, outcome.errors
    assert _result(tmp_path)["status"] == "succeeded"
    assert len(again.seen) == 6
    assert {name: again.seen[name] for name in before} == before, "a finished segment was made again"
    out = outcome.outputs[0]
    reused = [s["index"] for s in _manifest(out)["segments"] if s["reused"]]
    assert reused == sorted(int(i) for i in done)
    _same_frames(out, _reference(spec, clip, tmp_path / "ref.mkv"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_reads_s3_and_uploads_verified(ray_cluster, make, s3_server, bucket, tmp_path: Path) -> None:
    clip = make("jw-ray.mp4", size=(32, 24), frames=75, options=GOP)
    s3_server.admin_client().upload_file(str(clip), bucket, "raw/jw-ray.mp4")
    env = {
        "B2_KEY": s3_server.access_key,
        "B2_SECRET": s3_server.secret_key,
        "B2_ENDPOINT": s3_server.endpoint,
        "B2_BUCKET": bucket,
    }
    path = write_job_spec(
        tmp_path,
        [f"s3://{bucket}/raw/jw-ray.mp4"],
        UPSCALE,
        seconds=1,
        executor="ray",
        gpus=2,
        output={"dir": str(tmp_path / "out"), "container": "mkv", "upload": True, "prefix": "done"},
    )
    spec = load_spec(path, env=env)
    ex = executor_for(spec)
    assert isinstance(ex, RayExecutor)
    outcome = run_job(spec, env=env, executor=ex)
    assert outcome.ok and outcome.sentinel, outcome.errors
    record = _result(tmp_path)["inputs"][0]
    assert record["status"] == "ok" and record["outputs"][0]["verified"] is True
    key = record["outputs"][0]["key"]
    assert key.startswith("done/jw-ray_upscaled")
    got = tmp_path / "downloaded.mkv"
    s3_server.admin_client().download_file(bucket, key, str(got))
    assert got.read_bytes() == outcome.outputs[0].read_bytes()
    assert len(_manifest(outcome.outputs[0])["segments"]) == 3
    _same_frames(got, _reference(spec, clip, tmp_path / "ref.mkv"))


@pytest.mark.gpu
@pytest.mark.slow
def test_job_on_two_workers_of_one_gpu_matches_one_process(make, tmp_path: Path) -> None:
    """On a GPU (the lead runs it): `gpus: 0,0`, a split job on two workers sharing the GPU, against the
    one-process run on the same GPU within float rounding (each worker plans its own batches)."""
    clip = make("jw-gpu.mp4", size=(640, 360), frames=100, options=GOP)
    gpu = {**UPSCALE, "device": "auto"}
    spec = load_spec(write_job_spec(tmp_path, [str(clip)], gpu, seconds=1, gpus="0,0"), env={})
    ex = executor_for(spec)
    assert isinstance(ex, PoolExecutor) and ex.device_type == "cuda" and [s.share for s in ex.slots] == [2, 2]
    outcome = run_job(spec, env={}, executor=ex)
    assert outcome.ok, outcome.errors
    assert len(_manifest(outcome.outputs[0])["segments"]) == 4
    (gt, got), (wt, want) = decode_all(outcome.outputs[0]), decode_all(_reference(spec, clip, tmp_path / "ref.mkv"))
    assert gt == wt
    assert_frames_close(got, want, levels=YUV420_LEVELS, what="a job split over two workers on one GPU")
