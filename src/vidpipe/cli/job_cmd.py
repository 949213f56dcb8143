"""``vidpipe job``: run a job (see vidpipe.jobs.runner) from a YAML spec, from options, or in container mode from
the environment alone; ``vidpipe job check`` validates a spec and prints what it resolves to.

``job run`` takes every stage and encoder option of ``vidpipe run`` under the same names, help texts and
defaults: they are copied from the ``run`` command's signature (`take_run_options`, which cli.app calls with
``run``'s stage options generated from the registry), so the two commands cannot drift apart. Options given on
the command line override the spec's values.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from ..errors import UsageError, VidpipeError
from ..jobs.secrets import Redactor, redacted_logs
from ..runtime.recipe import PipelineRecipe, choice

# jobs.spec (YAML, the store client, the monitor) is imported by the commands that read a spec: every other
# command, `vidpipe probe` among them, starts without it (tests/test_startup.py)
if TYPE_CHECKING:
    from ..jobs.spec import JobSpec

log = logging.getLogger("vidpipe.jobs")


def _job_options(
    ctx: typer.Context,
    spec: Annotated[
        Path | None, typer.Argument(help="job spec (YAML); omit it to use --input, or for container mode (env)")
    ] = None,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="input file, glob, directory or s3:// URL (repeatable)"),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="output directory")] = None,
    mode: Annotated[str | None, typer.Option(help="upscaled | interpolated | both | result (upload name)")] = None,
    upload: Annotated[
        bool | None, typer.Option("--upload/--no-upload", help="upload to S3/B2 (default: AUTO_UPLOAD_B2, B2_BUCKET)")
    ] = None,
    bucket: Annotated[str | None, typer.Option(help="bucket (default: $B2_BUCKET)")] = None,
    endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL (default: $B2_ENDPOINT)")] = None,
    key_prefix: Annotated[str | None, typer.Option(help="prefix of the uploaded object keys")] = None,
    container: Annotated[str | None, typer.Option(help="mp4 | mkv | mov | webm (default: the input's)")] = None,
    segment_seconds: Annotated[
        float | None, typer.Option(help="segment length for resume (0: none; default 120)")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="segments and checkpoints (default: OUTPUT/.vidpipe-work)")
    ] = None,
    result: Annotated[Path | None, typer.Option(help="result JSON (default: $UPLOAD_RESULT_JSON, …)")] = None,
    sentinel: Annotated[Path | None, typer.Option(help="sentinel file (default: $VIDPIPE_SENTINEL, …)")] = None,
    auto_stop: Annotated[
        bool, typer.Option("--auto-stop", help="stop this instance after the job once every upload is verified")
    ] = False,
    gpus: Annotated[
        str | None,
        typer.Option(help="all | N | 0,2: one worker process per GPU; cpu:N: N CPU workers (as vidpipe run --gpus)"),
    ] = None,
    executor: Annotated[str | None, typer.Option(help="local (worker processes) | ray (actors, one per GPU)")] = None,
    address: Annotated[str | None, typer.Option(help="executor ray: the cluster (auto | ray://host:port)")] = None,
    progress: Annotated[str, typer.Option(help="none | json | bar (per segment)")] = "none",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings only")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """The job's own options; make_job_app adds those of `vidpipe run`."""


_OWN = tuple(inspect.signature(_job_options).parameters)


def _given(ctx: click.Context, name: str) -> bool:
    # by name: typer may bring its own copy of click, whose ParameterSource is another enum
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _absolute(p: Path) -> str:
    return str(p.expanduser().resolve())


