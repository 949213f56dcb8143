"""`vidpipe bench dewatermark`: frames/s of watermark removal end to end (issue 17's speed gate: ≥ 60 fps on an
H100 for 1080p H.264 with a corner logo).

Input: real footage (by default the TransNetV2 wheel's tests/test.mp4, the eval's clip: shots and cuts, its
pillarbox cropped off, scaled to the bench's size by FFmpeg's `scale`; or opencv-doc's vtest.avi / Megamind.avi,
or a path; looped when shorter than the run) or a generated clip (an FFmpeg lavfi source such as `testsrc2`, panned
by `scroll` so everything but the logo moves; no files needed on a machine without network), with a logo drawn by
`eval.watermark_clips.draw_logo` composited in a corner at a known opacity (I = α·W + (1 − α)·B), encoded as H.264
(x264 crf 18, yuv420p). The logo's true box is printed (`box:X,Y,W,H`, to time removal with a given box) and, for
`auto`, the IoU of the boxes of the marks found against it: over a flat generated picture `auto` may find no mark
and the end-to-end run then times detection alone. Three runs of that file, each timed on the wall clock:
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

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from ..errors import UsageError
from ..eval.watermark_clips import TRANSNETV2_CLIP, composite, draw_logo, source_path
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
#: the default input: real footage with shots and cuts (the eval's clip)
DEFAULT_SOURCE: Final = TRANSNETV2_CLIP
#: FFmpeg's lavfi video sources taken as generated input (anything else is a clip: a name or a path)
LAVFI: Final = ("testsrc", "testsrc2", "zoneplate", "cellauto", "life", "mandelbrot", "smptebars", "rgbtestsrc")
#: the first frame taken of a clip (test.mp4 opens on black frames)
CLIP_START: Final = {TRANSNETV2_CLIP: 4}
#: a column or row of a clip is border (a pillarbox or letterbox bar) where no sampled frame exceeds this (8 bit)
BORDER_LEVEL: Final = 16
HEADER: Final = (
    "| input | frames | device | spec | decode fps | copy fps | end-to-end fps | steady fps | wall s |\n"
    "|---|---:|---|---|---:|---:|---:|---:|---:|"
)


def is_lavfi(source: str) -> bool:
    """Whether `source` names a generated lavfi source (`testsrc2`, `life=…`) rather than a clip."""
    return source.partition("=")[0] in LAVFI


def logo_box(size: tuple[int, int], corner: str = "top-right") -> tuple[int, int, int, int]:
    """(x, y, w, h): where `logo_clip` puts the logo in a frame of `size` (its true box: `box:X,Y,W,H`)."""
    if corner not in CORNERS:
        raise UsageError(f"invalid corner {corner!r}; valid: {', '.join(CORNERS)}")
    w, h = size
    lh, lw = draw_logo(round(LOGO_HEIGHT * h))[0].shape
    mx, my = round(LOGO_MARGIN * w), round(LOGO_MARGIN * h)
    x = w - lw - mx if corner.endswith("right") else mx
    y = my if corner.startswith("top") else h - lh - my
    return x, y, lw, lh


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - iw * ih
    return iw * ih / union if union else 0.0


def _content_box(path: Path, sample: int = 60) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a clip's picture without its black bars: columns and rows where some of the first `sample`
    frames exceed `BORDER_LEVEL`, less 1 px where a bar was cut (its soft edge)."""
    peak = None
    with av.open(str(path)) as c:
        for n, frame in enumerate(c.decode(video=0)):
            grey = frame.to_ndarray(format="gray")
            peak = grey if peak is None else np.maximum(peak, grey)
            if n + 1 >= sample:
                break
    if peak is None:
        raise UsageError(f"{path}: no video frames")
    h, w = peak.shape
    cols, rows = np.nonzero(peak.max(0) > BORDER_LEVEL)[0], np.nonzero(peak.max(1) > BORDER_LEVEL)[0]
    if len(cols) == 0 or len(rows) == 0:
        return 0, 0, w, h
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    x0, x1 = (x0 + 1 if x0 > 0 else x0), (x1 - 1 if x1 < w else x1)
    y0, y1 = (y0 + 1 if y0 > 0 else y0), (y1 - 1 if y1 < h else y1)
    return x0, y0, x1 - x0, y1 - y0


