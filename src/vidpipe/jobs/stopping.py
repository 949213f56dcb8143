"""A job's stop on SIGINT/SIGTERM: the signal recorded first, then `Interrupted` raised where the job is.

Why the record: the exception can be swallowed on the way out (an `except Exception` such as logging's
`Handler.emit`, which hands it to `handleError`); the record cannot, and every step of the job that commits
checks it (`Stop.check`), so a swallowed stop still ends the job before its next commit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import Interrupted


def interrupted(signum: int) -> Interrupted:
    e = Interrupted(f"interrupted by {signal.Signals(signum).name}; state saved, run the job again to resume")
    e.exit_code = 128 + signum
    return e


class Stop:
    """The first SIGINT/SIGTERM a job got, recorded before `Interrupted` is raised: the exception can be swallowed
    (a signal landing inside a logging handler's `emit`), the record cannot."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def error(self) -> Interrupted | None:
        return None if self.signum is None else interrupted(self.signum)

    def check(self) -> None:
        if (e := self.error()) is not None:
            raise e


@contextmanager
def stop_at_once() -> Iterator[Stop]:
    """SIGINT/SIGTERM raise Interrupted where the job is (hashing, joining, an upload), after recording the
    signal in the `Stop` yielded. `pipeline.run` installs its own handlers while a segment runs, which stop at
    the next batch instead."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.signum is None:
            stop.signum = signum
        raise interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
