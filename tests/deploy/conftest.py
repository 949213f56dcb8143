"""Fixtures for tests/deploy: the session's SeaweedFS S3 server of tests/jobs (never moto: it accepts what a real
store refuses), a clean environment for a container, and fake instance-stop programs that record their call."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.conftest import bucket, one_thread, s3_server  # noqa: F401  (fixtures, re-exported for this folder)


@pytest.fixture(scope="module")
def clip(make: Callable[..., Path]) -> Path:
    """10 frames of 64×48 H.264 at 25 fps: a whole job on the CPU in seconds."""
    return make("deploy.mp4", size=(64, 48), frames=10)


@pytest.fixture
def stop_bin(tmp_path: Path) -> tuple[Path, Path]:
    """(bin directory, log): `vastai` and `runpodctl` there append their arguments to the log, one call a line —
    the instance-stop commands of jobs.monitor, faked."""
    bin_dir, record = tmp_path / "bin", tmp_path / "stop-calls.log"
    bin_dir.mkdir()
    for name in ("vastai", "runpodctl"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nprintf "{name} %s\\n" "$*" >> "{record}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir, record
