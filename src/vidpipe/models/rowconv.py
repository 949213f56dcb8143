"""A Hopper-only 3×3 convolution, 64 → 64 channels, in Gluon (Triton's explicit-layout dialect): the layer that
makes up 16 of SRVGGNetCompact's 18 convolutions and RRDBNet's 4K-resolution HR convolution.

Why a second kernel beside `fused._conv3x3_kernel`: that implicit GEMM peaks at ~330 TFLOP/s on an H100 (446 µs
for a 1080p layer). Its pixels are the MMA's M and its 64 output channels the N, so every MMA reads both operands
from shared memory at the SM's full shared-memory bandwidth; and each input pixel is loaded nine times (once per
tap), 3.5 GB a layer from L2. Here:

- the output channels are the MMA's M and a 64-pixel strip of one image row its N; the nine weight taps live in
  registers for the whole kernel (A operand of `wgmma`), so shared memory feeds only B, at half the rate;
- a CTA sweeps its strip down the image. Each input row is loaded once by TMA, as three boxes shifted by
  -1/0/+1 pixel (zero filled past the edges by the TMA unit), into a ring of R rows; output row y takes its
  dy taps from ring rows y-1, y, y+1. Three loads per input pixel instead of nine;
- two CTAs share an SM (≈112 KB of shared memory and 203 registers a thread each), so one's epilogue (bias,
  activation, TMA store) runs under the other's MMAs.

The H100 figure: ~250 µs for that 1080p layer (≈610 TFLOP/s, the Triton kernel 473 µs), same outputs within
fp16 rounding (docs/benchmarks.md). `wgmma` exists only on sm_90: other GPUs keep the Triton kernel (`usable`).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

try:  # Gluon ships inside Triton ≥ 3.4; CPU builds of torch come without Triton
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the install
    gluon = None  # type: ignore[assignment]

#: channels in and out (the kernel keeps all 64×64×9 weights in registers)
C = 64
#: pixels per strip: the MMA's N
BW = 64
#: input rows in a CTA's ring: the three an output row reads plus one being loaded
RING = 4
#: CTAs an SM holds at once (shared memory and registers allow two)
CTAS_PER_SM = 2
ACTS = {None: 0, "prelu": 1, "leaky": 2}

_disabled_reason: str | None = None if os.environ.get("VIDPIPE_ROWCONV", "1") != "0" else "VIDPIPE_ROWCONV=0"

if gluon is not None:
    # Gluon renamed its TMA copies after Triton 3.6 (async_copy_* → async_load / async_store)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

    @gluon.jit
    def _load_row(r, rows_in, base, n, y0, x0, in_desc, bufs, ready, R: gl.constexpr):
        """TMA input row y0-1+r of the strip at x0 (three boxes, shifted by dx-1 pixels) into its ring slot."""
        ok = r < rows_in
        slot = (base + r) % R
        bar = ready.index(slot)
        mbarrier.expect(bar, 3 * in_desc.block_type.nbytes, pred=ok)
        for dx in gl.static_range(3):
            _tma_load(in_desc, [n, y0 - 1 + r, x0 + dx - 1, 0], bar, bufs.index(slot * 3 + dx), ok)

    @gluon.jit
    def _tap(w_ptr, t: gl.constexpr, CH: gl.constexpr, ld: gl.constexpr, dot_a: gl.constexpr):
        """Weight tap t, (out, in) channels, as the MMA's register A operand."""
        rows = gl.arange(0, CH, layout=gl.SliceLayout(1, ld))
        cols = gl.arange(0, CH, layout=gl.SliceLayout(0, ld))
        w = gl.load(w_ptr + gl.expand_dims(t * CH + rows, 1) * CH + gl.expand_dims(cols, 0))
        return gl.convert_layout(w, dot_a)

    @gluon.jit
    def _b(bufs, slot, dx: gl.constexpr, BWC: gl.constexpr, CH: gl.constexpr):
        """Ring box (slot, dx) as the MMA's B operand: (in channels, pixels)."""
        return bufs.index(slot * 3 + dx).reshape([BWC, CH]).permute((1, 0))

    @gluon.jit
    def _rowconv_kernel(
        in_desc, out_desc, w_ptr, bias_ptr, slope_ptr, n_strips, per_img, n_units, U,
        ACT: gl.constexpr, SLOPE: gl.constexpr, R: gl.constexpr, num_warps: gl.constexpr,
    ):  # fmt: skip
        BWC: gl.constexpr = in_desc.block_type.shape[2]
        CH: gl.constexpr = in_desc.block_type.shape[3]
        mma: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BWC, 16]
        )
        dot_a: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
        ld: gl.constexpr = gl.BlockedLayout(
            size_per_thread=[1, 8], threads_per_warp=[4, 8], warps_per_cta=[num_warps, 1], order=[1, 0]
        )
        vec: gl.constexpr = gl.SliceLayout(1, mma)

        pid = gl.program_id(0)
        nprog = gl.num_programs(0)
        my_units = (n_units - pid + nprog - 1) // nprog

        # ring slot s holds input row boxes 3s..3s+2 (dx = 0, 1, 2)
        bufs = gl.allocate_shared_memory(in_desc.dtype, [3 * R, 1, 1, BWC, CH], in_desc.layout)
        out_smem = gl.allocate_shared_memory(out_desc.dtype, [1, 1, BWC, CH], out_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [R, 1], mbarrier.MBarrierLayout())
        for j in gl.static_range(R):
            mbarrier.init(ready.index(j), count=1)

        w0 = _tap(w_ptr, 0, CH, ld, dot_a)
        w1 = _tap(w_ptr, 1, CH, ld, dot_a)
        w2 = _tap(w_ptr, 2, CH, ld, dot_a)
        w3 = _tap(w_ptr, 3, CH, ld, dot_a)
        w4 = _tap(w_ptr, 4, CH, ld, dot_a)
        w5 = _tap(w_ptr, 5, CH, ld, dot_a)
        w6 = _tap(w_ptr, 6, CH, ld, dot_a)
        w7 = _tap(w_ptr, 7, CH, ld, dot_a)
        w8 = _tap(w_ptr, 8, CH, ld, dot_a)
        offs_c = gl.arange(0, CH, layout=vec)
        bias = gl.expand_dims(gl.load(bias_ptr + offs_c), 1)
        slope = gl.expand_dims(gl.load(slope_ptr + offs_c), 1)
        out_view = out_smem.reshape([BWC, CH]).permute((1, 0))

        rows_in = U + 2
        acc = gl.zeros([CH, BWC], gl.float32, layout=mma)
        for k in range(my_units):
            unit = pid + k * nprog
            n = unit // per_img
            rem = unit % per_img
            y0 = (rem // n_strips) * U
            x0 = (rem % n_strips) * BWC
            base = k * rows_in  # input rows this CTA loaded before this unit: ring slots and phases follow it
            for r in gl.static_range(R):
                _load_row(r, rows_in, base, n, y0, x0, in_desc, bufs, ready, R)
            for i in range(U):
                s0 = (base + i) % R
                s1 = (base + i + 1) % R
                s2 = (base + i + 2) % R
                mbarrier.wait(ready.index(s0), ((base + i) // R) & 1)
                mbarrier.wait(ready.index(s1), ((base + i + 1) // R) & 1)
                mbarrier.wait(ready.index(s2), ((base + i + 2) // R) & 1)
                acc = warpgroup_mma(w0, _b(bufs, s0, 0, BWC, CH), acc, use_acc=False, is_async=True)
                acc = warpgroup_mma(w1, _b(bufs, s0, 1, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w2, _b(bufs, s0, 2, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w3, _b(bufs, s1, 0, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w4, _b(bufs, s1, 1, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w5, _b(bufs, s1, 2, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w6, _b(bufs, s2, 0, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w7, _b(bufs, s2, 1, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma(w8, _b(bufs, s2, 2, BWC, CH), acc, is_async=True)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                # input row i is no longer needed: its slot takes row i + R
                _load_row(i + R, rows_in, base, n, y0, x0, in_desc, bufs, ready, R)
                v = acc + bias
                if ACT == 1:
                    v = gl.where(v >= 0, v, v * slope)
                elif ACT == 2:
                    v = gl.where(v >= 0, v, v * SLOPE)
                tma.store_wait(pendings=0)  # the previous row's store has left out_smem
                out_view.store(v.to(out_desc.dtype))
                fence_async_shared()
                # rows past the image bottom (a unit's tail) are clipped by the TMA unit
                _tma_store(out_desc, [n, y0 + i, x0, 0], out_smem)
        tma.store_wait(pendings=0)
        for j in gl.static_range(R):
            mbarrier.invalidate(ready.index(j))


def _nhwc_ok(t: torch.Tensor) -> bool:
    """What a TMA descriptor takes: channels innermost and dense, 16-byte aligned base and strides."""
    if t.stride(1) != 1 or t.shape[1] != C or t.data_ptr() % 16:
        return False
    return all(t.stride(d) * t.element_size() % 16 == 0 for d in (0, 2, 3))


def usable(x: torch.Tensor, out: torch.Tensor, c_in: int, c_out: int, act: str | None) -> bool:
    """Whether `conv3x3_rows` takes this layer: Hopper, fp16/bf16, 64 → 64, NHWC-dense input and output."""
    if gluon is None or _disabled_reason is not None or not x.is_cuda or c_in != C or c_out != C:
        return False
    if act not in ACTS or x.dtype not in (torch.float16, torch.bfloat16) or out.dtype != x.dtype:
        return False
    if torch.cuda.get_device_capability(x.device)[0] != 9:
        return False
    return x.dim() == out.dim() == 4 and _nhwc_ok(x) and _nhwc_ok(out)


def rows_per_unit(n: int, h: int, w: int, slots: int) -> int:
    """Rows a CTA sweeps per unit of work: as many units as the GPU holds CTAs at once, so every CTA gets one and
    all finish together; never under 8 rows (each unit loads two halo rows). On the H100 this choice is within 2%
    of the best of 8–128 rows at 540p, 720p, 1080p, 2160p and 4×1080p (docs/benchmarks.md)."""
    strips = -(-w // BW)
    chunks = max(1, slots // max(1, n * strips))
    return max(8, -(-h // chunks))


def weight_rows(weight: torch.Tensor) -> torch.Tensor:
    """`PackedConv.weight` (9·64 tap-major rows of (in, out)) as the kernel reads it: 9·64 rows of (out, in)."""
    return weight.reshape(9, C, C).transpose(1, 2).reshape(9 * C, C).contiguous()


def conv3x3_rows(
    x: torch.Tensor,
    w_rows: torch.Tensor,
    bias: torch.Tensor,
    slope_vec: torch.Tensor | None,
    out: torch.Tensor,
    *,
    act: str | None,
    slope: float = 0.2,
    rows: int | None = None,
) -> torch.Tensor:
    """`out = act(conv3x3(x) + bias)` for NCHW views with NHWC-dense memory (check `usable` first).
    `w_rows`: `weight_rows(...)`; `slope_vec`: per-channel PReLU slopes (fp32), `slope`: the LeakyReLU one."""
    n, _c, h, w = x.shape
    layout = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8 * x.element_size(), rank=4)
    in_desc = TensorDescriptor.from_tensor(x.permute(0, 2, 3, 1), [1, 1, BW, C], layout)
    out_desc = TensorDescriptor.from_tensor(out.permute(0, 2, 3, 1), [1, 1, BW, C], layout)
    slots = CTAS_PER_SM * torch.cuda.get_device_properties(x.device).multi_processor_count
    u = rows if rows is not None else rows_per_unit(n, h, w, slots)
    strips = triton.cdiv(w, BW)
    per_img = triton.cdiv(h, u) * strips
    units = n * per_img
    _rowconv_kernel[(min(slots, units),)](
        in_desc, out_desc, w_rows, bias, slope_vec if slope_vec is not None else bias,
        strips, per_img, units, u,
        ACT=ACTS[act], SLOPE=float(slope), R=RING, num_warps=4,
    )  # fmt: skip
    return out


def disable(reason: str) -> None:
    """Stop using the kernel for the rest of the process (a Triton whose Gluon no longer builds it)."""
    global _disabled_reason
    if _disabled_reason is None:
        log.warning("row-sweep convolution kernel off, the Triton kernel takes its layers: %s", reason)
    _disabled_reason = reason
