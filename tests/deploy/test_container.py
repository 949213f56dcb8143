"""`vidpipe container`, the image's entrypoint, run as the image runs it (a process of its own) on the CPU against
SeaweedFS on loopback: a job from the environment alone and one from a mounted config.yaml each process a clip,
upload it, write the result JSON and the sentinel, and the monitor stops a fake instance (a `vastai` or
`runpodctl` that records its call); the start-up block; a store that refuses the key; `after: idle`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_env import HOST_NAMES, container_env, fetch_object, run_python, sha256

from calibration import scaled
from vidpipe.cli.container_cmd import load_container_job
from vidpipe.errors import UsageError
from vidpipe.media.probe import probe

pytestmark = pytest.mark.timeout(240)

#: a whole container start on 10 tiny frames (torch import, pre-flight, upscale, upload, monitor) on 2 quiet cores
CONTAINER_TIMEOUT_S = 120.0
UPSCALE = "realesr-animevideov3-x2"


def run_container(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "vidpipe", "container"], env, cwd, CONTAINER_TIMEOUT_S)


def block(stdout: str) -> list[str]:
    """The start-up block's lines (indented under its title)."""
    lines = stdout.splitlines()
    start = lines.index("vidpipe container start-up")
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


def check_uploaded(s3: Any, bucket: str, result_path: Path, sentinel: Path, clip: Path) -> dict[str, Any]:
    """The job's one output is in the bucket as the result JSON records it, and is the clip upscaled ×2."""
    doc = json.loads(result_path.read_text())
    assert doc["status"] == "succeeded" and doc["all_uploads_verified"] is True
    assert sentinel.is_file()
    (entry,) = doc["inputs"]
    (out,) = entry["outputs"]
    local = Path(out["path"])
    head, body = fetch_object(s3, bucket, out["key"])
    assert head["ContentLength"] == out["size"] == local.stat().st_size
    assert sha256(body) == out["sha256"] == sha256(local.read_bytes())
    src, dst = probe(clip).video, probe(local).video
    assert (dst.width, dst.height) == (src.width * 2, src.height * 2)
    assert dst.frames == src.frames
    return out


