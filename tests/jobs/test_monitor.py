"""The monitor stops the instance only after verified uploads; the stop command is a script recording calls."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidpipe.cli.monitor_cmd import app
from vidpipe.errors import UsageError
from vidpipe.jobs.monitor import (
    CommandResult,
    MonitorConfig,
    Outcome,
    State,
    evaluate,
    run_monitor,
    stop_command_for,
)
from vidpipe.jobs.result import JobResult
from vidpipe.jobs.storage import UploadReceipt

# Bounded even if the loopback server or a proxy thread hangs.
pytestmark = pytest.mark.timeout(120)

# A stand-in for `vastai stop instance`: records what it saw when called, fails the first N calls.
RECORDER = """\
import json, os, sys
calls, result, sentinel, fail_times = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    with open(result) as f:
        doc = json.load(f)
except (OSError, ValueError):
    doc = {}
with open(calls, "a") as f:
    f.write(json.dumps({"verified": doc.get("all_uploads_verified") is True,
                        "sentinel": os.path.exists(sentinel)}) + "\\n")
with open(calls) as f:
    n = sum(1 for _ in f)
print("stopping instance 12345")
sys.exit(1 if n <= fail_times else 0)
"""

TIMEOUT_S = 30.0


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.result = tmp_path / "result.json"
        self.sentinel = tmp_path / "DONE"
        self.calls = tmp_path / "calls.jsonl"
        self.script = tmp_path / "stop.py"
        self.script.write_text(RECORDER)

    def command(self, fail_times: int = 0) -> tuple[str, ...]:
        return (
            sys.executable,
            str(self.script),
            str(self.calls),
            str(self.result),
            str(self.sentinel),
            str(fail_times),
        )

    def config(self, fail_times: int = 0, **kw: object) -> MonitorConfig:
        values: dict = {
            "result_path": self.result,
            "sentinel_path": self.sentinel,
            "stop_command": self.command(fail_times),
            "interval": 0.05,
            "timeout": TIMEOUT_S,
            "stop_backoff": 0.01,
        }
        values.update(kw)
        return MonitorConfig(**values)

    def recorded(self) -> list[dict]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines()]

    def job(self) -> JobResult:
        return JobResult(self.result, sentinel=self.sentinel, upload_enabled=True)


def _verified_job(s: Setup) -> JobResult:
    job = s.job()
    job.begin()
    receipt = UploadReceipt(
        bucket="bkt", key="a_upscaled_20250101_000000.mp4", size=1, sha256="0" * 64, etag="", parts=0,
        attempts=2, seconds=0.1,
    )  # fmt: skip
    job.record_upload("a.mp4", "/out/a.mp4", receipt)
    job.succeed_input("a.mp4")
    assert job.finish()
    return job


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_never_called_before_verification_then_exactly_once(setup, s3_server, bucket, tmp_path):
    """A real job flow against the S3 server while the monitor polls in a thread."""
    reports = []
    monitor = threading.Thread(target=lambda: reports.append(run_monitor(setup.config())), daemon=True)
    job = setup.job()
    job.begin()
    monitor.start()
    job.start_input("clip.mp4")
    time.sleep(0.3)  # several polls see a running job
    assert setup.recorded() == []
    out = tmp_path / "clip_out.mp4"
    out.write_bytes(b"o" * 70_000)
    storage = s3_server.storage(bucket)
    receipt = storage.upload_file(out, "clip_upscaled_20250101_000000.mp4")
    job.record_upload("clip.mp4", out, receipt, url=storage.presign_get(receipt.key)[0])
    time.sleep(0.2)
    assert setup.recorded() == []  # upload recorded, but the input is not finished
    job.succeed_input("clip.mp4")
    assert job.finish()
    monitor.join(TIMEOUT_S)
    assert not monitor.is_alive()
    assert reports[0].outcome is Outcome.STOPPED and reports[0].polls > 3
    assert setup.recorded() == [{"verified": True, "sentinel": True}]


def test_verified_json_without_sentinel_does_not_stop(setup):
    _verified_job(setup)
    setup.sentinel.unlink()
    report = run_monitor(setup.config(timeout=0.3))
    assert report.outcome is Outcome.TIMED_OUT and report.polls >= 2
    assert setup.recorded() == []


def test_sentinel_without_verified_json_does_not_stop(setup):
    job = setup.job()
    job.begin()
    setup.sentinel.write_text("forged")
    report = run_monitor(setup.config(timeout=0.3))
    assert report.outcome is Outcome.TIMED_OUT
    assert setup.recorded() == []


def test_stop_retried_when_command_fails_first(setup):
    _verified_job(setup)
    sleeps: list[float] = []
    report = run_monitor(setup.config(fail_times=1, stop_backoff=0.5), sleep=sleeps.append)
    assert report.outcome is Outcome.STOPPED
    assert report.stop_attempts == 2 and len(setup.recorded()) == 2
    assert len(report.stop_errors) == 1 and "exited 1" in report.stop_errors[0]
    assert "stopping instance 12345" in report.stop_errors[0]  # the command's output is reported
    assert sleeps == [0.5]


def test_stop_gives_up_after_attempts_and_reports(setup):
    _verified_job(setup)
    report = run_monitor(setup.config(fail_times=99, stop_attempts=3), sleep=lambda _s: None)
    assert report.outcome is Outcome.STOP_FAILED and not report.outcome.ok
    assert len(setup.recorded()) == 3 and len(report.stop_errors) == 3
    assert not setup.config().marker.exists()


def test_missing_program_not_retried(setup):
    _verified_job(setup)
    report = run_monitor(
        setup.config(stop_command=(str(setup.script.parent / "no-such-stopper"),)), sleep=lambda _s: None
    )
    assert report.outcome is Outcome.STOP_FAILED and report.stop_attempts == 1
    assert "exited 127" in report.stop_errors[0]


def test_dry_run_never_calls(setup):
    _verified_job(setup)
    report = run_monitor(setup.config(dry_run=True))
    assert report.outcome is Outcome.DRY_RUN
    assert setup.recorded() == []


def test_second_monitor_does_not_stop_again(setup):
    _verified_job(setup)
    assert run_monitor(setup.config()).outcome is Outcome.STOPPED
    assert run_monitor(setup.config()).outcome is Outcome.ALREADY_STOPPED
    assert len(setup.recorded()) == 1
    _verified_job(setup)  # a new job (new job id) on the same paths is stopped again
    assert run_monitor(setup.config()).outcome is Outcome.STOPPED
    assert len(setup.recorded()) == 2


def test_failed_job_not_stopped_unless_asked(setup):
    job = setup.job()
    job.begin()
    job.fail_input("a.mp4", RuntimeError("decoder crashed"))
    job.finish()
    report = run_monitor(setup.config())
    assert report.outcome is Outcome.FAILED_NOT_STOPPED and report.polls == 1
    assert setup.recorded() == []
    report = run_monitor(setup.config(stop_on_failure=True))
    assert report.outcome is Outcome.STOPPED_AFTER_FAILURE
    assert setup.recorded() == [{"verified": False, "sentinel": False}]


def test_timeout_is_bounded_with_fake_clock(setup):
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    report = run_monitor(setup.config(interval=10, timeout=35), sleep=sleep, clock=lambda: now[0])
    assert report.outcome is Outcome.TIMED_OUT
    assert sleeps == [10, 10, 10, 5] and report.polls == 5
    assert report.reasons[0] == "timed out waiting"


def test_injected_runner_sees_argument_list(setup):
    _verified_job(setup)
    seen: list[list[str]] = []

    def runner(argv, timeout):
        seen.append(list(argv))
        return CommandResult(0, "")

    cfg = setup.config(stop_command=("vastai", "stop", "instance", "42; rm -rf /"))
    assert run_monitor(cfg, runner=runner).outcome is Outcome.STOPPED
    assert seen == [["vastai", "stop", "instance", "42; rm -rf /"]]  # one argument, never a shell


def test_evaluate_states(setup):
    assert evaluate(setup.result, setup.sentinel).state is State.WAITING
    setup.result.write_text("{not json")
    assert evaluate(setup.result, setup.sentinel).state is State.WAITING
    _verified_job(setup)
    assert evaluate(setup.result, setup.sentinel).state is State.VERIFIED
    doc = json.loads(setup.result.read_text())
    doc["inputs"][0]["outputs"][0]["verified"] = False  # JSON says all verified, an output disagrees
    setup.result.write_text(json.dumps(doc))
    assert evaluate(setup.result, setup.sentinel).state is State.FAILED


def test_provider_commands():
    assert stop_command_for("vast", env={"CONTAINER_ID": "777"}) == ["vastai", "stop", "instance", "777"]
    assert stop_command_for("runpod", env={"RUNPOD_POD_ID": "p1"}) == ["runpodctl", "stop", "pod", "p1"]
    assert stop_command_for("command", command=["a", "b c"]) == ["a", "b c"]
    with pytest.raises(UsageError, match="CONTAINER_ID"):
        stop_command_for("vast", env={})
    with pytest.raises(UsageError, match="RUNPOD_POD_ID"):
        stop_command_for("runpod", env={})
    with pytest.raises(UsageError, match="vast, runpod, command"):
        stop_command_for("aws", env={})


def _cli(setup: Setup, *extra: str) -> list[str]:
    # the receipts of _verified_job name no real object: trust the JSON (the bucket check: test_r22_jobs.py)
    stop = " ".join(f"'{a}'" for a in setup.command())
    return ["--no-verify-bucket", "--result", str(setup.result), "--sentinel", str(setup.sentinel),
            "--stop-command", stop, "--interval", "0.05", "--timeout", "10", *extra]  # fmt: skip


def test_cli_stops_once(setup):
    _verified_job(setup)
    res = CliRunner().invoke(app, _cli(setup))
    assert res.exit_code == 0, res.output
    assert "stopped" in res.output
    assert setup.recorded() == [{"verified": True, "sentinel": True}]


def test_cli_dry_run_and_failure_exit_codes(setup):
    _verified_job(setup)
    res = CliRunner().invoke(app, _cli(setup, "--dry-run"))
    assert res.exit_code == 0 and "dry-run" in res.output
    assert setup.recorded() == []
    setup.sentinel.unlink()
    res = CliRunner().invoke(app, [*_cli(setup)[:-2], "--timeout", "0.2"])
    assert res.exit_code == 1 and "timed-out" in res.output


def test_cli_usage_error(setup, monkeypatch):
    monkeypatch.delenv("CONTAINER_ID", raising=False)
    monkeypatch.delenv("RUNPOD_POD_ID", raising=False)
    res = CliRunner().invoke(app, ["--result", str(setup.result), "--provider", "vast"])
    assert res.exit_code == 2 and "CONTAINER_ID" in res.output
    res = CliRunner().invoke(app, ["--result", str(setup.result)])
    assert res.exit_code == 2 and "--provider" in res.output
