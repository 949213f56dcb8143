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
from vidpipe.stages.registry import STAGES, run_order, stage_options


def test_every_stage_entry_names_its_stage_and_its_options_are_recipe_options():
    recipe = PipelineRecipe()
    settings = {f.name for f in dataclasses.fields(PipelineRecipe)} - {"stage_values"}
    owned = [o.name for e in STAGES.values() for o in e.options]
    assert len(owned) == len(set(owned)), "an option name is registered twice"
    for name, e in STAGES.items():
        stage_cls = getattr(__import__(e.module, fromlist=["_"]), name.capitalize())
        assert stage_cls.name == name
        assert stage_cls.unit == e.unit
        for o in e.options:
            assert o.name not in settings, f"{name}: option {o.name} is also a run setting"
            assert getattr(recipe, o.name) == recipe.to_dict()[o.name] == o.default, o.name
        for s in e.shared:
            assert s in PipelineRecipe.field_names()
    assert list(stage_options())[: len(owned)] != [] and set(owned) <= set(stage_options())
    assert PipelineRecipe.field_names() == (*stage_options(), *sorted(settings, key=list(recipe.to_dict()).index))


def test_recipe_takes_stage_options_as_keywords_and_refuses_unknown_ones():
    recipe = PipelineRecipe(upscale="m", fps="60", encoder="ffv1")
    assert (recipe.upscale, recipe.fps, recipe.encoder, recipe.dtype) == ("m", "60", "ffv1", "auto")
    again = dataclasses.replace(recipe, interpolate="r", encoder="h264")
    assert (again.upscale, again.interpolate, again.fps, again.encoder) == ("m", "r", "60", "h264")
    assert again != recipe and dataclasses.replace(again, interpolate=None, encoder="ffv1") == recipe
    listed = (
        r"valid: cuts, dewatermark, dewatermark_window, pad, matte, downsample, matte_output, background, layout, "
        r"dtype, vsr, vsr_window, vsr_overlap, "
        r"upscale, "
    )
    with pytest.raises(TypeError, match=r"unknown option\(s\) upscal; " + listed):
        PipelineRecipe(upscal="m")
    with pytest.raises(AttributeError, match="upscal"):
        _ = recipe.upscal


def test_an_option_s_minimum_is_checked_by_the_recipe_as_by_the_cli():
    assert registry.option("multi").min == 2
    with pytest.raises(UsageError, match=r"--multi must be ≥ 2, got 1"):
        PipelineRecipe(interpolate="m", multi=1).stages()


def test_scene_cut_choices_are_the_stage_s_own():
    from vidpipe.stages.interpolate import SCENE_CUT_MODES

    assert registry.option("scene_cut").choices == SCENE_CUT_MODES


def test_rife_kernels_choices_are_the_stage_s_own_and_reach_it():
    from vidpipe.stages.interpolate import KERNELS

    assert registry.option("rife_kernels").choices == KERNELS
    assert PipelineRecipe(interpolate="m", multi=2, rife_kernels="fast").stages()[0].kernels == "fast"  # type: ignore[attr-defined]
    # auto (tc on CUDA in fp16/bf16) unless asked; the fused Triton path stays opt-in (docs/benchmarks.md, issue 24)
    assert PipelineRecipe(interpolate="m", multi=2).stages()[0].kernels == "auto"  # type: ignore[attr-defined]
    assert PipelineRecipe(interpolate="m", multi=2, rife_kernels="tc").stages()[0].kernels == "tc"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="rife-kernels"):
        PipelineRecipe(interpolate="m", multi=2, rife_kernels="fused").stages()


def test_resize_and_pad_are_built_from_their_entries():
    chain = PipelineRecipe(pad=16, resize="64x-1", resize_method="area").stages()
    assert [s.name for s in chain] == ["pad", "resize"]
    assert chain[0].multiple == 16 and chain[1].method == "area"  # type: ignore[attr-defined]
    assert PipelineRecipe(square_pixels=True).stages()[0].name == "resize"


def test_order_generalises_to_any_list_of_registered_stages():
    # cuts runs first by default: it must see the source frames
    tail = ["resize", "crop"]
    assert run_order("upscale,interpolate") == [
        "cuts", "dewatermark", "pad", "matte", "vsr", "upscale", "interpolate", *tail
    ]  # fmt: skip
    assert run_order("interpolate,upscale") == [
        "cuts", "dewatermark", "pad", "matte", "vsr", "interpolate", "upscale", *tail
    ]  # fmt: skip
    assert run_order("resize,pad") == [
        "cuts", "dewatermark", "resize", "matte", "vsr", "upscale", "interpolate", "pad", "crop"
    ]  # fmt: skip
    # matting sees the source's frames, before any upscale (cheaper; RVM's downsample rule is for them)
    assert run_order("upscale,matte") == [
        "cuts", "dewatermark", "pad", "upscale", "vsr", "matte", "interpolate", *tail
    ]  # fmt: skip
    # video SR too: it is trained on the source's own low-resolution frames
    assert run_order("upscale,vsr") == [
        "cuts", "dewatermark", "pad", "matte", "upscale", "vsr", "interpolate", *tail
    ]  # fmt: skip
    chain = PipelineRecipe(pad=16, resize="64x-1", order="resize,pad").stages()
    assert [s.name for s in chain] == ["resize", "pad"]
    # crop after resize by default: its W:H:X:Y are in the resized frames, as FFmpeg's scale,crop reads
    assert [s.name for s in PipelineRecipe(crop="8:8:0:0", resize="64x-1").stages()] == ["resize", "crop"]
    assert run_order("crop,resize")[-2:] == ["crop", "resize"]


