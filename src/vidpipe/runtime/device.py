"""Device selection: explicit, never silent. `auto` takes CUDA when present and says so; asking for a CUDA
device that does not exist is an error, never a quiet run on the CPU."""

from __future__ import annotations

import logging
import re

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
    index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"device cuda:{index} asked for, but only {count} CUDA device(s) exist "
            f"(valid: {', '.join(f'cuda:{i}' for i in range(count))})"
        )
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return str(device)
