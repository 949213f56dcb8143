"""Watermark removal quality against the clean frames (issue 17, item 5): `vidpipe eval watermark`.

Clips: `eval.watermark_clips` (real footage, generated marks of known α and colour, lossless FFV1 RGB, the source's
audio and one SRT track kept). Each remover writes the marked clip's output (FFV1, so nothing is lost on the way);
the output is decoded and scored against the clip's clean frames and its true α:
- PSNR in the box (dB): per frame with a mark, over the RGB samples of the mark's bounding box (α > 0) against
  the clean frame, peak 255, capped at `metrics.PSNR_CAP_DB`; the clip's figure is the mean over those frames,
  pooled the mean over every such frame of every clip.
- flicker (levels of 0..255): per pair of consecutive frames with a mark in either, mean over the union of their
  boxes of |(out_t − out_t−1) − (clean_t − clean_t−1)|; the mean over pairs (pooled: over every pair). A remover
  whose error stays put scores 0 however wrong it is; one that changes from frame to frame scores high.
- outside (pixels): per frame, the pixels (any channel) that differ from the input outside the mark's box grown
  by `OUTSIDE_MARGIN` px on each side (the whole frame where there is no mark); must be 0: the remover may
  dilate and feather its mask, never touch the rest of the picture.
- frames and timestamps: the output's frame count and every presentation time equal the input's.
- streams: every audio/subtitle stream of the input is in the output with its codec, packet count and packet
  bytes (sha256) unchanged.
- detection IoU (the `auto` row): `vidpipe watermark detect`'s marks against the true ones, per frame with a mark
  in either; each mask is where α ≥ `IOU_LEVEL` × that frame's peak α (the half-maximum contour of a soft mark:
  the shape's drawn edge, whatever the mark's opacity); a detection on a frame without a mark scores 0.

Rows: vidpipe's remover through the CLI (`vidpipe run … --dewatermark auto` and `mask:` the true masks, FFV1
output), OpenCV's per-frame Telea and Navier–Stokes (`cv2.inpaint`, radius `INPAINT_RADIUS`) given the same true
masks (every pixel the mark touches), and `input` (the marked clip through vidpipe with no stage: the floor, and
a check of the harness: it must be bit-exact outside and keep every stream).

Gates (issue 17's acceptance), each gated row against `BASELINE` on the pooled figures: PSNR in the box ≥ Telea's
+ `GATE_PSNR_DB`; flicker ≤ `GATE_FLICKER_RATIO` × Telea's; 0 pixels changed outside; frames, timestamps and
streams unchanged on every clip; and detection IoU ≥ `GATE_IOU`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Protocol

import av
import cv2
import numpy as np
import torch

from ..errors import InputError, StageError, UsageError, VidpipeError
from ..frames import FrameBatch
from ..metrics import PSNR_CAP_DB, psnr_per_frame
from ..stages.base import Stage
from ..stages.watermark.marks import Mark, load_marks
from .watermark_clips import DEFAULT_FRAMES, TestClip, build_clip, recipes

log = logging.getLogger(__name__)

#: pixels around the mark's box a remover may change (its mask dilated and feathered)
OUTSIDE_MARGIN: Final = 8
#: a soft mask's pixels are those with α ≥ this share of the frame's peak α
IOU_LEVEL: Final = 0.5
#: issue 17's gates
GATE_PSNR_DB: Final = 6.0
GATE_FLICKER_RATIO: Final = 0.5
GATE_IOU: Final = 0.8
BASELINE: Final = "telea"
#: cv2.inpaint's neighbourhood: 3 px, the radius of OpenCV's own inpainting sample (samples/python/inpaint.py)
INPAINT_RADIUS: Final = 3
#: rows through vidpipe's `--dewatermark`, the gated ones
VIDPIPE_ROWS: Final = ("auto", "mask")
DEFAULT_ROWS: Final = (*VIDPIPE_ROWS, "telea", "ns", "input")


# ---------------------------------------------------------------- outputs
@dataclass(frozen=True, slots=True)
class StreamDigest:
    """A non-video stream as a remover must keep it: kind, codec, packet count and the sha256 of its payloads."""

    kind: str
    codec: str
    packets: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Decoded:
    frames: np.ndarray  # N×H×W×3 uint8 RGB
    times: list[Fraction]  # presentation time of each frame, seconds
    streams: tuple[StreamDigest, ...]


def read_video(path: Path) -> Decoded:
    """Every frame (RGB), its time and a digest of each other stream of `path`."""
    try:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            frames, times = [], []
            for f in c.decode(v):
                frames.append(f.to_ndarray(format="rgb24"))
                times.append(Fraction(f.pts) * v.time_base if f.pts is not None else Fraction(-1))
        with av.open(str(path)) as c:
            others = [s for s in c.streams if s.type in ("audio", "subtitle")]
            digests = {s.index: (hashlib.sha256(), [0]) for s in others}
            for pkt in c.demux(*others) if others else ():
                if pkt.size:
                    h, n = digests[pkt.stream.index]
                    h.update(bytes(pkt))
                    n[0] += 1
            streams = tuple(
                StreamDigest(s.type, s.codec_context.name, digests[s.index][1][0], digests[s.index][0].hexdigest())
                for s in others
            )
    except (av.FFmpegError, IndexError) as e:
        raise InputError(f"cannot read {path}: {e}") from e
    if not frames:
        raise InputError(f"{path} has no video frames")
    return Decoded(np.stack(frames), times, streams)


# ---------------------------------------------------------------- metrics
def _crop(x: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
    """An H×W×3 uint8 crop as 1×3×h×w float 0..1."""
    x0, y0, x1, y1 = box
    return torch.from_numpy(np.ascontiguousarray(x[y0:y1, x0:x1])).permute(2, 0, 1)[None].double() / 255.0


def psnr_in_box(out: np.ndarray, clip: TestClip) -> list[float]:
    """Per frame with a mark: PSNR of the output against the clean frame over the mark's box."""
    values = []
    for t in range(clip.frames):
        box = clip.box(t)
        if box is not None:
            values.append(float(psnr_per_frame(_crop(out[t], box), _crop(clip.clean[t], box))[0]))
    return values


