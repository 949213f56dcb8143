"""Helpers shared by the RIFE tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch


def read_frames(path: Path, count: int) -> list[torch.Tensor]:
    """The first `count` frames of a clip as float 1×3×H×W RGB in 0..1."""
    frames: list[torch.Tensor] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)
            if len(frames) == count:
                break
    assert len(frames) == count, f"{path} has fewer than {count} frames"
    return frames


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


#: official layouts: (widths of the blocks, feature encoder (hidden, out) or None, channels each block emits),
#: as read from Practical-RIFE's train_log/IFNet_HDv3.py of each release
V4_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, int] | None, int]] = {
    "v4.6": ((192, 128, 96, 64), None, 6),
    "v4.22": ((256, 192, 96, 48), (32, 8), 13),
    "v4.25": ((192, 128, 96, 64, 32), (16, 4), 13),
}


def randomize(model: torch.nn.Module, seed: int, gain: float = 0.5) -> torch.nn.Module:
    """Deterministic random weights, scaled down so flows stay moderate (the default init gives huge ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * gain / max(1.0, p[0].numel() ** 0.5))
    return model
