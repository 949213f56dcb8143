"""One worker process of `vidpipe run --gpus`: spawned fresh (no CUDA state inherited), it sees one GPU
(`CUDA_VISIBLE_DEVICES`, set before anything touches CUDA) as `cuda:0`, builds its own stage chain once (models
stay loaded between items) and runs the items it is sent, each with its own reader and writer
(`runtime.pipeline.run`), until it is sent None.

Messages go back over the worker's own pipe (never a queue shared between workers: a worker killed mid-write
would leave a shared queue's lock held): `("ready", seconds to start)`, or `("broken", message, exit code)` when
its chain cannot be built; `("progress", key, frames, total)` from the run's JSON progress lines; `("done", key,
ItemReport)`; `("failed", key, message, exit code)` for an item that failed by itself (a bad input, a stage
error: the video fails, nothing is re-queued); and `("fault", key, message)` for a CUDA fault, after which the
worker exits (its context may be poisoned) and the item is re-queued like a killed worker's.

The module imports no torch at the top: `spawn` imports it in the child before `main` sets the device up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .devices import WorkerSlot
from .plan import WorkItem

if TYPE_CHECKING:
    from ..runtime.pipeline import RunOptions
    from ..stages.base import Stage

#: builds the worker's stage chain (not set up); must pickle (a module-level function or a class instance)
StageFactory = Callable[[], "list[Stage]"]


@dataclass(frozen=True, slots=True)
class ItemReport:
    """What a worker did with an item."""

    key: str
    worker: int
    frames_in: int
    frames_out: int
    seconds: float
    skipped: bool = False


class _Sender:
    """The worker's end of its pipe, shared by the main thread and the writer thread (progress)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, *msg: Any) -> None:
        with self.lock:
            self.conn.send(msg)


class _ProgressLines:
    """Stands in for stdout in the worker: `pipeline.run`'s JSON progress lines (`--progress json`) become
    `progress` messages; anything else written there goes to stderr."""

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.key = ""
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            try:
                doc = json.loads(line)
                self.sender.send("progress", self.key, int(doc["frames"]), doc.get("total"))
            except (ValueError, KeyError, TypeError):
                sys.stderr.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


def main(slot: WorkerSlot, conn: Connection, make_stages: StageFactory, options: RunOptions) -> None:
    """The worker's life: set the device up, build the chain, run items until told to stop."""
    started = time.monotonic()
    if slot.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    logging.basicConfig(level=logging.WARNING, format=f"[{slot.label}] %(levelname)s %(name)s: %(message)s")
    sender = _Sender(conn)
    lines = _ProgressLines(sender)
    sys.stdout = lines  # type: ignore[assignment]
    import torch  # torch and CUDA only now, with the device chosen

    if slot.device == "cpu":  # workers sharing the cores: no oversubscribed compute threads
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // slot.share))

    from ..errors import VidpipeError

    try:
        stages = make_stages()
    except VidpipeError as e:  # the parent stops the run with this error
        sender.send("broken", str(e), e.exit_code)
        return
    opts = replace(
        options,
        device=slot.device,
        progress="json",
        schedule=replace(options.schedule, memory_share=slot.share),
    )
    sender.send("ready", time.monotonic() - started)
    while True:
        try:
            item: WorkItem | None = conn.recv()
        except EOFError:  # the parent is gone
            return
        if item is None:
            return
        lines.key = item.key
        try:
            report = run_item(stages, opts, item, slot.index)
        except Exception as e:  # reported to the parent, which decides: a fault is re-queued, the rest fails
            _report_failure(sender, slot, item, e)
            continue
        sender.send("done", item.key, report)


def run_item(stages: list[Stage], options: RunOptions, item: WorkItem, worker: int) -> ItemReport:
    """Run one item with a set of stages kept between items: a whole video into its output, or a segment over its
    time window (`jobs.driver.segment_options`) into its part file. The local workers and Ray's actors call it."""
    from ..jobs.driver import segment_options
    from ..runtime.pipeline import run

    t0 = time.monotonic()
    if item.segment is not None:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        res = run(item.input, item.output, stages, segment_options(options, item.segment))
    else:
        res = run(item.input, item.output, stages, options)
    return ItemReport(item.key, worker, res.frames_in, res.frames_out, time.monotonic() - t0, res.skipped)


def _report_failure(sender: _Sender, slot: WorkerSlot, item: WorkItem, e: Exception) -> None:
    from ..errors import VidpipeError
    from ..runtime.device import is_device_fault

    seen: BaseException | None = e
    while seen is not None:
        if is_device_fault(seen):
            sender.send("fault", item.key, f"{type(seen).__name__}: {str(seen).splitlines()[0]}")
            sys.stderr.flush()
            os._exit(1)  # the context may be poisoned: nothing of this process touches the device again
        seen = seen.__cause__
    if isinstance(e, VidpipeError):
        sender.send("failed", item.key, str(e), e.exit_code)
        return
    detail = "".join(traceback.format_exception(e))
    logging.getLogger(__name__).error("%s on %s: unexpected %s\n%s", item.key, slot.label, type(e).__name__, detail)
    sender.send("failed", item.key, f"unexpected {type(e).__name__}: {e}", VidpipeError.exit_code)
