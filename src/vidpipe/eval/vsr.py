"""Video super-resolution quality on real clips, and the seams of windowed runs (issue 18).

`evaluate` (`vidpipe eval vsr`): each clip's frames, area-resized to the target size H (the ground truth), are
bicubic-downsampled ×4 with antialiasing (the BI degradation BasicVSR's REDS/Vimeo-90K BI models are trained on)
and quantised to 8 bits, as a real low-resolution video would be; the `vsr` stage (its windows and overlap, as a
run uses them) and plain bicubic ×4 upsampling both bring them back to H, and each is scored against it.
- PSNR on RGB over all pixels (peak 1, no border cropped), per frame, then the mean over frames: the metric
  BasicVSR's paper and mmagic's table give for REDS4 (the Vimeo-90K and Vid4 columns are on Y); Y (BT.601
  luma, as the paper's) is reported beside it. Both outputs are quantised to 8 bits first, as written files are.
- Pooled: the mean over every frame of every clip. Gate (issue 18): the model's pooled RGB PSNR ≥ bicubic's
  + `GATE_DB`.

`seams` (`vidpipe eval vsr-seams`): BasicVSR propagates both ways across everything it is given, so a run in
windows differs from one call over the whole sequence. For each overlap O (fixed T), the windowed engine's
output (`schedule.temporal.WindowRunner`, the stage's own path) is compared with the whole-sequence call frame
by frame (PSNR on float RGB outputs, before quantisation, capped at `metrics.PSNR_CAP_DB`); frames on either side
of a window boundary are the seams. The least overlap with every frame ≥ `stages.vsr.SEAM_GATE_DB` is the one
to use.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, UsageError
from ..frames import FrameBatch, from_float
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..metrics import PSNR_CAP_DB, psnr_per_frame
from ..runtime.device import math_flags
from ..schedule.oom import OomRunner
from ..schedule.temporal import WindowRunner
from ..stages.base import StreamSpec
from ..stages.vsr import SEAM_GATE_DB, Vsr

log = logging.getLogger(__name__)

SCALE: Final = 4
#: issue 18's acceptance: the model ≥ bicubic + 2 dB, pooled over the clips
GATE_DB: Final = 2.0
#: the clips `vidpipe eval vsr` scores by default (opencv-doc: people walking, a hand moving a box, a film trailer)
DEFAULT_CLIPS: Final = ("vtest.avi", "box.mp4", "Megamind.avi")
#: BT.601 luma weights (the Y the paper's Vimeo-90K/Vid4 columns use, full range here)
LUMA: Final = (0.299, 0.587, 0.114)
#: overlaps `vsr-seams` measures (issue 18)
SEAM_OVERLAPS: Final = (0, 2, 4, 8, 16)


def clip_path(name: str) -> Path:
    """An opencv-doc clip by file name (box/cup unpacked once), or a path."""
    from .cuts import source_path

    path = Path(name)
    return path if path.is_file() else source_path(name)


def read_frames(path: Path, frames: int, size: tuple[int, int], *, start: int = 0) -> torch.Tensor:
    """Frames start … start+frames−1 of `path` as N×3×H×W float 0..1, area-resized to `size` = (W, H)."""
    taken: list[torch.Tensor] = []
    with VideoReader(probe(path), ReaderOptions(batch_size=8, keep_alpha=False)) as reader:
        for b in reader:
            for ix, f in zip(b.index, b.data, strict=True):
                if ix >= start and len(taken) < frames:
                    taken.append(f[:3].float() / 255.0 if f.dtype == torch.uint8 else f[:3].float() / 65535.0)
            if len(taken) >= frames:
                break
    if not taken:
        raise InputError(f"{path}: no frames from frame {start}")
    x = torch.stack(taken)
    w, h = size
    return x if x.shape[-2:] == (h, w) else F.interpolate(x, size=(h, w), mode="area")


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Float 0..1 → 8-bit levels → float, as a written file holds it."""
    return from_float(x, torch.uint8).float() / 255.0


