"""Auto-configuration: batch and tile size follow from the cost row and the budget, with the reasons stated."""

from __future__ import annotations

import pytest
import torch
from sched_helpers import ConvStage, spec

from vidpipe.schedule import autoconfig, costs
from vidpipe.schedule.autoconfig import Tiling, configure
from vidpipe.schedule.budget import budget
from vidpipe.schedule.costs import CostBook, CostRow, InputBucket, Provenance

FAKE_GPU = "Fake GPU 80GB"
CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name a CUDA device without one; memory figures are passed in explicitly."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: FAKE_GPU)


def _book_for(
    stage: ConvStage, width: int, height: int, per_unit: float, *, cap: int = 8, gpu: str = FAKE_GPU
) -> CostBook:
    r = CostRow(
        component=stage.name,
        unit="frame",
        input_bucket=InputBucket.of(width, height),
        runtime="inprocess",
        model_signature=costs.signature_hash(stage.signature()),
        dtype="fp16",
        gpu_memory_per_task_mb=per_unit,
        cpu_rss_peak_mb=None,
        latency_ms_per_unit=8.5,
        max_batch_size_component=cap,
        cross_video_batching=True,
        provenance=Provenance(commit="abc1234", date="2026-11-22T10:00:00Z", gpu=gpu, torch="2.11", cuda="13"),
    )
    return CostBook([r])


@pytest.mark.usefixtures("fake_cuda")
@pytest.mark.parametrize(
    ("total", "used", "per_unit", "cap", "batch", "why"),
    [
        (81559, 1559, 412.0, 8, 8, "clamp(floor(60000 / 412.0) = 145, 1, 8) = 8 (the component's cap)"),
        (81559, 1559, 412.0, 256, 145, "= 145 (what the budget holds)"),
        (8192, 2192, 1000.0, 8, 4, "clamp(floor(4500 / 1000.0) = 4, 1, 8) = 4"),
    ],
)
def test_batch_follows_the_row_and_the_budget(
    total: int, used: int, per_unit: float, cap: int, batch: int, why: str
) -> None:
    stage = ConvStage(dtype=torch.float16)
    book = _book_for(stage, 1920, 1080, per_unit, cap=cap)
    cfg = configure(stage, spec(1920, 1080), CUDA, "fp16", book=book, memory=budget(total, used))
    assert (cfg.batch_size, cfg.tile) == (batch, None)
    text = cfg.describe()
    assert why in text
    assert "bucket 1080" in text and "commit abc1234" in text and "tile: none" in text


@pytest.mark.usefixtures("fake_cuda")
def test_larger_frame_of_the_bucket_is_charged_by_area() -> None:
    stage = ConvStage(dtype=torch.float16)
    book = _book_for(stage, 960, 540, 1000.0, cap=64)
    mem = budget(24576, 8576)  # free 16000 → budget 12000
    cfg = configure(stage, spec(1280, 536), CUDA, "fp16", book=book, memory=mem)
    per_unit = 1000.0 * 1280 * 536 / (960 * 540)
    assert cfg.batch_size == int(12000 // per_unit) == 9
    assert "scaled by area" in cfg.describe()


@pytest.mark.usefixtures("fake_cuda")
def test_frame_too_big_is_tiled_when_the_stage_allows() -> None:
    stage = ConvStage(dtype=torch.float16)
    book = _book_for(stage, 1920, 1080, 9000.0)
    mem = budget(8192, 2192)  # budget 4500 MB: half a frame
    tiling = Tiling(multiple=8, overlap=16, min_tile=64)
    cfg = configure(stage, spec(1920, 1080), CUDA, "fp16", book=book, memory=mem, tiling=tiling)
    assert cfg.batch_size == 1
    assert cfg.tile is not None and cfg.tile % 8 == 0

    # the tile with its overlap fits the budget, and one multiple more would not
    def tile_mb(t: int) -> float:
        return 9000.0 * (t + 2 * tiling.overlap) ** 2 / (1920 * 1080)

    assert tile_mb(cfg.tile) <= mem.effective_mb < tile_mb(cfg.tile + 8)
    assert f"tile: {cfg.tile}px" in cfg.describe()


@pytest.mark.usefixtures("fake_cuda")
def test_frame_too_big_without_tiling_says_oom_is_expected() -> None:
    stage = ConvStage(dtype=torch.float16)
    book = _book_for(stage, 1920, 1080, 9000.0)
    cfg = configure(stage, spec(1920, 1080), CUDA, "fp16", book=book, memory=budget(8192, 2192))
    assert (cfg.batch_size, cfg.tile) == (1, None)
    assert "cannot be tiled" in cfg.describe()


def test_minimum_tile_when_almost_nothing_fits() -> None:
    assert autoconfig.tile_size(1e9, 10, 1920, 1080, Tiling(min_tile=64)) == 64


@pytest.mark.usefixtures("fake_cuda")
def test_a_row_of_another_gpu_is_not_used() -> None:
    stage = ConvStage(dtype=torch.float16)
    other = _book_for(stage, 1920, 1080, 100.0, gpu="Some Other GPU")
    cfg = configure(stage, spec(1920, 1080), CUDA, "fp16", book=other, memory=budget(81559, 1559))
    assert (cfg.batch_size, cfg.row) == (1, None)
    assert "no cost row" in cfg.describe()


def test_cpu_with_a_probe_uses_ram_and_the_measured_row(tmp_path) -> None:
    cpu = torch.device("cpu")
    stage = ConvStage()
    s = spec(64, 48)
    stage.setup(cpu, s)
    cfg = configure(stage, s, cpu, "fp32", book=CostBook(cache_dir=tmp_path), probe=ConvStage)
    assert cfg.row is not None and cfg.row.latency_ms_per_unit > 0
    assert 1 <= cfg.batch_size <= costs.DEFAULT_MAX_BATCH_SIZE
    text = cfg.describe()
    assert "RAM:" in text and "probed now" in text
