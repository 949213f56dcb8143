"""Progress reporting: a one-line rich bar, JSON lines for job runners, or nothing."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Literal, TextIO

ProgressMode = Literal["bar", "json", "none"]

#: JSON lines are rate-limited so a job log stays readable (the final line is always written)
JSON_INTERVAL_S = 0.5


class Progress:
    """Thread-safe: the writer thread calls `advance`, the main thread `start`/`finish`."""

    def __init__(self, mode: ProgressMode, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.mode = mode
        self.total = total
        self.label = label
        self.stage = ""
        self.done = 0
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_json = 0.0
        self._bar: Any = None
        self._task: Any = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>6.1f} fps"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stage]}"),
                console=Console(file=self._stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, fps=0.0, stage=self.stage)

    def _rates(self) -> tuple[float, float | None]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        fps = self.done / elapsed
        eta = (self.total - self.done) / fps if (self.total and fps > 0) else None
        return fps, eta

    def advance(self, frames: int, stage: str | None = None) -> None:
        with self._lock:
            self.done += frames
            if stage is not None:
                self.stage = stage
            fps, eta = self._rates()
            if self.mode == "bar" and self._bar is not None:
                self._bar.update(self._task, completed=self.done, fps=fps, stage=self.stage)
            elif self.mode == "json":
                now = time.monotonic()
                if now - self._last_json >= JSON_INTERVAL_S:
                    self._last_json = now
                    self._emit("progress", fps, eta)

    def _emit(self, event: str, fps: float, eta: float | None, **extra: Any) -> None:
        obj = {
            "event": event,
            "label": self.label,
            "frames": self.done,
            "total": self.total,
            "fps": round(fps, 2),
            "eta_s": None if eta is None else round(eta, 1),
            "stage": self.stage,
        }
        self._stream.write(json.dumps(obj | extra) + "\n")
        self._stream.flush()

    def finish(self, ok: bool = True) -> None:
        with self._lock:
            fps, _ = self._rates()
            if self.mode == "bar" and self._bar is not None:
                if ok and self.total is None:
                    self._bar.update(self._task, total=self.done)
                self._bar.stop()
            elif self.mode == "json":
                self._emit(
                    "done" if ok else "failed",
                    fps,
                    0.0 if ok else None,
                    elapsed_s=round(time.monotonic() - self._t0, 3),
                )
