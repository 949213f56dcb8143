"""Which worker processes `vidpipe run --gpus all|N|0,2` starts: one per GPU listed (a GPU listed twice gets two
workers, each planning with half its memory budget), found without initialising CUDA in the parent.

`--gpus cpu:N` starts N CPU worker processes instead (a host without a GPU, or many cores: each worker plans with its
share and gets its share of the cores); CI runs the multi-process paths that way.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..errors import UsageError

#: `--gpus cpu:N`: N CPU worker processes
CPU_PREFIX: Final = "cpu:"


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """One worker process: the device it runs on (`cuda:0` inside a child that sees one GPU, or `cpu`), the GPU it
    is given (`CUDA_VISIBLE_DEVICES` in the child; None for a CPU worker) and how many workers share that device
    (each plans with its share of the memory budget; CPU workers also split the cores)."""

    index: int
    device: str
    gpu: str | None
    share: int = 1

    @property
    def label(self) -> str:
        return f"gpu{self.gpu}" if self.gpu is not None else f"cpu{self.index}"


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The CUDA devices this process may use, by the names `CUDA_VISIBLE_DEVICES` takes. The parent only counts
    them (no tensor, no context of its own); workers are spawned fresh and initialise CUDA themselves."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and not d.strip().startswith("-")]
    import torch

    if not torch.cuda.is_available():
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(value: str, visible: list[str]) -> list[str]:
    """`all` → every visible GPU; `N` → the first N; `0,2` → those (a GPU may appear twice: two workers on it).
    Values are positions among the visible GPUs."""
    value = value.strip()
    if value == "all":
        if not visible:
            raise UsageError("--gpus all: no CUDA device is visible")
        return list(visible)
    try:
        if "," not in value:
            n = int(value)
            if n < 1 or n > len(visible):
                raise UsageError(f"--gpus {n}: {len(visible)} CUDA device(s) visible; valid: 1..{len(visible)} or all")
            return visible[:n]
        picks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"invalid --gpus {value!r}; valid: all, a count (2) or a list of indices (0,2)") from None
    bad = [p for p in picks if not 0 <= p < len(visible)]
    if bad or not picks:
        raise UsageError(
            f"--gpus {value}: no visible CUDA device {bad[0] if bad else ''}; valid indices 0..{len(visible) - 1}"
        )
    return [visible[p] for p in picks]


def worker_slots(gpus: str | None, env: Mapping[str, str] | None = None) -> list[WorkerSlot]:
    """The worker processes for `--gpus` (None: all visible; `cpu:N`: N CPU workers); [] on a CPU-only host without
    `cpu:N` (the run stays in-process)."""
    env = os.environ if env is None else env
    if gpus is not None and gpus.strip().startswith(CPU_PREFIX):
        text = gpus.strip()[len(CPU_PREFIX) :]
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"invalid --gpus {gpus!r}; cpu:N takes a count of CPU workers, at least 1 (cpu:2)")
        count = int(text)
        return [WorkerSlot(i, "cpu", None, count) for i in range(count)]
    visible = visible_gpus(env)
    if not visible:
        if gpus not in (None, "all"):
            raise UsageError(f"--gpus {gpus}: no CUDA device is visible")
        return []
    chosen = parse_gpus(gpus or "all", visible)
    shares = Counter(chosen)
    return [WorkerSlot(i, "cuda:0", g, shares[g]) for i, g in enumerate(chosen)]


def pool_slots(gpus: str | None, device: str) -> list[WorkerSlot]:
    """The worker processes `--gpus` asks for under `--device` (the run's or job's): none where the work stays in
    one process (a CPU device without `cpu:N`, a host without a GPU). `vidpipe run` and `job run` decide here."""
    cpu_workers = gpus is not None and gpus.strip().startswith(CPU_PREFIX)
    if device not in (("auto", "cpu") if cpu_workers else ("auto", "cuda")):
        if gpus is not None:
            want = "auto or cpu" if cpu_workers else "auto or cuda"
            raise UsageError(f"--gpus picks the devices itself; --gpus {gpus} takes --device {want}, not {device}")
        return []
    return worker_slots(gpus)


def ray_actors(gpus: str | None) -> int | None:
    """How many Ray actors `--gpus` asks for: a count, or the length of a list (None: the cluster's GPUs)."""
    if gpus is None or gpus.strip() == "all":
        return None
    text = gpus.strip()
    if text.startswith(CPU_PREFIX):
        raise UsageError("--gpus cpu:N starts local CPU worker processes; Ray's actors take GPUs (--gpus N)")
    try:
        count = len([v for v in text.split(",") if v.strip()]) if "," in text else int(text)
    except ValueError:
        raise UsageError(f"invalid --gpus {gpus!r}; valid: all, a count (2) or a list of indices (0,2)") from None
    if count < 1:
        raise UsageError(f"invalid --gpus {gpus!r}: at least one actor")
    return count
