"""The Stage contract: every frame-producing step (resize, upscale, interpolate, matte, …) implements it, and the
runtime never special-cases a model.

Lifecycle: `setup(device, spec)` once (load weights here, never per frame) → `process(batch)` per batch →
`flush()` once at end of stream. A stage may hold frames back (it declares `context`), so `process` may return
None, and `flush` returns what is still held.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import torch

from ..errors import UsageError
from ..frames import FrameBatch, StreamSpec

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


@runtime_checkable
class Stage(Protocol):
    #: short name used in logs, manifests and the CLI
    name: str
    #: frames of look-behind + look-ahead the stage needs to produce one output frame (RIFE 1, a temporal SR
    #: model its window); 0 for per-frame stages
    context: int
    #: what the scheduler counts cost in
    unit: Unit

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        """Prepare on `device` for input described by `spec`; return the output description."""
        ...

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        """Transform one batch; may return None while it gathers context."""
        ...

    def flush(self) -> FrameBatch | None:
        """End of stream: return frames still held, if any."""
        ...

    # Optional: `report() -> dict[str, Any]`, what the stage found while running (interpolation's scene cuts,
    # counts); the pipeline puts it in the manifest under `stage_reports`.
    # Optional scheduler hooks (vidpipe.schedule.chain; the scheduler looks for them, never for a stage's name):
    # `snapshot() -> state` / `restore(state)` let a stage with context re-run a batch after an out-of-memory
    # error without advancing its state twice (without them such a stage is not retried);
    # `cost_signature() -> dict` is what its cost rows are keyed by (default: `signature()`);
    # `tiling() -> (multiple, overlap, min_tile) | None` and `set_tile(px)` let the scheduler choose its tile;
    # `set_stop_check(check)` hands a stage whose calls take long the run's stop request, a callable that raises
    # `Interrupted`, to call between its own units of work (tiles, pairs, layers; see stages/interrupt.py).

    def signature(self) -> dict[str, Any]:
        """Everything that changes this stage's output (parameters, weights hash): for manifests and skip logic."""
        ...
