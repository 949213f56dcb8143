"""Job specs: the example validates, errors name the field and list valid values, precedence spec > env >
default, container mode from the environment, and `job run` takes exactly the stage options of `run`."""

from __future__ import annotations

import inspect
from fractions import Fraction
from pathlib import Path

import pytest
import typer

from calibration import scaled
from vidpipe.cli.app import app, run_cmd
from vidpipe.cli.job_cmd import resolve_spec
from vidpipe.errors import UsageError
from vidpipe.jobs.spec import (
    DEFAULT_INTERPOLATE,
    DEFAULT_MULTI,
    DEFAULT_SEGMENT_SECONDS,
    build_spec,
    env_spec_doc,
    load_spec,
)
from vidpipe.runtime.recipe import PipelineRecipe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "job.yaml"
NO_ENV: dict[str, str] = {}


def _spec(doc: dict, tmp_path: Path, env: dict[str, str] | None = None, workspace: Path | None = None):
    return build_spec(doc, base_dir=tmp_path, env=env or NO_ENV, workspace=workspace or tmp_path / "no-workspace")


def _base(**extra: object) -> dict:
    return {"inputs": ["in.mp4"], "output": {"dir": "out"}, **extra}


def test_example_job_validates():
    spec = load_spec(EXAMPLE, env=NO_ENV)
    assert len(spec.inputs) == 4 and spec.inputs[-1] == "s3://my-bucket/raw/clip.mov"
    assert spec.inputs[2].endswith("/more/")  # a directory stays a directory
    assert spec.mode == "both"
    assert spec.pipeline.upscale == "realesr-animevideov3-x2" and spec.pipeline.fps == "60"  # YAML's 60 → "60"
    assert spec.upload.enabled and spec.upload.bucket == "my-bucket" and spec.upload.prefix == "results"
    assert spec.upload.multipart_threshold == 64 * 1024 * 1024
    assert spec.segment_seconds == Fraction(120)
    assert spec.sentinel == Path("/workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY")
    assert spec.auto_stop.enabled and spec.auto_stop.provider == "vast"
    assert spec.suffix_for("/x/clip.mkv") == ".mp4"  # container: mp4 wins over the input's own


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_base(outputs={}), r"unknown key 'outputs'; valid keys: version, inputs, mode, pipeline, output"),
        ({"inputs": ["a"], "output": {"dir": "o", "buckit": "b"}}, r"output: unknown key 'buckit'; valid keys: dir,"),
        (
            _base(pipeline={"upscal": "x"}),
            r"pipeline: unknown key 'upscal'; valid keys: cuts, dewatermark, dewatermark_window, pad, matte, "
            r"downsample, matte_output, background, "
            r"layout, dtype, vsr, vsr_window, vsr_overlap, upscale, outscale",
        ),
        (_base(pipeline={"encoder": "h266"}), r"invalid encoder 'h266'; valid: auto, h264, hevc"),
        (_base(pipeline={"encoder": "png"}), r"pipeline.encoder: png writes image sequences"),
        (_base(pipeline={"order": "a,b"}), r"invalid order 'a,b'; valid: upscale,interpolate, interpolate,upscale"),
        (_base(pipeline={"interpolate": "rife-hdv3"}), r"interpolate needs exactly one of fps or multi"),
        (_base(pipeline={"batch_size": "8"}), r"pipeline.batch_size: must be a whole number, got '8'"),
        (_base(mode="upscale"), r"invalid mode 'upscale'; valid: upscaled, interpolated, both, result"),
        ({"inputs": ["a"], "output": {"dir": "o", "upload": "yes"}}, r"output.upload: must be true or false"),
        ({"inputs": ["a"], "output": {"dir": "o", "container": "avi"}}, r"valid: mp4, mkv, mov, webm"),
        ({"inputs": ["a"], "output": {"dir": "o", "upload": True}}, r"uploads are on but no bucket"),
        ({"inputs": ["a"], "output": {"dir": "o", "part_size_mb": 1}}, r"part_size_mb: must be ≥ 5"),
        ({"inputs": [], "output": {"dir": "o"}}, r"inputs: at least one input is required"),
        ({"inputs": ["a"]}, r"output.dir: required"),
        ({"inputs": ["s3://Bad_Bucket/k"], "output": {"dir": "o"}}, r"inputs\[0\]: invalid bucket name"),
        (_base(segments={"seconds": -1}), r"segments.seconds: must be ≥ 0"),
        (_base(auto_stop={"provider": "aws"}), r"invalid provider 'aws'; valid: vast, runpod, command"),
        (_base(version=2), r"unsupported version 2; valid: 1"),
        ({"inputs": ["a", "b"], "output": {"dir": "o", "object_key": "k.mp4"}}, r"exactly one input file"),
    ],
)
def test_errors_name_the_field_and_list_valid_values(tmp_path, doc, expected):
    with pytest.raises(UsageError, match=expected):
        _spec(doc, tmp_path)