def footage(path: Path, size: tuple[int, int], frames: int, start: int = 0) -> tuple[Iterator[np.ndarray], Fraction]:
    """(RGB frames H×W×3 uint8 of the clip at `path` from frame `start`, its bars cropped off and scaled to `size`
    by FFmpeg's bicubic `scale`, looping back to `start` until `frames` are given; the clip's rate)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rate = Fraction(v.average_rate or v.base_rate or 25)
    cx, cy, cw, ch = _content_box(path)
    w, h = size

    def gen() -> Iterator[np.ndarray]:
        given = 0
        while given < frames:
            before = given
            with av.open(str(path)) as c:
                v = c.streams.video[0]
                graph = av.filter.Graph()
                nodes = [
                    graph.add_buffer(template=v),
                    graph.add("crop", f"{cw}:{ch}:{cx}:{cy}"),
                    graph.add("scale", f"{w}:{h}:flags=bicubic"),
                    graph.add("format", "rgb24"),
                    graph.add("buffersink"),
                ]
                graph.link_nodes(*nodes).configure()
                for n, frame in enumerate(c.decode(v)):
                    if n < start:
                        continue
                    graph.push(frame)
                    yield graph.pull().to_ndarray(format="rgb24")
                    given += 1
                    if given >= frames:
                        return
            if given == before:
                raise UsageError(f"{path}: no frames from frame {start}")

    return gen(), rate


def _lavfi(source: str, size: tuple[int, int], frames: int, rate: Fraction) -> Iterator[np.ndarray]:
    w, h = size
    graph = f"{source}=size={w}x{h}:rate={rate.numerator}/{rate.denominator},scroll=h={PAN[0]}:v={PAN[1]}"
    src = av.open(graph, format="lavfi")
    try:
        for n, frame in enumerate(src.decode(video=0)):
            if n >= frames:
                break
            yield frame.to_ndarray(format="rgb24")
    finally:
        src.close()


def logo_clip(
    path: Path,
    size: tuple[int, int],
    frames: int,
    *,
    rate: Fraction = Fraction(30),
    source: str = DEFAULT_SOURCE,
    opacity: float = DEFAULT_OPACITY,
    corner: str = "top-right",
) -> Path:
    """Write (once: an existing `path` is reused) `frames` frames of `source` at `size` with a logo in `corner`,
    as H.264; returns `path`. `source`: a lavfi source (`is_lavfi`: generated at `rate`, panned) or a clip
    (`eval.watermark_clips.source_path`: the TransNetV2 clip, an opencv-doc clip or a path; at its own rate,
    `footage`)."""
    if not 0 < opacity <= 1:
        raise UsageError(f"opacity must be in (0, 1], got {opacity}")
    x, y, lw, lh = logo_box(size, corner)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    cover, colour = draw_logo(lh)
    alpha = (cover * opacity).astype(np.float32)
    if is_lavfi(source):
        pictures = _lavfi(source, size, frames, rate)
    else:
        pictures, rate = footage(source_path(source), size, frames, CLIP_START.get(source, 0))
    w, h = size
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for n, picture in enumerate(pictures):
            marked = np.ascontiguousarray(picture)
            marked[y : y + lh, x : x + lw] = composite(picture[y : y + lh, x : x + lw], alpha, colour)
            f = av.VideoFrame.from_ndarray(marked, format="rgb24")
            f.pts, f.time_base = n, 1 / rate
            out.mux(vs.encode(f))
        out.mux(vs.encode())
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
    #: the logo's true box (x, y, w, h) in the input
    logo: tuple[int, int, int, int] | None = None

    def found_lines(self) -> list[str]:
        """The logo's true box (as `--spec box:…` takes it) and each mark the run removed: its frames, its box and
        that box's IoU against the logo's."""
        if self.logo is None:
            return []
        lines = [f"logo: box:{','.join(map(str, self.logo))} (its true box: pass it as --spec to time removal alone)"]
        marks = self.report.get("marks", [])
        if not marks:
            lines.append(f"{self.spec}: no mark removed: the end-to-end run timed detection alone")
        for m in marks:
            box = m.get("box")
            iou = box_iou(tuple(box), self.logo) if box else 0.0
            last = m.get("last")
            last = "end" if isinstance(last, int) and last < 0 else last  # a box or mask given for every frame
            lines.append(f"{m.get('source', '?')} mark, frames {m.get('first')}–{last}: box {box}, IoU {iou:.3f}")
        return lines

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
    source: str = DEFAULT_SOURCE,
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
    name = re.sub(r"[^A-Za-z0-9.]+", "_", source if is_lavfi(source) else Path(source).name).strip("_")
    src = logo_clip(
        work_dir / f"dewatermark-{name}-{w}x{h}-{frames}-{corner}-a{opacity:g}.mp4",
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
        input=f"{w}x{h} h264 {name}, logo {corner} α{opacity:g}",
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
        logo=logo_box(size, corner),
    )


def _bound(manifest: dict[str, Any]) -> dict[str, Any]:
    bound = manifest.get("timings", {}).get("bound", {})
    return bound if isinstance(bound, dict) else {}
