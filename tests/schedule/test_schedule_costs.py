"""Cost tables: buckets, the JSON schema (round trip and validation), a CPU measurement, the probe cache."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sched_helpers import SEED_FIELDS, ConvStage, spec

from vidpipe.errors import UsageError
from vidpipe.schedule import costs
from vidpipe.schedule.costs import CostBook, CostRow, CostTable, InputBucket, Provenance


def row(**changes: object) -> CostRow:
    base = CostRow(
        component="upscale",
        unit="frame",
        input_bucket=InputBucket.of(960, 540),
        runtime="inprocess",
        model_signature="0123456789abcdef",
        dtype="fp16",
        gpu_memory_per_task_mb=100.0,
        cpu_rss_peak_mb=12.5,
        latency_ms_per_unit=8.72,
        max_batch_size_component=8,
        cross_video_batching=True,
        provenance=Provenance(
            commit="56eff5f", date="2026-11-22T10:00:00Z", gpu="NVIDIA H100 80GB HBM3", torch="2.11.0", cuda="13.0"
        ),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((100, 50), 360),
        ((640, 360), 360),
        ((360, 640), 360),  # portrait shares the landscape bucket
        ((1280, 536), 540),  # cinemascope 720p
        ((960, 540), 540),
        ((1280, 720), 720),
        ((960, 720), 720),
        ((1920, 1080), 1080),
        ((2560, 1440), 1440),
        ((3840, 2160), 2160),
        ((7680, 4320), 4320),
        ((9000, 5000), 5000),  # beyond 8K each short side is its own bucket
    ],
)
def test_buckets_by_short_side(size: tuple[int, int], bucket: int) -> None:
    assert costs.bucket_for(*size) == bucket


def test_bucket_sizes_are_16_by_9() -> None:
    assert [costs.bucket_size(b) for b in (360, 540, 720, 1080, 2160)] == [
        (640, 360),
        (960, 540),
        (1280, 720),
        (1920, 1080),
        (3840, 2160),
    ]
    with pytest.raises(UsageError):
        costs.bucket_for(0, 720)


def test_table_json_round_trip(tmp_path: Path) -> None:
    table = CostTable(
        rows=(
            row(),
            row(component="interpolate", unit="frame_pair", cross_video_batching=False, dtype="bf16"),
            row(gpu_memory_per_task_mb=None, cpu_rss_peak_mb=None, provenance=replace(row().provenance, gpu="cpu")),
        )
    )
    path = tmp_path / "resource_costs" / "upscale_costs_v1.json"
    table.save(path)
    assert CostTable.load(path) == table
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == costs.SCHEMA_VERSION
    assert set(on_disk["rows"][0]) >= SEED_FIELDS
    assert set(on_disk["rows"][0]["provenance"]) >= {"commit", "date", "gpu", "torch", "cuda"}
    assert on_disk["rows"][2]["gpu_memory_per_task_mb"] is None
    assert costs.load_dir(path.parent) == list(table.rows)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.update(runtime="tensorrt"), "runtime"),
        (lambda r: r.update(dtype="int8"), "dtype"),
        (lambda r: r.update(unit="clip"), "unit"),
        (lambda r: r.update(latency_ms_per_unit=-1), "latency"),
        (lambda r: r.update(max_batch_size_component=0), "max_batch"),
        (lambda r: r.pop("provenance"), "provenance"),
        (lambda r: r.update(surprise=1), "surprise"),
    ],
)
def test_invalid_rows_are_refused(tmp_path: Path, mutate, match: str) -> None:
    obj = row().to_json()
    mutate(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": 1, "rows": [obj]}))
    with pytest.raises(UsageError, match=match):
        CostTable.load(path)


def test_other_schema_or_junk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"schema": 2, "rows": []}))
    with pytest.raises(UsageError, match="schema"):
        CostTable.load(path)
    path.write_text("{not json")
    with pytest.raises(UsageError, match=str(path)):
        CostTable.load(path)
    # a cache skips what it cannot read (it will re-probe); committed tables must read
    assert costs.load_dir(tmp_path, strict=False) == []
    with pytest.raises(UsageError):
        costs.load_dir(tmp_path)


def test_memory_scales_up_by_area_never_down() -> None:
    r = row()  # 100 MB at 960×540
    assert r.scaled_memory_mb(1280, 536) == pytest.approx(100 * 1280 * 536 / (960 * 540))
    assert r.scaled_memory_mb(640, 360) == 100.0
    assert r.scaled_memory_mb(960, 540, host=True) == 12.5
    assert row(gpu_memory_per_task_mb=None).scaled_memory_mb(960, 540) is None


def test_signature_hash_is_stable_and_sensitive() -> None:
    a = costs.signature_hash({"stage": "upscale", "model": "x4", "tile": 0})
    assert a == costs.signature_hash({"tile": 0, "model": "x4", "stage": "upscale"})
    assert a != costs.signature_hash({"stage": "upscale", "model": "x4", "tile": 256})
    assert len(a) == 16


def test_cpu_measurement_makes_a_row() -> None:
    cpu = torch.device("cpu")
    r = costs.measure(lambda: ConvStage(), spec(64, 48), cpu, "fp32", (1, 2), repeats=2)
    assert r.latency_ms_per_unit > 0
    assert r.gpu_memory_per_task_mb is None
    # at least the uint8 input frame itself, which lives in RAM on the CPU
    assert r.cpu_rss_peak_mb is not None and r.cpu_rss_peak_mb >= round(64 * 48 * 3 / 2**20, 3)
    assert (r.component, r.unit, r.dtype, r.runtime) == ("testconv", "frame", "fp32", "inprocess")
    assert r.input_bucket == InputBucket(short_side=360, width=64, height=48)
    assert r.cross_video_batching is True
    assert r.max_batch_size_component == costs.DEFAULT_MAX_BATCH_SIZE
    assert r.model_signature == costs.signature_hash(ConvStage().signature())
    assert r.provenance.gpu == costs.device_name(cpu)
    assert r.provenance.torch == torch.__version__
    assert r.provenance.date.endswith("Z")
    assert "batch 1/2" in r.notes


def test_measure_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError):
        costs.measure(ConvStage, spec(8, 8), torch.device("cpu"), "fp32", ())
    with pytest.raises(UsageError, match="dtype"):
        costs.measure(ConvStage, spec(8, 8), torch.device("cpu"), "fp8", (1,))  # type: ignore[arg-type]


def test_unknown_combination_is_probed_once_and_cached(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    built: list[ConvStage] = []

    def factory() -> ConvStage:
        built.append(ConvStage())
        return built[-1]

    live = ConvStage()
    s = spec(48, 32)
    live.setup(cpu, s)
    book = CostBook.default(tables_dir=tmp_path / "tables", cache_dir=tmp_path / "cache")
    assert book.row_for(live, s, cpu, "fp32") == (None, "none")

    first, source = book.row_for(live, s, cpu, "fp32", probe=factory)
    assert source == "probe" and len(built) == 1
    assert first.provenance.source == "probe"
    assert live.calls == 0  # the probe ran its own copy; the live stage was never disturbed
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    again, source = book.row_for(live, s, cpu, "fp32", probe=factory)
    assert (again, source) == (first, "table") and len(built) == 1
    # a new process reads the cache and probes nothing
    fresh = CostBook.default(tables_dir=tmp_path / "tables", cache_dir=tmp_path / "cache")
    assert fresh.row_for(live, s, cpu, "fp32", probe=factory) == (first, "table")
    assert len(built) == 1
    # another dtype or another bucket is another combination
    assert fresh.row_for(live, s, cpu, "bf16") == (None, "none")
    assert fresh.row_for(live, spec(1280, 720), cpu, "fp32") == (None, "none")


def test_probe_must_build_the_same_stage(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    live = ConvStage(seed=1)
    live.setup(cpu, spec(16, 16))
    book = CostBook(cache_dir=tmp_path)
    with pytest.raises(UsageError, match="same stage"):
        book.row_for(live, spec(16, 16), cpu, "fp32", probe=lambda: ConvStage(seed=2))