def _union(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    boxes = [x for x in (a, b) if x is not None]
    return (
        min(x[0] for x in boxes),
        min(x[1] for x in boxes),
        max(x[2] for x in boxes),
        max(x[3] for x in boxes),
    )


def flicker(out: np.ndarray, clip: TestClip) -> list[float]:
    """Per pair (t−1, t) with a mark in either: mean |Δout − Δclean| over the union of their boxes, 0..255."""
    values = []
    for t in range(1, clip.frames):
        a, b = clip.box(t - 1), clip.box(t)
        if a is None and b is None:
            continue
        x0, y0, x1, y1 = _union(a, b)
        o = out[t - 1 : t + 1, y0:y1, x0:x1].astype(np.int16)
        c = clip.clean[t - 1 : t + 1, y0:y1, x0:x1].astype(np.int16)
        values.append(float(np.abs((o[1] - o[0]) - (c[1] - c[0])).mean()))
    return values


def outside_changed(out: np.ndarray, clip: TestClip, margin: int = OUTSIDE_MARGIN) -> list[int]:
    """Per frame: pixels differing from the input outside the mark's box grown by `margin` (all of a frame
    without a mark)."""
    h, w = clip.marked_frames.shape[1:3]
    counts = []
    for t in range(clip.frames):
        differs = (out[t] != clip.marked_frames[t]).any(axis=2)
        box = clip.box(t)
        if box is not None:
            x0, y0, x1, y1 = box
            differs[max(0, y0 - margin) : min(h, y1 + margin), max(0, x0 - margin) : min(w, x1 + margin)] = False
        counts.append(int(differs.sum()))
    return counts


def marks_alpha(marks: Sequence[Mark], t: int, shape: tuple[int, int]) -> np.ndarray:
    """H×W: the largest α of the marks covering frame `t` (zeros if none)."""
    a = np.zeros(shape, np.float32)
    for m in marks:
        if m.covers(t):
            if m.alpha.shape != shape:
                raise UsageError(f"a detected mark is {m.size[0]}×{m.size[1]}, the frames {shape[1]}×{shape[0]}")
            np.maximum(a, m.alpha, out=a)
    return a


def _half_max(a: np.ndarray) -> np.ndarray:
    peak = float(a.max())
    return a >= IOU_LEVEL * peak if peak > 0 else np.zeros(a.shape, bool)


def mask_iou(detected: Sequence[Mark], clip: TestClip) -> list[float]:
    """Per frame with a true or detected mark: IoU of the two masks (`IOU_LEVEL` of each frame's peak α)."""
    shape = clip.alpha.shape[1:]
    values = []
    for t in range(clip.frames):
        true, found = _half_max(clip.alpha[t]), _half_max(marks_alpha(detected, t, shape))
        union = int((true | found).sum())
        if union:
            values.append(int((true & found).sum()) / union)
    return values


# ---------------------------------------------------------------- scores
def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v) if v else float("nan")


