"""`vidpipe bench cuts`: cut detection speed side by side with PySceneDetect, and the cut detector's cost tables.

Input: the evaluation clip of seed 0 (`vidpipe.eval.cuts.build_clip`: real single-shot footage of opencv-doc's
vtest/box/cup and Megamind shots, edited with hard cuts, dissolves and fades; 480×360) scaled to the bench size
with swscale's bicubic filter (4:3 stretched to 16:9) and encoded H.264 crf 18. Its truth is kept, so the speed
table also shows each method's F1 at that size.

Speed, two columns, every method on the same frames:
- end to end: file → events, wall time of the whole call (probe, open, decode, detection). Everything decodes
  the same file with the same decoder: FFmpeg's H.264 decoder through PyAV with `thread_type` AUTO (our
  `VideoReader`; PySceneDetect's `pyav` backend with `threading_mode="AUTO"`). What each does after decoding is
  its own cost: our classical detector takes the decoder's 4:2:0 planes (`run_detector`: no RGB conversion) and
  shrinks them to its analysis size, TransNetV2 takes RGB batches; PySceneDetect converts every frame to BGR and
  downscales it to ~256 px wide (its default auto-downscale). Decode-only rows give each path's ceiling.
- detector only: the frames decoded once beforehand and held in RAM (RGB batches for ours, the same frames as
  BGR arrays for PySceneDetect, downscaled inside the timed loop exactly as its SceneManager does); only
  detection is timed.

Cost tables (seed S1 §2: ms per frame_pair per short-side bucket × aspect × preset, host memory, provenance): rows
of `vidpipe.schedule.costs.CostRow`, measured detector-only on the first `COST_FRAMES` frames of the same footage
scaled to each bucket's 16:9 and 9:16 size, for each preset and each detector set of `COST_DETECTORS`; one file
per detector set under the seed's names (`cost_table_name`).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from ..errors import UsageError
from ..eval.cuts import (
    BUILD_SIZE,
    SCENEDETECT_DETECTORS,
    build_clip,
    evaluate,
    pyscenedetect,
    scenedetect_detector,
)
from ..frames import FrameBatch
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..media.yuv import PlanarBatch
from ..paths import write_json
from ..runtime.pipeline import versions
from ..schedule.costs import (
    CostRow,
    CostTable,
    InputBucket,
    Provenance,
    bucket_size,
    key_for,
)
from ..stages.base import StreamSpec
from ..stages.cuts.detector import CutDetector, CutOptions
from ..stages.cuts.events import Event, Kind, read_json
from ..stages.cuts.presets import PRESET_NAMES
from ..stages.cuts.run import BATCH as RUN_BATCH
from ..stages.cuts.run import run_detector
from ..stages.cuts.transnetv2 import TransNetV2Detector

#: the evaluation clip the bench runs on (seed and boundaries of `build_clip`)
BENCH_SEED = 0
BENCH_BOUNDARIES = 12
#: the evaluation clips' own size; cost tables scale its frames to each bucket
BASE_SIZE = BUILD_SIZE
#: frames per batch of the pre-decoded (detector-only, cost) runs; the detector works frame by frame, so its cost
#: does not depend on it
BATCH = 16
#: short-side buckets of the cost tables (a subset of `schedule.costs.RESOLUTION_BUCKETS`; `--bucket` adds more)
COST_BUCKETS = (360, 540, 720, 1080)
#: frames per cost measurement: three times the detector's window, so its steady state dominates
COST_FRAMES = 150
#: detector sets with a table each: the seed's three (hard, soft, motion) and the CLI's default hard+soft
COST_DETECTORS: tuple[tuple[Kind, ...], ...] = (("hard",), ("soft",), ("motion",), ("hard", "soft"))
#: evaluation tolerance of the F1 column (frames), as `vidpipe eval cuts`
TOLERANCE = 2


@dataclass(frozen=True, slots=True)
class SpeedRow:
    method: str
    frames: int
    e2e_fps: float | None
    detector_fps: float | None
    f1: float | None

    def markdown(self) -> str:
        def num(v: float | None, fmt: str) -> str:
            return "—" if v is None else format(v, fmt)

        return (
            f"| {self.method} | {self.frames} | {num(self.e2e_fps, '.1f')} | {num(self.detector_fps, '.1f')} "
            f"| {num(self.f1, '.3f')} |"
        )


# ------------------------------------------------------------------------------------------------ input
def bench_clip(work_dir: Path, size: tuple[int, int]) -> tuple[Path, list[Event]]:
    """The seed-0 evaluation clip scaled to `size` (built once in `work_dir`) and its true boundaries."""
    base = work_dir / f"cuts_seed{BENCH_SEED}.mp4"
    truth = base.with_name(base.name + ".truth.json")
    if not (base.exists() and truth.exists()):
        build_clip(base, seed=BENCH_SEED, boundaries=BENCH_BOUNDARIES)
    if tuple(size) == BASE_SIZE:
        return base, read_json(truth)
    w, h = size
    out = work_dir / f"cuts_seed{BENCH_SEED}_{w}x{h}.mp4"
    if not out.exists():
        tmp = out.with_suffix(".part.mp4")
        scale_clip(base, tmp, size)
        tmp.rename(out)
    return out, read_json(truth)


def scale_clip(src: Path, dst: Path, size: tuple[int, int]) -> None:
    """Every frame of `src` scaled to `size` (swscale bicubic), H.264 crf 18, same rate, frame for frame."""
    w, h = size
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        rate = i.streams.video[0].average_rate
        st = o.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"crf": "18", "preset": "veryfast"}
        for n, frame in enumerate(i.decode(video=0)):
            f = frame.reformat(width=w, height=h, format="yuv420p", interpolation="BICUBIC")
            f.pts, f.time_base = n, Fraction(1) / rate
            o.mux(st.encode(f))
        o.mux(st.encode(None))


def base_frames(path: Path, n: int) -> tuple[np.ndarray, Fraction]:
    """The first `n` frames of `path` as one N×H×W×3 RGB array, and the stream's rate."""
    batches = decode_batches(path, limit=n)
    return np.concatenate([b.data.permute(0, 2, 3, 1).numpy() for b in batches]), probe(path).video.rate


