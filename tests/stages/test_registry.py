"""The stage registry (stages/registry.py): one entry per stage drives the recipe, `--order`, the CLI's options,
job specs and the contract suite."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from vidpipe.errors import UsageError
from vidpipe.runtime.recipe import PipelineRecipe
from vidpipe.stages import registry
from vidpipe.stages.registry import STAGES, run_order


def test_every_stage_entry_names_its_stage_and_its_options_are_recipe_fields():
    fields = {f.name: f for f in dataclasses.fields(PipelineRecipe)}
    for name, e in STAGES.items():
        stage_cls = getattr(__import__(e.module, fromlist=["_"]), name.capitalize())
        assert stage_cls.name == name
        assert stage_cls.unit == e.unit
        for o in e.options:
            assert o.name in fields, f"{name}: option {o.name} is no PipelineRecipe field"
            assert fields[o.name].default == o.default, o.name
        for s in e.shared:
            assert s in fields


def test_scene_cut_choices_are_the_stage_s_own():
    from vidpipe.stages.interpolate import SCENE_CUT_MODES

    assert registry.option("scene_cut").choices == SCENE_CUT_MODES


def test_resize_and_pad_are_built_from_their_entries():
    chain = PipelineRecipe(pad=16, resize="64x-1", resize_method="area").stages()
    assert [s.name for s in chain] == ["pad", "resize"]
    assert chain[0].multiple == 16 and chain[1].method == "area"  # type: ignore[attr-defined]
    assert PipelineRecipe(square_pixels=True).stages()[0].name == "resize"


def test_order_generalises_to_any_list_of_registered_stages():
    # cuts runs first by default: it must see the source frames
    assert run_order("upscale,interpolate") == ["cuts", "pad", "upscale", "interpolate", "resize"]
    assert run_order("interpolate,upscale") == ["cuts", "pad", "interpolate", "upscale", "resize"]
    assert run_order("resize,pad") == ["cuts", "resize", "upscale", "interpolate", "pad"]
    chain = PipelineRecipe(pad=16, resize="64x-1", order="resize,pad").stages()
    assert [s.name for s in chain] == ["resize", "pad"]


@pytest.mark.parametrize("order", ["a,b", "upscale,upscale", "upscale,warp"])
def test_unknown_or_repeated_order_names_are_usage_errors_listing_the_stages(order):
    with pytest.raises(UsageError, match=r"valid: upscale,interpolate, interpolate,upscale .*pad, upscale, "):
        PipelineRecipe(order=order).stages()


def test_bad_choice_is_caught_by_the_registry_before_building():
    with pytest.raises(UsageError, match=r"invalid resize method 'cubic'; valid: bicubic, bilinear, area"):
        PipelineRecipe(resize="64x64", resize_method="cubic").stages()


def test_run_cli_order_unknown_stage_exits_2(cli, make):
    clip = make("reg.mkv", frames=2, size=(64, 48))
    res = cli("run", str(clip), "-o", str(clip.with_name("o.mkv")), "--pad", "16", "--order", "pad,warp")
    assert res.returncode == 2
    assert "unknown: warp" in res.stderr and "pad, upscale, interpolate, resize" in res.stderr


def test_registry_imports_neither_torch_nor_a_stage_module():
    code = (
        "import sys, vidpipe.stages.registry as r; "
        "bad = [m for m in sys.modules if m == 'torch' or m in {e.module for e in r.STAGES.values()}]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_doctor_lists_every_registered_stage_and_sizes_stages_through_the_registry():
    from vidpipe.runtime import doctor

    lines = list(doctor.stage_lines())
    for name, e in STAGES.items():
        line = next(ln for ln in lines if ln.strip().startswith(f"stage {name}:"))
        assert all(o.flag in line for o in e.options)
    assert doctor._stage("interpolate", "rife-hdv3").name == "interpolate"
    with pytest.raises(UsageError, match=r"stage 'resize' takes no model; valid: upscale, interpolate"):
        doctor._stage("resize", "x")
    with pytest.raises(UsageError, match=r"unknown stage 'matte'; valid: cuts, pad, upscale, interpolate, resize"):
        doctor._stage("matte", "x")


def test_run_cli_offers_every_registered_option_with_its_default_and_help():
    import typer

    from vidpipe.cli.app import app

    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    params = {p.name: p for p in run.params}
    for e in STAGES.values():
        for o in e.options:
            assert o.name in params, f"vidpipe run has no {o.flag}"
            assert params[o.name].default == o.default, o.name
            assert params[o.name].help == o.help, o.name
    assert all(name in params["order"].help for name in STAGES)


def test_bench_costs_measures_each_model_on_its_registered_cost_subject():
    from vidpipe.bench.costs import subjects

    got = subjects(["realesr-animevideov3-x2"], ["rife-hdv3"], "fp32")
    assert [s.label for s in got] == ["upscale realesr-animevideov3-x2", "interpolate rife-hdv3 ×2"]
    up, interp = (s.factory() for s in got)
    assert up.name == "upscale" and up.tile_request == 0  # type: ignore[attr-defined]  # whole frames
    assert interp.name == "interpolate" and interp.multi == 2  # type: ignore[attr-defined]


def test_job_spec_fields_and_upload_modes_come_from_the_registry():
    import typing

    from vidpipe.jobs.keys import MODES
    from vidpipe.jobs.spec import _recipe_kinds

    kinds = _recipe_kinds()
    hints = typing.get_type_hints(PipelineRecipe)
    for e in STAGES.values():
        assert e.mode_label is None or e.mode_label in MODES
        for o in e.options:
            assert o.type in (typing.get_args(hints[o.name]) or (hints[o.name],)), o.name  # annotation agrees
            assert kinds[o.name] == {bool: "bool", int: "int", float: "number", str: "str"}[o.type]
    assert PipelineRecipe(upscale="m").mode == "upscaled"
    assert PipelineRecipe(interpolate="m").mode == "interpolated"
    assert PipelineRecipe(upscale="m", interpolate="m").mode == "both"
    assert PipelineRecipe(pad=8).mode == "result"
