"""The Stage contract: every frame-producing step (resize, upscale, interpolate, matte, …) subclasses `Stage`, and
the runtime never special-cases a model: each optional hook is declared here with a default, so runtime/,
schedule/ and jobs/ call hooks and never probe a stage for them.

Lifecycle: `setup(device, spec)` once (load weights here, never per frame) → `process(batch)` per batch →
`flush()` once at end of stream. A stage may hold frames back (it declares `context`), so `process` may return
None, and `flush` returns what is still held.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..errors import StageError, UsageError
from ..frames import FrameBatch, StreamSpec
from .interrupt import StopCheck

if TYPE_CHECKING:
    from ..media.source_pass import SourcePass
    from .cutboard import CutBoard

Unit = Literal["frame", "frame_pair", "window"]

#: compute dtypes a model stage accepts by name
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_dtype(name: str) -> str:
    if name != "auto" and name not in DTYPES:
        raise UsageError(f"invalid dtype {name!r}; valid: auto, {', '.join(DTYPES)}")
    return name


def resolve_dtype(name: str, device: torch.device) -> tuple[str, torch.dtype]:
    """`auto` is fp16 on CUDA and fp32 on the CPU; fp16 on the CPU is refused (slow and poorly supported)."""
    name = check_dtype(name)
    if name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and name == "fp16":
        raise UsageError("fp16 is for CUDA devices; use fp32 or bf16 on the CPU")
    return name, DTYPES[name]


@dataclass(frozen=True, slots=True)
class Reach:
    """Frames a stage needs around the frames it outputs: `before` the first one and `after` the last one."""

    before: int = 0
    after: int = 0

    def __post_init__(self) -> None:
        if self.before < 0 or self.after < 0:
            raise UsageError(f"a stage's reach must be ≥ 0 frames on each side, got {self.before}/{self.after}")

    def __add__(self, other: Reach) -> Reach:
        """Two stages in a chain: the first one's reach is needed around everything the second one needs."""
        return Reach(self.before + other.before, self.after + other.after)


@dataclass(frozen=True, slots=True)
class GridRule:
    """Where a stage's output grid allows a segment boundary (interpolation's): the source is counted from
    `start` at `rate`, the output is at `out_rate` (None: a multiplier, any frame on the counted grid will do)."""

    start: Fraction
    rate: Fraction
    out_rate: Fraction | None

    def allows(self, index: int, time: Fraction) -> bool:
        if time != self.start + index / self.rate:
            return False
        return self.out_rate is None or (index * self.out_rate / self.rate).denominator == 1


