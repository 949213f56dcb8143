"""Issue 24, item 1: what `vidpipe --help` and `vidpipe probe FILE` import. Neither needs torch (probe only needs
PyAV), the S3 client, OpenCV or the job-spec reader; each is run in a fresh interpreter that reports which of
those it loaded (docs/benchmarks.md has the start-up times against `python -c "import torch"`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from calibration import scaled

#: modules a light command must not load (torch: seconds; boto3/botocore: the store client; cv2; yaml: job specs)
HEAVY = ("torch", "boto3", "botocore", "cv2", "yaml")
#: reported too, to show the report sees what a command does load: probe reads the file with PyAV
PROBE_NEEDS = "av"

_REPORT = """
import json, sys
from vidpipe.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
sys.stderr.write("LOADED " + json.dumps(sorted(m for m in {names} if m in sys.modules)) + "\\n")
"""


def _loaded(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    code = _REPORT.format(names=repr((*HEAVY, PROBE_NEEDS, "rich")))
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stderr.splitlines() if x.startswith("LOADED "))
    return r, json.loads(line.removeprefix("LOADED "))


@pytest.mark.parametrize("args", [["--help"], ["probe", "--help"]])
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    r, loaded = _loaded(*args)
    assert "Usage" in r.stdout
    assert not set(loaded) & set(HEAVY), loaded
    assert PROBE_NEEDS not in loaded  # help does not even open PyAV


def test_probe_loads_pyav_only(make: Callable[..., Path]) -> None:
    clip = make("startup_probe.mkv", size=(64, 48), frames=4)
    r, loaded = _loaded("probe", str(clip))
    assert "video:" in r.stdout and "64x48" in r.stdout  # it did probe the file
    assert PROBE_NEEDS in loaded  # the report sees a module the command really loaded
    assert not set(loaded) & set(HEAVY), loaded
    # rich's console is for runs (progress, log lines); probe prints plain lines
    assert "rich" not in loaded, loaded


def test_probe_json_loads_no_torch(make: Callable[..., Path]) -> None:
    clip = make("startup_probe.mkv", size=(64, 48), frames=4)
    r, loaded = _loaded("probe", "--json", str(clip))
    assert json.loads(r.stdout)["video"]["width"] == 64
    assert not set(loaded) & set(HEAVY), loaded


def test_a_run_loads_torch_but_not_the_store_client_opencv_or_yaml(make: Callable[..., Path], tmp_path: Path) -> None:
    """`vidpipe run` needs torch; the S3 client (jobs), OpenCV (the cut detectors) and YAML (job specs) stay out."""
    clip = make("startup_probe.mkv", size=(64, 48), frames=4)
    _, loaded = _loaded("run", str(clip), "-o", str(tmp_path / "o.mkv"), "--device", "cpu", "--progress", "none")
    assert "torch" in loaded
    assert not set(loaded) & {"boto3", "botocore", "cv2", "yaml"}, loaded
