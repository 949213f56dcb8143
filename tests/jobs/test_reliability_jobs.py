"""Issue 22's reliability matrix (docs/reliability.md), its S3 cases seen through a whole `vidpipe job run`: the
store behind the fault-injecting proxy of conftest.py. tests/jobs/test_storage.py covers the same faults one call
of `S3Storage` at a time; here the job must end with the right exit code, result JSON and sentinel (none after an
unverified upload) and pick up where it stopped once the store answers again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from calibration import scaled
from jobspec import write_job_spec
from vidpipe.errors import StorageError

pytestmark = pytest.mark.timeout(240)

#: a job on this tiny clip ends well within this on 2 quiet cores, retries and back-offs included (scaled by the
#: load calibration, tests/calibration.py)
JOB_TIMEOUT_S = 120
#: the proxy resets a connection once it has carried this many bytes towards the store: beyond any request's
#: headers (HEAD, list-multipart-uploads pass), short of the output's body (the PUT is cut every time)
CUT_AFTER_BYTES = 8192


@pytest.fixture(scope="module")
def clip(make) -> Path:
    return make("rel-job.mp4", size=(160, 120), frames=25, source="mandelbrot")


def _spec(tmp: Path, clip: Path) -> Path:
    return write_job_spec(tmp, [str(clip)], {"encoder": "ffv1", "device": "cpu"})


def _job(spec: Path, s3_server: Any, bucket: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "AWS_", "VIDPIPE_", "UPLOAD_RESULT"))}
    env |= {
        "B2_KEY": s3_server.access_key,
        "B2_SECRET": s3_server.secret_key,
        "B2_ENDPOINT": endpoint,
        "B2_BUCKET": bucket,
        "AUTO_UPLOAD_B2": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", "job", "run", str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(JOB_TIMEOUT_S),
        check=False,
    )


def _objects(s3_server: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.admin_client().list_objects_v2(Bucket=bucket).get("Contents") or []]


def test_case24_upload_cut_every_time_fails_without_sentinel_then_resumes(
    clip, s3_server, bucket, fault_proxy, tmp_path
):
    spec = _spec(tmp_path, clip)
    proxy = fault_proxy(cut_after=CUT_AFTER_BYTES)
    proc = _job(spec, s3_server, bucket, proxy.endpoint)
    assert proc.returncode == StorageError.exit_code, proc.stderr[-3000:]
    assert proxy.cuts >= 2  # the upload was retried before the job gave up
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["all_uploads_verified"] is False
    assert result["inputs"][0]["error"]["retryable"] is True
    assert not (tmp_path / "SENTINEL").exists()
    assert _objects(s3_server, bucket) == []
    assert not s3_server.admin_client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    [local] = [p for p in (tmp_path / "out").iterdir() if p.suffix == ".mkv"]
    made = local.stat().st_mtime_ns
    # the store answers again: the joined output is reused, uploaded once, verified, and only then the sentinel
    proc = _job(spec, s3_server, bucket, s3_server.endpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    [out] = result["inputs"][0]["outputs"]
    assert result["all_uploads_verified"] is True and out["verified"] is True
    assert Path(out["path"]) == local and local.stat().st_mtime_ns == made
    assert _objects(s3_server, bucket) == [out["key"]]
    assert (tmp_path / "SENTINEL").exists()


def test_case25_slowdown_503_is_retried_and_the_job_verifies(clip, s3_server, bucket, fault_proxy, tmp_path):
    spec = _spec(tmp_path, clip)
    proxy = fault_proxy(slowdown=3)
    proc = _job(spec, s3_server, bucket, proxy.endpoint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.slowdowns == 3 and "SlowDown" in proc.stderr  # the retries are logged, not silent
    result = json.loads((tmp_path / "result.json").read_text())
    [out] = result["inputs"][0]["outputs"]
    assert result["all_uploads_verified"] is True and out["verified"] is True
    assert _objects(s3_server, bucket) == [out["key"]]
    assert (tmp_path / "SENTINEL").exists()