def decode_batches(path: Path, batch: int = BATCH, limit: int | None = None) -> list[FrameBatch]:
    """Every frame of `path` (or the first `limit`) as the reader hands them over, held in RAM."""
    out: list[FrameBatch] = []
    n = 0
    with VideoReader(probe(path), ReaderOptions(batch_size=batch, keep_alpha=False)) as reader:
        for b in reader:
            out.append(b)
            n += len(b)
            if limit is not None and n >= limit:
                break
    if limit is not None and n > limit:
        last = out[-1]
        k = len(last) - (n - limit)
        out[-1] = FrameBatch(data=last.data[:k], pts=last.pts[:k], time_base=last.time_base, index=last.index[:k])
    return out


def _spec(batches: Sequence[FrameBatch]) -> StreamSpec:
    b = batches[0]
    return StreamSpec(width=b.width, height=b.height, time_base=b.time_base)


# ------------------------------------------------------------------------------------------------ speed
def _f1(truth: list[Event] | None, events: list[Event]) -> float | None:
    return None if truth is None else evaluate(truth, events, TOLERANCE)["overall"].f1


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ours_detector_only(batches: Sequence[FrameBatch], make: Callable[[], Any]) -> tuple[list[Event], float]:
    """(events, seconds) of one of our event stages over pre-decoded batches; setup (model load) not timed."""
    det = make()
    det.setup(torch.device("cpu"), _spec(batches))

    def run() -> list[Event]:
        for b in batches:
            det.process(b)
        det.flush()
        return list(det.events)

    return _timed(run)


def bgr_frames(batches: Sequence[FrameBatch]) -> list[np.ndarray]:
    """The same frames as PySceneDetect's backends hand them over (H×W×3 BGR uint8)."""
    return [cv2.cvtColor(f.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR) for b in batches for f in b.data[:, :3]]


