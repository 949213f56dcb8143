"""What a comparison measures and which frames it shows, streaming: no input is ever held whole.

The first input is the reference. Each frame of it is matched, by time, with the nearest frame of every other
input (times counted from each input's first frame, so a part cut out with `--start` lines up with its source's
start only when both begin at the same picture); a frame with no other frame within half a reference frame period
is unmatched (an interpolated output's frames between the source's are skipped, a lower-rate input leaves gaps).

Metrics are `vidpipe.metrics`' PSNR and SSIM, the functions `vidpipe eval` uses, on R, G, B in 0..1 at the
reference's size: an input of another size is resized to it first (`RESIZE`: area averaging down, bicubic up)
and the page says so. Flicker is the mean absolute difference of an input's frame from its previous matched one
(8-bit levels): an output flickering where its source does not stands above the source's curve.

Pass 1 (`measure`) computes the curves; pass 2 (`collect`) decodes again and keeps only the chosen frames
(`choose`: evenly spaced, at detected cuts, and the worst by PSNR), so memory is a few frames whatever the length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError, UsageError
from ..frames import max_value
from ..media.info import MediaInfo
from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader
from ..metrics import psnr_per_frame, ssim_per_frame

#: how another input is brought to the reference's size for metrics and the heat-map
RESIZE = {"down": "area", "up": "bicubic"}
#: frames shown by default: evenly spaced, at cuts (the strongest first), worst by PSNR per other input
EVEN_PICKS, CUT_PICKS, WORST_PICKS = 6, 4, 3


@dataclass(frozen=True, slots=True)
class Input:
    path: Path
    info: MediaInfo
    label: str

    @property
    def size(self) -> tuple[int, int]:
        return self.info.video.display_size

    @property
    def alpha(self) -> bool:
        return self.info.video.alpha


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    #: seconds from the input's first frame
    time: Fraction
    #: C×H×W, the decoder's integer type (RGB or RGBA)
    data: torch.Tensor


def open_inputs(paths: Sequence[str | Path]) -> list[Input]:
    if len(paths) < 2:
        raise UsageError(f"compare needs at least two inputs (a reference and one to compare), got {len(paths)}")
    out = []
    for k, p in enumerate(paths):
        path = Path(p)
        out.append(Input(path=path, info=probe(path), label=f"{chr(ord('A') + k)}: {path.name}"))
    return out


def frames(inp: Input, max_frames: int | None = None) -> Iterator[Frame]:
    """`inp`'s frames in order, times from its first frame; at most `max_frames`."""
    first: Fraction | None = None
    n = 0
    with VideoReader(inp.info, ReaderOptions(batch_size=4, keep_alpha=True)) as reader:
        for batch in reader:
            for i, t in enumerate(batch.times()):
                if max_frames is not None and n >= max_frames:
                    return  # closing the reader stops its thread
                first = t if first is None else first
                yield Frame(index=n, time=t - first, data=batch.data[i])
                n += 1


class Matcher:
    """The frames of one input nearest to the reference's times, as those times go forward."""

    def __init__(self, stream: Iterator[Frame], tolerance: Fraction) -> None:
        self._it, self._tol = stream, tolerance
        self._cur: Frame | None = None
        self._next: Frame | None = next(self._it, None)

    def close(self) -> None:
        """Stop the input's reader (its generator closes the reader and joins its thread)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def at(self, t: Fraction) -> Frame | None:
        while self._next is not None and self._next.time <= t:
            self._cur, self._next = self._next, next(self._it, None)
        near = [f for f in (self._cur, self._next) if f is not None]
        if not near:
            return None
        best = min(near, key=lambda f: abs(f.time - t))
        return best if abs(best.time - t) <= self._tol else None


def tolerance(ref: Input) -> Fraction:
    """Half the reference's frame period (its average rate; 25 fps where none is known)."""
    rate = ref.info.video.rate or Fraction(25)
    return 1 / (2 * rate)


