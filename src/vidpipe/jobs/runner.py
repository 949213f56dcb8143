"""Run a job: for each input, download (s3://), process in checkpointed segments (:mod:`vidpipe.jobs.driver`),
join, upload and verify, then the result JSON and, only when every upload is verified, the sentinel; optionally
stop the instance.

Before the first frame: the inputs' output names are made unique (inputs that would share one get a tag from
their path, `paths.unique_names`; a name still shared is a UsageError) and, with uploads on, the store is tried
(:meth:`~vidpipe.jobs.storage.S3Storage.preflight`), so a wrong secret or a missing bucket fails in seconds,
not after the GPU work. After the last input every recorded upload is HEADed against its receipt once more.

Crash safety, step by step (the state of an input is in ``<work_dir>/state/<stem>-<key>/state.json``, see
:mod:`vidpipe.jobs.segments`):

- a segment is recorded done only after its file is complete, renamed into place and fsynced; a SIGKILL in
  the middle of one loses that segment only (its partial file is removed when the job runs again);
- the joined output is written to a temp file, fsynced and renamed, then recorded; the segment files are
  deleted after that;
- the object key is recorded before the upload starts and the receipt after HEAD verification, so a job run
  again uploads to the same key (aborting parts a killed multipart upload left) or, when the object is already
  there and verified, does not upload again;
- SIGINT/SIGTERM: inside a segment the pipeline stops at its next batch and removes the partial segment;
  anywhere else the job stops at once. The result JSON is written (status failed) and the process exits
  128+signal, with no sentinel. The signal is recorded before `Interrupted` is raised, and every step that
  commits (each `reached` point, an input's start and its end, the sentinel) checks the record first: an
  `except Exception` on the way (logging's `Handler.emit`, which hands the exception to `handleError`) can
  swallow the exception, never the stop; an input that fails after it fails as Interrupted.

Disk (:mod:`vidpipe.jobs.disk`): before the segments of an input start, the space they and the joined output
will need is estimated from the output size, frame count and encoder; a disk with less than half of that free is
refused with :class:`~vidpipe.errors.DiskFullError` (too little for sure; estimates of compressed sizes are
rough). A disk that fills up anyway (ENOSPC, EDQUOT) anywhere in the job is reported as DiskFullError as well;
temp files are removed and finished segments kept for the next run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .. import paths
from ..errors import Interrupted, StorageError, VidpipeError
from ..media.encoders import resolve
from ..media.probe import probe
from ..media.writer import partial_path
from ..runtime.device import resolve_device
from ..runtime.pipeline import source_spec, versions
from ..runtime.progress import ProgressMode
from . import atomic
from .disk import check_free_space, disk_full, estimate_output_bytes
from .driver import Prepared, SegmentDriver, SegmentExecutor, whole_file_reason
from .keys import local_name_for_key, make_object_key, parse_s3_url, sanitize_component
from .monitor import MonitorConfig, bucket_check, detect_provider, run_monitor, stop_command_for
from .result import JobResult, OutputRecord, uploaded_outputs
from .secrets import RedactingFilter, Redactor, install_log_redaction
from .segments import InputState, checkpoint_key, file_sha256
from .spec import JobSpec
from .stopping import Stop, stop_at_once
from .storage import S3Settings, S3Storage, UploadReceipt, file_digest

if TYPE_CHECKING:
    from ..stages.base import Stage

log = logging.getLogger(__name__)

#: file suffixes a directory input contributes (one list for `run` and `job run`)
VIDEO_SUFFIXES: Final = paths.VIDEO_SUFFIXES
#: seconds between the monitor's looks at the result JSON when --auto-stop runs it after the job
STOP_POLL_S: Final = 1.0


# -- inputs ---------------------------------------------------------------------------------------


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Files as given (an existing path is always literal, `clip[1].mp4` included), globs where no such path
    exists (sorted matches), directories (their video files, sorted), `@list.txt` and s3:// URLs; each input
    once, in order. A glob or directory that yields nothing is an error naming it; a missing file is passed on,
    to fail with its own input. One expansion for `run` and `job run`: `paths.expand_inputs`."""
    return paths.expand_inputs(patterns, missing="keep")


