"""`vidpipe job run` end to end against a real SeaweedFS S3 server on loopback: a multipart upload verified and
downloadable, resume after SIGKILL at several points, SIGTERM, disk full, and secrets kept out of everything
the job writes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import calibration
from calibration import scaled
from vidpipe.errors import DiskFullError
from vidpipe.jobs.runner import run_job
from vidpipe.jobs.spec import load_spec
from vidpipe.media import writer as writer_mod
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.synth import AudioTrack
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.interpolate import Interpolate
from vidpipe.testing import decode_all

pytestmark = pytest.mark.timeout(240)

#: a crash-test job reaches its pause point well within this on 2 quiet cores (every bound here is scaled by the
#: machine's measured slowdown: tests/calibration.py)
REACH_TIMEOUT_S = 90.0
#: what the issue allows between SIGTERM and the exit, on a quiet machine
SIGTERM_EXIT_S = 5.0
GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
PARTIAL_GLOBS = ("**/.*vidpipe-partial*", "**/.*.tmp", "**/.*.part")


@pytest.fixture(scope="module")
def clip(make) -> Path:
    """3 s, 25 fps, 64×48 H.264 with B-frames, a keyframe each second, AAC: three 1-second segments."""
    return make("job-run.mp4", size=(64, 48), frames=75, options=GOP, audio=[AudioTrack()])


def _env(s3_server: Any, bucket: str, *, key: str | None = None, secret: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "AWS_", "VIDPIPE_", "UPLOAD_RESULT"))}
    env |= {
        "B2_KEY": key or s3_server.access_key,
        "B2_SECRET": secret or s3_server.secret_key,
        "B2_ENDPOINT": s3_server.endpoint,
        "B2_BUCKET": bucket,
        "AUTO_UPLOAD_B2": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "400",  # rich wraps log lines at the terminal width; one record per line keeps greps exact
        # one compute thread: 64×48 frames gain nothing from more, and OpenMP threads spinning on a shared,
        # busy 2-core runner made these jobs 5-10× slower; every run that is compared uses the same setting
        "OMP_NUM_THREADS": "1",
    }
    return env | extra


#: the crash tests' pipeline: interpolation (whose output grid must survive segmenting) into lossless FFV1
INTERP = {"interpolate": "rife-hdv3", "fps": 50, "encoder": "ffv1", "device": "cpu", "batch_size": 4}


def _write_spec(tmp: Path, clip: Path, *, output: dict | None = None, **top: Any) -> Path:
    """A job spec in `tmp`: `top` keys replace the defaults, `output` keys are merged into the default output."""
    doc: dict[str, Any] = {
        "inputs": [str(clip)],
        "pipeline": INTERP,
        "output": {"dir": str(tmp / "out"), "container": "mkv", **(output or {})},
        "segments": {"seconds": 1},
        "result_json": str(tmp / "result.json"),
        "sentinel": str(tmp / "SENTINEL"),
        **top,
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


#: `vidpipe` with the crash tests' pause points installed (VIDPIPE_TEST_PAUSE_AT; production code has none)
PAUSE_ENTRY = Path(__file__).with_name("pause_entry.py")


def _start(spec: Path, env: dict, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, str(PAUSE_ENTRY), "job", "run", str(spec), *args], stdout=f, stderr=f, env=env
        )


def _run(spec: Path, env: dict, log: Path, *args: str, timeout: float = 180) -> int:
    proc = _start(spec, env, log, *args)
    try:
        return proc.wait(scaled(timeout))
    finally:
        if proc.poll() is None:
            proc.kill()


def _wait_reached(proc: subprocess.Popen[bytes], barrier: Path, point: str, log: Path) -> None:
    marker = barrier / f"{point.replace(':', '-')}.reached"
    limit = scaled(REACH_TIMEOUT_S)
    deadline = time.monotonic() + limit
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"job exited {proc.returncode} before reaching {point}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"job did not reach {point} in {limit:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def _frames_hash(path: Path) -> str:
    times, frames = decode_all(path)
    return hashlib.sha256(repr(times).encode() + frames.contiguous().numpy().tobytes()).hexdigest()


def _objects(s3_server: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.admin_client().list_objects_v2(Bucket=bucket).get("Contents") or []]


def _leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for g in PARTIAL_GLOBS for p in root.glob(g)]


def _fetch(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")  # never leave loopback
    with urllib.request.urlopen(url, timeout=scaled(30)) as resp:
        return resp.read()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _only_output(result: Path) -> dict:
    doc = json.loads(result.read_text())
    [entry] = doc["inputs"]
    [out] = entry["outputs"]
    return out


@dataclass(frozen=True)
class Reference:
    output: Path
    frames_hash: str


@pytest.fixture(scope="module")
def reference(clip, s3_server, tmp_path_factory) -> Reference:
    """The uninterrupted 3-segment job (a subprocess, like the crashed ones) and its decoded-frame hash."""
    tmp = tmp_path_factory.mktemp("job-ref")
    admin = s3_server.admin_client()
    bucket = "job-ref-bucket"
    admin.create_bucket(Bucket=bucket)
    spec = _write_spec(tmp, clip)
    rc = _run(spec, _env(s3_server, bucket), tmp / "log.txt")
    assert rc == 0, (tmp / "log.txt").read_text()[-3000:]
    out = Path(_only_output(tmp / "result.json")["path"])
    state = json.loads(next((tmp / "out" / ".vidpipe-work" / "state").glob("*/state.json")).read_text())
    assert len(state["plan"]) == 3  # what the crash tests rely on
    return Reference(output=out, frames_hash=_frames_hash(out))


def test_segmented_job_has_the_frames_and_times_of_a_plain_run(clip, reference, tmp_path, one_thread):
    plain = tmp_path / "plain.mkv"
    opts = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))
    run(clip, plain, [Interpolate("rife-hdv3", fps=50)], opts)
    t_plain, _ = decode_all(plain)
    t_job, _ = decode_all(reference.output)
    assert len(t_job) == len(t_plain) == 150 and t_job == t_plain
    assert [s.type for s in probe(reference.output).streams] == ["video", "audio"]


@pytest.mark.parametrize("point", ["segment:2", "segment-done:1", "join", "uploaded"])
def test_kill_9_then_resume_gives_the_uninterrupted_frames(clip, reference, s3_server, bucket, tmp_path, point):
    spec = _write_spec(tmp_path, clip)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    log = tmp_path / "log.txt"
    proc = _start(
        spec, _env(s3_server, bucket, VIDPIPE_TEST_PAUSE_AT=point, VIDPIPE_TEST_BARRIER_DIR=str(barrier)), log
    )
    try:
        _wait_reached(proc, barrier, point, log)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(scaled(30)) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "SENTINEL").exists()
    state = json.loads(next((tmp_path / "out" / ".vidpipe-work" / "state").glob("*/state.json")).read_text())
    done_before = set(state["done"])
    if point == "segment:2":
        assert done_before == {"0"}  # segment 1 checkpointed, segment 2 cut short
    rc = _run(spec, _env(s3_server, bucket), log)
    assert rc == 0, log.read_text()[-3000:]
    out = _only_output(tmp_path / "result.json")
    assert _frames_hash(Path(out["path"])) == reference.frames_hash
    assert sorted(p.name for p in tmp_path.glob("SENTINEL*")) == ["SENTINEL"]  # exactly one sentinel
    assert _objects(s3_server, bucket) == [out["key"]]  # one object: a verified upload is not repeated
    assert not _leftovers(tmp_path)
    resumed = log.read_text()
    if point in ("segment-done:1", "join"):
        assert "segment 1/3 already done" in resumed  # the checkpoint was used, not redone
    if point == "uploaded":
        assert "already uploaded and verified" in resumed


def test_sigterm_in_a_segment_exits_within_5_s_and_resumes(clip, reference, s3_server, bucket, tmp_path):
    spec = _write_spec(tmp_path, clip)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    log = tmp_path / "log.txt"
    env = _env(s3_server, bucket, VIDPIPE_TEST_PAUSE_AT="segment:2", VIDPIPE_TEST_BARRIER_DIR=str(barrier))
    proc = _start(spec, env, log)
    try:
        _wait_reached(proc, barrier, "segment:2", log)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        (barrier / "segment-2.go").touch()  # the segment goes on; the signal must stop it at its next batch
        rc = proc.wait(scaled(30))
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert took < scaled(SIGTERM_EXIT_S), f"{took:.1f} s after SIGTERM ({calibration.current().describe()})"
    assert not (tmp_path / "SENTINEL").exists()
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["class"] == "Interrupted"
    state = json.loads(next((tmp_path / "out" / ".vidpipe-work" / "state").glob("*/state.json")).read_text())
    assert set(state["done"]) == {"0"}
    assert not _leftovers(tmp_path)  # the partial segment was removed
    assert _run(spec, _env(s3_server, bucket), log) == 0, log.read_text()[-3000:]
    assert _frames_hash(Path(_only_output(tmp_path / "result.json")["path"])) == reference.frames_hash
    assert (tmp_path / "SENTINEL").exists()


def test_disk_full_mid_job_is_classified_leaves_no_temp_files_and_resumes(
    clip, reference, s3_server, bucket, tmp_path, monkeypatch, one_thread
):
    real_write = writer_mod.VideoWriter.write
    calls = {"n": 0}

    def full_disk(self: writer_mod.VideoWriter, batch: Any) -> None:
        if self.target.name.startswith("seg_00001"):  # the second segment: its first batch hits a full disk
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))
        real_write(self, batch)

    monkeypatch.setattr(writer_mod.VideoWriter, "write", full_disk)
    env = _env(s3_server, bucket)
    spec = load_spec(_write_spec(tmp_path, clip), env=env)
    outcome = run_job(spec, env=env)
    assert calls["n"] == 1
    assert not outcome.ok and outcome.exit_code == DiskFullError.exit_code
    assert "disk full" in outcome.errors[0]
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["status"] == "failed" and doc["inputs"][0]["error"]["class"] == "DiskFullError"
    assert not (tmp_path / "SENTINEL").exists()
    assert not _leftovers(tmp_path)
    assert _objects(s3_server, bucket) == []
    monkeypatch.setattr(writer_mod.VideoWriter, "write", real_write)
    again = run_job(spec, env=env)
    assert again.ok and again.sentinel
    assert _frames_hash(again.outputs[0]) == reference.frames_hash


def test_multipart_upload_verified_presigned_and_no_secret_anywhere(make, s3_server, bucket, tmp_path):
    # ProRes 422 HQ of 40 mandelbrot frames resized to 1280×960 comes to about 21 MB: 5 parts of 5 MiB
    src = make("job-big.mp4", size=(320, 240), frames=40, source="mandelbrot", audio=[AudioTrack()])
    spec = _write_spec(
        tmp_path,
        src,
        pipeline={"resize": "1280x960", "encoder": "prores", "device": "cpu"},
        output={"container": "mov", "multipart_threshold_mb": 8, "part_size_mb": 5},
        segments={"seconds": 0},
        auto_stop={"provider": "command", "command": [sys.executable, "-c", "open('stopped', 'w').close()"]},
    )
    env = _env(s3_server, bucket, key=s3_server.canary_access_key, secret=s3_server.canary_secret_key)
    log = tmp_path / "log.txt"
    before = datetime.now(UTC).replace(microsecond=0)
    proc = subprocess.run(
        [sys.executable, "-m", "vidpipe", "job", "run", str(spec), "-v"],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(180),
        cwd=tmp_path,
        check=False,
    )
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, log.read_text()[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "succeeded" and result["all_uploads_verified"] is True
    out = _only_output(tmp_path / "result.json")
    local = Path(out["path"])
    data = local.read_bytes()
    assert len(data) >= 20 * 10**6 and out["size"] == len(data)
    assert out["verified"] is True and out["parts"] >= 4 and out["sha256"] == _sha(data)
    assert re.fullmatch(r"job-big_result_\d{8}_\d{6}\.mov", out["key"]), out["key"]
    stamp = datetime.strptime(out["key"][len("job-big_result_") : -4], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
    head = s3_server.admin_client().head_object(Bucket=bucket, Key=out["key"])
    assert head["ContentLength"] == len(data) and head["Metadata"]["sha256"] == _sha(data)
    assert _sha(_fetch(out["presigned_url"])) == _sha(data)
    sentinel = json.loads((tmp_path / "SENTINEL").read_text())
    assert sentinel["job_id"] == result["job_id"]
    assert (tmp_path / "stopped").exists()  # --auto-stop ran the stop command after the sentinel
    assert not s3_server.admin_client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    # the canary credentials: nowhere in logs, manifests, checkpoints or the result, bar the presigned URL
    for path, text in _texts(tmp_path):
        if path.name == "result.json":
            text = json.dumps(_without_urls(json.loads(text)))
        for secret in (s3_server.canary_access_key, s3_server.canary_secret_key):
            assert secret not in text, f"{secret} leaked into {path}"
    assert s3_server.canary_access_key in out["presigned_url"]  # the user's link, left intact on purpose


def test_failing_job_keeps_secrets_out_of_errors_and_tracebacks(s3_server, bucket, tmp_path):
    wrong = s3_server.canary_secret_key + "-wrong"
    spec = _write_spec(tmp_path, Path("unused"), inputs=[f"s3://{bucket}/missing/clip.mp4"])
    env = _env(s3_server, bucket, key=s3_server.canary_access_key, secret=wrong)
    proc = subprocess.run(
        [sys.executable, "-m", "vidpipe", "job", "run", str(spec), "-v"],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(120),
        check=False,
    )
    assert proc.returncode == 7, proc.stderr[-3000:]  # StorageError: the signature was refused
    assert "Traceback" in proc.stderr and "403" in proc.stderr
    texts = [proc.stdout + proc.stderr, *(t for _, t in _texts(tmp_path))]
    for text in texts:
        for secret in (s3_server.canary_access_key, wrong, s3_server.canary_secret_key):
            assert secret not in text
    assert not (tmp_path / "SENTINEL").exists()


def _texts(root: Path) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt", ".yaml", "") and path.stat().st_size < 10**6:
            yield path, path.read_text(errors="replace")


def _without_urls(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_urls(v) for k, v in obj.items() if k != "presigned_url"}
    if isinstance(obj, list):
        return [_without_urls(v) for v in obj]
    return obj


def test_inputs_from_s3_globs_and_directories(clip, make, s3_server, bucket, tmp_path, caplog, one_thread):
    s3_server.admin_client().upload_file(str(clip), bucket, "raw/remote clip.mp4")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("b.mp4", "a.mkv"):
        (clips / name).write_bytes(make("job-small.mkv", size=(64, 48), frames=5, codec="ffv1").read_bytes())
    (clips / "notes.txt").write_text("not a video")
    env = _env(s3_server, bucket, AUTO_UPLOAD_B2="0")
    spec = load_spec(
        _write_spec(
            tmp_path,
            clip,
            inputs=[f"s3://{bucket}/raw/remote clip.mp4", str(clips / "*.mp4"), f"{clips}/"],
            pipeline={"resize": "32x24", "encoder": "ffv1", "device": "cpu"},
            segments={"seconds": 0},
        ),
        env=env,
    )
    outcome = run_job(spec, env=env)
    assert outcome.ok, outcome.errors
    # the glob's b.mp4 and the directory's a.mkv, b.mp4 (b.mp4 once), the download under a safe name
    assert [p.name for p in outcome.outputs] == ["remote_clip_result.mkv", "b_result.mkv", "a_result.mkv"]
    assert (spec.work_dir / "inputs" / "remote_clip.mp4").is_file()
    caplog.set_level("INFO", logger="vidpipe")
    assert run_job(spec, env=env).ok
    assert "already downloaded" in caplog.text
    missing = load_spec(_write_spec(tmp_path, clip, inputs=[str(clips / "*.mov")]), env=env)
    failed = run_job(missing, env=env)
    assert failed.exit_code == 3 and "no files match" in failed.errors[0]
