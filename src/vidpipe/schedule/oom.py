"""The OOM policy, exactly as seed 001 §0 fixes it: 3 attempts, a 2 s back-off between them, the last attempt at
batch size 1; an OOM at batch size 1 is a `DeviceOutOfMemoryError` and the run stops.

`OomRunner` applies it to one batch of frames and a function that processes a sub-batch (a stage's `process`, or
a model's forward): the batch is cut into sub-batches of the current size, and a sub-batch that runs out of
memory is re-run, the same frames, at a smaller size (halved, then 1 on the last attempt), after the back-off
and after handing cached blocks back to the driver. Results are concatenated in order, so nothing is dropped or
duplicated. The smaller size is kept for the following sub-batches and calls (the memory was short once, it will
be again); `reset` goes back to the planned size.

A tiled stage (one whose tile the scheduler chose, `TileSteps`) goes on past batch 1: an OOM there, where the seed
would stop, sets the next smaller tile and re-runs the same frame after the same back-off, one step per OOM, until
the smallest tile runs out of memory too (then `DeviceOutOfMemoryError`). The batch is never shrunk and the tile
never stepped at the same time, so the sequence of (batch, tile) sizes is fixed: batch first, then tile.

What the runner never does:
- move anything to another device: there is no CUDA → CPU fallback, and a function whose result is not on its
  input's device is refused (`DeviceError`);
- retry anything but an out-of-memory error: any other error, a CUDA error included (it may have poisoned the
  context), propagates unchanged on its first occurrence;
- re-run a function that keeps state across calls as if it had none: `run` is for functions whose output
  depends on their input alone (frame-independent stages, a model's forward); `run_stateful` takes a stage's
  `snapshot`/`restore` and puts its state back before the same frames are re-run (a stage with context, such as
  interpolation, whose held frames and timeline a failed call may have advanced).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..errors import DeviceError, DeviceOutOfMemoryError, UsageError
from ..frames import FrameBatch

log = logging.getLogger(__name__)

#: seed 001 §0: attempts per failing sub-batch, the first one included
OOM_ATTEMPTS = 3
#: seed 001 §0: back-off between attempts
OOM_BACKOFF_S = 2.0

#: failures of an allocation that are memory shortage, not a broken device (cuDNN/cuBLAS report their own
#: workspace allocation failures as RuntimeError; older torch raised RuntimeError for the allocator too)
_OOM_MESSAGES = ("CUDA out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED")

T = TypeVar("T", FrameBatch, torch.Tensor)


@dataclass(frozen=True, slots=True, kw_only=True)
class OomPolicy:
    attempts: int = OOM_ATTEMPTS
    backoff_s: float = OOM_BACKOFF_S

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"OOM attempts must be ≥ 1, got {self.attempts}")
        if self.backoff_s < 0:
            raise UsageError(f"OOM back-off must be ≥ 0 s, got {self.backoff_s}")

    def next_size(self, size: int, attempt: int) -> int:
        """Batch size for attempt `attempt + 1` after attempt `attempt` (1-based) failed at `size`: halved, and 1
        for the last attempt."""
        return 1 if attempt + 1 >= self.attempts else max(1, size // 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class OomEvent:
    """One recovered or fatal OOM, for logs and the manifest."""

    device: str
    #: positions in the batch given to `run` of the sub-batch that failed
    start: int
    stop: int
    size: int
    attempt: int
    #: the tile of the failed attempt (0: whole frames) for a stage whose tile the scheduler steps; else None
    tile: int | None = None


class TileSteps:
    """The smaller tiles a tiled stage steps down to once its batch is 1, largest first (the scheduler's sizes,
    `autoconfig.tile_steps`), and how to set one on the stage."""

    def __init__(self, current: int, smaller: Sequence[int], set_tile: Callable[[int], None]) -> None:
        self.current = current
        self._left = list(smaller)
        self._set_tile = set_tile

    @property
    def smaller(self) -> bool:
        """A smaller tile is left to try."""
        return bool(self._left)

    def step(self) -> None:
        """Set the next smaller tile on the stage."""
        self.current = self._left.pop(0)
        self._set_tile(self.current)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


def release_cached(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back to the driver (CUDA only; nothing to do elsewhere)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


def _length(x: FrameBatch | torch.Tensor) -> int:
    return len(x) if isinstance(x, FrameBatch) else int(x.shape[0])


def _slice(x: T, start: int, stop: int) -> T:
    return x.slice(start, stop) if isinstance(x, FrameBatch) else x[start:stop]


def _concat(parts: list[T]) -> T:
    if isinstance(parts[0], FrameBatch):
        return FrameBatch.concat(parts)  # type: ignore[arg-type, return-value]
    return torch.cat(parts)  # type: ignore[arg-type, return-value]


class OomRunner:
    """Runs `fn` over a batch in sub-batches of at most `batch_size` frames under the seed's OOM policy.

    `sleep` and `release` are injectable so tests run without waiting or a GPU.
    """

    def __init__(
        self,
        batch_size: int,
        *,
        policy: OomPolicy = OomPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        release: Callable[[torch.device], None] = release_cached,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be ≥ 1, got {batch_size}")
        self.planned = batch_size
        self.size = batch_size
        self.policy = policy
        self._sleep = sleep
        self._release = release
        #: every OOM seen, recovered or not
        self.events: list[OomEvent] = []
        #: where the policy goes on at batch 1 for a tiled stage (set by the scheduler); None: it stops there
        self.tiles: TileSteps | None = None

    def reset(self) -> None:
        """Go back to the planned size (e.g. at the start of a new video)."""
        self.size = self.planned

    def run(self, batch: T, fn: Callable[[T], T]) -> T:
        """`fn` over `batch` in order, sub-batch by sub-batch; raises `DeviceOutOfMemoryError` when a single
        frame does not fit."""
        if _length(batch) == 0:
            return self._checked(fn(batch), batch.device)
        return _concat(self._sub_batches(batch, fn))  # type: ignore[arg-type]

    def run_stateful(
        self,
        batch: FrameBatch,
        fn: Callable[[FrameBatch], FrameBatch | None],
        snapshot: Callable[[], object],
        restore: Callable[[object], None],
    ) -> FrameBatch | None:
        """`run` for a stage that keeps state between calls: its state is saved before each sub-batch and
        restored before that sub-batch is re-run. Such a stage may return any number of frames per call, or None
        while it gathers context: the frames it returns are concatenated in order (None when there are none)."""
        if len(batch) == 0:
            out = fn(batch)
            return None if out is None else self._checked(out, batch.device)
        parts = self._sub_batches(batch, fn, snapshot, restore)
        return FrameBatch.concat(parts) if parts else None

    def call(
        self,
        fn: Callable[[], FrameBatch | None],
        device: torch.device,
        snapshot: Callable[[], object],
        restore: Callable[[object], None],
    ) -> FrameBatch | None:
        """One call that cannot be cut into sub-batches (a stage's end-of-stream flush, bounded by the frames the
        stage holds): after an OOM its state is restored and the same call re-run after the back-off, up to the
        policy's attempts. Events record the current batch size, which this call does not use."""
        state = snapshot()
        attempt = 1
        while True:
            try:
                out = fn()
            except Exception as e:
                if not is_oom(e):
                    raise
                self.events.append(OomEvent(device=str(device), start=0, stop=0, size=self.size, attempt=attempt))
                if attempt >= self.policy.attempts:
                    raise DeviceOutOfMemoryError(
                        f"out of memory on {device} at the end of the stream after {attempt} attempt(s); lower the "
                        "resolution or free GPU memory"
                    ) from e
                log.warning("out of memory on %s at the end of the stream (attempt %d); retrying", device, attempt)
            else:
                return None if out is None else self._checked(out, device)
            restore(state)
            attempt += 1
            self._release(device)
            self._sleep(self.policy.backoff_s)

    def _sub_batches(
        self,
        batch: T,
        fn: Callable[[T], T | None],
        snapshot: Callable[[], object] | None = None,
        restore: Callable[[object], None] | None = None,
    ) -> list[T]:
        return self.run_ranges(_length(batch), batch.device, lambda a, b: fn(_slice(batch, a, b)), snapshot, restore)

    def run_ranges(
        self,
        n: int,
        device: torch.device,
        fn: Callable[[int, int], T | None],
        snapshot: Callable[[], object] | None = None,
        restore: Callable[[object], None] | None = None,
    ) -> list[T]:
        """The policy over positions 0..n−1 of any sequence: `fn(start, stop)` for consecutive ranges of at most
        the current size, each range that runs out of memory re-run at a smaller size. What `run` does for a
        batch; a windowed stage's engine uses it with ranges of kept frames (the window length is the size)."""
        parts: list[T] = []
        start = 0
        attempt = 1
        tried: list[str] = []
        state = snapshot() if snapshot is not None else None
        while start < n:
            stop = min(n, start + self.size)
            tile = self.tiles.current if self.tiles is not None else None
            tried.append(f"{stop - start}" if tile is None else f"{stop - start} ({_tile(tile)})")
            try:
                out = fn(start, stop)
            except Exception as e:
                if not is_oom(e):
                    raise
                event = OomEvent(device=str(device), start=start, stop=stop, size=self.size, attempt=attempt, tile=tile)
                self.events.append(event)
                # at batch 1 a tiled stage steps its tile down instead of stopping (tiles set only past the `except`)
                tiles = self.tiles if self.size == 1 and self.tiles is not None and self.tiles.smaller else None
                if tiles is None and (self.size == 1 or attempt >= self.policy.attempts):
                    why = "one frame does not fit" if self.size == 1 else "no attempts left"
                    why += f" even in {tile}px tiles" if tile else ""
                    raise DeviceOutOfMemoryError(
                        f"out of memory on {device} for frames {start}..{stop - 1} of a batch of {n} after "
                        f"{attempt} attempt(s) at batch sizes {', '.join(tried)}: {why}. Lower the "
                        "resolution, use a smaller tile, or free GPU memory"
                    ) from e
                smaller = self.policy.next_size(self.size, attempt)
                retry = "a smaller tile" if tiles is not None else f"batch size {smaller}"
                log.warning(
                    "out of memory on %s at batch size %d%s (attempt %d); retrying from frame %d at %s in %.1f s",
                    device,
                    self.size,
                    "" if tile is None else f", {_tile(tile)}",
                    attempt,
                    start,
                    retry,
                    self.policy.backoff_s,
                )
            else:
                if out is not None:
                    parts.append(self._checked(out, device))
                start, attempt, tried = stop, 1, []
                if snapshot is not None and start < n:
                    state = snapshot()
                continue
            # Outside the `except`: the exception and its traceback (which pin the failed attempt's tensors)
            # are gone, so releasing the cache can actually return their memory.
            if restore is not None:
                restore(state)
            if tiles is not None:
                tiles.step()
            else:
                self.size = self.policy.next_size(self.size, attempt)
            attempt += 1
            self._release(device)
            self._sleep(self.policy.backoff_s)
        return parts

    def _checked(self, out: T, device: torch.device) -> T:
        if out.device != device:
            raise DeviceError(
                f"a stage returned frames on {out.device} for input on {device}; moving work to another device "
                "(a CPU fallback) is not allowed"
            )
        return out


def _tile(tile: int) -> str:
    return f"{tile}px tiles" if tile else "whole frames"
