"""Device selection: explicit, never silent. `auto` takes CUDA when present and says so; asking for a CUDA
device that does not exist is an error, never a quiet run on the CPU."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator

import torch

from ..errors import DeviceError, UsageError

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    spec = spec.strip().lower()
    if not _SPEC.match(spec):
        raise UsageError(f"invalid device {spec!r}; valid: auto, cpu, cuda, cuda:N")
    if spec == "auto":
        if torch.cuda.is_available():
            _blocking_sync()
            dev = torch.device("cuda", torch.cuda.current_device())
            log.info("device: auto picked %s (%s)", dev, torch.cuda.get_device_name(dev))
            return dev
        log.info("device: auto picked cpu (no CUDA device visible)")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {spec} asked for, but no CUDA device is available here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
        )
    _blocking_sync()
    index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"device cuda:{index} asked for, but only {count} CUDA device(s) exist "
            f"(valid: {', '.join(f'cuda:{i}' for i in range(count))})"
        )
    return torch.device("cuda", index)


_CU_CTX_SCHED_BLOCKING_SYNC = 0x4


def _blocking_sync() -> None:
    """Make host threads that wait on the GPU sleep instead of spin. CUDA's default spin-wait keeps a core busy
    whenever a stage waits on its results; with no NVENC the encoder needs every core. The flag only applies to
    a primary context not yet created, so this runs before torch touches a device; it is also what FFmpeg's
    NVDEC needs (it refuses a primary context with other flags). Best effort: without libcuda nothing changes."""
    if torch.cuda.is_initialized() or os.environ.get("VIDPIPE_CUDA_SYNC") == "spin":  # spin: for A/B timing
        return
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        if cuda.cuInit(0) != 0:
            return
        for i in range(torch.cuda.device_count()):
            dev = ctypes.c_int()
            if cuda.cuDeviceGet(ctypes.byref(dev), i) == 0:
                cuda.cuDevicePrimaryCtxSetFlags(dev, _CU_CTX_SCHED_BLOCKING_SYNC)
    except OSError as e:
        log.debug("device: blocking sync not set (%s)", e)


class ContextOnThread:
    """Makes `device`'s CUDA context on a thread of its own while the body runs (the stages reading and building
    their weights: `with ContextOnThread(device): stage.setup(...)`), so the two overlap (issue 24: a context
    takes a few hundred ms). The first CUDA call of the body waits for the context as it would have made it; an
    error of the thread is raised at the end of the body (unless the body raised). Nothing on a CPU device."""

    def __init__(self, device: torch.device, ready: Callable[[], None] = lambda: None) -> None:
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if device.type == "cuda":
            self._thread = threading.Thread(target=self._make, args=(device, ready), name="cuda-context", daemon=True)

    def _make(self, device: torch.device, ready: Callable[[], None]) -> None:
        try:
            torch.cuda.synchronize(device)  # creates the primary context, the GIL released while it does
            ready()
        except BaseException as e:  # raised in the caller at the end of the body
            self._error = e

    def __enter__(self) -> ContextOnThread:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and exc_type is None:
            raise self._error


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return str(device)


def is_device_fault(exc: BaseException) -> bool:
    """A CUDA error that is not a shortage of memory: an illegal access, a device-side assert, a lost device.
    It may have poisoned the context, so it is never retried and ends the run as a device error (exit 5)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator = getattr(torch, "AcceleratorError", None)  # torch ≥ 2.8 raises this for CUDA errors
    if accelerator is not None and isinstance(exc, accelerator):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error" in str(exc)


@contextlib.contextmanager
def math_flags(*, matmul_tf32: bool, cudnn_tf32: bool, benchmark: bool) -> Iterator[None]:
    """TF32 for matmuls / convolutions and cuDNN autotuning set for the block, restored after it."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = matmul_tf32, cudnn_tf32, benchmark
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = saved
