"""The environment of a container start in the tests, and reading back what it uploaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from calibration import scaled
from jobs.conftest import S3Server

#: what a container start may inherit from the machine running the tests and must not
HOST_NAMES = ("B2_", "AWS_", "VIDPIPE_", "UPLOAD_RESULT", "AUTO_UPLOAD", "CONTAINER_ID", "RUNPOD_")


def container_env(s3: S3Server, bucket_name: str, *, bin_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The host's environment without anything of a job or store, plus the store's credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(HOST_NAMES)}
    env |= {
        "B2_KEY": s3.access_key,
        "B2_SECRET": s3.secret_key,
        "B2_ENDPOINT": s3.endpoint,
        "B2_BUCKET": bucket_name,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # 64×48 frames gain nothing from more threads on a shared 2-core runner
    }
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_object(s3: S3Server, bucket_name: str, key: str) -> tuple[dict[str, Any], bytes]:
    """HEAD and body of an object, read with the admin client (not the code under test)."""
    client = s3.admin_client()
    head = client.head_object(Bucket=bucket_name, Key=key)
    return head, client.get_object(Bucket=bucket_name, Key=key)["Body"].read()


def run_python(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python ARGS` (this interpreter) as a process of its own, bounded by `timeout` quiet-machine seconds."""
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=scaled(timeout), check=False
    )
