"""Fused 3×3 convolutions for the SR networks, in Triton (CUDA; Triton's interpreter runs it on CPU for tests).

Why: cuDNN runs the 3×3 64→64 convolutions of these nets at ~190 TFLOP/s on an H100, a quarter of its fp16
matrix peak (GPU-NOTES), and every PReLU/LeakyReLU, residual add, concatenation and pixel shuffle around them is
another pass over memory. One kernel here computes a convolution as an implicit GEMM (output pixels × taps·input
channels × output channels) and applies in its epilogue the bias, the activation, up to two scaled residual adds
and an optional pixel shuffle. Tensors are passed as NCHW views with any strides, so it reads from and writes into
channel slices of larger channels-last buffers (dense blocks need no `torch.cat`), and it can read its input
through a nearest ×2 upsampling without materialising it.

`conv3x3` is the op; `PackedConv` holds one layer's weights in the kernel's layout.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelError
from . import rowconv

try:  # Triton ships with CUDA builds of torch; CPU builds and CI run without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

#: activation codes of the kernel: the same as the Hopper row kernel's, so both take a layer's `act` alike
ACTS = rowconv.ACTS


def available(device: torch.device) -> bool:
    """Whether the fused kernels can run on `device` (CUDA with Triton, or Triton's CPU interpreter)."""
    if triton is None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _interpreting()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    def _configs() -> list[triton.Config]:
        if _interpreting():  # one config: the interpreter is slow and timing it means nothing
            return [triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)]
        # the fastest on an H100 for 64→64 at 1080p (~460 µs, ~330 TFLOP/s; cuDNN: 730 µs without the PReLU)
        return [
            triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=s)
            for bm, w, s in ((128, 4, 3), (128, 8, 3), (64, 4, 3), (128, 4, 2), (256, 8, 2))
        ]

    def _autotune_cache() -> dict[str, bool]:
        # the chosen config kept on disk (Triton ≥ 3.2): a process's start-up then skips timing every config
        # of every layer shape again (RIFE's fast path has 9 shapes: seconds of start-up)
        ok = "cache_results" in inspect.signature(triton.autotune).parameters and not _interpreting()
        return {"cache_results": True} if ok else {}

    @triton.autotune(
        configs=_configs(), key=["HW_BUCKET", "C_IN", "N_PAD", "UP", "SHUFFLE", "BLOCK_K"], **_autotune_cache()
    )
    @triton.jit
    def _conv3x3_kernel(
        x_ptr, w_ptr, b_ptr, s_ptr, r1_ptr, r2_ptr, y_ptr,
        H, W, C_OUT, HW_BUCKET, alpha, beta,
        sxn, sxh, sxw, sxc,
        r1n, r1h, r1w, r1c,
        r2n, r2h, r2w, r2c,
        syn, syh, syw, syc,
        C_IN: tl.constexpr, K_PAD: tl.constexpr, N_PAD: tl.constexpr, BLOCK_K: tl.constexpr,
        UP: tl.constexpr, ACT: tl.constexpr, SLOPE: tl.constexpr, SHUFFLE: tl.constexpr,
        HAS_R1: tl.constexpr, HAS_R2: tl.constexpr, BLOCK_M: tl.constexpr,
    ):  # fmt: skip
        # one image per grid column: its base offset is a scalar in 64 bits, offsets inside it stay in 32 bits
        # (the host checks they fit), which keeps the per-element address arithmetic cheap
        n = tl.program_id(1).to(tl.int64)
        x_ptr += n * sxn
        y_ptr += n * syn
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, N_PAD)
        offs_k = tl.arange(0, BLOCK_K)
        m_ok = offs_m < H * W
        h_ = offs_m // W
        w_ = offs_m % W
        acc = tl.zeros((BLOCK_M, N_PAD), dtype=tl.float32)
        for tap in tl.range(0, 9):
            hh = h_ + (tap // 3 - 1)
            ww = w_ + (tap % 3 - 1)
            ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            # nearest ×UP upsampling of the input: output row hh reads input row hh // UP
            base = (hh // UP) * sxh + (ww // UP) * sxw
            for kc in tl.static_range(K_PAD // BLOCK_K):
                ch = kc * BLOCK_K + offs_k
                a_mask = ok[:, None]
                if C_IN % BLOCK_K != 0:
                    a_mask = a_mask & (ch[None, :] < C_IN)
                a = tl.load(x_ptr + base[:, None] + (ch * sxc)[None, :], mask=a_mask, other=0.0)
                b = tl.load(w_ptr + (tap * K_PAD + ch)[:, None] * N_PAD + offs_n[None, :])
                acc = tl.dot(a, b, acc)

        v = acc + tl.load(b_ptr + offs_n)[None, :]
        if ACT == 1:
            v = tl.where(v >= 0, v, v * tl.load(s_ptr + offs_n)[None, :])
        elif ACT == 2:
            v = tl.where(v >= 0, v, v * SLOPE)
        mask = m_ok[:, None] & (offs_n < C_OUT)[None, :]
        # pixel shuffle: output channel c·r² + i·r + j lands on channel c at (h·r + i, w·r + j)
        c_ = offs_n // (SHUFFLE * SHUFFLE)
        if HAS_R1:  # a residual is indexed on the low-resolution grid (the shuffle's nearest upsampling)
            r = tl.load(r1_ptr + n * r1n + (h_ * r1h + w_ * r1w)[:, None] + (c_ * r1c)[None, :], mask=mask)
            v = v * alpha + r.to(tl.float32)
        if HAS_R2:
            r = tl.load(r2_ptr + n * r2n + (h_ * r2h + w_ * r2w)[:, None] + (c_ * r2c)[None, :], mask=mask)
            v = v * beta + r.to(tl.float32)
        si = (offs_n // SHUFFLE) % SHUFFLE
        sj = offs_n % SHUFFLE
        row = (h_ * SHUFFLE) * syh + (w_ * SHUFFLE) * syw
        col = c_ * syc + si * syh + sj * syw
        tl.store(y_ptr + row[:, None] + col[None, :], v.to(y_ptr.dtype.element_ty), mask=mask)


def _pow2_at_least(n: int, lo: int) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True, slots=True)
class PackedConv:
    """One 3×3 convolution's weights as the kernel reads them: (9·K_PAD, N_PAD) with tap-major rows, zero padded."""

    weight: torch.Tensor
    bias: torch.Tensor
    slope: torch.Tensor | None
    c_in: int
    c_out: int
    block_k: int
    k_pad: int
    n_pad: int
    #: the layer as `rowconv` (the Hopper kernel) reads it, where that kernel can take it
    rows: rowconv.RowWeights | None = None

    @staticmethod
    def of(conv: nn.Conv2d, prelu: nn.PReLU | None = None, *, dtype: torch.dtype) -> PackedConv:
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1:
            raise ModelError(f"fused kernels take 3×3 stride-1 padding-1 convolutions, not {conv}")
        w = conv.weight.detach()
        c_out, c_in = int(w.shape[0]), int(w.shape[1])
        # K chunks of 64 where the channels allow (fewer loop steps), else 32 or 16; N is padded to a power of 2
        block_k = next((b for b in (64, 32) if c_in % b == 0), 16)
        k_pad = -(-c_in // block_k) * block_k
        n_pad = _pow2_at_least(c_out, 16)
        packed = torch.zeros(9, k_pad, n_pad, dtype=torch.float32, device=w.device)
        packed[:, :c_in, :c_out] = w.float().permute(2, 3, 1, 0).reshape(9, c_in, c_out)
        bias = torch.zeros(n_pad, dtype=torch.float32, device=w.device)
        if conv.bias is not None:
            bias[:c_out] = conv.bias.detach().float()
        slope = None
        if prelu is not None:
            s = prelu.weight.detach().float()
            slope = torch.zeros(n_pad, dtype=torch.float32, device=w.device)
            slope[:c_out] = s if s.numel() == c_out else s.expand(c_out)
        weight = packed.reshape(9 * k_pad, n_pad).to(dtype).contiguous()
        return PackedConv(
            weight=weight,
            bias=bias,
            slope=slope,
            c_in=c_in,
            c_out=c_out,
            block_k=block_k,
            k_pad=k_pad,
            n_pad=n_pad,
            rows=rowconv.RowWeights.of(weight, bias, slope, c_out, k_pad, n_pad),
        )


def _strides(t: torch.Tensor | None) -> tuple[int, int, int, int]:
    """An NCHW view's strides in the kernel's argument order: n, h, w, c."""
    if t is None:
        return (0, 0, 0, 0)
    sn, sc, sh, sw = (int(s) for s in t.stride())
    return (sn, sh, sw, sc)


def _image_span(t: torch.Tensor) -> int:
    """Elements between an image's first and last element (the kernel's 32-bit offsets must hold it)."""
    return sum((size - 1) * stride for size, stride in zip(t.shape[1:], t.stride()[1:], strict=True)) + 1


def conv3x3(
    x: torch.Tensor,
    p: PackedConv,
    out: torch.Tensor,
    *,
    act: str | None = None,
    slope: float = 0.2,
    up: int = 1,
    shuffle: int = 1,
    res1: torch.Tensor | None = None,
    alpha: float = 1.0,
    res2: torch.Tensor | None = None,
    beta: float = 1.0,
) -> torch.Tensor:
    """`out = ((act(conv(upsample(x))) · alpha + res1) · beta + res2)`, pixel-shuffled by `shuffle`, written into
    `out` (any strides, e.g. a channel slice of a bigger buffer). `x` is (N, c_in, H/up, W/up); residuals are
    (N, c, H, W) on the convolution's grid, indexed like its output channels after the shuffle; `out` is
    (N, c_out / shuffle², H·shuffle, W·shuffle). `act`: None, "prelu" (`p.slope` per channel) or "leaky"."""
    if triton is None:
        raise ModelError("the fused kernels need Triton (it ships with CUDA builds of torch)")
    n, c, hi, wi = x.shape
    h, w = hi * up, wi * up
    if c != p.c_in:
        raise ModelError(f"fused conv: input has {c} channels, the weights take {p.c_in}")
    want = (n, p.c_out // (shuffle * shuffle), h * shuffle, w * shuffle)
    if tuple(out.shape) != want:
        raise ModelError(f"fused conv: output is {tuple(out.shape)}, expected {want}")
    for name, r in (("res1", res1), ("res2", res2)):
        if r is not None and tuple(r.shape) != (n, want[1], h, w):
            raise ModelError(f"fused conv: {name} is {tuple(r.shape)}, expected {(n, want[1], h, w)}")
    if act == "prelu" and p.slope is None:
        raise ModelError("fused conv: PReLU asked but the layer was packed without its slopes")
    for t in (x, out, res1, res2):
        if t is not None and _image_span(t) >= 2**31:
            raise ModelError(f"fused conv: a {tuple(t.shape)} image is too large for 32-bit offsets; tile it")
    try:  # the Hopper kernel, where it covers the layer
        if rowconv.try_layer(x, p.rows, out, c_in=p.c_in, c_out=p.c_out, act=act, slope=slope, up=up,
                             shuffle=shuffle, res1=res1, alpha=alpha, res2=res2):  # fmt: skip
            return out
    except rowconv.KernelBuildError as e:  # a Gluon that no longer builds it: the Triton kernel below
        rowconv.disable(str(e))
    dummy = out  # unused pointer arguments still need a tensor
    grid = lambda meta: (triton.cdiv(h * w, meta["BLOCK_M"]), n)  # noqa: E731
    _conv3x3_kernel[grid](
        x, p.weight, p.bias, p.slope if p.slope is not None else p.bias,
        res1 if res1 is not None else dummy, res2 if res2 is not None else dummy, out,
        h, w, p.c_out, _pow2_at_least(h * w, 1 << 14), float(alpha), float(beta),
        *_strides(x), *_strides(res1), *_strides(res2), *_strides(out),
        C_IN=p.c_in, K_PAD=p.k_pad, N_PAD=p.n_pad, BLOCK_K=p.block_k,
        UP=up, ACT=ACTS[act], SLOPE=float(slope), SHUFFLE=shuffle,
        HAS_R1=res1 is not None, HAS_R2=res2 is not None,
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------ networks
def _empty(n: int, c: int, h: int, w: int, like: torch.Tensor, *, channels_last: bool = True) -> torch.Tensor:
    # allocated in its layout: `.contiguous(channels_last)` of a fresh NCHW tensor would copy it (a 4K 64-channel
    # buffer: ~0.85 ms of the H100's time for nothing)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(n, c, h, w, device=like.device, dtype=like.dtype, memory_format=fmt)


class FusedSRVGG(nn.Module):
    """SRVGGNetCompact through `conv3x3`: every convolution with its PReLU in one kernel, and the last one also
    doing the pixel shuffle and the nearest-upsampled input's add (the net's whole tail). Same outputs as the
    module it was built from, within fp16 rounding."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        layers = list(net.body)  # type: ignore[arg-type]
        convs = layers[0::2]
        acts = layers[1::2]
        self.scale = int(net.scale)  # type: ignore[arg-type]
        self.packed = [PackedConv.of(c, a, dtype=dtype) for c, a in zip(convs[:-1], acts, strict=True)]
        self.last = PackedConv.of(convs[-1], dtype=dtype)
        #: layout of the output: planar by default, since 3-channel channels-last stores are scattered while planar
        #: ones are runs along a row (the 8K output of a 1080p frame: 592 µs planar, 764 µs channels-last)
        self.channels_last_out = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        cur = x
        bufs = [_empty(n, self.packed[0].c_out, h, w, x) for _ in range(2)]
        for i, p in enumerate(self.packed):
            cur = conv3x3(cur, p, bufs[i % 2], act="prelu")
        s = self.scale
        out = _empty(n, c, h * s, w * s, x, channels_last=self.channels_last_out)
        return conv3x3(cur, self.last, out, shuffle=s, res1=x)


@dataclass(frozen=True, slots=True)
class DenseCut:
    """A dense block's five convolutions (64 features, growth 32) re-cut for the Hopper row kernel, which holds
    64 outputs × 64 (or 32) inputs of weights in registers: at 540p on the H100 a block takes ~0.73 ms this way,
    1.14 ms as five Triton layers (docs/benchmarks.md).

    The block is computed by input chunk rather than by layer: X0 = the block input x (64 channels), then the
    growth channels x1..x4. `l1l2` takes X0 to layer 1's outputs (finished: bias, activation, they are x1) and
    layer 2's part from X0 (a partial sum, stored where x2 will go); `l3l4` and `l5` take X0 to the partial sums
    of layers 3–4 (stored where x3, x4 will go) and of layer 5 (stored in the block's output), `l5` with x/0.2
    added through an identity centre tap, so the block's residual costs nothing. `x1_l2` finishes x2 from x1
    (its other 32 rows are zero: they pass the partial of layer 3 through unchanged); `x12_l3l4` finishes x3
    and adds x1,x2's part to layer 4's partial; `x12_l5` adds it to layer 5's; `x3_l4` finishes x4; `x34_l5`
    finishes the block. Partial sums are stored in the compute dtype (fp16/bf16) between calls."""

    l1l2: rowconv.RowWeights
    l3l4: rowconv.RowWeights
    l5: rowconv.RowWeights
    x1_l2: rowconv.RowWeights
    x12_l3l4: rowconv.RowWeights
    x12_l5: rowconv.RowWeights
    x3_l4: rowconv.RowWeights
    x34_l5: rowconv.RowWeights

    @staticmethod
    def of(convs: list[nn.Conv2d], residual_scale: float, dtype: torch.dtype) -> DenseCut:
        w = [c.weight.detach().float() for c in convs]
        b = [
            c.bias.detach().float() if c.bias is not None else torch.zeros(c.out_channels, device=c.weight.device)
            for c in convs
        ]
        zw = torch.zeros_like(w[0][:, :32])  # 32 outputs × 32 inputs of zeros
        zb = torch.zeros_like(b[0])
        ident = torch.zeros_like(w[4][:, :64])
        ident[:, :, 1, 1] = torch.eye(64, device=ident.device) / residual_scale

        def rw(weight: torch.Tensor, bias: torch.Tensor) -> rowconv.RowWeights:
            return rowconv.RowWeights.of_taps(weight, bias, dtype)

        cat = torch.cat
        return DenseCut(
            l1l2=rw(cat([w[0], w[1][:, :64]]), cat([b[0], zb])),
            l3l4=rw(cat([w[2][:, :64], w[3][:, :64]]), cat([zb, zb])),
            l5=rw(w[4][:, :64] + ident, torch.zeros_like(b[4])),
            x1_l2=rw(cat([w[1][:, 64:96], zw]), cat([b[1], zb])),
            x12_l3l4=rw(cat([w[2][:, 64:128], w[3][:, 64:128]]), cat([b[2], zb])),
            x12_l5=rw(w[4][:, 64:128], torch.zeros_like(b[4])),
            x3_l4=rw(cat([w[3][:, 128:160], zw]), cat([b[3], zb])),
            x34_l5=rw(w[4][:, 128:192], b[4]),
        )

    def run(self, d: torch.Tensor, out: torch.Tensor, res2: torch.Tensor | None, rs: float, slope: float) -> None:
        """The block on buffer `d` (N, 224, H, W): x in channels 0–63, growth after it, 192–223 scratch (the
        pass-through rows of `x3_l4`); its output into `out` (N, 64, H, W), plus `res2` after a second scaling."""
        conv = rowconv.conv3x3_rows
        leaky = {"act": "leaky", "slope": slope, "act_rows": 32}
        conv(d[:, :64], self.l1l2, d[:, 64:128], **leaky)
        conv(d[:, :64], self.l3l4, d[:, 128:192], act=None)
        conv(d[:, :64], self.l5, out, act=None)
        conv(d[:, 64:96], self.x1_l2, d[:, 96:160], accumulate=True, **leaky)
        conv(d[:, 64:128], self.x12_l3l4, d[:, 128:192], accumulate=True, **leaky)
        conv(d[:, 64:128], self.x12_l5, out, act=None, accumulate=True)
        conv(d[:, 128:160], self.x3_l4, d[:, 160:224], accumulate=True, **leaky)
        # (conv + b + x/rs)·rs = the block's residual; at a group's end, ·rs again plus the group's input
        conv(d[:, 128:192], self.x34_l5, out, act=None, accumulate=True, alpha=rs if res2 is None else rs * rs,
             res=res2)  # fmt: skip


class FusedRRDB(nn.Module):
    """RRDBNet (×4 layout) through `conv3x3`. Each dense block lives in one channels-last buffer: every
    convolution reads the prefix it needs and writes its growth channels in place (no concatenation); the block's
    0.2-scaled residual, and at a block group's end the group's residual too, are in the last convolution's
    epilogue; the two nearest ×2 upsamplings happen inside the loads of the convolution after them. On Hopper the
    dense blocks run as `DenseCut`s through the row kernel instead."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        from .archs.rrdb import LRELU_SLOPE, RESIDUAL_SCALE

        self.unshuffle = int(net.unshuffle)  # type: ignore[arg-type]
        self.feat = int(net.num_feat)  # type: ignore[arg-type]
        self.grow = int(net.num_grow_ch)  # type: ignore[arg-type]
        self.slope, self.rs = LRELU_SLOPE, RESIDUAL_SCALE
        self.dtype = dtype
        pk = lambda conv: PackedConv.of(conv, dtype=dtype)  # noqa: E731
        self.first = pk(net.conv_first)
        # the dense blocks' convolutions, packed on first use for the trunk that runs (a device runs one of the
        # two, so packing both would hold every trunk weight twice)
        self._convs: list[list[list[nn.Conv2d]]] = [
            [[getattr(rdb, f"conv{k}") for k in range(1, 6)] for rdb in (b.rdb1, b.rdb2, b.rdb3)]
            for b in net.body  # type: ignore[attr-defined]
        ]
        self._blocks: list[list[list[PackedConv]]] | None = None
        self._cuts: list[list[DenseCut]] | None = None
        self.cuttable = self.feat == 64 and self.grow == 32
        self.body = pk(net.conv_body)
        self.up1, self.up2, self.hr, self.last = (pk(net.conv_up1), pk(net.conv_up2), pk(net.conv_hr),
                                                  pk(net.conv_last))  # fmt: skip
        self.channels_last_out = False  # as FusedSRVGG's

    def _rdb(self, d: torch.Tensor, convs: list[PackedConv], out: torch.Tensor, res2: torch.Tensor | None) -> None:
        f, g = self.feat, self.grow
        for k, p in enumerate(convs[:4]):
            conv3x3(d[:, : f + k * g], p, d[:, f + k * g : f + (k + 1) * g], act="leaky", slope=self.slope)
        conv3x3(d, convs[4], out, res1=d[:, :f], alpha=self.rs, res2=res2, beta=self.rs)

    def _packed_blocks(self) -> list[list[list[PackedConv]]]:
        if self._blocks is None:
            self._blocks = [[[PackedConv.of(c, dtype=self.dtype) for c in rdb] for rdb in g] for g in self._convs]
        return self._blocks

    def _dense_cuts(self) -> list[list[DenseCut]]:
        if self._cuts is None:
            self._cuts = [[DenseCut.of(rdb, self.rs, self.dtype) for rdb in g] for g in self._convs]
        return self._cuts

    def _trunk(self, feat0: torch.Tensor, rows: bool) -> torch.Tensor:
        """The 3·B dense blocks; their output (a view of one of the three buffers)."""
        n, f, h, w = feat0.shape
        # DenseCut's buffers: 32 scratch channels past the block, kept finite (its pass-through rows read them)
        chans = f + 4 * self.grow + (32 if rows else 0)
        a, b, c = (_empty(n, chans, h, w, feat0) for _ in range(3))
        a[:, :f].copy_(feat0)
        if rows:
            for t in (a, b, c):
                t[:, f + 4 * self.grow :].zero_()
            for cuts in self._dense_cuts():
                cuts[0].run(a, b[:, :f], None, self.rs, self.slope)
                cuts[1].run(b, c[:, :f], None, self.rs, self.slope)
                cuts[2].run(c, b[:, :f], a[:, :f], self.rs, self.slope)
                a, b, c = b, c, a
        else:
            for rdbs in self._packed_blocks():
                self._rdb(a, rdbs[0], b[:, :f], None)
                self._rdb(b, rdbs[1], c[:, :f], None)
                # the group's residual (× 0.2 + its input) rides on the third block's epilogue
                self._rdb(c, rdbs[2], b[:, :f], a[:, :f])
                a, b, c = b, c, a
        return a[:, :f]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = nn.functional.pixel_unshuffle(x, self.unshuffle).contiguous(memory_format=torch.channels_last)
        n, _c, h, w = x.shape
        f = self.feat
        feat0 = conv3x3(x, self.first, _empty(n, f, h, w, x))
        trunk = None
        if self.cuttable and rowconv.serves(x):
            try:
                trunk = self._trunk(feat0, rows=True)
            except rowconv.KernelBuildError as e:  # a Gluon that no longer builds it: the whole trunk again
                rowconv.disable(str(e))
        if trunk is None:
            trunk = self._trunk(feat0, rows=False)
        body = conv3x3(trunk, self.body, _empty(n, f, h, w, x), res1=feat0)
        up1 = conv3x3(body, self.up1, _empty(n, f, 2 * h, 2 * w, x), up=2, act="leaky", slope=self.slope)
        up2 = conv3x3(up1, self.up2, _empty(n, f, 4 * h, 4 * w, x), up=2, act="leaky", slope=self.slope)
        hr = conv3x3(up2, self.hr, _empty(n, f, 4 * h, 4 * w, x), act="leaky", slope=self.slope)
        out = _empty(n, self.last.c_out, 4 * h, 4 * w, x, channels_last=self.channels_last_out)
        return conv3x3(hr, self.last, out)


def fuse(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The fused twin of a loaded SR network (SRVGGNetCompact or RRDBNet), for `dtype` fp16/bf16 on CUDA."""
    from .archs.rrdb import RRDBNet
    from .archs.srvgg import SRVGGNetCompact

    if isinstance(net, SRVGGNetCompact):
        return FusedSRVGG(net, dtype)
    if isinstance(net, RRDBNet):
        return FusedRRDB(net, dtype)
    raise ModelError(f"no fused kernels for {type(net).__name__}; they cover SRVGGNetCompact and RRDBNet")
