"""Evaluation of cut detection: matching and P/R/F1, a seeded dataset builder on real single-shot footage, and
a side-by-side run of our detectors, PySceneDetect's and TransNetV2 on the same set.

Matching (one-to-one, greedy by distance): a predicted boundary matches a true hard cut within `tolerance`
frames, and a true soft transition when it lies anywhere in [start − tolerance, end + tolerance]. Per kind
(hard, soft) only predictions of that kind count; `overall` ignores kinds (a boundary is a boundary). Motion
events are not boundaries and are left out.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..assets import home, opencv_clip
from ..errors import InputError, UsageError
from ..stages.cuts.events import Event, read_json, write_json

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class Score:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}  # fmt: skip


def _window(t: Event, tolerance: int) -> tuple[int, int]:
    if t.kind == "soft" and t.start is not None and t.end is not None:
        return t.start - tolerance, t.end + tolerance
    return t.frame - tolerance, t.frame + tolerance


def match(truth: list[Event], pred: list[Event], tolerance: int) -> Score:
    pairs = []
    for i, t in enumerate(truth):
        lo, hi = _window(t, tolerance)
        for j, p in enumerate(pred):
            if lo <= p.frame <= hi:
                pairs.append((abs(p.frame - t.frame), i, j))
    used_t: set[int] = set()
    used_p: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    return Score(tp=len(used_t), fp=len(pred) - len(used_p), fn=len(truth) - len(used_t))


def evaluate(truth: list[Event], pred: list[Event], tolerance: int = 2) -> dict[str, Score]:
    """Scores `hard`, `soft` (kinds must agree) and `overall` (kind-agnostic); recall of each true kind by any
    prediction is `hard_any`/`soft_any`."""
    bounds = [p for p in pred if p.kind in ("hard", "soft")]
    out = {k: match([t for t in truth if t.kind == k], [p for p in bounds if p.kind == k], tolerance)
           for k in ("hard", "soft")}  # fmt: skip
    out["overall"] = match(truth, bounds, tolerance)
    for k in ("hard", "soft"):
        s = match([t for t in truth if t.kind == k], bounds, tolerance)
        out[f"{k}_any"] = Score(tp=s.tp, fp=0, fn=s.fn)
    return out


def evaluate_files(truth: Path, pred: Path, tolerance: int = 2) -> dict[str, Score]:
    return evaluate(read_json(truth), read_json(pred), tolerance)


# ---------------------------------------------------------------- dataset
#: single-shot stretches of the real clips (source frame ranges, end exclusive). Megamind.avi is a trailer:
#: its own cuts (0-based first frames 98, 154, 200, found by PySceneDetect's ContentDetector and
#: AdaptiveDetector alike; TransNetV2 not checked there) are kept ≥ 6 frames away, so no stretch contains one.
SOURCES: dict[str, list[tuple[int, int]]] = {
    "vtest.avi": [(0, 795)],
    "box.mp4": [(0, 456)],
    "cup.mp4": [(0, 217)],
    "Megamind.avi": [(4, 92), (105, 148), (161, 194), (207, 266)],
}
#: output geometry of built sequences: 480×360 (short side 360 → the policy picks `default`), 25 fps
BUILD_SIZE = (480, 360)
BUILD_RATE = 25
#: shot length range (frames) before transitions eat into it, and transition length range (the issue's 4–30)
SHOT_FRAMES = (24, 48)
TRANSITION_FRAMES = (4, 30)
#: share of boundaries that are hard cuts, dissolves, fades
KIND_WEIGHTS = {"hard": 0.5, "dissolve": 0.3, "fade": 0.2}


def source_path(name: str) -> Path:
    """A source clip of `SOURCES` on disk (Debian's opencv-doc, fetched once; box/cup unpacked once)."""
    if name.endswith(".mp4"):  # opencv-doc ships the box/cup clips gzipped
        import gzip
        import shutil

        out = home() / "clips" / name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            gz = opencv_clip(name + ".gz")
            tmp = out.with_suffix(".part")
            with gzip.open(gz, "rb") as fi, tmp.open("wb") as fo:
                shutil.copyfileobj(fi, fo)
            tmp.rename(out)
        return out
    return opencv_clip(name)


def _decoded(name: str) -> np.ndarray:
    """All frames of a source at BUILD_SIZE as a read-only memmap cached on disk (decoded once)."""
    w, h = BUILD_SIZE
    path = home() / "clips" / f"{name}.{w}x{h}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(source_path(name))) as c:
            frames = [f.to_ndarray(format="rgb24", width=w, height=h) for f in c.decode(video=0)]
        tmp = path.with_suffix(".part.npy")
        np.save(tmp, np.stack(frames))
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


@dataclass(frozen=True, slots=True)
class _Shot:
    source: str
    start: int
    length: int


def _plan(rng: random.Random, boundaries: int) -> tuple[list[_Shot], list[tuple[str, int]]]:
    lengths = {n: len(_decoded(n)) for n in SOURCES}
    shots: list[_Shot] = []
    trans: list[tuple[str, int]] = []
    kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
    for i in range(boundaries + 1):
        kind = rng.choices(kinds, weights)[0] if i < boundaries else "hard"
        tlen = 0 if kind == "hard" else rng.randint(*TRANSITION_FRAMES)
        prev_tlen = trans[-1][1] if trans else 0
        need = rng.randint(*SHOT_FRAMES) + tlen + prev_tlen
        # next shot from another source than the previous (a cut within one static camera would be a jump cut)
        names = [n for n in SOURCES if not shots or n != shots[-1].source]
        rng.shuffle(names)
        for n in names:
            ranges = [(a, min(b, lengths[n])) for a, b in SOURCES[n] if min(b, lengths[n]) - a >= need]
            if ranges:
                a, b = rng.choice(ranges)
                shots.append(_Shot(n, rng.randint(a, b - need), need))
                break
        else:
            raise InputError(f"no source stretch of {need} frames")
        if i < boundaries:
            trans.append((kind, tlen))
    return shots, trans


def _frames(shots: list[_Shot], trans: list[tuple[str, int]]) -> Iterator[tuple[np.ndarray, Event | None]]:
    """Output frames in order; with each boundary's first frame comes its truth event."""
    pos = 0
    skip = 0  # frames of this shot already used by the previous transition
    pending: Event | None = None  # a hard cut's truth, carried by the next shot's first frame
    for k, shot in enumerate(shots):
        src = _decoded(shot.source)
        a = src[shot.start : shot.start + shot.length]
        kind, tlen = trans[k] if k < len(trans) else ("hard", 0)
        body_end = len(a) - tlen if k < len(trans) else len(a)
        for f in a[skip:body_end]:
            yield np.asarray(f), pending
            pending = None
            pos += 1
        if k >= len(trans):
            break
        b = _decoded(shots[k + 1].source)[shots[k + 1].start :]
        if kind == "hard":
            pending = Event(frame=pos, time=Fraction(pos, BUILD_RATE), kind="hard", score=1.0)
            skip = 0
            continue
        start, end = pos, pos + tlen - 1
        ev = Event(frame=(start + end) // 2, time=Fraction((start + end) // 2, BUILD_RATE), kind="soft",
                   score=1.0, start=start, end=end)  # fmt: skip
        ramp = (tlen - 1) // 2  # fade: ramp out, 1–2 black frames, ramp in
        for i in range(tlen):
            fa, fb = a[body_end + i].astype(np.float32), b[i].astype(np.float32)
            if kind == "dissolve":
                al = (i + 1) / (tlen + 1)
                out = (1 - al) * fa + al * fb
            elif i < ramp:
                out = fa * (ramp - i) / (ramp + 1)
            elif i >= tlen - ramp:
                out = fb * (i - (tlen - ramp) + 1) / (ramp + 1)
            else:
                out = np.zeros_like(fa)
            yield np.clip(out + 0.5, 0, 255).astype(np.uint8), (ev if i == 0 else None)
            pos += 1
        skip = tlen


@dataclass(frozen=True, slots=True)
class BuiltClip:
    video: Path
    truth: Path
    events: list[Event]
    frames: int


def build_clip(path: Path, *, seed: int, boundaries: int, crf: int = 18) -> BuiltClip:
    """Edit real single-shot footage into one H.264 clip with `boundaries` known boundaries (hard cuts,
    dissolves and fades of TRANSITION_FRAMES), reproducible from `seed`. Writes PATH and PATH.truth.json."""
    rng = random.Random(seed)
    shots, trans = _plan(rng, boundaries)
    events: list[Event] = []
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=BUILD_RATE)
        st.width, st.height = BUILD_SIZE
        st.pix_fmt = "yuv420p"
        st.options = {"crf": str(crf), "preset": "veryfast"}
        for arr, ev in _frames(shots, trans):
            if ev is not None:
                events.append(ev)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = n
            c.mux(st.encode(frame))
            n += 1
        c.mux(st.encode(None))
    truth = path.with_name(path.name + ".truth.json")
    write_json(events, truth)
    return BuiltClip(video=path, truth=truth, events=events, frames=n)


