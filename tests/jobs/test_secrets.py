"""Canary credentials must never appear in logs, the result JSON or exception text."""

from __future__ import annotations

import io
import json
import logging
import re
import traceback
from urllib.parse import parse_qs, urlsplit

import pytest

from vidpipe.errors import StorageError
from vidpipe.jobs.result import JobResult
from vidpipe.jobs.secrets import MASK, Redactor, install_log_redaction
from vidpipe.jobs.storage import RetryPolicy, S3Settings, S3Storage

# Bounded even if the loopback server or a proxy thread hangs.
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def captured_log():
    """Root logger at DEBUG (botocore logs headers, canonical requests and signatures there) into a buffer."""
    root = logging.getLogger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_canaries_never_leak(s3_server, bucket, tmp_path, monkeypatch, captured_log):
    key_id, secret = s3_server.canary_access_key, s3_server.canary_secret_key
    monkeypatch.setenv("B2_KEY", key_id)
    monkeypatch.setenv("B2_SECRET", secret)
    monkeypatch.setenv("B2_BUCKET", bucket)
    monkeypatch.setenv("B2_ENDPOINT", s3_server.endpoint)
    settings = S3Settings.from_env(retry=RetryPolicy(max_attempts=2, base_delay=0.0))
    redactor = Redactor.from_env()
    flt = install_log_redaction(redactor)
    log = logging.getLogger("vidpipe.test")
    try:
        storage = S3Storage(settings, redactor=redactor, sleep=lambda _s: None)
        src = tmp_path / "canary.mp4"
        src.write_bytes(b"c" * 2048)
        receipt = storage.upload_file(src, "canary_upscaled_20250101_000000.mp4")
        url, expires_at = storage.presign_get(receipt.key)
        log.debug("settings %r env key=%s", settings, key_id)
        log.info("presigned url %s", url)

        # A failing call: wrong secret (the canary secret with a typo) → 403, with the traceback logged.
        bad = S3Storage(S3Settings.from_env(secret_key=secret + "x"), redactor=redactor, sleep=lambda _s: None)
        with pytest.raises(StorageError) as info:
            bad.upload_file(src, "denied.mp4")
        try:
            raise RuntimeError(f"wrapped: aws_secret_access_key={secret} B2_KEY={key_id}") from info.value
        except RuntimeError as e:
            log.exception("upload failed")
            wrapped = e

        job = JobResult(tmp_path / "result.json", sentinel=tmp_path / "DONE", upload_enabled=True, redactor=redactor)
        job.begin()
        job.record_upload("canary.mp4", src, receipt, mode="upscaled", url=url, expires_at=expires_at)
        job.succeed_input("canary.mp4")
        job.fail_input("other.mp4", wrapped)
        job.finish()
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(flt)

    logs = captured_log.getvalue()
    result_text = (tmp_path / "result.json").read_text()
    exc_text = "".join(traceback.format_exception(info.value))
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]

    # The test is only meaningful if the dangerous material was really produced and logged (masked).
    assert "botocore" in logs and "Authorization" in logs and f"Credential={MASK}" in logs
    assert key_id in url  # the user's presigned URL necessarily names the key id ...
    for text, where in ((logs, "logs"), (exc_text, "exception"), (result_text, "result JSON")):
        assert secret not in text, where
        assert signature not in text or where == "result JSON", where
    assert key_id not in logs and key_id not in exc_text
    # ... and it is the only place in the result JSON where the key id or the signature appear.
    doc = json.loads(result_text)
    assert doc["inputs"][0]["outputs"][0]["presigned_url"] == url
    doc["inputs"][0]["outputs"][0]["presigned_url"] = None
    stripped = json.dumps(doc)
    assert key_id not in stripped and signature not in stripped
    assert "HTTP 403" in doc["inputs"][1]["error"]["message"] or "wrapped" in doc["inputs"][1]["error"]["message"]
    assert MASK in doc["inputs"][1]["error"]["message"]
    assert "HTTP 403" in str(info.value)


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("GET /b/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA1234%2F2025&X-Amz-Signature=deadbeef99", "deadbeef99"),
        ("GET /b/k?X-Amz-Credential=AKIA1234%2F2025&X-Amz-Signature=deadbeef99", "AKIA1234"),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIA1234/2025/us/s3/aws4_request, Signature=abcdef0123456789",
            "AKIA1234",
        ),
        ("Authorization: AWS4-HMAC-SHA256 Credential=AKIA1234/2025, Signature=abcdef0123456789", "abcdef0123456789"),
        ("Signature:\n0123456789abcdef0123456789abcdef", "0123456789abcdef"),
        ("?AWSAccessKeyId=AKIA1234&Signature=abc%2Fdef&Expires=1", "abc%2Fdef"),
        ("aws_secret_access_key=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ('{"B2_SECRET": "s3cr3tvalue"}', "s3cr3tvalue"),
        ("X-Amz-Security-Token=FQoGZXIvYXdz", "FQoGZXIvYXdz"),
    ],
)
def test_patterns_mask_without_known_values(text, leak):
    out = Redactor().redact(text)
    assert leak not in out and MASK in out


def test_known_values_and_short_values():
    r = Redactor(["topsecretvalue", "ab"])
    assert r.redact("x topsecretvalue y ab") == "x *** y ab"  # 2-char values would wreck text; ignored


def test_redact_obj_keeps_only_the_user_url():
    r = Redactor(["AKIACANARY"])
    url = "http://h/b/k?X-Amz-Credential=AKIACANARY%2Fd&X-Amz-Signature=ff00ff00ff00ff00"
    doc = {
        "presigned_url": url,
        "secret_key": "whatever",
        "nested": [{"msg": f"see {url}"}],
        "size": 5,
        "key": "a/b.mp4",
    }
    out = r.redact_obj(doc)
    assert out["presigned_url"] == url and out["secret_key"] == MASK
    assert "AKIACANARY" not in out["nested"][0]["msg"] and "ff00ff00" not in out["nested"][0]["msg"]
    assert out["size"] == 5 and out["key"] == "a/b.mp4"


def test_from_env_picks_secret_names():
    r = Redactor.from_env({"B2_KEY": "keyid0001", "MY_API_TOKEN": "tok-123456", "HOME": "/root/home"})
    assert r.redact("keyid0001 tok-123456 /root/home") == "*** *** /root/home"


def test_filter_redacts_args_and_tracebacks(captured_log):
    flt = install_log_redaction(Redactor(["hunter2hunter2"]))
    try:
        try:
            raise ValueError("password is hunter2hunter2")
        except ValueError:
            logging.getLogger("x").exception("failed for %s", "hunter2hunter2")
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(flt)
    text = captured_log.getvalue()
    assert "hunter2hunter2" not in text
    assert re.search(r"failed for \*\*\*", text) and "ValueError: password is ***" in text
