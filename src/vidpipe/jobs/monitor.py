"""Stop the rented instance once, and only once, the job's results are safely uploaded.

A stop is issued only when all of these hold (:func:`evaluate`):
the result JSON is readable, its ``status`` is ``succeeded``, ``all_uploads_verified`` is true and
:func:`~vidpipe.jobs.result.check_uploads_verified` agrees (every input ok, every output with a verified
upload), and the sentinel file exists; then, with a ``check`` (:func:`bucket_check`: what ``vidpipe monitor``
and ``--auto-stop`` use), every upload the JSON records is HEADed in the bucket and its size, sha256 and
(single PUT) ETag compared with the receipt, since a sentinel only says what was true when it was written: an
object deleted or replaced since (1.6 KB where the video was) is a failure with the objects named, and a store
that cannot be asked right now (the network, after retries) is waited for. Anything else is either "still
running" (keep polling) or "failed" (never stop, unless ``stop_on_failure``: then a failed job, or a timeout,
stops the instance too).

Providers: vast.ai (``vastai stop instance $CONTAINER_ID``), RunPod (``runpodctl stop pod $RUNPOD_POD_ID``)
or any argument list. Commands run without a shell. A failed stop (non-zero exit, timeout) is retried with
back-off and reported; a missing program is not retried.

A second stop is harmless and, across monitor restarts, avoided: a marker (``<result>.stopped``, holding the
job id) is written just before the stop command runs (a stop may end the monitor's own process) and removed
when the stop fails, and a monitor that finds the marker for the same job
does not stop again. This matters on vast.ai, where a stopped instance that is started again (to inspect it)
still has the sentinel on its disk, and a monitor launched on boot would otherwise stop it at once.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from vidpipe.errors import StorageError, UsageError
from vidpipe.jobs.atomic import write_json
from vidpipe.jobs.result import check_uploads_verified, uploaded_outputs
from vidpipe.jobs.secrets import Redactor
from vidpipe.jobs.storage import S3Storage

log = logging.getLogger(__name__)

PROVIDERS: Final[tuple[str, ...]] = ("vast", "runpod", "command")
_OUTPUT_TAIL: Final = 2000  # characters of a failed stop command's output kept in the report


class State(enum.Enum):
    WAITING = "waiting"
    VERIFIED = "verified"
    FAILED = "failed"


class Outcome(enum.Enum):
    STOPPED = "stopped"
    ALREADY_STOPPED = "already-stopped"
    DRY_RUN = "dry-run"
    FAILED_NOT_STOPPED = "failed-not-stopped"
    STOPPED_AFTER_FAILURE = "stopped-after-failure"
    TIMED_OUT = "timed-out"
    STOP_FAILED = "stop-failed"

    @property
    def ok(self) -> bool:
        return self in (Outcome.STOPPED, Outcome.ALREADY_STOPPED, Outcome.DRY_RUN)


@dataclass(frozen=True)
class Verdict:
    state: State
    reasons: tuple[str, ...] = ()
    job_id: str | None = None
    #: the result JSON read (what a bucket check goes through)
    doc: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


#: what is wrong in the bucket with the uploads a result JSON records (empty: all there, as uploaded)
ObjectCheck = Callable[[Mapping[str, Any]], list[str]]


def bucket_check(storage_for: Callable[[str, str | None], S3Storage]) -> ObjectCheck:
    """An ObjectCheck that HEADs each recorded upload through ``storage_for(bucket, endpoint)`` (the endpoint
    the result JSON names, or None). Raises StorageError when the store cannot be asked."""

    def check(doc: Mapping[str, Any]) -> list[str]:
        upload = doc.get("upload")
        endpoint = upload.get("endpoint") if isinstance(upload, Mapping) else None
        problems = []
        for name, record in uploaded_outputs(doc):
            problem = storage_for(str(record["bucket"]), endpoint).recorded_problem(record)
            if problem:
                problems.append(f"input {name}: {problem}")
        return problems

    return check


def _checked(verdict: Verdict, check: ObjectCheck) -> Verdict:
    try:
        problems = check(verdict.doc or {})
    except StorageError as e:
        if e.retryable:
            return Verdict(State.WAITING, (f"cannot check the bucket yet: {e}",), verdict.job_id, verdict.doc)
        return Verdict(State.FAILED, (f"cannot check the bucket: {e}",), verdict.job_id, verdict.doc)
    if problems:
        head = "the bucket does not hold what the result JSON records"
        return Verdict(State.FAILED, (head, *problems), verdict.job_id, verdict.doc)
    return verdict


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def evaluate(result_path: Path, sentinel_path: Path) -> Verdict:
    """Read the result JSON and the sentinel once and say whether the instance may be stopped."""
    try:
        doc = _read_json(result_path)
    except FileNotFoundError:
        return Verdict(State.WAITING, ("no result JSON yet",))
    except (OSError, ValueError) as e:
        # Written atomically, so a parse error means a foreign or damaged file: wait, never stop on it.
        return Verdict(State.WAITING, (f"result JSON unreadable: {type(e).__name__}",))
    if not isinstance(doc, dict):
        return Verdict(State.WAITING, ("result JSON is not an object",))
    job_id = doc.get("job_id") if isinstance(doc.get("job_id"), str) else None
    status = doc.get("status")
    if status == "running":
        return Verdict(State.WAITING, ("job still running",), job_id)
    if status == "failed":
        return Verdict(State.FAILED, ("job failed", *check_uploads_verified(doc)), job_id)
    if status != "succeeded":
        return Verdict(State.WAITING, (f"unknown job status {status!r}",), job_id)
    reasons = check_uploads_verified(doc)
    if doc.get("all_uploads_verified") is not True:
        reasons = ["all_uploads_verified is not true", *reasons]
    if reasons:
        # Finished, but its outputs are not all safely uploaded (e.g. uploads disabled): not a success.
        return Verdict(State.FAILED, tuple(reasons), job_id)
    if not sentinel_path.exists():
        # The runner writes the sentinel right after this JSON; until then, wait.
        return Verdict(State.WAITING, (f"sentinel {sentinel_path} not present",), job_id)
    return Verdict(State.VERIFIED, (), job_id, doc)


def stop_command_for(
    provider: str, *, env: Mapping[str, str] | None = None, command: Sequence[str] | None = None
) -> list[str]:
    """The argument list that stops this instance."""
    env = os.environ if env is None else env
    if provider == "vast":
        cid = env.get("CONTAINER_ID", "").strip()
        if not cid:
            raise UsageError("provider 'vast' needs CONTAINER_ID (set by vast.ai inside the instance)")
        return ["vastai", "stop", "instance", cid]
    if provider == "runpod":
        pod = env.get("RUNPOD_POD_ID", "").strip()
        if not pod:
            raise UsageError("provider 'runpod' needs RUNPOD_POD_ID (set by RunPod inside the pod)")
        return ["runpodctl", "stop", "pod", pod]
    if provider == "command":
        if not command or not all(isinstance(a, str) and a for a in command):
            raise UsageError("provider 'command' needs a non-empty stop command (--stop-command)")
        return list(command)
    raise UsageError(f"unknown provider {provider!r}; valid providers: {', '.join(PROVIDERS)}")


def detect_provider(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("CONTAINER_ID"):
        return "vast"
    if env.get("RUNPOD_POD_ID"):
        return "runpod"
    raise UsageError(
        "cannot tell the provider (neither CONTAINER_ID nor RUNPOD_POD_ID is set); "
        "pass --provider vast|runpod or --stop-command"
    )


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


Runner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` without a shell. A missing program is 127, a timeout 124 (as coreutils' timeout)."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        return CommandResult(127, f"program not found: {e.filename or argv[0]}")
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"timed out after {timeout:g}s")
    return CommandResult(proc.returncode, (proc.stdout or "") + (proc.stderr or ""))


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    result_path: Path
    sentinel_path: Path
    stop_command: tuple[str, ...]
    dry_run: bool = False
    stop_on_failure: bool = False
    interval: float = 30.0
    timeout: float | None = None  # None: wait as long as the job runs
    stop_attempts: int = 5
    stop_backoff: float = 10.0  # doubled after each failed attempt, capped at stop_backoff_max
    stop_backoff_max: float = 120.0
    stop_timeout: float = 120.0
    marker_path: Path | None = None  # default: <result_path>.stopped

    def __post_init__(self) -> None:
        if not self.stop_command:
            raise UsageError("no stop command: choose a provider (vast, runpod) or give --stop-command")
        if self.interval <= 0:
            raise UsageError(f"interval must be > 0 seconds, got {self.interval}")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"timeout must be > 0 seconds (or omitted), got {self.timeout}")
        if self.stop_attempts < 1:
            raise UsageError(f"stop_attempts must be >= 1, got {self.stop_attempts}")

    @property
    def marker(self) -> Path:
        return self.marker_path or self.result_path.with_name(self.result_path.name + ".stopped")


@dataclass(kw_only=True)
class MonitorReport:
    outcome: Outcome
    polls: int = 0
    stop_attempts: int = 0
    reasons: tuple[str, ...] = ()
    stop_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"monitor: {self.outcome.value} after {self.polls} poll(s)"
        if self.stop_attempts:
            text += f", {self.stop_attempts} stop attempt(s)"
        if self.reasons:
            text += f"; {'; '.join(self.reasons[:5])}"
        if self.stop_errors:
            text += f"; last stop error: {self.stop_errors[-1]}"
        return text


def _stop(
    config: MonitorConfig,
    report: MonitorReport,
    *,
    runner: Runner,
    sleep: Callable[[float], None],
    redactor: Redactor,
) -> bool:
    argv = list(config.stop_command)
    delay = config.stop_backoff
    for attempt in range(1, config.stop_attempts + 1):
        report.stop_attempts += 1
        result = runner(argv, config.stop_timeout)
        if result.returncode == 0:
            log.info("stop command succeeded (attempt %d): %s", attempt, argv[0])
            return True
        tail = redactor.redact(result.output.strip()[-_OUTPUT_TAIL:])
        error = f"{argv[0]} exited {result.returncode}: {tail}"
        report.stop_errors.append(error)
        log.error("stop attempt %d/%d failed: %s", attempt, config.stop_attempts, error)
        if result.returncode == 127 or attempt == config.stop_attempts:
            break  # a missing program will not appear by retrying
        sleep(delay)
        delay = min(config.stop_backoff_max, delay * 2)
    return False


def _marker_matches(marker: Path, job_id: str | None) -> bool:
    try:
        data = _read_json(marker)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("job_id") == job_id


def run_monitor(
    config: MonitorConfig,
    *,
    runner: Runner = run_command,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    redactor: Redactor | None = None,
    check: ObjectCheck | None = None,
) -> MonitorReport:
    """Poll until the job is verified (stop), failed (stop only with ``stop_on_failure``) or the timeout
    passes. Every exit path is bounded by ``timeout`` (when given) and ``stop_attempts``. With ``check``, a
    verified job is stopped only once the bucket holds every recorded upload as it was uploaded."""
    redactor = redactor or Redactor.from_env()
    report = MonitorReport(outcome=Outcome.TIMED_OUT)
    deadline = None if config.timeout is None else clock() + config.timeout
    last_reasons: tuple[str, ...] = ()
    while True:
        report.polls += 1
        verdict = evaluate(config.result_path, config.sentinel_path)
        if verdict.state is State.VERIFIED:
            if _marker_matches(config.marker, verdict.job_id):
                report.outcome = Outcome.ALREADY_STOPPED
                return report
            if check is not None:
                verdict = _checked(verdict, check)
        if verdict.reasons != last_reasons:
            log.info("monitor: %s (%s)", verdict.state.value, "; ".join(verdict.reasons) or "all verified")
            last_reasons = verdict.reasons
        report.reasons = verdict.reasons
        if verdict.state is State.VERIFIED:
            return _finish(config, report, verdict, Outcome.STOPPED, runner, sleep, redactor)
        now = clock()
        timed_out = deadline is not None and now >= deadline
        if verdict.state is State.FAILED or timed_out:
            if timed_out and verdict.state is not State.FAILED:
                report.reasons = ("timed out waiting", *verdict.reasons)
            if config.stop_on_failure:
                after = Outcome.STOPPED_AFTER_FAILURE
                return _finish(config, report, verdict, after, runner, sleep, redactor)
            report.outcome = Outcome.FAILED_NOT_STOPPED if verdict.state is State.FAILED else Outcome.TIMED_OUT
            return report
        sleep(config.interval if deadline is None else max(0.0, min(config.interval, deadline - now)))


def _finish(
    config: MonitorConfig,
    report: MonitorReport,
    verdict: Verdict,
    success: Outcome,
    runner: Runner,
    sleep: Callable[[float], None],
    redactor: Redactor,
) -> MonitorReport:
    if config.dry_run:
        log.warning("dry run: would stop the instance with %s", list(config.stop_command))
        report.outcome = Outcome.DRY_RUN
        return report
    # The marker goes first: a stop that succeeds may end this very process before the command returns (the
    # platform stops the container the monitor runs in: SIGTERM), and the next start must still find it.
    marker = {"job_id": verdict.job_id, "stopped_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        write_json(config.marker, marker)
    except OSError as e:
        # without the marker a restarted monitor may stop once more (harmless)
        log.warning("marker %s could not be written: %s", config.marker, e.strerror or e)
    if not _stop(config, report, runner=runner, sleep=sleep, redactor=redactor):
        config.marker.unlink(missing_ok=True)
        report.outcome = Outcome.STOP_FAILED
        return report
    report.outcome = success
    return report
