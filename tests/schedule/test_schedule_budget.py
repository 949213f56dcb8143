"""The budget formula of seed 001 §0, on worked cases and its edges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidpipe.errors import DeviceError, UsageError
from vidpipe.schedule import budget as b


@pytest.mark.parametrize(
    ("total", "used", "free", "headroom", "effective"),
    [
        # an H100 (81559 MB) with 1.5 GB of weights resident: the 25 % headroom applies
        (81559, 1559, 80000, 20000, 60000),
        # tiny free memory: the 1024 MB floor eats everything, effective clamps at 0
        (8192, 7192, 1000, 1024, 0),
        (8192, 8192, 0, 1024, 0),
        # used above total (a stale reading) is no free memory, never negative
        (8192, 9000, 0, 1024, 0),
        # the floor and the fraction meet at 4096 MB free
        (24576, 20480, 4096, 1024, 3072),
        (24576, 20576, 4000, 1024, 2976),
        (24576, 20476, 4100, 1025, 3075),
        # round() is Python's, half to even, as the seed writes it: 1024.5 → 1024, 1025.5 → 1026
        (24576, 20478, 4098, 1024, 3074),
        (24576, 20474, 4102, 1026, 3076),
    ],
)
def test_seed_budget_cases(total: int, used: int, free: int, headroom: int, effective: int) -> None:
    got = b.budget(total, used)
    assert (got.free_mb, got.headroom_mb, got.effective_mb) == (free, headroom, effective)
    assert b.free_mb(total, used) == free
    assert b.headroom_mb(free) == headroom
    assert b.effective_budget_mb(free) == effective
    assert str(effective) in got.describe()


@pytest.mark.parametrize(
    ("effective", "per_task", "cap", "expected"),
    [
        (60000, 412, 1000, 145),  # floor(60000 / 412) = 145.6 → 145
        (60000, 412, 8, 8),  # clamped to the component's cap
        (0, 412, 8, 1),  # nothing left: still 1 (the OOM policy's last resort), never 0
        (3072, 3073, 8, 1),  # less than one task fits
        (3072, 1024, 8, 3),  # exactly three
        (3072, 1023.9, 8, 3),  # fractional per-task cost: floor(3.0003)
        (10, 0.25, 64, 40),
    ],
)
def test_batch_size_clamps(effective: int, per_task: float, cap: int, expected: int) -> None:
    assert b.batch_size(effective, per_task, cap) == expected


@pytest.mark.parametrize(("per_task", "cap"), [(0, 8), (-5, 8), (float("nan"), 8), (100, 0)])
def test_batch_size_rejects_nonsense(per_task: float, cap: int) -> None:
    with pytest.raises(UsageError):
        b.batch_size(1000, per_task, cap)


def test_negative_memory_figures_are_refused() -> None:
    with pytest.raises(UsageError):
        b.budget(-1, 0)


def test_device_memory_reads_the_given_device(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[torch.device] = []
    mb = 2**20

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return 30000 * mb, 81559 * mb

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5000 * mb)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 3000 * mb)
    dev = torch.device("cuda", 3)
    # 2000 MB cached by torch but unused count as free by default
    assert b.device_memory(dev) == (81559, 81559 - 32000)
    assert b.device_memory(dev, count_cache_as_free=False) == (81559, 81559 - 30000)
    assert asked == [dev, dev]
    assert b.memory_budget(dev).free_mb == 32000


def test_device_memory_needs_cuda() -> None:
    with pytest.raises(DeviceError, match="host_memory"):
        b.device_memory(torch.device("cpu"))


def test_host_memory_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:          100000 kB\nMemAvailable:    8192000 kB\n")
    total, used = b.host_memory(meminfo)
    assert total == 16384000 // 1024
    assert used == (16384000 - 8192000) // 1024


def test_cpu_budget_uses_this_machines_ram() -> None:
    got = b.memory_budget(torch.device("cpu"))
    assert got.total_mb > 0
    assert 0 <= got.used_mb <= got.total_mb
    assert got.effective_mb == max(0, got.free_mb - max(1024, round(got.free_mb * 0.25)))