# -- the runner --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class JobOutcome:
    ok: bool
    exit_code: int
    sentinel: bool
    outputs: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Stems(NamedTuple):
    """What an input's output file (and checkpoint directory) and object key are named from."""

    file: str  # sanitised, at most 48 characters, tagged where inputs would share an output
    key: str  # the same, but the whole sanitised stem where no tag is needed
    tagged: bool


class JobRunner:
    """Runs one JobSpec. `storage` may be injected (tests); otherwise built from the spec and ``B2_*``.
    `stages` makes each input's stage chain (default: the spec's recipe builds a fresh one); a long-lived worker
    passes copies of a chain it keeps loaded (`vidpipe.serve`), so a job loads no weights of its own.
    `executor` runs the segments of every input on several workers (:mod:`vidpipe.jobs.fanout`; the spec's
    `executor`/`gpus`, built by `vidpipe.workers.job_executor`); None: one after another in this process."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        env: Mapping[str, str] | None = None,
        progress: ProgressMode = "none",
        storage: S3Storage | None = None,
        stages: Callable[[], list[Stage]] | None = None,
        executor: SegmentExecutor | None = None,
    ) -> None:
        self.spec = spec
        self.executor = executor
        self._make_stages = stages or spec.pipeline.stages
        self.env = dict(os.environ if env is None else env)
        self.progress = progress
        self._storage = storage
        self._downloads: dict[str, S3Storage] = {}
        settings = self._settings() if spec.upload.enabled and storage is None else None
        secrets = settings.secret_values() if settings else ()
        if storage is not None:
            secrets = storage.settings.secret_values()
        self.redactor = Redactor.from_env(self.env).with_secrets(secrets)
        self.driver = SegmentDriver(
            segment_seconds=spec.segment_seconds, mode=spec.mode, redactor=self.redactor, reached=self._reached
        )
        self._stop = Stop()  # replaced by the one `run` installs
        # the client is made by the pre-flight, where a malformed endpoint or region is reported like any store error
        self._upload_settings = settings
        self.stop_command = self._stop_command() if spec.auto_stop.enabled else None
        self._current: list[Path] = []  # temp files and state directory of the input in progress
        self._stems: dict[str, _Stems] = {}  # input → stems of its output file and object key

    # -- configuration --
    def _settings(self, bucket: str | None = None) -> S3Settings:
        up = self.spec.upload
        overrides: dict[str, Any] = {
            "bucket": bucket or up.bucket,
            "multipart_threshold": up.multipart_threshold,
            "part_size": up.part_size,
        }
        if up.endpoint:
            overrides["endpoint_url"] = up.endpoint
        if up.region:
            overrides["region"] = up.region
        return S3Settings.from_env(self.env, **overrides)

    def _stop_command(self) -> tuple[str, ...]:
        a = self.spec.auto_stop
        provider = a.provider or ("command" if a.command else detect_provider(self.env))
        return tuple(stop_command_for(provider, env=self.env, command=a.command or None))

    @property
    def storage(self) -> S3Storage:
        assert self._storage is not None, "uploads are off"
        return self._storage

    def reached(self, point: str) -> None:
        """A named step of the job is behind it: `segment-done:N` (segment N checkpointed), `join` (the first
        segment's packets joined), `upload` (key recorded, upload next), `uploaded` (every input done, result and
        sentinel next). Does nothing: an observer's extension point (the crash tests hold the job here to kill
        it at a known step, tests/jobs/pause_entry.py)."""
        return None

    def _reached(self, point: str) -> None:
        self._stop.check()  # a stop whose Interrupted was swallowed ends the job here, at its next step
        self.reached(point)

    # -- job --
    def run(self) -> JobOutcome:
        filters = self._install_redaction()
        try:
            with stop_at_once() as stop:
                self._stop = stop
                return self._run()
        finally:
            for handler, flt in filters:
                handler.removeFilter(flt)

    def _install_redaction(self) -> list[tuple[logging.Handler, RedactingFilter]]:
        installed = []
        for logger in (logging.getLogger(), logging.getLogger("vidpipe")):
            flt = install_log_redaction(self.redactor, logger)
            installed += [(h, flt) for h in logger.handlers]
        return installed

    def _run(self) -> JobOutcome:
        spec = self.spec
        up = spec.upload
        result = JobResult(
            spec.result_json,
            sentinel=spec.sentinel,
            upload_enabled=up.enabled,
            bucket=up.bucket,
            endpoint=up.endpoint,
            redactor=self.redactor,
        )
        result.begin()
        outcome = JobOutcome(ok=True, exit_code=0, sentinel=False)
        self._clean_temp(spec.result_json, spec.sentinel)
        try:
            try:
                names = expand_inputs(spec.inputs)
            except VidpipeError as e:
                result.fail_input(", ".join(spec.inputs), e)
                raise
            try:
                self._stems = self._output_stems(names)
                if up.enabled:
                    self._preflight()
            except VidpipeError as e:  # before any work: outputs that would collide, a store that cannot work
                for name in names:
                    result.fail_input(name, e)
                raise
            if self.executor is not None:
                from .fanout import run_inputs

                run_inputs(self, self.executor, names, result, outcome)
            else:
                self._run_inputs(names, result, outcome)
            self._reached("uploaded")
            if up.enabled:
                self._check_bucket(result, outcome)
        except Interrupted as e:
            self._finish_interrupted(result, e)
            raise
        except VidpipeError as e:
            outcome.ok, outcome.exit_code = False, outcome.exit_code or e.exit_code
            outcome.errors.append(str(e))
            log.error("%s", e)
            log.debug("job: traceback", exc_info=e)  # with -v (a pre-flight failure, …); redacted like every record
        try:
            self._stop.check()
            outcome.sentinel = result.finish()
        except Interrupted as e:  # swallowed since, or raised in `finish` itself (the sentinel perhaps written)
            self._finish_interrupted(result, e)
            raise
        if self.stop_command is not None:
            self._auto_stop(outcome)
        return outcome

    def _run_inputs(self, names: Sequence[str], result: JobResult, outcome: JobOutcome) -> None:
        """The inputs one after another, in this process (`jobs.fanout.run_inputs` hands them to workers)."""
        for name in names:
            result.start_input(name)
            started = time.monotonic()
            try:
                final = self._input(name, result)
                self._stop.check()  # before the input is recorded ok
            except Exception as e:
                self._clean_input_temp()
                self._input_failed(name, e, result, outcome)
                continue
            self._input_done(name, final, started, result, outcome)

    @staticmethod
    def _finish_interrupted(result: JobResult, e: Interrupted) -> None:
        """The result of a stopped job: failed, no sentinel. The input in progress carries the interruption; a stop
        after the last input (the bucket check, the sentinel) fails the inputs the sentinel would vouch for."""
        if all(entry.status == "ok" for entry in result.inputs.values()):
            for name in result.inputs:
                result.fail_input(name, e)
        result.finish()  # removes a sentinel an interrupted `finish` wrote

    def _input_failed(self, name: str, e: Exception, result: JobResult, outcome: JobOutcome) -> None:
        # what failed after a stop (a store retried until it gave up, …) failed because of it
        stopped = e if isinstance(e, Interrupted) else self._stop.error()
        if stopped is not None:
            result.fail_input(name, stopped)
            raise stopped from (None if stopped is e else e)
        err = self._classify(e, name)
        result.fail_input(name, err)
        outcome.ok = False
        outcome.exit_code = outcome.exit_code or err.exit_code
        outcome.errors.append(f"{name}: {err}")
        log.error("%s: %s", name, err)
        log.debug("%s: traceback", name, exc_info=e)  # with -v; redacted like every record

    @staticmethod
    def _input_done(name: str, final: Path, started: float, result: JobResult, outcome: JobOutcome) -> None:
        result.add_timing(name, "total", time.monotonic() - started)
        result.succeed_input(name)
        outcome.outputs.append(final)

    def _output_stems(self, names: Sequence[str]) -> dict[str, _Stems]:
        """Per input, the stem of its output file (and checkpoint directory) and of its object key: its own name,
        sanitised (the file's cut to 48 characters), and where inputs would share an output (`d1/clip.mp4` and
        `d2/clip.mp4`, `a b.mp4` and `a_b.mp4`) a hash of its path (`paths.unique_names`, deterministic). A name
        still shared after that is a UsageError, raised before any work."""
        full = [sanitize_component(Path(n.rsplit("/", 1)[-1]).stem, fallback="input") for n in names]
        files = [f"{stem[:48]}{self.spec.suffix_for(n)}" for stem, n in zip(full, names, strict=True)]
        unique = paths.unique_names(files, names)
        stems = {}
        for name, stem, before, after in zip(names, full, files, unique, strict=True):
            tagged = after != before
            stems[name] = _Stems(file=Path(after).stem, key=Path(after).stem if tagged else stem, tagged=tagged)
        return stems

    def _stems_of(self, name: str) -> _Stems:
        return self._stems[name] if name in self._stems else self._output_stems([name])[name]

    def _preflight(self) -> None:
        """Before the first frame: what the uploads will do, tried in a few requests under the job's prefix."""
        if self._storage is None:
            assert self._upload_settings is not None
            self._storage = S3Storage(self._upload_settings, redactor=self.redactor)
        up = self.spec.upload
        self.storage.preflight(up.object_key.rpartition("/")[0] if up.object_key else up.prefix)

    def _check_bucket(self, result: JobResult, outcome: JobOutcome) -> None:
        """HEAD every upload the result records and compare it with its receipt, just before the sentinel: an
        object deleted or replaced since its own verification (another writer of the key) fails its input."""
        for name, record in uploaded_outputs(result.to_dict()):
            problem = self.storage.recorded_problem(record)
            if problem is None:
                continue
            err = StorageError(problem)
            result.fail_input(name, err)
            outcome.ok, outcome.exit_code = False, outcome.exit_code or err.exit_code
            outcome.errors.append(f"{name}: {err}")
            log.error("%s: %s", name, err)

    def _classify(self, e: Exception, name: str) -> VidpipeError:
        full = disk_full(e)
        if full is not None:
            return full
        if isinstance(e, VidpipeError):
            return e
        # a bug, not a user or environment error: keep the traceback in the (redacted) log
        log.error("%s: unexpected %s", name, type(e).__name__, exc_info=e)
        return VidpipeError(f"unexpected {type(e).__name__}: {self.redactor.redact(str(e))}")

    def _auto_stop(self, outcome: JobOutcome) -> None:
        assert self.stop_command is not None
        a = self.spec.auto_stop
        config = MonitorConfig(
            result_path=self.spec.result_json,
            sentinel_path=self.spec.sentinel,
            stop_command=self.stop_command,
            dry_run=a.dry_run,
            stop_on_failure=a.stop_on_failure,
            interval=STOP_POLL_S,
            timeout=a.timeout,
        )
        # the monitor HEADs every recorded upload again before it stops anything (the store's credentials are ours)
        check = bucket_check(lambda _bucket, _endpoint: self.storage) if self._storage is not None else None
        report = run_monitor(config, redactor=self.redactor, check=check)
        (log.info if report.outcome.ok else log.error)("%s", report.summary())
        if not report.outcome.ok and outcome.ok:
            outcome.ok, outcome.exit_code = False, 1
            outcome.errors.append(report.summary())

    # -- one input --
    def _input(self, name: str, result: JobResult) -> Path:
        self._current = []
        self._stop.check()  # before the work of another input (probe, model set-up, hashing)
        p = self._prepare(name)
        joined = not self._to_join(p)
        if not joined:
            result.add_timing(name, "segments", self.driver.run_segments(p))
        return self._deliver(p, result, joined=joined)

    def _to_join(self, p: Prepared) -> bool:
        """Whether the input's output is still to be made (no joined output recorded, or not intact)."""
        joined = p.state.joined
        return not (joined and self.driver.intact(p.final, joined))

    def _deliver(self, p: Prepared, result: JobResult, *, joined: bool) -> Path:
        """Its segments all done: join them (unless `joined`), then upload and verify, or record the file."""
        state, name = p.state, p.name
        if not joined:
            self.driver.join(p)
        if self.spec.upload.enabled:
            self._upload(p, result)
        else:
            made = state.joined or {}
            result.record_output(
                name,
                OutputRecord(path=str(p.final), mode=self.spec.mode, size=made.get("size"), sha256=made.get("sha256")),
            )
        return p.final

    def _prepare(self, name: str) -> Prepared:
        spec = self.spec
        local = self._localise(name)
        info = probe(local)
        suffix = spec.suffix_for(name)
        options = spec.pipeline.run_options(progress=self.progress)
        # with an executor, this process only plans (reach, grid, encoder: on the CPU); its workers compute
        device = resolve_device("cpu" if self.executor else options.device)
        stages = self._make_stages()
        out_spec = source_spec(info, options.reader.keep_alpha)
        for stage in stages:
            out_spec = stage.setup(device, out_spec)
        enc = options.writer.encoder
        choice = resolve(
            enc,
            suffix=suffix,
            source_depth=out_spec.bit_depth,
            alpha=out_spec.alpha,
            source_pix_fmt=info.video.pix_fmt,
            # as the writer judges it (media.writer): an alpha a stage made is refused here, before any segment
            alpha_made=out_spec.alpha and not info.video.alpha,
        )
        input_sha = file_sha256(local)
        signature = {
            "stages": [s.signature() for s in stages],
            "encoder": {"codec": choice.codec, "pix_fmt": choice.pix_fmt, "options": choice.options},
            "encoder_threads": enc.threads,
            "container": suffix,
            "copy_streams": options.writer.copy_streams,
            "batch_size": options.reader.batch_size,
            "on_corrupt": options.reader.on_corrupt,
            "device": self.executor.device_type if self.executor else device.type,
            "segment_seconds": str(spec.segment_seconds),
            "versions": versions(),
        }
        key = checkpoint_key(input_sha, signature)
        stem = self._stems_of(name).file
        directory = spec.work_dir / "state" / f"{stem}-{key[:16]}"
        self._note_other_checkpoints(directory)
        state = InputState.open(directory, key=key, input_sha256=input_sha, signature=signature)
        final = spec.output_dir / f"{stem}_{spec.mode}{suffix}"
        self._current = [partial_path(final), directory]
        self._clean_temp(final, directory)
        return Prepared(
            name=name,
            local=local,
            info=info,
            stages=stages,
            out_spec=out_spec,
            options=options,
            choice=choice,
            state=state,
            suffix=suffix,
            final=final,
        )

    def _note_other_checkpoints(self, directory: Path) -> None:
        stem = directory.name.rsplit("-", 1)[0]
        others = (
            # same stem, another key (16 hex digits): the same input name with other parameters or bytes
            [d for d in directory.parent.glob(f"{stem}-{'?' * 16}") if d != directory and d.is_dir()]
            if directory.parent.is_dir()
            else []
        )
        for d in others:
            log.info("ignoring checkpoint %s: made for another input or other parameters (delete it to free space)", d)

    def _localise(self, name: str) -> Path:
        if not name.startswith("s3://"):
            return Path(name)
        bucket, key = parse_s3_url(name)
        storage = self._downloads.get(bucket)
        if storage is None:
            storage = S3Storage(self._settings(bucket), redactor=self.redactor)
            self._downloads[bucket] = storage
        dest_dir = self.spec.work_dir / "inputs"
        stems = self._stems_of(name)
        if stems.tagged:  # s3://b/d1/clip.mp4 and s3://b/d2/clip.mp4 would download to one local name
            dest_dir = dest_dir / stems.file
        head = storage.head(key, bucket=bucket)
        size = int(head.get("ContentLength", -1))
        dest = dest_dir / local_name_for_key(key)
        # what the local copy was downloaded from: reused only for the same object (ETag) at the same size
        source = {"url": name, "etag": head.get("ETag"), "size": size}
        sidecar = dest.with_name(f"{dest.name}.source.json")
        try:
            same = json.loads(sidecar.read_text()) == source and dest.stat().st_size == size
        except (OSError, ValueError):
            same = False
        if same:
            log.info("%s: already downloaded to %s", name, dest)
            return dest
        check_free_space({dest_dir: size}, f"downloading {name}")
        dest = storage.download(name, dest_dir)
        atomic.write_json(sidecar, source)
        return dest

    def _upload(self, p: Prepared, result: JobResult) -> None:
        up, state, storage = self.spec.upload, p.state, self.storage
        bucket = storage.settings.bucket
        digest = file_digest(p.final)
        previous = state.upload or {}
        key = previous.get("key")
        if previous.get("bucket") != bucket or not key or (up.object_key and key != up.object_key):
            stem = self._stems_of(p.name).key
            key = up.object_key or make_object_key(stem + p.suffix, self.spec.mode, ext=p.suffix, prefix=up.prefix)
            state.upload = {"bucket": bucket, "key": key}
            state.save()
        receipt: UploadReceipt | None = None
        if previous.get("receipt") and previous.get("key") == key and previous.get("bucket") == bucket:
            try:
                storage.verify_object(key, digest=digest, parts=int(previous["receipt"].get("parts") or 0))
                receipt = UploadReceipt(**previous["receipt"])
                log.info("%s: s3://%s/%s already uploaded and verified", p.name, bucket, key)
            except StorageError as e:
                log.warning("%s: earlier upload does not verify (%s); uploading again", p.name, e)
        if receipt is None:
            self._reached("upload")
            # parts of an upload a killed run left behind are invisible but billed
            storage.abort_incomplete_uploads(prefix=key)
            receipt = storage.upload_file(p.final, key, digest=digest)
            state.upload = {"bucket": bucket, "key": key, "receipt": asdict(receipt)}
            state.save()
        url, expires = storage.presign_get(key, up.presign_seconds)
        result.add_timing(p.name, "upload", receipt.seconds)
        result.record_upload(p.name, p.final, receipt, mode=self.spec.mode, url=url, expires_at=expires)

    # -- temp files --
    def _clean_temp(self, *paths: Path) -> None:
        """Remove what a killed run may have left: partial outputs and atomic-write temp files."""
        for path in paths:
            if path.is_dir():
                for leftover in (*path.glob(".*.vidpipe-partial*"), *path.glob(".*.tmp")):
                    self._remove(leftover)
            else:
                self._remove(partial_path(path))
                for leftover in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else ():
                    self._remove(leftover)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove temp file %s: %s", path, e.strerror or e)

    def _clean_input_temp(self) -> None:
        for path in getattr(self, "_current", []):
            if path.is_dir():
                self._clean_temp(path)
            else:
                self._remove(path)


def run_job(
    spec: JobSpec,
    *,
    env: Mapping[str, str] | None = None,
    progress: ProgressMode = "none",
    storage: S3Storage | None = None,
    stages: Callable[[], list[Stage]] | None = None,
    executor: SegmentExecutor | None = None,
) -> JobOutcome:
    """Run `spec`; see the module docstring. Raises UsageError for a job that cannot start (bad settings,
    missing credentials) and Interrupted on SIGINT/SIGTERM; other failures are in the outcome and the result
    JSON."""
    return JobRunner(spec, env=env, progress=progress, storage=storage, stages=stages, executor=executor).run()


__all__ = [
    "JobOutcome",
    "JobRunner",
    "check_free_space",
    "disk_full",
    "estimate_output_bytes",
    "expand_inputs",
    "run_job",
    "whole_file_reason",
]