@pytest.mark.parametrize("field", ["secret_key", "access_key", "b2_key", "password"])
def test_credentials_in_a_spec_are_refused(tmp_path, field):
    with pytest.raises(UsageError, match="credentials are read from the environment"):
        _spec({"inputs": ["a"], "output": {"dir": "o", field: "x"}}, tmp_path)


def test_mode_alone_picks_default_models_and_mismatch_is_refused(tmp_path):
    spec = _spec(_base(mode="interpolated"), tmp_path)
    assert spec.pipeline.interpolate == DEFAULT_INTERPOLATE and spec.pipeline.multi == DEFAULT_MULTI
    assert spec.pipeline.upscale is None and spec.pipeline.matte is None
    matted = _spec(_base(mode="matted"), tmp_path)
    assert (matted.pipeline.matte, matted.pipeline.upscale, matted.pipeline.interpolate) == (
        "rvm-mobilenetv3",
        None,
        None,
    )
    assert matted.pipeline.mode == "matted"
    assert _spec(_base(pipeline={"resize": "64x48"}), tmp_path).mode == "result"
    assert _spec(_base(pipeline={"interpolate": "rife-hdv3", "fps": 50}), tmp_path).mode == "interpolated"
    with pytest.raises(UsageError, match="'upscaled' does not match the pipeline, which makes 'interpolated'"):
        _spec(_base(mode="upscaled", pipeline={"interpolate": "rife-hdv3", "multi": 2}), tmp_path)


def test_precedence_spec_then_environment_then_default(tmp_path):
    env = {
        "AUTO_UPLOAD_B2": "1",
        "B2_BUCKET": "env-bucket",
        "B2_ENDPOINT": "http://127.0.0.1:9",
        "UPLOAD_RESULT_JSON": "/r/result.json",
        "VIDPIPE_SENTINEL": "/r/DONE",
    }
    from_env = _spec(_base(), tmp_path, env)
    assert from_env.upload.enabled and from_env.upload.bucket == "env-bucket"
    assert from_env.upload.endpoint == "http://127.0.0.1:9"
    assert (from_env.result_json, from_env.sentinel) == (Path("/r/result.json"), Path("/r/DONE"))
    doc = _base(result_json="res.json", sentinel="done")
    doc["output"] |= {"upload": False, "bucket": "spec-bucket"}
    from_spec = _spec(doc, tmp_path, env)
    assert not from_spec.upload.enabled and from_spec.upload.bucket == "spec-bucket"
    assert (from_spec.result_json, from_spec.sentinel) == (tmp_path / "res.json", tmp_path / "done")
    # no environment, no workspace: beside the output; in a seed container (/workspace exists): the seed's paths
    plain = _spec(_base(), tmp_path)
    assert plain.result_json.parent == plain.output_dir == tmp_path / "out"
    assert plain.work_dir == tmp_path / "out" / ".vidpipe-work"
    assert plain.segment_seconds == DEFAULT_SEGMENT_SECONDS and not plain.upload.enabled
    seed = _spec(_base(), tmp_path, workspace=tmp_path)
    assert seed.sentinel == Path("/workspace/VASTAI_PIPELINE_COMPLETED_SUCCESSFULLY")


