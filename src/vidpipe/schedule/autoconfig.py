"""GPU auto-configuration: the batch size and tile size a stage should use on this device, derived from its cost
row and the device's free memory (seed 001 §0's budget), with the reasons in words for `vidpipe doctor`.

Nothing here is a table of GPU tiers: a card with more free memory gets a bigger batch because the measured
memory per unit says so, up to the component's cap; a frame that does not fit at all is tiled when the stage can
be tiled, and reported as a certain OOM when it cannot. This is the only place a tile is sized (`tile_size` from
a row, `smaller_tile` for the OOM policy's steps); a stage runs the tile it is given (`Stage.set_tile`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..stages.base import Stage, StreamSpec
from .budget import MemoryBudget, batch_size, memory_budget
from .costs import DEFAULT_MAX_BATCH_SIZE, CostBook, CostRow, DType, Prepare, Runtime, StageFactory, bucket_for
from .oom import is_oom, release_cached


@dataclass(frozen=True, slots=True, kw_only=True)
class Tiling:
    """How a stage can be cut into tiles (only spatially local models such as SR nets; optical flow cannot)."""

    #: tile sides are multiples of this (the model's `size_multiple`)
    multiple: int = 8
    #: context pixels added on every side of a tile, then cropped off, so seams do not show
    overlap: int = 16
    #: below this a tile is mostly overlap and the run is slower than buying memory
    min_tile: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class StageConfig:
    stage: str
    batch_size: int
    #: side of square tiles in input pixels (before overlap); None: whole frames
    tile: int | None
    row: CostRow | None
    budget: MemoryBudget
    reasons: tuple[str, ...]
    #: where the row came from: "table", "probe", "none" (no row) or "probe-oom" (the probe ran out of memory)
    source: str = "none"

    def describe(self) -> str:
        tile = f"tiles of {self.tile}px" if self.tile else "whole frames"
        return f"{self.stage}: batch {self.batch_size}, {tile}\n" + "\n".join(f"  - {r}" for r in self.reasons)


def tile_size(per_frame_mb: float, effective_mb: int, width: int, height: int, tiling: Tiling) -> int:
    """The largest square tile (a multiple of `tiling.multiple`, at least `min_tile`) whose area with its overlap
    uses at most the budget, memory being proportional to area."""
    fits_area = width * height * effective_mb / per_frame_mb
    side = math.isqrt(max(0, math.floor(fits_area))) - 2 * tiling.overlap
    side -= side % tiling.multiple
    return max(tiling.min_tile, side)


def smaller_tile(tile: int, width: int, height: int, tiling: Tiling) -> int | None:
    """The tile to try after `tile` (0: whole frames) ran out of memory on a `width`×`height` frame: half its side,
    rounded down to `tiling.multiple` and at least `min_tile`; None from the smallest tile (nothing smaller to
    try). Whole frames count as a tile of the frame's longer side, so the first step cuts a frame in about four."""
    side = tile or max(width, height)
    if side <= tiling.min_tile:
        return None
    half = side // 2
    return max(tiling.min_tile, half - half % tiling.multiple)


def tile_steps(tile: int, width: int, height: int, tiling: Tiling) -> tuple[int, ...]:
    """Every tile after `tile`, largest first, down to `min_tile`: what the OOM policy steps through at batch 1."""
    steps: list[int] = []
    step = smaller_tile(tile, width, height, tiling)
    while step is not None:
        steps.append(step)
        step = smaller_tile(step, width, height, tiling)
    return tuple(steps)


