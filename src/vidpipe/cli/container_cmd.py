"""``vidpipe container``: the entrypoint of the vidpipe image (docker/Dockerfile, docs/deploy.md).

One job per container start, from the first of:

1. ``VIDPIPE_JOB``: a job spec inline (YAML or JSON) or the path of one (`jobs.spec.job_from_env`);
2. a config file: ``VIDPIPE_CONFIG``, else :data:`DEFAULT_CONFIG` where it exists. ``/workspace`` is where
   vast.ai and RunPod give a container its disk (RunPod mounts a network volume there; a file copied onto a
   vast.ai instance lands there), so a config put there needs no extra mount; ``docker run -v`` works too;
3. the environment alone (``VIDPIPE_INPUT``, ``VIDPIPE_<OPTION>``, the seed's ``B2_*``, ``AUTO_UPLOAD_B2``,
   ``UPLOAD_RESULT_JSON``, …), read by `jobs.spec.env_spec_doc` as ``vidpipe job run`` reads it.

A spec is the job spec of docs/jobs.md plus an optional ``container:`` section, which only this command reads:
``after: exit`` (the default: the container ends with the job's exit code) or ``after: idle`` (it stays up until
SIGTERM/SIGINT, so that a host which restarts an exited container, as a RunPod pod does, does not run the job
again and the outputs stay on its disk). ``VIDPIPE_AFTER`` sets it from the environment. The stop of the instance
is the job's ``auto_stop`` (``VIDPIPE_AUTO_STOP=1``): once the job has ended the runner hands over to the logic
of ``vidpipe monitor``, which stops the instance only when every upload is in the bucket as recorded, and leaves
its marker (``<result JSON>.stopped``). A start that finds that marker is an instance started again to be looked
at: the job is not run again (it would end in a stop at once) and ``after`` follows.

Before the job, one block of start-up diagnostics: where the job came from, versions, GPUs, the NVDEC/NVENC
codecs that open, free disk where the job writes, the bucket's pre-flight (the one the job runs again before its
first frame, which records a failure in the result JSON) and what happens after the job.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from ..errors import Interrupted, UsageError, VidpipeError
from ..jobs.secrets import Redactor, redacted_logs

# jobs.spec (YAML, the store client) is imported when a container starts: `vidpipe --help` and every other command
# start without it (tests/test_startup.py)
if TYPE_CHECKING:
    from ..jobs.spec import JobSpec

log = logging.getLogger("vidpipe.container")

DEFAULT_CONFIG: Final = Path("/workspace/config.yaml")
AFTER: Final = ("exit", "idle")
_CONTAINER_KEYS: Final = ("after",)


@dataclass(frozen=True, kw_only=True)
class ContainerJob:
    spec: JobSpec
    #: where the job came from, for the start-up block
    origin: str
    after: str = "exit"


def _container_section(doc: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The spec without its ``container:`` section, and ``after`` (the section > ``VIDPIPE_AFTER`` > exit)."""
    doc = dict(doc)
    section = doc.pop("container", None) or {}
    if not isinstance(section, Mapping):
        raise UsageError(f"job spec: container: must be a mapping of {', '.join(_CONTAINER_KEYS)}")
    unknown = sorted(set(section) - set(_CONTAINER_KEYS))
    if unknown:
        raise UsageError(f"job spec: container: unknown key {unknown[0]!r}; valid keys: {', '.join(_CONTAINER_KEYS)}")
    after = str(section.get("after") or env.get("VIDPIPE_AFTER") or "exit")
    if after not in AFTER:
        raise UsageError(f"invalid after {after!r} (container.after / VIDPIPE_AFTER); valid: {', '.join(AFTER)}")
    return doc, after