def test_container_mode_from_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {
        "VIDPIPE_INPUT": "a.mp4  s3://bucket-x/b.mkv\nc/",
        "VIDPIPE_INTERPOLATE": "rife-hdv3",
        "VIDPIPE_FPS": "60000/1001",
        "VIDPIPE_BATCH_SIZE": "4",
        "VIDPIPE_COPY_STREAMS": "0",
        "VIDPIPE_SEGMENT_SECONDS": "30",
        "VIDPIPE_OUTPUT_DIR": str(tmp_path / "o"),
    }
    doc, base = env_spec_doc(env)
    spec = build_spec(doc, base_dir=base, env=env, workspace=tmp_path / "none")
    assert spec.inputs == (str(tmp_path / "a.mp4"), "s3://bucket-x/b.mkv", str(tmp_path / "c") + "/")
    assert spec.mode == "interpolated" and spec.pipeline.fps == "60000/1001"
    assert spec.pipeline.batch_size == 4 and spec.pipeline.copy_streams is False
    assert spec.segment_seconds == 30
    with pytest.raises(UsageError, match="VIDPIPE_BATCH_SIZE='x' is not a whole number"):
        env_spec_doc({**env, "VIDPIPE_BATCH_SIZE": "x"})
    with pytest.raises(UsageError, match="set VIDPIPE_JOB to a job spec or VIDPIPE_INPUT"):
        env_spec_doc({})
    job = tmp_path / "job.yaml"
    job.write_text("inputs: [x.mp4]\noutput: {dir: o}\n")
    doc, base = env_spec_doc({"VIDPIPE_JOB": str(job)})
    assert build_spec(doc, base_dir=base, env={}).inputs == (str(tmp_path / "x.mp4"),)


def test_bad_yaml_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [a\noutput: {")
    with pytest.raises(UsageError, match="is not valid YAML"):
        load_spec(bad, env=NO_ENV)
    with pytest.raises(UsageError, match="not found"):
        load_spec(tmp_path / "missing.yaml", env=NO_ENV)


def _job_run_context(args: list[str]) -> tuple[typer.Context, dict]:
    command = typer.main.get_command(app).commands["job"].commands["run"]  # type: ignore[attr-defined]
    ctx = command.make_context("run", args)
    return ctx, dict(ctx.params)


def test_job_run_takes_the_options_of_run_and_they_override_the_spec(tmp_path):
    run_params = inspect.signature(run_cmd).parameters
    job_cmd = typer.main.get_command(app).commands["job"].commands["run"]  # type: ignore[attr-defined]
    job_params = {p.name: p for p in job_cmd.params}
    for name in PipelineRecipe.field_names():
        assert name in job_params, name
        assert job_params[name].default == run_params[name].default, name
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("inputs: [in.mp4]\noutput: {dir: out}\npipeline: {resize: 64x48, encoder: ffv1}\n")
    ctx, values = _job_run_context([str(spec_file), "--encoder", "h264", "--segment-seconds", "5"])
    spec = resolve_spec(ctx, values)
    assert spec.pipeline.encoder == "h264"  # given on the command line: wins
    assert spec.pipeline.resize == "64x48"  # not given: the spec's value stays
    assert spec.segment_seconds == 5
    ctx, values = _job_run_context(["-i", str(tmp_path / "a.mp4"), "--fps", "30", "--interpolate", "rife-hdv3"])
    with pytest.raises(UsageError, match="--input needs -o/--output DIR"):
        resolve_spec(ctx, values)


def test_the_cli_starts_without_boto3():
    """Only jobs touch S3: every other command (and a GPU machine without boto3) starts without importing it."""
    import subprocess
    import sys

    code = "import sys, vidpipe.cli.app; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 0, proc.stderr[-2000:]
