"""The streaming path: reader thread → stage chain (this thread, on the device) → writer thread.

Queues hold batches, so host memory is O(queue × batch), never O(video). One end-of-stream sentinel per queue;
a worker's exception is re-raised here; threads are always joined. SIGINT/SIGTERM raise `Interrupted` here,
which removes the partial output and ends with a non-zero exit.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.logging
import torch

from .. import __version__
from ..errors import Interrupted, StageError, UsageError, VidpipeError
from ..frames import FrameBatch
from ..jobs import atomic
from ..media.info import MediaInfo
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.writer import VideoWriter, WriterOptions, WriterStats
from ..stages.base import Stage, StreamSpec
from .device import describe, resolve_device
from .progress import Progress, ProgressMode
from .threads import Consumer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    device: str = "auto"
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    writer: WriterOptions = field(default_factory=WriterOptions)
    #: batches waiting for the encoder
    encode_queue: int = 4
    progress: ProgressMode = "bar"
    manifest: bool = True


@dataclass(slots=True)
class RunResult:
    output: Path
    frames_in: int
    frames_out: int
    wall_s: float
    manifest: dict[str, Any]

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0


def source_spec(info: MediaInfo, keep_alpha: bool = True) -> StreamSpec:
    v = info.video
    w, h = v.display_size
    return StreamSpec(
        width=w,
        height=h,
        time_base=v.time_base,
        rate=None,
        alpha=v.alpha and keep_alpha,
        bit_depth=v.colour.bit_depth,
        nominal_rate=v.rate,
        frames=v.frames,
    )


def _chain(stages: Sequence[Stage], batch: FrameBatch | None, start: int = 0) -> FrameBatch | None:
    for stage in stages[start:]:
        if batch is None:
            return None
        try:
            batch = stage.process(batch)
        except VidpipeError:
            raise
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            raise StageError(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e
    return batch


def _flush(stages: Sequence[Stage]) -> Iterator[FrameBatch]:
    """End of stream: each stage's held frames go through the stages after it, then those flush in turn."""
    for i, stage in enumerate(stages):
        out = _chain(stages, stage.flush(), start=i + 1)
        if out is not None and len(out):
            yield out


class StopRequest:
    """SIGINT/SIGTERM set a flag and the pipeline raises `Interrupted` at its next safe point: between batches
    and while waiting on a queue. Raising inside the handler itself could hit a thread lock half-taken and
    deadlock the clean-up; a second signal raises at once (the user insists)."""

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


def run(
    input_path: str | Path,
    output_path: str | Path,
    stages: Sequence[Stage] = (),
    options: RunOptions = RunOptions(),
) -> RunResult:
    """Process one video: decode, run `stages` in order on the chosen device, encode and mux."""
    t0 = time.monotonic()
    src = Path(input_path)
    dst = Path(output_path)
    if dst.resolve() == src.resolve():
        raise UsageError(f"output {dst} is the input; choose another output path")
    info = probe(src)
    device = resolve_device(options.device)
    spec = source_spec(info, options.reader.keep_alpha)
    for stage in stages:
        spec = stage.setup(device, spec)
    stop = StopRequest()
    reader = VideoReader(info, options.reader, check=stop.check)
    writer = VideoWriter(dst, spec, reader.colour, info, options.writer)
    progress = Progress(options.progress, spec.frames, dst.name)
    progress.stage = " → ".join(s.name for s in stages) or "copy"

    def encode_all(batches: Iterator[FrameBatch]) -> WriterStats:
        for b in batches:
            writer.write(b)
            progress.advance(len(b))
        return writer.close()

    ok = False
    with FFmpegLog() as ffmpeg_log, stop.installed():
        sink: Consumer[FrameBatch, WriterStats] | None = None
        try:
            progress.start()
            sink = Consumer(f"encode:{dst.name}", encode_all, maxsize=options.encode_queue, check=stop.check)
            with torch.inference_mode():
                for batch in reader:
                    stop.check()
                    out = _chain(stages, batch.with_data(batch.data.to(device, non_blocking=True)))
                    if out is not None and len(out):
                        sink.put(out.with_data(out.data.cpu()))
                for out in _flush(stages):
                    sink.put(out.with_data(out.data.cpu()))
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
    manifest = _manifest(info, dst, stages, reader, wstats, device, wall, ffmpeg_log.messages)
    if options.manifest:
        atomic.write_json(manifest_path(dst), manifest)
    for msg in ffmpeg_log.messages[:10]:
        log.warning("ffmpeg: %s", msg)
    return RunResult(
        output=dst, frames_in=reader.stats.frames, frames_out=wstats.frames, wall_s=wall, manifest=manifest
    )


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def _manifest(
    info: MediaInfo,
    dst: Path,
    stages: Sequence[Stage],
    reader: VideoReader,
    w: WriterStats,
    device: torch.device,
    wall: float,
    ffmpeg_warnings: list[str],
) -> dict[str, Any]:
    try:
        out_summary: dict[str, Any] = probe(dst).summary() if not dst.is_dir() else {"path": str(dst)}
    except VidpipeError as e:  # the manifest still records the run; the output problem is stated
        out_summary = {"path": str(dst), "probe_error": str(e)}
    return {
        "vidpipe": __version__,
        "input": info.summary(),
        "output": out_summary,
        "stages": [s.signature() for s in stages],
        # what stages found while running (e.g. interpolation's scene cuts); optional `report()` on a stage
        "stage_reports": {s.name: s.report() for s in stages if callable(getattr(s, "report", None))},
        "frames_in": reader.stats.frames,
        "frames_out": w.frames,
        "corrupt_skipped": reader.stats.corrupt_skipped,
        "decoder": reader.stats.decoder,
        "encoder": {"codec": w.encoder, "pix_fmt": w.pix_fmt, "padded_to": w.padded},
        "streams": {"copied": w.copied, "reencoded": w.reencoded, "dropped": w.dropped},
        "warnings": reader.stats.warnings + w.warnings + ffmpeg_warnings,
        "device": describe(device),
        "versions": versions(),
        "wall_s": round(wall, 3),
        "fps": round(w.frames / wall, 3) if wall > 0 else None,
    }
