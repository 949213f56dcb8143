"""Matting quality with a known alpha (issue 16, item 6): `vidpipe eval matte`.

Ground truth. People are matted from real clips (opencv-doc's vtest.avi and Megamind.avi) by the reference,
onnxruntime running the official RVM ONNX export with its recurrent state carried and RVM's advised
`downsample_ratio` (`stages.matte.auto_downsample`); that alpha, quantised to 8 bits as a stored matte is, is
α_gt. With the source RGB as foreground F, every frame is composited onto a moving background B that the clip
never showed (`moving_background`: a real photograph from opencv-doc, a street or a building, panning like a
camera, with shaded boxes sliding over it): I = F·α_gt + B·(1 − α_gt), rounded to 8 bits like decoded video.
So α_gt is exactly the alpha of I, while the pixels around the people are new.

Three runs then matte I, each compared with α_gt after quantising its alpha to 8 bits (what a written matte
holds):
- `recurrent`: our `Matte` stage (real weights: `rvm-mobilenetv3` converted from that same ONNX file; fp32),
  `step` over batches of `batch` frames with the state carried from batch to batch, as the temporal engine runs it;
- `per_frame`: the same stage with its state reset at every frame (`step(frame, None)`): RVM without recurrence;
- `reference`: onnxruntime on the ONNX export, recurrent, one frame at a time.

Metrics (the RVM paper's: Lin et al., "Robust High-Resolution Video Matting with Temporal Guidance", WACV 2022,
arXiv:2108.11515, Table 1 and its evaluation/evaluate_lr.py), on alphas in 0..1, per frame, then the mean over
frames (pooled: over every frame of every clip):
- MAD = mean_p |α(p) − α_gt(p)|, reported ×1e3.
- MSE = mean_p (α(p) − α_gt(p))², reported ×1e3.
- Grad (Rhemann et al., "A Perceptually Motivated Online Benchmark for Image Matting", CVPR 2009, with q = 2):
  each matte is first stretched to 0..1 (min-max; a flat matte becomes 0), then G = |∇α| is the magnitude of
  its gradient by first-order Gaussian derivative filters (σ = 1.4, `gaussian_derivative_filters`: kernel
  fx[i, j] = g(i)·g′(j), g the 1-D Gaussian, g′(x) = −x·g(x)/σ², cut where g falls to ε = 1e-2 of its peak density
  (9×9 at σ = 1.4), scaled to unit L2 norm; fy = fxᵀ; edges replicated); Grad = Σ_p (G(p) − G_gt(p))²,
  reported ×1e-3. A sum over pixels: it grows with the frame size, so compare it only at one size.
- dtSSD (Erofeev et al., "Perceptually Motivated Benchmark for Video Matting", BMVC 2015), temporal coherence:
  dtSSD = 1/(T−1) · Σ_{t=1}^{T−1} sqrt( mean_p ( (α_t(p) − α_{t−1}(p)) − (α_gt,t(p) − α_gt,t−1(p)) )² ),
  reported ×1e2: the RMS of the difference between the prediction's and the truth's change from frame to
  frame. A matte that is wrong by the same amount in every frame scores 0; flicker scores high. RVM's script
  also records 0 for a clip's first frame and averages over all T frames; this averages over the T−1 pairs.

Gates (issue 16's acceptance), on the pooled figures: recurrent dtSSD ≤ per-frame dtSSD (recurrence makes the
matte steadier) and |MAD(recurrent) − MAD(reference)| ≤ 10 % of MAD(reference) (our port mats as well as the
official export when both carry their own state).

onnxruntime is a test/bench dependency only (imported when a session is made, `eval.rvm_parity.onnx_session`).
The downsample ratio applies to all three runs; at ratio 1 (frames ≤ 512 px) the ONNX export still runs its
guided-filter refiner while the PyTorch model (and ours) skips it, so `reference` is then not the same network.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import torch
import torch.nn.functional as F

from .. import assets
from ..errors import InputError, StorageError, UsageError
from ..frames import FrameBatch, from_float
from ..stages.base import StreamSpec
from ..stages.matte import Matte, auto_downsample
from .rvm_parity import MODEL, decode_frames, onnx_session

log = logging.getLogger(__name__)

#: the RVM paper's report scales (its Table 1 and evaluation/evaluate_lr.py)
MAD_SCALE: Final = 1e3
MSE_SCALE: Final = 1e3
GRAD_SCALE: Final = 1e-3
DTSSD_SCALE: Final = 1e2
#: Rhemann et al.'s Gaussian derivative σ and the density at which the kernel is cut (RVM's evaluation uses both)
GRAD_SIGMA: Final = 1.4
GRAD_EPSILON: Final = 1e-2
#: issue 16: our recurrent MAD within 10 % of the reference's
MAD_TOLERANCE: Final = 0.10

DEFAULT_CLIPS: Final = ("vtest.avi", "Megamind.avi")
#: frames per clip: 2 s of vtest (10 fps), 0.8 s of Megamind (24 fps). Four network passes a frame (truth,
#: recurrent, per frame, reference) at ~0.4–0.7 s each on one quiet core: about 2 min for both clips
DEFAULT_FRAMES: Final = 20
#: frames per `step` of the recurrent run (one B×T sequence, as the temporal engine feeds a batch). Two: the state
#: crosses steps and frames within one; in a loaded run steps of 4 took twice the time a frame of one-frame calls
#: on this CPU (docs/benchmarks.md, "Matting quality")
DEFAULT_BATCH: Final = 2
#: CPU threads for torch and onnxruntime: one, as in `eval.rvm_parity` (several spin against each other on a
#: shared machine)
DEFAULT_THREADS: Final = 1
#: backgrounds the clips never showed (opencv-doc samples/data, no people in them), one per clip in turn
BACKGROUND_IMAGES: Final = ("leuvenA.jpg", "home.jpg")
#: the camera pan over the photograph, in frame widths (x) and heights (y) per frame, back and forth over the
#: photograph's margin of `PAN_MARGIN` beyond the frame
PAN_SPEED: Final = (0.005, 0.002)
PAN_MARGIN: Final = 0.3
#: sliding boxes: how many, side in frame widths, speed in frame widths per frame
BOXES: Final = 4
BOX_SIDE: Final = (0.08, 0.2)
BOX_SPEED: Final = (0.004, 0.012)
RUNS: Final = ("recurrent", "per_frame", "reference")


# ---------------------------------------------------------------- metrics
def _pair(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N×H×W or N×1×H×W alphas in 0..1 → N×H×W float64."""
    if pred.shape != true.shape:
        raise UsageError(f"alpha shapes differ: {tuple(pred.shape)} vs {tuple(true.shape)}")
    if pred.ndim == 4:
        pred, true = pred[:, 0], true[:, 0]
    if pred.ndim != 3:
        raise UsageError(f"alphas must be N×H×W or N×1×H×W, got {tuple(pred.shape)}")
    return pred.double(), true.double()


