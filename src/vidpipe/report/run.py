"""The report of a run (`vidpipe run … --report` → `OUT.report.html`): the compare page of input vs output, then
the manifest as a page — stages and their models (sha256, licence), streams kept/re-encoded/dropped, warnings,
time in each stage, output fps over time, memory over time, batch sizes, OOM back-offs and the cost-table rows the
scheduler used.

`RunRecorder` wraps one run and adds nothing to the pipeline's own path: it times the calls the runtime makes
into each stage (wall clock; on CUDA also the device time between two events recorded around each call, read
after the run, so nothing waits for the GPU during it) and a thread samples memory `SAMPLE_HZ` times a second
(the device's reserved and in-use memory on CUDA; the process's resident memory everywhere). Output fps over
time comes from the times the writer finished each batch (`RunResult.written`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import torch

from ..paths import write_bytes
from ..runtime.multi import Job, MultiResult
from ..runtime.pipeline import RunOptions, RunResult
from ..runtime.timings import Timings
from ..stages.base import Stage
from ..stages.temporal import RecurrentStage, WindowedStage
from .compare import CompareOptions, Cut, compare, sections
from .page import document, table
from .plots import Plot, Series, svg

#: memory samples a second: a thread that wakes twice a second costs the run nothing measurable
SAMPLE_HZ = 2.0
#: the stage hooks the runtime calls, and those the temporal engines call for their kinds of stage; nested calls
#: (a hook calling another) count once
TIMED_HOOKS = ("process", "flush")
TEMPORAL_HOOKS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (RecurrentStage, ("step", "step_many")),
    (WindowedStage, ("process_window", "process_part")),
)
#: output fps is averaged over windows this long (a batch of a slow model can take seconds on a CPU)
FPS_WINDOW_S = 1.0
MB = 1 << 20


def report_path(output: Path) -> Path:
    """`OUT.mkv` → `OUT.mkv.report.html` (beside the manifest `OUT.mkv.json`)."""
    return output.with_name(output.name + ".report.html")


@dataclass(slots=True)
class StageTime:
    calls: int = 0
    wall_s: float = 0.0
    #: (start, end) CUDA events of each call, summed after the run
    events: list[tuple[Any, Any]] = field(default_factory=list)

    def device_s(self) -> float | None:
        if not self.events:
            return None
        self.events[-1][1].synchronize()
        return sum(a.elapsed_time(b) for a, b in self.events) / 1000


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    rss_mb: float | None
    gpu_reserved_mb: float | None
    gpu_used_mb: float | None


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return None


class RunRecorder:
    """`with RunRecorder(stages, device): run(...)`; then `timings()` and `samples`."""

    def __init__(self, stages: Sequence[Stage], device: torch.device) -> None:
        """`device`: the run's (resolved: `runtime.device.resolve_device`)."""
        self.stages = list(stages)
        self.device = device
        self.cuda = device.type == "cuda"
        self.times: dict[int, StageTime] = {}
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._classes: list[tuple[Stage, type]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunRecorder:
        self.t0 = time.monotonic()
        for s in self.stages:
            self._classes.append((s, type(s)))
            s.__class__ = self._timed(s)
        self._thread = threading.Thread(target=self._sample_loop, name="report-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for s, cls in self._classes:
            s.__class__ = cls
        self._classes.clear()

    def _timed(self, stage: Stage) -> type:
        """A subclass of the stage's class whose hooks time themselves: the stage keeps its state, name and
        every isinstance test; a copy of it (the scheduler probes copies) is not counted."""
        rec, cls = self, type(stage)
        entry = self.times.setdefault(id(stage), StageTime())
        depth = [0]

        def wrap(name: str) -> Callable[..., Any]:
            inner = getattr(cls, name)

            def timed(self: Stage, *args: Any, **kwargs: Any) -> Any:
                if self is not stage or depth[0]:
                    return inner(self, *args, **kwargs)
                depth[0] += 1
                ev = rec._event()
                t = time.perf_counter()
                try:
                    return inner(self, *args, **kwargs)
                finally:
                    entry.wall_s += time.perf_counter() - t
                    entry.calls += 1
                    if ev is not None:
                        entry.events.append((ev, rec._event()))
                    depth[0] -= 1

            return timed

        names = [*TIMED_HOOKS, *(h for kind, hs in TEMPORAL_HOOKS if isinstance(stage, kind) for h in hs)]
        hooks = {h: wrap(h) for h in names}
        # no slots of its own: the layout is the class's, so `__class__` can be swapped both ways
        own = {"__slots__": (), "__qualname__": cls.__qualname__, "__module__": cls.__module__}
        return type(cls.__name__, (cls,), {**hooks, **own})

    def _event(self) -> Any:
        if not self.cuda:
            return None
        e = torch.cuda.Event(enable_timing=True)
        e.record(torch.cuda.current_stream(self.device))
        return e

    def _sample(self) -> Sample:
        reserved = used = None
        if self.cuda:
            reserved = torch.cuda.memory_reserved(self.device) / MB
            free, total = torch.cuda.mem_get_info(self.device)
            used = (total - free) / MB
        return Sample(time.monotonic() - self.t0, _rss_mb(), reserved, used)

    def _sample_loop(self) -> None:
        while True:
            self.samples.append(self._sample())
            if self._stop.wait(1 / SAMPLE_HZ):
                self.samples.append(self._sample())
                return

    def timings(self) -> list[tuple[str, StageTime]]:
        return [(s.name, self.times[id(s)]) for s in self.stages if id(s) in self.times]


# ------------------------------------------------------------------------------------------------ the page
def model_facts(model: str) -> tuple[str, str]:
    """(sha256 of the weights file, licence) of a model named as a stage's signature names it: a registry name
    (the cache file it loads; its licence from the registry) or a weights file (licence unknown)."""
    from ..errors import ModelError
    from ..models.loading import pinned_sha256, register_zoos, resolve_weights
    from ..models.spec import get_spec, is_registered
    from ..paths import sha256_file

    register_zoos()
    if is_registered(model):
        spec = get_spec(model)
        try:
            path = resolve_weights(spec)
        except ModelError:
            return spec.sha256 or "not in the cache", spec.licence
        return pinned_sha256(path) or sha256_file(path), spec.licence
    path = Path(model).expanduser()
    return (sha256_file(path) if path.is_file() else "not found"), "unknown (not a registry model)"


def _models(manifest: dict[str, Any]) -> str:
    rows = []
    for sig in manifest.get("stages", []):
        model = str(sig.get("model") or "")
        sha, licence = model_facts(model) if model else ("", "")
        settings = json.dumps({k: v for k, v in sig.items() if k not in ("stage", "model")}, default=str)
        rows.append([sig.get("stage", "?"), model or "(no model)", sha, licence, settings])
    header = ["stage", "model", "weights sha256", "licence", "settings"]
    return '<h3>Stages and models</h3><div id="models">' + table(header, rows) + "</div>"


def _streams(m: dict[str, Any]) -> str:
    s = m.get("streams", {})
    rows = [["kept (copied)", x] for x in s.get("copied", [])]
    rows += [["re-encoded", x] for x in s.get("reencoded", [])]
    rows += [["dropped", x] for x in s.get("dropped", [])]
    if s.get("audio_dropped_packets"):
        rows.append(["damaged audio packets dropped", s["audio_dropped_packets"]])
    enc = m.get("encoder", {})
    video = f"video: {enc.get('codec')} {enc.get('pix_fmt')}, {m.get('frames_in')} frames in, {m.get('frames_out')} out"
    body = table(["stream", "what"], rows) if rows else '<p class="muted">no other streams</p>'
    return f'<h3>Streams</h3><p>{escape(video)}</p><div id="streams">{body}</div>'


def _warnings(m: dict[str, Any]) -> str:
    w = m.get("warnings", [])
    items = "".join(f"<li>{escape(str(x))}</li>" for x in w) or "<li>none</li>"
    return f'<h3>Warnings ({len(w)})</h3><ul id="warnings">{items}</ul>'


def _schedule(m: dict[str, Any]) -> str:
    sched = m.get("schedule", {})
    rows, ooms, costs = [], [], []
    for s in sched.get("stages", []):
        events = s.get("oom_events", [])
        rows.append([s["stage"], s["batch_size"], s["batch_size_at_end"], s.get("tile"), s["source"], len(events)])
        for e in events:
            tile = "" if e.get("tile") is None else e["tile"] or "whole frames"
            ooms.append([s["stage"], e["attempt"], e["size"], f"{e['start']}..{e['stop'] - 1}", tile, e["device"]])
        costs += [[s["stage"], r] for r in s.get("reasons", [])]
    policy = sched.get("oom_policy", {})
    out = [
        "<h3>Batches and OOM back-offs</h3>",
        f'<p class="muted">OOM policy: {policy.get("attempts")} attempts, {policy.get("backoff_s")} s back-off; '
        f"reader batch {sched.get('reader_batch')}</p>",
        table(["stage", "batch", "batch at end", "tile", "from", "OOM back-offs"], rows),
    ]
    if ooms:
        out.append('<div id="oom">' + table(["stage", "attempt", "batch", "frames", "tile", "device"], ooms) + "</div>")
    else:
        out.append('<p id="oom" class="muted">no out-of-memory back-off</p>')
    out.append("<h3>Why these sizes (cost-table rows used)</h3>" + table(["stage", "reason"], costs, cls="reasons"))
    return "".join(out)


def _timings(rec: RunRecorder | None, wall: float) -> str:
    if rec is None or not rec.stages:
        why = "the output was already made" if rec is None else "each video of a run over several has its own copies"
        return f'<h3>Time per stage</h3><p class="muted">not recorded ({why})</p>'
    rows = []
    for name, st in rec.timings():
        dev = st.device_s()
        share = f"{100 * st.wall_s / wall:.1f} %" if wall > 0 else ""
        rows.append([name, st.calls, round(st.wall_s, 3), "n/a (CPU)" if dev is None else round(dev, 3), share])
    note = (
        "wall: time in the stage's calls, as the runtime made them; device: GPU time between events around them"
        if rec.cuda
        else "wall: time in the stage's calls (a CPU run: no device time)"
    )
    return f'<h3>Time per stage</h3><p class="muted">{note}</p>' + table(
        ["stage", "calls", "wall s", "device s", "of the run"], rows, cls="timings"
    )


def _fps_curve(written: Sequence[tuple[float, int]], t0: float) -> tuple[list[float], list[float | None]]:
    """Output frames/s over consecutive `FPS_WINDOW_S` windows from (time, frames so far) points."""
    if len(written) < 2:
        return [], []
    xs: list[float] = []
    ys: list[float | None] = []
    start_t, start_n = written[0]
    for t, n in written[1:]:
        if t - start_t >= FPS_WINDOW_S or (t, n) == written[-1]:
            if t > start_t:
                xs.append(t - t0)
                ys.append((n - start_n) / (t - start_t))
            start_t, start_n = t, n
    return xs, ys


def _over_time(rec: RunRecorder | None, result: RunResult) -> str:
    t0 = rec.t0 if rec is not None else (result.written[0][0] if result.written else 0.0)
    xs, ys = _fps_curve(result.written, t0)
    parts = ["<h3>Over time</h3>"]
    if xs:
        parts.append(svg(Plot("Output frames/s", xs, [Series("fps", ys)], y_label="fps")))
    else:
        parts.append('<p class="muted">fps over time: too few batches written</p>')
    if rec is None or not rec.samples:
        parts.append('<p class="muted">memory over time: not sampled</p>')
        return "".join(parts)
    ts = [s.t for s in rec.samples]
    series = [Series("process RSS", [s.rss_mb for s in rec.samples])]
    if rec.cuda:
        series += [
            Series("GPU reserved (this run)", [s.gpu_reserved_mb for s in rec.samples]),
            Series("GPU in use (device)", [s.gpu_used_mb for s in rec.samples]),
        ]
    else:
        parts.append('<p class="muted" id="gpu-memory">GPU memory over time: n/a (a CPU run)</p>')
    parts.append(svg(Plot(f"Memory (MB), {SAMPLE_HZ:g} samples/s", ts, series, y_label="MB")))
    return "".join(parts)


def run_sections(result: RunResult, recorder: RunRecorder | None) -> list[str]:
    """The run's sections, from its manifest, its written-batch times and what `recorder` measured."""
    m = result.manifest
    summary = table(
        ["input", "output", "frames in", "frames out", "wall s", "fps", "device"],
        [
            [
                m.get("input", {}).get("path", ""),
                m.get("output", {}).get("path", str(result.output)),
                m.get("frames_in"),
                m.get("frames_out"),
                m.get("wall_s"),
                m.get("fps"),
                m.get("device"),
            ]
        ],
    )
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return [
        '<section id="run"><h2>The run</h2>',
        summary,
        f'<p class="muted">{escape(versions)}</p>',
        _models(m),
        _streams(m),
        _warnings(m),
        _timings(recorder, float(m.get("wall_s") or 0.0)),
        _over_time(recorder, result),
        _schedule(m),
        "</section>",
    ]


def _cuts(manifest: dict[str, Any]) -> tuple[Cut, ...] | str:
    """The run's own cut events (`--cuts`), else detect them in the source."""
    found = manifest.get("stage_reports", {}).get("cuts", {}).get("events")
    if found is None:
        return "auto"
    return tuple(Cut(int(e["frame"]), e["kind"], float(e.get("score", 1.0)), float(e["time"])) for e in found)


def write_run_report(
    source: Path,
    result: RunResult,
    recorder: RunRecorder | None,
    *,
    device: str = "auto",
    max_frames: int | None = None,
) -> Path:
    """`OUT.report.html` beside the output: the compare page of `source` vs the output, then the run."""
    path = report_path(result.output)
    body: list[str] = [f"<h1>vidpipe run: {escape(source.name)} → {escape(result.output.name)}</h1>"]
    body += run_sections(result, recorder)
    if result.output.is_file():
        options = CompareOptions(max_frames=max_frames, device=device, cuts=_cuts(result.manifest))
        c = compare([source, result.output], options)
        body = [body[0], *sections(c), *body[1:]]
    else:
        body.append('<p class="muted">no compare page: the output is not one video file (an image sequence)</p>')
    write_bytes(path, document(f"vidpipe run: {result.output.name}", body).encode())
    return path


def run_with_report(
    source: Path, output: Path, stages: Sequence[Stage], options: RunOptions, timings: Timings | None = None
) -> tuple[RunResult, Path]:
    """`pipeline.run` under a `RunRecorder`, then its report beside the output (`vidpipe run --report`); `timings`
    as `pipeline.run` takes them (`--timings`)."""
    from ..runtime.device import resolve_device
    from ..runtime.pipeline import run

    device = resolve_device(options.device)
    with RunRecorder(stages, device) as rec:
        result = run(source, output, stages, options, timings=timings)
    return result, write_run_report(source, result, None if result.skipped else rec, device=str(device))


def run_many_with_report(jobs: Sequence[Job], stages: Sequence[Stage], options: RunOptions) -> MultiResult:
    """`runtime.multi.run_many`, then a report beside each output made: its compare page and manifest. Each video
    runs its own copies of the stages, so time per stage is not recorded here (memory is, for the whole run)."""
    from ..runtime.device import resolve_device
    from ..runtime.multi import run_many

    device = resolve_device(options.device)
    with RunRecorder([], device) as rec:
        res = run_many(list(jobs), list(stages), options)
    for v in res.videos:
        if v.status == "done" and v.manifest is not None:
            result = RunResult(v.job.output, v.frames_in, v.frames_out, v.wall_s, v.manifest)
            write_run_report(v.job.input, result, rec, device=str(device))
    return res