def overrides_from_options(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The spec document the command-line options stand for (only those given; paths made absolute)."""
    doc: dict[str, Any] = {}
    out: dict[str, Any] = {}

    def given(name: str) -> bool:
        return _given(ctx, name) and values.get(name) is not None

    if given("input"):
        doc["inputs"] = [
            v if v.startswith("s3://") else _absolute(Path(v)) + ("/" if v.endswith("/") else "")
            for v in values["input"]
        ]
    if given("output"):
        out["dir"] = _absolute(values["output"])
    for name, key in (("upload", "upload"), ("bucket", "bucket"), ("endpoint", "endpoint"), ("key_prefix", "prefix")):
        if given(name):
            out[key] = values[name]
    if given("container"):
        out["container"] = values["container"]
    if out:
        doc["output"] = out
    if given("mode"):
        doc["mode"] = values["mode"]
    if given("segment_seconds"):
        doc["segments"] = {"seconds": values["segment_seconds"]}
    for name in ("gpus", "executor", "address"):
        if given(name):
            doc[name] = values[name]
    for name, key in (("work_dir", "work_dir"), ("result", "result_json"), ("sentinel", "sentinel")):
        if given(name):
            doc[key] = _absolute(values[name])
    if values.get("auto_stop"):
        doc["auto_stop"] = {"enabled": True}
    pipeline = {name: values[name] for name in PipelineRecipe.field_names() if given(name)}
    if pipeline:
        doc["pipeline"] = pipeline
    return doc


def resolve_spec(ctx: click.Context, values: dict[str, Any]) -> JobSpec:
    """Spec file + options, options alone (--input), or container mode (environment) + options."""
    from ..jobs.spec import build_spec, env_spec_doc, merge_docs, read_spec_doc

    overrides = overrides_from_options(ctx, values)
    if values.get("spec") is not None:
        path: Path = values["spec"]
        doc, base = read_spec_doc(path), path.resolve().parent
    elif "inputs" in overrides:
        if "dir" not in overrides.get("output", {}):
            raise UsageError("--input needs -o/--output DIR (or give a job spec)")
        doc, base = {}, Path.cwd()
    else:
        doc, base = env_spec_doc()
    return build_spec(merge_docs(doc, overrides), base_dir=base)


def _setup_job_logging(setup_logging: Callable[[bool, bool], None], quiet: bool, verbose: bool) -> None:
    setup_logging(quiet, verbose)
    # Libraries (botocore, urllib3) log to the root logger: give it a handler too, so that their warnings pass
    # through the job's redaction filter instead of Python's bare last-resort handler.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)


def make_job_app(setup_logging: Callable[[bool, bool], None]) -> typer.Typer:
    """The `job` sub-app; `take_run_options` gives its `run` the stage/encoder options of `vidpipe run`."""
    app = typer.Typer(no_args_is_help=True, help="Jobs for rented GPUs: segments, resume, verified uploads, auto-stop.")

    def job_run(**values: Any) -> None:
        ctx: typer.Context = values.pop("ctx")
        _setup_job_logging(setup_logging, values["quiet"], values["verbose"])
        redactor = Redactor.from_env()
        # for what is logged outside the job itself (the runner adds the store's credentials while it runs)
        with redacted_logs(redactor):
            try:
                progress = choice(values["progress"], ("none", "json", "bar"), "progress mode")
                spec = resolve_spec(ctx, values)
                # imported here: the runner pulls in boto3, which no other command needs at start-up
                from ..jobs.runner import run_job
                from ..workers.job_executor import executor_for

                outcome = run_job(
                    spec,
                    progress="none" if values["quiet"] else progress,  # type: ignore[arg-type]
                    executor=executor_for(spec),
                )
            except VidpipeError as e:
                log.debug("job failed", exc_info=e)  # the traceback, redacted, with -v
                sys.stderr.write(f"error: {redactor.redact(str(e))}\n")
                raise SystemExit(e.exit_code) from None
        if not values["quiet"]:
            done = ", ".join(str(p) for p in outcome.outputs) or "nothing"
            sys.stderr.write(
                f"job {'succeeded' if outcome.ok else 'failed'}: {done}; result {spec.result_json}"
                + (f"; sentinel {spec.sentinel}" if outcome.sentinel else "; no sentinel")
                + "\n"
            )
        if outcome.exit_code:
            raise SystemExit(outcome.exit_code)

    job_run.__doc__ = (
        "Run a job: inputs (files, globs, directories, s3:// URLs) → segments (resumable) → joined output → "
        "verified upload → result JSON → sentinel."
    )
    app.command("run")(job_run)

    @app.command("check")
    def job_check(
        spec: Annotated[Path, typer.Argument(help="job spec (YAML)")],
    ) -> None:
        """Validate a job spec and print what it resolves to (no credentials are read or printed)."""
        from ..jobs.spec import build_spec, read_spec_doc

        try:
            js = build_spec(read_spec_doc(spec), base_dir=spec.resolve().parent)
        except VidpipeError as e:
            sys.stderr.write(f"error: {e}\n")
            raise SystemExit(e.exit_code) from None
        typer.echo(json.dumps(describe_spec(js), indent=2))

    return app


def take_run_options(job_app: typer.Typer, run_command: Callable[..., Any]) -> None:
    """Make `job run`'s signature its own options plus every recipe option of `run_command` (`vidpipe run`'s
    function, its signature already holding the registered stage options): the same names, help and defaults.
    Called again when the stage registry changed (cli.app.refresh_stage_options)."""
    job_run = next(c.callback for c in job_app.registered_commands if c.name == "run")
    assert job_run is not None
    own = list(inspect.signature(_job_options, eval_str=True).parameters.values())
    run_params = [
        p
        for name, p in inspect.signature(run_command, eval_str=True).parameters.items()
        if name in PipelineRecipe.field_names() and name not in _OWN
    ]
    signature = inspect.Signature([*own, *run_params])
    job_run.__signature__ = signature  # type: ignore[attr-defined]
    job_run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}


def describe_spec(spec: JobSpec) -> dict[str, Any]:
    up = spec.upload
    return {
        "inputs": list(spec.inputs),
        "mode": spec.mode,
        "pipeline": spec.pipeline.to_dict(),
        "output_dir": str(spec.output_dir),
        "container": spec.container or "as input",
        "upload": {"enabled": up.enabled, "bucket": up.bucket, "endpoint": up.endpoint, "prefix": up.prefix},
        "segment_seconds": float(spec.segment_seconds) if spec.segment_seconds else 0,
        "work_dir": str(spec.work_dir),
        "result_json": str(spec.result_json),
        "sentinel": str(spec.sentinel),
        "auto_stop": spec.auto_stop.enabled,
        "executor": spec.executor,
        "address": spec.address,
        "gpus": spec.gpus or "all visible",
    }


__all__ = ["describe_spec", "make_job_app", "overrides_from_options", "resolve_spec", "take_run_options"]
