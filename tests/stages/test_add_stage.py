"""Issue 15, item 2: a new stage is its own file plus one registry entry. A stage registered here, with no other
edit, is offered by `vidpipe run` and `vidpipe job run`, built into the chain of a real run, taken by job specs
(YAML and environment) and carried by the recipe."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vidpipe.cli import app as cli_app
from vidpipe.frames import FrameBatch
from vidpipe.jobs.spec import build_spec, env_spec_doc, read_spec_doc
from vidpipe.runtime.recipe import PipelineRecipe
from vidpipe.stages.base import Stage
from vidpipe.stages.registry import STAGES, OptionSpec, StageEntry, Values

#: every Mark the factory built, to see what the run did with it
BUILT: list[Mark] = []


class Mark(Stage):
    """Frames pass unchanged; it counts them and puts its label in the manifest."""

    name = "mark"

    def __init__(self, label: str) -> None:
        self.label, self.frames = label, 0

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.frames += len(batch)
        return batch

    def signature(self) -> dict[str, object]:
        return {"stage": self.name, "label": self.label}


def _mark(values: Values) -> Stage:
    BUILT.append(Mark(values["mark_label"]))
    return BUILT[-1]


ENTRY = StageEntry(
    name="mark",
    module=__name__,
    task="geometry",
    unit="frame",
    wanted=lambda v: v.get("mark_label") is not None,
    build=_mark,
    options=(OptionSpec("mark_label", str, None, "label frames with this (a test stage)"),),
)


@pytest.fixture
def mark_registered() -> Iterator[None]:
    """`mark` in the registry (the one entry a new stage adds); the CLI re-reads it as the app does at import."""
    STAGES["mark"] = ENTRY
    cli_app.refresh_stage_options()
    BUILT.clear()
    try:
        yield
    finally:
        del STAGES["mark"]
        cli_app.refresh_stage_options()


def _params(*path: str) -> dict[str, object]:
    cmd = typer.main.get_command(cli_app.app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}  # type: ignore[attr-defined]


def test_a_registered_stage_s_option_is_offered_by_run_and_job_run(mark_registered: None) -> None:
    res = CliRunner().invoke(cli_app.app, ["run", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "--mark-label" in ln)
    assert "label frames with this (a test stage)" in line
    assert "mark_label" in _params("job", "run")


def test_the_option_is_gone_again_once_the_entry_is(mark_registered: None) -> None:
    del STAGES["mark"]
    cli_app.refresh_stage_options()
    assert "mark_label" not in _params("run") and "mark_label" not in _params("job", "run")
    assert "mark_label" not in PipelineRecipe.field_names()
    STAGES["mark"] = ENTRY  # for the fixture to remove


def test_run_with_the_option_builds_the_stage_into_the_chain(
    mark_registered: None, make: Callable[..., Path], tmp_path: Path
) -> None:
    clip = make("add_stage.mkv", frames=5, size=(64, 48))
    out = tmp_path / "marked.mkv"
    args = ["run", str(clip), "-o", str(out), "--mark-label", "hello", "--pad", "16", "--device", "cpu", "-q"]
    res = CliRunner().invoke(cli_app.app, args)
    assert res.exit_code == 0, res.output
    assert [(m.label, m.frames) for m in BUILT] == [("hello", 5)]
    manifest = json.loads(out.with_name(out.name + ".json").read_text())
    assert manifest["stages"] == [
        {"stage": "pad", "multiple": 16, "crop_back": True},
        ENTRY.build({"mark_label": "hello"}).signature(),
    ]
    # `--order` names the new stage like any other
    assert PipelineRecipe(mark_label="x", pad=16, order="mark,pad").to_dict()["order"] == "mark,pad"
    assert [s.name for s in PipelineRecipe(mark_label="x", pad=16, order="mark,pad").stages()] == ["mark", "pad"]


def test_a_job_spec_takes_the_option_from_yaml_options_and_environment(mark_registered: None, tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("inputs: [in.mp4]\noutput: {dir: out}\npipeline: {mark_label: from-yaml, encoder: ffv1}\n")
    spec = build_spec(read_spec_doc(spec_file), base_dir=tmp_path)
    assert spec.pipeline.mark_label == "from-yaml" and spec.pipeline.encoder == "ffv1"
    assert [(s.name, s.signature()["label"]) for s in spec.pipeline.stages()] == [("mark", "from-yaml")]

    doc, base = env_spec_doc({"VIDPIPE_INPUT": "in.mp4", "VIDPIPE_MARK_LABEL": "from-env"})
    assert build_spec(doc, base_dir=base, workspace=tmp_path / "none").pipeline.mark_label == "from-env"

    from vidpipe.cli.job_cmd import resolve_spec

    command = typer.main.get_command(cli_app.app).commands["job"].commands["run"]  # type: ignore[attr-defined]
    ctx = command.make_context("run", [str(spec_file), "--mark-label", "from-option"])
    assert resolve_spec(ctx, dict(ctx.params)).pipeline.mark_label == "from-option"  # the option wins


def test_the_recipe_carries_the_option(mark_registered: None) -> None:
    assert "mark_label" in PipelineRecipe.field_names()
    assert PipelineRecipe().mark_label is None
    recipe = PipelineRecipe(mark_label="r", upscale="m")
    assert recipe.to_dict()["mark_label"] == "r" and recipe.stage_values["mark_label"] == "r"
    assert PipelineRecipe.field_types()["mark_label"] is str
    assert recipe.mode == "upscaled"  # a stage without a model leaves the upload label to the model stages


def test_an_option_the_command_declares_itself_keeps_its_own_parameter() -> None:
    """A stage option also written by hand as a parameter (as a branch merged from before the registry drove the
    CLI may have it) does not break the app: the hand-written one is used, test_registry checks it agrees."""
    from vidpipe.cli.stage_options import give_stage_options, own_parameters

    def command(output: str, pad: int | None = None, **stage_values: object) -> None:
        """A command with `pad` by hand."""

    give_stage_options(command, own_parameters(command), after="output")
    params = list(command.__signature__.parameters.values())  # type: ignore[attr-defined]
    names = [p.name for p in params]
    assert names.count("pad") == 1 and names[0] == "output" and "upscale" in names
    assert next(p for p in params if p.name == "pad").annotation == int | None  # the hand-written one