class Stage(ABC):
    """One step of the chain. Only `process` is required; every other hook has a default that fits a stateless
    per-frame stage, so the runtime, the scheduler and jobs call hooks and never look for them (no
    `getattr`/`hasattr` of a stage outside stages/)."""

    #: short name used in logs, manifests and the CLI
    name: str = "stage"
    #: frames of look-behind + look-ahead the stage needs to produce one output frame (RIFE 1, a temporal SR
    #: model its window); 0 for per-frame stages
    context: int = 0
    #: what the scheduler counts cost in
    unit: Unit = "frame"
    #: the compute dtype it resolved in setup (`fp32`, `fp16`, `bf16`); None: no model, its memory is the frames
    dtype_name: str | None = None
    #: it takes the decoder's 4:2:0 planes (`PlanarBatch`) instead of RGB where the runner offers them
    planar_input: bool = False
    #: its tile in pixels (0: whole frames); None: the stage is not tiled. A stage never sizes its own tile: the
    #: user fixes it, or the scheduler sets it (`tiling()`/`set_tile`), and steps it down on out-of-memory
    tile: int | None = None
    #: `snapshot()`/`restore()` capture all the state it carries between calls, so the scheduler may re-run a
    #: batch after an out-of-memory error. A stateful stage without it is not retried (see `stateful`)
    can_snapshot: bool = False
    #: its output depends on counting frames from the start (interpolation's grid), so a dropped frame
    #: (`--on-corrupt skip`) would move every later boundary: such a file is processed whole
    counts_frames: bool = False
    #: an analysis stage that fills the run's `CutBoard` (see `use_cuts`); the scheduler makes a board only for
    #: a chain that has one
    detects_cuts: bool = False

    # -- lifecycle --
    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        """Prepare on `device` for input described by `spec` (load weights here, never per frame); return the
        output description. Default: frames keep their shape and rate."""
        return spec

    @abstractmethod
    def process(self, batch: FrameBatch) -> FrameBatch | None:
        """Transform one batch; may return None while it gathers context."""

    def flush(self) -> FrameBatch | None:
        """End of stream: return frames still held, if any. Default: none are held."""
        return None

    def signature(self) -> dict[str, Any]:
        """Everything that changes this stage's output (parameters, weights hash): for manifests and skip logic.
        Default: the name alone (a stage without parameters)."""
        return {"stage": self.name}

    def report(self) -> dict[str, Any]:
        """What the stage found while running (interpolation's scene cuts, counts), for the manifest's
        `stage_reports`; an empty report is left out. Default: {}."""
        return {}

    # -- carried state (the scheduler's OOM retries) --
    @property
    def stateful(self) -> bool:
        """The stage carries state from call to call (held frames, timelines), so a failed call cannot simply be
        re-run. Default: it does exactly when it has context. The scheduler tells "no state" (`stateful` False:
        re-run freely) from "state it can restore" (`can_snapshot`: re-run from `snapshot()`) from "state it
        cannot snapshot" (neither: an OOM is not retried but reported at once)."""
        return self.context > 0

    def snapshot(self) -> object:
        """The carried state, to `restore` before re-running a batch; only called when `can_snapshot`."""
        return None

    def restore(self, state: object) -> None:
        """Back to a `snapshot()`; the snapshot stays valid for another restore."""
        return None  # a stage without state has nothing to restore

    # -- tiles and costs (schedule/chain.py, schedule/costs.py) --
    def tiling(self) -> tuple[int, int, int] | None:
        """(size multiple, overlap, smallest tile) when the scheduler may choose this stage's tile (and step it
        down on out-of-memory, schedule/chain.py); None: it may not (not tiled, or the user fixed the tile).
        Default: None."""
        return None

    def set_tile(self, tile: int) -> None:
        """Run `tile`-pixel tiles (0: whole frames) from the next batch on; called only after `tiling()` offered."""
        raise StageError(f"stage {self.name} is not tiled (its tiling() is None)")

    def probe_call(self, batch: FrameBatch) -> object:
        """One unit of its work on `batch`, as the scheduler's cost probe times it (schedule/costs.py). Default:
        `process`; a temporal stage, whose `process` the engine provides, runs its own unit instead."""
        return self.process(batch)

    def cost_signature(self) -> dict[str, Any]:
        """What its cost rows are keyed by: `signature()` less what the scheduler derives from a row (the tile).
        Default: `signature()`."""
        return self.signature()

    # -- a pass over the input before the run (media/source_pass.py, runtime/source_pass.py) --
    def analyse_source(self, source: SourcePass) -> None:
        """The input file, to read as a whole before the main pass (`source.batches`: the frames the run reads,
        numbered alike); offered after `setup`, only to a stage given the source's frames and only when they come
        from a file. Default: ignored."""
        return None

    # -- detected cuts (stages/cutboard.py) --
    def use_cuts(self, board: CutBoard | None) -> None:
        """The run's cut board, handed to the stage that `detects_cuts` (which fills it) and to every stage after
        it (which may read it: a frame's cuts are final once the frame reaches them); None: the run has no cut
        detection before this stage. Called once per run, after `setup`. Default: ignored."""
        return None

    # -- interrupts --
    def set_stop_check(self, check: StopCheck) -> None:
        """The run's stop request, a callable that raises `Interrupted`, for a stage whose calls take long to call
        between its own units of work (tiles, pairs, layers; see stages/interrupt.py). Default: ignored (the
        scheduler checks between calls)."""
        return None

    # -- time: segments and shares of a video (jobs, several GPUs) --
    @property
    def reach(self) -> Reach:
        """Frames needed before the first and after the last output frame (pre-roll and look-ahead) when a run
        starts or ends mid-video, so that those frames are the whole run's; reaches of chained stages add
        (`schedule.temporal.chain_reach`). Default: none."""
        return Reach()

    @property
    def starts_mid_stream(self) -> bool:
        """A run of it may start inside the video (a job segment, a GPU's share) and write the frames a whole run
        would, when fed its `reach` around the frames it writes (`schedule.temporal.feed_span`). Default: a stage
        that holds no `context`: its needs, if any, are its reach (a recurrent stage's pre-roll, a windowed
        one's overlap), which is finite; a stage with context and no reach to feed (the cut detectors) is not."""
        return self.context == 0

    def segment_grid(self, start: Fraction) -> GridRule | None:
        """Where segment boundaries may lie for a set-up stage over a source whose first frame is at `start`
        (interpolation's output grid); None: anywhere its `starts_mid_stream` allows."""
        return None