def build_dataset(out_dir: Path, *, seed: int = 0, clips: int = 4, boundaries_per_clip: int = 12) -> list[BuiltClip]:
    return [build_clip(out_dir / f"cuts_{seed}_{i}.mp4", seed=seed * 1000 + i, boundaries=boundaries_per_clip)
            for i in range(clips)]  # fmt: skip


# ---------------------------------------------------------------- side by side
Predictor = Callable[[Path], list[Event]]


def ours(preset: str | None = "default", detectors: tuple[str, ...] = ("hard", "soft")) -> Predictor:
    def run(path: Path) -> list[Event]:
        from ..stages.cuts.detector import CutDetector, CutOptions
        from ..stages.cuts.run import run_detector

        return run_detector(path, CutDetector(CutOptions(detectors=detectors, preset=preset))).events  # type: ignore[arg-type]

    return run


def transnetv2(threshold: float = 0.5) -> Predictor:
    def run(path: Path) -> list[Event]:
        from ..stages.cuts.run import run_detector
        from ..stages.cuts.transnetv2 import TransNetV2Detector

        return run_detector(path, TransNetV2Detector(threshold=threshold)).events

    return run


#: PySceneDetect's detectors by the names used here
SCENEDETECT_DETECTORS = ("content", "adaptive", "histogram")


