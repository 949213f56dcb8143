"""RIFE HDv3's blocks on cuDNN's tensor-core convolutions, with one Triton pass after each (`ifnet_fast`'s part
"tc").

Why (profile of the eager fp16 module, 1080p, batch 8, H100, docs/benchmarks.md "RIFE HDv3: where the time
went"): cuDNN runs a 3×3 96→96 convolution in NHWC at ~580 TFLOP/s but 90→90 at ~200 and the first 11→45 one at
~15, and ~half of the module's time was outside the convolutions: PReLU through a non-vectorised elementwise kernel
(channels-last with a per-channel slope), bias and residual adds, NCHW↔NHWC conversions, and the two heads'
4×4 stride-2 transposed convolutions (cuDNN's dgrad kernels at ~150 TFLOP/s). Here:

- widths are zero-padded to multiples of 16 (`ifnet_pad`: exact), the first layer's 11 input channels to 16, and
  every tensor stays channels-last;
- a convolution runs without bias in cuDNN; `bias_prelu_` then adds the bias, applies the PReLU and adds the
  residual skip in one pass over its output, in place;
- each 4×4 stride-2 transposed convolution is a 3×3 convolution to 4× the channels (`deconv_as_conv`) whose output
  channels are ordered (sub-row, sub-column, channel), so the ×2 pixel shuffle is one contiguous NHWC copy;
- the flow (4) and mask (1) heads run merged (`_merged_heads`), the last layer padded to 8 outputs.

Output equals `IFNetHDv3`'s up to float rounding (the extra channels are exact zeros; the order of summation is
cuDNN's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError
from .archs.ifnet import IFNetHDv3
from .fused import _interpreting
from .ifnet_pad import PaddedIn, padded_hdv3, widen_into

try:  # Triton ships with CUDA builds of torch; CPU builds and CI run without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

#: the heads' last layer (flow 4 + mask 1) is padded to this many outputs
HEAD_OUT = 8


@dataclass(frozen=True, slots=True)
class Layer:
    """A 3×3 convolution's weight (channels-last, no bias) and its epilogue: fp32 bias and PReLU slopes (slope 1:
    no activation)."""

    weight: Tensor
    bias: Tensor
    slopes: Tensor
    stride: int = 1

    @classmethod
    def of(cls, conv: nn.Conv2d, act: nn.PReLU | None, order: Tensor | None = None) -> Layer:
        w, b = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        cout = w.shape[0]
        dt = torch.promote_types(w.dtype, torch.float32)  # the epilogue's arithmetic (fp32 for fp16 weights)
        if act is None:
            a = torch.ones(cout, device=w.device, dtype=dt)
        else:
            a = act.weight.detach().to(dt).expand(cout if order is None else cout // 4)
            if order is not None:
                a = a.repeat(4)  # the same slope for each sub-pixel of a channel
        bias = b.to(dt) if b is not None else torch.zeros(cout, device=w.device, dtype=dt)
        if order is not None:
            w, bias = w[order], bias[order]
        return cls(w.contiguous(memory_format=torch.channels_last), bias.contiguous(), a.contiguous(), conv.stride[0])

    def __call__(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        y = F.conv2d(x, self.weight, None, self.stride, 1)
        return bias_prelu_(y, self.bias, self.slopes, skip)


def subpixel_order(cout: int, device: torch.device) -> Tensor:
    """Output channel (2·r_y + r_x)·cout + o takes `deconv_as_conv`'s channel 4·o + 2·r_y + r_x."""
    o = torch.arange(cout, device=device)
    return torch.cat([4 * o + s for s in range(4)])


def shuffle2(y: Tensor) -> Tensor:
    """×2 pixel shuffle of a channels-last N×4C×H×W tensor whose channels are ordered (r_y, r_x, c): one copy,
    channels-last N×C×2H×2W out."""
    n, c4, h, w = y.shape
    c = c4 // 4
    t = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c)
    return t.permute(0, 3, 1, 2)


@dataclass(frozen=True, slots=True)
class TcLevel:
    cin: int  # input channels after padding (16)
    conv0: tuple[Layer, Layer]
    blocks: tuple[tuple[Layer, Layer], ...]
    head0: Layer
    head1: Layer

    def __call__(self, x: Tensor) -> Tensor:
        """x: 2N×cin×h×w channels-last → 2N×HEAD_OUT×h×w (flow 0..3, mask 4; the rest zero)."""
        feat = self.conv0[1](self.conv0[0](x))
        for a, b in self.blocks:
            feat = b(a(feat), skip=feat)
        return shuffle2(self.head1(shuffle2(self.head0(feat))))