def scenedetect_detector_only(frames: Sequence[np.ndarray], rate: Fraction, name: str) -> tuple[list[Event], float]:
    """(events, seconds) of a PySceneDetect detector over pre-decoded BGR frames, each downscaled in the timed loop
    as `SceneManager.detect_scenes` does by default (auto-downscale to ≥ 256 px wide, bilinear)."""
    from scenedetect import FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    det = scenedetect_detector(name)
    h, w = frames[0].shape[:2]
    factor = compute_downscale_factor(w)
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    fps = float(rate)

    def run() -> list[int]:
        cuts: list[Any] = []
        for i, f in enumerate(frames):
            small = cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if factor > 1 else f
            cuts += det.process_frame(FrameTimecode(i, fps), small)
        cuts += det.post_process(FrameTimecode(len(frames) - 1, fps))
        return sorted({int(c.frame_num) for c in cuts})

    starts, seconds = _timed(run)
    return [Event(frame=f, time=f / rate, kind="hard", score=1.0) for f in starts if f > 0], seconds


def _decode_only(path: Path, planar: bool) -> int:
    n = 0
    with VideoReader(probe(path), ReaderOptions(batch_size=RUN_BATCH, keep_alpha=False, planar=planar)) as reader:
        for b in reader:
            n += len(b)
            if isinstance(b, PlanarBatch):
                b.done()
    return n


def _scenedetect_decode_only(path: Path) -> int:
    from scenedetect import open_video

    video = open_video(str(path), backend="pyav", threading_mode="AUTO")
    n = 0
    while video.read() is not False:
        n += 1
    return n


def speed_table(
    path: Path,
    truth: list[Event] | None,
    *,
    presets: Sequence[str] = PRESET_NAMES,
    scenedetect: Sequence[str] = SCENEDETECT_DETECTORS,
    transnetv2: bool = True,
    repeat: int = 1,
    log: Callable[[str], None] = lambda _: None,
) -> list[SpeedRow]:
    """Rows of the speed table; each figure is the best of `repeat` runs (a shared machine only ever slows a run
    down). Methods alternate within a repeat so that drift of the machine hits them alike."""
    if repeat < 1:
        raise UsageError(f"repeat must be ≥ 1, got {repeat}")
    rate = probe(path).video.rate
    log(f"decoding {path.name} into RAM for the detector-only runs")
    batches = decode_batches(path)
    frames = sum(len(b) for b in batches)
    bgr = bgr_frames(batches) if scenedetect else []

    Method = tuple[str, Callable[[], list[Event]], Callable[[], tuple[list[Event], float]]]

    def ours(name: str, make: Callable[[], Any]) -> Method:
        def e2e() -> list[Event]:
            run = run_detector(path, make())
            if run.frames != frames:
                raise UsageError(f"{name} read {run.frames} frames, the reader {frames}: not the same frames")
            return run.events

        return name, e2e, lambda: ours_detector_only(batches, make)

    def theirs(name: str) -> Method:
        e2e = pyscenedetect(name, backend="pyav", threading_mode="AUTO")
        return f"PySceneDetect {name}", lambda: e2e(path), lambda: scenedetect_detector_only(bgr, rate, name)

    methods = [ours(f"vidpipe {p} (hard+soft)", partial(CutDetector, CutOptions(preset=p))) for p in presets]
    methods += [ours(f"vidpipe {p} (hard only)", partial(CutDetector, CutOptions(detectors=("hard",), preset=p)))
                for p in presets if p == "fast"]  # fmt: skip
    methods += [theirs(name) for name in scenedetect]
    if transnetv2:
        methods.append(ours("TransNetV2 (ours, CPU)", TransNetV2Detector))
    best: dict[str, list[float]] = {m[0]: [0.0, 0.0] for m in methods}
    found: dict[str, list[Event]] = {}
    decoders: dict[str, Callable[[], int]] = {
        "decode only: VideoReader → RGB batches": lambda: _decode_only(path, planar=False),
        "decode only: VideoReader → 4:2:0 planes (what `vidpipe cuts` reads)": lambda: _decode_only(path, planar=True),
    }
    if scenedetect:
        decoders["decode only: PySceneDetect pyav backend → BGR"] = lambda: _scenedetect_decode_only(path)
    decode = dict.fromkeys(decoders, 0.0)
    for r in range(repeat):
        for label, fn in decoders.items():
            n, s = _timed(fn)
            if n != frames:
                raise UsageError(f"{label} decoded {n} frames, the reader {frames}: not the same frames")
            decode[label] = max(decode[label], n / s)
        for name, e2e, only in methods:
            log(f"run {r + 1}/{repeat}: {name}")
            events, s = _timed(e2e)
            best[name][0] = max(best[name][0], frames / s)
            found[name] = events
            _, s = only()
            best[name][1] = max(best[name][1], frames / s)
    rows = [SpeedRow(label, frames, fps, None, None) for label, fps in decode.items()]
    rows += [SpeedRow(name, frames, e, d, _f1(truth, found[name])) for name, (e, d) in best.items()]
    return rows


