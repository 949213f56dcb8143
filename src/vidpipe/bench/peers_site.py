"""Run-time shims for the peers of `vidpipe bench peers`. Copied into a temp dir as `sitecustomize.py` (first on
the peer's PYTHONPATH), so the peer runs with its own unchanged command line; importing this module under its
own name does nothing.

Configured by environment variables that `bench/peers.py` sets for the peer process only:
- `VIDPIPE_PEER_STUBS`: comma-separated module names the peer's code imports (found by scanning it) but its
  inference path never uses, e.g. scipy, lmdb, or torchvision's `transforms.functional_tensor` that newer
  torchvision removed. Only a name that cannot be imported for real is stubbed (our finder is consulted last).
  A stub hands out placeholders that raise ImportError when used, so a peer that does need one fails loudly.
- `VIDPIPE_PEER_CPU=1`: on a machine without CUDA, `torch.cuda.synchronize` becomes a no-op and
  `torch.cuda.device_count` returns 1 (Real-ESRGAN's video script calls the first in its frame loop and sizes its
  process pool by the second). Used only when the bench runs on the CPU.
- `VIDPIPE_PEER_CV2_X264=PRESET,CRF`: `cv2.VideoWriter` encodes with libx264 through PyAV instead of mp4v (the
  `rife-script-x264` row; the plain `rife-script` row measures RIFE's writer as shipped).
- `VIDPIPE_PEER_REPORT=PATH`: one JSON line per process listing the stubs and patches that were really used.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

_used: dict[str, list[str]] = {"stubbed": [], "patched": []}


class _Missing:
    """What a stub module hands out for any name: usable at import time, an ImportError when really used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: object, **kwargs: object) -> Any:
        raise ImportError(f"{self._name} is a vidpipe bench-peers stub: that module is not installed here")

    def __getattr__(self, attr: str) -> _Missing:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        module.__path__ = []  # a package, so that its submodules are looked up (and stubbed) too

        def missing(attr: str) -> _Missing:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Missing(f"{name}.{attr}")

        module.__getattr__ = missing  # type: ignore[method-assign]
        _used["stubbed"].append(name)


class _StubFinder(importlib.abc.MetaPathFinder):
    """Last on `sys.meta_path`: reached only for modules no real finder has."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)
        self.ancestors = {n.rsplit(".", k)[0] for n in self.names for k in range(1, n.count(".") + 1)}

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        parent = name.rpartition(".")[0]
        parent_spec = getattr(sys.modules.get(parent), "__spec__", None) if parent else None
        stub_parent = parent_spec is not None and isinstance(parent_spec.loader, _StubLoader)
        if name in self.names or name in self.ancestors or stub_parent:
            return importlib.machinery.ModuleSpec(name, _StubLoader(), is_package=True)
        return None


class _AfterImport(importlib.abc.MetaPathFinder):
    """First on `sys.meta_path`: runs `patch(module)` right after `name` is imported for real."""

    def __init__(self, name: str, patch: Callable[[types.ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        patch = self.patch

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _patch_cuda(torch: types.ModuleType) -> None:
    if torch.cuda.is_available():
        return
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.device_count = lambda: 1
    _used["patched"].append("torch.cuda.synchronize=no-op, torch.cuda.device_count=1 (no CUDA)")


class _X264Writer:
    """The part of `cv2.VideoWriter` RIFE's script uses (`write(bgr)`, `release()`), encoding libx264 through
    PyAV; BGR→I420 with cv2 (fast), timestamps at the writer's rate."""

    def __init__(self, filename: str, fourcc: int, fps: float, size: tuple[int, int], *rest: object) -> None:
        import av

        self._av = av
        self._out = av.open(filename, "w")
        preset, crf = os.environ["VIDPIPE_PEER_CV2_X264"].split(",")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": crf})
        self._stream.width, self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._n = 0

    def isOpened(self) -> bool:  # cv2's name
        return True

    def write(self, bgr: Any) -> None:
        import cv2

        h, w = bgr.shape[:2]
        if h % 2 or w % 2:
            frame = self._av.VideoFrame.from_ndarray(bgr, format="bgr24")
        else:
            frame = self._av.VideoFrame.from_ndarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts = self._n
        self._n += 1
        self._out.mux(self._stream.encode(frame))

    def release(self) -> None:
        if self._out is not None:
            self._out.mux(self._stream.encode())
            self._out.close()
            self._out = None


def _patch_cv2(cv2: types.ModuleType) -> None:
    cv2 = sys.modules.get("cv2", cv2)  # opencv's bootstrap replaces the package module with the native one
    cv2.VideoWriter = _X264Writer
    _used["patched"].append(f"cv2.VideoWriter=libx264 via PyAV ({os.environ['VIDPIPE_PEER_CV2_X264']})")


def _report() -> None:
    path = os.environ.get("VIDPIPE_PEER_REPORT")
    if path and (_used["stubbed"] or _used["patched"]):
        with open(path, "a") as f:
            f.write(json.dumps({"argv0": sys.argv[0] if sys.argv else "", **_used}) + "\n")


def _chain_next_sitecustomize() -> None:
    """Run the sitecustomize this file shadows (a distro's or a venv's), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def install() -> None:
    stubs = [n for n in os.environ.get("VIDPIPE_PEER_STUBS", "").split(",") if n]
    if stubs:
        sys.meta_path.append(_StubFinder(stubs))
    if os.environ.get("VIDPIPE_PEER_CPU") == "1":
        sys.meta_path.insert(0, _AfterImport("torch", _patch_cuda))
    if os.environ.get("VIDPIPE_PEER_CV2_X264"):
        sys.meta_path.insert(0, _AfterImport("cv2", _patch_cv2))
    atexit.register(_report)
    _chain_next_sitecustomize()


if __name__ == "sitecustomize":
    install()