def degrade(hr: torch.Tensor) -> torch.Tensor:
    """BI degradation: bicubic ×1/4 with antialiasing, quantised to 8 bits."""
    h, w = hr.shape[-2:]
    return quantise(F.interpolate(hr, size=(h // SCALE, w // SCALE), mode="bicubic", antialias=True))


def bicubic_up(lr: torch.Tensor) -> torch.Tensor:
    return quantise(F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False))


def luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def batch_of(x: torch.Tensor, *, first: int = 0) -> FrameBatch:
    """Frames `first`, `first` + 1, … as a batch at 25 fps (the engine needs pts and indices, not the rate)."""
    n = range(first, first + len(x))
    return FrameBatch(data=x, pts=list(n), time_base=Fraction(1, 25), index=list(n))


#: frames per batch fed to the engine (as a reader would hand them over)
FEED: Final = 8


def windowed(stage: Vsr, x: torch.Tensor) -> torch.Tensor:
    """`x` through the stage as a run drives it: the temporal engine's windows, fed a batch at a time."""
    runner = WindowRunner(stage, OomRunner(stage.window))
    outs = [o for k in range(0, len(x), FEED) if (o := runner.process(batch_of(x[k : k + FEED], first=k)))]
    if (tail := runner.flush()) is not None:
        outs.append(tail)
    return FrameBatch.concat(outs).data.float()


def make_stage(model: str | Path, device: torch.device, size: tuple[int, int], **kw: Any) -> Vsr:
    stage = Vsr(model, **kw)
    stage.setup(device, StreamSpec(width=size[0], height=size[1], time_base=Fraction(1, 25)))
    return stage


# ---------------------------------------------------------------- quality


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipScores:
    clip: str
    size: tuple[int, int]
    frames: int
    model_rgb: list[float]
    bicubic_rgb: list[float]
    model_y: list[float]
    bicubic_y: list[float]
    wall_s: float

    def means(self) -> dict[str, float]:
        return {k: float(np.mean(getattr(self, k))) for k in ("model_rgb", "bicubic_rgb", "model_y", "bicubic_y")}


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityResult:
    model: str
    device: str
    dtype: str
    window: int
    overlap: int
    clips: list[ClipScores] = field(default_factory=list)

    def pooled(self) -> dict[str, float]:
        keys = ("model_rgb", "bicubic_rgb", "model_y", "bicubic_y")
        return {k: float(np.mean([v for c in self.clips for v in getattr(c, k)])) for k in keys}

    @property
    def margin_db(self) -> float:
        p = self.pooled()
        return p["model_rgb"] - p["bicubic_rgb"]

    @property
    def passed(self) -> bool:
        return self.margin_db >= GATE_DB

    def table(self) -> str:
        lines = [
            f"{self.model} on {self.device} {self.dtype}, windows of {self.window} + {self.overlap} context; "
            "PSNR dB (RGB | Y), LR = bicubic ×1/4 antialiased, 8-bit",
            f"{'clip':<16}{'HR size':>10}{'frames':>7}{'model RGB':>11}{'bicubic':>9}{'margin':>8}"
            f"{'model Y':>9}{'bicubic':>9}{'s':>7}",
        ]
        for c in self.clips:
            m = c.means()
            lines.append(
                f"{c.clip:<16}{c.size[0]:>5}×{c.size[1]:<4}{c.frames:>7}{m['model_rgb']:>11.2f}{m['bicubic_rgb']:>9.2f}"
                f"{m['model_rgb'] - m['bicubic_rgb']:>+8.2f}{m['model_y']:>9.2f}{m['bicubic_y']:>9.2f}{c.wall_s:>7.0f}"
            )
        p = self.pooled()
        lines.append(
            f"{'pooled':<16}{'':>10}{sum(c.frames for c in self.clips):>7}{p['model_rgb']:>11.2f}"
            f"{p['bicubic_rgb']:>9.2f}{self.margin_db:>+8.2f}{p['model_y']:>9.2f}{p['bicubic_y']:>9.2f}"
        )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"gate: model ≥ bicubic + {GATE_DB:g} dB pooled (RGB): {verdict} ({self.margin_db:+.2f} dB)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "window": self.window,
            "overlap": self.overlap,
            "clips": [{"clip": c.clip, "size": list(c.size), "frames": c.frames, **c.means()} for c in self.clips],
            "pooled": self.pooled(),
            "margin_db": self.margin_db,
            "gate_db": GATE_DB,
            "passed": self.passed,
        }


def hr_size(path: Path, divisor: int) -> tuple[int, int]:
    """The source's display size / `divisor`, rounded down to multiples of the scale."""
    w, h = probe(path).video.display_size
    return (w // divisor) // SCALE * SCALE, (h // divisor) // SCALE * SCALE


def evaluate(
    clips: Sequence[str | Path],
    model: str | Path = "basicvsr-reds4",
    device: torch.device | str = "cpu",
    *,
    frames: int = 8,
    start: int = 0,
    divisor: int = 4,
    window: int | None = None,
    overlap: int | None = None,
    dtype: str = "auto",
) -> QualityResult:
    """Score `model` and bicubic on `frames` frames of each clip from frame `start`, at 1/`divisor` of its size
    (module doc)."""
    if frames < 2:
        raise UsageError(f"--frames must be ≥ 2 (BasicVSR needs neighbours), got {frames}")
    dev = torch.device(device)
    stage: Vsr | None = None
    scores: list[ClipScores] = []
    for clip in clips:
        t0 = time.perf_counter()
        path = clip_path(str(clip))
        size = hr_size(path, divisor)
        hr = read_frames(path, frames, size, start=start)
        lr = degrade(hr)
        lr_size = (lr.shape[-1], lr.shape[-2])
        kw: dict[str, Any] = {"dtype": dtype}
        kw |= {"window": window} if window is not None else {}
        kw |= {"overlap": overlap} if overlap is not None else {}
        if stage is None:
            stage = make_stage(model, dev, lr_size, **kw)
        else:
            stage.setup(dev, StreamSpec(width=lr_size[0], height=lr_size[1], time_base=Fraction(1, 25)))
        made = quantise(windowed(stage, lr.to(dev, stage.dtype)).cpu())
        cubic = bicubic_up(lr)
        scores.append(
            ClipScores(
                clip=path.name,
                size=size,
                frames=len(hr),
                model_rgb=psnr_per_frame(made, hr).tolist(),
                bicubic_rgb=psnr_per_frame(cubic, hr).tolist(),
                model_y=psnr_per_frame(luma(made), luma(hr)).tolist(),
                bicubic_y=psnr_per_frame(luma(cubic), luma(hr)).tolist(),
                wall_s=time.perf_counter() - t0,
            )
        )
        log.info("eval vsr: %s %s", path.name, scores[-1].means())
    assert stage is not None
    return QualityResult(
        model=str(model),
        device=str(dev),
        dtype=stage.dtype_name or "",
        window=stage.window,
        overlap=stage.overlap,
        clips=scores,
    )


# ---------------------------------------------------------------- seams


@dataclass(frozen=True, slots=True, kw_only=True)
class SeamResult:
    clip: str
    lr_size: tuple[int, int]
    frames: int
    window: int
    #: overlap → per-frame PSNR of the windowed output against the whole-sequence one
    psnr: dict[int, list[float]]
    wall_s: float
    #: with ground truth (`truth=True`): per-frame PSNR against it of the whole-sequence call and of each
    #: overlap's windowed run (outputs quantised to 8 bits, as `evaluate` scores them)
    whole_truth: list[float] | None = None
    truth: dict[int, list[float]] = field(default_factory=dict)

    def seam_frames(self) -> list[int]:
        """Frames on either side of a window boundary (kept frames k·T − 1 and k·T)."""
        return sorted({f for k in range(self.window, self.frames, self.window) for f in (k - 1, k)})

    def least_passing(self, gate: float = SEAM_GATE_DB) -> int | None:
        ok = [o for o, v in sorted(self.psnr.items()) if min(v) >= gate]
        return ok[0] if ok else None

    def table(self) -> str:
        seams = set(self.seam_frames())
        lines = [
            f"{self.clip}: {self.frames} frames at {self.lr_size[0]}×{self.lr_size[1]} (→ ×{SCALE}), windows of "
            f"T = {self.window}; PSNR dB of windowed vs whole-sequence output (cap {PSNR_CAP_DB:g})",
            f"{'overlap':>8}{'min':>9}{'min seam':>10}{'min other':>11}{'mean':>9}"
            + (f"{'truth mean':>12}{'truth min':>11}" if self.truth else ""),
        ]
        for o, v in sorted(self.psnr.items()):
            at_seam = [p for i, p in enumerate(v) if i in seams] or [float("nan")]
            other = [p for i, p in enumerate(v) if i not in seams] or [float("nan")]
            t = self.truth.get(o)
            lines.append(
                f"{o:>8}{min(v):>9.2f}{min(at_seam):>10.2f}{min(other):>11.2f}{float(np.mean(v)):>9.2f}"
                + (f"{float(np.mean(t)):>12.2f}{min(t):>11.2f}" if t else "")
            )
        if self.whole_truth:
            w = self.whole_truth
            lines.append(
                f"{'whole':>8}{'':>39}{float(np.mean(w)):>12.2f}{min(w):>11.2f}  (the whole-sequence call itself)"
            )
        best = self.least_passing()
        lines.append(
            f"least overlap with every frame ≥ {SEAM_GATE_DB:g} dB: " + (str(best) if best is not None else "none")
        )
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            overlaps = sorted(self.psnr)
            truth = [o for o in overlaps if o in self.truth]
            w.writerow(
                ["frame", "seam", *(f"overlap_{o}" for o in overlaps), *(f"truth_overlap_{o}" for o in truth)]
                + (["truth_whole"] if self.whole_truth else [])
            )
            seams = set(self.seam_frames())
            for i in range(self.frames):
                w.writerow(
                    [i, int(i in seams), *(f"{self.psnr[o][i]:.3f}" for o in overlaps)]
                    + [f"{self.truth[o][i]:.3f}" for o in truth]
                    + ([f"{self.whole_truth[i]:.3f}"] if self.whole_truth else [])
                )

    def write_svg(self, path: Path) -> None:
        """The per-frame curves, one per overlap, seams marked (a plain SVG: no plotting library needed); with
        ground truth, each run's PSNR against it too (dotted, the whole call's in black)."""
        width, height, left, bottom, top = 720, 360, 50, 30, 20
        truth = [*self.truth.values(), *([self.whole_truth] if self.whole_truth else [])]
        lo = min(30.0, min(min(v) for v in [*self.psnr.values(), *truth]))
        hi = PSNR_CAP_DB

        def xy(i: int, p: float) -> tuple[float, float]:
            x = left + (width - left - 10) * i / max(1, self.frames - 1)
            y = top + (height - top - bottom) * (hi - min(p, hi)) / (hi - lo)
            return x, y

        colours = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b")
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            'font-size="11">',
            f'<text x="{left}" y="14">{self.clip}: windowed vs whole-sequence PSNR per frame '
            f"(T = {self.window})</text>",
        ]
        for s in self.seam_frames():
            x, _ = xy(s, hi)
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>')
        for db in range(int(lo // 10 * 10), int(hi) + 1, 10):
            _, y = xy(0, db)
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="5" y="{y + 4:.1f}">{db} dB</text>')
        _, gy = xy(0, SEAM_GATE_DB)
        parts.append(
            f'<line x1="{left}" y1="{gy:.1f}" x2="{width - 10}" y2="{gy:.1f}" stroke="#000" stroke-dasharray="4 3"/>'
        )
        for k, (o, v) in enumerate(sorted(self.psnr.items())):
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, p) for i, p in enumerate(v)))
            c = colours[k % len(colours)]
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
            parts.append(f'<text x="{width - 120}" y="{top + 14 * (k + 1)}" fill="{c}">overlap {o}</text>')
            if o in self.truth:
                parts.append(_dotted(self.truth[o], xy, c))
        if self.whole_truth:
            parts.append(_dotted(self.whole_truth, xy, "#000"))
        parts.append(
            f'<text x="{left}" y="{height - 8}">frame 0 … {self.frames - 1} (grey: seams; dashed: '
            f"{SEAM_GATE_DB:g} dB"
            + ("; dotted: against the ground truth, black: whole call" if truth else "")
            + ")</text></svg>"
        )
        path.write_text("\n".join(parts) + "\n")


