"""Fixtures of the report tests: small generated clips and a headless Chromium (installed by .ci/chromium when
missing; the browser tests skip, saying why, only where it cannot be)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import chromium
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")  # closed with its module: nothing of it lives on through the rest of the suite
def browser() -> Iterator[chromium.Browser]:
    exe, why = chromium.ensure()
    if exe is None:
        pytest.skip(f"no headless Chromium: {why}")
    b = chromium.Browser(exe)
    yield b
    b.close()


def write_rgb(path: Path, frames: torch.Tensor, rate: Fraction, *, codec: str = "ffv1") -> Path:
    """N×3×H×W uint8 frames written losslessly (FFV1 in RGB: decoded back bit for bit) at `rate`."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[-1], frames.shape[-2], "bgr0"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f.permute(1, 2, 0).numpy()), format="rgb24")
            out.mux(s.encode(vf.reformat(format="bgr0")))
        out.mux(s.encode(None))
    return path
