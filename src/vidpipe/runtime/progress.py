"""Progress reporting: a one-line rich bar (plain lines when not on a terminal), JSON lines for job runners, or
nothing. Every mode shows frames done of the expected total, frames/s and the ETA.

JSON lines go to stdout and nothing else does during a run (logs and messages go to stderr), so a job runner can
parse stdout line by line: `{"event": "progress" | "done" | "failed", "label", "frames", "total", "fps", "eta_s",
"stage"}`, plus `"videos"` for runs over several inputs, where `total` is the expected output frames of all of
them (see `Totals`); `total` and `eta_s` are null only while nothing tells the length."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

ProgressMode = Literal["bar", "json", "none"]

#: JSON lines are rate-limited so a job log stays readable (the final line is always written)
JSON_INTERVAL_S = 0.5
#: a bar whose stream is not a terminal (a pipe, a CI log) prints a plain line this often instead, from a timer
#: (a batch on two busy CPU cores can take minutes: the line says the run is alive, and its ETA)
LINE_INTERVAL_S = 10.0


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Totals:
    """Expected output frames of a run over several videos: exact for each video opened so far (its stage chain
    says how many frames it makes; 0 for one skipped or failed), estimated for the others from their input frame
    counts at the output/input ratio of the opened ones (1 before any opens; an unknown count adds nothing)."""

    def __init__(self, frames_in: Mapping[str, int | None]) -> None:
        self._in = dict(frames_in)
        self._out: dict[str, int] = {}
        self._ratio_in = 0
        self._ratio_out = 0

    def opened(self, key: str, frames_in: int | None, frames_out: int | None) -> None:
        self._out[key] = frames_out or 0
        if frames_in and frames_out:
            self._ratio_in += frames_in
            self._ratio_out += frames_out

    def total(self) -> int:
        ratio = self._ratio_out / self._ratio_in if self._ratio_in else 1.0
        pending = sum(n or 0 for k, n in self._in.items() if k not in self._out)
        return sum(self._out.values()) + round(pending * ratio)


class Progress:
    """Thread-safe: the writer thread calls `advance`, the main thread `start`/`finish` (and `set_total`)."""

    def __init__(
        self,
        mode: ProgressMode,
        total: int | None,
        label: str,
        stream: TextIO | None = None,
        *,
        videos: int | None = None,
    ) -> None:
        self.mode = mode
        self.total = total
        self.label = label
        self.stage = ""
        self.done = 0
        #: how many inputs the run has (JSON `videos`), for runs over several
        self.videos = videos
        self._stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_json = 0.0
        self._lines = False
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()
        self._bar: Any = None
        self._task: Any = None

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.update(self._task, total=total)

    def start(self) -> None:
        self._t0 = time.monotonic()
        # a rich bar off a terminal draws nothing until it stops: print lines there instead
        self._lines = self.mode == "bar" and not getattr(self._stream, "isatty", lambda: False)()
        if self._lines:
            self._ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
            self._ticker.start()
        if self.mode == "bar" and not self._lines:
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

    def _tick(self) -> None:
        while not self._stopped.wait(LINE_INTERVAL_S):
            with self._lock:
                self._line(*self._rates())

    def _line(self, fps: float, eta: float | None) -> None:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._t0
        self._stream.write(
            f"{self.label}: {self.done}{of} frames{pct}, {fps:.1f} fps, {_clock(elapsed)} elapsed, "
            f"ETA {_clock(eta)}{f', {self.stage}' if self.stage else ''}\n"
        )
        self._stream.flush()

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
        if self.videos is not None:
            obj["videos"] = self.videos
        self._stream.write(json.dumps(obj | extra) + "\n")
        self._stream.flush()

    def finish(self, ok: bool = True) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            fps, _ = self._rates()
            if self._lines:
                elapsed = time.monotonic() - self._t0
                state = "done" if ok else "failed"
                self._stream.write(f"{self.label}: {state}, {self.done} frames in {_clock(elapsed)} ({fps:.1f} fps)\n")
                self._stream.flush()
            elif self.mode == "bar" and self._bar is not None:
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
