"""RIFE HDv3 with its channel widths zero-padded to tensor-core-friendly multiples: the same function, exactly.

Why: HDv3's convolutions are 90 and 45 channels wide and its first one reads 11 (two images, a mask, a flow).
cuDNN's fp16 tensor-core kernels want channel counts that are multiples of 8 (better 16/32); at 90/45/11 it picks
slower kernels or pads on every call. Widening every layer with zero weights keeps the arithmetic of the original
channels untouched (float-exact: the extra terms are products with exact zeros) and makes the extra channels zero
after every layer (zero weights, zero bias, PReLU(0) = 0), so the output is the same up to the summation order
cuDNN chooses.

`padded_hdv3(net)` returns a new module; the checkpoint's own module is left as loaded (its state dict keeps the
official layout). `PaddedIn` pads the first convolution's input channels with zeros at call time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .archs.ifnet import IFNetHDv3

#: channel counts are rounded up to a multiple of this (a half-width then a multiple of 8)
MULTIPLE = 16


def round_up(c: int, multiple: int = MULTIPLE) -> int:
    return -(-c // multiple) * multiple


class PaddedIn(nn.Module):
    """A convolution whose input gains `extra` zero channels first (11 → 16 for HDv3's first layer)."""

    def __init__(self, conv: nn.Conv2d, extra: int) -> None:
        super().__init__()
        self.conv = conv
        self.extra = extra

    def forward(self, x: Tensor) -> Tensor:
        # channels are dim 1: F.pad's spec runs from the last dim (W, H, then C)
        return self.conv(F.pad(x, (0, 0, 0, 0, 0, self.extra)))


def widen_into(src: nn.Module, dst: nn.Module) -> None:
    """Copy `src`'s weights into the top-left corner of `dst`'s (zeros elsewhere); PReLU slopes likewise."""
    if isinstance(src, nn.PReLU):
        assert isinstance(dst, nn.PReLU)
        dst.weight.data.fill_(0.25)  # any slope: the extra channels only ever see 0
        dst.weight.data[: src.weight.numel()] = src.weight.detach()
        return
    w, dw = src.weight.detach(), dst.weight.data
    dw.zero_()
    dw[: w.shape[0], : w.shape[1]] = w  # Conv2d (out, in, k, k) and ConvTranspose2d (in, out, k, k) alike
    if src.bias is not None:
        dst.bias.data.zero_()
        dst.bias.data[: src.bias.numel()] = src.bias.detach()


def padded_hdv3(net: IFNetHDv3, multiple: int = MULTIPLE, *, pad_input: bool = True) -> IFNetHDv3:
    """`net` with every block's width rounded up to `multiple` (90 → 96, its halves 45 → 48) and, with
    `pad_input`, the first convolution's 11 input channels to 16; same device and dtype, eval mode, no grad."""
    if not isinstance(net, IFNetHDv3):
        raise ModelError(f"padded_hdv3 takes an HDv3 IFNet, got {type(net).__name__}")
    if multiple % 2 or multiple < 2:
        raise ModelError(f"multiple must be even (its half is the heads' width), got {multiple}")
    p = next(net.parameters())
    wide = IFNetHDv3(tuple(round_up(c, multiple) for c in net.widths), net.n_res).to(p.device, p.dtype)
    for (name, src), (_, dst) in zip(net.named_modules(), wide.named_modules(), strict=True):
        if isinstance(src, nn.Conv2d | nn.ConvTranspose2d | nn.PReLU):
            if type(src) is not type(dst):
                raise ModelError(f"padded_hdv3: {name} is {type(src).__name__} here, {type(dst).__name__} there")
            widen_into(src, dst)
    if pad_input:
        for i in range(wide.n_blocks):
            first: nn.Conv2d = getattr(wide, f"block{i}").conv0[0][0]
            cin = first.in_channels
            conv = nn.Conv2d(round_up(cin, multiple), first.out_channels, 3, first.stride, 1).to(p.device, p.dtype)
            widen_into(first, conv)
            getattr(wide, f"block{i}").conv0[0][0] = PaddedIn(conv, conv.in_channels - cin)
    return wide.eval().requires_grad_(False)


def to_channels_last(net: nn.Module) -> nn.Module:
    """The module's 4-D weights in channels-last order (cuDNN's NHWC kernels then need no transposes)."""
    return net.to(memory_format=torch.channels_last)
