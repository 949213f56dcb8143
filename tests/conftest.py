"""Shared fixtures: clips generated at test time with FFmpeg lavfi sources (nothing committed), real clips from
Debian's opencv-doc fetched once into the cache, and a runner for the `vidpipe` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vidpipe.media.synth import ClipSpec, make_clip

#: every CLI call in tests is bounded: a hang is a failure, never a stuck CI
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make(clip_dir: Path) -> Callable[..., Path]:
    """make(name, **ClipSpec fields) -> path; each distinct name is generated once per session."""
    made: dict[str, Path] = {}

    def _make(name: str, **fields: object) -> Path:
        if name not in made:
            made[name] = make_clip(clip_dir / name, ClipSpec(**fields))  # type: ignore[arg-type]
        return made[name]

    return _make


def run_cli(
    *args: str, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
