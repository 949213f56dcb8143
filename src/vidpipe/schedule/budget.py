"""The memory budget that sizes batches, exactly as seed 001 §0 fixes it (weights are already resident, so they
are part of `used`; what is left is shared by the activations of a batch and a safety headroom):

    free      = total − used
    headroom  = max(1024, round(free × 0.25))
    effective = max(0, free − headroom)
    batch     = clamp(floor(effective / gpu_memory_per_task_mb), 1, max_batch_size_component)

All figures are MB (2**20 bytes) as integers, except the per-task cost, which is measured and may be fractional.
`round` is Python's (half to even), as the seed's formula is written; it moves the headroom by at most 1 MB.

`device_memory` reads `total`/`used` of one explicit CUDA device; `host_memory` does the same for RAM, so the
same formula sizes CPU batches from `cpu_rss_peak_mb`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DeviceError, InputTooLargeError, UsageError
from ..frames import StreamSpec

#: seed 001 §0: the headroom never drops below 1 GiB …
HEADROOM_FLOOR_MB = 1024
#: … and is otherwise a quarter of the free memory
HEADROOM_FRACTION = 0.25

_MB = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryBudget:
    """The seed's quantities for one device at one moment, kept together so they can be reported."""

    total_mb: int
    used_mb: int
    free_mb: int
    headroom_mb: int
    effective_mb: int

    def describe(self) -> str:
        return (
            f"total {self.total_mb} MB, used {self.used_mb} MB → free {self.free_mb} MB; headroom "
            f"max({HEADROOM_FLOOR_MB}, round({self.free_mb} × {HEADROOM_FRACTION})) = {self.headroom_mb} MB; "
            f"budget {self.effective_mb} MB"
        )


def free_mb(total_mb: int, used_mb: int) -> int:
    if total_mb < 0 or used_mb < 0:
        raise UsageError(f"memory figures must be ≥ 0, got total={total_mb} MB, used={used_mb} MB")
    return max(0, total_mb - used_mb)


def headroom_mb(free: int) -> int:
    return max(HEADROOM_FLOOR_MB, round(free * HEADROOM_FRACTION))


def effective_budget_mb(free: int) -> int:
    return max(0, free - headroom_mb(free))


def budget(total_mb: int, used_mb: int) -> MemoryBudget:
    free = free_mb(total_mb, used_mb)
    head = headroom_mb(free)
    return MemoryBudget(
        total_mb=total_mb, used_mb=used_mb, free_mb=free, headroom_mb=head, effective_mb=max(0, free - head)
    )


def batch_size(effective_mb: int, per_task_mb: float, max_batch: int) -> int:
    """`clamp(floor(effective / per_task), 1, max_batch)`: never 0 (batch 1 is what the OOM policy falls back
    to anyway), never above the component's cap."""
    if per_task_mb <= 0 or not math.isfinite(per_task_mb):
        raise UsageError(f"gpu_memory_per_task_mb must be a positive number, got {per_task_mb}")
    if max_batch < 1:
        raise UsageError(f"max_batch_size_component must be ≥ 1, got {max_batch}")
    return min(max(math.floor(max(0, effective_mb) / per_task_mb), 1), max_batch)


def device_memory(device: torch.device, *, count_cache_as_free: bool = True) -> tuple[int, int]:
    """(total_mb, used_mb) of one CUDA device, from `torch.cuda.mem_get_info(device)`.

    The driver counts blocks that torch's caching allocator holds but no tensor uses as used; they are free to
    this process, so by default they are added back (`count_cache_as_free=False` gives the driver's view)."""
    if device.type != "cuda":
        raise DeviceError(f"device_memory needs a CUDA device, got {device}; use host_memory() for the CPU")
    free_b, total_b = torch.cuda.mem_get_info(device)
    if count_cache_as_free:
        free_b += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    total = total_b // _MB
    return total, max(0, total - min(free_b, total_b) // _MB)


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(total_mb, used_mb) of RAM; `used` counts page cache as free (Linux `MemAvailable`), as the kernel would
    reclaim it before failing an allocation."""
    try:
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024  # kB
        total, available = fields["MemTotal"], fields["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        total, available = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    return total // _MB, (total - available) // _MB


def memory_budget(device: torch.device, share: int = 1) -> MemoryBudget:
    """The seed's budget for `device`: VRAM for CUDA, RAM for the CPU. `share` processes using the device at once
    (`vidpipe run --gpus 0,0`: worker processes on one GPU) each get 1/share of the free memory, the seed's headroom
    taken from that share, so together they never plan past the device's budget."""
    total, used = device_memory(device) if device.type == "cuda" else host_memory()
    if share < 1:
        raise UsageError(f"memory share must be ≥ 1 process, got {share}")
    if share == 1:
        return budget(total, used)
    free = free_mb(total, used) // share
    head = headroom_mb(free)
    return MemoryBudget(
        total_mb=total, used_mb=total - free, free_mb=free, headroom_mb=head, effective_mb=max(0, free - head)
    )


def frame_bytes(spec: StreamSpec) -> int:
    """One frame as the reader and writer hold it on the host: RGB(A), 1 or 2 bytes a channel."""
    return spec.width * spec.height * (4 if spec.alpha else 3) * (2 if spec.bit_depth > 8 else 1)


def host_frame_bytes(
    source: StreamSpec, output: StreamSpec, *, batch: int, reader_queue: int, encode_queue: int
) -> int:
    """Host memory a run's frame queues may hold at once: on each side the queued batches, one being filled and
    one being worked on; output batches are the output's frame size and, after a rate change, that many times
    the frames (interpolation to twice the rate gives two frames per input frame)."""
    per_batch = batch
    if output.rate is not None and source.nominal_rate:
        per_batch = batch * max(1, math.ceil(output.rate / source.nominal_rate))
    return (reader_queue + 2) * batch * frame_bytes(source) + (encode_queue + 2) * per_batch * frame_bytes(output)


def check_host_memory(need: int, *, available_mb: int | None = None, what: str = "") -> None:
    """Refuse a run whose frame buffers (`need` bytes) exceed the RAM the budget leaves (free RAM less the
    headroom of schedule/budget.py), before anything is decoded: the alternative is an allocation failing
    mid-run, after minutes of work."""
    if available_mb is None:
        available_mb = budget(*host_memory()).effective_mb
    if need > available_mb * 2**20:
        raise InputTooLargeError(
            f"{what}the frame buffers of this run need {need >> 20} MB of RAM but only {available_mb} MB are "
            "free for them; lower --batch-size, or free memory"
        )