def configure(
    stage: Stage,
    spec: StreamSpec,
    device: torch.device,
    dtype: DType,
    *,
    book: CostBook,
    probe: StageFactory | None = None,
    tiling: Tiling | None = None,
    memory: MemoryBudget | None = None,
    runtime: Runtime = "inprocess",
    max_batch: int = DEFAULT_MAX_BATCH_SIZE,
    prepare: Prepare | None = None,
    unmeasured: tuple[int, str] | None = None,
) -> StageConfig:
    """Batch and tile size for a set-up `stage` fed `spec` on `device`.

    Call it after every stage of the chain is set up, so resident weights count as used memory. `memory` replaces
    the device's current budget (tests, what-if reports); `probe` measures a row when no table has one (`prepare`
    is applied to the probe's stage after its setup). Without a row the batch is 1, or `unmeasured` = (batch,
    why) where the caller knows better (the CPU, which is not probed)."""
    try:
        row, source = book.row_for(
            stage, spec, device, dtype, probe=probe, runtime=runtime, max_batch=max_batch, prepare=prepare
        )
    except Exception as e:
        if not is_oom(e):
            raise
        row, source = None, "probe-oom"
    if source == "probe-oom":  # outside the `except`, so the failed probe's tensors can be released
        release_cached(device)
    mem = memory if memory is not None else memory_budget(device)
    host = device.type != "cuda"
    where = "RAM" if host else f"{device} memory"
    reasons = [f"input {spec.width}×{spec.height} → bucket {bucket_for(spec.width, spec.height)} (short side)"]
    reasons.append(f"{where}: {mem.describe()}")

    def done(batch: int, tile: int | None) -> StageConfig:
        return StageConfig(
            stage=stage.name, batch_size=batch, tile=tile, row=row, budget=mem, reasons=tuple(reasons), source=source
        )

    if row is None:
        if source == "probe-oom":
            reasons.append(f"the probe ran out of memory on one whole {spec.width}×{spec.height} frame: batch 1")
            return done(1, None)
        if unmeasured is not None:
            reasons.append(unmeasured[1])
            return done(unmeasured[0], None)
        reasons.append(f"no cost row for {stage.name} ({dtype}, {runtime}) on this device and no probe: batch 1")
        return done(1, None)
    p = row.provenance
    origin = "probed now" if source == "probe" else f"{p.source}, {p.date}, commit {p.commit}"
    reasons.append(
        f"cost row ({origin}) at {row.input_bucket.width}×{row.input_bucket.height}: "
        f"{_mb(row.cpu_rss_peak_mb if host else row.gpu_memory_per_task_mb)} per {row.unit}, "
        f"{row.latency_ms_per_unit:.2f} ms per {row.unit}, cap {row.max_batch_size_component}"
    )
    cap = row.max_batch_size_component
    per_unit = row.scaled_memory_mb(spec.width, spec.height, host=host)
    if not per_unit:
        reasons.append(f"memory per {row.unit} not measured or below the measurable: the component's cap {cap}")
        return done(cap, None)
    if per_unit != (row.cpu_rss_peak_mb if host else row.gpu_memory_per_task_mb):
        reasons.append(f"scaled by area to {per_unit:.1f} MB per {row.unit} for this larger frame")
    fits = math.floor(mem.effective_mb / per_unit)
    batch = batch_size(mem.effective_mb, per_unit, cap)
    why = "the component's cap" if fits > cap else "at least 1" if fits < 1 else "what the budget holds"
    reasons.append(f"batch = clamp(floor({mem.effective_mb} / {per_unit:.1f}) = {fits}, 1, {cap}) = {batch} ({why})")
    if fits >= 1:
        reasons.append("tile: none, a whole frame fits the budget")
        return done(batch, None)
    if tiling is None:
        reasons.append(
            f"one {row.unit} needs {per_unit:.0f} MB, more than the {mem.effective_mb} MB budget, and "
            f"{stage.name} cannot be tiled: expect an out-of-memory error; lower the resolution or free memory"
        )
        return done(1, None)
    tile = tile_size(per_unit, mem.effective_mb, spec.width, spec.height, tiling)
    reasons.append(
        f"tile: {tile}px (+{tiling.overlap}px overlap each side), the largest multiple of {tiling.multiple} whose "
        f"area fits {mem.effective_mb} MB at {per_unit:.0f} MB per whole frame"
        + (" — the minimum tile; it may still not fit" if tile == tiling.min_tile else "")
    )
    return done(1, tile)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"
