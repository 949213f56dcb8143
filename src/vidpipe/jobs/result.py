"""The result JSON of a job and the completion sentinel.

Paths (environment of the seed's vast.ai containers):

- result JSON: ``UPLOAD_RESULT_JSON``, default :data:`DEFAULT_RESULT_PATH`
  (``/workspace/realesrgan_upload_result.json``, the name the seed's monitor already reads);
- sentinel: ``VIDPIPE_SENTINEL``, default :data:`DEFAULT_SENTINEL`
  (``/workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY``).

The sentinel means "everything this job produced is safely in the bucket": it is written only after the
result JSON says every input succeeded and every output has a verified upload (:func:`check_uploads_verified`,
the same check the monitor runs). A job with uploads switched off therefore never writes it, and a stale
sentinel from an earlier run is removed when a job begins. Both files are written atomically
(:mod:`vidpipe.jobs.atomic`), and everything written goes through a :class:`~vidpipe.jobs.secrets.Redactor`
(the user's ``presigned_url`` excepted).

Layout (``schema: vidpipe.result/1``)::

    {"schema", "job_id", "status": running|succeeded|failed, "started_at", "finished_at",
     "upload": {"enabled", "bucket", "endpoint"}, "all_uploads_verified", "sentinel",
     "inputs": [{"input", "status": pending|running|ok|failed, "started_at", "finished_at",
                 "timings": {name: seconds}, "error": {"class", "message", "retryable", "exit_code"} | null,
                 "outputs": [{"path", "mode", "size", "sha256", "bucket", "key", "etag", "parts", "verified",
                              "presigned_url", "presigned_expires_at", "upload_seconds"}]}]}
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vidpipe.errors import OutputError, VidpipeError
from vidpipe.jobs.atomic import write_json
from vidpipe.jobs.secrets import Redactor

if TYPE_CHECKING:
    from vidpipe.jobs.storage import UploadReceipt

#: the result JSON carries presigned URLs (bearer links to the output): readable by the owner only
PRIVATE_MODE = 0o600

SCHEMA: Final = "vidpipe.result/1"
DEFAULT_RESULT_PATH: Final = Path("/workspace/realesrgan_upload_result.json")
DEFAULT_SENTINEL: Final = Path("/workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def result_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("UPLOAD_RESULT_JSON") or DEFAULT_RESULT_PATH)


def sentinel_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("VIDPIPE_SENTINEL") or DEFAULT_SENTINEL)


def disk_error(exc: OSError, path: Path | str, doing: str) -> OutputError:
    """Disk full (ENOSPC, EDQUOT) and other local write failures are OutputErrors: the local disk, not the
    store or the input, is what failed."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full while {doing} {path}: free space or use a larger disk")
    return OutputError(f"cannot write {path} while {doing}: {exc.strerror or exc}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class OutputRecord:
    path: str
    mode: str | None = None
    size: int | None = None
    sha256: str | None = None
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    parts: int | None = None
    verified: bool = False
    presigned_url: str | None = None
    presigned_expires_at: str | None = None
    upload_seconds: float | None = None


@dataclass(kw_only=True)
class InputResult:
    input: str
    status: str = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[OutputRecord] = field(default_factory=list)
    error: dict[str, Any] | None = None


def error_info(exc: BaseException, redactor: Redactor) -> dict[str, Any]:
    return {
        "class": type(exc).__name__,
        "message": redactor.redact(str(exc)),
        "retryable": bool(getattr(exc, "retryable", False)),
        "exit_code": getattr(exc, "exit_code", 1) if isinstance(exc, VidpipeError) else 1,
    }


def check_uploads_verified(doc: Mapping[str, Any]) -> list[str]:
    """Why ``doc`` (a parsed result JSON) does NOT show a finished job whose every output is uploaded and
    verified; empty when it does. Shared by :meth:`JobResult.finish` and the monitor, so both agree."""
    reasons: list[str] = []
    if doc.get("schema") != SCHEMA:
        return [f"not a {SCHEMA} document (schema={doc.get('schema')!r})"]
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return ["no inputs recorded"]
    for item in inputs:
        name = item.get("input", "?") if isinstance(item, Mapping) else "?"
        if not isinstance(item, Mapping) or item.get("status") != "ok":
            status = item.get("status") if isinstance(item, Mapping) else None
            reasons.append(f"input {name}: status {status!r}, not 'ok'")
            continue
        outputs = item.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            reasons.append(f"input {name}: no outputs")
            continue
        for out in outputs:
            where = out.get("path", "?") if isinstance(out, Mapping) else "?"
            if not isinstance(out, Mapping) or out.get("verified") is not True:
                reasons.append(f"input {name}: output {where} has no verified upload")
            elif not (out.get("bucket") and out.get("key")):
                reasons.append(f"input {name}: output {where} has no bucket/key")
            elif not (isinstance(out.get("sha256"), str) and _SHA256_RE.match(out["sha256"])):
                reasons.append(f"input {name}: output {where} has no sha256")
            elif not isinstance(out.get("size"), int) or out["size"] < 0:
                reasons.append(f"input {name}: output {where} has no size")
    return reasons


def uploaded_outputs(doc: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(input, output record) for every verified upload that ``doc`` (a parsed result JSON) records: what the
    runner's last check and the monitor HEAD in the bucket before the sentinel, or a stop, vouches for them."""
    for item in doc.get("inputs") or []:
        if not isinstance(item, Mapping) or item.get("status") != "ok":
            continue
        for out in item.get("outputs") or []:
            if isinstance(out, Mapping) and out.get("verified") is True and out.get("bucket") and out.get("key"):
                yield str(item.get("input", "?")), out


class JobResult:
    """Builds the result JSON of one job, rewriting it atomically after each change, and writes the sentinel
    at the end when (and only when) every upload is verified.

    Typical use by a runner::

        result = JobResult(result_path_from_env(), sentinel=sentinel_path_from_env(), upload_enabled=True)
        result.begin()
        result.start_input("in.mp4")
        ... result.record_upload("in.mp4", out_path, receipt, mode="upscaled", url=url, expires_at=exp)
        result.succeed_input("in.mp4")          # or result.fail_input("in.mp4", exc)
        ok = result.finish()                    # writes the sentinel iff everything is verified
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sentinel: Path | str,
        upload_enabled: bool,
        bucket: str | None = None,
        endpoint: str | None = None,
        redactor: Redactor | None = None,
        job_id: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.sentinel = Path(sentinel)
        self.redactor = redactor or Redactor.from_env()
        self.job_id = job_id or uuid.uuid4().hex
        self.upload = {"enabled": upload_enabled, "bucket": bucket, "endpoint": endpoint}
        self.status = "running"
        self.started_at = _now()
        self.finished_at: str | None = None
        self.inputs: dict[str, InputResult] = {}
        self.sentinel_written = False

    # -- building ----------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Remove a sentinel left by an earlier run (a monitor must not act on it) and write the JSON."""
        try:
            self.sentinel.unlink(missing_ok=True)
        except OSError as e:
            raise OutputError(f"cannot remove stale sentinel {self.sentinel}: {e.strerror or e}") from e
        self.write()

    def input(self, name: str) -> InputResult:
        if name not in self.inputs:
            self.inputs[name] = InputResult(input=name)
        return self.inputs[name]

    def start_input(self, name: str) -> InputResult:
        entry = self.input(name)
        entry.status, entry.started_at = "running", _now()
        self.write()
        return entry

    def add_timing(self, name: str, what: str, seconds: float) -> None:
        self.input(name).timings[what] = round(float(seconds), 3)

    def record_output(self, name: str, record: OutputRecord) -> OutputRecord:
        self.input(name).outputs.append(record)
        self.write()
        return record

    def record_upload(
        self,
        name: str,
        local_path: Path | str,
        receipt: UploadReceipt,
        *,
        mode: str | None = None,
        url: str | None = None,
        expires_at: datetime | None = None,
    ) -> OutputRecord:
        return self.record_output(
            name,
            OutputRecord(
                path=str(local_path),
                mode=mode,
                size=receipt.size,
                sha256=receipt.sha256,
                bucket=receipt.bucket,
                key=receipt.key,
                etag=receipt.etag,
                parts=receipt.parts,
                verified=receipt.verified,
                presigned_url=url,
                presigned_expires_at=expires_at.isoformat(timespec="seconds") if expires_at else None,
                upload_seconds=round(receipt.seconds, 3),
            ),
        )

    def succeed_input(self, name: str) -> None:
        entry = self.input(name)
        entry.status, entry.finished_at, entry.error = "ok", _now(), None
        self.write()

    def fail_input(self, name: str, exc: BaseException) -> None:
        entry = self.input(name)
        entry.status, entry.finished_at, entry.error = "failed", _now(), error_info(exc, self.redactor)
        self.write()

    # -- writing -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "job_id": self.job_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "upload": dict(self.upload),
            "all_uploads_verified": False,
            "sentinel": str(self.sentinel) if self.sentinel_written else None,
            "inputs": [asdict(entry) for entry in self.inputs.values()],
        }
        doc["all_uploads_verified"] = bool(self.upload["enabled"]) and not check_uploads_verified(doc)
        return self.redactor.redact_obj(doc)

    def write(self) -> None:
        try:
            write_json(self.path, self.to_dict(), PRIVATE_MODE)
        except OSError as e:
            raise disk_error(e, self.path, "writing the result JSON") from e

    def finish(self) -> bool:
        """Close the job: status, final JSON, and the sentinel iff every input is ok and every output has a
        verified upload. Returns whether the sentinel was written. A failure to write either file raises
        OutputError and leaves no sentinel."""
        self.finished_at = _now()
        reasons = check_uploads_verified({**self.to_dict(), "schema": SCHEMA})
        if not self.upload["enabled"]:
            reasons.append("uploads are disabled (AUTO_UPLOAD_B2=0)")
        all_ok = all(e.status == "ok" for e in self.inputs.values()) and bool(self.inputs)
        self.status = "succeeded" if all_ok else "failed"
        self.sentinel_written = False
        try:
            self.sentinel.unlink(missing_ok=True)
        except OSError as e:
            raise OutputError(f"cannot remove stale sentinel {self.sentinel}: {e.strerror or e}") from e
        self.write()
        if reasons:
            return False
        payload = {"result": str(self.path), "job_id": self.job_id, "written_at": _now()}
        try:
            write_json(self.sentinel, payload)
        except OSError as e:
            self.status = "failed"
            err = disk_error(e, self.sentinel, "writing the sentinel")
            self._try_write_quietly()
            raise err from e
        self.sentinel_written = True
        # Only the "sentinel" field changes; the JSON written above already shows everything verified.
        self._try_write_quietly()
        return True

    def _try_write_quietly(self) -> None:
        # Best effort after a failed sentinel write: record "failed" if the disk allows it; the sentinel's
        # absence already keeps the monitor from stopping the instance.
        try:
            write_json(self.path, self.to_dict(), PRIVATE_MODE)
        except OSError:
            return


__all__ = [
    "DEFAULT_RESULT_PATH",
    "DEFAULT_SENTINEL",
    "SCHEMA",
    "InputResult",
    "JobResult",
    "OutputRecord",
    "check_uploads_verified",
    "disk_error",
    "error_info",
    "result_path_from_env",
    "sentinel_path_from_env",
    "uploaded_outputs",
]