def load_container_job(env: Mapping[str, str] | None = None, *, default_config: Path = DEFAULT_CONFIG) -> ContainerJob:
    """The job of this container start (see the module docstring for the order of the sources)."""
    from ..jobs.spec import build_spec, env_spec_doc, job_from_env, read_spec_doc

    env = os.environ if env is None else env
    config = env.get("VIDPIPE_CONFIG", "").strip()
    if env.get("VIDPIPE_JOB", "").strip():
        doc, base = job_from_env(env["VIDPIPE_JOB"])
        origin = "VIDPIPE_JOB"
    elif config or default_config.is_file():
        path = Path(config) if config else default_config
        doc, base = read_spec_doc(path), path.resolve().parent
        origin = f"config {path}"
    else:
        doc, base = env_spec_doc(env)
        origin = "environment (VIDPIPE_INPUT, VIDPIPE_<OPTION>, B2_*)"
    doc, after = _container_section(doc, env)
    return ContainerJob(spec=build_spec(doc, base_dir=base, env=env), origin=origin, after=after)


# -- start-up diagnostics ----------------------------------------------------------------------------------


def _free(path: Path) -> str:
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    return f"{path}: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f}"


def _bucket_line(spec: JobSpec, env: Mapping[str, str], redactor: Redactor) -> str:
    up = spec.upload
    if not up.enabled:
        return "off (no upload: no sentinel, the monitor never stops this instance)"
    from ..jobs.storage import S3Settings, S3Storage

    where = f"s3://{up.bucket}/{up.prefix}"
    try:
        overrides: dict[str, Any] = {"bucket": up.bucket}
        overrides |= {"endpoint_url": up.endpoint} if up.endpoint else {}
        overrides |= {"region": up.region} if up.region else {}
        settings = S3Settings.from_env(env, **overrides)
        S3Storage(settings, redactor=redactor.with_secrets(settings.secret_values())).preflight(
            up.object_key.rpartition("/")[0] if up.object_key else up.prefix
        )
    except VidpipeError as e:
        return f"{where} FAILED: {redactor.redact(str(e))}"
    return f"{where} reachable (pre-flight: list, put, HEAD, delete ok)"


def _after_line(job: ContainerJob, env: Mapping[str, str]) -> str:
    a = job.spec.auto_stop
    then = "exit" if job.after == "exit" else "stay idle until SIGTERM"
    if not a.enabled:
        return f"{then} (auto-stop off)"
    from ..jobs.monitor import detect_provider, stop_command_for

    try:
        provider = a.provider or ("command" if a.command else detect_provider(env))
        argv = stop_command_for(provider, env=env, command=a.command or None)
    except UsageError as e:
        return f"auto-stop FAILED: {e}"
    when = "after any end" if a.stop_on_failure else "once every upload is verified"
    return f"monitor stops the instance {when} ({' '.join(argv)}{', dry run' if a.dry_run else ''}), then {then}"


def startup_report(job: ContainerJob, env: Mapping[str, str], redactor: Redactor) -> Iterator[str]:
    """The start-up block's lines (imports torch and PyAV: called once the job is known to be valid)."""
    from ..runtime.device import describe, resolve_device
    from ..runtime.doctor import gpu_lines, hardware_video
    from ..runtime.pipeline import versions

    spec = job.spec
    v = versions()
    yield f"job: from {job.origin}; {len(spec.inputs)} input(s): {', '.join(spec.inputs)[:200]}"
    yield f"mode {spec.mode}; output {spec.output_dir}; result {spec.result_json}; sentinel {spec.sentinel}"
    yield f"vidpipe {v['vidpipe']}, torch {v['torch']} (CUDA build {v['cuda']}), PyAV {v['av']} (FFmpeg {v['ffmpeg']})"
    yield from gpu_lines()
    try:
        yield f"device {spec.pipeline.device!r}: {describe(resolve_device(spec.pipeline.device))}"
    except VidpipeError as e:
        yield f"device {spec.pipeline.device!r}: FAILED: {e}"
    dec, enc, why = hardware_video()
    yield f"NVDEC: {', '.join(dec) or 'none' + why}"
    yield f"NVENC: {', '.join(enc) or 'none (encoding on the CPU)'}"
    yield f"disk: {_free(spec.output_dir)}; work {_free(spec.work_dir)}"
    yield f"bucket: {_bucket_line(spec, env, redactor)}"
    yield f"after the job: {_after_line(job, env)}"


