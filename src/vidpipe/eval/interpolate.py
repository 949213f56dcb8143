"""Interpolation quality on a real clip: drop every other frame, make it again, compare with the frame dropped.

For source frames f0, f1, f2, … (from `start`), the even frames are the input and each odd frame f(2k+1) is the
reference for the pair (f(2k), f(2k+2)): the model's frame at τ = 1/2 (one network call per batch of pairs,
no bisection, no scene-cut substitution) and the linear blend (f(2k) + f(2k+2)) / 2 are both compared with it.

- The model is loaded once through the `Interpolate` stage's `setup` (registry name, cache name or path; fp16
  on CUDA, fp32 on the CPU unless `dtype` says otherwise), and run through `IFNetBase.interpolate` (pads, crops).
- Both candidates are quantised to the source's integer type first, as a written output would be.
- PSNR: per frame over all RGB samples, peak = full intensity (255 for 8-bit), capped at `PSNR_CAP_DB` so that a
  frame rebuilt exactly (a static shot, a repeated frame) does not make the mean infinite; the mean is over
  frames. SSIM: Wang et al. 2004 (Gaussian window 11, σ 1.5, the stage's constants) on each RGB channel in
  0..1, valid window, mean over channels and pixels, then over frames.
- Pairs across a scene cut (the stage's own check: 1 − SSIM of grey thumbnails above its default threshold) are
  counted; the means are given over all pairs (the headline) and over the pairs without a cut.
- Streaming: the reader's bounded queue plus at most 2·batch + 1 frames held here, never the whole clip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError, UsageError
from ..frames import from_float, max_value
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..metrics import PSNR_CAP_DB, SSIM_SIGMA, SSIM_WINDOW, psnr_per_frame, ssim_per_frame
from ..runtime.device import resolve_device
from ..stages.base import StreamSpec
from ..stages.interpolate import (
    DEFAULT_CUT_THRESHOLD,
    Interpolate,
    cut_scores,
    thumbnails,
)

log = logging.getLogger(__name__)

#: the mid-point of each pair: the one τ every RIFE variant (HDv3 included) makes in a single call
TAU = 0.5
#: fewest source frames that give one evaluated pair (two inputs and the frame between them)
MIN_FRAMES = 3
DEFAULT_BATCH = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Scores:
    """Means over `frames` evaluated frames."""

    frames: int
    model_psnr: float
    model_ssim: float
    blend_psnr: float
    blend_ssim: float

    @property
    def margin_db(self) -> float:
        """Model PSNR minus blend PSNR (the acceptance figure: ≥ 2 dB)."""
        return self.model_psnr - self.blend_psnr

    @property
    def ssim_margin(self) -> float:
        return self.model_ssim - self.blend_ssim

    def to_json(self) -> dict[str, float | int]:
        return {
            "frames": self.frames,
            "model_psnr": round(self.model_psnr, 4),
            "model_ssim": round(self.model_ssim, 6),
            "blend_psnr": round(self.blend_psnr, 4),
            "blend_ssim": round(self.blend_ssim, 6),
            "margin_db": round(self.margin_db, 4),
            "ssim_margin": round(self.ssim_margin, 6),
        }


@dataclass(slots=True)
class _Sums:
    frames: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0] * 4)  # model psnr, model ssim, blend psnr, blend ssim

    def add(self, values: torch.Tensor) -> None:
        """`values`: N×4 in the order of `sums`."""
        self.frames += int(values.shape[0])
        for k, s in enumerate(values.sum(0).tolist()):
            self.sums[k] += s

    def scores(self) -> Scores:
        n = max(self.frames, 1)
        mp, ms, bp, bs = (s / n for s in self.sums)
        return Scores(frames=self.frames, model_psnr=mp, model_ssim=ms, blend_psnr=bp, blend_ssim=bs)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalResult:
    clip: str
    model: str
    variant: str
    device: str
    dtype: str
    source_size: tuple[int, int]
    size: tuple[int, int]
    start: int
    frames_read: int
    scores: Scores
    #: pairs whose two input frames straddle a scene cut, and the means without them
    cut_pairs: int
    scores_without_cuts: Scores
    wall_s: float

    @property
    def frames_evaluated(self) -> int:
        return self.scores.frames

    def to_json(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "model": self.model,
            "variant": self.variant,
            "device": self.device,
            "dtype": self.dtype,
            "source_size": list(self.source_size),
            "size": list(self.size),
            "start": self.start,
            "frames_read": self.frames_read,
            "frames_evaluated": self.frames_evaluated,
            **{k: v for k, v in self.scores.to_json().items() if k != "frames"},  # frames_evaluated
            "cut_pairs": self.cut_pairs,
            "cut_threshold": DEFAULT_CUT_THRESHOLD,
            # null when every pair straddles a cut
            "without_cuts": self.scores_without_cuts.to_json() if self.scores_without_cuts.frames else None,
            "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames_evaluated / self.wall_s, 3) if self.wall_s > 0 else None,
            "method": {
                "tau": TAU,
                "psnr": f"per frame, RGB, peak = full intensity, capped at {PSNR_CAP_DB} dB; mean over frames",
                "ssim": f"per RGB channel, Gaussian {SSIM_WINDOW}×{SSIM_WINDOW} σ {SSIM_SIGMA}, valid window; "
                "mean over channels, pixels, frames",
                "blend": "(f[2k] + f[2k+2]) / 2, rounded to the source's levels",
            },
        }

    def table(self) -> str:
        s, c = self.scores, self.scores_without_cuts
        w, h = self.size
        sw, sh = self.source_size
        resized = f"{sw}×{sh} → {w}×{h}" if (w, h) != (sw, sh) else f"{w}×{h}"
        lines = [
            f"{Path(self.clip).name}: {resized}, frames {self.start}…{self.start + self.frames_read - 1} "
            f"({self.frames_read} read, {s.frames} rebuilt), {self.model} ({self.variant}) on {self.device} "
            f"{self.dtype}, {self.wall_s:.1f} s",
            f"{'':<12}{'PSNR dB':>9}{'SSIM':>9}",
            f"{self.model:<12}{s.model_psnr:>9.2f}{s.model_ssim:>9.4f}",
            f"{'blend':<12}{s.blend_psnr:>9.2f}{s.blend_ssim:>9.4f}",
            f"{'margin':<12}{s.margin_db:>+9.2f}{s.ssim_margin:>+9.4f}",
        ]
        if self.cut_pairs:
            lines.append(
                f"without the {self.cut_pairs} pairs across a scene cut ({c.frames} frames): "
                f"{c.model_psnr:.2f} vs {c.blend_psnr:.2f} dB, margin {c.margin_db:+.2f} dB"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------- metrics
# ---------------------------------------------------------------- frames
def _target_size(size: tuple[int, int] | None, source: tuple[int, int]) -> tuple[int, int]:
    """`size` (W, H; one side may be -1 to keep the aspect ratio) or the source's own size."""
    if size is None:
        return source
    w, h = size
    sw, sh = source
    if w == -1:
        w = max(1, round(h * sw / sh))
    if h == -1:
        h = max(1, round(w * sh / sw))
    if w <= 0 or h <= 0:
        raise UsageError(f"invalid size {size}; expected positive W and H (one may be -1)")
    return w, h


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area average (what a downscale for speed should do: no aliasing), back to the source's levels."""
    if x.shape[-1] == size[0] and x.shape[-2] == size[1]:
        return x
    y = F.interpolate(x.float() / max_value(x.dtype), size=(size[1], size[0]), mode="area")
    return from_float(y, x.dtype)


