"""Helpers for tests and evaluations: decode a whole (small) file back into frames and exact times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from ..media.probe import probe
from ..media.reader import ReaderOptions, VideoReader


def decode_all(path: str | Path, **options: object) -> tuple[list[Fraction], torch.Tensor]:
    """All frames of a small file: (exact times in seconds, N×C×H×W tensor). Tests only: O(video) memory."""
    info = probe(path)
    times: list[Fraction] = []
    frames: list[torch.Tensor] = []
    with VideoReader(info, ReaderOptions(**options)) as r:  # type: ignore[arg-type]
        for b in r:
            times += b.times()
            frames.append(b.data)
    return times, torch.cat(frames) if frames else torch.empty(0)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 255.0) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()
