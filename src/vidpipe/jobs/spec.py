"""Job specs: what `vidpipe job run` does, from a YAML file, from command-line options, or (in a container) from
the environment alone. All three become the same document and go through one validator (:func:`build_spec`),
whose errors name the field and list the valid keys or values.

A YAML spec (see examples/job.yaml and docs/jobs.md)::

    version: 1
    inputs: [clip.mp4, "clips/*.mkv", more_clips/, s3://bucket/raw/clip.mov]
    mode: both                    # upscaled | interpolated | both | result (default: what the pipeline runs)
    pipeline: {upscale: realesr-animevideov3-x2, interpolate: rife-hdv3, fps: 60}   # the options of `vidpipe run`
    output: {dir: out, container: mp4, upload: true, bucket: my-bucket, prefix: results}
    segments: {seconds: 120}      # 0: no segments (no resume inside an input)
    gpus: all                     # all | N | 0,2 | cpu:N: one worker process per GPU (as `vidpipe run --gpus`)
    executor: local               # local | ray (actors on a Ray cluster, one per GPU); address: auto | ray://…
    work_dir: out/.vidpipe-work
    result_json: out/result.json
    sentinel: out/DONE
    auto_stop: {enabled: true, provider: vast}

Precedence for every setting: the spec (or command-line option) > the environment > the default. Relative paths
in a YAML file are relative to the file. Credentials are read from the environment only (``B2_KEY``,
``B2_SECRET``); a spec that holds one is refused.

Container mode (no spec file, no ``--input``): ``VIDPIPE_JOB`` names a YAML spec or holds one inline; otherwise
``VIDPIPE_INPUT`` (inputs separated by spaces or newlines), ``VIDPIPE_OUTPUT_DIR`` (default ``/workspace/output``),
``VIDPIPE_MODE``, ``VIDPIPE_WORK_DIR``, ``VIDPIPE_SEGMENT_SECONDS``, ``VIDPIPE_KEY_PREFIX``, ``VIDPIPE_AUTO_STOP``
(1/0) and one ``VIDPIPE_<OPTION>`` per option of `vidpipe run` (``VIDPIPE_UPSCALE``, ``VIDPIPE_FPS``,
``VIDPIPE_ENCODER``, …). Uploads follow ``AUTO_UPLOAD_B2``/``B2_*``, the result JSON ``UPLOAD_RESULT_JSON`` and
the sentinel ``VIDPIPE_SENTINEL`` as in the seed's containers. The workers, in every mode, where the spec names
none: ``VIDPIPE_EXECUTOR`` (local | ray), ``VIDPIPE_ADDRESS`` (a Ray cluster), ``VIDPIPE_GPUS`` (all | N | 0,2 | cpu:N).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import yaml

from ..errors import UsageError
from ..runtime.recipe import PipelineRecipe
from .keys import MODES, parse_s3_url, validate_key
from .monitor import PROVIDERS
from .result import DEFAULT_RESULT_PATH, DEFAULT_SENTINEL
from .storage import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    DEFAULT_PRESIGN_SECONDS,
    MAX_PRESIGN_SECONDS,
    MIN_PART_SIZE,
    MiB,
    _parse_bool,
    upload_enabled_from_env,
)

SPEC_VERSION: Final = 1
#: output containers a job may write (the writer's muxers that hold our encoders' video)
CONTAINERS: Final = ("mp4", "mkv", "mov", "webm")
DEFAULT_CONTAINER: Final = "mp4"
#: long enough that the per-segment start-up (model setup, encoder warm-up, ~1 s) is noise, short enough that a
#: crash loses little
DEFAULT_SEGMENT_SECONDS: Final = Fraction(120)
#: models a mode stands for when the pipeline names none (the seed containers' defaults)
DEFAULT_UPSCALE: Final = "realesr-animevideov3-x4"
DEFAULT_INTERPOLATE: Final = "rife-hdv3"
DEFAULT_MATTE: Final = "rvm-mobilenetv3"
DEFAULT_MULTI: Final = 2
#: the seed containers' workspace; its result/sentinel paths are the defaults only where it exists
WORKSPACE: Final = Path("/workspace")
CONTAINER_OUTPUT_DIR: Final = WORKSPACE / "output"
#: the auto-stop monitor's bound after the job ended (it only has to read two files and run one command)
DEFAULT_STOP_TIMEOUT_S: Final = 300.0

_CREDENTIAL_NAME = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key|^b2_key$)", re.I)


@dataclass(frozen=True, kw_only=True)
class UploadSpec:
    enabled: bool = False
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    prefix: str = ""
    #: the object key for a job with one input; None: generated (`<stem>_<mode>_<UTC time>.<ext>`)
    object_key: str | None = None
    presign_seconds: int = DEFAULT_PRESIGN_SECONDS
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE


@dataclass(frozen=True, kw_only=True)
class AutoStopSpec:
    enabled: bool = False
    #: vast | runpod | command; None: command when `command` is given, else detected from the environment
    provider: str | None = None
    command: tuple[str, ...] = ()
    dry_run: bool = False
    stop_on_failure: bool = False
    timeout: float = DEFAULT_STOP_TIMEOUT_S


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    inputs: tuple[str, ...]
    output_dir: Path
    #: output container without the dot; None: the input's own when it is one of CONTAINERS, else mp4
    container: str | None = None
    mode: str = "result"
    pipeline: PipelineRecipe = field(default_factory=PipelineRecipe)
    upload: UploadSpec = field(default_factory=UploadSpec)
    #: None: one segment per input
    segment_seconds: Fraction | None = DEFAULT_SEGMENT_SECONDS
    work_dir: Path = Path(".vidpipe-work")
    result_json: Path = DEFAULT_RESULT_PATH
    sentinel: Path = DEFAULT_SENTINEL
    auto_stop: AutoStopSpec = field(default_factory=AutoStopSpec)
    #: local (worker processes on this host, `gpus`) | ray (actors on the cluster at `address`)
    executor: str = "local"
    address: str | None = None
    #: all | N | 0,2 | cpu:N, as `vidpipe run --gpus`; None: every visible GPU (one or none: in this process)
    gpus: str | None = None

    def suffix_for(self, input_name: str) -> str:
        if self.container:
            return "." + self.container
        own = Path(input_name.rsplit("/", 1)[-1]).suffix.lower().lstrip(".")
        return "." + (own if own in CONTAINERS else DEFAULT_CONTAINER)


# -- validation helpers ------------------------------------------------------------------------------------

_KIND_TEXT = {
    "str": "a string",
    "bool": "true or false",
    "int": "a whole number",
    "number": "a number",
    "str_list": "a list of strings",
}


def _fail(where: str, message: str) -> UsageError:
    return UsageError(f"job spec: {where}: {message}" if where else f"job spec: {message}")


def _check_value(where: str, value: Any, kind: str) -> Any:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "str_list": isinstance(value, list) and all(isinstance(v, str) and v for v in value),
    }[kind]
    if kind == "str" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads `fps: 60` or `tile: 256` as numbers; the options take them as text
    if not ok:
        raise _fail(where, f"must be {_KIND_TEXT[kind]}, got {value!r}")
    return value


class _Section:
    """One mapping of the spec: unknown keys are refused with the list of valid ones."""

    def __init__(self, doc: Any, where: str, kinds: Mapping[str, str]) -> None:
        if doc is None:
            doc = {}
        if not isinstance(doc, Mapping):
            raise _fail(where, f"must be a mapping of {', '.join(kinds)}; got {type(doc).__name__}")
        for k in doc:
            if not isinstance(k, str):
                raise _fail(where, f"key {k!r} is not a string")
            if _CREDENTIAL_NAME.search(k):
                raise _fail(
                    where,
                    f"{k!r}: credentials are read from the environment (B2_KEY, B2_SECRET), never from a job spec",
                )
            if k not in kinds:
                raise _fail(where, f"unknown key {k!r}; valid keys: {', '.join(kinds)}")
        self.doc, self.where, self.kinds = doc, where, kinds

    def has(self, name: str) -> bool:
        return self.doc.get(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        value = self.doc.get(name)
        if value is None:
            return default
        return _check_value(f"{self.where}.{name}" if self.where else name, value, self.kinds[name])


def _recipe_kinds() -> dict[str, str]:
    """The value kind of each `vidpipe run` option (`pipeline.<name>`, `VIDPIPE_<NAME>`): every registered stage
    option (stages/registry.py) and every run setting, as PipelineRecipe types them."""
    kind = {bool: "bool", int: "int", float: "number", str: "str"}
    return {name: kind[t] for name, t in PipelineRecipe.field_types().items()}


def _path(value: str, base: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def _check_input(where: str, value: str, base: Path) -> str:
    """s3:// URLs are checked and kept; paths (files, globs, directories) become absolute from `base`."""
    if value.startswith("s3://"):
        try:
            parse_s3_url(value)
        except UsageError as e:
            raise _fail(where, str(e)) from None
        return value
    return str(_path(value, base)) + ("/" if value.endswith("/") else "")