def _head_layer(deconv: nn.ConvTranspose2d, act: nn.PReLU | None) -> Layer:
    from .ifnet_fast import deconv_as_conv  # ifnet_fast imports this module at its top

    conv = deconv_as_conv(deconv)
    return Layer.of(conv, act, subpixel_order(deconv.out_channels, conv.weight.device))


def tc_levels(net: IFNetHDv3) -> list[TcLevel]:
    """`net`'s blocks as `TcLevel`s (padded widths, merged heads, convolutions only): the same function."""
    from .ifnet_fast import _merged_heads

    if not isinstance(net, IFNetHDv3):
        raise ModelError(f"the tc path takes an HDv3 IFNet, got {type(net).__name__}")
    wide = padded_hdv3(net, pad_input=True)
    levels = []
    for i in range(wide.n_blocks):
        b = getattr(wide, f"block{i}")
        first = b.conv0[0][0]
        assert isinstance(first, PaddedIn)
        conv0 = (Layer.of(first.conv, b.conv0[0][1]), Layer.of(b.conv0[1][0], b.conv0[1][1]))
        blocks = []
        for k in range(wide.n_res):
            cb = getattr(b, f"convblock{k}")
            blocks.append((Layer.of(cb[0][0], cb[0][1]), Layer.of(cb[1][0], cb[1][1])))
        h0, act, h1 = _merged_heads(b)
        last = nn.ConvTranspose2d(h1.in_channels, HEAD_OUT, 4, 2, 1).to(h1.weight.device, h1.weight.dtype)
        widen_into(h1, last)
        levels.append(
            TcLevel(first.conv.in_channels, conv0, tuple(blocks), _head_layer(h0, act), _head_layer(last, None))
        )
    return levels


def tc_input(rows: tuple[tuple[Tensor, ...], ...], cin: int) -> Tensor:
    """`torch.cat([torch.cat(row, 1) for row in rows], 0)` zero-padded to `cin` channels, channels-last, written in
    one pass (each row's parts N×c×h×w, any layout)."""
    n, _, h, w = rows[0][0].shape
    used = sum(p.shape[1] for p in rows[0])
    if used > cin:
        raise ModelError(f"tc input: {used} channels do not fit {cin}")
    buf = torch.empty(n * len(rows), h, w, cin, device=rows[0][0].device, dtype=rows[0][0].dtype)
    for r, row in enumerate(rows):
        k = 0
        for p in row:
            c = p.shape[1]
            buf[r * n : (r + 1) * n, ..., k : k + c] = p.permute(0, 2, 3, 1)
            k += c
    buf[..., used:] = 0
    return buf.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------ the epilogue
if triton is not None:

    @triton.jit
    def _bias_prelu_kernel(x_ptr, b_ptr, a_ptr, s_ptr, total, C: tl.constexpr, SKIP: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < total
        c = offs % C
        v = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32) + tl.load(b_ptr + c, mask=ok, other=0.0)
        v = tl.where(v > 0, v, v * tl.load(a_ptr + c, mask=ok, other=1.0))
        if SKIP:
            v += tl.load(s_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        tl.store(x_ptr + offs, v.to(x_ptr.dtype.element_ty), mask=ok)


def _dense_nhwc(t: Tensor) -> bool:
    return t.dim() == 4 and t.permute(0, 2, 3, 1).is_contiguous()


def bias_prelu_(x: Tensor, bias: Tensor, slopes: Tensor, skip: Tensor | None = None) -> Tensor:
    """In place: x ← PReLU(x + bias) (+ skip), per channel (fp32 arithmetic); `x` (and `skip`) channels-last
    N×C×H×W. Triton on CUDA; torch elsewhere (the same arithmetic)."""
    c = x.shape[1]
    if bias.numel() != c or slopes.numel() != c or (skip is not None and skip.shape != x.shape):
        raise ModelError(f"bias_prelu_: {c} channels, bias {bias.numel()}, slopes {slopes.numel()}")
    on_triton = triton is not None and (x.is_cuda or _interpreting())
    if not on_triton or not _dense_nhwc(x) or (skip is not None and not _dense_nhwc(skip)):
        dt = torch.promote_types(x.dtype, torch.float32)  # fp32 arithmetic, as the kernel; fp64 stays fp64
        v = x.to(dt) + bias.to(dt).view(1, c, 1, 1)
        v = torch.where(v > 0, v, v * slopes.to(dt).view(1, c, 1, 1))
        if skip is not None:
            v = v + skip.to(dt)
        return x.copy_(v)
    total = x.numel()
    block = 4096
    s = skip if skip is not None else x
    _bias_prelu_kernel[(triton.cdiv(total, block),)](x, bias, slopes, s, total, C=c, SKIP=skip is not None, BLOCK=block)
    return x
