"""Separable resampling with a chosen kernel (`resize --resize-method catrom|mitchell|lanczos|spline16|spline36`).

Each axis is one matrix (output × input samples): output pixel i is centred at (i + ½)·in/out − ½ in input
pixels, and its weights are the kernel at the distances to the input pixels, the kernel widened by in/out when
downscaling (so it averages instead of aliasing). Taps that fall outside the picture are left out and each row is
normalised to sum 1 — the convention of Pillow's and torch's antialiased resize, so a flat picture stays flat to
its edges. A frame is then two matrix products on the device (rows, then columns), in float32.

Kernels (x in input pixels at scale 1): the Mitchell–Netravali cubics with (B, C) = (0, ½) (Catmull–Rom: what
zimg's, hence FFmpeg's zscale, `bicubic` is by default, and Pillow's BICUBIC) and (⅓, ⅓) (Mitchell); Lanczos
with 3 lobes (zscale's default taps); and the spline16/spline36 interpolating splines (Avisynth's, zimg's).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Final

import numpy as np
import torch

Kernel = Callable[[np.ndarray], np.ndarray]


def _cubic(b: float, c: float) -> tuple[Kernel, float]:
    def k(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = ((12 - 9 * b - 6 * c) * x**3 + (-18 + 12 * b + 6 * c) * x**2 + (6 - 2 * b)) / 6
        far = ((-b - 6 * c) * x**3 + (6 * b + 30 * c) * x**2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6
        return np.where(x < 1, near, np.where(x < 2, far, 0.0))

    return k, 2.0


def _lanczos(lobes: int) -> tuple[Kernel, float]:
    def k(x: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) < lobes, np.sinc(x) * np.sinc(x / lobes), 0.0)

    return k, float(lobes)


def _spline(pieces: tuple[tuple[float, float, float], ...]) -> tuple[Kernel, float]:
    """An interpolating cubic spline given per unit interval n as (a, b, c): a·t³ + b·t² + c·t with t = |x| − n,
    plus 1 on the first interval (the kernel is 1 at 0 and 0 at every other integer)."""

    def k(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        out = np.zeros_like(x)
        for n, (a, b, c) in enumerate(pieces):
            t = x - n
            piece = ((a * t + b) * t + c) * t + (1.0 if n == 0 else 0.0)
            out = np.where((x >= n) & (x < n + 1), piece, out)
        return out

    return k, float(len(pieces))


#: kernel name → (kernel, support radius in input pixels at scale 1)
KERNELS: Final[dict[str, tuple[Kernel, float]]] = {
    "catrom": _cubic(0.0, 0.5),
    "mitchell": _cubic(1 / 3, 1 / 3),
    "lanczos": _lanczos(3),
    "spline16": _spline(((1.0, -9 / 5, -1 / 5), (-1 / 3, 4 / 5, -7 / 15))),
    "spline36": _spline(
        ((13 / 11, -453 / 209, -3 / 209), (-6 / 11, 270 / 209, -156 / 209), (1 / 11, -45 / 209, 26 / 209))
    ),
}


@functools.lru_cache(maxsize=32)
def weights(kernel: str, n_in: int, n_out: int) -> np.ndarray:
    """The n_out × n_in float64 resampling matrix of one axis (rows sum to 1)."""
    k, support = KERNELS[kernel]
    widen = max(1.0, n_in / n_out)  # downscaling: the kernel spans more input pixels
    radius = support * widen
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    first = np.floor(centres - radius).astype(np.int64) + 1
    taps = math.ceil(2 * radius) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    w = k((idx - centres[:, None]) / widen)
    w = np.where((idx >= 0) & (idx < n_in), w, 0.0)  # outside the picture: left out, the rest renormalised
    w /= w.sum(axis=1, keepdims=True)
    m = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)
    inside = (idx >= 0) & (idx < n_in)
    np.add.at(m, (rows[inside], idx[inside]), w[inside])
    return m


def resample(x: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    """x: N×C×H×W float → N×C×h×w (`size` = (w, h)) with `kernel`, on x's device."""
    w, h = size
    out = x
    if h != x.shape[2]:
        rows = torch.from_numpy(weights(kernel, int(x.shape[2]), h)).to(x.device, torch.float32)
        out = torch.matmul(rows, out)
    if w != x.shape[3]:
        cols = torch.from_numpy(weights(kernel, int(x.shape[3]), w)).to(x.device, torch.float32)
        out = torch.matmul(out, cols.T)
    return out
