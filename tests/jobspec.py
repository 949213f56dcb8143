"""A job spec file for the tests: one YAML layout, written where a test wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_job_spec(
    tmp: Path,
    inputs: list[str],
    pipeline: dict[str, Any],
    *,
    out_dir: Path | None = None,
    seconds: float = 0,
    **top: Any,
) -> Path:
    """`tmp/job.yaml`: `inputs` through `pipeline` into `out_dir` (default `tmp/out`, mkv), segments of `seconds`
    (0: whole files), the result JSON and sentinel in `tmp`; `top` adds or replaces top-level keys."""
    doc: dict[str, Any] = {
        "inputs": inputs,
        "pipeline": pipeline,
        "output": {"dir": str(out_dir or tmp / "out"), "container": "mkv"},
        "segments": {"seconds": seconds},
        "result_json": str(tmp / "result.json"),
        "sentinel": str(tmp / "SENTINEL"),
        **top,
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