# -- the validator -----------------------------------------------------------------------------------------

_TOP: Final = {
    "version": "int",
    "inputs": "str_list",
    "mode": "str",
    "pipeline": "mapping",
    "output": "mapping",
    "segments": "mapping",
    "work_dir": "str",
    "result_json": "str",
    "sentinel": "str",
    "auto_stop": "mapping",
    "executor": "str",
    "address": "str",
    "gpus": "str",
}
#: `executor:` values, as `vidpipe run --executor` takes them
EXECUTORS: Final = ("local", "ray")
_OUTPUT: Final = {
    "dir": "str",
    "container": "str",
    "upload": "bool",
    "bucket": "str",
    "endpoint": "str",
    "region": "str",
    "prefix": "str",
    "object_key": "str",
    "presign_seconds": "int",
    "multipart_threshold_mb": "number",
    "part_size_mb": "number",
}
_SEGMENTS: Final = {"seconds": "number"}
_AUTO_STOP: Final = {
    "enabled": "bool",
    "provider": "str",
    "command": "str_list",
    "dry_run": "bool",
    "stop_on_failure": "bool",
    "timeout": "number",
}


def build_spec(
    doc: Any, *, base_dir: Path, env: Mapping[str, str] | None = None, workspace: Path = WORKSPACE
) -> JobSpec:
    """Validate a spec document (parsed YAML, or the same shape built from options or the environment)."""
    env = os.environ if env is None else env
    if isinstance(doc, Mapping) and isinstance(doc.get("inputs"), str):
        doc = {**doc, "inputs": [doc["inputs"]]}  # one input may be given as a plain string
    top = _Section(doc, "", _TOP)  # the mapping-valued keys are read by their own _Section
    version = top.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise _fail("version", f"unsupported version {version}; valid: {SPEC_VERSION}")
    inputs = top.get("inputs")
    if not inputs:
        raise _fail("inputs", "at least one input is required (files, globs, directories or s3:// URLs)")
    inputs = tuple(_check_input(f"inputs[{i}]", v, base_dir) for i, v in enumerate(inputs))

    out = _Section(top.doc.get("output"), "output", _OUTPUT)
    out_dir = out.get("dir")
    if out_dir is None:
        raise _fail("output.dir", "required: the local directory for the results")
    output_dir = _path(out_dir, base_dir)
    container = out.get("container")
    if container is not None:
        container = container.lower().lstrip(".")
        if container not in CONTAINERS:
            raise _fail("output.container", f"invalid container {container!r}; valid: {', '.join(CONTAINERS)}")
    upload = _upload_spec(out, inputs, env)

    recipe, mode = _pipeline(top, env)

    seg = _Section(top.doc.get("segments"), "segments", _SEGMENTS)
    seconds = seg.get("seconds", DEFAULT_SEGMENT_SECONDS)
    if seconds < 0:
        raise _fail("segments.seconds", f"must be ≥ 0 (0: no segments), got {seconds}")
    segment_seconds = Fraction(str(seconds)).limit_denominator(1000) if seconds else None

    work_dir = _path(top.get("work_dir"), base_dir) if top.has("work_dir") else output_dir / ".vidpipe-work"
    result_json, sentinel = _result_paths(top, base_dir, output_dir, env, workspace)
    executor, address, gpus = _workers(top, env)
    return JobSpec(
        inputs=inputs,
        output_dir=output_dir,
        container=container,
        mode=mode,
        pipeline=recipe,
        upload=upload,
        segment_seconds=segment_seconds,
        work_dir=work_dir,
        result_json=result_json,
        sentinel=sentinel,
        auto_stop=_auto_stop(top),
        executor=executor,
        address=address,
        gpus=gpus,
    )


