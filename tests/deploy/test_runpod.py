"""The RunPod serverless handler (`vidpipe.serve.runpod`) against SeaweedFS on loopback, offline: called directly
(two jobs in a row on one loaded model, the second reading no weights; progress; cancellation; bad requests) and
through the SDK's own local test mode (`--test_input`), where its progress updates reach a loopback server."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_env import container_env, fetch_object, run_python, sha256

from calibration import scaled
from vidpipe.errors import UsageError
from vidpipe.media.probe import probe
from vidpipe.models import loading
from vidpipe.serve import runpod as serve_runpod
from vidpipe.serve.worker import DevicePool, WarmChains, Worker, parse_request

pytestmark = pytest.mark.timeout(240)

UPSCALE = "realesr-animevideov3-x2"
#: the SDK's local test mode: interpreter start, torch import, one job (model load, upscale, upload) on 2 quiet cores
SDK_TIMEOUT_S = 120.0


@pytest.fixture
def raw_key(s3_server, bucket, clip) -> str:
    """The clip uploaded where a client would put it before calling the endpoint."""
    s3_server.admin_client().put_object(Bucket=bucket, Key="raw/clip.mp4", Body=clip.read_bytes())
    return f"s3://{bucket}/raw/clip.mp4"


@pytest.fixture
def worker(s3_server, bucket, tmp_path, monkeypatch, one_thread) -> Iterator[tuple[Worker, list[tuple[str, dict]]]]:
    """A fresh worker (nothing loaded) as the handler's, and the progress updates it sends, by job id; one compute
    thread, as the subprocess runs have (64×48 frames gain nothing from more on a shared 2-core runner)."""
    w = Worker(tmp_path / "serve", env=container_env(s3_server, bucket), devices=DevicePool(["cpu"]))
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(serve_runpod, "_worker", w)
    monkeypatch.setattr(serve_runpod, "send_progress", lambda job, update: sent.append((job["id"], update)))
    yield w, sent


@pytest.fixture
def weight_reads(monkeypatch) -> list[Path]:
    """Every weights file read from now on (`models.loading._read`: where every stage's model load goes)."""
    reads: list[Path] = []
    real = loading._read

    def counting(path: Path, expected: str) -> Any:
        reads.append(path)
        return real(path, expected)

    monkeypatch.setattr(loading, "_read", counting)
    return reads


def check_answer(s3: Any, bucket: str, answer: dict[str, Any], clip: Path, prefix: str, tmp: Path) -> None:
    """A succeeded answer: its object is in the bucket as stated, and its presigned URL serves those bytes, the clip
    upscaled ×2."""
    assert answer["status"] == "succeeded" and "error" not in answer, answer
    (out,) = answer["outputs"]
    assert out["key"].startswith(prefix) and out["verified"] is True
    head, body = fetch_object(s3, bucket, out["key"])
    assert head["ContentLength"] == out["size"] and sha256(body) == out["sha256"]
    with urllib.request.urlopen(out["presigned_url"], timeout=30) as r:
        served = r.read()
    assert hashlib.sha256(served).hexdigest() == out["sha256"]
    local = tmp / Path(out["key"]).name
    local.write_bytes(served)
    src, dst = probe(clip).video, probe(local).video
    assert (dst.width, dst.height, dst.frames) == (src.width * 2, src.height * 2, src.frames)
    assert answer["timings"]["total"] > 0 and answer["timings"]["upload"] >= 0


def test_two_jobs_in_a_row_on_one_loaded_model(s3_server, bucket, clip, raw_key, worker, weight_reads, tmp_path):
    w, sent = worker
    request = {"video": raw_key, "options": {"upscale": UPSCALE, "encoder": "h264"}, "output": {"prefix": "rp"}}
    first = asyncio.run(serve_runpod.handler({"id": "job-1", "input": request}))
    check_answer(s3_server, bucket, first, clip, "rp/job-1/", tmp_path)
    assert first["models_were_loaded"] is False and first["device"] == "cpu"
    loaded = list(weight_reads)
    assert loaded and all(p.name.startswith(UPSCALE) for p in loaded)

    second = asyncio.run(serve_runpod.handler({"id": "job-2", "input": request}))
    check_answer(s3_server, bucket, second, clip, "rp/job-2/", tmp_path)
    assert second["models_were_loaded"] is True
    assert weight_reads == loaded  # the second job read no weights file
    assert w.chains.built == 1
    assert first["outputs"][0]["sha256"] == second["outputs"][0]["sha256"]  # same model, same frames, same file

    steps = [u["step"] for job, u in sent if job == "job-2"]
    assert steps[0] == "start" and {"upload", "uploaded"} <= set(steps)
    assert next(u for job, u in sent if job == "job-2")["models"] == "loaded"
    assert not any((tmp_path / "serve").iterdir())  # each job's folder removed after it


def test_a_cancelled_job_stops_at_its_next_step_and_uploads_nothing(s3_server, bucket, raw_key, worker):
    w, sent = worker
    request = {"video": raw_key, "options": {"upscale": UPSCALE}, "output": {"prefix": "cx"}, "segment_seconds": 0.2}

    async def scenario() -> None:
        task = asyncio.create_task(serve_runpod.handler({"id": "job-c", "input": request}))
        deadline = time.monotonic() + scaled(60)
        while not any(u["step"] == "start" for _, u in sent):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.01)
        task.cancel()  # what the SDK does on RunPod's cancel
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())  # returns once the job's thread has ended (asyncio.run waits for its executor)
    steps = [u["step"] for _, u in sent]
    assert "upload" not in steps and "uploaded" not in steps
    listed = s3_server.admin_client().list_objects_v2(Bucket=bucket, Prefix="cx/")
    assert listed.get("KeyCount", 0) == 0
    with w.devices.hold() as device:  # the device was given back
        assert device == "cpu"