def mad(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per frame, ×1e3."""
    p, t = _pair(pred, true)
    return (p - t).abs().mean(dim=(1, 2)) * MAD_SCALE


def mse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per frame, ×1e3."""
    p, t = _pair(pred, true)
    return ((p - t) ** 2).mean(dim=(1, 2)) * MSE_SCALE


def gaussian_derivative_1d(
    sigma: float = GRAD_SIGMA, epsilon: float = GRAD_EPSILON
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, g′): the 1-D Gaussian and its derivative, sampled on [−r, r], each scaled to unit L2 norm; r is where
    the Gaussian's density falls to `epsilon` (module docstring). The 2-D kernels are their outer products."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = torch.arange(-half, half + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -x * g / sigma**2
    return g / g.norm(), dg / dg.norm()


def gaussian_derivative_filters(
    sigma: float = GRAD_SIGMA, epsilon: float = GRAD_EPSILON
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fx, fy): first-order Gaussian derivative kernels along x (columns) and y (rows), unit L2 norm:
    fx[i, j] = g(i)·g′(j) normalised, fy = fxᵀ (the norm of an outer product is the product of the norms)."""
    g, dg = gaussian_derivative_1d(sigma, epsilon)
    fx = g[:, None] * dg[None, :]
    return fx, fx.T.contiguous()


def _correlate(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """1-D correlation of `x` with `kernel` along `dim`, valid part (shifted sums: on the CPU faster than a
    one-channel conv2d)."""
    n = x.shape[dim] - len(kernel) + 1
    out = kernel[0] * x.narrow(dim, 0, n)
    for i in range(1, len(kernel)):
        out += kernel[i] * x.narrow(dim, i, n)
    return out


def gradient_magnitude(a: torch.Tensor) -> torch.Tensor:
    """N×H×W alphas → |∇a| per pixel of each frame min-max stretched to 0..1: correlation with fx and fy
    (edges replicated) as their two 1-D passes each (the kernels are separable), in float32."""
    g, dg = (k.float() for k in gaussian_derivative_1d())
    half = len(g) // 2
    x = F.pad(_stretch(a.float())[:, None], (half,) * 4, mode="replicate")[:, 0]
    gx = _correlate(_correlate(x, g, 1), dg, 2)
    gy = _correlate(_correlate(x, g, 2), dg, 1)
    return (gx.square() + gy.square()).sqrt()


def _stretch(a: torch.Tensor) -> torch.Tensor:
    """Each frame min-max stretched to 0..1; a flat frame becomes 0 (as OpenCV's NORM_MINMAX does)."""
    lo = a.amin(dim=(1, 2), keepdim=True)
    span = a.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (a - lo) / span.clamp_min(1e-30), torch.zeros_like(a))


def grad_error(pred: torch.Tensor, true: torch.Tensor, *, true_gradient: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient error per frame (Rhemann et al. 2009, q = 2, as RVM evaluates it; module docstring), ×1e-3.
    `true_gradient`: `gradient_magnitude(true)` when already computed (one truth, several runs)."""
    p, t = _pair(pred, true)
    tg = gradient_magnitude(t) if true_gradient is None else true_gradient
    return (gradient_magnitude(p) - tg).double().square().sum(dim=(1, 2)) * GRAD_SCALE


def dtssd(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """dtSSD (Erofeev et al. 2015) of each consecutive pair of frames (N − 1 values), ×1e2; the clip's figure
    is their mean."""
    p, t = _pair(pred, true)
    change = (p[1:] - p[:-1]) - (t[1:] - t[:-1])
    return change.square().mean(dim=(1, 2)).sqrt() * DTSSD_SCALE


# ---------------------------------------------------------------- results
@dataclass(frozen=True, slots=True, kw_only=True)
class Scores:
    """One run's per-frame values (dtSSD: per pair of frames) and its seconds per frame."""

    mad: tuple[float, ...]
    mse: tuple[float, ...]
    grad: tuple[float, ...]
    dtssd: tuple[float, ...]
    seconds_per_frame: float

    @staticmethod
    def of(
        pred: torch.Tensor, true: torch.Tensor, seconds_per_frame: float, *, true_gradient: torch.Tensor | None = None
    ) -> Scores:
        def values(x: torch.Tensor) -> tuple[float, ...]:
            return tuple(float(v) for v in x)

        return Scores(
            mad=values(mad(pred, true)),
            mse=values(mse(pred, true)),
            grad=values(grad_error(pred, true, true_gradient=true_gradient)),
            dtssd=values(dtssd(pred, true)),
            seconds_per_frame=seconds_per_frame,
        )

    @staticmethod
    def pool(scores: Sequence[Scores]) -> Scores:
        """Every frame (and pair) of every clip; time per frame weighted by frames."""
        frames = sum(len(s.mad) for s in scores)
        return Scores(
            mad=tuple(v for s in scores for v in s.mad),
            mse=tuple(v for s in scores for v in s.mse),
            grad=tuple(v for s in scores for v in s.grad),
            dtssd=tuple(v for s in scores for v in s.dtssd),
            seconds_per_frame=sum(s.seconds_per_frame * len(s.mad) for s in scores) / max(frames, 1),
        )

    def means(self) -> dict[str, float]:
        def mean(v: tuple[float, ...]) -> float:
            return sum(v) / len(v) if v else float("nan")

        return {"mad": mean(self.mad), "mse": mean(self.mse), "grad": mean(self.grad), "dtssd": mean(self.dtssd)}

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.means().items()} | {
            "seconds_per_frame": round(self.seconds_per_frame, 4)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipResult:
    clip: str
    background: str
    size: tuple[int, int]
    frames: int
    downsample_ratio: float
    #: share of pixels with α_gt > 0.5: how much of the frame the matte covers
    coverage: float
    runs: dict[str, Scores]

    def to_json(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "background": self.background,
            "size": list(self.size),
            "frames": self.frames,
            "downsample_ratio": self.downsample_ratio,
            "coverage": round(self.coverage, 6),
            "runs": {k: v.to_json() for k, v in self.runs.items()},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    name: str
    passed: bool
    text: str
    values: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "text": self.text, **{k: round(v, 6) for k, v in self.values.items()}}


def gates(pooled: dict[str, Scores]) -> list[Gate]:
    """Issue 16's two gates on the pooled means (module docstring)."""
    rec, per, ref = (pooled[k].means() for k in RUNS)
    limit = MAD_TOLERANCE * ref["mad"]
    off = abs(rec["mad"] - ref["mad"])
    return [
        Gate(
            name="dtssd",
            passed=rec["dtssd"] <= per["dtssd"],
            text=f"dtSSD recurrent {rec['dtssd']:.4f} ≤ per-frame {per['dtssd']:.4f}",
            values={"recurrent": rec["dtssd"], "per_frame": per["dtssd"]},
        ),
        Gate(
            name="mad",
            passed=off <= limit,
            text=f"MAD recurrent {rec['mad']:.4f} within {MAD_TOLERANCE:.0%} of reference {ref['mad']:.4f} "
            f"(|difference| {off:.4f} ≤ {limit:.4f})",
            values={"recurrent": rec["mad"], "reference": ref["mad"], "difference": off, "limit": limit},
        ),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class MatteEval:
    clips: list[ClipResult]
    model: str
    device: str
    threads: int
    batch: int
    wall_s: float

    @property
    def pooled(self) -> dict[str, Scores]:
        return {k: Scores.pool([c.runs[k] for c in self.clips]) for k in RUNS}

    @property
    def gates(self) -> list[Gate]:
        return gates(self.pooled)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def table(self) -> str:
        """A markdown table: each clip's three runs, then the pooled ones; the gates below it."""
        lines = [
            "| clip | size | frames | downsample | α_gt > 0.5 | run | MAD ×1e3 | MSE ×1e3 | Grad ×1e-3 | "
            "dtSSD ×1e2 | s/frame |",
            "|---" * 11 + "|",
        ]

        def row(name: str, size: str, frames: int, ratio: str, cover: str, run: str, s: Scores) -> str:
            m = s.means()
            return (
                f"| {name} | {size} | {frames} | {ratio} | {cover} | {run} | {m['mad']:.3f} | {m['mse']:.3f} | "
                f"{m['grad']:.3f} | {m['dtssd']:.3f} | {s.seconds_per_frame:.2f} |"
            )

        for c in self.clips:
            size = f"{c.size[0]}x{c.size[1]}"
            for k in RUNS:
                lines.append(
                    row(c.clip, size, c.frames, f"{c.downsample_ratio:.4g}", f"{c.coverage:.1%}", k, c.runs[k])
                )
        if len(self.clips) > 1:
            frames = sum(c.frames for c in self.clips)
            for k, s in self.pooled.items():
                lines.append(row("pooled", "", frames, "", "", k, s))
        lines.append("")
        lines += [f"- gate {g.name}: {'pass' if g.passed else 'FAIL'}: {g.text}" for g in self.gates]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "dtype": "float32",
            "threads": self.threads,
            "batch": self.batch,
            "wall_s": round(self.wall_s, 3),
            "clips": [c.to_json() for c in self.clips],
            "pooled": {k: v.to_json() for k, v in self.pooled.items()},
            "gates": {g.name: g.to_json() for g in self.gates},
            "passed": self.passed,
            "method": {
                "truth": "onnxruntime on the official RVM ONNX (recurrent) over the source clip, 8-bit; the source "
                "RGB composited with it onto a moving background the clip never showed",
                "runs": {
                    "recurrent": "our Matte stage, state carried over batches",
                    "per_frame": "our Matte stage, state reset every frame",
                    "reference": "onnxruntime, recurrent",
                },
                "mad": "mean |a - a_gt| per frame, x1e3",
                "mse": "mean (a - a_gt)^2 per frame, x1e3",
                "grad": f"sum of squared differences of Gaussian-derivative gradient magnitudes (sigma {GRAD_SIGMA}) "
                "of min-max stretched mattes, per frame, x1e-3",
                "dtssd": "sqrt(mean((a_t - a_t-1) - (gt_t - gt_t-1))^2) per frame pair, x1e2",
                "mean": "over frames (pairs for dtSSD); pooled over every clip's frames",
                "gates": f"recurrent dtSSD <= per-frame dtSSD; |MAD recurrent - MAD reference| <= "
                f"{MAD_TOLERANCE} x MAD reference (pooled)",
            },
        }


# ---------------------------------------------------------------- backgrounds
def _bounce(position: float, span: float) -> float:
    """`position` folded back and forth into [0, span] (a triangle wave)."""
    if span <= 0:
        return 0.0
    p = position % (2 * span)
    return p if p <= span else 2 * span - p


def _read_image(path: Path) -> torch.Tensor:
    """3×H×W float 0..1 RGB of an image file (PyAV)."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            rgb = frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration) as e:
        raise InputError(f"cannot read background image {path}: {e}") from e
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def moving_background(image: Path, frames: int, size: tuple[int, int], *, seed: int = 0) -> torch.Tensor:
    """N×3×H×W float 0..1: `image` scaled to cover the frame with a `PAN_MARGIN` margin, panned back and forth
    across it (`PAN_SPEED`), with `BOXES` shaded boxes of seeded sizes, colours and velocities sliding over it
    and bouncing off the frame's edges."""
    w, h = size
    tex = _read_image(image)
    scale = (1 + PAN_MARGIN) * max(w / tex.shape[2], h / tex.shape[1])
    tex_h, tex_w = math.ceil(tex.shape[1] * scale), math.ceil(tex.shape[2] * scale)
    tex = F.interpolate(tex[None], size=(tex_h, tex_w), mode="bilinear", align_corners=False, antialias=True)[0]
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    boxes = []
    for _ in range(BOXES):
        bw, bh = round(uniform(*BOX_SIDE) * w), round(uniform(*BOX_SIDE) * w)
        bw, bh = min(max(bw, 2), w), min(max(bh, 2), h)
        x0, y0 = uniform(0, w - bw), uniform(0, h - bh)
        speed, angle = uniform(*BOX_SPEED) * w, uniform(0, 2 * math.pi)
        colour = torch.rand(3, generator=gen)
        # shaded top to bottom (0.6 → 1.0 of its colour) so a box has edges inside as well as around it
        shade = torch.linspace(0.6, 1.0, bh)[None, :, None]
        boxes.append((bw, bh, x0, y0, speed * math.cos(angle), speed * math.sin(angle), colour[:, None, None] * shade))
    out = torch.empty(frames, 3, h, w)
    for t in range(frames):
        px = round(_bounce(PAN_SPEED[0] * w * t, tex_w - w))
        py = round(_bounce(PAN_SPEED[1] * h * t, tex_h - h))
        frame = tex[:, py : py + h, px : px + w].clone()
        for bw, bh, x0, y0, vx, vy, pixels in boxes:
            x, y = round(_bounce(x0 + vx * t, w - bw)), round(_bounce(y0 + vy * t, h - bh))
            frame[:, y : y + bh, x : x + bw] = pixels.expand(3, bh, bw)
        out[t] = frame
    return out


def composite(fg: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """I = F·α + B·(1 − α) as uint8 N×3×H×W (float 0..1 inputs; alpha N×1×H×W)."""
    return from_float(fg * alpha + bg * (1 - alpha), torch.uint8)


def quantise(alpha: torch.Tensor) -> torch.Tensor:
    """An alpha in 0..1 rounded to the 8-bit levels a written matte holds (still float 0..1)."""
    return from_float(alpha, torch.uint8).float() / 255.0


# ---------------------------------------------------------------- the three runs
def onnx_alpha(session: Any, frames: torch.Tensor, ratio: float) -> torch.Tensor:
    """onnxruntime's alpha (N×1×H×W float) for float 0..1 frames, one at a time, its recurrent state carried."""
    rec = [np.zeros((1, 1, 1, 1), np.float32)] * 4
    ratio_in = np.array([ratio], dtype=np.float32)
    out = []
    for i in range(len(frames)):
        feed = {"src": frames[i : i + 1].numpy(), "downsample_ratio": ratio_in}
        _fgr, pha, *rec = session.run(None, feed | {f"r{k + 1}i": r for k, r in enumerate(rec)})
        out.append(torch.from_numpy(pha))
    return torch.cat(out)


def _batch(frames: torch.Tensor, start: int) -> FrameBatch:
    n = len(frames)
    return FrameBatch(
        data=frames, pts=list(range(start, start + n)), time_base=Fraction(1, 25), index=list(range(start, start + n))
    )


def stage_alpha(stage: Matte, frames: torch.Tensor, *, batch: int, recurrent: bool) -> torch.Tensor:
    """Our stage's written alpha (N×1×H×W float 0..1) for uint8 frames: `step` over `batch` frames at a time,
    the state carried (`recurrent`) or reset at every frame (then one frame a step)."""
    size = batch if recurrent else 1
    state = None
    out = []
    for i in range(0, len(frames), size):
        result, new = stage.step(_batch(frames[i : i + size], i), state)
        state = new if recurrent else None
        out.append(result.data[:, :1].float().cpu() / 255.0)
    return torch.cat(out)


def _timed(fn: Callable[[], torch.Tensor], frames: int) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) / frames


def evaluate_clip(
    clip: Path,
    background: Path,
    session: Any,
    *,
    model: str | Path,
    device: torch.device,
    frames: int,
    size: tuple[int, int] | None,
    downsample: float | None,
    batch: int,
    seed: int,
) -> ClipResult:
    """Build one clip's ground truth and composite, matte it three ways and score the runs."""
    src = decode_frames(clip, frames, size)
    h, w = int(src.shape[2]), int(src.shape[3])
    ratio = auto_downsample(w, h) if downsample is None else downsample
    if ratio >= 1:
        log.warning("eval matte: downsample ratio 1: the ONNX reference runs its refiner there, ours does not")
    truth = quantise(onnx_alpha(session, src, ratio))
    image = composite(src, truth, moving_background(background, frames, (w, h), seed=seed))
    stage = Matte(model, output="alpha", downsample=ratio, dtype="fp32")
    stage.setup(device, StreamSpec(width=w, height=h, time_base=Fraction(1, 25)))
    made = [  # in the order of RUNS
        _timed(lambda: stage_alpha(stage, image, batch=batch, recurrent=True), frames),
        _timed(lambda: stage_alpha(stage, image, batch=batch, recurrent=False), frames),
        _timed(lambda: quantise(onnx_alpha(session, image.float() / 255.0, ratio)), frames),
    ]
    true_gradient = gradient_magnitude(truth[:, 0])
    runs = {k: Scores.of(a, truth, sec, true_gradient=true_gradient) for k, (a, sec) in zip(RUNS, made, strict=True)}
    return ClipResult(
        clip=clip.name,
        background=background.name,
        size=(w, h),
        frames=frames,
        downsample_ratio=ratio,
        coverage=float((truth > 0.5).float().mean()),
        runs=runs,
    )


def resolve_clip(name: str | Path) -> Path:
    """An existing file, else a file of opencv-doc by name (`assets.opencv_clip`; fetched once)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    assets.debian_package("opencv-doc")  # a failed fetch stays a StorageError
    try:
        return assets.opencv_clip(str(name))
    except StorageError:
        raise UsageError(
            f"clip {str(name)!r} is neither a file nor in opencv-doc (e.g. vtest.avi, Megamind.avi)"
        ) from None


def evaluate(
    clips: Sequence[str | Path] = DEFAULT_CLIPS,
    *,
    onnx: Path,
    model: str | Path = MODEL,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] | None = None,
    downsample: float | None = None,
    batch: int = DEFAULT_BATCH,
    threads: int = DEFAULT_THREADS,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> MatteEval:
    """Score our recurrent and per-frame mattes and onnxruntime's on composites of `clips` (paths or opencv-doc
    names; `frames` frames each from the first, resized to `size` = (W, H) if given, one side may be −1) with
    their known alpha. `downsample`: RVM's ratio (None: `auto_downsample` for the frame size). `onnx`: the
    official export (`models.zoo_rvm.offline_onnx`); `model`: ours, fp32 on `device`."""
    if frames < 2:
        raise UsageError(f"frames must be ≥ 2 (dtSSD compares consecutive frames), got {frames}")
    if batch < 1 or threads < 1:
        raise UsageError(f"batch and threads must be ≥ 1, got {batch} and {threads}")
    if downsample is not None and not 0 < downsample <= 1:
        raise UsageError(f"downsample ratio must be in (0, 1], got {downsample}")
    if not clips:
        raise UsageError("no clips to evaluate")
    paths = [resolve_clip(c) for c in clips]
    backgrounds = [resolve_clip(BACKGROUND_IMAGES[i % len(BACKGROUND_IMAGES)]) for i in range(len(paths))]
    dev = torch.device(device)
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        session = onnx_session(onnx, threads)
        results = [
            evaluate_clip(
                c,
                b,
                session,
                model=model,
                device=dev,
                frames=frames,
                size=size,
                downsample=downsample,
                batch=batch,
                seed=seed + i,
            )
            for i, (c, b) in enumerate(zip(paths, backgrounds, strict=True))
        ]
    finally:
        torch.set_num_threads(before)
    result = MatteEval(
        clips=results,
        model=str(model),
        device=str(dev),
        threads=threads,
        batch=batch,
        wall_s=time.perf_counter() - t0,
    )
    log.info("eval matte: %s", result.to_json()["gates"])
    return result
