"""`vidpipe bench dewatermark`: frames/s of watermark removal end to end (issue 17's speed gate: ≥ 60 fps on an
H100 for 1080p H.264 with a corner logo).

Input: a generated clip (an FFmpeg lavfi source, `testsrc2` by default, panned by `scroll` so everything but the
logo moves; no files needed on a machine without network) with a logo drawn by `eval.watermark_clips.draw_logo`
composited in a corner at a known opacity (I = α·W + (1 − α)·B), encoded as H.264 (x264 crf 18, yuv420p).
Three runs of that file, each timed on the wall clock:
- decode: the reader alone (as `vidpipe run` configures it, `--hwaccel` honoured), frames/s;
- copy: `vidpipe run` with no stage, decode → H.264 encode: the I/O ceiling;
- end to end: `vidpipe run --dewatermark SPEC` (`auto` by default) into H.264, decode → dewatermark → encode:
  frames/s over the whole run (set-up, model and detection included) and steady-state (after the first
  `STEADY_SKIP` of the output, as `bench pipeline` measures), and the stage's own step timings from its report
  (the manifest's `stage_reports.dewatermark`: the entries under `seconds` or ending in `_s`).
The copy and end-to-end runs encode as `vidpipe run --speed P --encode-workers N` would (`speed`,
`encode_workers`: parallel chunk encoders, the writer's auto by default), and each reports which part bounded it
(the manifest's `timings.bound`: decode, colour, model, encode, each part's own rate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from ..errors import UsageError
from ..eval.watermark_clips import composite, draw_logo
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..runtime.pipeline import run
from ..runtime.recipe import PipelineRecipe
from .pipeline import steady

#: the share of the end-to-end output treated as warm-up in the steady rate (as `bench pipeline`)
STEADY_SKIP: Final = 0.2
#: the logo: its height as a share of the frame's, its margin from the corner, its default opacity
LOGO_HEIGHT: Final = 0.12
LOGO_MARGIN: Final = 0.03
DEFAULT_OPACITY: Final = 0.6
#: the picture pans (FFmpeg's `scroll`, wrapping around; shares of the frame per frame) so that only the logo stays
#: put: a still picture would read as one big overlay to the detection
PAN: Final = (0.004, 0.002)
CORNERS: Final = ("top-right", "top-left", "bottom-right", "bottom-left")
HEADER: Final = (
    "| input | frames | device | spec | decode fps | copy fps | end-to-end fps | steady fps | wall s |\n"
    "|---|---:|---|---|---:|---:|---:|---:|---:|"
)


def logo_clip(
    path: Path,
    size: tuple[int, int],
    frames: int,
    *,
    rate: Fraction = Fraction(30),
    source: str = "testsrc2",
    opacity: float = DEFAULT_OPACITY,
    corner: str = "top-right",
) -> Path:
    """Write (once: an existing `path` is reused) `frames` frames of lavfi `source` at `size` with a logo in
    `corner`, as H.264; returns `path`."""
    if corner not in CORNERS:
        raise UsageError(f"invalid corner {corner!r}; valid: {', '.join(CORNERS)}")
    if not 0 < opacity <= 1:
        raise UsageError(f"opacity must be in (0, 1], got {opacity}")
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    cover, colour = draw_logo(round(LOGO_HEIGHT * h))
    lh, lw = cover.shape
    mx, my = round(LOGO_MARGIN * w), round(LOGO_MARGIN * h)
    x = w - lw - mx if corner.endswith("right") else mx
    y = my if corner.startswith("top") else h - lh - my
    alpha = np.zeros((h, w), np.float32)
    paint = np.zeros((h, w, 3), np.float32)
    alpha[y : y + lh, x : x + lw] = cover * opacity
    paint[y : y + lh, x : x + lw] = colour
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    graph = f"{source}=size={w}x{h}:rate={rate.numerator}/{rate.denominator},scroll=h={PAN[0]}:v={PAN[1]}"
    src = av.open(graph, format="lavfi")
    try:
        with av.open(str(tmp), "w") as out:
            vs = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            for n, frame in enumerate(src.decode(video=0)):
                if n >= frames:
                    break
                marked = composite(frame.to_ndarray(format="rgb24"), alpha, paint)
                f = av.VideoFrame.from_ndarray(marked, format="rgb24")
                f.pts, f.time_base = n, 1 / rate
                out.mux(vs.encode(f))
            out.mux(vs.encode())
    finally:
        src.close()
    tmp.rename(path)
    return path


def step_seconds(report: dict[str, Any], prefix: str = "", timed: bool = False) -> dict[str, float]:
    """Every timing in a stage report: numeric entries whose key ends in `_s` or is `seconds`, or that sit in a
    dict so named (`{"seconds": {"detect": 1.2}}`), nested keys joined with dots."""
    out: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        is_time = timed or key.endswith("_s") or key == "seconds"
        if isinstance(value, dict):
            out |= step_seconds(value, f"{name}.", is_time)
        elif isinstance(value, int | float) and not isinstance(value, bool) and is_time:
            out[name] = float(value)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DewatermarkBench:
    input: str
    frames: int
    device: str
    spec: str
    decode_fps: float
    copy_fps: float
    e2e_fps: float
    steady_fps: float
    wall_s: float
    steps: dict[str, float]
    report: dict[str, Any]
    #: the encoder settings both runs used: the x264 preset and the parallel chunk encoders (None: auto)
    speed: str = "veryfast"
    encode_workers: int | None = None
    #: each run's `timings.bound` from its manifest ({} when the pipeline did not report one)
    copy_bound: dict[str, Any] = field(default_factory=dict)
    e2e_bound: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        return (
            f"| {self.input} | {self.frames} | {self.device} | {self.spec} | {self.decode_fps:.1f} | "
            f"{self.copy_fps:.1f} | {self.e2e_fps:.1f} | {self.steady_fps:.1f} | {self.wall_s:.1f} |"
        )

    def bound_lines(self) -> list[str]:
        """The encoder settings, then which part bounded the copy and the end-to-end run, with each part's rate."""
        workers = "auto" if self.encode_workers is None else str(self.encode_workers)
        lines = [f"encode: x264 --speed {self.speed}, --encode-workers {workers}"]
        for name, bound in (("copy", self.copy_bound), ("end to end", self.e2e_bound)):
            if not bound.get("bound_by"):
                lines.append(f"{name}: bound not reported")
                continue
            rates = sorted(bound.get("fps", {}).items(), key=lambda kv: kv[1])
            each = ", ".join(f"{p} {f:.1f}" for p, f in rates)
            lines.append(f"{name}: bound by {bound['bound_by']} ({each} fps)")
        return lines

    def step_lines(self) -> list[str]:
        """The stage's step timings: seconds and ms per frame."""
        if not self.steps:
            return ["(the stage reported no step timings)"]
        lines = ["| step | s | ms/frame |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.3f} | {1e3 * v / max(self.frames, 1):.2f} |" for k, v in self.steps.items()]
        return lines


