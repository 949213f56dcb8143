"""`vidpipe bench pipeline`: where the time goes, on one input, in one run.

Four measurements of the same work, each in output frames/s so they compare directly:
  decode   the reader as the pipeline configures it, plus the upload and colour conversion on the device;
  model    the stage chain over frames already on the device (outputs downloaded as the pipeline does);
  encode   the writer over outputs already in host memory (colour conversion done, as the pipeline hands over);
  end-to-end  `pipeline.run`, all three overlapped in their threads.
Model and end-to-end rates are steady-state: batches before `skip` of the output are excluded (warm-up,
torch.compile, cuDNN planning), and the warm-up time is reported apart. The ratio end-to-end / min(isolated)
says how well the pipeline overlaps: 1.0 means the slowest part runs as fast alone as inside the pipeline.
GPU utilisation is sampled through NVML when torch can reach it (`torch.cuda.utilization`).
The end-to-end run also states its own bound (runtime/timings.py): the part whose busy seconds give the lowest
rate inside the pipeline, with that rate, and when it is the encoder the remedy.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..frames import Colour, FrameBatch
from ..media.encoders import EncoderOptions
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.synth import ClipSpec, cached_clip
from ..media.writer import VideoWriter, WriterOptions
from ..media.yuv import PlanarBatch
from ..runtime.device import describe
from ..runtime.pipeline import RunOptions, Transfer, flush_chain, run, run_chain, source_spec
from ..runtime.timings import STEADY_SKIP, steady
from ..schedule.budget import memory_budget
from ..stages.base import Stage, StreamSpec

#: share of the output treated as warm-up in steady-state rates
DEFAULT_SKIP = STEADY_SKIP


@dataclass(slots=True)
class PipelineReport:
    device: str
    input: str
    frames_in: int
    frames_out: int
    decode_fps: float  # output frames/s the decoder could feed (input rate × frames_out/frames_in)
    model_fps: float
    encode_fps: float
    e2e_fps: float
    warmup_s: float
    gpu_util: float | None
    colour_conversion: dict[str, str]
    #: the end-to-end run's bound (runtime/timings.py): part, its own output frames/s, the remedy ("" if none)
    bound: tuple[str, float, str] = ("", 0.0, "")
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.e2e_fps / min(self.decode_fps, self.model_fps, self.encode_fps)

    @property
    def bottleneck(self) -> str:
        rates = {"decode": self.decode_fps, "model": self.model_fps, "encode": self.encode_fps}
        return min(rates, key=rates.__getitem__)

    def markdown(self) -> str:
        util = f"{self.gpu_util:.0f}%" if self.gpu_util is not None else "n/a"
        part, fps, _ = self.bound
        return (
            "| decode | model | encode | end-to-end | e2e / min(isolated) | bottleneck | bound in run (own fps) "
            "| GPU util | warm-up s |\n"
            "|---:|---:|---:|---:|---:|---|---|---:|---:|\n"
            f"| {self.decode_fps:.1f} | {self.model_fps:.1f} | {self.encode_fps:.1f} | {self.e2e_fps:.1f} | "
            f"{self.ratio:.2f} | {self.bottleneck} | {f'{part} {fps:.1f}' if part else 'n/a'} | {util} | "
            f"{self.warmup_s:.1f} |"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Sampler:
    """Every 0.2 s: host RSS of this process, and GPU utilisation through NVML when torch can reach it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.util: list[float] = []
        self.rss_mb: list[float] = []
        self._nvml = False
        if device.type == "cuda":
            try:
                torch.cuda.utilization(device)
                self._nvml = True
            except Exception:  # NVML bindings absent (pynvml): the report says n/a
                pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.2):
            with open("/proc/self/statm") as f:
                self.rss_mb.append(int(f.read().split()[1]) * page / 2**20)
            if self._nvml:
                self.util.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean_util(self) -> float | None:
        # the first and last samples straddle start-up and shut-down
        core = self.util[1:-1] or self.util
        return sum(core) / len(core) if core else None

    def rss_halves(self) -> tuple[float, float]:
        """Peak RSS in the first and the second half of the run: flat memory means the second is no higher."""
        n = len(self.rss_mb)
        if n < 2:
            return (self.rss_mb[0], self.rss_mb[0]) if self.rss_mb else (0.0, 0.0)
        return max(self.rss_mb[: n // 2]), max(self.rss_mb[n // 2 :])


def measure(
    src: Path,
    make_stages: Callable[[], list[Stage]],
    *,
    device: torch.device,
    work_dir: Path,
    writer: WriterOptions,
    reader: ReaderOptions | None = None,
    skip: float = DEFAULT_SKIP,
    encode_repeats: int = 3,
) -> PipelineReport:
    info = probe(src)
    reader = reader or ReaderOptions()
    opts = RunOptions(device=str(device), reader=reader, writer=writer, progress="none", manifest=False)
    on_device = device.type == "cuda"
    ropts = replace(reader, planar=on_device, pin_memory=on_device)

    # 1. decode (+ upload + colour conversion), input frames/s
    _sync(device)
    t0 = time.perf_counter()
    with VideoReader(info, ropts) as rd:
        tr = Transfer(device, rd, None, 4, lambda: None)
        frames_in = 0
        for b in rd:
            frames_in += len(tr.upload(b))
        _sync(device)
    decode_in_fps = frames_in / (time.perf_counter() - t0)

    # 2. model over device-resident frames; outputs downloaded as the pipeline would, kept for the encoder
    stages = make_stages()
    spec = source_spec(info, reader.keep_alpha)
    for st in stages:
        spec = st.setup(device, spec)
    with VideoReader(info, ropts) as rd:
        tr = Transfer(device, rd, None, 4, lambda: None)
        on_dev: list[FrameBatch] = [tr.upload(b) for b in rd]
    out_writer = VideoWriter(work_dir / "bench-unused.mkv", spec, rd.colour, None, writer)  # only says the planes
    # downloads are copied out of the pool at once (`_own`), so one pooled buffer suffices
    out_tr = Transfer(device, rd, out_writer if on_device else None, 1, lambda: None)
    outputs: list[FrameBatch | PlanarBatch] = []
    marks: list[tuple[float, int]] = []
    _sync(device)
    marks.append((time.perf_counter(), 0))
    done = 0
    with torch.inference_mode():
        for b in on_dev:
            out = run_chain(stages, b)
            if out is not None and len(out):
                outputs.append(_own(out_tr.download(out)))
                done += len(out)
                _sync(device)
                marks.append((time.perf_counter(), done))
        for out in flush_chain(stages):
            outputs.append(_own(out_tr.download(out)))
            done += len(out)
        _sync(device)
        marks.append((time.perf_counter(), done))
    model_fps, warmup = steady(marks, skip)
    del on_dev, stages
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 3. encode outputs from host memory: as configured, and with one encoder using every thread for comparison
    # (alternating, `encode_repeats` times each, medians: the host's CPU speed drifts between runs)
    configured: list[float] = []
    single: list[float] = []
    layout = None
    for _ in range(encode_repeats):
        fps, layout = _encode_rate(outputs, spec, rd.colour, writer, work_dir / "bench-encode.mkv")
        configured.append(fps)
        one = replace(writer, encode_workers=0)
        single.append(_encode_rate(outputs, spec, rd.colour, one, work_dir / "bench-encode-1.mkv")[0])
    encode_fps, single_fps = statistics.median(configured), statistics.median(single)
    del outputs

    # 4. end to end
    vram_note = ""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        effective = memory_budget(device).effective_mb
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with _Sampler(device) as sampler:
        res = run(src, work_dir / "bench-e2e.mkv", make_stages(), opts)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        vram_note = f"; VRAM peak {peak:.0f} MB allocated vs the scheduler's effective budget {effective} MB"
    first, second = sampler.rss_halves()
    start = res.written[-1][0] - res.wall_s  # run() started its clock before probing and set-up
    e2e_fps, e2e_warm = steady([(start, 0), *res.written], skip)
    notes = [
        f"end-to-end warm-up {e2e_warm:.1f} s, wall {res.wall_s:.1f} s incl. set-up",
        f"host RSS peak {first:.0f} MB in the first half of the end-to-end run, {second:.0f} MB in the second"
        + vram_note,
    ]
    timed = res.manifest["timings"].get("bound", {})
    part = timed.get("bound_by") or ""
    if timed.get("remedy"):
        notes.append(timed["remedy"])
    if layout:
        faster = "parallel chunks" if encode_fps > single_fps else "encoder threading"
        notes.append(
            f"encode (median of {encode_repeats}): {layout}: {encode_fps:.1f} fps "
            f"({', '.join(f'{x:.1f}' for x in configured)}); one encoder with all threads: {single_fps:.1f} fps "
            f"({', '.join(f'{x:.1f}' for x in single)}); {faster} faster"
        )

    return PipelineReport(
        device=describe(device),
        input=f"{src.name}: {info.video.width}x{info.video.height} {info.video.codec} {frames_in} frames",
        frames_in=frames_in,
        frames_out=res.frames_out,
        decode_fps=decode_in_fps * res.frames_out / max(frames_in, 1),
        model_fps=model_fps,
        encode_fps=encode_fps,
        e2e_fps=e2e_fps,
        warmup_s=warmup,
        gpu_util=sampler.mean_util,
        colour_conversion=res.manifest.get("colour_conversion", {}),
        bound=(part, timed.get("fps", {}).get(part, 0.0), timed.get("remedy", "")),
        notes=notes,
    )


def _encode_rate(
    outputs: list[FrameBatch | PlanarBatch],
    spec: StreamSpec,
    colour: Colour,
    writer: WriterOptions,
    path: Path,
) -> tuple[float, str | None]:
    """(frames/s, parallel layout) writing `outputs` from host memory with `writer`."""
    w = VideoWriter(path, spec, colour, None, writer)
    t0 = time.perf_counter()
    for b in outputs:
        w.write(replace(b, release=None) if isinstance(b, PlanarBatch) else b)
    stats = w.close()
    return sum(len(b) for b in outputs) / (time.perf_counter() - t0), stats.parallel


def _own(batch: FrameBatch | PlanarBatch) -> FrameBatch | PlanarBatch:
    """A copy that outlives the transfer pool (the isolated encode runs after the model pass)."""
    if isinstance(batch, PlanarBatch):
        if batch.ready is not None:
            batch.ready.synchronize()
        own = replace(batch, data=batch.data.clone(), release=None, ready=None)
        batch.done()
        return own
    return batch


def generated_input(work_dir: Path, size: tuple[int, int], frames: int, source: str = "testsrc2") -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"pipe-{source}-{size[0]}x{size[1]}-{frames}.mp4"
    return cached_clip(
        path,
        ClipSpec(
            size=size, rate=Fraction(30), frames=frames, source=source, options={"crf": "18", "preset": "veryfast"}
        ),
    )


def x264(speed: str = "veryfast") -> WriterOptions:
    return WriterOptions(encoder=EncoderOptions(encoder="h264", speed=speed), copy_streams=False)


def report_lines(r: PipelineReport, what: str, extra: dict[str, Any]) -> list[str]:
    return [
        f"### {what}",
        f"device: {r.device}; input: {r.input} → {r.frames_out} frames; "
        + "; ".join(f"{k}: {v}" for k, v in extra.items()),
        f"colour conversion: {r.colour_conversion}",
        "",
        r.markdown(),
        "",
        *r.notes,
    ]
