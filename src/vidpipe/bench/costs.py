"""`vidpipe bench costs`: measured cost tables for the scheduler (seed 001 §1 rows, schema in schedule/costs.py).

One row per stage × model signature × resolution bucket × dtype on this device: `latency_ms_per_unit`,
`gpu_memory_per_task_mb` (peak allocated per unit above the resident weights), `cpu_rss_peak_mb`,
`max_batch_size_component` and provenance (commit, date, device, torch/CUDA versions). Inputs are synthetic
frames at each bucket's 16:9 size (`costs.bucket_size`), measured through the stages themselves
(`costs.measure`): upscale on whole frames (the scheduler derives tiles from whole-frame costs), interpolation
×2 with every pair synthesised.

Tables are named by device, `resource_costs/<device>.json` (`nvidia-h100-80gb-hbm3.json`), and merged row by row
with what the file already holds, so dtypes or models can be measured in separate runs. `--quick` (two small
batches, one repeat) is a smoke test: it goes to `.cache/bench/resource_costs/<device>.quick.json` unless told
otherwise, never into the committed tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..errors import UsageError
from ..schedule.costs import (
    DEFAULT_MAX_BATCH_SIZE,
    RESOLUTION_BUCKETS,
    TABLES_DIR,
    CostRow,
    CostTable,
    DType,
    Prepare,
    StageFactory,
    bucket_for,
    bucket_size,
    device_name,
    measure,
)
from ..stages.base import StreamSpec
from ..stages.registry import STAGES

DEFAULT_UPSCALE = ("realesr-animevideov3-x2", "realesr-animevideov3-x4")
DEFAULT_INTERPOLATE = ("rife-hdv3",)
DEFAULT_BUCKETS = (360, 720, 1080)
#: full run: batch sizes up to the component cap (memory per unit is the worst over them), 3 timed calls each
FULL_BATCHES, FULL_REPEATS = (1, 2, 4, DEFAULT_MAX_BATCH_SIZE), 3
#: --quick: the probe's two micro-batches, one timed call
QUICK_BATCHES, QUICK_REPEATS = (1, 2), 1
QUICK_DIR = Path(".cache/bench/resource_costs")


@dataclass(frozen=True, slots=True)
class Subject:
    """A stage to measure: `factory` builds it (not set up) computing in `dtype`."""

    label: str
    factory: StageFactory
    prepare: Prepare | None = None


def subjects(upscale: Sequence[str], interpolate: Sequence[str], dtype: DType) -> list[Subject]:
    """What to measure: each model on its stage as the stage's registry entry builds it (`cost_subject`)."""
    out: list[Subject] = []
    for name, models in (("upscale", upscale), ("interpolate", interpolate)):
        make = STAGES[name].cost_subject
        assert make is not None, name  # both registered with one
        label = "interpolate {} ×2" if name == "interpolate" else "upscale {}"
        out += [Subject(label.format(m), lambda m=m, make=make: make(m, dtype)) for m in models]  # type: ignore[misc]
    return out


def table_path(out_dir: Path, device: torch.device, *, quick: bool) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return Path(out_dir) / f"{slug}{'.quick' if quick else ''}.json"


def bucket_spec(bucket: int) -> StreamSpec:
    w, h = bucket_size(bucket)
    return StreamSpec(width=w, height=h, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))


def run_costs(
    device: torch.device,
    *,
    dtypes: Sequence[DType],
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    upscale: Sequence[str] = DEFAULT_UPSCALE,
    interpolate: Sequence[str] = DEFAULT_INTERPOLATE,
    quick: bool = False,
    out_dir: Path | None = None,
    on_row: Callable[[Subject, CostRow], None] | None = None,
) -> tuple[Path, list[CostRow]]:
    """Measure every subject × bucket × dtype; merge the rows into this device's table; return (path, rows)."""
    bad = [b for b in buckets if b < 1 or bucket_for(*bucket_size(b)) != b]
    if not buckets or bad:
        valid = ", ".join(map(str, RESOLUTION_BUCKETS))
        raise UsageError(f"invalid bucket(s) {bad or 'none'}; valid: {valid} (or a short side above the last)")
    batches, repeats = (QUICK_BATCHES, QUICK_REPEATS) if quick else (FULL_BATCHES, FULL_REPEATS)
    rows: list[CostRow] = []
    for dtype in dtypes:
        for subject in subjects(upscale, interpolate, dtype):
            for bucket in buckets:
                row = measure(
                    subject.factory,
                    bucket_spec(bucket),
                    device,
                    dtype,
                    batches,
                    repeats=repeats,
                    source="bench --quick" if quick else "bench",
                    prepare=subject.prepare,
                )
                rows.append(row)
                if on_row is not None:
                    on_row(subject, row)
    path = table_path(out_dir if out_dir is not None else (QUICK_DIR if quick else TABLES_DIR), device, quick=quick)
    merged = {r.key: r for r in (CostTable.load(path).rows if path.is_file() else ())}
    merged.update({r.key: r for r in rows})
    CostTable(rows=tuple(merged.values())).save(path)
    return path, rows


def row_line(subject: Subject, row: CostRow) -> str:
    gpu = "n/a" if row.gpu_memory_per_task_mb is None else f"{row.gpu_memory_per_task_mb:.1f}"
    rss = "n/a" if row.cpu_rss_peak_mb is None else f"{row.cpu_rss_peak_mb:.1f}"
    b = row.input_bucket
    return (
        f"| {subject.label} | {row.model_signature} | {b.short_side} ({b.width}x{b.height}) | {row.dtype} | "
        f"{row.unit} | {row.latency_ms_per_unit:.3f} | {gpu} | {rss} | {row.max_batch_size_component} |"
    )


HEADER = (
    "| stage | model_signature | bucket | dtype | unit | ms/unit | GPU MB/unit | RSS MB/unit | max batch |\n"
    "|---|---|---|---|---|---:|---:|---:|---:|"
)
