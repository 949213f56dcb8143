"""Where a run's time goes (issue 24): its start-up, phase by phase, and which part of the pipeline bounds it.

Start-up is read as marks on one clock (`time.monotonic`), from the process's own start (the kernel's record of
it, so the interpreter and the imports before any vidpipe code count too) to the end: CLI imports → torch and
the stages' imports → probe → device → model load (the CUDA context made beside it: runtime.device) →
scheduling and opening → first decoded batch → first output batch (the chain's) → first output encoded →
steady state (the first `STEADY_SKIP` of the output written) → end.
`vidpipe run --timings` prints them as a table on stderr; the manifest of every
`pipeline.run` (one input, job segments too) holds them as `timings`.

A run handed to a resident server (`vidpipe serve`) is timed in two processes: the server's marks count from
when it received the request (`served_payload`), and the client adds them to its own from its process start
(`adopt`): its start-up and connect, then the server's phases.

The bound: the pipeline's three threads (decode; colour conversion and the stages; encode) overlap, so the run
goes at the pace of the slowest. Each part's own rate is the output frames over the seconds it was busy (not
waiting on a queue), and the part with the lowest rate is the bound. When the encoder is, the summary says so and
what to change. Colour conversion is a part of its own only where the pipeline converts on the CPU itself
(`colour_on_device` on a CPU run); swscale's conversions count in the decode and encode threads, and on CUDA the
conversion and the stages are timed on the host, where it waits for the device, as one figure ("model").

Imports only the standard library: it is loaded before torch, to time torch's import.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: share of the output treated as warm-up in steady-state rates (bench.pipeline uses the same)
STEADY_SKIP = 0.2

#: the marks of a run, in the order they happen, with what each one ends
PHASES: tuple[tuple[str, str], ...] = (
    ("cli", "interpreter + CLI imports"),
    ("connect", "connect to the server, request sent"),
    ("taken", "server: options parsed (after any queue wait)"),
    ("imports", "torch + stage imports, options"),
    ("probe", "probe input"),
    ("device", "device"),
    ("context", "CUDA context (on a thread, beside model load)"),
    ("setup", "model load (stage set-up)"),
    ("open", "schedule + open reader/writer"),
    ("first_decoded", "first decoded batch"),
    ("first_output", "first output batch (stages)"),
    ("first_encoded", "first output batch encoded"),
    ("steady", f"steady state ({STEADY_SKIP:.0%} of output written)"),
    ("end", "end (all written, closed)"),
)
_LABEL = dict(PHASES)
#: the parts that can bound a run, as the summary names them
PARTS = ("decode", "colour", "model", "encode")


def process_start() -> float | None:
    """`time.monotonic()` at the moment this process started (from /proc: 10 ms resolution), or None where the
    kernel does not say (not Linux)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, `starttime`: ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.monotonic() - max(age, 0.0)


def steady(marks: Sequence[tuple[float, int]], skip: float = STEADY_SKIP) -> tuple[float, float]:
    """(frames/s after the first `skip` share of frames, time until then) from (time, frames so far) marks
    whose first entry is the start (t0, 0)."""
    total = marks[-1][1]
    t0 = marks[0][0]
    for t, n in marks:
        if n >= skip * total and n < total:
            return (total - n) / (marks[-1][0] - t), t - t0
    span = marks[-1][0] - t0
    return (total / span if span > 0 else 0.0), 0.0