@dataclass(frozen=True, slots=True, kw_only=True)
class Scores:
    """One remover on one clip (or pooled): per-frame values, checks, seconds; `error` when it failed."""

    psnr: tuple[float, ...] = ()
    flicker: tuple[float, ...] = ()
    outside: tuple[int, ...] = ()
    frames_ok: bool = False
    streams_ok: bool = False
    seconds: float = 0.0
    error: str | None = None

    @staticmethod
    def of(out: Decoded, clip: TestClip, source: Decoded, seconds: float, margin: int) -> Scores:
        same_frames = len(out.times) == len(source.times) and out.times == source.times
        if out.frames.shape != clip.marked_frames.shape:  # no pixel comparison possible: every check fails
            why = f"output frames {out.frames.shape} vs input {clip.marked_frames.shape}"
            return Scores(frames_ok=False, streams_ok=out.streams == source.streams, seconds=seconds, error=why)
        return Scores(
            psnr=tuple(psnr_in_box(out.frames, clip)),
            flicker=tuple(flicker(out.frames, clip)),
            outside=tuple(outside_changed(out.frames, clip, margin)),
            frames_ok=same_frames,
            streams_ok=out.streams == source.streams,
            seconds=seconds,
        )

    @staticmethod
    def pool(scores: Sequence[Scores]) -> Scores:
        errors = [s.error for s in scores if s.error]
        return Scores(
            psnr=tuple(v for s in scores for v in s.psnr),
            flicker=tuple(v for s in scores for v in s.flicker),
            outside=tuple(v for s in scores for v in s.outside),
            frames_ok=all(s.frames_ok for s in scores),
            streams_ok=all(s.streams_ok for s in scores),
            seconds=sum(s.seconds for s in scores),
            error="; ".join(errors) if errors else None,
        )

    @property
    def mean_psnr(self) -> float:
        return _mean(self.psnr)

    @property
    def mean_flicker(self) -> float:
        return _mean(self.flicker)

    @property
    def changed_outside(self) -> int:
        return sum(self.outside)

    def to_json(self) -> dict[str, Any]:
        return {
            "psnr_box_db": round(self.mean_psnr, 4),
            "flicker": round(self.mean_flicker, 4),
            "changed_outside": self.changed_outside,
            "frames_and_times_kept": self.frames_ok,
            "streams_kept": self.streams_ok,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipResult:
    clip: str
    size: tuple[int, int]
    frames: int
    mark: str  # shape, opacity, motion
    streams: int  # audio/subtitle streams in the input
    rows: dict[str, Scores]
    #: detection IoU per frame (`auto`'s marks); empty when no detector ran
    iou: tuple[float, ...] = ()
    iou_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    name: str
    passed: bool
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "text": self.text}