def speed_markdown(rows: Sequence[SpeedRow], *, path: Path, command: str) -> str:
    v = versions()
    head = [
        f"### bench cuts — {dt.date.today().isoformat()}, commit {provenance().commit}",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}; PyAV {v['av']} / FFmpeg "
        f"{v['ffmpeg']}, OpenCV {cv2.__version__}, PySceneDetect {_scenedetect_version()}, torch {v['torch']}.",
        f"Input: {path.name} (seed-{BENCH_SEED} evaluation clip, real footage with {BENCH_BOUNDARIES} boundaries, "
        f"scaled to {probe(path).video.width}x{probe(path).video.height}). Command: `{command}`.",
        "",
        "| method | frames | end-to-end fps (decode included) | detector-only fps | F1 (tol 2) |",
        "|---|---:|---:|---:|---:|",
    ]
    return "\n".join([*head, *(r.markdown() for r in rows)])


# ------------------------------------------------------------------------------------------------ costs
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _scenedetect_version() -> str:
    try:
        import scenedetect

        return str(scenedetect.__version__)
    except ImportError:
        return "not installed"


def provenance() -> Provenance:
    """`schedule.costs` provenance of a CPU row (commit: `VIDPIPE_COMMIT` when set, else git's HEAD)."""
    return Provenance.here(torch.device("cpu"), "bench")


def scaled_batches(frames: np.ndarray, size: tuple[int, int], rate: Fraction) -> list[FrameBatch]:
    """RGB frames (N×H×W×3) resized to `size` (bicubic) as reader-like batches: NHWC storage, NCHW view."""
    w, h = size
    arr = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])
    data = torch.from_numpy(arr).permute(0, 3, 1, 2)
    tb = 1 / rate
    return [FrameBatch(data=data[s : s + BATCH], pts=list(range(s, min(s + BATCH, len(arr)))), time_base=tb,
                       index=list(range(s, min(s + BATCH, len(arr))))) for s in range(0, len(arr), BATCH)]  # fmt: skip


def cost_table_name(detectors: Sequence[Kind]) -> str:
    """The file of a detector set's table: the seed's `cut_detection_costs_v1.json` for hard cuts,
    `cut_detection_<kinds>_costs_v1.json` for the others (soft, motion, hard_soft)."""
    kinds = tuple(detectors)
    return "cut_detection_costs_v1.json" if kinds == ("hard",) else f"cut_detection_{'_'.join(kinds)}_costs_v1.json"


