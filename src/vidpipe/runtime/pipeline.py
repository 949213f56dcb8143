"""The streaming path: reader thread → stage chain (this thread, on the device) → writer thread.

Queues hold batches, so host memory is O(queue × batch), never O(video). One end-of-stream sentinel per queue;
a worker's exception is re-raised here; threads are always joined. SIGINT/SIGTERM raise `Interrupted` here,
which removes the partial output and ends with a non-zero exit.
"""

from __future__ import annotations

import logging
import math
import platform
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.logging
import torch

from .. import __version__
from ..errors import DeviceError, DeviceOutOfMemoryError, Interrupted, StageError, UsageError, VidpipeError
from ..frames import FrameBatch
from ..media.deinterlace import Deinterlace, output_spec
from ..media.info import MediaInfo
from ..media.probe import max_pixels_limit, probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.stereo import declared_packing
from ..media.threads import Consumer
from ..media.writer import VideoWriter, WriterOptions, WriterStats, check_target
from ..media.yuv import PlanarBatch
from ..paths import write_json
from ..schedule.budget import check_host_memory, host_frame_bytes
from ..schedule.chain import ScheduleOptions, schedule_block, schedule_chain
from ..schedule.idempotency import finished, signature_fields
from ..schedule.temporal import chain_reach
from ..stages.base import Stage, StreamSpec
from .device import ContextOnThread, describe, is_device_fault, resolve_device
from .progress import Progress, ProgressMode
from .source_pass import analyse_sources
from .timings import Timings
from .transfer import Transfer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """One segment of a longer run: output frames shown in [start, end) seconds (None: open on that side).

    The reader decodes `feed` when given, else from `start` to one frame after `end` (look-ahead context); it
    starts at the keyframe at or before its first time. Output frames outside the window are dropped after the
    whole chain. Runs over adjacent windows give, together, the frames of one whole run, provided each is fed
    the frames its stages reach (`schedule.temporal.feed_span`) and no stage's timing depends on where its
    input began (1:1 stages; interpolation when `start` lies on its output grid, see jobs/segments.py)."""

    start: Fraction | None = None
    end: Fraction | None = None
    #: the reader's range when the stages need frames around the window (pre-roll, look-ahead): from the frame
    #: at the first time (None: the stream's first) through the first frame at or after the second (None: to
    #: the end of the stream); None: (start, end)
    feed: tuple[Fraction | None, Fraction | None] | None = None

    def select(self, batch: FrameBatch | None) -> FrameBatch | None:
        """The frames of `batch` inside the window, or None when none is."""
        if batch is None or not len(batch):
            return None
        keep = [
            i
            for i, t in enumerate(batch.times())
            if (self.start is None or t >= self.start) and (self.end is None or t < self.end)
        ]
        if len(keep) == len(batch):
            return batch
        if not keep:
            return None
        # frames are in time order, so the kept ones are contiguous
        return batch.slice(keep[0], keep[-1] + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    device: str = "auto"
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    writer: WriterOptions = field(default_factory=WriterOptions)
    #: batches waiting for the encoder
    encode_queue: int = 4
    progress: ProgressMode = "bar"
    manifest: bool = True
    #: YUV↔RGB on the stage device (`auto`: on CUDA) instead of swscale on one CPU core; see media/yuv.py
    colour_on_device: Literal["auto", "on", "off"] = "auto"
    #: process one segment only (jobs/segments.py); None: the whole input
    window: TimeWindow | None = None
    #: batch sizes, OOM policy, cost rows, skipping finished outputs (vidpipe.schedule.chain)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    #: refuse inputs with more pixels a frame (0: no cap); None: `$VIDPIPE_MAX_PIXELS` or media.probe's default
    max_pixels: int | None = None


@dataclass(slots=True)
class RunResult:
    output: Path
    frames_in: int
    frames_out: int
    wall_s: float
    manifest: dict[str, Any]
    #: (monotonic time, frames written so far) after each encoded batch and at close
    written: list[tuple[float, int]] = field(default_factory=list)
    #: the output was already finished with the same signatures (`manifest` is the earlier run's)
    skipped: bool = False

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0


def source_spec(info: MediaInfo, keep_alpha: bool = True, deinterlace: Deinterlace | None = None) -> StreamSpec:
    """The reader's stream: the source's, one frame per field when `deinterlace` says so (media/deinterlace.py)."""
    v = info.video
    w, h = v.display_size
    spec = StreamSpec(
        width=w,
        height=h,
        time_base=v.time_base,
        alpha=v.alpha and keep_alpha,
        bit_depth=v.colour.bit_depth,
        nominal_rate=v.rate,
        frames=v.frames,
        sar=1 / v.sar if v.rotation % 180 else v.sar,  # a quarter turn swaps the pixel's sides too
        stereo=declared_packing(v.stereo, info.path, v.rotation),  # type: ignore[arg-type]
        source=info.path,
    )
    return output_spec(spec, v, deinterlace) if deinterlace is not None else spec


def check_frame_memory(src: Path, source: StreamSpec, output: StreamSpec, options: RunOptions) -> None:
    """The run's host frame buffers (reader and encoder queues) against free RAM, before anything is decoded."""
    need = host_frame_bytes(
        source,
        output,
        batch=options.reader.batch_size,
        reader_queue=options.reader.queue_size,
        encode_queue=options.encode_queue,
    )
    check_host_memory(need, what=f"{src}: {source.width}x{source.height} → {output.width}x{output.height}: ")


def run_chain(stages: Sequence[Stage], batch: FrameBatch | None, start: int = 0) -> FrameBatch | None:
    """`batch` through `stages[start:]` in order (None once a stage holds everything back). A stage's failure is
    classified here: OOM as DeviceOutOfMemoryError, a device fault as DeviceError, anything else as StageError.
    Shared by `run` and `runtime.multi`."""
    for stage in stages[start:]:
        if batch is None:
            return None
        try:
            batch = stage.process(batch)
        except VidpipeError:
            raise
        except torch.OutOfMemoryError as e:  # a stage run without the scheduler's OOM policy: classified as is
            raise DeviceOutOfMemoryError(f"out of memory in stage {stage.name}: {e}") from e
        except Exception as e:
            if is_device_fault(e):
                raise DeviceError(f"stage {stage.name}: {e}".strip()) from e
            raise StageError(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e
    return batch


def flush_chain(stages: Sequence[Stage]) -> Iterator[FrameBatch]:
    """End of stream: each stage's held frames go through the stages after it, then those flush in turn."""
    for i, stage in enumerate(stages):
        out = run_chain(stages, stage.flush(), start=i + 1)
        if out is not None and len(out):
            yield out


class StopRequest:
    """SIGINT/SIGTERM set a flag and the pipeline raises `Interrupted` at its next safe point: between batches,
    while waiting on a queue, and within a stage's batch (`check` is handed to the stages: between tiles, frame
    pairs and, on the CPU, network layers; see stages/interrupt.py), so the exit comes within a host's grace
    (RunPod: 5 s to SIGKILL) even with a large model on the CPU. Raising inside the handler itself could hit a
    thread lock half-taken and deadlock the clean-up; a second signal raises at once (the user insists)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise self._error(self.signum)

    @staticmethod
    def _error(signum: int) -> Interrupted:
        e = Interrupted(f"interrupted by {signal.Signals(signum).name}; partial output removed")
        e.exit_code = 128 + signum
        return e

    def _handler(self, signum: int, _frame: object) -> None:
        if self.signum is not None:
            raise self._error(signum)
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Signals are only delivered to the main thread; elsewhere the flag simply never gets set."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


#: a stop request set from outside the signal handlers: `vidpipe serve` runs a request on a thread of its own, where
#: no signal arrives, and stops it on the client's Ctrl-C or its own SIGTERM (serve/server.py)
_EXTERNAL_STOP: ContextVar[StopRequest | None] = ContextVar("vidpipe_external_stop", default=None)


def stop_request() -> StopRequest:
    """The run's stop request: the one handed in by `external_stop` on this thread, else a new one (signals)."""
    return _EXTERNAL_STOP.get() or StopRequest()


@contextmanager
def external_stop(stop: StopRequest) -> Iterator[StopRequest]:
    """Runs started on this thread inside the block stop when `stop.signum` is set (by another thread)."""
    token = _EXTERNAL_STOP.set(stop)
    try:
        yield stop
    finally:
        _EXTERNAL_STOP.reset(token)


class FFmpegLog:
    """Keeps FFmpeg's own log off the terminal and collects its warnings, reported once at the end."""

    def __init__(self) -> None:
        self._capture = av.logging.Capture(local=False)
        self.messages: list[str] = []

    def __enter__(self) -> FFmpegLog:
        av.logging.set_level(av.logging.WARNING)
        self._capture.__enter__()
        return self

    def detach(self) -> None:
        """Stop routing FFmpeg's log into Python before threads are torn down mid-stream: a decoder's worker
        thread logging through the Python callback while another thread frees that decoder (holding the GIL)
        deadlocks both. Messages already captured are kept."""
        av.logging.set_level(None)

    def __exit__(self, *exc: object) -> None:
        self._capture.__exit__(*exc)
        av.logging.set_level(None)
        counts: dict[str, int] = {}
        for level, name, msg in self._capture.logs:
            if level <= av.logging.WARNING:
                key = f"{name}: {msg.strip()}"
                counts[key] = counts.get(key, 0) + 1
        self.messages = [f"{k} (×{n})" if n > 1 else k for k, n in counts.items()]


def versions() -> dict[str, str]:
    return {
        "vidpipe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "av": av.__version__,
        "ffmpeg": ".".join(map(str, av.ffmpeg_version_info))
        if isinstance(av.ffmpeg_version_info, tuple)
        else str(av.ffmpeg_version_info),
    }


def _feed(window: TimeWindow, stages: Sequence[Stage], rate: Fraction) -> tuple[Fraction | None, Fraction | None]:
    """The reader's range for a window given without one (`vidpipe run --start/--duration`): the stages' reach
    (`schedule.temporal.chain_reach`) in frame periods of the average rate, one more on each side for a rate that
    varies (an extra pre-roll frame changes nothing for a stage whose reach is its memory). A chain whose reach
    does not count source frames (an output grid, None) starts at the window, as before."""
    reach = chain_reach(stages, window.start or Fraction(0)) if rate > 0 else None
    first, last = window.start, window.end
    if reach is not None and reach.before and first:
        first = max(Fraction(0), first - (reach.before + 1) / rate)
    if reach is not None and reach.after and last is not None:
        last = last + (reach.after + 1) / rate
    return first, last


def run(
    input_path: str | Path,
    output_path: str | Path,
    stages: Sequence[Stage] = (),
    options: RunOptions = RunOptions(),
    timings: Timings | None = None,
) -> RunResult:
    """Process one video: decode, run `stages` in order on the chosen device, encode and mux. `timings` (made
    here when not given) gets the run's start-up marks, busy seconds and bound (runtime/timings.py)."""
    t0 = time.monotonic()
    clock = timings or Timings()
    src, dst = Path(input_path), Path(output_path)
    if dst.resolve() == src.resolve():
        raise UsageError(f"output {dst} is the input; choose another output path")
    check_target(dst, options.writer)  # an output that cannot be written fails now, before any decoding
    info = probe(src, max_pixels=max_pixels_limit(options.max_pixels))
    clock.mark("probe")
    device = resolve_device(options.device)
    clock.mark("device")
    spec = source_spec(info, options.reader.keep_alpha, options.reader.deinterlace)
    specs: list[StreamSpec] = []  # each stage's input, for the scheduler
    with ContextOnThread(device, ready=lambda: clock.mark("context")):  # made while the stages read their weights
        for stage in stages:
            specs.append(spec)
            spec = stage.setup(device, spec)
    clock.mark("setup")
    check_frame_memory(src, specs[0] if specs else spec, spec, options)
    stop = stop_request()
    on_device = options.colour_on_device == "on" or (options.colour_on_device == "auto" and device.type == "cuda")
    pin = device.type == "cuda"
    reader_opts = replace(options.reader, planar=on_device, pin_memory=pin)
    if options.window is not None:
        first, last = options.window.feed or _feed(options.window, stages, info.video.rate)
        reader_opts = replace(reader_opts, start=first, end=last)
    signed = signature_fields(src, stages, reader_opts, options.writer)
    if options.schedule.skip_finished:
        old, why = finished(src, dst, manifest_path(dst), signed)
        if old is not None:
            log.info("skipped %s: %s", dst, why)
            frames = (old.get("frames_in", 0), old.get("frames_out", 0))
            return RunResult(
                output=dst, frames_in=frames[0], frames_out=frames[1], wall_s=0.0, manifest=old, skipped=True
            )
        if why != "no manifest":
            log.info("making %s again: %s", dst, why)
    analyse_sources(stages, info, reader_opts, options)  # e.g. `--dewatermark auto`'s detection over the input
    # the stages check the stop request within their batches too (between tiles, pairs, layers on the CPU)
    chain = schedule_chain(
        stages, specs, device, options.schedule, reader_batch=options.reader.batch_size, check=stop.check
    )
    reader = VideoReader(info, reader_opts, check=stop.check)
    writer = VideoWriter(dst, spec, reader.colour, info, options.writer)
    transfer = Transfer(device, reader, writer if on_device else None, options.encode_queue, stop.check)
    progress = Progress(options.progress, expected_frames(spec, options), dst.name)
    cap = _FrameCap(options.writer.trim.max_frames if options.writer.trim is not None else None)
    progress.stage = " → ".join(s.name for s in stages) or "copy"
    clock.mark("open")
    # each part's busy seconds, for the bound (colour conversion and stages here; decode and encode on their threads)
    upload = clock.timed("colour", transfer.upload)

    def download(out: FrameBatch) -> Iterator[FrameBatch | PlanarBatch]:
        return clock.timed_iter("colour", transfer.pieces(out))

    chained = clock.timed("model", run_chain)

    written: list[tuple[float, int]] = []  # (time, frames written so far) per batch, for steady-state rates

    def encode_all(batches: Iterator[FrameBatch | PlanarBatch]) -> WriterStats:
        total = 0
        for b in batches:
            writer.write(b)
            clock.mark("first_encoded")
            progress.advance(len(b))
            total += len(b)
            written.append((time.monotonic(), total))
        stats = writer.close()
        written.append((time.monotonic(), total))
        return stats

    ok = False
    with FFmpegLog() as ffmpeg_log, stop.installed():
        sink: Consumer[FrameBatch | PlanarBatch, WriterStats] | None = None
        try:
            progress.start()
            sink = Consumer(f"encode:{dst.name}", encode_all, maxsize=options.encode_queue, check=stop.check)
            transfer.watch(sink)
            with torch.inference_mode():
                for batch in reader:
                    stop.check()
                    clock.mark("first_decoded")
                    out = chained(chain, upload(batch))
                    if options.window is not None:
                        out = options.window.select(out)
                    out = cap.take(out)
                    if out is not None and len(out):
                        clock.mark("first_output")
                        for piece in download(out):
                            sink.put(piece)
                    if cap.full:  # --frames N written: nothing later is wanted, not even the stages' held frames
                        break
                for out in clock.timed_iter("model", flush_chain(chain)) if not cap.full else ():
                    stop.check()
                    if options.window is not None and (out := options.window.select(out)) is None:
                        continue
                    if (out := cap.take(out)) is None:
                        continue
                    clock.mark("first_output")
                    for piece in download(out):
                        sink.put(piece)
            wstats = sink.finish()
            ok = True
        finally:
            if not ok:
                ffmpeg_log.detach()
            reader.close()
            if not ok:
                if sink is not None:
                    sink.cancel()
                writer.abort()
            progress.finish(ok)
    wall = time.monotonic() - t0
    # colour apart only where the transfer converts on the CPU (swscale's counts in decode/encode; CUDA's in model)
    encode_s = sink.busy_s if sink is not None else 0.0
    bound = clock.finish(decode_s=reader.busy_s, encode_s=encode_s, written=written, merged=pin or not on_device)
    log.info("%s", bound.summary())
    manifest = build_manifest(info, dst, stages, reader, wstats, device, wall, ffmpeg_log.messages)
    manifest["colour_conversion"] = transfer.describe()
    manifest.update(signed)
    manifest["schedule"] = schedule_block(chain, device, options.schedule, options.reader.batch_size)
    manifest["timings"] = clock.to_json()
    if options.manifest:
        write_json(manifest_path(dst), manifest)
    for msg in ffmpeg_log.messages[:10]:
        log.warning("ffmpeg: %s", msg)
    return RunResult(
        output=dst,
        frames_in=reader.stats.frames,
        frames_out=wstats.frames,
        wall_s=wall,
        manifest=manifest,
        written=written,
    )


@dataclass(slots=True)
class _FrameCap:
    """At most `left` more output frames (`Trim.max_frames`); None: no limit."""

    left: int | None

    @property
    def full(self) -> bool:
        return self.left == 0

    def take(self, batch: FrameBatch | None) -> FrameBatch | None:
        if batch is None or self.left is None:
            return batch
        if self.left == 0 or not len(batch):
            return None
        if len(batch) > self.left:
            batch = batch.slice(0, self.left)
        self.left -= len(batch)
        return batch


def expected_frames(spec: StreamSpec, options: RunOptions) -> int | None:
    """The frames a run should write (the progress total): the output stream's count, within the time window
    (at the stream's rate) and the frame cap; None when nothing tells."""
    n = spec.frames
    rate = spec.rate or spec.nominal_rate
    window = options.window
    if window is not None and rate:
        end = window.end if window.end is not None else (None if n is None else n / rate)
        if end is not None:
            part = max(0, math.ceil((end - (window.start or 0)) * rate))
            n = part if n is None else min(n, part)
    cap = options.writer.trim.max_frames if options.writer.trim is not None else None
    if cap is not None:
        n = cap if n is None else min(n, cap)
    return n


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def build_manifest(
    info: MediaInfo,
    dst: Path,
    stages: Sequence[Stage],
    reader: VideoReader,
    w: WriterStats,
    device: torch.device,
    wall: float,
    ffmpeg_warnings: list[str],
) -> dict[str, Any]:
    """The run manifest (`OUTPUT.json`) of one video: input, output as probed, the stages' signatures and
    reports, reader and writer counts, warnings, device and versions. Shared by `run` and `runtime.multi`."""
    try:
        out_summary: dict[str, Any] = probe(dst).summary() if not dst.is_dir() else {"path": str(dst)}
    except VidpipeError as e:  # the manifest still records the run; the output problem is stated
        out_summary = {"path": str(dst), "probe_error": str(e)}
    return {
        "vidpipe": __version__,
        "input": info.summary(),
        "output": out_summary,
        "stages": [s.signature() for s in stages],
        # what stages found while running (e.g. interpolation's scene cuts); stages with nothing to say are left out
        "stage_reports": {s.name: r for s in stages if (r := s.report())},
        "frames_in": reader.stats.frames,
        "frames_out": w.frames,
        "corrupt_skipped": reader.stats.corrupt_skipped,
        "decoder": reader.stats.decoder,
        "encoder": {"codec": w.encoder, "pix_fmt": w.pix_fmt, "padded_to": w.padded, "parallel": w.parallel},
        **({"conform": w.conform} if w.conform else {}),
        "streams": {
            "copied": w.copied,
            "reencoded": w.reencoded,
            "dropped": w.dropped,
            "audio_dropped_packets": w.audio_dropped_packets,
        },
        "warnings": reader.stats.warnings + w.warnings + ffmpeg_warnings,
        "device": describe(device),
        "versions": versions(),
        "wall_s": round(wall, 3),
        "fps": round(w.frames / wall, 3) if wall > 0 else None,
    }