def _workers(top: _Section, env: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """`executor`, `address` and `gpus` (each: the spec, else ``VIDPIPE_EXECUTOR`` / ``VIDPIPE_ADDRESS`` /
    ``VIDPIPE_GPUS``, else local, none, every visible GPU); the values are checked where the workers start
    (`vidpipe.workers.devices`), against the GPUs of the host that runs the job."""
    executor = top.get("executor") or env.get("VIDPIPE_EXECUTOR") or "local"
    where = "executor" if top.has("executor") else "VIDPIPE_EXECUTOR"
    if executor not in EXECUTORS:
        raise _fail(where, f"invalid executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if top.has("address") and executor != "ray":
        raise _fail("address", f"{top.get('address')!r} is a Ray cluster's address; it goes with executor: ray")
    # the environment's address serves a Ray job only (a spec that says `executor: local` ignores it)
    address = (top.get("address") or env.get("VIDPIPE_ADDRESS") or None) if executor == "ray" else None
    gpus = top.get("gpus") or env.get("VIDPIPE_GPUS") or None
    if gpus is not None and executor == "ray" and gpus.strip().startswith("cpu:"):
        raise _fail("gpus", f"{gpus}: cpu:N starts local CPU worker processes; Ray's actors take GPUs (gpus: N)")
    return executor, address, gpus


def _upload_spec(out: _Section, inputs: tuple[str, ...], env: Mapping[str, str]) -> UploadSpec:
    enabled = out.get("upload")
    if enabled is None:
        try:
            enabled = upload_enabled_from_env(env)
        except UsageError as e:
            raise _fail("output.upload", f"not set, and the environment says: {e}") from None
    bucket = out.get("bucket") or env.get("B2_BUCKET") or None
    if enabled and not bucket:
        raise _fail("output.bucket", "uploads are on but no bucket is named (set output.bucket or B2_BUCKET)")
    prefix = out.get("prefix", "").strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except UsageError as e:
            raise _fail("output.prefix", str(e)) from None
    object_key = out.get("object_key")
    if object_key is not None:
        if len(inputs) != 1 or any(ch in inputs[0] for ch in "*?[") or inputs[0].endswith("/"):
            raise _fail("output.object_key", "applies to a job with exactly one input file; use prefix instead")
        try:
            validate_key(object_key)
        except UsageError as e:
            raise _fail("output.object_key", str(e)) from None
    presign = out.get("presign_seconds", DEFAULT_PRESIGN_SECONDS)
    if not 1 <= presign <= MAX_PRESIGN_SECONDS:
        raise _fail("output.presign_seconds", f"{presign} is out of range: 1 .. {MAX_PRESIGN_SECONDS} (7 days)")
    threshold = round(out.get("multipart_threshold_mb", DEFAULT_MULTIPART_THRESHOLD / MiB) * MiB)
    part = round(out.get("part_size_mb", DEFAULT_PART_SIZE / MiB) * MiB)
    if threshold < 0:
        raise _fail("output.multipart_threshold_mb", f"must be ≥ 0, got {threshold / MiB:g}")
    if part < MIN_PART_SIZE:
        raise _fail("output.part_size_mb", f"must be ≥ {MIN_PART_SIZE // MiB} (the S3/B2 minimum), got {part / MiB:g}")
    return UploadSpec(
        enabled=bool(enabled),
        bucket=bucket,
        endpoint=out.get("endpoint") or env.get("B2_ENDPOINT") or None,
        region=out.get("region") or env.get("B2_REGION") or None,
        prefix=prefix,
        object_key=object_key,
        presign_seconds=presign,
        multipart_threshold=threshold,
        part_size=part,
    )


def _model_stages(recipe: PipelineRecipe) -> str:
    """`upscale: X, interpolate: None`: each registered model stage and the model the recipe gives it."""
    from ..stages.registry import STAGES

    values = recipe.to_dict()
    return ", ".join(f"{n}: {values[e.model_option]}" for n, e in STAGES.items() if e.model_option)


def _pipeline(top: _Section, env: Mapping[str, str]) -> tuple[PipelineRecipe, str]:
    section = _Section(top.doc.get("pipeline"), "pipeline", _recipe_kinds())
    values = {name: section.get(name) for name in section.kinds if section.has(name)}
    recipe = PipelineRecipe(**values)
    mode = top.get("mode")
    if mode is not None and mode not in MODES:
        raise _fail("mode", f"invalid mode {mode!r}; valid: {', '.join(MODES)}")
    if mode is None:
        mode = recipe.mode
    elif mode != "result" and recipe.mode == "result":
        # no model stage named: the mode stands for its default models, as in the seed's containers
        wants_up, wants_interp = mode in ("upscaled", "both"), mode in ("interpolated", "both")
        recipe = replace(
            recipe,
            upscale=DEFAULT_UPSCALE if wants_up else None,
            interpolate=DEFAULT_INTERPOLATE if wants_interp else None,
            multi=DEFAULT_MULTI if wants_interp and recipe.fps is None and recipe.multi is None else recipe.multi,
            matte=DEFAULT_MATTE if mode == "matted" else None,
        )
    elif mode != "result" and mode != recipe.mode:
        raise _fail(
            "mode",
            f"{mode!r} does not match the pipeline, which makes {recipe.mode!r} ({_model_stages(recipe)}); "
            f"valid: {', '.join(MODES)}, or leave mode out",
        )
    try:
        recipe.check()
    except UsageError as e:
        raise _fail("pipeline", str(e).replace("--", "")) from None
    if recipe.encoder == "png":
        # segments are joined by stream copy into one container; an image sequence is a directory
        raise _fail("pipeline.encoder", "png writes image sequences; a job writes one container (ffv1 is lossless)")
    return recipe, mode


def _result_paths(
    top: _Section, base_dir: Path, output_dir: Path, env: Mapping[str, str], workspace: Path
) -> tuple[Path, Path]:
    in_container = workspace.is_dir()
    if top.has("result_json"):
        result = _path(top.get("result_json"), base_dir)
    elif env.get("UPLOAD_RESULT_JSON"):
        result = Path(env["UPLOAD_RESULT_JSON"])
    else:
        result = DEFAULT_RESULT_PATH if in_container else output_dir / "vidpipe_result.json"
    if top.has("sentinel"):
        sentinel = _path(top.get("sentinel"), base_dir)
    elif env.get("VIDPIPE_SENTINEL"):
        sentinel = Path(env["VIDPIPE_SENTINEL"])
    else:
        sentinel = DEFAULT_SENTINEL if in_container else output_dir / DEFAULT_SENTINEL.name
    return result, sentinel


def _auto_stop(top: _Section) -> AutoStopSpec:
    raw = top.doc.get("auto_stop")
    if isinstance(raw, bool):
        raw = {"enabled": raw}  # `auto_stop: true` is short for {enabled: true}
    sec = _Section(raw, "auto_stop", _AUTO_STOP)
    provider = sec.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise _fail("auto_stop.provider", f"invalid provider {provider!r}; valid: {', '.join(PROVIDERS)}")
    command = tuple(sec.get("command", []))
    if provider == "command" and not command:
        raise _fail("auto_stop.command", "provider 'command' needs the stop command as a list of arguments")
    timeout = sec.get("timeout", DEFAULT_STOP_TIMEOUT_S)
    if timeout <= 0:
        raise _fail("auto_stop.timeout", f"must be > 0 seconds, got {timeout}")
    return AutoStopSpec(
        enabled=sec.get("enabled", sec.doc != {}),
        provider=provider,
        command=command,
        dry_run=sec.get("dry_run", False),
        stop_on_failure=sec.get("stop_on_failure", False),
        timeout=float(timeout),
    )


# -- sources -----------------------------------------------------------------------------------------------


def read_spec_doc(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"job spec {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read job spec {path}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"job spec {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"job spec {path} must be a mapping (inputs:, output:, pipeline:, …)")
    return doc


def load_spec(path: Path, *, env: Mapping[str, str] | None = None, workspace: Path = WORKSPACE) -> JobSpec:
    path = Path(path)
    return build_spec(read_spec_doc(path), base_dir=path.resolve().parent, env=env, workspace=workspace)


def merge_docs(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins key by key; nested mappings are merged, lists replaced."""
    merged = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = merge_docs(merged[k], v)
        else:
            merged[k] = v
    return merged


def _env_value(name: str, text: str, kind: str) -> Any:
    try:
        if kind == "bool":
            return _parse_bool(name, text)
        if kind == "int":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not {_KIND_TEXT[kind]}") from None
    return text


def job_from_env(value: str) -> tuple[dict[str, Any], Path]:
    """``VIDPIPE_JOB``: the path of a spec file, or the spec itself inline (YAML, or JSON, which is YAML), as a
    container's environment can carry it without a file. An existing file wins; relative paths of an inline spec
    start from the working directory."""
    text = value.strip()
    if "\n" not in text and Path(text).is_file():
        path = Path(text)
        return read_spec_doc(path), path.resolve().parent
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"VIDPIPE_JOB is neither a spec file nor a valid inline YAML/JSON spec: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(
            f"VIDPIPE_JOB={text[:80]!r} is neither an existing spec file nor an inline YAML/JSON mapping "
            "(inputs:, output:, pipeline:, …)"
        )
    return doc, Path.cwd()


def env_spec_doc(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], Path]:
    """The spec document of container mode and the directory its relative paths start from."""
    env = os.environ if env is None else env
    if env.get("VIDPIPE_JOB", "").strip():
        return job_from_env(env["VIDPIPE_JOB"])
    inputs = env.get("VIDPIPE_INPUT", "").split()
    if not inputs:
        raise UsageError(
            "no job given: pass a spec file, or --input IN -o DIR, or (container mode) set VIDPIPE_JOB to a job "
            "spec or VIDPIPE_INPUT to the inputs"
        )
    pipeline = {
        name: _env_value(f"VIDPIPE_{name.upper()}", env[f"VIDPIPE_{name.upper()}"], kind)
        for name, kind in _recipe_kinds().items()
        if env.get(f"VIDPIPE_{name.upper()}")
    }
    doc: dict[str, Any] = {
        "inputs": inputs,
        "output": {"dir": env.get("VIDPIPE_OUTPUT_DIR") or str(CONTAINER_OUTPUT_DIR)},
        "pipeline": pipeline,
    }
    if env.get("VIDPIPE_MODE"):
        doc["mode"] = env["VIDPIPE_MODE"]
    if env.get("VIDPIPE_WORK_DIR"):
        doc["work_dir"] = env["VIDPIPE_WORK_DIR"]
    if env.get("VIDPIPE_KEY_PREFIX"):
        doc["output"]["prefix"] = env["VIDPIPE_KEY_PREFIX"]
    if env.get("VIDPIPE_SEGMENT_SECONDS"):
        doc["segments"] = {"seconds": _env_value("VIDPIPE_SEGMENT_SECONDS", env["VIDPIPE_SEGMENT_SECONDS"], "number")}
    if env.get("VIDPIPE_AUTO_STOP"):
        doc["auto_stop"] = {"enabled": _env_value("VIDPIPE_AUTO_STOP", env["VIDPIPE_AUTO_STOP"], "bool")}
    return doc, Path.cwd()


__all__ = [
    "CONTAINERS",
    "DEFAULT_SEGMENT_SECONDS",
    "AutoStopSpec",
    "JobSpec",
    "UploadSpec",
    "build_spec",
    "env_spec_doc",
    "job_from_env",
    "load_spec",
    "merge_docs",
    "read_spec_doc",
]
