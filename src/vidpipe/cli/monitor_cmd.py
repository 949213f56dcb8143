"""``vidpipe monitor``: stop the instance once the job's uploads are verified (see vidpipe.jobs.monitor), and
still in the bucket as uploaded: every object the result JSON records is HEADed first, with the job's store
credentials (``B2_KEY``, ``B2_SECRET``; ``B2_ENDPOINT`` where the result names no endpoint). Without them it
refuses to start, unless ``--no-verify-bucket`` says to trust the result JSON alone.

Mount either way::

    app.add_typer(monitor_cmd.app, name="monitor")      # the sub-app runs on its own callback
    app.command("monitor")(monitor_cmd.monitor)         # or the plain function
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vidpipe.errors import UsageError, VidpipeError
from vidpipe.jobs.secrets import Redactor, install_log_redaction

# the monitor and the store client are imported when the command runs: every other command starts without them
if TYPE_CHECKING:
    from vidpipe.jobs.monitor import ObjectCheck
    from vidpipe.jobs.storage import S3Storage

app = typer.Typer(
    add_completion=False,
    subcommand_metavar="",  # a group only so that add_typer mounts it as `vidpipe monitor`
    help="Stop the instance once every upload is verified.",
)


def env_bucket_check(redactor: Redactor, env: Mapping[str, str] | None = None) -> ObjectCheck:
    """A bucket check with the store's credentials from ``B2_*`` (UsageError when they are missing)."""
    from vidpipe.jobs.monitor import bucket_check
    from vidpipe.jobs.storage import S3Settings, S3Storage

    env = os.environ if env is None else env
    missing = [name for name in ("B2_KEY", "B2_SECRET") if not env.get(name)]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} not set: the monitor HEADs every uploaded object before it stops the instance "
            "and needs the job's store credentials (B2_KEY, B2_SECRET, B2_ENDPOINT); pass --no-verify-bucket to "
            "trust the result JSON alone"
        )
    storages: dict[tuple[str, str | None], S3Storage] = {}

    def storage_for(bucket: str, endpoint: str | None) -> S3Storage:
        if (bucket, endpoint) not in storages:
            overrides = {"bucket": bucket} | ({"endpoint_url": endpoint} if endpoint else {})
            storages[bucket, endpoint] = S3Storage(S3Settings.from_env(env, **overrides), redactor=redactor)
        return storages[bucket, endpoint]

    return bucket_check(storage_for)


class Provider(StrEnum):
    vast = "vast"
    runpod = "runpod"
    command = "command"


@app.callback(invoke_without_command=True)
def monitor(
    result: Annotated[
        Path | None,
        typer.Option(help="Result JSON to watch (default: $UPLOAD_RESULT_JSON, else the seed's path)."),
    ] = None,
    sentinel: Annotated[
        Path | None,
        typer.Option(
            help="Sentinel file (default: $VIDPIPE_SENTINEL, else /workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY)."
        ),
    ] = None,
    provider: Annotated[
        Provider | None,
        typer.Option(
            help="How to stop: vast, runpod or command (default: command with --stop-command, "
            "else vast if CONTAINER_ID is set, runpod if RUNPOD_POD_ID is)."
        ),
    ] = None,
    stop_command: Annotated[
        str | None,
        typer.Option(
            "--stop-command",
            help="Program and arguments that stop the instance, split like a POSIX shell would split them "
            "but run WITHOUT a shell (no pipes, variables or globbing). Implies --provider command.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Log what would be stopped; never run the stop command.")] = False,
    stop_on_failure: Annotated[bool, typer.Option(help="Also stop when the job failed or the timeout passed.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 30.0,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (default: wait as long as the job runs).")
    ] = None,
    stop_attempts: Annotated[int, typer.Option(help="Attempts of the stop command before giving up.")] = 5,
    verify_bucket: Annotated[
        bool,
        typer.Option(
            help="HEAD every uploaded object and compare size and sha256 with the result JSON before stopping "
            "(needs B2_KEY, B2_SECRET); --no-verify-bucket trusts the result JSON alone."
        ),
    ] = True,
) -> None:
    """Wait for the job's result JSON and sentinel, then stop this instance (once)."""
    from vidpipe.jobs.monitor import MonitorConfig, detect_provider, run_monitor, stop_command_for
    from vidpipe.jobs.result import result_path_from_env, sentinel_path_from_env

    try:
        argv: list[str] | None = None
        if stop_command is not None:
            try:
                argv = shlex.split(stop_command)
            except ValueError as e:
                raise UsageError(f"--stop-command cannot be split into arguments: {e}") from e
            if provider not in (None, Provider.command):
                raise UsageError("--stop-command goes with --provider command (or no --provider)")
            chosen = "command"
        else:
            chosen = provider.value if provider else detect_provider()
        config = MonitorConfig(
            result_path=result or result_path_from_env(),
            sentinel_path=sentinel or sentinel_path_from_env(),
            stop_command=tuple(stop_command_for(chosen, command=argv)),
            dry_run=dry_run,
            stop_on_failure=stop_on_failure,
            interval=interval,
            timeout=timeout,
            stop_attempts=stop_attempts,
        )
        redactor = Redactor.from_env()
        check = env_bucket_check(redactor) if verify_bucket else None
        flt = install_log_redaction(redactor)
        try:
            report = run_monitor(config, redactor=redactor, check=check)
        finally:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(flt)
    except VidpipeError as e:
        typer.echo(f"error: {e}", err=True)
        # SystemExit, not typer.Exit: with standalone_mode=False click returns typer.Exit's code instead of
        # exiting, and a caller that ignores the return value would exit 0.
        raise SystemExit(e.exit_code) from None
    typer.echo(report.summary(), err=not report.outcome.ok)
    if not report.outcome.ok:
        raise SystemExit(1)


__all__ = ["Provider", "app", "env_bucket_check", "monitor"]