def _dotted(values: Sequence[float], xy: Callable[[int, float], tuple[float, float]], colour: str) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, p) for i, p in enumerate(values)))
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1" stroke-dasharray="1 2" points="{pts}"/>'


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An H×W×3 uint8 image as a PNG (zlib, no filter): no imaging library needed."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    )


def difference_image(whole: torch.Tensor, chunked: torch.Tensor, gain: float) -> np.ndarray:
    """whole | chunked | |difference| × gain, side by side, H×3W×3 uint8."""
    diff = ((chunked - whole).abs() * gain).clamp(0, 1)
    row = torch.cat([whole.clamp(0, 1), chunked.clamp(0, 1), diff], dim=-1)
    return (row * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def seams(
    clip: str | Path,
    model: str | Path = "basicvsr-reds4",
    device: torch.device | str = "cpu",
    *,
    frames: int = 24,
    lr_size: tuple[int, int] = (48, 36),
    window: int = 8,
    overlaps: Sequence[int] = SEAM_OVERLAPS,
    dtype: str = "fp32",
    diff_png: Path | None = None,
    diff_gain: float = 16.0,
    truth: bool = False,
) -> SeamResult:
    """Windowed vs whole-sequence output of `model` on `frames` frames of `clip` area-resized to `lr_size`.
    With `truth`, the input is the clip area-resized to ×`SCALE` that size (the ground truth) and degraded
    (`degrade`), and every output is scored against the ground truth too."""
    with _exact(dtype):
        t0 = time.perf_counter()
        path = clip_path(str(clip))
        dev = torch.device(device)
        hr = read_frames(path, frames, (lr_size[0] * SCALE, lr_size[1] * SCALE)) if truth else None
        lr = read_frames(path, frames, lr_size) if hr is None else degrade(hr)
        base = make_stage(model, dev, lr_size, window=window, overlap=0, dtype=dtype)
        x = lr.to(dev, base.dtype)
        whole = base.upscale(x).float().clamp(0, 1).cpu()
        log.info("vsr-seams: whole-sequence run done in %.0f s", time.perf_counter() - t0)
        psnr: dict[int, list[float]] = {}
        scored: dict[int, list[float]] = {}
        worst: tuple[float, int, torch.Tensor] | None = None
        for o in overlaps:
            stage = copy.copy(base)  # shares the loaded weights
            stage.overlap = o
            out = windowed(stage, x).clamp(0, 1).cpu()
            values = psnr_per_frame(out, whole).tolist()
            psnr[o] = values
            if hr is not None:
                scored[o] = psnr_per_frame(quantise(out), hr).tolist()
            log.info("vsr-seams: overlap %d: min %.2f dB", o, min(values))
            if o == 0:
                i = int(np.argmin(values))
                worst = (values[i], i, out[i])
    result = SeamResult(
        clip=path.name,
        lr_size=lr_size,
        frames=len(lr),
        window=window,
        psnr=psnr,
        wall_s=time.perf_counter() - t0,
        whole_truth=None if hr is None else psnr_per_frame(quantise(whole), hr).tolist(),
        truth=scored,
    )
    if diff_png is not None and worst is not None:
        _, i, frame = worst
        write_png(diff_png, difference_image(whole[i], frame, diff_gain))
    return result


def _exact(dtype: str) -> contextlib.AbstractContextManager[None]:
    """fp32 as fp32 on CUDA: no TF32 in convolutions (cuDNN's default) or matmuls. A recurrent network carries a
    rounding difference of one call from frame to frame and grows it (the influence curve), so TF32's ~1e-3
    would be measured as a seam; fp16/bf16 runs keep the process's flags."""
    if dtype != "fp32":
        return contextlib.nullcontext()
    return math_flags(matmul_tf32=False, cudnn_tf32=False, benchmark=False)


# ---------------------------------------------------------------- influence with distance


#: the perturbation `influence` adds to one frame: uniform noise of ± this many 8-bit levels
INFLUENCE_LEVELS: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Influence:
    """How much frame k's output moves when one frame d frames away is perturbed (one whole-sequence call each)."""

    frames: int
    clip: str
    #: the network's input (W, H): the clip area-resized
    lr_size: tuple[int, int]
    #: d = 1 … frames − 1 → PSNR of frame (last − d)'s output with the last frame perturbed, against unperturbed
    backward: list[float]
    #: d = 1 … frames − 1 → the same for frame d with the first frame perturbed
    forward: list[float]

    def table(self, step: int = 4) -> str:
        lines = [
            f"{self.clip}: {self.frames} frames at {self.lr_size[0]}×{self.lr_size[1]}; one end frame perturbed by "
            f"±{INFLUENCE_LEVELS}/255 uniform noise: PSNR dB of the output d frames away against the unperturbed run",
            f"{'d':>4}{'last perturbed':>16}{'first perturbed':>17}",
        ]
        for d in [1, *range(step, self.frames, step)]:
            lines.append(f"{d:>4}{self.backward[d - 1]:>16.2f}{self.forward[d - 1]:>17.2f}")
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["distance", "last_perturbed", "first_perturbed"])
            for d in range(1, self.frames):
                w.writerow([d, f"{self.backward[d - 1]:.3f}", f"{self.forward[d - 1]:.3f}"])