def as_float(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """C×H×W integer frame → 3×H×W float 0..1 (R, G, B; alpha left out) at `size` (W, H), by `RESIZE`."""
    x = frame[:3].float() / max_value(frame.dtype)
    w, h = size
    if x.shape[-2:] == (h, w):
        return x
    down = x.shape[-1] * x.shape[-2] > w * h
    mode = RESIZE["down" if down else "up"]
    y = F.interpolate(x[None], size=(h, w), mode=mode, **({} if down else {"align_corners": False}))[0]
    return y.clamp(0, 1)


@dataclass(slots=True)
class Curves:
    """Per reference frame: its time, and for every other input (keyed by its position, 1…) PSNR, SSIM and
    flicker (None where unmatched); the reference's own flicker under key 0."""

    times: list[float] = field(default_factory=list)
    psnr: dict[int, list[float | None]] = field(default_factory=dict)
    ssim: dict[int, list[float | None]] = field(default_factory=dict)
    flicker: dict[int, list[float | None]] = field(default_factory=dict)
    #: reference frames each other input has a match for
    matched: dict[int, int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.times)

    def mean(self, name: str, k: int) -> float | None:
        vals = [v for v in getattr(self, name)[k] if v is not None]
        return sum(vals) / len(vals) if vals else None


def measure(inputs: Sequence[Input], *, max_frames: int | None = None, device: torch.device | None = None) -> Curves:
    """Pass 1: the curves over every reference frame (see the module docstring), computed on `device`."""
    ref, others = inputs[0], inputs[1:]
    size = ref.size
    tol = tolerance(ref)
    matchers = [Matcher(frames(o), tol) for o in others]
    c = Curves()
    for k in range(len(inputs)):
        c.flicker[k] = []
        if k:
            c.psnr[k], c.ssim[k], c.matched[k] = [], [], 0
    prev: dict[int, torch.Tensor] = {}
    try:
        _measure_all(c, prev, frames(ref, max_frames), matchers, size, device or torch.device("cpu"))
    finally:
        for m in matchers:
            m.close()
    if not c.times:
        raise InputError(f"{ref.path}: no frames decoded")
    return c


def _measure_all(
    c: Curves,
    prev: dict[int, torch.Tensor],
    ref: Iterator[Frame],
    matchers: list[Matcher],
    size: tuple[int, int],
    device: torch.device,
) -> None:
    with torch.inference_mode():
        for f in ref:
            c.times.append(float(f.time))
            a = as_float(f.data.to(device), size)
            _flicker(c, prev, 0, a)
            for k, m in enumerate(matchers, start=1):
                g = m.at(f.time)
                if g is None:
                    c.psnr[k].append(None)
                    c.ssim[k].append(None)
                    c.flicker[k].append(None)
                    prev.pop(k, None)
                    continue
                b = as_float(g.data.to(device), size)
                c.psnr[k].append(float(psnr_per_frame(b[None], a[None])[0]))
                c.ssim[k].append(float(ssim_per_frame(b[None], a[None])[0]))
                c.matched[k] += 1
                _flicker(c, prev, k, b)


def _flicker(c: Curves, prev: dict[int, torch.Tensor], k: int, x: torch.Tensor) -> None:
    p = prev.get(k)
    c.flicker[k].append(None if p is None else float((x - p).abs().mean() * 255))
    prev[k] = x


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    reasons: tuple[str, ...]


def choose(
    curves: Curves,
    labels: Sequence[str],
    cuts: Sequence[tuple[int, str, float]] = (),
    *,
    even: int = EVEN_PICKS,
    at_cuts: int = CUT_PICKS,
    worst: int = WORST_PICKS,
) -> list[Choice]:
    """Reference frames to show, in order: `even` evenly spaced, the first frame after each of the `at_cuts`
    strongest `cuts` (frame, kind, score), and each other input's `worst` frames by PSNR."""
    n = curves.frames
    reasons: dict[int, list[str]] = {}

    def add(i: int, why: str) -> None:
        if 0 <= i < n:
            reasons.setdefault(i, []).append(why)

    for j in range(even):
        add(round(j * (n - 1) / max(even - 1, 1)), "evenly spaced")
    for frame, kind, _score in sorted(cuts, key=lambda c: -c[2])[:at_cuts]:
        add(frame, f"{kind} cut")
    for k, values in curves.psnr.items():
        scored = sorted((v, i) for i, v in enumerate(values) if v is not None)
        for _v, i in scored[:worst]:
            add(i, f"worst PSNR of {labels[k]}")
    return [Choice(i, tuple(dict.fromkeys(r))) for i, r in sorted(reasons.items())]


@dataclass(frozen=True, slots=True)
class Picked:
    choice: Choice
    time: Fraction
    #: per input: its matched frame (None where unmatched), native size
    frames: tuple[Frame | None, ...]


def collect(inputs: Sequence[Input], choices: Sequence[Choice]) -> list[Picked]:
    """Pass 2: the chosen reference frames and their matches, decoded again; nothing else is kept."""
    want = {c.index: c for c in choices}
    last = max(want, default=-1)
    matchers = [Matcher(frames(o), tolerance(inputs[0])) for o in inputs[1:]]
    out = []
    try:
        for f in frames(inputs[0], last + 1):
            matched = [m.at(f.time) for m in matchers]  # every frame goes through the matchers, so they advance
            if f.index in want:
                kept = tuple(None if g is None else Frame(g.index, g.time, g.data.clone()) for g in (f, *matched))
                out.append(Picked(choice=want[f.index], time=f.time, frames=kept))
    finally:
        for m in matchers:
            m.close()
    return out
