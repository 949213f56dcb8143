"""On a real CUDA device: a provoked out-of-memory error recovers per the seed's policy (or ends classified), the
budget reads the device given, and a probe measures peak memory per unit. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from sched_helpers import ConvStage, spec

from vidpipe.errors import DeviceOutOfMemoryError
from vidpipe.schedule import budget, costs
from vidpipe.schedule.autoconfig import configure
from vidpipe.schedule.costs import CostBook
from vidpipe.schedule.oom import OomRunner, release_cached

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda() -> torch.device:
    device = torch.device("cuda", torch.cuda.device_count() - 1)  # explicit, and not always device 0
    release_cached(device)
    return device


def _free_bytes(device: torch.device) -> int:
    release_cached(device)
    free, _ = torch.cuda.mem_get_info(device)
    return free


class Hungry:
    """Needs `per_frame` bytes of scratch for every frame of a sub-batch: a model whose activations grow with the
    batch. Returns frames + 1 (computed on the frames' device)."""

    def __init__(self, per_frame: int) -> None:
        self.per_frame = per_frame
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        scratch = torch.empty(int(x.shape[0]) * self.per_frame, dtype=torch.uint8, device=x.device)
        scratch[-1] = 1  # touch it, so the allocation is real
        return x + scratch[-1]


def test_real_oom_recovers_per_policy(cuda: torch.device) -> None:
    # a third of the free memory per frame: 8 and 4 frames cannot fit, 1 can
    fn = Hungry(_free_bytes(cuda) // 3)
    x = torch.randint(0, 200, (8, 3, 64, 64), dtype=torch.uint8, device=cuda)
    sleeps: list[float] = []
    runner = OomRunner(8, sleep=sleeps.append)
    out = runner.run(x, fn)
    assert fn.sizes == [8, 4] + [1] * 8
    assert sleeps == [2.0, 2.0]
    assert out.device == cuda  # never moved off the GPU
    assert torch.equal(out, x + 1)


def test_real_oom_at_batch_one_is_classified(cuda: torch.device) -> None:
    fn = Hungry(2 * torch.cuda.get_device_properties(cuda).total_memory)  # one frame can never fit
    x = torch.zeros((8, 3, 16, 16), dtype=torch.uint8, device=cuda)
    runner = OomRunner(8, sleep=lambda s: None)
    with pytest.raises(DeviceOutOfMemoryError) as info:
        runner.run(x, fn)
    assert fn.sizes == [8, 4, 1]
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    # the device is still usable afterwards
    assert torch.equal(x + 1, torch.ones_like(x))


def test_budget_reads_the_device_given(cuda: torch.device) -> None:
    total, used = budget.device_memory(cuda)
    assert total == torch.cuda.get_device_properties(cuda).total_memory // 2**20
    held = torch.empty(512 * 2**20, dtype=torch.uint8, device=cuda)
    _, used_after = budget.device_memory(cuda)
    assert used_after - used >= 500
    del held


def test_probe_measures_gpu_memory_and_sizes_a_batch(cuda: torch.device, tmp_path) -> None:
    s = spec(1280, 720)
    row = costs.measure(lambda: ConvStage(dtype=torch.float16, channels=32), s, cuda, "fp16", (1, 2))
    assert row.gpu_memory_per_task_mb is not None
    # at least the fp16 input and the 32-channel activation of one 1280×720 frame
    assert row.gpu_memory_per_task_mb >= 1280 * 720 * 32 * 2 / 2**20
    assert row.latency_ms_per_unit > 0
    assert row.provenance.gpu == torch.cuda.get_device_name(cuda)
    assert row.provenance.cuda == torch.version.cuda

    live = ConvStage(dtype=torch.float16, channels=32)
    live.setup(cuda, s)
    book = CostBook(cache_dir=tmp_path)
    cfg = configure(live, s, cuda, "fp16", book=book, probe=lambda: ConvStage(dtype=torch.float16, channels=32))
    assert cfg.row is not None and 1 <= cfg.batch_size <= costs.DEFAULT_MAX_BATCH_SIZE
    assert f"{cuda} memory" in cfg.describe()
