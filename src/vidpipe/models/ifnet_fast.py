"""RIFE HDv3 on CUDA at speed: `archs.ifnet.IFNetHDv3`'s arithmetic in fewer, fused passes, replayed from graphs.

Why: the eager HDv3 runs ~80 pairs/s at 1080p on an H100, far below its arithmetic bound (~150 GFLOP a pair).
Its time goes to launches (~150 kernels a pair) and to full-resolution passes around the convolutions: each
level's two transposed-convolution heads, fp32 copies of both images for every warp, the grid the warp builds,
and the casts between. What this module changes, each exact up to float rounding:

- the two heads of a block run as one: their first 4×4 stride-2 transposed convolutions (90→45 each) are one
  90→90, their second ones (45→4 flow, 45→1 mask) one block-diagonal 90→5;
- a 4×4 stride-2 padding-1 transposed convolution is a 3×3 convolution to 4× the channels followed by a ×2
  pixel shuffle (`deconv_as_conv`); with `models.fused` (Triton) the shuffle, the bias and the PReLU happen in
  the convolution's epilogue, and the residual blocks add their skip there too;
- the warp reads the fp16 image and the fp32 flow once and writes fp16 (`warp`, Triton), where the reference
  makes fp32 copies and a sampling grid; the flow and the mask are accumulated in fp32 (the reference keeps
  them in the model dtype), which brings the output closer to the fp32 module, not farther;
- `FastHDv3Runner` replays the whole forward from a CUDA graph per batch shape (`models.graphs.GraphedCall`).

`parts` picks which of these run (the bench measures each); the default takes all that the device allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ModelError
from . import fused
from .archs.ifnet import IFNetHDv3, _check_scale, _resize, _swap, backward_warp
from .graphs import GraphedCall
from .ifnet_tc import tc_input, tc_levels
from .padding import pad_to_multiple

try:  # Triton ships with CUDA builds of torch; CPU builds and CI run without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

#: the optional parts of the fast path: fused convolutions (blocks and heads), the Triton warp, CUDA graphs
PARTS = ("fused", "warp", "graphs")
#: the other way to run the blocks and heads: cuDNN on zero-padded widths with one Triton epilogue pass each
#: (`models.ifnet_tc`); exclusive with "fused"
TC_PARTS = ("tc", "warp", "graphs")


def deconv_as_conv(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """`deconv` (k 4, stride 2, padding 1) as a 3×3 convolution to 4·cout channels; `F.pixel_shuffle(·, 2)` of
    its output equals `deconv`'s output.

    Output row y = 2m + r of the transposed convolution sums input rows i with kernel row k = y + 1 − 2i, i.e.
    offsets d = i − m ∈ {−1, 0, 1} with k = r + 1 − 2d (where 0 ≤ k ≤ 3); the same for columns. Sub-pixel (r_y,
    r_x) of output channel o becomes channel 4·o + 2·r_y + r_x, the order `pixel_shuffle` reads."""
    if deconv.kernel_size != (4, 4) or deconv.stride != (2, 2) or deconv.padding != (1, 1) or deconv.groups != 1:
        raise ModelError(f"expected a 4×4 stride-2 padding-1 transposed convolution, got {deconv}")
    wt = deconv.weight.detach()  # (cin, cout, 4, 4)
    cin, cout = int(wt.shape[0]), int(wt.shape[1])
    w = wt.new_zeros(cout, 2, 2, cin, 3, 3)
    for ry in (0, 1):
        for rx in (0, 1):
            for dy in (-1, 0, 1):
                ky = ry + 1 - 2 * dy
                if not 0 <= ky <= 3:
                    continue
                for dx in (-1, 0, 1):
                    kx = rx + 1 - 2 * dx
                    if 0 <= kx <= 3:
                        w[:, ry, rx, :, dy + 1, dx + 1] = wt[:, :, ky, kx].t()
    conv = nn.Conv2d(cin, 4 * cout, 3, 1, 1, bias=deconv.bias is not None).to(wt.device, wt.dtype)
    conv.weight.data.copy_(w.reshape(4 * cout, cin, 3, 3))
    if deconv.bias is not None:
        conv.bias.data.copy_(deconv.bias.detach().repeat_interleave(4))
    return conv.requires_grad_(False)


def _merged_heads(block: nn.Module) -> tuple[nn.ConvTranspose2d, nn.PReLU, nn.ConvTranspose2d]:
    """conv1 (flow) and conv2 (mask) of an HDv3 block as one head: 90→90 transposed conv, PReLU, 90→5."""
    a0, ap, a1 = block.conv1[0], block.conv1[1], block.conv1[2]
    b0, bp, b1 = block.conv2[0], block.conv2[1], block.conv2[2]
    c, half = a0.in_channels, a0.out_channels
    fo, mo = a1.out_channels, b1.out_channels
    dev, dt = a0.weight.device, a0.weight.dtype
    first = nn.ConvTranspose2d(c, 2 * half, 4, 2, 1).to(dev, dt)
    first.weight.data.copy_(torch.cat((a0.weight, b0.weight), 1))
    first.bias.data.copy_(torch.cat((a0.bias, b0.bias)))
    act = nn.PReLU(2 * half).to(dev, dt)
    act.weight.data.copy_(torch.cat((ap.weight.expand(half), bp.weight.expand(half))))
    second = nn.ConvTranspose2d(2 * half, fo + mo, 4, 2, 1).to(dev, dt)
    second.weight.data.zero_()
    second.weight.data[:half, :fo] = a1.weight
    second.weight.data[half:, fo:] = b1.weight
    second.bias.data.copy_(torch.cat((a1.bias, b1.bias)))
    return first.requires_grad_(False), act.requires_grad_(False), second.requires_grad_(False)


def _prelu_slopes(p: nn.PReLU, channels: int) -> Tensor:
    return p.weight.detach().expand(channels) if p.weight.numel() == 1 else p.weight.detach()


@dataclass
class _Level:
    """One HDv3 block, rearranged: conv0's two stride-2 convolutions stay cuDNN's; the rest as `parts` asks."""

    conv0: nn.Sequential
    blocks: list[tuple[nn.Conv2d, nn.PReLU, nn.Conv2d, nn.PReLU]]
    head0: nn.ConvTranspose2d
    head_act: nn.PReLU
    head1: nn.ConvTranspose2d
    # the same as fused-kernel weights (None without `fused`)
    packed_blocks: list[tuple[fused.PackedConv, fused.PackedConv]] | None = None
    packed_head0: tuple[fused.PackedConv, fused.PackedConv] | None = None  # the 90→90 head in two halves
    packed_head1: fused.PackedConv | None = None


class FastHDv3(nn.Module):
    """`IFNetHDv3.forward` for CUDA (τ = 0.5; input N×3×H×W padded to the model's multiple, fp16/bf16)."""

    def __init__(self, net: IFNetHDv3, *, parts: tuple[str, ...] = PARTS) -> None:
        super().__init__()
        unknown = set(parts) - set(PARTS) - set(TC_PARTS)
        if unknown:
            raise ModelError(f"unknown fast-path parts {sorted(unknown)}; valid: {', '.join(PARTS)}, tc")
        if "tc" in parts and "fused" in parts:
            raise ModelError("fast-path parts 'tc' and 'fused' are two ways to run the same layers: pick one")
        self.net = net
        self.parts = tuple(p for p in (*PARTS, "tc") if p in parts)
        self.tc = tc_levels(net) if "tc" in self.parts else None
        self.levels_ = net.levels
        dtype = next(net.parameters()).dtype
        self.levels: list[_Level] = []
        # with tc the levels are `self.tc`'s: the torch/fused rearrangement below would be built for nothing
        for i in range(0 if self.tc is not None else net.n_blocks):
            b = getattr(net, f"block{i}")
            pairs = []
            for k in range(net.n_res):
                cb = getattr(b, f"convblock{k}")
                pairs.append((cb[0][0], cb[0][1], cb[1][0], cb[1][1]))
            h0, ha, h1 = _merged_heads(b)
            lv = _Level(b.conv0, pairs, h0, ha, h1)
            if "fused" in self.parts:
                lv.packed_blocks = [
                    (fused.PackedConv.of(c0, p0, dtype=dtype), fused.PackedConv.of(c1, p1, dtype=dtype))
                    for c0, p0, c1, p1 in pairs
                ]
                lv.packed_head0 = self._packed_head0(h0, ha, dtype)
                lv.packed_head1 = fused.PackedConv.of(deconv_as_conv(h1), None, dtype=dtype)
            self.levels.append(lv)

    @staticmethod
    def _packed_head0(h0: nn.ConvTranspose2d, act: nn.PReLU, dtype: torch.dtype) -> tuple[fused.PackedConv, ...]:
        # 90→360 (before the shuffle) is too wide for one kernel's accumulator: two halves of 180 (45 channels
        # after the shuffle each), each with its PReLU slopes repeated over the 4 sub-pixels
        conv = deconv_as_conv(h0)
        half = conv.out_channels // 2
        slopes = _prelu_slopes(act, h0.out_channels).repeat_interleave(4)
        out = []
        for s in (slice(0, half), slice(half, 2 * half)):
            c = nn.Conv2d(conv.in_channels, half, 3, 1, 1).to(conv.weight.device, conv.weight.dtype)
            c.weight.data.copy_(conv.weight[s])
            c.bias.data.copy_(conv.bias[s])
            p = nn.PReLU(half).to(conv.weight.device, conv.weight.dtype)
            p.weight.data.copy_(slopes[s])
            out.append(fused.PackedConv.of(c, p, dtype=dtype))
        return tuple(out)

    # -- pieces --
    def _features(self, lv: _Level, x: Tensor) -> Tensor:
        feat = lv.conv0(x)
        if lv.packed_blocks is None:
            for c0, p0, c1, p1 in lv.blocks:
                feat = p1(c1(p0(c0(feat)))) + feat
            return feat
        n, c, h, w = feat.shape
        feat = feat.contiguous(memory_format=torch.channels_last)
        tmp = fused._empty(n, c, h, w, feat)
        for k0, k1 in lv.packed_blocks:
            nxt = fused._empty(n, c, h, w, feat)
            fused.conv3x3(feat, k0, tmp, act="prelu")
            fused.conv3x3(tmp, k1, nxt, act="prelu", res1=feat)
            feat = nxt
        return feat

    def _heads(self, lv: _Level, feat: Tensor) -> Tensor:
        """flow (4) and mask (1) channels at twice feat's size, twice again: the input's size at this level."""
        if lv.packed_head0 is None or lv.packed_head1 is None:
            return lv.head1(lv.head_act(lv.head0(feat)))
        n, _, h, w = feat.shape
        mid = fused._empty(n, lv.head0.out_channels, 2 * h, 2 * w, feat)
        half = lv.head0.out_channels // 2
        fused.conv3x3(feat, lv.packed_head0[0], mid[:, :half], act="prelu", shuffle=2)
        fused.conv3x3(feat, lv.packed_head0[1], mid[:, half:], act="prelu", shuffle=2)
        out = fused._empty(n, lv.head1.out_channels, 4 * h, 4 * w, feat)
        fused.conv3x3(mid, lv.packed_head1, out, shuffle=2)
        return out

    def _warp(self, image: Tensor, flow: Tensor) -> Tensor:
        if "warp" in self.parts:
            return warp(image, flow)
        return backward_warp(image, flow)

    def forward(self, img0: Tensor, img1: Tensor, scale: float = 1.0) -> Tensor:
        self.net._check_inputs(img0, img1, scale)
        n, _, h, w = img0.shape
        dt = img0.dtype
        flow = torch.zeros(n, 4, h, w, device=img0.device, dtype=torch.float32)
        mask = torch.zeros(n, 1, h, w, device=img0.device, dtype=torch.float32)
        warped0, warped1 = img0, img1
        for i, base in enumerate(self.levels_):
            level = base / scale
            w0, w1 = _resize(warped0, 1.0 / level), _resize(warped1, 1.0 / level)
            m, f = _resize(mask, 1.0 / level).to(dt), (_resize(flow, 1.0 / level) / level).to(dt)
            if self.tc is not None:
                tc = self.tc[i]
                out = tc(tc_input(((w0, w1, m, f), (w1, w0, -m, _swap(f))), tc.cin)).float()
            else:
                lv = self.levels[i]
                x = torch.cat((torch.cat((w0, w1, m, f), 1), torch.cat((w1, w0, -m, _swap(f)), 1)), 0)
                x = x.contiguous(memory_format=torch.channels_last)
                out = self._heads(lv, self._features(lv, x)).float()
            fd, md = out[:, :4], out[:, 4:5]
            flow = flow + _resize((fd[:n] + _swap(fd[n:])) / 2, level) * level
            mask = mask + _resize((md[:n] - md[n:]) / 2, level)
            warped0 = self._warp(img0, flow[:, :2])
            warped1 = self._warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return (warped0 * m + warped1 * (1 - m)).to(dt)


class FastHDv3Runner:
    """What the interpolate stage calls: pad, run `FastHDv3` (from a CUDA graph per batch shape with `graphs`),
    crop. Batches keep their size: RIFE gains from batching pairs (GPU-NOTES), unlike the SR nets."""

    def __init__(self, net: IFNetHDv3, *, parts: tuple[str, ...] = PARTS, max_shapes: int = 2) -> None:
        self.fast = FastHDv3(net, parts=parts)
        self.multiple = net.size_multiple_at
        self._scale = 1.0
        fn: Callable[..., Tensor] = lambda a, b: self.fast(a, b, self._scale)  # noqa: E731
        self._call = GraphedCall(fn, max_shapes=max_shapes) if "graphs" in self.fast.parts else fn

    @torch.inference_mode()
    def interpolate(self, img0: Tensor, img1: Tensor, scale: float = 1.0) -> Tensor:
        _check_scale(scale)
        if scale != self._scale and isinstance(self._call, GraphedCall):
            self._call.release()  # a graph holds the scale it was captured with
        self._scale = scale
        m = self.multiple(scale)
        fmt = torch.channels_last
        x0, pad = pad_to_multiple(img0, m)
        x1, _ = pad_to_multiple(img1, m)
        y = self._call(x0.contiguous(memory_format=fmt), x1.contiguous(memory_format=fmt))
        return pad.crop(y)


def available_parts(device: torch.device) -> tuple[str, ...]:
    """The parts this device runs: all on CUDA with Triton, graphs only on CUDA without it, none elsewhere."""
    if device.type != "cuda":
        return ()
    return PARTS if triton is not None else ("graphs",)


def available_tc_parts(device: torch.device) -> tuple[str, ...]:
    """`TC_PARTS` as this device runs them: on CUDA all (without Triton the epilogue and the warp are torch's:
    no "warp"), none elsewhere."""
    if device.type != "cuda":
        return ()
    return TC_PARTS if triton is not None else ("tc", "graphs")


# ------------------------------------------------------------------------------------------------ the warp
if triton is not None:

    @triton.jit
    def _warp_kernel(
        img_ptr, flow_ptr, out_ptr, H, W,
        sin, sic, sih, siw, sfn, sfc, sfh, sfw, son, soc, soh, sow,
        C: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        n = tl.program_id(1).to(tl.int64)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < H * W
        y = offs // W
        x = offs % W
        fbase = flow_ptr + n * sfn + y * sfh + x * sfw
        fx = tl.load(fbase, mask=ok, other=0.0).to(tl.float32)
        fy = tl.load(fbase + sfc, mask=ok, other=0.0).to(tl.float32)
        # grid_sample(align_corners=True, padding "border"): the sample point clamped to the edge pixels' centres
        sx = tl.minimum(tl.maximum(x.to(tl.float32) + fx, 0.0), (W - 1).to(tl.float32))
        sy = tl.minimum(tl.maximum(y.to(tl.float32) + fy, 0.0), (H - 1).to(tl.float32))
        x0f = tl.floor(sx)
        y0f = tl.floor(sy)
        wx = sx - x0f
        wy = sy - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        x1 = tl.minimum(x0 + 1, W - 1)
        y1 = tl.minimum(y0 + 1, H - 1)
        ibase = img_ptr + n * sin
        obase = out_ptr + n * son + y * soh + x * sow
        for c in tl.static_range(C):
            cb = ibase + c * sic
            v00 = tl.load(cb + y0 * sih + x0 * siw, mask=ok, other=0.0).to(tl.float32)
            v01 = tl.load(cb + y0 * sih + x1 * siw, mask=ok, other=0.0).to(tl.float32)
            v10 = tl.load(cb + y1 * sih + x0 * siw, mask=ok, other=0.0).to(tl.float32)
            v11 = tl.load(cb + y1 * sih + x1 * siw, mask=ok, other=0.0).to(tl.float32)
            top = v00 + (v01 - v00) * wx
            bot = v10 + (v11 - v10) * wx
            v = top + (bot - top) * wy
            tl.store(obase + c * soc, v.to(out_ptr.dtype.element_ty), mask=ok)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """`archs.ifnet.backward_warp` in one pass: `image` (N×C×H×W, any layout and float dtype) sampled at (x +
    flow_x, y + flow_y), bilinear, border-clamped, in fp32 arithmetic; the result has `image`'s dtype and layout."""
    if triton is None:
        raise ModelError("the fused warp needs Triton (it ships with CUDA builds of torch)")
    n, c, h, w = image.shape
    if flow.shape != (n, 2, h, w):
        raise ModelError(f"warp: flow is {tuple(flow.shape)}, expected {(n, 2, h, w)}")
    for t in (image, flow):
        if fused._image_span(t) >= 2**31:
            raise ModelError(f"warp: a {tuple(t.shape)} image is too large for 32-bit offsets")
    out = torch.empty_like(image)
    block = 256
    grid = (triton.cdiv(h * w, block), n)
    _warp_kernel[grid](
        image, flow, out, h, w, *image.stride(), *flow.stride(), *out.stride(), C=c, BLOCK=block
    )  # fmt: skip
    return out