@pytest.mark.parametrize("order", ["a,b", "upscale,upscale", "upscale,warp"])
def test_unknown_or_repeated_order_names_are_usage_errors_listing_the_stages(order):
    with pytest.raises(
        UsageError, match=r"valid: upscale,interpolate, interpolate,upscale .*pad, matte, vsr, upscale, "
    ):
        PipelineRecipe(order=order).stages()


def test_bad_choice_is_caught_by_the_registry_before_building():
    with pytest.raises(UsageError, match=r"invalid resize method 'cubic'; valid: bicubic, bilinear, area"):
        PipelineRecipe(resize="64x64", resize_method="cubic").stages()


def test_run_cli_order_unknown_stage_exits_2(cli, make):
    clip = make("reg.mkv", frames=2, size=(64, 48))
    res = cli("run", str(clip), "-o", str(clip.with_name("o.mkv")), "--pad", "16", "--order", "pad,warp")
    assert res.returncode == 2
    assert "unknown: warp" in res.stderr and "pad, matte, vsr, upscale, interpolate, resize" in res.stderr


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
    with pytest.raises(UsageError, match=r"stage 'resize' takes no model; valid: matte, vsr, upscale, interpolate"):
        doctor._stage("resize", "x")
    stages = "cuts, dewatermark, pad, matte, vsr, upscale, interpolate, resize"
    with pytest.raises(UsageError, match=rf"unknown stage 'warp'; valid: {stages}"):
        doctor._stage("warp", "x")


def _run_params(command: str = "run") -> dict:
    import typer

    from vidpipe.cli.app import app

    group = typer.main.get_command(app)
    cmd = group.commands["job"].commands["run"] if command == "job" else group.commands["run"]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("command", ["run", "job"])
def test_run_cli_offers_every_registered_option_as_its_entry_declares_it(command):
    params = _run_params(command)
    for o in stage_options().values():
        assert o.name in params, f"vidpipe {command} run has no {o.flag}"
        p = params[o.name]
        assert p.opts == [o.flag] and not p.secondary_opts, o.name  # a bool is a plain flag, as --compile was
        assert p.default == o.default, o.name
        assert p.help == o.help, o.name
        assert p.type_descriptor.annotation is o.type, o.name  # type: ignore[attr-defined]
        assert p.is_flag == (o.type is bool), o.name
        assert p.min == o.min, o.name  # type: ignore[attr-defined]
    assert all(name in params["order"].help for name in STAGES)


def test_run_cli_refuses_a_value_under_an_option_s_minimum(cli, make):
    clip = make("reg.mkv", frames=2, size=(64, 48))
    res = cli("run", str(clip), "-o", str(clip.with_name("m.mkv")), "--interpolate", "rife-hdv3", "--multi", "1")
    assert res.returncode == 2 and "--multi" in res.stderr and "greater than or equal to 2" in res.stderr


def test_bench_costs_measures_each_model_on_its_registered_cost_subject():
    from vidpipe.bench.costs import subjects

    got = subjects(["realesr-animevideov3-x2"], ["rife-hdv3"], "fp32")
    assert [s.label for s in got] == ["upscale realesr-animevideov3-x2", "interpolate rife-hdv3 ×2"]
    up, interp = (s.factory() for s in got)
    assert up.name == "upscale" and up.tile_request == 0  # type: ignore[attr-defined]  # whole frames
    assert interp.name == "interpolate" and interp.multi == 2  # type: ignore[attr-defined]


def test_job_spec_fields_and_upload_modes_come_from_the_registry():
    from vidpipe.jobs.keys import MODES
    from vidpipe.jobs.spec import _recipe_kinds

    kinds = _recipe_kinds()
    types = PipelineRecipe.field_types()
    for e in STAGES.values():
        assert e.mode_label is None or e.mode_label in MODES
    for o in stage_options().values():
        assert types[o.name] is o.type, o.name
        assert kinds[o.name] == {bool: "bool", int: "int", float: "number", str: "str"}[o.type]
    assert (kinds["crf"], kinds["lossless"], kinds["encoder"]) == ("int", "bool", "str")  # run settings: annotations
    assert set(kinds) == set(PipelineRecipe.field_names())
    assert PipelineRecipe(upscale="m").mode == "upscaled"
    assert PipelineRecipe(interpolate="m").mode == "interpolated"
    assert PipelineRecipe(upscale="m", interpolate="m").mode == "both"
    assert PipelineRecipe(pad=8).mode == "result"
