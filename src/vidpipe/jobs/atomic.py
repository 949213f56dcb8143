"""Atomic file writes: temp file in the same directory, fsync, rename. A reader sees the old file or the whole
new one, never a torn one, even after a crash or SIGKILL."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: ordinary files (manifests, model caches); files that hold a presigned URL pass 0o600
DEFAULT_MODE = 0o644


def write_bytes(path: Path, data: bytes, mode: int = DEFAULT_MODE) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp's 0600 would make every manifest private
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the directory so the rename itself survives a power loss.
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any, mode: int = DEFAULT_MODE) -> None:
    write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode(), mode)
