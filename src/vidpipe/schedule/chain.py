"""The scheduler inside a run: every stage of a chain gets a batch size (and a tile, where it can be tiled and the
user asked for `auto`) and runs under seed 001's OOM policy, extended to tiles.

- Batch size: the `--batch-size` override when given; otherwise, for a model stage, `autoconfig.configure` on its
  cost row (committed table, probe cache, or a short probe on CUDA) and the device's budget, measured after every
  stage is set up so resident weights count as used. A CPU is not probed (a probe of a big model costs more than
  the batch it sizes): without a row it runs batches as they are read. A stage without a model runs batches as
  read: its memory is the frames themselves.
- Tile: chosen here and nowhere else, for a stage whose `tiling()` offers it (a model that tiles, `--tile auto`);
  the stage only runs the tile it is set (`set_tile`). With a cost row: whole frames when one fits the budget,
  else the largest tile whose area with its overlap fits (`autoconfig.tile_size`). Without one (`--batch-size`,
  a CPU without a row, no probe): whole frames. When the probe itself ran out of memory on one whole frame: one
  step below whole frames (`autoconfig.smaller_tile`: half the longer side). A tile the user fixed (`--tile N`)
  is never changed, nor stepped on OOM.
- OOM: each stage runs through its own `OomRunner` (3 attempts, 2 s back-off, the last at batch 1, then
  `DeviceOutOfMemoryError`); the same frames are re-run and nothing leaves the device. A stage the scheduler tiles
  goes on at batch 1: each further OOM halves its tile (`StagePlan.tile_steps`, down to its smallest tile) and
  re-runs the same frame after the back-off; only the smallest tile's OOM is the error. So the (batch, tile)
  sequence is fixed: e.g. (8, whole) → (4, whole) → (1, whole) → (1, 960) → (1, 480) … for a 1080p frame. A
  `stateful` stage re-runs only if it `can_snapshot` (`snapshot()`/`restore()` of its state), so held frames and
  timelines never advance twice; one that cannot is not retried (its error is classified at once).
- Interrupts: the run's stop check (`stages.interrupt`) is called before every stage call, and handed to every
  stage's `set_stop_check` (a no-op by default), which calls it within its own work (tiles, frames, pairs, layers).
- Detected cuts: a chain with a stage that `detects_cuts` gets one `CutBoard` per run (`share_cuts`), handed to
  that stage and every stage after it through `Stage.use_cuts` (a scheduled temporal stage's engine too).
- Everything decided, and every OOM, is reported for the manifest's `schedule` block.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from ..errors import DeviceOutOfMemoryError
from ..frames import FrameBatch
from ..stages.base import DTYPES, Stage, StreamSpec
from ..stages.cutboard import CutBoard
from ..stages.interrupt import StopCheck, never
from ..stages.temporal import RecurrentStage, WindowedStage
from .autoconfig import Tiling, configure, smaller_tile, tile_steps
from .budget import MemoryBudget, memory_budget
from .costs import CostBook, device_name
from .oom import OomPolicy, OomRunner, TileSteps, is_oom
from .temporal import RecurrentRunner, WindowRunner

log = logging.getLogger(__name__)

ProbeMode = Literal["auto", "always", "never"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleOptions:
    #: frames per stage call for every stage (`--batch-size`); None: from cost rows and the memory budget
    batch_size: int | None = None
    policy: OomPolicy = field(default_factory=OomPolicy)
    #: how the back-off waits (tests record it instead of sleeping)
    sleep: Callable[[float], None] = time.sleep
    #: probe combinations no table has: "auto" on CUDA only, "always", "never"
    probe: ProbeMode = "auto"
    #: cost rows; None: the committed tables and the probe cache (`CostBook.default()`)
    book: CostBook | None = None
    #: stands in for the device's measured budget (tests; a forced budget provokes a real OOM on a GPU)
    memory: MemoryBudget | None = None
    #: skip an input whose output is already finished with the same signatures (see schedule.idempotency)
    skip_finished: bool = False
    #: processes sharing the device (worker processes of `--gpus` on one GPU): each plans with its share of the
    #: budget (`budget.memory_budget(device, share)`)
    memory_share: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    """What the scheduler chose for one stage, and why."""

    stage: str
    batch_size: int
    #: tile the stage runs (0: whole frames) when it has one; None for stages without tiles
    tile: int | None
    #: the smaller tiles the OOM policy steps down to at batch 1, largest first; () where the tile is not the
    #: scheduler's to change (a stage without tiles, a tile the user fixed)
    tile_steps: tuple[int, ...] = ()
    #: "override" (--batch-size), "table", "probe", "none" (no row), "probe-oom", "no model"
    source: str
    reasons: tuple[str, ...]


def plan_stage(
    stage: Stage,
    spec: StreamSpec,
    device: torch.device,
    options: ScheduleOptions,
    *,
    reader_batch: int,
    book: CostBook | None = None,
) -> StagePlan:
    """Batch (and tile) of a set-up `stage` fed `spec`; sets the tile on the stage when `stage.tiling()` leaves it
    to the scheduler (the rule is in the module docstring)."""
    advice = stage.tiling()
    tiling = Tiling(multiple=advice[0], overlap=advice[1], min_tile=advice[2]) if advice else None
    if options.batch_size is not None:
        reasons = [f"--batch-size {options.batch_size}: set by the user (no cost row consulted)"]
        if tiling is not None:
            reasons.append("tile: whole frames (no cost row to size a tile)")
        return _plan(stage, spec, tiling, 0, batch_size=options.batch_size, source="override", reasons=reasons)
    dtype = stage.dtype_name
    if "model_signature" not in stage.signature() or dtype not in DTYPES:
        why = f"no model: memory is the frames themselves; batches as read ({reader_batch} frames)"
        return _plan(stage, spec, None, 0, batch_size=reader_batch, source="no model", reasons=[why])
    cuda = device.type == "cuda"
    probing = options.probe == "always" or (options.probe == "auto" and cuda)

    def whole_frames(s: Stage) -> None:
        # rows hold whole-frame costs; the tile is derived from them
        s.set_tile(0)

    unmeasured = None
    if not cuda:
        unmeasured = (
            reader_batch,
            f"no cost row for {stage.name} ({dtype}) on {device_name(device)} and the CPU is not probed: batches "
            f"as read ({reader_batch} frames); `vidpipe bench costs --device cpu` measures one",
        )
    cfg = configure(
        stage,
        spec,
        device,
        dtype,  # type: ignore[arg-type]
        book=book if book is not None else (options.book or CostBook.default()),
        probe=(lambda: copy.copy(stage)) if probing else None,  # a copy shares the loaded weights, not the state
        tiling=tiling,
        memory=options.memory
        if options.memory is not None or options.memory_share == 1
        else memory_budget(device, options.memory_share),
        prepare=whole_frames if tiling else None,
        unmeasured=unmeasured,
    )
    reasons = list(cfg.reasons)
    tile = 0
    if tiling is not None and cfg.row is not None:
        tile = cfg.tile or 0  # configure's reasons say why
    elif tiling is not None and cfg.source == "probe-oom":
        tile = smaller_tile(0, spec.width, spec.height, tiling) or 0
        first = f"{tile}px" if tile else "whole frames (nothing smaller to try)"
        reasons.append(f"tile: {first}, one step below whole frames, as one did not fit the probe")
    elif tiling is not None:
        reasons.append("tile: whole frames (no cost row to size a tile)")
    return _plan(stage, spec, tiling, tile, batch_size=cfg.batch_size, source=cfg.source, reasons=reasons)


def _plan(
    stage: Stage,
    spec: StreamSpec,
    tiling: Tiling | None,
    tile: int,
    *,
    batch_size: int,
    source: str,
    reasons: list[str],
) -> StagePlan:
    """The plan, with `tile` set on the stage and the OOM policy's smaller tiles where the scheduler tiles it; the
    stage's own tile (fixed by the user, or none) otherwise."""
    if tiling is None:
        return StagePlan(
            stage=stage.name, batch_size=batch_size, tile=stage.tile, source=source, reasons=tuple(reasons)
        )
    stage.set_tile(tile)
    steps = tile_steps(tile, spec.width, spec.height, tiling)
    if steps:
        reasons.append(f"out of memory at batch 1: tiles of {', '.join(map(str, steps))}px in turn")
    return StagePlan(
        stage=stage.name, batch_size=batch_size, tile=tile, tile_steps=steps, source=source, reasons=tuple(reasons)
    )