def gates(
    pooled: dict[str, Scores], gated: Sequence[str], iou: Sequence[float] | None, baseline: str = BASELINE
) -> list[Gate]:
    """Issue 17's gates for each gated row on the pooled figures (module docstring); `iou`: the pooled detection
    IoU per frame, None when detection was not run."""
    base = pooled[baseline]
    out = []
    for name in gated:
        s = pooled[name]
        if s.error:
            out.append(Gate(name=f"{name}: ran", passed=False, text=f"{name} failed: {s.error}"))
            continue
        need_psnr, need_flicker = base.mean_psnr + GATE_PSNR_DB, GATE_FLICKER_RATIO * base.mean_flicker
        out += [
            Gate(
                name=f"{name}: psnr",
                passed=s.mean_psnr >= need_psnr,
                text=f"PSNR in the box {s.mean_psnr:.2f} dB ≥ {baseline} {base.mean_psnr:.2f} + {GATE_PSNR_DB:g} "
                f"= {need_psnr:.2f} dB",
            ),
            Gate(
                name=f"{name}: flicker",
                passed=s.mean_flicker <= need_flicker,
                text=f"flicker {s.mean_flicker:.3f} ≤ {GATE_FLICKER_RATIO:g} × {baseline} {base.mean_flicker:.3f} "
                f"= {need_flicker:.3f}",
            ),
            Gate(
                name=f"{name}: outside",
                passed=s.changed_outside == 0,
                text=f"{s.changed_outside} pixels changed outside the boxes (+{OUTSIDE_MARGIN} px) = 0",
            ),
            Gate(name=f"{name}: frames", passed=s.frames_ok, text="frame count and timestamps unchanged"),
            Gate(name=f"{name}: streams", passed=s.streams_ok, text="audio/subtitle streams kept, packets unchanged"),
        ]
    if iou is not None:
        mean = _mean(iou)
        out.append(Gate(name="auto: iou", passed=mean >= GATE_IOU, text=f"detection IoU {mean:.3f} ≥ {GATE_IOU:g}"))
    return out


# ---------------------------------------------------------------- removers
class Remover(Protocol):
    """Writes `out` (FFV1 .mkv) from `clip.marked`."""

    name: str

    def __call__(self, clip: TestClip, out: Path) -> None: ...


class Detector(Protocol):
    """The marks found in `clip.marked` (for the IoU)."""

    def __call__(self, clip: TestClip, work: Path) -> list[Mark]: ...


class CvInpaint(Stage):
    """OpenCV's per-frame inpainting (Telea or Navier–Stokes) of the given masks (N×H×W bool by frame index)."""

    name = "cv-inpaint"
    METHODS: Final = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}

    def __init__(self, masks: np.ndarray, method: str, radius: int = INPAINT_RADIUS) -> None:
        if method not in self.METHODS:
            raise UsageError(f"invalid inpainting method {method!r}; valid: {', '.join(self.METHODS)}")
        self.masks = masks.astype(np.uint8) * 255
        self.method = method
        self.radius = radius

    def process(self, batch: FrameBatch) -> FrameBatch:
        data = batch.data.cpu()
        out = data.clone()
        for k, i in enumerate(batch.index):
            if i < len(self.masks) and self.masks[i].any():
                img = np.ascontiguousarray(data[k].permute(1, 2, 0).numpy())
                filled = cv2.inpaint(img, self.masks[i], self.radius, self.METHODS[self.method])
                out[k] = torch.from_numpy(filled).permute(2, 0, 1)
        return replace(batch, data=out.to(batch.data.device))

    def signature(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "radius": self.radius}


