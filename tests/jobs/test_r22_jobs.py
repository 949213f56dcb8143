"""Issue 22 (reliability), jobs: inputs whose outputs would share a name, SIGTERM during an upload, a monitor that
checks the bucket before stopping, and a store pre-flight before the first frame. Against the real SeaweedFS
server of conftest.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pause_entry import PausePoints, install
from signal_entry import SignallingHandler
from typer.testing import CliRunner

from jobspec import write_job_spec
from vidpipe.cli.monitor_cmd import app as monitor_app
from vidpipe.errors import Interrupted, StorageError, UsageError
from vidpipe.jobs.result import JobResult
from vidpipe.jobs.runner import JobRunner, run_job
from vidpipe.jobs.spec import load_spec
from vidpipe.jobs.stopping import stop_at_once
from vidpipe.jobs.storage import MIN_PART_SIZE
from vidpipe.paths import name_tag
from vidpipe.testing import decode_all

pytestmark = pytest.mark.timeout(240)

#: generous bounds for 2 busy cores: what matters is "before any processing", which the tests check directly
PREFLIGHT_EXIT_S = 60.0
HOLD_WAIT_S = 90.0
#: a replaced object, as in the issue: a 1.6 KB file where the video was
JUNK = b"x" * 1600
FAST = {"resize": "32x24", "encoder": "ffv1", "device": "cpu"}


def _env(s3_server: Any, bucket: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "AWS_", "VIDPIPE_", "UPLOAD_RESULT"))}
    env |= {
        "B2_KEY": s3_server.access_key,
        "B2_SECRET": s3_server.secret_key,
        "B2_ENDPOINT": s3_server.endpoint,
        "B2_BUCKET": bucket,
        "AUTO_UPLOAD_B2": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    return env | extra


def _spec(tmp: Path, inputs: list[str], **top: Any) -> Path:
    return write_job_spec(tmp, inputs, FAST, **top)


def _objects(s3_server: Any, bucket: str) -> dict[str, int]:
    listing = s3_server.admin_client().list_objects_v2(Bucket=bucket).get("Contents") or []
    return {o["Key"]: o["Size"] for o in listing}


def _outputs(result: Path) -> dict[str, dict]:
    doc = json.loads(result.read_text())
    return {entry["input"]: out for entry in doc["inputs"] for out in entry["outputs"]}


def _clip(make: Any, frames: int) -> Path:
    return make(f"r22-{frames}.mp4", size=(64, 48), frames=frames)


# -- 1. inputs whose outputs would share a name ------------------------------------------------------------


def test_inputs_with_one_output_name_get_distinct_outputs_and_objects(make, s3_server, bucket, tmp_path):
    # d1/clip.mp4 and d2/clip.mp4 share a stem; "a b.mp4" and "a_b.mp4" share one once sanitised
    files = {
        tmp_path / "d1" / "clip.mp4": 5,
        tmp_path / "d2" / "clip.mp4": 6,
        tmp_path / "d1" / "a b.mp4": 7,
        tmp_path / "d1" / "a_b.mp4": 8,
    }
    for path, frames in files.items():
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(_clip(make, frames), path)
    env = _env(s3_server, bucket)
    spec = load_spec(_spec(tmp_path, [str(p) for p in files]), env=env)
    outcome = run_job(spec, env=env)
    assert outcome.ok and outcome.sentinel, outcome.errors
    outs = _outputs(tmp_path / "result.json")
    assert len({o["path"] for o in outs.values()}) == 4, outs
    assert len({o["key"] for o in outs.values()}) == 4, outs
    objects = _objects(s3_server, bucket)
    assert set(objects) == {o["key"] for o in outs.values()}
    admin = s3_server.admin_client()
    for src, frames in files.items():
        out = outs[str(src)]
        local = Path(out["path"])
        assert len(decode_all(local)[0]) == frames  # each output is made from its own input
        assert objects[out["key"]] == local.stat().st_size == out["size"]
        assert admin.head_object(Bucket=bucket, Key=out["key"])["Metadata"]["sha256"] == out["sha256"]
    # the names are deterministic: the shared stem plus a hash of the path below the folder the inputs share
    assert Path(outs[str(tmp_path / "d1" / "clip.mp4")]["path"]).name == (
        f"clip-{name_tag(str(tmp_path / 'd1' / 'clip.mp4'), [str(tmp_path / 'd2' / 'clip.mp4')])}_result.mkv"
    )


def test_s3_inputs_with_one_name_download_apart_and_are_reused(make, s3_server, bucket, tmp_path, caplog):
    admin = s3_server.admin_client()
    urls = {f"s3://{bucket}/d1/clip.mp4": 5, f"s3://{bucket}/d2/clip.mp4": 6}
    for url, frames in urls.items():
        admin.upload_file(str(_clip(make, frames)), bucket, url.split("/", 3)[3])
    env = _env(s3_server, bucket, AUTO_UPLOAD_B2="0")
    spec = load_spec(_spec(tmp_path, list(urls)), env=env)
    outcome = run_job(spec, env=env)
    assert outcome.ok, outcome.errors
    assert [len(decode_all(p)[0]) for p in outcome.outputs] == list(urls.values())
    downloads = sorted((spec.work_dir / "inputs").rglob("clip.mp4"))
    assert len(downloads) == 2, downloads  # one local copy each, not one overwritten by the other
    caplog.set_level("INFO", logger="vidpipe")
    assert run_job(spec, env=env).ok
    assert caplog.text.count("already downloaded") == 2


def test_names_that_still_collide_are_refused_before_any_work(make, s3_server, bucket, tmp_path):
    d1, d2 = tmp_path / "d1" / "clip.mp4", tmp_path / "d2" / "clip.mp4"
    taken = tmp_path / "d1" / f"clip-{name_tag(str(d1), [str(d2)])}.mp4"  # the name d1/clip.mp4 would be given
    for path in (d1, d2, taken):
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(_clip(make, 5), path)
    env = _env(s3_server, bucket)
    spec = load_spec(_spec(tmp_path, [str(d1), str(d2), str(taken)]), env=env)
    outcome = run_job(spec, env=env)
    assert not outcome.ok and outcome.exit_code == UsageError.exit_code
    assert "would both be written" in outcome.errors[0]
    assert not list((tmp_path / "out").glob("*.mkv"))
    assert _objects(s3_server, bucket) == {}
    assert not (tmp_path / "SENTINEL").exists()


def test_final_check_sees_an_object_replaced_after_its_upload(make, s3_server, bucket, tmp_path, monkeypatch):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copyfile(_clip(make, 5), a)
    shutil.copyfile(_clip(make, 6), b)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = _env(s3_server, bucket, VIDPIPE_TEST_PAUSE_AT="uploaded", VIDPIPE_TEST_BARRIER_DIR=str(barrier))
    install(PausePoints(env), monkeypatch.setattr)  # the test's pause point (tests/jobs/pause_entry.py)
    spec = load_spec(_spec(tmp_path, [str(a), str(b)]), env=env)
    replaced: list[str] = []

    def tamper() -> None:
        deadline = time.monotonic() + HOLD_WAIT_S
        while not (barrier / "uploaded.reached").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        key = _outputs(tmp_path / "result.json")[str(a)]["key"]
        s3_server.admin_client().put_object(Bucket=bucket, Key=key, Body=JUNK)  # another writer, same key
        replaced.append(key)
        (barrier / "uploaded.go").touch()

    t = threading.Thread(target=tamper, daemon=True)
    t.start()
    outcome = run_job(spec, env=env)
    t.join(HOLD_WAIT_S)
    assert replaced
    assert not outcome.ok and outcome.exit_code == StorageError.exit_code and not outcome.sentinel
    assert not (tmp_path / "SENTINEL").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["all_uploads_verified"] is False
    entry = next(e for e in doc["inputs"] if e["input"] == str(a))
    assert entry["status"] == "failed" and entry["error"]["class"] == "StorageError"
    assert replaced[0] in entry["error"]["message"] and "size 1600" in entry["error"]["message"]
    assert next(e for e in doc["inputs"] if e["input"] == str(b))["status"] == "ok"


# -- 3. SIGTERM during an upload ---------------------------------------------------------------------------


def _kill_when_held(proxy: Any, pid: int) -> threading.Thread:
    def kill() -> None:
        if proxy.held.wait(HOLD_WAIT_S):
            os.kill(pid, signal.SIGTERM)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


def test_sigterm_during_a_multipart_upload_is_not_retried_and_aborts_it(
    s3_server, bucket, big_file, holding_proxy, count_requests
):
    proxy = holding_proxy(put_over=1 << 20)  # the first part
    storage = s3_server.storage(bucket, endpoint_url=proxy.endpoint, multipart_threshold=0, part_size=MIN_PART_SIZE)
    sent = count_requests(storage.client)
    killer = _kill_when_held(proxy, os.getpid())
    with pytest.raises(Interrupted) as info, stop_at_once():
        storage.upload_file(big_file, "sigterm/clip.mp4")
    killer.join(HOLD_WAIT_S)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert [r for r in sent if r.startswith("PUT")] == [f"PUT {proxy.endpoint}/{bucket}/sigterm/clip.mp4"]
    admin = s3_server.admin_client()
    assert not admin.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted, nothing billed left
    assert _objects(s3_server, bucket) == {}


def test_sigterm_during_a_job_upload_exits_143_without_sentinel(make, s3_server, bucket, holding_proxy, tmp_path):
    proxy = holding_proxy(put_over=1024)  # the output's PUT, not the pre-flight's few bytes
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(_clip(make, 25), clip)
    spec = _spec(tmp_path, [str(clip)])
    log = tmp_path / "log.txt"
    env = _env(s3_server, bucket, B2_ENDPOINT=proxy.endpoint)
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "vidpipe", "job", "run", str(spec)], stdout=f, stderr=f, env=env)
    try:
        killer = _kill_when_held(proxy, proc.pid)
        rc = proc.wait(HOLD_WAIT_S + 60)
        killer.join(1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proxy.held.is_set(), log.read_text()[-3000:]
    assert rc == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert not (tmp_path / "SENTINEL").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["class"] == "Interrupted"
    assert _objects(s3_server, bucket) == {}


SIGNAL_ENTRY = Path(__file__).with_name("signal_entry.py")
#: what stdlib logging prints when an exception raised in a handler's emit reaches handleError
LOGGING_ERROR = "--- Logging error ---"
#: quiet-machine seconds for a 25-frame job in a child process, start-up included (a hang fails, nothing more)
JOB_WAIT_S = 120.0


def _job_in_child(entry: list[str], spec: Path, env: dict[str, str], log: Path, timeout: float) -> int:
    """`python ENTRY… job run SPEC`, its output in `log`; the exit code."""
    with open(log, "wb") as f:
        cmd = [sys.executable, *entry, "job", "run", str(spec)]
        return subprocess.run(cmd, stdout=f, stderr=f, env=env, timeout=timeout).returncode


@pytest.mark.parametrize(
    ("record", "uploaded"),
    [
        ("segment 1/1 done", False),  # the next step is the job's `segment-done:1` point
        ("segment(s) joined", False),  # the next step is the upload
        ("uploaded s3://", True),  # the upload is done and verified; the input is not yet recorded ok
    ],
)
def test_sigterm_swallowed_by_a_logging_handler_still_stops_the_job(
    make, s3_server, bucket, tmp_path, scaled_time, record, uploaded
):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(_clip(make, 25), clip)
    spec = _spec(tmp_path, [str(clip)])
    log = tmp_path / "log.txt"
    env = _env(s3_server, bucket, COLUMNS="400")  # rich wraps log lines at the terminal width: greps stay exact
    rc = _job_in_child([str(SIGNAL_ENTRY), record], spec, env, log, scaled_time(JOB_WAIT_S))
    text = log.read_text()
    assert LOGGING_ERROR in text and "Interrupted" in text, text[-3000:]  # logging swallowed the exception
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    assert not (tmp_path / "SENTINEL").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["class"] == "Interrupted"
    objects = _objects(s3_server, bucket)
    if not uploaded:
        assert objects == {}
        return
    # what was uploaded is the whole output, verified: the job run again resumes and does not upload it again
    (key,) = objects
    assert _job_in_child(["-m", "vidpipe"], spec, env, log, scaled_time(JOB_WAIT_S)) == 0, log.read_text()[-3000:]
    assert (tmp_path / "SENTINEL").exists() and "already uploaded and verified" in log.read_text()
    assert _outputs(tmp_path / "result.json")[str(clip)]["key"] == key and set(_objects(s3_server, bucket)) == {key}


@pytest.mark.parametrize("point", ["upload", "uploaded"])
def test_sigterm_swallowed_in_process_fails_the_job_without_sentinel(
    make, s3_server, bucket, tmp_path, monkeypatch, point
):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(_clip(make, 25), clip)
    env = _env(s3_server, bucket)
    spec = load_spec(_spec(tmp_path, [str(clip)]), env=env)
    logger = logging.getLogger("vidpipe.test.swallowing")
    handler = SignallingHandler("stop here")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)

    def reached(_self: JobRunner, at: str) -> None:
        if at == point:
            logger.error("stop here")  # SIGTERM inside the handler's emit, the exception swallowed there
            if point == "upload":  # the input then fails otherwise, as a store retried to its end would
                raise StorageError("the store gave up")

    monkeypatch.setattr(JobRunner, "reached", reached)
    try:
        with pytest.raises(Interrupted) as info:
            run_job(spec, env=env)
    finally:
        logger.removeHandler(handler)
    assert handler.fired and info.value.exit_code == 128 + signal.SIGTERM
    assert not (tmp_path / "SENTINEL").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["sentinel"] is None
    (entry,) = doc["inputs"]
    assert entry["error"]["class"] == "Interrupted"
    if point == "uploaded":  # every input was done: the stop fails them, their verified uploads stay for the re-run
        assert entry["outputs"][0]["verified"] is True and len(_objects(s3_server, bucket)) == 1
    else:
        assert _objects(s3_server, bucket) == {}


# -- 4. the monitor checks the bucket before stopping ------------------------------------------------------


def _verified_result(s3_server: Any, bucket: str, tmp: Path) -> tuple[Path, Path, str]:
    out = tmp / "clip_result.mp4"
    out.write_bytes(os.urandom(70_000))
    storage = s3_server.storage(bucket)
    receipt = storage.upload_file(out, "results/clip_result_20250101_000000.mp4")
    job = JobResult(tmp / "result.json", sentinel=tmp / "DONE", upload_enabled=True, bucket=bucket)
    job.begin()
    job.record_upload("clip.mp4", out, receipt, url=storage.presign_get(receipt.key)[0])
    job.succeed_input("clip.mp4")
    assert job.finish()
    return tmp / "result.json", tmp / "DONE", receipt.key


def _monitor(result: Path, sentinel: Path, stopped: Path, *extra: str) -> list[str]:
    stop = f"{sys.executable} -c \"open('{stopped}', 'a').write('stop')\""
    return ["--result", str(result), "--sentinel", str(sentinel), "--stop-command", stop,
            "--interval", "0.05", "--timeout", "20", *extra]  # fmt: skip


@pytest.fixture
def store_env(s3_server, monkeypatch) -> None:
    for name in [k for k in os.environ if k.startswith("B2_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("B2_KEY", s3_server.access_key)
    monkeypatch.setenv("B2_SECRET", s3_server.secret_key)
    monkeypatch.setenv("B2_ENDPOINT", s3_server.endpoint)


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_monitor_does_not_stop_when_the_bucket_disagrees(s3_server, bucket, tmp_path, store_env, damage):
    result, sentinel, key = _verified_result(s3_server, bucket, tmp_path)
    admin = s3_server.admin_client()
    if damage == "deleted":
        admin.delete_object(Bucket=bucket, Key=key)
    else:
        admin.put_object(Bucket=bucket, Key=key, Body=JUNK)
    stopped = tmp_path / "stopped"
    res = CliRunner().invoke(monitor_app, _monitor(result, sentinel, stopped))
    assert res.exit_code == 1, res.output
    assert not stopped.exists()
    assert "failed-not-stopped" in res.output and key in res.output
    assert ("missing" if damage == "deleted" else "size 1600") in res.output


def test_monitor_stops_when_every_object_matches(s3_server, bucket, tmp_path, store_env):
    result, sentinel, _ = _verified_result(s3_server, bucket, tmp_path)
    stopped = tmp_path / "stopped"
    res = CliRunner().invoke(monitor_app, _monitor(result, sentinel, stopped))
    assert res.exit_code == 0, res.output
    assert stopped.read_text() == "stop"


def test_monitor_waits_for_a_store_it_cannot_reach_and_never_stops(s3_server, bucket, tmp_path, store_env, monkeypatch):
    result, sentinel, _ = _verified_result(s3_server, bucket, tmp_path)
    with socket.socket() as s:  # a port nothing listens on: connection refused, retried, then polled again
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("B2_ENDPOINT", f"http://127.0.0.1:{closed}")
    stopped = tmp_path / "stopped"
    res = CliRunner().invoke(monitor_app, [*_monitor(result, sentinel, stopped)[:-2], "--timeout", "1"])
    assert res.exit_code == 1, res.output
    assert "timed-out" in res.output and "cannot check the bucket yet" in res.output
    assert not stopped.exists()


def test_monitor_without_credentials_refuses_unless_told_to_trust_the_result(s3_server, bucket, tmp_path, monkeypatch):
    result, sentinel, _ = _verified_result(s3_server, bucket, tmp_path)
    for name in [k for k in os.environ if k.startswith("B2_")]:
        monkeypatch.delenv(name)
    stopped = tmp_path / "stopped"
    res = CliRunner().invoke(monitor_app, _monitor(result, sentinel, stopped))
    assert res.exit_code == 2 and "B2_KEY" in res.output and "--no-verify-bucket" in res.output
    assert not stopped.exists()
    res = CliRunner().invoke(monitor_app, _monitor(result, sentinel, stopped, "--no-verify-bucket"))
    assert res.exit_code == 0, res.output
    assert stopped.exists()


# -- 5. pre-flight of the store before the first frame -----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong-secret", "B2_KEY/B2_SECRET"),
        ("missing-bucket", "bucket"),
        ("bad-region", "region"),
        ("bad-endpoint", "endpoint"),
    ],
)
def test_store_problems_fail_in_seconds_before_the_first_frame(make, s3_server, bucket, tmp_path, case, says):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(_clip(make, 25), clip)
    env = _env(s3_server, bucket)
    if case == "wrong-secret":
        env["B2_SECRET"] = s3_server.secret_key + "-wrong"
    elif case == "missing-bucket":
        env["B2_BUCKET"] = "no-such-bucket-r22"
    elif case == "bad-region":
        env["B2_REGION"] = "us west 1"
    else:
        env["B2_ENDPOINT"] = "http://127.0.0.1:99999"
    spec = _spec(tmp_path, [str(clip)])
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "vidpipe", "job", "run", str(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    took = time.monotonic() - started
    assert proc.returncode == StorageError.exit_code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr[-3000:]
    assert took < PREFLIGHT_EXIT_S
    # nothing was processed: no output, no checkpoint
    assert not list((tmp_path / "out").glob("*.mkv"))
    assert not (tmp_path / "out" / ".vidpipe-work" / "state").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["class"] in ("StorageError", "RetryableStorageError")
    assert not (tmp_path / "SENTINEL").exists()


def test_preflight_leaves_nothing_and_clock_skew_is_named(s3_server, bucket, monkeypatch, count_requests):
    storage = s3_server.storage(bucket)
    sent = count_requests(storage.client)
    storage.preflight("results/run1")
    assert any(r.startswith(f"PUT {s3_server.endpoint}/{bucket}/results/run1/") for r in sent), sent
    assert _objects(s3_server, bucket) == {}  # the probe object was deleted

    import botocore.auth

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: real() + dt.timedelta(hours=2))
    with pytest.raises(StorageError) as info:
        storage.preflight("results/run1")
    assert "clock skew" in str(info.value) and "B2_KEY" not in str(info.value)