def influence(
    clip: str | Path,
    model: str | Path = "basicvsr-reds4",
    device: torch.device | str = "cpu",
    *,
    frames: int = 48,
    lr_size: tuple[int, int] = (48, 36),
    dtype: str = "fp32",
    seed: int = 0,
) -> Influence:
    """The influence curve (`Influence`) of `model` on `frames` frames of `clip` area-resized to `lr_size`: a
    windowed run can equal the whole-sequence one within a gate only if this decays with d below the gate."""
    path = clip_path(str(clip))
    dev = torch.device(device)
    lr = read_frames(path, frames, lr_size)
    stage = make_stage(model, dev, lr_size, window=frames, overlap=0, dtype=dtype)
    g = torch.Generator().manual_seed(seed)

    def run(x: torch.Tensor) -> torch.Tensor:
        return stage.upscale(x.to(dev, stage.dtype)).float().clamp(0, 1).cpu()

    def perturbed(i: int) -> torch.Tensor:
        x = lr.clone()
        noise = (torch.rand(x[i].shape, generator=g) * 2 - 1) * INFLUENCE_LEVELS / 255
        x[i] = (x[i] + noise).clamp(0, 1)
        return run(x)

    with _exact(dtype):
        base = run(lr)
        last = psnr_per_frame(perturbed(len(lr) - 1), base).tolist()
        first = psnr_per_frame(perturbed(0), base).tolist()
    return Influence(clip=path.name, lr_size=lr_size, frames=len(lr), backward=last[-2::-1], forward=first[1:])