def run_stages(clip: TestClip, out: Path, stages: Sequence[Stage], device: str = "cpu") -> None:
    """`clip.marked` through `stages` in vidpipe's pipeline into FFV1 `out` (streams copied, as `vidpipe run`)."""
    from ..media.encoders import EncoderOptions
    from ..media.writer import WriterOptions
    from ..runtime.pipeline import RunOptions, run
    from ..schedule.chain import ScheduleOptions

    opts = RunOptions(
        device=device,
        progress="none",
        manifest=False,
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),
        schedule=ScheduleOptions(batch_size=8),
    )
    run(clip.marked, out, list(stages), opts)


@dataclass(frozen=True, slots=True)
class StageRemover:
    """A remover that is a chain of stages made per clip (the baselines; tests' removers)."""

    name: str
    make: Callable[[TestClip], list[Stage]]
    device: str = "cpu"

    def __call__(self, clip: TestClip, out: Path) -> None:
        run_stages(clip, out, self.make(clip), self.device)


def _vidpipe(args: list[str], what: str) -> None:
    """`python -m vidpipe ARGS`; a failure is a StageError carrying the command's last lines."""
    proc = subprocess.run([sys.executable, "-m", "vidpipe", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise StageError(f"{what} exited {proc.returncode}: {tail}")


@dataclass(frozen=True, slots=True)
class CliRemover:
    """vidpipe's remover as a user runs it: `vidpipe run IN -o OUT --dewatermark SPEC --encoder ffv1`; `spec`
    "auto", or "mask" for the clip's true masks (`TestClip.mask_spec`: a PNG per position with its frames)."""

    name: str
    spec: str
    device: str = "cpu"

    def __call__(self, clip: TestClip, out: Path) -> None:
        spec = clip.mask_spec if self.spec == "mask" else self.spec
        args = ["run", str(clip.marked), "-o", str(out), "--dewatermark", spec, "--encoder", "ffv1"]
        _vidpipe([*args, "--device", self.device, "--progress", "none"], f"vidpipe run --dewatermark {self.spec}")


@dataclass(frozen=True, slots=True)
class CliDetector:
    """`vidpipe watermark detect IN -o marks.json`, read back with `load_marks`."""

    device: str = "cpu"

    def __call__(self, clip: TestClip, work: Path) -> list[Mark]:
        path = work / "detected.json"
        _vidpipe(["watermark", "detect", str(clip.marked), "-o", str(path), "--device", self.device], "detect")
        return load_marks(path)


def baselines() -> list[Remover]:
    """OpenCV Telea and Navier–Stokes given the true masks, and the input through vidpipe untouched."""

    def inpaint(method: str) -> Callable[[TestClip], list[Stage]]:
        return lambda clip: [CvInpaint(clip.alpha > 0, method)]

    return [
        StageRemover("telea", inpaint("telea")),
        StageRemover("ns", inpaint("ns")),
        StageRemover("input", lambda clip: []),
    ]


def default_removers(rows: Sequence[str], device: str) -> list[Remover]:
    """The rows named (`DEFAULT_ROWS`), vidpipe's on `device`."""
    bad = [r for r in rows if r not in DEFAULT_ROWS]
    if bad:
        raise UsageError(f"unknown row {bad[0]!r}; valid: {', '.join(DEFAULT_ROWS)}")
    every: dict[str, Remover] = {r: CliRemover(r, r, device) for r in VIDPIPE_ROWS}
    every |= {b.name: b for b in baselines()}
    return [every[r] for r in rows]


# ---------------------------------------------------------------- evaluation
@dataclass(frozen=True, slots=True, kw_only=True)
class WatermarkEval:
    clips: list[ClipResult]
    gated: tuple[str, ...]
    baseline: str
    margin: int
    wall_s: float
    detected: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[str]:
        return list(self.clips[0].rows) if self.clips else []

    @property
    def pooled(self) -> dict[str, Scores]:
        return {r: Scores.pool([c.rows[r] for c in self.clips]) for r in self.rows}

    @property
    def pooled_iou(self) -> tuple[float, ...] | None:
        if not self.detected:
            return None
        return tuple(v for c in self.clips for v in c.iou)

    @property
    def gates(self) -> list[Gate]:
        gated = [g for g in self.gated if g in self.rows]
        return gates(self.pooled, gated, self.pooled_iou, self.baseline)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def table(self) -> str:
        """Markdown: every clip's rows, the pooled rows, then the gates."""
        lines = [
            "| clip | size | frames | mark | row | PSNR box dB | flicker | changed outside px | frames+pts | streams "
            "| IoU | s |",
            "|---" * 12 + "|",
        ]

        def row(c: str, size: str, n: str, mark: str, name: str, s: Scores, iou: str) -> str:
            if s.error:
                return f"| {c} | {size} | {n} | {mark} | {name} | failed: {s.error[:120]} |  |  |  |  | {iou} |  |"
            ok = {True: "kept", False: "CHANGED"}
            return (
                f"| {c} | {size} | {n} | {mark} | {name} | {s.mean_psnr:.2f} | {s.mean_flicker:.3f} | "
                f"{s.changed_outside} | {ok[s.frames_ok]} | {ok[s.streams_ok]} | {iou} | {s.seconds:.1f} |"
            )

        for c in self.clips:
            size = f"{c.size[0]}x{c.size[1]}"
            for name, s in c.rows.items():
                iou = ""
                if name == "auto" and self.detected:
                    iou = f"failed: {c.iou_error}" if c.iou_error else f"{_mean(c.iou):.3f}"
                lines.append(row(c.clip, size, str(c.frames), c.mark, name, s, iou))
        frames = str(sum(c.frames for c in self.clips))
        pooled_iou = self.pooled_iou
        for name, s in self.pooled.items():
            iou = f"{_mean(pooled_iou):.3f}" if name == "auto" and pooled_iou is not None else ""
            lines.append(row("pooled", "", frames, "", name, s, iou))
        lines.append("")
        lines += [f"- gate {g.name}: {'pass' if g.passed else 'FAIL'}: {g.text}" for g in self.gates]
        if not self.gates:
            lines.append(f"- no gated row ({', '.join(self.gated) or 'none'}) was run: nothing gated")
        return "\n".join(lines + self.notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "gated": list(self.gated),
            "outside_margin_px": self.margin,
            "wall_s": round(self.wall_s, 3),
            "clips": [
                {
                    "clip": c.clip,
                    "size": list(c.size),
                    "frames": c.frames,
                    "mark": c.mark,
                    "streams": c.streams,
                    "rows": {k: v.to_json() for k, v in c.rows.items()},
                    "iou": round(_mean(c.iou), 4) if c.iou else None,
                    "iou_error": c.iou_error,
                }
                for c in self.clips
            ],
            "pooled": {k: v.to_json() for k, v in self.pooled.items()}
            | ({"iou": round(_mean(self.pooled_iou or ()), 4)} if self.detected else {}),
            "gates": {g.name: g.to_json() for g in self.gates},
            "passed": self.passed,
            "method": {
                "psnr_box": f"per frame with a mark, RGB in the mark's box vs clean, peak 255, cap {PSNR_CAP_DB} dB; "
                "mean over frames (pooled: every frame of every clip)",
                "flicker": "mean |d(out) - d(clean)| over the union of consecutive boxes, 0..255, mean over pairs",
                "outside": f"pixels differing from the input outside the box grown by {self.margin} px",
                "iou": f"masks at alpha >= {IOU_LEVEL} x the frame's peak alpha, per frame with a mark in either",
                "baselines": f"cv2.inpaint (radius {INPAINT_RADIUS}) per frame given the true mask (alpha > 0)",
            },
        }

    def write_csv(self, out_dir: Path) -> list[Path]:
        """`NAME/scores.csv` per clip (one line per row and frame) and `summary.csv` (per clip and pooled)."""
        paths = []
        for c in self.clips:
            path = out_dir / c.clip / "scores.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", "kind", "index", "value"])
                for name, s in c.rows.items():
                    w.writerows([name, "psnr_box_db", i, f"{v:.4f}"] for i, v in enumerate(s.psnr))
                    w.writerows([name, "flicker", i, f"{v:.4f}"] for i, v in enumerate(s.flicker))
                    w.writerows([name, "changed_outside", i, v] for i, v in enumerate(s.outside))
                w.writerows(["auto", "iou", i, f"{v:.4f}"] for i, v in enumerate(c.iou))
            paths.append(path)
        path = out_dir / "summary.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clip", "row", "psnr_box_db", "flicker", "changed_outside", "frames_kept", "streams_kept"])
            for c in self.clips:
                for name, s in c.rows.items():
                    w.writerow([c.clip, name, f"{s.mean_psnr:.4f}", f"{s.mean_flicker:.4f}", s.changed_outside,
                                s.frames_ok, s.streams_ok])  # fmt: skip
            for name, s in self.pooled.items():
                w.writerow(["pooled", name, f"{s.mean_psnr:.4f}", f"{s.mean_flicker:.4f}", s.changed_outside,
                            s.frames_ok, s.streams_ok])  # fmt: skip
        return [*paths, path]