def test_a_failing_job_answers_with_one_error_line(s3_server, bucket, worker):
    answer = asyncio.run(
        serve_runpod.handler({"id": "job-e", "input": {"video": f"s3://{bucket}/raw/missing.mp4", "options": {}}})
    )
    assert answer["status"] == "failed" and answer["exit_code"] == 7
    assert answer["error"].startswith("StorageError: ") or "missing.mp4" in answer["error"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("s3://b/k", "must be a mapping"),
        ({"video": "/local/file.mp4"}, "video must be an s3://, http:// or https:// URL"),
        ({"video": "s3://b/k", "extra": 1}, "unknown key 'extra'; valid keys: video, options, output"),
        ({"video": "s3://b/k", "options": {"device": "cuda:1"}}, "options.device is the worker's choice"),
        ({"video": "s3://b/k", "output": {"dir": "/tmp"}}, "output.dir and output.upload are the worker's"),
        ({"video": "s3://b/k", "segment_seconds": -1}, "segment_seconds must be a number ≥ 0"),
    ],
)
def test_bad_requests(payload, message):
    with pytest.raises(UsageError, match=message):
        parse_request(payload)


def test_an_unknown_option_is_refused_like_a_job_spec(s3_server, bucket, worker):
    answer = asyncio.run(
        serve_runpod.handler({"id": "job-o", "input": {"video": f"s3://{bucket}/k.mp4", "options": {"upscal": "x"}}})
    )
    assert answer["status"] == "failed" and answer["exit_code"] == 2
    assert "unknown key 'upscal'" in answer["error"] and "valid keys:" in answer["error"]


# -- through the SDK's local test mode --------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves files of `root` (GET) and records POSTs (the SDK's job updates)."""

    root: Path
    posts: list[tuple[str, str]]

    def do_GET(self) -> None:
        path = self.root / urllib.parse.urlparse(self.path).path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.posts.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def loopback(clip, tmp_path) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(base URL, recorded POSTs) of an HTTP server on loopback serving the clip as /clip.mp4."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "clip.mp4").write_bytes(clip.read_bytes())
    posts: list[tuple[str, str]] = []
    handler = type("Recorder", (_Recorder,), {"root": root, "posts": posts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def test_the_sdk_local_test_mode_runs_a_job(s3_server, bucket, clip, loopback, tmp_path):
    pytest.importorskip("runpod", reason="the RunPod SDK (extra 'runpod') is not installed")
    base, posts = loopback
    job = {"input": {"video": f"{base}/clip.mp4", "options": {"upscale": UPSCALE}, "output": {"prefix": "sdk"}}}
    env = container_env(
        s3_server,
        bucket,
        VIDPIPE_SERVE_DIR=str(tmp_path / "serve"),
        # where the SDK posts a job's updates (RunPod sets it on a real worker)
        RUNPOD_WEBHOOK_POST_OUTPUT=f"{base}/done/$ID?gpu=test",
    )
    proc = run_python(["-m", "vidpipe.serve.runpod", "--test_input", json.dumps(job)], env, tmp_path, SDK_TIMEOUT_S)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Job local_test completed successfully." in log
    listed = s3_server.admin_client().list_objects_v2(Bucket=bucket, Prefix="sdk/local_test/")
    (obj,) = listed["Contents"]
    assert obj["Key"].startswith("sdk/local_test/clip_upscaled_") and obj["Size"] > 0
    assert obj["Key"] in log and "presigned_url" in log  # the answer the SDK logged
    updates = [json.loads(body) for path, body in posts if path.startswith("/done/local_test")]
    steps = [u["output"]["step"] for u in updates if u.get("status") == "IN_PROGRESS"]
    assert steps[:2] == ["download", "start"] and "upload" in steps


# -- the chains kept loaded -----------------------------------------------------------------------------------


class _Recipe:
    """What WarmChains reads of a PipelineRecipe: the stage options and a chain builder."""

    def __init__(self, model: str) -> None:
        self.stage_values = {"upscale": model}
        self.model = model

    def stages(self) -> list[Any]:
        stage = type("Stub", (), {})()
        stage.loaded = {"weights": self.model}  # what a real stage's setup would fill and copies share
        return [stage]


def test_warm_chains_share_one_load_per_signature_and_keep_two():
    chains = WarmChains(keep=2)
    a, b = _Recipe("a"), _Recipe("b")
    first = chains.factory(a, "cpu")()
    again = chains.factory(a, "cpu")()
    assert chains.built == 1 and again[0] is not first[0] and again[0].loaded is first[0].loaded
    assert chains.factory(a, "cuda:1")() is not None and chains.built == 2  # another device: its own load
    assert chains.factory(a, "cpu")()[0].loaded is first[0].loaded  # a on the CPU used last
    chains.factory(b, "cpu")()  # a third signature evicts the least recently used: a on cuda:1
    assert chains.built == 3 and chains.has(a, "cpu") and chains.has(b, "cpu") and not chains.has(a, "cuda:1")
    assert chains.factory(a, "cpu")()[0].loaded is first[0].loaded and chains.built == 3
    chains.factory(a, "cuda:1")()
    assert chains.built == 4 and not chains.has(b, "cpu")
