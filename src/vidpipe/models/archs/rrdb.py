"""RRDBNet, the ESRGAN / Real-ESRGAN generator (RealESRGAN_x4plus, x4plus_anime_6B, x2plus).

Residual-in-residual dense blocks at input resolution, then two nearest ×2 upsamplings. The ×2 and ×1
models fold the input into channels first (pixel-unshuffle by 2 or 4), so they run the same ×4 body on a
smaller grid.

State-dict layout (same keys as the official BasicSR `RRDBNet`)::

    conv_first                    in_channels · unshuffle² → num_feat
    body.N.rdbM.convK             M 1…3, K 1…5: num_feat + (K-1)·num_grow_ch → num_grow_ch (conv5 → num_feat)
    conv_body                     num_feat → num_feat
    conv_up1, conv_up2, conv_hr   num_feat → num_feat
    conv_last                     num_feat → out_channels

Every hyper-parameter is read back from tensor shapes by `build_rrdb`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..descriptor import Architecture, register_architecture

ARCH = "RRDBNet"

#: ESRGAN's residual scaling (Wang et al. 2018, §3.1): keeps the deep residual stack stable.
RESIDUAL_SCALE = 0.2
#: slope of every LeakyReLU in ESRGAN
LRELU_SLOPE = 0.2
#: pixel-unshuffle factor of the input per output scale (×4 runs the body at input resolution)
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = _conv(num_feat, g)
        self.conv2 = _conv(num_feat + g, g)
        self.conv3 = _conv(num_feat + 2 * g, g)
        self.conv4 = _conv(num_feat + 3 * g, g)
        self.conv5 = _conv(num_feat + 4 * g, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), LRELU_SLOPE)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), LRELU_SLOPE)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), LRELU_SLOPE)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), LRELU_SLOPE)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise ModelError(f"{ARCH}: scale {scale} not supported; valid: {sorted(_UNSHUFFLE)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        # pixel-unshuffle needs H and W divisible by its factor
        self.size_multiple = self.unshuffle
        self.conv_first = _conv(in_channels * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv(num_feat, num_feat)
        self.conv_up1 = _conv(num_feat, num_feat)
        self.conv_up2 = _conv(num_feat, num_feat)
        self.conv_hr = _conv(num_feat, num_feat)
        self.conv_last = _conv(num_feat, out_channels)

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "scale": self.scale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), LRELU_SLOPE)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), LRELU_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LRELU_SLOPE))


def looks_like_rrdb(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in state[key].shape)
    except KeyError:
        raise ModelError(f"not an {ARCH} state dict: missing {key!r}") from None


def build_rrdb(state: Mapping[str, torch.Tensor]) -> RRDBNet:
    """An untrained RRDBNet shaped like `state` (load the weights with `load_state_dict`)."""
    num_feat, first_in = _shape(state, "conv_first.weight")[:2]
    out_channels = _shape(state, "conv_last.weight")[0]
    num_grow_ch = _shape(state, "body.0.rdb1.conv1.weight")[0]
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.") and k.split(".")[1].isdigit()}
    num_block = len(blocks)
    if blocks != set(range(num_block)):
        raise ModelError(f"{ARCH}: body blocks must be numbered 0…N-1, found {sorted(blocks)}")
    for key in ("conv_body.weight", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight"):
        _shape(state, key)
    # Unshuffling multiplies input channels by 4 (×2 model) or 16 (×1 model); output channels stay as given.
    by_ratio = {u * u: s for s, u in _UNSHUFFLE.items()}
    ratio, rem = divmod(first_in, out_channels)
    if rem or ratio not in by_ratio:
        raise ModelError(
            f"{ARCH}: conv_first takes {first_in} channels for {out_channels} output channels; expected a"
            " ratio of 1 (×4), 4 (×2) or 16 (×1)"
        )
    return RRDBNet(
        in_channels=out_channels,
        out_channels=out_channels,
        num_feat=num_feat,
        num_block=num_block,
        num_grow_ch=num_grow_ch,
        scale=by_ratio[ratio],
    )


#: a local receptive field: tiles with context give the whole frame's result; fp16 is what Real-ESRGAN's own
#: inference runs (`half=True`), bf16 is checked against fp32 in tests/models/test_archs.py
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="upscale",
        detect=looks_like_rrdb,
        build=build_rrdb,
        dtypes=("fp32", "fp16", "bf16"),
        tiling="supported",
        description="ESRGAN / Real-ESRGAN residual-in-residual dense blocks (RealESRGAN_x4plus, x2plus, anime_6B)",
    )
)
