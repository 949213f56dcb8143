"""Result JSON and sentinel rules (no server needed: receipts are built by hand)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from vidpipe import paths
from vidpipe.errors import OutputError, StorageError
from vidpipe.jobs import atomic
from vidpipe.jobs.result import (
    DEFAULT_RESULT_PATH,
    DEFAULT_SENTINEL,
    JobResult,
    OutputRecord,
    check_uploads_verified,
    result_path_from_env,
    sentinel_path_from_env,
)
from vidpipe.jobs.storage import UploadReceipt

SHA = "ab" * 32


def _receipt(key: str = "k_upscaled_20250101_000000.mp4", *, verified: bool = True) -> UploadReceipt:
    return UploadReceipt(
        bucket="bkt", key=key, size=10, sha256=SHA, etag='"x"', parts=0, attempts=2, seconds=0.5, verified=verified
    )


def _job(tmp_path: Path, *, upload: bool = True) -> JobResult:
    job = JobResult(tmp_path / "result.json", sentinel=tmp_path / "DONE", upload_enabled=upload, bucket="bkt")
    job.begin()
    return job


def _doc(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "result.json").read_text())


def test_env_paths():
    assert result_path_from_env({}) == DEFAULT_RESULT_PATH
    assert sentinel_path_from_env({}) == DEFAULT_SENTINEL == Path("/workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY")
    assert result_path_from_env({"UPLOAD_RESULT_JSON": "/x/r.json"}) == Path("/x/r.json")
    assert sentinel_path_from_env({"VIDPIPE_SENTINEL": "/x/S"}) == Path("/x/S")


def test_all_verified_writes_sentinel_and_timings(tmp_path):
    job = _job(tmp_path)
    assert _doc(tmp_path)["status"] == "running"
    job.start_input("a.mp4")
    job.add_timing("a.mp4", "process", 12.34567)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt(), mode="upscaled", url="http://u")
    job.succeed_input("a.mp4")
    assert job.finish() is True
    doc = _doc(tmp_path)
    assert doc["status"] == "succeeded" and doc["all_uploads_verified"] is True
    entry = doc["inputs"][0]
    assert entry["timings"] == {"process": 12.346} and entry["status"] == "ok" and entry["error"] is None
    assert entry["started_at"] and entry["finished_at"]
    assert entry["outputs"][0]["upload_seconds"] == 0.5 and entry["outputs"][0]["mode"] == "upscaled"
    assert (tmp_path / "DONE").exists()
    assert check_uploads_verified(doc) == []


def test_stale_sentinel_removed_on_begin(tmp_path):
    (tmp_path / "DONE").write_text("old run")
    _job(tmp_path)
    assert not (tmp_path / "DONE").exists()


def test_one_failed_input_means_no_sentinel(tmp_path):
    job = _job(tmp_path)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt())
    job.succeed_input("a.mp4")
    job.fail_input("b.mp4", StorageError("upload of s3://bkt/b failed: HTTP 403 AccessDenied"))
    assert job.finish() is False
    doc = _doc(tmp_path)
    assert doc["status"] == "failed" and not (tmp_path / "DONE").exists()
    err = doc["inputs"][1]["error"]
    assert err == {
        "class": "StorageError",
        "message": "upload of s3://bkt/b failed: HTTP 403 AccessDenied",
        "retryable": False,
        "exit_code": 7,
    }
    assert "input b.mp4: status 'failed', not 'ok'" in check_uploads_verified(doc)


def test_unverified_or_local_only_output_means_no_sentinel(tmp_path):
    job = _job(tmp_path)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt(verified=False))
    job.record_output("a.mp4", OutputRecord(path="/out/a2.mp4", size=3, sha256=SHA))
    job.succeed_input("a.mp4")
    assert job.finish() is False
    assert not (tmp_path / "DONE").exists()
    reasons = check_uploads_verified(_doc(tmp_path))
    assert len(reasons) == 2 and all("no verified upload" in r for r in reasons)


def test_uploads_disabled_never_writes_sentinel(tmp_path):
    job = _job(tmp_path, upload=False)
    job.record_output("a.mp4", OutputRecord(path="/out/a.mp4", size=3, sha256=SHA))
    job.succeed_input("a.mp4")
    assert job.finish() is False
    doc = _doc(tmp_path)
    assert doc["status"] == "succeeded" and doc["all_uploads_verified"] is False
    assert not (tmp_path / "DONE").exists()


def test_no_inputs_no_sentinel(tmp_path):
    assert _job(tmp_path).finish() is False
    assert _doc(tmp_path)["status"] == "failed"


def _enospc(*_a: object, **_k: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_writing_result_json_is_classified_and_no_sentinel(tmp_path, monkeypatch):
    job = _job(tmp_path)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt())
    job.succeed_input("a.mp4")
    monkeypatch.setattr(paths.os, "fsync", _enospc)  # the atomic writes live in vidpipe.paths
    with pytest.raises(OutputError, match="disk full while writing the result JSON") as info:
        job.finish()
    assert info.value.exit_code == 4
    monkeypatch.undo()
    assert not (tmp_path / "DONE").exists()
    assert sorted(os.listdir(tmp_path)) == ["result.json"]  # no temp files left
    assert _doc(tmp_path)["status"] == "running"  # the last complete version, never a torn one


def test_disk_full_writing_sentinel_leaves_none(tmp_path, monkeypatch):
    job = _job(tmp_path)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt())
    job.succeed_input("a.mp4")
    real = paths.write_bytes

    def fail_on_sentinel(path: Path, data: bytes, mode: int = atomic.DEFAULT_MODE) -> None:
        if Path(path).name == "DONE":
            _enospc()
        real(path, data, mode)

    monkeypatch.setattr(paths, "write_bytes", fail_on_sentinel)
    with pytest.raises(OutputError, match="disk full while writing the sentinel"):
        job.finish()
    assert not (tmp_path / "DONE").exists()
    assert _doc(tmp_path)["status"] == "failed"


def test_result_json_is_private_and_manifests_are_not(tmp_path):
    job = _job(tmp_path)
    job.record_upload("a.mp4", "/out/a.mp4", _receipt())
    job.succeed_input("a.mp4")
    job.finish()
    assert (job.path.stat().st_mode & 0o777) == 0o600  # it holds presigned URLs
    atomic.write_json(tmp_path / "manifest.json", {"frames": 1})
    assert ((tmp_path / "manifest.json").stat().st_mode & 0o777) == 0o644
