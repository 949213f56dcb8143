"""Progress reporting: a rich bar (plain lines when not on a terminal), JSON lines for job runners, or nothing.
Every mode shows frames done of the expected total, frames/s and the ETA (`rates`: the mean rate so far, the
frames left at that rate); a run over several inputs shows the same for each open video and the run's total.

JSON lines go to stdout and nothing else does during a run (logs and messages go to stderr), so a job runner can
parse stdout line by line: `{"event": "progress" | "done" | "failed", "label", "frames", "total", "fps", "eta_s",
"stage"}`, plus `"videos"` for runs over several inputs, where `total` is the expected output frames of all of
them (see `Totals`), and `"per_video"`: one object per video open now or ended since the last line
(`{"video", "output", "state": "running" | "done" | "failed" | "skipped", "frames", "total", "fps", "eta_s",
"elapsed_s"}`, with `"worker"` under `vidpipe run --gpus`); a video's end writes a line at once, so each video's
final state appears in exactly one line. `total` and `eta_s` are null only while nothing tells the length."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

ProgressMode = Literal["bar", "json", "none"]
VideoState = Literal["running", "done", "failed", "skipped"]

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


def rates(done: int, total: int | None, elapsed: float) -> tuple[float, float | None]:
    """(frames/s, seconds left): the mean rate since the start, and the frames still to come at that rate; the
    ETA is None while the total is unknown or no frame is done (no rate yet), 0 once the total is reached."""
    fps = done / elapsed if elapsed > 0 else 0.0
    eta = max(total - done, 0) / fps if (total and fps > 0) else None
    return fps, eta


@dataclass(slots=True)
class VideoLine:
    """One video of a run over several: its progress since it opened."""

    video: str
    #: what lines and the bar call it (the output's name: unique in a run, unlike input names)
    label: str
    total: int | None
    t0: float
    done: int = 0
    state: VideoState = "running"
    elapsed: float | None = None
    task: Any = None
    #: the worker process running it (`vidpipe run --gpus`: "gpu0", "gpu1", …); None in one process
    worker: str | None = None

    def rates(self, now: float) -> tuple[float, float | None]:
        return rates(self.done, self.total, self.elapsed if self.elapsed is not None else now - self.t0)

    def json(self, now: float) -> dict[str, Any]:
        fps, eta = self.rates(now)
        return ({"worker": self.worker} if self.worker is not None else {}) | {
            "video": self.video,
            "output": self.label,
            "state": self.state,
            "frames": self.done,
            "total": self.total,
            "fps": round(fps, 2),
            "eta_s": None if eta is None else round(eta, 1),
            "elapsed_s": round(self.elapsed if self.elapsed is not None else now - self.t0, 3),
        }

    def line(self, now: float) -> str:
        fps, eta = self.rates(now)
        if self.state != "running":
            took = f" in {_clock(self.elapsed)} ({fps:.1f} fps)" if self.state == "done" else ""
            return f"  {self.label}: {self.state}, {self.done} frames{took}"
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return f"  {self.label}: {self.done}{of} frames{pct}, {fps:.1f} fps, ETA {_clock(eta)}"


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
    """Thread-safe: the writer threads call `advance`, the main thread `start`/`finish` (and `set_total`, and for
    a run over several inputs `video_started`/`video_ended`)."""

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
        #: the videos open now, and those ended since the last JSON line, by input
        self.per_video: dict[str, VideoLine] = {}
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
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>6.1f} fps"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.fields[stage]}"),
                console=Console(file=self._stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, fps=0.0, eta="?", stage=self.stage)

    def _rates(self) -> tuple[float, float | None]:
        return rates(self.done, self.total, time.monotonic() - self._t0)

    # -- videos of a run over several inputs --
    def video_started(self, video: str, label: str, total: int | None, *, worker: str | None = None) -> None:
        """`video` opened, expecting `total` output frames (None: unknown); `worker`: the process running it."""
        with self._lock:
            v = self.per_video[video] = VideoLine(video, label, total, time.monotonic(), worker=worker)
            if self._bar is not None:
                v.task = self._bar.add_task(f"  {label}", total=total, fps=0.0, eta="?", stage="")

    def video_ended(self, video: str, state: VideoState, label: str | None = None) -> None:
        """`video` is done, failed or skipped (one never started needs its `label`): said at once in every mode,
        and dropped from later lines."""
        with self._lock:
            now = time.monotonic()
            v = self.per_video.get(video) or VideoLine(video, label or video, None, now)
            self.per_video[video] = v
            v.state, v.elapsed = state, now - v.t0
            if self._bar is not None:
                if v.task is not None:
                    self._bar.remove_task(v.task)
                self._bar.console.print(v.line(now).strip(), highlight=False)
            elif self._lines:
                self._stream.write(v.line(now) + "\n")
                self._stream.flush()
            elif self.mode == "json":
                self._emit("progress", *self._rates())
            if self.mode != "json":
                del self.per_video[video]

    def advance(self, frames: int, stage: str | None = None, *, video: str | None = None) -> None:
        with self._lock:
            self.done += frames
            if stage is not None:
                self.stage = stage
            fps, eta = self._rates()
            v = self.per_video.get(video) if video is not None else None
            if v is not None:
                v.done += frames
            if self.mode == "bar" and self._bar is not None:
                self._bar.update(self._task, completed=self.done, fps=fps, eta=_clock(eta), stage=self.stage)
                if v is not None and v.task is not None:
                    v_fps, v_eta = v.rates(time.monotonic())
                    self._bar.update(v.task, completed=v.done, fps=v_fps, eta=_clock(v_eta))
            elif self.mode == "json":
                now = time.monotonic()
                if now - self._last_json >= JSON_INTERVAL_S:
                    self._emit("progress", fps, eta)

    def _tick(self) -> None:
        while not self._stopped.wait(LINE_INTERVAL_S):
            with self._lock:
                self._line(*self._rates())

    def _line(self, fps: float, eta: float | None) -> None:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._t0
        now = time.monotonic()
        for v in self.per_video.values():  # each open video, then the run's total
            self._stream.write(v.line(now) + "\n")
        self._stream.write(
            f"{self.label}: {self.done}{of} frames{pct}, {fps:.1f} fps, {_clock(elapsed)} elapsed, "
            f"ETA {_clock(eta)}{f', {self.stage}' if self.stage else ''}\n"
        )
        self._stream.flush()

    def _emit(self, event: str, fps: float, eta: float | None, **extra: Any) -> None:
        now = time.monotonic()
        self._last_json = now
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
            obj["per_video"] = [v.json(now) for v in self.per_video.values()]
            for key in [k for k, v in self.per_video.items() if v.state != "running"]:
                del self.per_video[key]  # each video's end in one line
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
                self._bar.update(self._task, eta=_clock(0.0 if ok else None))
                self._bar.stop()
            elif self.mode == "json":
                self._emit(
                    "done" if ok else "failed",
                    fps,
                    0.0 if ok else None,
                    elapsed_s=round(time.monotonic() - self._t0, 3),
                )
