"""`vidpipe bench costs --quick` on the CPU: a valid cost table named by device, whose rows the scheduler then uses
(and `vidpipe doctor` reports)."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from sched_helpers import SEED_FIELDS, tiny_sr

from vidpipe.bench.costs import run_costs, table_path
from vidpipe.errors import UsageError
from vidpipe.schedule.chain import ScheduleOptions, plan_stage
from vidpipe.schedule.costs import TABLES_DIR, CostBook, CostTable, device_name, load_dir
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.upscale import Upscale

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sr(tmp_path_factory.mktemp("bench-sr") / "tiny.safetensors")


def test_quick_cpu_table_is_valid_and_used(sr: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "tables"
    args = ["bench", "costs", "--device", "cpu", "--buckets", "360", "--quick", "--out", str(out)]
    proc = cli(*args, "--upscale", str(sr), "--interpolate", "none")
    assert proc.returncode == 0, proc.stderr
    path = table_path(out, CPU, quick=True)
    assert path.is_file() and path.name.startswith("cpu-") and path.name.endswith(".quick.json")
    assert "1 rows merged" in proc.stdout and "| upscale" in proc.stdout
    raw = json.loads(path.read_text())
    assert raw["schema"] == 1 and len(raw["rows"]) == 1 and set(raw["rows"][0]) >= SEED_FIELDS
    (row,) = CostTable.load(path).rows  # validates every field
    assert (row.component, row.unit, row.dtype, row.runtime) == ("upscale", "frame", "fp32", "inprocess")
    assert (row.input_bucket.short_side, row.input_bucket.width, row.input_bucket.height) == (360, 640, 360)
    assert row.gpu_memory_per_task_mb is None and row.cpu_rss_peak_mb is not None and row.latency_ms_per_unit > 0
    assert row.provenance.gpu == device_name(CPU) and row.provenance.source == "bench --quick"

    # the scheduler finds the row for the same stage on this device and sizes its batch from it
    stage = Upscale(sr)
    spec = StreamSpec(width=640, height=360, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))
    stage.setup(CPU, spec)
    plan = plan_stage(stage, spec, CPU, ScheduleOptions(), reader_batch=8, book=CostBook(load_dir(out)))
    assert plan.source == "table"
    assert any("bench --quick" in r for r in plan.reasons)

    # a second run merges by key: the same combination replaces its row, another dtype adds one
    run_costs(CPU, dtypes=["fp32", "bf16"], buckets=[360], upscale=[str(sr)], interpolate=[], quick=True, out_dir=out)
    assert sorted(r.dtype for r in CostTable.load(path).rows) == ["bf16", "fp32"]


def test_committed_tables_are_full_bench_tables_named_by_their_device() -> None:
    """What `CostBook.default()` reads on every run: a quick or probed table, or one filed under another device's
    name, must never land here."""
    for path in sorted(TABLES_DIR.glob("*.json")):
        rows = CostTable.load(path).rows
        assert rows, path
        for r in rows:
            assert r.provenance.source == "bench", (path.name, r.provenance.source)
            assert path.stem == re.sub(r"[^a-z0-9]+", "-", r.provenance.gpu.lower()).strip("-"), path.name


@pytest.mark.parametrize("bucket", [0, 100, 500])
def test_only_real_buckets_are_measured(bucket: int, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="valid: 360, 540, 720"):
        run_costs(CPU, dtypes=["fp32"], buckets=[bucket], upscale=[], interpolate=[], out_dir=tmp_path)


def test_doctor_reports_batch_and_tile_on_the_cpu(sr: Path, cli) -> None:
    proc = cli("doctor", "--device", "cpu", "--model", f"upscale={sr}", "--size", "64x48")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("upscale"))
    assert "at 64x48 (fp32): batch 8, whole frames" in line
    assert "the CPU is not probed" in proc.stdout and "budget" in proc.stdout
    # which convolution kernels --kernels fused would use here, and why not the Hopper one
    assert "--kernels fused (upscale): Triton kernels unavailable" in proc.stdout
    assert "Hopper row kernel off (not a CUDA device)" in proc.stdout or "off (no Triton" in proc.stdout