def cost_rows(
    frames: np.ndarray,
    rate: Fraction,
    *,
    buckets: Sequence[int] = COST_BUCKETS,
    presets: Sequence[str] = PRESET_NAMES,
    detectors: Sequence[tuple[Kind, ...]] = COST_DETECTORS,
    source: str = "",
    repeat: int = 1,
    log: Callable[[str], None] = lambda _: None,
) -> dict[tuple[Kind, ...], list[CostRow]]:
    """Rows by detector set: one `CostRow` per bucket × aspect (16:9, 9:16) × preset, measured on `frames`
    (N×H×W×3 RGB) scaled to each size. Latency is wall time over the whole run (flush included) ÷ frame pairs,
    the best of `repeat` runs. Memory is what
    the detector holds at its peak (`CutDetector.held_bytes`, its window of records): process RSS cannot tell one
    run from the next in one process (freed memory is kept and reused), and the detector's state is what a
    scheduler adds per concurrent video; the reader's queue (queue × batch frames) comes on top."""
    if len(frames) < 2 or repeat < 1:
        raise UsageError(f"cost rows need at least 2 frames and repeat ≥ 1, got {len(frames)} and {repeat}")
    prov = provenance()
    cpu = torch.device("cpu")
    tables: dict[tuple[Kind, ...], list[CostRow]] = {kinds: [] for kinds in detectors}
    for bucket in buckets:
        landscape = bucket_size(bucket)
        for aspect, (w, h) in (("16:9", landscape), ("9:16", landscape[::-1])):
            batches = scaled_batches(frames, (w, h), rate)
            n = sum(len(b) for b in batches)
            for preset in presets:
                for kinds in detectors:
                    spec = _spec(batches)
                    seconds, held = float("inf"), 0
                    for _ in range(repeat):  # best of `repeat`: a shared machine only ever slows a run down
                        det = CutDetector(CutOptions(detectors=kinds, preset=preset))
                        det.setup(cpu, spec)
                        t0 = time.perf_counter()
                        for b in batches:
                            det.process(b)
                            held = max(held, det.held_bytes())
                        det.flush()
                        seconds = min(seconds, time.perf_counter() - t0)
                    ms = 1000 * seconds / (n - 1)
                    log(f"{w}x{h} {preset:<8} {'+'.join(kinds):<10} {ms:8.2f} ms/pair")
                    tables[kinds].append(
                        CostRow(
                            component=det.name,
                            unit="frame_pair",
                            input_bucket=InputBucket.of(w, h),
                            runtime="inprocess",
                            # the key the scheduler looks the stage up by
                            model_signature=key_for(det, spec, cpu, "fp32", "inprocess").model_signature,
                            dtype="fp32",
                            gpu_memory_per_task_mb=None,
                            cpu_rss_peak_mb=round(held / 2**20, 3),
                            latency_ms_per_unit=round(ms, 4),
                            # frames of one video are analysed in order: no batching within a video (seed §2.1)
                            max_batch_size_component=1,
                            # one detector per video (it keeps a window of state): videos run in parallel, never
                            # mixed in one batch
                            cross_video_batching=False,
                            provenance=prov,
                            notes=(
                                f"detectors {'+'.join(kinds)}, preset {preset}, aspect {aspect}; {n} frames of "
                                f"{source or 'the given frames'}; cpu_rss_peak_mb: peak memory the detector holds "
                                f"(its window of records; per video, not per pair, whatever the length)"
                            ),
                        )
                    )
    return tables


def machine() -> dict[str, Any]:
    """The host a table was measured on (rows name only `cpu (N cores)`)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def library_versions() -> dict[str, str]:
    return {**versions(), "opencv": cv2.__version__, "numpy": np.__version__}


def write_costs(
    directory: Path,
    tables: Mapping[tuple[Kind, ...], Sequence[CostRow]],
    *,
    command: str,
    source: str,
    host: Mapping[str, Any] | None = None,
    libraries: Mapping[str, str] | None = None,
) -> list[Path]:
    """One file per detector set in `directory`, named by `cost_table_name`: a `schedule.costs` table plus what
    its schema cannot hold; the paths written. `host`/`libraries` default to this machine's (`machine()`,
    `library_versions()`); tables converted from an older layout pass the ones they were measured with.

    Only the 16:9 rows go to `rows` (what `CostTable.load` and the scheduler read). Both aspects in `rows` would
    clash: a row's key is its bucket's short side, the same for a bucket's 16:9 and 9:16 sizes, and its detector's
    signature, which does not depend on the aspect, so a `CostBook` would keep whichever came last. The
    scheduler's buckets are measured at 16:9 (`schedule.costs.bucket_size`); the seed's 9:16 figures go to
    `rows_9x16`, same row format, beside them. Then the CPU model, library versions, the input and the command
    that rebuilds the files."""
    paths: list[Path] = []
    for kinds, rows in tables.items():
        landscape = tuple(r for r in rows if r.input_bucket.width >= r.input_bucket.height)
        portrait = [r.to_json() for r in rows if r.input_bucket.width < r.input_bucket.height]
        path = directory / cost_table_name(kinds)
        write_json(
            path,
            {
                **CostTable(rows=landscape).to_json(),
                "rows_9x16": portrait,
                "detectors": list(kinds),
                "machine": dict(host) if host is not None else machine(),
                "versions": dict(libraries) if libraries is not None else library_versions(),
                "input": source,
                "command": command,
            },
        )
        paths.append(path)
    return paths