def _stream(
    path: Path, device: torch.device, *, start: int, max_frames: int | None, size: tuple[int, int], batch: int
) -> Iterator[torch.Tensor]:
    """Source frames start … start+max_frames−1 as RGB N×3×H×W chunks on `device`, resized to `size`."""
    info = probe(path)
    taken = 0
    with VideoReader(info, ReaderOptions(batch_size=batch, keep_alpha=False)) as reader:
        for b in reader:
            keep = [k for k, i in enumerate(b.index) if i >= start]
            if not keep:
                continue
            data = b.data[keep[0] :]
            if max_frames is not None:
                data = data[: max_frames - taken]
            taken += len(data)
            yield _resize(data.to(device), size)
            if max_frames is not None and taken >= max_frames:
                return  # closing the reader stops the decode thread


# ---------------------------------------------------------------- evaluation
def evaluate(
    clip: str | Path,
    model: str | Path = "rife-hdv3",
    device: torch.device | str = "auto",
    *,
    max_frames: int | None = None,
    start: int = 0,
    size: tuple[int, int] | None = None,
    batch: int = DEFAULT_BATCH,
    dtype: str = "auto",
) -> EvalResult:
    """Drop every other frame of `clip` (from frame `start`, at most `max_frames` frames read, optionally
    downscaled to `size` = (W, H)), rebuild the dropped frames with `model` at τ = 1/2 and with a linear blend,
    and score both against them. `batch`: pairs per network call. Frames before `start` are decoded and skipped
    (no seek), so frame numbers are exact whatever the keyframes."""
    if max_frames is not None and max_frames < MIN_FRAMES:
        raise UsageError(f"max_frames must be ≥ {MIN_FRAMES} (two inputs and the frame between), got {max_frames}")
    if start < 0:
        raise UsageError(f"start must be ≥ 0, got {start}")
    if batch < 1:
        raise UsageError(f"batch must be ≥ 1, got {batch}")
    t0 = time.perf_counter()
    path = Path(clip)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    info = probe(path)
    v = info.video
    source_size = v.display_size
    target = _target_size(size, source_size)
    rate = v.rate or Fraction(25)  # the stage wants a rate to plan with; τ = 1/2 does not depend on it
    stage = Interpolate(model, multi=2, dtype=dtype)
    stage.setup(dev, StreamSpec(width=target[0], height=target[1], time_base=v.time_base, nominal_rate=rate))
    net = stage.model

    every, no_cut = _Sums(), _Sums()
    cuts = 0
    read = 0

    def score(window: torch.Tensor) -> None:
        """window: 2m+1 frames, even ones the input, odd ones the references."""
        nonlocal cuts
        peak = max_value(window.dtype)
        x = window.float() / peak
        left, ref, right = x[0:-1:2], x[1::2], x[2::2]
        made = net.interpolate(left.to(stage.dtype), right.to(stage.dtype), TAU, stage.scale)
        made = from_float(made.float(), window.dtype).float() / peak
        blend = from_float((left + right) / 2, window.dtype).float() / peak
        values = torch.stack(
            [
                psnr_per_frame(made, ref),
                ssim_per_frame(made, ref),
                psnr_per_frame(blend, ref),
                ssim_per_frame(blend, ref),
            ],
            dim=1,
        ).cpu()
        is_cut = torch.tensor(cut_scores(thumbnails(left), thumbnails(right))) > DEFAULT_CUT_THRESHOLD
        cuts += int(is_cut.sum())
        every.add(values)
        no_cut.add(values[~is_cut])

    held: torch.Tensor | None = None  # frames not yet scored; held[0] is an input (even) frame
    span = 2 * batch + 1
    with torch.inference_mode():
        for chunk in _stream(path, dev, start=start, max_frames=max_frames, size=target, batch=batch):
            read += len(chunk)
            held = chunk if held is None else torch.cat([held, chunk])
            while len(held) >= span:
                score(held[:span])
                held = held[span - 1 :]  # the last input frame starts the next window
        if held is not None and len(held) >= MIN_FRAMES:
            score(held[: len(held) - (len(held) - 1) % 2])  # a trailing odd frame has no right-hand partner
    if every.frames == 0:
        raise InputError(f"{path}: {read} frame(s) from frame {start}; at least {MIN_FRAMES} are needed")
    wall = time.perf_counter() - t0
    result = EvalResult(
        clip=str(path),
        model=str(model),
        variant=net.variant,
        device=str(dev),
        dtype=str(stage.dtype).removeprefix("torch."),
        source_size=source_size,
        size=target,
        start=start,
        frames_read=read,
        scores=every.scores(),
        cut_pairs=cuts,
        scores_without_cuts=no_cut.scores(),
        wall_s=wall,
    )
    log.info("eval interpolate: %s", result.to_json())
    return result