def env_job(s3: Any, bucket: str, clip: Path, tmp_path: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    """A job from the environment alone: the clip upscaled on the CPU, uploaded, then auto-stop through vast.ai's
    `vastai` (faked in `bin_dir`)."""
    return container_env(
        s3,
        bucket,
        bin_dir=bin_dir,
        VIDPIPE_INPUT=str(clip),
        VIDPIPE_OUTPUT_DIR=str(tmp_path / "out"),
        VIDPIPE_UPSCALE=UPSCALE,
        VIDPIPE_DEVICE="cpu",
        UPLOAD_RESULT_JSON=str(tmp_path / "result.json"),
        VIDPIPE_SENTINEL=str(tmp_path / "DONE"),
        VIDPIPE_AUTO_STOP="1",
        CONTAINER_ID="4242",
        **extra,
    )


def test_env_only_job_uploads_and_the_monitor_stops_the_instance(s3_server, bucket, clip, stop_bin, tmp_path):
    bin_dir, calls = stop_bin
    env = env_job(
        s3_server,
        bucket,
        clip,
        tmp_path,
        bin_dir,
        AUTO_UPLOAD_B2="1",
        VIDPIPE_SEGMENT_SECONDS="0",
        VIDPIPE_KEY_PREFIX="envjob",
    )
    proc = run_container(env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = block(proc.stdout)
    assert lines[0].startswith("job: from environment")
    assert "GPU: none visible to torch" in lines
    assert any(line.startswith("device 'cpu': ") and "FAILED" not in line for line in lines)
    assert any(line.startswith("NVDEC: none") for line in lines)
    assert any(line.startswith("disk: ") and "GiB free" in line for line in lines)
    assert f"bucket: s3://{bucket}/envjob reachable (pre-flight: list, put, HEAD, delete ok)" in lines
    assert lines[-1] == (
        "after the job: monitor stops the instance once every upload is verified (vastai stop instance 4242), then exit"
    )
    out = check_uploaded(s3_server, bucket, tmp_path / "result.json", tmp_path / "DONE", clip)
    assert out["key"].startswith("envjob/deploy_upscaled_")
    assert calls.read_text() == "vastai stop instance 4242\n"  # stopped once, after the sentinel
    assert json.loads((tmp_path / "result.json.stopped").read_text())["job_id"]
    # the stopped instance started again to look at it: the job is not run again, the instance not stopped again
    again = run_container(env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not running it again" in again.stderr and "vidpipe container start-up" not in again.stdout
    assert calls.read_text() == "vastai stop instance 4242\n"


def test_mounted_config_yaml_job(s3_server, bucket, clip, stop_bin, tmp_path):
    bin_dir, calls = stop_bin
    config = tmp_path / "mnt" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": [str(clip)],
                "pipeline": {"upscale": UPSCALE, "device": "cpu"},
                "output": {"dir": "../out", "container": "mkv", "prefix": "cfg", "upload": True},
                "segments": {"seconds": 0.2},  # two segments, joined before the upload
                "result_json": "../result.json",
                "sentinel": "../DONE",
                "auto_stop": {"enabled": True, "provider": "runpod"},
                "container": {"after": "exit"},
            }
        )
    )
    # B2_BUCKET is the only store setting the file leaves to the environment; credentials are never in a spec
    env = container_env(s3_server, bucket, bin_dir=bin_dir, VIDPIPE_CONFIG=str(config), RUNPOD_POD_ID="pod-7")
    proc = run_container(env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = block(proc.stdout)
    assert lines[0] == f"job: from config {config}; 1 input(s): {clip}"
    assert f"bucket: s3://{bucket}/cfg reachable (pre-flight: list, put, HEAD, delete ok)" in lines
    out = check_uploaded(s3_server, bucket, tmp_path / "result.json", tmp_path / "DONE", clip)
    assert out["key"].startswith("cfg/deploy_upscaled_") and out["key"].endswith(".mkv")
    assert calls.read_text() == "runpodctl stop pod pod-7\n"


def test_a_store_that_refuses_the_key_fails_before_any_frame(s3_server, bucket, clip, stop_bin, tmp_path):
    bin_dir, calls = stop_bin
    env = env_job(s3_server, bucket, clip, tmp_path, bin_dir, B2_SECRET="not-the-secret-0123456789")
    proc = run_container(env, tmp_path)
    assert proc.returncode == 7, proc.stderr[-3000:]
    bucket_line = next(line for line in block(proc.stdout) if line.startswith("bucket: "))
    assert "FAILED" in bucket_line and "not-the-secret" not in proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["exit_code"] == 7
    assert not (tmp_path / "DONE").exists()
    assert not list((tmp_path / "out").glob("*_upscaled.mp4"))  # nothing processed
    assert not calls.exists()  # a failed job never stops the instance (no stop_on_failure)


def test_after_idle_keeps_the_container_up_until_sigterm(clip, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(HOST_NAMES)}
    env |= {
        "AUTO_UPLOAD_B2": "0",
        "VIDPIPE_INPUT": str(clip),
        "VIDPIPE_OUTPUT_DIR": str(tmp_path / "out"),
        "VIDPIPE_RESIZE": "32x24",
        "VIDPIPE_DEVICE": "cpu",
        "VIDPIPE_AFTER": "idle",
        "UPLOAD_RESULT_JSON": str(tmp_path / "result.json"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidpipe", "container", "--no-diagnostics"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + scaled(CONTAINER_TIMEOUT_S)
        seen = ""
        assert proc.stdout is not None
        while "container: idle" not in seen:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"exited {proc.returncode} before idling:\n{seen[-3000:]}"
            seen += line
            assert time.monotonic() < deadline, seen[-3000:]
        assert json.loads((tmp_path / "result.json").read_text())["status"] == "succeeded"
        time.sleep(0.5)
        assert proc.poll() is None  # still up: a host that restarts exited containers does not run the job again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(scaled(10)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- where the job comes from (in-process, no job run) -----------------------------------------------------


def _spec_doc(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"inputs": [str(tmp_path / f"{name}.mp4")], "output": {"dir": str(tmp_path / name), "upload": False}}


def test_the_job_sources_in_order(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_spec_doc(tmp_path, "file") | {"container": {"after": "idle"}}))
    env = {"VIDPIPE_INPUT": str(tmp_path / "env.mp4"), "VIDPIPE_OUTPUT_DIR": str(tmp_path / "envout")}
    missing = tmp_path / "absent.yaml"

    job = load_container_job(env, default_config=missing)
    assert job.spec.inputs == (str(tmp_path / "env.mp4"),) and job.after == "exit"
    assert job.origin.startswith("environment")

    job = load_container_job(env, default_config=config)  # a config at the default path beats the environment
    assert job.spec.inputs == (str(tmp_path / "file.mp4"),) and job.after == "idle"
    assert job.origin == f"config {config}"

    job = load_container_job(env | {"VIDPIPE_CONFIG": str(config)}, default_config=missing)
    assert job.spec.inputs == (str(tmp_path / "file.mp4"),)

    inline = json.dumps(_spec_doc(tmp_path, "inline"))  # JSON inline beats the config
    job = load_container_job(env | {"VIDPIPE_JOB": inline, "VIDPIPE_AFTER": "idle"}, default_config=config)
    assert job.spec.inputs == (str(tmp_path / "inline.mp4"),) and job.origin == "VIDPIPE_JOB" and job.after == "idle"

    yaml_inline = f"inputs: [{tmp_path / 'y.mp4'}]\noutput: {{dir: {tmp_path / 'y'}, upload: false}}\n"
    assert load_container_job({"VIDPIPE_JOB": yaml_inline}, default_config=missing).spec.inputs == (
        str(tmp_path / "y.mp4"),
    )
    assert load_container_job({"VIDPIPE_JOB": str(config)}, default_config=missing).after == "idle"  # a path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIDPIPE_JOB": "no-such-file.yaml"}, "neither an existing spec file nor an inline YAML/JSON mapping"),
        ({"VIDPIPE_JOB": "{inputs: [a"}, "neither a spec file nor a valid inline YAML/JSON spec"),
        ({"VIDPIPE_CONFIG": "/nonexistent/config.yaml"}, "job spec /nonexistent/config.yaml not found"),
        ({}, "set VIDPIPE_JOB to a job spec or VIDPIPE_INPUT"),
        ({"VIDPIPE_JOB": '{"inputs": ["a.mp4"], "output": {"dir": "o"}, "container": {"then": 1}}'},
         "container: unknown key 'then'; valid keys: after"),
        ({"VIDPIPE_INPUT": "a.mp4", "VIDPIPE_AFTER": "sleep"}, "invalid after 'sleep'.*valid: exit, idle"),
    ],
)  # fmt: skip
def test_bad_job_sources_are_usage_errors(env, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        load_container_job(env, default_config=tmp_path / "absent.yaml")


def test_a_stop_that_ends_the_monitor_leaves_its_marker(tmp_path):
    """On vast.ai and RunPod the stop command stops the container the monitor runs in (SIGTERM): the marker must be
    on disk before the command runs, or the instance started again would run the job and stop once more."""
    from vidpipe.errors import Interrupted
    from vidpipe.jobs.monitor import MonitorConfig, run_monitor
    from vidpipe.jobs.result import JobResult
    from vidpipe.jobs.storage import UploadReceipt

    result, sentinel = tmp_path / "result.json", tmp_path / "DONE"
    job = JobResult(result, sentinel=sentinel, upload_enabled=True)
    job.begin()
    receipt = UploadReceipt(bucket="b", key="k.mp4", size=1, sha256="0" * 64, etag="", parts=0, attempts=1, seconds=0)
    job.record_upload("in.mp4", "/out/k.mp4", receipt)
    job.succeed_input("in.mp4")
    assert job.finish()
    config = MonitorConfig(result_path=result, sentinel_path=sentinel, stop_command=("vastai", "stop"), interval=0.01)

    def stopped_from_outside(argv: object, timeout: float) -> object:
        assert config.marker.is_file()  # written before the command runs
        raise Interrupted("interrupted by SIGTERM")

    with pytest.raises(Interrupted):
        run_monitor(config, runner=stopped_from_outside)  # type: ignore[arg-type]
    assert json.loads(config.marker.read_text())["job_id"] == json.loads(result.read_text())["job_id"]
