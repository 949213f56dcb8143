"""Bounded hand-offs between threads: an end-of-stream sentinel, a worker's exception re-raised in the caller,
threads always joined. Memory is O(maxsize × item), never O(stream)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()
#: how often a blocked put/get wakes to check for cancellation, seconds
_POLL_S = 0.05


def _noop() -> None:
    return None


class Cancelled(Exception):
    """Raised inside a worker whose consumer went away; never escapes the worker."""


class _Busy:
    """A worker thread's seconds of work: its running time less the time it waited on its queue (what tells the
    pipeline which thread bounds a run, runtime/timings.py). Written by the worker, read by anyone."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended: float | None = None
        self.waited = 0.0

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return max(0.0, (self.ended or time.perf_counter()) - self.started - self.waited)


class Producer(Generic[T]):
    """Runs `work(emit)` on a thread; iterating the Producer yields what `work` emits, in order.

    `emit` blocks while the queue is full (back-pressure) and raises `Cancelled` once `close()` was called,
    so the worker unwinds through its own `finally` blocks. An exception in `work` is re-raised in the
    iterating thread after the items emitted before it. `check` is called while the consumer waits.
    """

    def __init__(
        self, name: str, work: Callable[[Callable[[T], None]], None], maxsize: int, check: Callable[[], None] = _noop
    ) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._work = work
        self._check = check
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._busy = _Busy()

    @property
    def busy_s(self) -> float:
        """Seconds the worker has worked, not counting its waits for room in the queue."""
        return self._busy.seconds

    def _emit(self, item: T) -> None:
        t = time.perf_counter()
        try:
            while True:
                if self._stop.is_set():
                    raise Cancelled
                try:
                    self._q.put(item, timeout=_POLL_S)
                    return
                except queue.Full:
                    continue
        finally:
            self._busy.waited += time.perf_counter() - t

    def _run(self) -> None:
        tail: object = _END
        self._busy.started = time.perf_counter()
        try:
            self._work(self._emit)
        except Cancelled:
            return
        except BaseException as e:  # handed to the consumer, which re-raises it
            tail = e
        finally:
            self._busy.ended = time.perf_counter()
        while not self._stop.is_set():
            try:
                self._q.put(tail, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[T]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            try:
                item = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                self._check()
                if not self._thread.is_alive() and self._q.empty():
                    return  # cancelled worker: nothing more will come
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def raise_if_cancelled(self) -> None:
        """For the worker while it waits on something other than the queue (a buffer pool): `close()` ends it."""
        if self._stop.is_set():
            raise Cancelled

    def close(self) -> None:
        """Stop the worker (if running) and join it."""
        self._stop.set()
        if self._started:
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):  # unblock a worker waiting on a full queue
                    self._q.get_nowait()
                self._thread.join(timeout=_POLL_S)

    def __enter__(self) -> Producer[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(Generic[T, R]):
    """Runs `work(items)` on a thread, where `items` iterates what `put` hands over until `finish()`.

    `put` blocks while the queue is full and re-raises the worker's exception as soon as it is known;
    `finish` waits for the worker and returns its result (or raises its exception). `check` is called while
    waiting (the pipeline's stop request raises from there).
    """

    def __init__(
        self, name: str, work: Callable[[Iterator[T]], R], maxsize: int, check: Callable[[], None] = _noop
    ) -> None:
        self._q: queue.Queue[object] = queue.Queue(maxsize=max(1, maxsize))
        self._work = work
        self._check = check
        self._error: BaseException | None = None
        self._result: R | None = None
        self._stop = threading.Event()
        self._busy = _Busy()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy_s(self) -> float:
        """Seconds the worker has worked, not counting its waits for the next item."""
        return self._busy.seconds

    def _items(self) -> Iterator[T]:
        while True:
            t = time.perf_counter()
            try:
                item = self._q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise Cancelled from None
                continue
            finally:
                self._busy.waited += time.perf_counter() - t
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def _run(self) -> None:
        self._busy.started = time.perf_counter()
        try:
            self._result = self._work(self._items())
        except Cancelled:
            pass
        except BaseException as e:
            self._error = e
        finally:
            self._busy.ended = time.perf_counter()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def check(self) -> None:
        """Raise the worker's exception if it failed (for a caller waiting on something the worker would have
        released, such as a pooled buffer)."""
        self._raise_if_failed()

    def put(self, item: T) -> None:
        while True:
            self._raise_if_failed()
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} stopped before the end of the stream")
            try:
                self._q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                self._check()

    def finish(self) -> R:
        while self._thread.is_alive():
            try:
                self._q.put(_END, timeout=_POLL_S)
                break
            except queue.Full:
                self._raise_if_failed()
                self._check()
        while self._thread.is_alive():  # joined in slices so a stop request is still seen while it drains
            self._thread.join(timeout=_POLL_S)
            self._check()
        self._thread.join()
        self._raise_if_failed()
        return self._result  # type: ignore[return-value]

    def cancel(self) -> None:
        """Abandon the stream: the worker sees `Cancelled` and is joined."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get_nowait()
            self._thread.join(timeout=_POLL_S)