def scenedetect_detector(name: str) -> Any:
    """A PySceneDetect detector with its default settings."""
    from scenedetect import AdaptiveDetector, ContentDetector, HistogramDetector

    return {"content": ContentDetector, "adaptive": AdaptiveDetector, "histogram": HistogramDetector}[name]()


def pyscenedetect(detector: str, *, backend: str = "opencv", **backend_options: Any) -> Predictor:
    """PySceneDetect with its default settings (auto-downscale included); every scene start after the first is a
    hard cut. `backend`/`backend_options` go to `scenedetect.open_video` (the benchmark decodes with "pyav")."""

    def run(path: Path) -> list[Event]:
        from scenedetect import SceneManager, open_video

        video = open_video(str(path), backend=backend, **backend_options)
        sm = SceneManager()
        sm.add_detector(scenedetect_detector(detector))
        sm.detect_scenes(video)
        scenes = sm.get_scene_list()
        starts = [s[0].frame_num for s in scenes][1:]
        # scenedetect 0.7 counts frames from 1 in FrameTimecode.frame_num of scene starts
        base = 1 if scenes and scenes[0][0].frame_num == 1 else 0
        rate = Fraction(video.frame_rate).limit_denominator(100000)
        return [Event(frame=f - base, time=(f - base) / rate, kind="hard", score=1.0) for f in starts]

    return run


def predictors(only: list[str] | None = None) -> dict[str, Predictor]:
    """The side-by-side methods by name; `only` picks some by full name or last word (`default`, `content`)."""
    every = {
        "vidpipe default": ours("default"),
        "vidpipe fast": ours("fast"),
        "vidpipe quality": ours("quality"),
        "transnetv2": transnetv2(),
        **{f"scenedetect {d}": pyscenedetect(d) for d in SCENEDETECT_DETECTORS},
    }
    if not only:
        return every
    unknown = [m for m in only if not any(m in (name, name.split()[-1]) for name in every)]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(n.split()[-1] for n in every)}")
    return {name: fn for name, fn in every.items() if any(m in (name, name.split()[-1]) for m in only)}


@dataclass(slots=True)
class Row:
    name: str
    scores: dict[str, Score] = field(default_factory=dict)
    frames: int = 0
    wall_s: float = 0.0


def compare(clips: list[BuiltClip], methods: dict[str, Predictor] | None = None, tolerance: int = 2) -> list[Row]:
    rows = []
    for name, fn in (methods or predictors()).items():
        truth_all: list[Event] = []
        pred_all: list[Event] = []
        row = Row(name)
        offset = 0
        for clip in clips:
            t0 = time.perf_counter()
            pred = fn(clip.video)
            row.wall_s += time.perf_counter() - t0
            row.frames += clip.frames
            # concatenate clips on one frame axis so that the scores pool every boundary
            shift = offset
            truth_all += [_shift(e, shift) for e in clip.events]
            pred_all += [_shift(e, shift) for e in pred]
            offset += clip.frames + 10 * tolerance
        row.scores = evaluate(truth_all, pred_all, tolerance)
        rows.append(row)
    return rows


def pool(runs: list[list[Row]]) -> list[Row]:
    """Rows of several runs (seeds) on the same methods, pooled: counts add up, as if every clip were scored at
    once (clips never share a boundary)."""
    out: list[Row] = []
    for same in zip(*runs, strict=True):
        row = Row(same[0].name)
        for r in same:
            row.frames += r.frames
            row.wall_s += r.wall_s
            for k, sc in r.scores.items():
                acc = row.scores.get(k, Score(0, 0, 0))
                row.scores[k] = Score(acc.tp + sc.tp, acc.fp + sc.fp, acc.fn + sc.fn)
        out.append(row)
    return out


def _shift(e: Event, by: int) -> Event:
    start = None if e.start is None else e.start + by
    end = None if e.end is None else e.end + by
    return Event(frame=e.frame + by, time=e.time, kind=e.kind, score=e.score, start=start, end=end)


def table(rows: list[Row]) -> str:
    head = (
        f"{'method':<22} {'F1':>6} {'P':>6} {'R':>6} {'hardR':>6} {'softR':>6} {'hardF1':>6} {'softF1':>6} {'fps':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r.scores
        o = s["overall"]
        fps = r.frames / r.wall_s if r.wall_s else 0.0
        lines.append(
            f"{r.name:<22} {o.f1:6.3f} {o.precision:6.3f} {o.recall:6.3f} {s['hard_any'].recall:6.3f} "
            f"{s['soft_any'].recall:6.3f} {s['hard'].f1:6.3f} {s['soft'].f1:6.3f} {fps:7.1f}"
        )
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> str:
    return json.dumps([{**asdict(r), "scores": {k: v.to_json() for k, v in r.scores.items()}} for r in rows], indent=1)
