"""Uploads, verification, presigned URLs and downloads against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from calibration import scaled
from vidpipe.errors import OutputError, RetryableStorageError, StorageError, UsageError
from vidpipe.jobs import storage as storage_mod
from vidpipe.jobs.keys import make_object_key
from vidpipe.jobs.result import JobResult
from vidpipe.jobs.storage import MIN_PART_SIZE, RetryPolicy, S3Settings, S3Storage, file_digest

# Bounded even if the loopback server or a proxy thread hangs.
pytestmark = pytest.mark.timeout(120)

KEY_RE = re.compile(r"^clip_upscaled_\d{8}_\d{6}\.mp4$")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")  # never leave loopback
    with urllib.request.urlopen(url, timeout=scaled(30)) as resp:
        return resp.read()


def _incomplete_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []


def test_multipart_upload_verified_presigned_result_and_sentinel(s3_server, bucket, big_file, tmp_path):
    storage = s3_server.storage(bucket, multipart_threshold=8 * 1024 * 1024, part_size=MIN_PART_SIZE)
    before = datetime.now(UTC).replace(microsecond=0)
    key = make_object_key(big_file, "upscaled")
    assert KEY_RE.match(key), key
    stamp = datetime.strptime(key.split("_", 2)[2].removesuffix(".mp4"), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)  # UTC, not local time

    result = JobResult(tmp_path / "result.json", sentinel=tmp_path / "DONE", upload_enabled=True, bucket=bucket)
    result.begin()
    result.start_input(str(big_file))
    receipt = storage.upload_file(big_file, key)
    url, expires_at = storage.presign_get(key)
    result.record_upload(str(big_file), big_file, receipt, mode="upscaled", url=url, expires_at=expires_at)
    result.succeed_input(str(big_file))
    assert result.finish() is True

    size = big_file.stat().st_size
    expected_parts = -(-size // MIN_PART_SIZE)
    assert expected_parts == 5
    assert receipt.parts == expected_parts and receipt.size == size
    assert re.fullmatch(rf'"[0-9a-f]{{32}}-{expected_parts}"', receipt.etag), receipt.etag
    head = s3_server.admin_client().head_object(Bucket=bucket, Key=key, PartNumber=1)
    assert head["PartsCount"] == expected_parts
    assert head["ContentType"] == "video/mp4"  # guessed from the key
    assert head["Metadata"]["sha256"] == _sha(big_file.read_bytes())
    assert abs((expires_at - datetime.now(UTC)).total_seconds() - 24 * 3600) < 60

    assert _sha(_fetch(url)) == _sha(big_file.read_bytes())

    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "succeeded" and doc["all_uploads_verified"] is True
    out = doc["inputs"][0]["outputs"][0]
    assert out["key"] == key and out["verified"] is True and out["parts"] == expected_parts
    assert out["sha256"] == receipt.sha256 and out["size"] == size and out["presigned_url"] == url
    assert doc["sentinel"] == str(tmp_path / "DONE")
    assert json.loads((tmp_path / "DONE").read_text())["job_id"] == doc["job_id"]


def test_small_file_single_put_with_md5_etag(s3_server, bucket, tmp_path):
    path = tmp_path / "small.mkv"
    path.write_bytes(b"x" * 1000)
    receipt = s3_server.storage(bucket).upload_file(path, "out/small.mkv")
    assert receipt.parts == 0
    assert receipt.etag.strip('"') == hashlib.md5(b"x" * 1000).hexdigest()
    assert receipt.attempts == 2  # PUT + HEAD, nothing retried


def test_connection_cut_mid_upload_is_retried_to_success(s3_server, bucket, big_file, fault_proxy, tmp_path):
    proxy = fault_proxy(cut_after=2 * 1024 * 1024, max_cuts=2)
    storage = s3_server.storage(bucket, endpoint_url=proxy.endpoint, multipart_threshold=0, part_size=MIN_PART_SIZE)
    receipt = storage.upload_file(big_file, "cut/retried.mp4")
    assert proxy.cuts == 2
    assert receipt.attempts >= 5 + 2 + 2  # create + 5 parts + complete + HEAD, plus the 2 cut attempts
    body = s3_server.admin_client().get_object(Bucket=bucket, Key="cut/retried.mp4")["Body"].read()
    assert _sha(body) == _sha(big_file.read_bytes())
    assert _incomplete_uploads(s3_server.admin_client(), bucket) == []


def test_connection_cut_every_time_aborts_multipart_upload(s3_server, bucket, big_file, fault_proxy, tmp_path):
    proxy = fault_proxy(cut_after=2 * 1024 * 1024)  # every connection that carries a part is reset
    storage = s3_server.storage(
        bucket,
        endpoint_url=proxy.endpoint,
        multipart_threshold=0,
        part_size=MIN_PART_SIZE,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
    )
    with pytest.raises(RetryableStorageError, match=r"part 1/5.*gave up after 3 attempts"):
        storage.upload_file(big_file, "cut/aborted.mp4")
    assert proxy.cuts == 3
    admin = s3_server.admin_client()
    assert _incomplete_uploads(admin, bucket) == []
    assert admin.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_slowdown_503_is_retried_with_backoff(s3_server, bucket, fault_proxy, tmp_path, count_requests):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"a" * 5000)
    proxy = fault_proxy(slowdown=2)
    sleeps: list[float] = []
    settings = s3_server.settings(
        bucket, endpoint_url=proxy.endpoint, retry=RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=5)
    )
    storage = S3Storage(settings, sleep=sleeps.append)
    sent = count_requests(storage.client)
    receipt = storage.upload_file(path, "slow/a.mp4")
    assert proxy.slowdowns == 2
    assert [r.split()[0] for r in sent] == ["PUT", "PUT", "PUT", "HEAD"]
    assert receipt.attempts == 4
    # exponential: attempt 1 waits in [0.1, 0.2], attempt 2 in [0.2, 0.4]
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4


def test_head_mismatch_after_upload_raises_and_no_sentinel(s3_server, bucket, tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"v" * 4096)
    storage = s3_server.storage(bucket)
    admin = s3_server.admin_client()

    def overwrite(**_: Any) -> None:
        # Someone replaces the object between our PUT and our HEAD.
        admin.put_object(Bucket=bucket, Key="v.mp4", Body=b"other", Metadata={"sha256": "0" * 64})

    storage.client.meta.events.register("after-call.s3.PutObject", overwrite)
    result = JobResult(tmp_path / "r.json", sentinel=tmp_path / "DONE", upload_enabled=True)
    result.begin()
    result.start_input("v.mp4")
    with pytest.raises(StorageError, match=r"verification of s3://.*/v\.mp4 after upload failed: size 5 != 4096"):
        try:
            storage.upload_file(path, "v.mp4")
        except StorageError as e:
            assert not e.retryable
            result.fail_input("v.mp4", e)
            raise
    assert result.finish() is False
    assert not (tmp_path / "DONE").exists()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["status"] == "failed" and doc["all_uploads_verified"] is False
    assert doc["inputs"][0]["error"]["class"] == "StorageError"
    assert "size 5 != 4096" in doc["inputs"][0]["error"]["message"]


def test_head_mismatch_on_sha256_metadata(s3_server, bucket, tmp_path):
    path = tmp_path / "w.mp4"
    path.write_bytes(b"w" * 4096)
    storage = s3_server.storage(bucket)
    admin = s3_server.admin_client()

    def tamper(**_: Any) -> None:
        admin.put_object(Bucket=bucket, Key="w.mp4", Body=b"w" * 4096, Metadata={"sha256": "f" * 64})

    storage.client.meta.events.register("after-call.s3.PutObject", tamper)
    with pytest.raises(StorageError, match="sha256 metadata"):
        storage.upload_file(path, "w.mp4")


def test_wrong_secret_403_is_not_retried(s3_server, bucket, big_file, tmp_path, count_requests):
    small = tmp_path / "s.mp4"
    small.write_bytes(b"s" * 100)
    storage = s3_server.storage(bucket, secret_key="definitely-wrong-secret")
    sent = count_requests(storage.client)
    with pytest.raises(StorageError, match="HTTP 403") as info:
        storage.upload_file(small, "s.mp4")
    assert not isinstance(info.value, RetryableStorageError)
    assert len(sent) == 1
    with pytest.raises(StorageError, match="HTTP 403"):
        s3_server.storage(bucket, secret_key="definitely-wrong-secret", multipart_threshold=0).upload_file(
            big_file, "b.mp4"
        )


def test_missing_bucket_404_is_not_retried(s3_server, tmp_path, count_requests):
    path = tmp_path / "n.mp4"
    path.write_bytes(b"n" * 10)
    storage = s3_server.storage("no-such-bucket-here")
    sent = count_requests(storage.client)
    with pytest.raises(StorageError) as info:
        storage.download("s3://no-such-bucket-here/x.mp4", tmp_path / "dl")
    assert not info.value.retryable and "HTTP 404" in str(info.value)
    assert len(sent) == 1


def test_expired_presigned_url_is_refused(s3_server, bucket, tmp_path):
    path = tmp_path / "e.mp4"
    path.write_bytes(b"e" * 10)
    storage = s3_server.storage(bucket)
    storage.upload_file(path, "e.mp4")
    url, _ = storage.presign_get("e.mp4", expires_in=1)
    assert _fetch(url) == b"e" * 10
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as info:
        _fetch(url)
    assert info.value.code == 403


@pytest.mark.parametrize("bad", [0, -5, 7 * 24 * 3600 + 1, 1.5, True])
def test_presign_lifetime_validated(s3_server, bucket, bad):
    with pytest.raises(UsageError, match="lifetime"):
        s3_server.storage(bucket).presign_get("k.mp4", expires_in=bad)


def test_presign_accepts_seven_days(s3_server, bucket):
    url, expires = s3_server.storage(bucket).presign_get("k.mp4", expires_in=7 * 24 * 3600)
    assert "X-Amz-Expires=604800" in url
    assert (expires - datetime.now(UTC)).days == 6  # 6 days 23:59:59.x


@pytest.mark.parametrize("key", ["../x.mp4", "/abs.mp4", "a/../b.mp4", "a\x00b.mp4", "é" * 600])
def test_bad_keys_rejected_before_any_request(s3_server, bucket, tmp_path, count_requests, key):
    path = tmp_path / "k.mp4"
    path.write_bytes(b"k")
    storage = s3_server.storage(bucket)
    sent = count_requests(storage.client)
    with pytest.raises(UsageError):
        storage.upload_file(path, key)
    assert sent == []


def test_download_s3_input_verifies_and_names_safely(s3_server, bucket, tmp_path):
    src = tmp_path / "src.mp4"
    src.write_bytes(b"d" * 300_000)
    storage = s3_server.storage(bucket)
    storage.upload_file(src, "in/dir/my clip.mp4")
    dest = storage.download(f"s3://{bucket}/in/dir/my clip.mp4", tmp_path / "work")
    assert dest == tmp_path / "work" / "my_clip.mp4"
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["my_clip.mp4"]  # no temp left behind
    with pytest.raises(UsageError):
        storage.download(f"s3://{bucket}/in/../../etc/passwd", tmp_path / "work")


def test_download_detects_sha_mismatch(s3_server, bucket, tmp_path):
    admin = s3_server.admin_client()
    admin.put_object(Bucket=bucket, Key="bad.mp4", Body=b"abc", Metadata={"sha256": "0" * 64})
    with pytest.raises(StorageError, match="sha256"):
        s3_server.storage(bucket).download(f"s3://{bucket}/bad.mp4", tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


class _FullDisk:
    """A file object whose writes fail with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, f: Any, budget: int) -> None:
        self._f, self._budget = f, budget

    def write(self, data: bytes) -> int:
        if self._budget < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def test_download_disk_full_is_output_error_and_cleans_up(s3_server, bucket, tmp_path, monkeypatch):
    src = tmp_path / "src.mp4"
    src.write_bytes(b"z" * 3_000_000)
    storage = s3_server.storage(bucket)
    storage.upload_file(src, "z.mp4")
    real_open = open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        return _FullDisk(f, 1_000_000) if "w" in mode else f

    monkeypatch.setattr(storage_mod, "open", full_open, raising=False)
    with pytest.raises(OutputError, match="disk full"):
        storage.download(f"s3://{bucket}/z.mp4", tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


def test_settings_from_env(monkeypatch):
    env = {
        "B2_KEY": "keyid123",
        "B2_SECRET": "secret123",
        "B2_ENDPOINT": "s3.us-west-004.backblazeb2.com",
        "B2_BUCKET": "my-bucket",
    }
    s = S3Settings.from_env(env)
    assert s.endpoint_url == "https://s3.us-west-004.backblazeb2.com"
    assert s.effective_region == "us-west-004"
    assert "secret123" not in repr(s) and "keyid123" not in repr(s)
    with pytest.raises(UsageError, match="B2_SECRET") as info:
        S3Settings.from_env({k: v for k, v in env.items() if k != "B2_SECRET"})
    assert "keyid123" not in str(info.value)
    with pytest.raises(UsageError, match="part_size"):
        S3Settings.from_env(env, part_size=1024)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AUTO_UPLOAD_B2": "1"}, True),
        ({"AUTO_UPLOAD_B2": "0", "B2_BUCKET": "b"}, False),
        ({"B2_BUCKET": "b"}, True),
        ({}, False),
    ],
)
def test_upload_enabled_from_env(env, expected):
    assert storage_mod.upload_enabled_from_env(env) is expected


