"""SRVGGNetCompact, the small VGG-style network of Real-ESRGAN (realesr-animevideov3, realesr-general-x4v3).

A plain chain of 3×3 convolutions with PReLU, a pixel shuffle, and a nearest-upsampled copy of the input added
at the end, so the network only learns the residual over nearest-neighbour upscaling.

State-dict layout (same keys as the official `SRVGGNetCompact`)::

    body.0            conv in_channels → num_feat
    body.1            PReLU(num_feat)
    body.2k, body.2k+1 conv num_feat → num_feat, PReLU      for k = 1 … num_conv
    body.2·num_conv+2 conv num_feat → out_channels · scale²

Every hyper-parameter is read back from tensor shapes by `build_srvgg`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..descriptor import Architecture, register_architecture

ARCH = "SRVGGNetCompact"


class SRVGGNetCompact(nn.Module):
    def __init__(self, *, in_channels: int = 3, num_feat: int = 64, num_conv: int = 16, scale: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        # The residual adds an upsampled copy of the input, so the output has the input's channels.
        self.out_channels = in_channels
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.scale = scale
        self.size_multiple = 1
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, in_channels * scale * scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "num_feat": self.num_feat,
            "num_conv": self.num_conv,
            "scale": self.scale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def looks_like_srvgg(state: Mapping[str, torch.Tensor]) -> bool:
    return "body.0.weight" in state and "body.1.weight" in state and "conv_first.weight" not in state


def build_srvgg(state: Mapping[str, torch.Tensor]) -> SRVGGNetCompact:
    """An untrained SRVGGNetCompact shaped like `state` (load the weights with `load_state_dict`)."""
    convs: list[int] = []
    acts: list[int] = []
    for key, t in state.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "body" or not parts[1].isdigit():
            raise ModelError(f"not an {ARCH} state dict: unexpected key {key!r}")
        idx = int(parts[1])
        if parts[2] == "weight":
            (convs if t.ndim == 4 else acts).append(idx)
    convs.sort()
    acts.sort()
    if len(convs) < 2 or convs != list(range(0, 2 * len(convs), 2)):
        raise ModelError(f"{ARCH}: convolutions must sit at body.0, body.2, …; found at {convs}")
    if acts != [i + 1 for i in convs[:-1]]:
        raise ModelError(
            f"{ARCH}: expected a PReLU after every convolution but the last, found them at body.{acts};"
            " only PReLU models can be inferred from weights"
        )
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    num_feat, in_channels = int(first.shape[0]), int(first.shape[1])
    ratio = int(last.shape[0]) // in_channels
    scale = math.isqrt(ratio)
    if scale * scale * in_channels != int(last.shape[0]) or scale < 1:
        raise ModelError(
            f"{ARCH}: the last convolution has {int(last.shape[0])} outputs, not in_channels ({in_channels}) × scale²"
        )
    for i in acts:
        if tuple(state[f"body.{i}.weight"].shape) != (num_feat,):
            raise ModelError(f"{ARCH}: body.{i}.weight should have shape ({num_feat},)")
    return SRVGGNetCompact(in_channels=in_channels, num_feat=num_feat, num_conv=len(convs) - 2, scale=scale)


#: a local receptive field: tiles with context give the whole frame's result; fp16 is what Real-ESRGAN's own
#: inference runs (`half=True`), bf16 is checked against fp32 in tests/models/test_archs.py
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="upscale",
        detect=looks_like_srvgg,
        build=build_srvgg,
        dtypes=("fp32", "fp16", "bf16"),
        tiling="supported",
        description="Real-ESRGAN compact VGG-style SR (realesr-animevideov3, realesr-general-x4v3)",
    )
)