class ScheduledStage(Stage):
    """A set-up stage with its plan and OOM runner; it is itself a `Stage`, so a chain of them runs as any chain."""

    def __init__(
        self,
        stage: Stage,
        plan: StagePlan,
        device: torch.device,
        *,
        policy: OomPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        check: StopCheck = never,
    ) -> None:
        self.stage, self.plan, self.device = stage, plan, device
        self.check = check
        stage.set_stop_check(check)
        self.name, self.context, self.unit = stage.name, stage.context, stage.unit
        self.detects_cuts = stage.detects_cuts
        self.runner = OomRunner(plan.batch_size, policy=policy or OomPolicy(), sleep=sleep)
        self.runner.tiles = TileSteps(plan.tile or 0, plan.tile_steps, stage.set_tile) if plan.tile_steps else None
        # temporal stages declare a shape, and the engine provides their process/flush under the same policy: a
        # recurrent one re-runs a sub-batch from its kept state, a windowed one shrinks its window T (the
        # runner's size) over the same frames
        self.engine: RecurrentRunner | WindowRunner | None = None
        if isinstance(stage, RecurrentStage):
            self.engine = RecurrentRunner(stage, self.runner)
        elif isinstance(stage, WindowedStage):
            self.runner = OomRunner(stage.window, policy=policy or OomPolicy(), sleep=sleep)
            self.engine = WindowRunner(stage, self.runner)

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        return self.stage.setup(device, spec)

    def use_cuts(self, board: CutBoard | None) -> None:
        self.stage.use_cuts(board)
        if self.engine is not None:
            self.engine.use_cuts(board)

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        self.check()
        if self.engine is not None:
            return self.engine.process(batch)
        if not self.stage.stateful:
            return self.runner.run(batch, self.stage.process)  # type: ignore[arg-type]
        if self.stage.can_snapshot:
            return self.runner.run_stateful(batch, self.stage.process, self.stage.snapshot, self.stage.restore)
        return self._once(lambda: self.stage.process(batch), batch.device)

    def flush(self) -> FrameBatch | None:
        self.check()
        if self.engine is not None:
            return self.engine.flush()
        if not self.stage.can_snapshot:
            return self._once(self.stage.flush, self.device)
        return self.runner.call(self.stage.flush, self.device, self.stage.snapshot, self.stage.restore)

    def _once(self, fn: Callable[[], FrameBatch | None], device: torch.device) -> FrameBatch | None:
        """A stateful stage that cannot snapshot (`Stage.can_snapshot` False): re-running it would advance its
        state twice, so an OOM is not retried but classified at once."""
        try:
            return fn()
        except Exception as e:
            if not is_oom(e):
                raise
            raise DeviceOutOfMemoryError(
                f"out of memory on {device} in {self.name}, which keeps state between batches and cannot re-run "
                "one (no snapshot/restore): not retried. Lower the resolution or the batch size, or free memory"
            ) from e

    def signature(self) -> dict[str, Any]:
        return self.stage.signature()

    def schedule_report(self) -> dict[str, Any]:
        """This stage's entry in the manifest's `schedule` block."""
        return {
            "stage": self.name,
            "batch_size": self.plan.batch_size,
            "batch_size_at_end": self.runner.size,
            "tile": self.stage.tile,
            "source": self.plan.source,
            "reasons": list(self.plan.reasons),
            "oom_events": [asdict(e) for e in self.runner.events],
        }