def _print_block(lines: Iterator[str]) -> None:
    text = "\n".join(f"  {line}" for line in lines)
    sys.stdout.write(f"vidpipe container start-up\n{text}\n")
    sys.stdout.flush()


# -- the command -------------------------------------------------------------------------------------------


def stopped_marker(spec: JobSpec) -> Path | None:
    """The monitor's marker (`jobs.monitor`: ``<result>.stopped``) when this job's auto-stop has stopped the
    instance before: a vast.ai instance started again keeps its disk, and running the job again would end in a
    stop at once."""
    marker = spec.result_json.with_name(spec.result_json.name + ".stopped")
    return marker if spec.auto_stop.enabled and marker.is_file() else None


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """Plain timestamped lines on stderr: a container's log is a file, not a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name, level in (("vidpipe", logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO),
                        ("", logging.WARNING)):  # fmt: skip
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
    logging.getLogger("vidpipe").propagate = False


def _idle() -> None:
    """Wait for SIGTERM or SIGINT (`docker stop`, the host stopping the pod)."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    sys.stderr.write("container: idle (container.after: idle); outputs kept; SIGTERM ends it\n")
    sys.stderr.flush()
    try:
        while not stop.wait(3600):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def container(
    progress: Annotated[str, typer.Option(help="none | json (per segment)")] = "none",
    diagnostics: Annotated[bool, typer.Option(help="print the start-up block (GPU, codecs, disk, bucket)")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings only")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """The image's entrypoint: one job from VIDPIPE_JOB, a config file (VIDPIPE_CONFIG, /workspace/config.yaml) or
    the environment; start-up diagnostics; run, upload, result JSON, sentinel; auto-stop; exit or stay idle."""
    _setup_logging(quiet, verbose)
    env = dict(os.environ)
    redactor = Redactor.from_env(env)
    job: ContainerJob | None = None
    with redacted_logs(redactor):
        try:
            if progress not in ("none", "json"):
                raise UsageError(f"invalid progress mode {progress!r}; valid: none, json")
            job = load_container_job(env)
            done = stopped_marker(job.spec)
            if done is not None:
                # the instance was stopped after this job and started again, to look at it: no reason to stop again
                sys.stderr.write(
                    f"container: the job ended and this instance was stopped after it ({done}); not running it "
                    "again (delete that file to run the job again)\n"
                )
                if job.after == "idle":
                    _idle()
                return
            if diagnostics:
                _print_block(startup_report(job, env, redactor))
            from ..jobs.runner import run_job  # boto3 and the runtime: only once the job is valid
            from ..workers.job_executor import executor_for  # the spec's gpus/executor, as `job run`

            outcome = run_job(job.spec, env=env, progress=progress, executor=executor_for(job.spec))  # type: ignore[arg-type]
        except Interrupted as e:
            if job is not None and stopped_marker(job.spec) is not None:
                # the monitor's own stop ended this container (the platform sends SIGTERM): the job is done
                sys.stderr.write("container: the instance is stopping after the verified job\n")
                return
            sys.stderr.write(f"error: {redactor.redact(str(e))}\n")
            raise SystemExit(e.exit_code) from None
        except VidpipeError as e:
            log.debug("container job failed", exc_info=e)
            sys.stderr.write(f"error: {redactor.redact(str(e))}\n")
            raise SystemExit(e.exit_code) from None
    spec = job.spec
    sys.stderr.write(
        f"job {'succeeded' if outcome.ok else 'failed'}: {', '.join(map(str, outcome.outputs)) or 'nothing'}; "
        f"result {spec.result_json}; {'sentinel ' + str(spec.sentinel) if outcome.sentinel else 'no sentinel'}\n"
    )
    if job.after == "idle":
        _idle()
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)


__all__ = ["AFTER", "DEFAULT_CONFIG", "ContainerJob", "container", "load_container_job", "startup_report"]