def score_row(remover: Remover, clip: TestClip, source: Decoded, folder: Path, margin: int) -> Scores:
    """Run one remover on one clip and score its output; a remover's failure is recorded, not raised."""
    out = folder / f"out-{remover.name}.mkv"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        remover(clip, out)
    except VidpipeError as e:
        log.warning("eval watermark: %s on %s failed: %s", remover.name, clip.name, e)
        return Scores(error=str(e), seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    return Scores.of(read_video(out), clip, source, seconds, margin)


def evaluate(
    clips: Sequence[str] | None = None,
    *,
    out_dir: Path,
    removers: Sequence[Remover],
    detector: Detector | None = None,
    gated: Sequence[str] = VIDPIPE_ROWS,
    baseline: str = BASELINE,
    frames: int = DEFAULT_FRAMES,
    scale: float = 1.0,
    margin: int = OUTSIDE_MARGIN,
) -> WatermarkEval:
    """Build the clips (recipe names; all when None) in `out_dir`, run every remover on each, score them and the
    detector's marks, and gate the `gated` rows against `baseline` (which must be among the removers)."""
    names = [r.name for r in removers]
    if baseline not in names:
        raise UsageError(f"the baseline row {baseline!r} must be run; rows: {', '.join(names)}")
    if len(set(names)) != len(names):
        raise UsageError(f"row names repeat: {', '.join(names)}")
    if not 0 < scale <= 4:
        raise UsageError(f"scale must be in (0, 4], got {scale}")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for recipe in recipes(list(clips) if clips else None):
        clip = build_clip(recipe, out_dir, frames=frames, scale=scale)
        folder = clip.marked.parent
        source = read_video(clip.marked)
        rows = {r.name: score_row(r, clip, source, folder, margin) for r in removers}
        iou: tuple[float, ...] = ()
        iou_error = None
        if detector is not None:
            try:
                iou = tuple(mask_iou(detector(clip, folder), clip))
            except VidpipeError as e:
                iou_error = str(e)
        o = recipe.overlay
        results.append(
            ClipResult(
                clip=clip.name,
                size=clip.size,
                frames=clip.frames,
                mark=f"{o.shape} α{o.opacity:g} {o.motion}",
                streams=len(source.streams),
                rows=rows,
                iou=iou if iou_error is None else (0.0,),
                iou_error=iou_error,
            )
        )
        log.info("eval watermark: %s done", clip.name)
    return WatermarkEval(
        clips=results,
        gated=tuple(gated),
        baseline=baseline,
        margin=margin,
        wall_s=time.perf_counter() - t0,
        detected=detector is not None,
    )