def schedule_chain(
    stages: Sequence[Stage],
    specs: Sequence[StreamSpec],
    device: torch.device,
    options: ScheduleOptions,
    *,
    reader_batch: int,
    check: StopCheck = never,
) -> list[ScheduledStage]:
    """The set-up `stages` (fed `specs[i]` each), each with its plan and OOM runner, in order; `check` is the run's
    stop request, called between and within stage calls."""
    book = options.book or (CostBook.default() if options.batch_size is None and stages else None)
    out = []
    for stage, spec in zip(stages, specs, strict=True):
        plan = plan_stage(stage, spec, device, options, reader_batch=reader_batch, book=book)
        log.info(
            "schedule: %s batch %d%s (%s)",
            stage.name,
            plan.batch_size,
            f", tile {plan.tile or 'whole frames'}" if plan.tile is not None else "",
            plan.source,
        )
        out.append(ScheduledStage(stage, plan, device, policy=options.policy, sleep=options.sleep, check=check))
    share_cuts(out)
    return out


def share_cuts(chain: Sequence[Stage]) -> CutBoard | None:
    """One `CutBoard` for this run of `chain` (set-up stages in run order) when a stage `detects_cuts`: handed to
    it and every stage after it; stages before it (and every stage of a chain without one) are told None, so no
    board of an earlier run stays with a stage reused."""
    first = next((i for i, s in enumerate(chain) if s.detects_cuts), len(chain))
    board = CutBoard() if first < len(chain) else None
    for i, stage in enumerate(chain):
        stage.use_cuts(board if i >= first else None)
    return board


def schedule_block(
    chain: Sequence[ScheduledStage], device: torch.device, options: ScheduleOptions, reader_batch: int
) -> dict[str, Any]:
    """The manifest's `schedule` block: the policy, the reader's batch, and each stage's plan and OOM events."""
    return {
        "device": str(device),
        "oom_policy": {"attempts": options.policy.attempts, "backoff_s": options.policy.backoff_s},
        "reader_batch": reader_batch,
        "stages": [s.schedule_report() for s in chain],
    }