class Timings:
    """Marks of one run (each kept at its first call: a mark inside a loop costs a dict lookup after that) and
    the busy seconds of each part. Thread-safe: the encoder's thread marks and counts too."""

    def __init__(self, origin: float | None = None, *, zero: str = "process start") -> None:
        #: monotonic time of the process start (None: unknown; then times count from this object's creation)
        self.origin = process_start() if origin is None else origin
        #: what `origin` is (a served run: the server's receipt of the request)
        self.zero = zero
        self.created = time.monotonic()
        self.marks: dict[str, float] = {}
        self.busy: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        #: set by `finish`: output frames/s after the warm-up share, and which part bounds the run
        self.steady_fps = 0.0
        self.bound: Bound | None = None
        #: the bound's summary as another process wrote it (`adopt`)
        self.bound_lines: list[str] = []
        self._lock = threading.Lock()

    def mark(self, name: str) -> None:
        if name not in self.marks:
            with self._lock:
                self.marks.setdefault(name, time.monotonic())

    def add(self, part: str, seconds: float) -> None:
        with self._lock:
            self.busy[part] += seconds

    def timed(self, part: str, fn: Callable[..., T]) -> Callable[..., T]:
        """`fn`, its seconds added to `part` at each call."""

        def call(*args: Any, **kwargs: Any) -> T:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part, time.perf_counter() - t)

        return call

    def timed_iter(self, part: str, items: Iterator[T]) -> Iterator[T]:
        """`items`, the seconds spent producing each one added to `part`."""
        while True:
            t = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.add(part, time.perf_counter() - t)
                return
            self.add(part, time.perf_counter() - t)
            yield item

    def finish(self, *, decode_s: float, encode_s: float, written: Sequence[tuple[float, int]], merged: bool) -> Bound:
        """At the run's end: the steady-state mark from `written` ((time, frames written so far) per encoded
        batch, from the first), the threads' busy seconds, and the bound. `merged`: colour is timed with the
        model (CUDA)."""
        self.mark("end")
        self.add("decode", decode_s)
        self.add("encode", encode_s)
        start = self.marks.get("open", self.created)
        marks = [(start, 0), *written]
        total = marks[-1][1]
        self.steady_fps, warm = steady(marks) if total else (0.0, 0.0)
        if total and warm:
            self.marks["steady"] = start + warm
        busy = dict(self.busy)
        if merged:
            busy["model"] += busy.pop("colour")
        self.bound = Bound(frames_out=total, wall_s=self.marks["end"] - start, busy_s=busy, merged=merged)
        return self.bound

    def phases(self) -> list[tuple[str, str, float, float]]:
        """(mark, label, seconds since the previous mark, seconds since the process start) of each mark made."""
        zero = self.origin if self.origin is not None else self.created
        rows, last = [], zero
        # in time order: the CUDA context is made on a thread, so its mark may come before or after others
        for at, name in sorted((at, name) for name, at in self.marks.items() if name in _LABEL):
            rows.append((name, _LABEL[name], at - last, at - zero))
            last = at
        return rows

    def served_payload(self) -> dict[str, Any]:
        """What a server sends its client: each mark in seconds since `origin` (the request's receipt), the steady
        rate and the bound's summary lines."""
        zero = self.origin if self.origin is not None else self.created
        return {
            "marks": {name: at - zero for name, at in self.marks.items()},
            "steady_fps": self.steady_fps,
            "bound": self.bound.summary().splitlines() if self.bound is not None else [],
        }

    def adopt(self, payload: dict[str, Any], at: float) -> None:
        """A server's `served_payload`, its marks placed on this clock from `at` (monotonic: when the request was
        sent); marks of this process's own are kept."""
        for name, seconds in dict(payload.get("marks", {})).items():
            self.marks.setdefault(str(name), at + float(seconds))
        self.steady_fps = float(payload.get("steady_fps", 0.0))
        self.bound_lines = [str(line) for line in payload.get("bound", [])]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.zero if self.origin is not None else "timings created",
            "phases": [{"phase": n, "took_s": round(d, 3), "at_s": round(a, 3)} for n, _, d, a in self.phases()],
            "steady_fps": round(self.steady_fps, 2),
            **({"bound": self.bound.to_json()} if self.bound is not None else {}),
        }

    def table(self) -> list[str]:
        """The phases as a small table, then the steady rate and the bound (`vidpipe run --timings`)."""
        origin = self.zero if self.origin is not None else "start of the run (process start unknown)"
        lines = [f"timings, seconds since the {origin}:", f"  {'phase':<44} {'took':>8} {'at':>8}"]
        lines += [f"  {label:<44} {took:8.3f} {at:8.3f}" for _, label, took, at in self.phases()]
        lines.append(f"  steady state: {_fps(self.steady_fps)} output frames/s")
        bound = self.bound.summary().splitlines() if self.bound is not None else self.bound_lines
        lines += [f"  {line}" for line in bound]
        return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """Which part bounds a run: each part's busy seconds and its own rate in output frames/s."""

    frames_out: int
    wall_s: float
    busy_s: dict[str, float]
    #: parts timed together where they cannot be told apart (CUDA: colour runs on the device with the model)
    merged: bool = False

    @property
    def rates(self) -> dict[str, float]:
        return {p: self.frames_out / s for p, s in self.busy_s.items() if s > 0}

    @property
    def part(self) -> str | None:
        r = self.rates
        return min(r, key=r.__getitem__) if r else None

    def to_json(self) -> dict[str, Any]:
        return {
            "bound_by": self.part,
            "busy_s": {p: round(s, 3) for p, s in self.busy_s.items()},
            "fps": {p: round(f, 2) for p, f in self.rates.items()},
            "remedy": self.remedy(),
        }

    def summary(self) -> str:
        rates = self.rates
        if not rates:
            return "bound: nothing measured"
        parts = ", ".join(
            f"{p} {_fps(f)} fps ({self.busy_s[p] / self.wall_s:.0%} busy)" if self.wall_s > 0 else f"{p} {_fps(f)} fps"
            for p, f in sorted(rates.items(), key=lambda kv: kv[1])
        )
        line = f"bound by {self.part}: {parts} (each part's own rate: output frames over its busy seconds)"
        return line + (f"\n{self.remedy()}" if self.remedy() else "")

    def remedy(self) -> str:
        """What to change when the encoder is the cap ("" otherwise)."""
        if self.part != "encode":
            return ""
        others = [f for p, f in self.rates.items() if p != "encode"]
        ahead = f"; the other parts could go {min(others) / self.rates['encode']:.1f}× faster" if others else ""
        return (
            "the encoder is the cap"
            + ahead
            + ": more parallel chunk encoders (--encode-workers N, x264/x265), a faster preset than h264's "
            "veryfast (--speed superfast|ultrafast: larger files at the same crf), NVENC where the GPU has it "
            "(--encoder auto picks it), or for an intermediate a multi-threaded lossless/mezzanine codec "
            "(--encoder ffv1 or prores)"
        )


def _fps(rate: float) -> str:
    """A rate with the digits that matter: 0.031 (x4plus on two busy cores) as well as 250.3."""
    return f"{rate:.1f}" if rate >= 10 else f"{rate:.3g}"