def _decode_fps(src: Path, reader: ReaderOptions) -> float:
    info = probe(src)
    t0 = time.perf_counter()
    n = 0
    with VideoReader(info, reader) as rd:
        for b in rd:
            n += len(b)
    return n / (time.perf_counter() - t0)


def bench_dewatermark(
    size: tuple[int, int] = (1920, 1080),
    *,
    frames: int = 300,
    device: str = "auto",
    spec: str = "auto",
    work_dir: Path = Path(".cache/bench"),
    source: str = "testsrc2",
    opacity: float = DEFAULT_OPACITY,
    corner: str = "top-right",
    hwaccel: str = "none",
    batch_size: int = 8,
    speed: str = "veryfast",
    encode_workers: int | None = None,
) -> DewatermarkBench:
    """Generate (once) the logo clip, then time decode, copy and decode → dewatermark `spec` → H.264 (both encoded
    with the x264 preset `speed` by `encode_workers` parallel chunk encoders: None the writer's auto, 0 one)."""
    if frames < 2:
        raise UsageError(f"frames must be ≥ 2, got {frames}")
    w, h = size
    src = logo_clip(
        work_dir / f"dewatermark-{source}-{w}x{h}-{frames}-{corner}-a{opacity:g}.mp4",
        size,
        frames,
        source=source,
        opacity=opacity,
        corner=corner,
    )
    if encode_workers is not None and encode_workers < 0:
        raise UsageError(f"encode workers must be ≥ 0, got {encode_workers}")
    common = {
        "device": device,
        "encoder": "h264",
        "speed": speed,
        "hwaccel": hwaccel,
        "batch_size": batch_size,
        "encode_workers": encode_workers,
    }
    try:
        recipe = PipelineRecipe(dewatermark=spec, **common)
    except TypeError:
        raise UsageError("this vidpipe has no dewatermark stage (`vidpipe run --dewatermark`)") from None
    copy = PipelineRecipe(**common)
    opts = recipe.run_options(progress="none")
    decode = _decode_fps(src, opts.reader)
    copied = run(src, work_dir / f"dewatermark-copy-{w}x{h}.mp4", [], copy.run_options(progress="none"))
    res = run(src, work_dir / f"dewatermark-out-{w}x{h}.mp4", recipe.stages(), opts)
    start = res.written[-1][0] - res.wall_s if res.written else 0.0
    steady_fps, _warm = steady([(start, 0), *res.written], STEADY_SKIP) if res.written else (0.0, 0.0)
    report = res.manifest.get("stage_reports", {}).get("dewatermark", {})
    return DewatermarkBench(
        input=f"{w}x{h} h264 {source}, logo {corner} α{opacity:g}",
        frames=res.frames_out,
        device=str(res.manifest.get("device", device)),
        spec=spec,
        decode_fps=decode,
        copy_fps=copied.fps,
        e2e_fps=res.fps,
        steady_fps=steady_fps,
        wall_s=res.wall_s,
        steps=step_seconds(report),
        report=report,
        speed=speed,
        encode_workers=encode_workers,
        copy_bound=_bound(copied.manifest),
        e2e_bound=_bound(res.manifest),
    )


def _bound(manifest: dict[str, Any]) -> dict[str, Any]:
    bound = manifest.get("timings", {}).get("bound", {})
    return bound if isinstance(bound, dict) else {}
