"""Reused host buffers for frames crossing between the CPU and the device.

`.cpu()` into fresh memory runs at ~1.8 GB/s on the H100 host, a copy into reused page-locked memory at
~54 GB/s (GPU-NOTES), and only page-locked memory lets a copy run asynchronously. A pool hands out N×L
buffers, pinned when the device is CUDA; the number of buffers is bounded, so a stalled consumer stalls the
producer instead of growing memory.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable

import torch

from ..errors import InputTooLargeError
from ..schedule.budget import budget, host_memory
from ..stages.base import StreamSpec


class HostBuffers:
    """At most `count` buffers of `elements` values per row; `get(rows)` blocks while all are in use."""

    def __init__(
        self, elements: int, dtype: torch.dtype, count: int, *, pin: bool, check: Callable[[], None] | None = None
    ) -> None:
        self.elements, self.dtype, self.count, self.pin = elements, dtype, count, pin
        #: called while waiting for a free buffer; raises to end the wait (whoever returns buffers has failed)
        self.check = check or (lambda: None)
        self._free: queue.Queue[tuple[torch.Tensor, torch.cuda.Event | None]] = queue.Queue()
        self._made = 0
        self._lock = threading.Lock()

    def _alloc(self, rows: int) -> torch.Tensor:
        return torch.empty(rows, self.elements, dtype=self.dtype, pin_memory=self.pin)

    def get(self, rows: int) -> torch.Tensor:
        """A buffer of at least `rows` rows, free to write once returned (any pending copy out of it is done)."""
        while True:
            with self._lock:
                if self._free.empty() and self._made < self.count:
                    self._made += 1
                    return self._alloc(rows)
            try:
                buf, event = self._free.get(timeout=0.1)
            except queue.Empty:
                self.check()
                continue
            if event is not None:
                event.synchronize()
            if buf.shape[0] >= rows:
                return buf
            return self._alloc(rows)  # too small for this batch: replaced by a larger one (same count)

    def put(self, buf: torch.Tensor, event: torch.cuda.Event | None = None) -> None:
        """Give `buf` back; `event`, if given, marks the end of a copy still reading from it."""
        self._free.put((buf, event))


def frame_bytes(spec: StreamSpec) -> int:
    """One frame as the reader and writer hold it on the host: RGB(A), 1 or 2 bytes a channel."""
    return spec.width * spec.height * (4 if spec.alpha else 3) * (2 if spec.bit_depth > 8 else 1)


def host_frame_bytes(
    source: StreamSpec, output: StreamSpec, *, batch: int, reader_queue: int, encode_queue: int
) -> int:
    """Host memory a run's frame queues may hold at once: on each side the queued batches, one being filled and
    one being worked on; output batches are the output's frame size and, after a rate change, that many times
    the frames (interpolation to twice the rate gives two frames per input frame)."""
    per_batch = batch
    if output.rate is not None and source.nominal_rate:
        per_batch = batch * max(1, math.ceil(output.rate / source.nominal_rate))
    return (reader_queue + 2) * batch * frame_bytes(source) + (encode_queue + 2) * per_batch * frame_bytes(output)


def check_host_memory(need: int, *, available_mb: int | None = None, what: str = "") -> None:
    """Refuse a run whose frame buffers (`need` bytes) exceed the RAM the budget leaves (free RAM less the
    headroom of schedule/budget.py), before anything is decoded: the alternative is an allocation failing
    mid-run, after minutes of work."""
    if available_mb is None:
        available_mb = budget(*host_memory()).effective_mb
    if need > available_mb * 2**20:
        raise InputTooLargeError(
            f"{what}the frame buffers of this run need {need >> 20} MB of RAM but only {available_mb} MB are "
            "free for them; lower --batch-size, or free memory"
        )
