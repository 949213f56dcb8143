"""The fast suite's forked CLI runs (tests/cli_fork.py) answer as `python -m vidpipe` does: exit code, stdout,
stderr, the caller's environment and working directory; past the time limit the run is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli_fork
from vidpipe.errors import InputError, InputNotFoundError, UsageError

pytestmark = pytest.mark.skipif(not cli_fork.forked(), reason="CLI runs are not forked here (VIDPIPE_TEST_CLI)")


def _fresh(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", *args], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),  # exit 0, stdout
        ("run", "missing.mp4", "-o", "o.mkv"),  # a vidpipe error: one line, its exit code (the path is relative)
        ("run", "--no-such-option"),  # a click error
    ],
)
def test_forked_run_answers_as_a_fresh_interpreter(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "COLUMNS": "400"}
    fresh = _fresh(*args, env=env, cwd=tmp_path)
    forked = cli_fork.run_forked(args, env=env, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode in (0, InputNotFoundError.exit_code, UsageError.exit_code)


def test_forked_run_sees_the_callers_environment_and_directory(make, tmp_path: Path, monkeypatch) -> None:
    # a relative input found only from the caller's directory, refused by a pixel cap set for this run alone
    (tmp_path / "clip.mkv").write_bytes(make("fork-cap.mkv", size=(64, 48), frames=2).read_bytes())
    monkeypatch.chdir(tmp_path)
    capped = cli_fork.run_forked(
        ["run", "clip.mkv", "-o", "o.mkv"], env={**os.environ, "VIDPIPE_MAX_PIXELS": "100"}, timeout=120
    )
    assert capped.returncode == InputError.exit_code and "64x48" in capped.stderr, capped.stderr
    assert not (tmp_path / "o.mkv").exists()
    assert "VIDPIPE_MAX_PIXELS" not in os.environ  # the run's environment stayed in the run


def test_a_run_past_its_limit_is_killed() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        cli_fork.run_forked(["--version"], env=dict(os.environ), timeout=0)