def test_upload_enabled_rejects_junk():
    with pytest.raises(UsageError, match="AUTO_UPLOAD_B2"):
        storage_mod.upload_enabled_from_env({"AUTO_UPLOAD_B2": "maybe"})


def test_file_changed_during_multipart_upload_is_aborted(s3_server, bucket, big_file, tmp_path):
    path = tmp_path / "changing.mp4"
    path.write_bytes(big_file.read_bytes())
    digest = file_digest(path)
    with open(path, "r+b") as f:  # the file changes after it was hashed
        f.seek(12 * 1024 * 1024)
        f.write(b"CHANGED")
    storage = s3_server.storage(bucket, multipart_threshold=0, part_size=MIN_PART_SIZE)
    with pytest.raises(StorageError, match="changed while"):
        storage.upload_file(path, "changing.mp4", digest=digest)
    assert _incomplete_uploads(s3_server.admin_client(), bucket) == []


def test_abort_incomplete_uploads_cleans_leftovers(s3_server, bucket):
    admin = s3_server.admin_client()
    for i in range(3):
        admin.create_multipart_upload(Bucket=bucket, Key=f"left/{i}.mp4")
    assert len(_incomplete_uploads(admin, bucket)) == 3
    assert s3_server.storage(bucket).abort_incomplete_uploads("left/") == 3
    assert _incomplete_uploads(admin, bucket) == []


def test_unreachable_endpoint_is_retryable(tmp_path):
    path = tmp_path / "u.mp4"
    path.write_bytes(b"u")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = S3Settings(
        bucket="bkt",
        access_key="k" * 8,
        secret_key="s" * 8,
        endpoint_url=f"http://127.0.0.1:{port}",
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        connect_timeout=1,
    )
    with pytest.raises(RetryableStorageError, match="gave up after 2 attempts"):
        S3Storage(settings, sleep=lambda _s: None).upload_file(path, "u.mp4")
