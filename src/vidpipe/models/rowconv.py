"""A Hopper-only 3×3 convolution into 64 channels, in Gluon (Triton's explicit-layout dialect): the 64 → 64 layer
that makes up 16 of SRVGGNetCompact's 18 convolutions and RRDBNet's 4K-resolution HR convolution; with the input
padded to 16 channels, both nets' RGB first layer; with a pixel-shuffle epilogue, SRVGG's tail (64 → 3·s² plus
the upsampled input); with an epilogue that adds a stored partial sum, activates some rows and adds a scaled
residual, RRDBNet's dense blocks, cut into 64-output pieces by `fused.DenseCut`.

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

The H100 figure: ~240 µs for a 1080p 64 → 64 layer (≈630 TFLOP/s, the Triton kernel 473 µs), same outputs
within fp16 rounding (docs/benchmarks.md). `wgmma` exists only on sm_90: other GPUs keep the Triton kernel (`usable`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

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

    # Gluon renamed its TMA copies after Triton 3.6 (async_copy_* → async_load / async_store)
    _tma_load = getattr(tma, "async_load", None) or getattr(tma, "async_copy_global_to_shared", None)
    _tma_store = getattr(tma, "async_store", None) or getattr(tma, "async_copy_shared_to_global", None)
    if _tma_load is None or _tma_store is None:  # pragma: no cover - a Gluon renamed again
        raise ImportError("this Gluon's TMA copies have names the row kernel does not know")
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
#: activation codes of both this kernel and `fused`'s Triton kernel (its `ACTS`)
ACTS = {None: 0, "prelu": 1, "leaky": 2}

_disabled_reason: str | None = None if os.environ.get("VIDPIPE_ROWCONV", "1") != "0" else "VIDPIPE_ROWCONV=0"


class KernelBuildError(Exception):
    """The kernel could not be built or launched here (the installed Triton's Gluon moved, or the GPU lacks the
    resources): the caller falls back to the Triton kernel. Errors while it runs are not this: they surface on
    synchronisation like any CUDA error."""


if gluon is not None:

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
    def _tap(w_ptr, t: gl.constexpr, M: gl.constexpr, K: gl.constexpr, ld: gl.constexpr, dot_a: gl.constexpr):
        """Weight tap t, (out, in) channels, as the MMA's register A operand."""
        rows = gl.arange(0, M, layout=gl.SliceLayout(1, ld))
        cols = gl.arange(0, K, layout=gl.SliceLayout(0, ld))
        w = gl.load(w_ptr + gl.expand_dims(t * M + rows, 1) * K + gl.expand_dims(cols, 0))
        return gl.convert_layout(w, dot_a)

    @gluon.jit
    def _b(bufs, slot, dx: gl.constexpr, BWC: gl.constexpr, K: gl.constexpr):
        """Ring box (slot, dx) as the MMA's B operand: (in channels, pixels)."""
        return bufs.index(slot * 3 + dx).reshape([BWC, K]).permute((1, 0))

    @gluon.jit
    def _rowconv_kernel(
        in_desc, out_desc, w_ptr, bias_ptr, slope_ptr, n_strips, per_img, n_units, U,
        out_ptr, res_ptr, H, W, son, soc, soh, sow, srn, src, srh, srw, alpha,
        ACT: gl.constexpr, SLOPE: gl.constexpr, R: gl.constexpr, SHUFFLE: gl.constexpr, C_REAL: gl.constexpr,
        ACC: gl.constexpr, ACT_ROWS: gl.constexpr, HAS_RES: gl.constexpr, num_warps: gl.constexpr,
    ):  # fmt: skip
        """SHUFFLE == 0: `out_desc` (NHWC, 64 channels; `out_ptr` the same tensor) gets, by TMA,
        `act(conv + bias [+ out's own values if ACC]) · alpha [+ res if HAS_RES]`, the activation on output
        channels below ACT_ROWS only. SHUFFLE == s ≥ 1: the first C_REAL = 3·s² channels, pixel-shuffled by s,
        plus `res` (N, 3, H, W) upsampled ×s nearest, are stored to `out_ptr` (N, 3, sH, sW) with any strides:
        SRVGGNetCompact's tail in one pass."""
        BWC: gl.constexpr = in_desc.block_type.shape[2]
        K: gl.constexpr = in_desc.block_type.shape[3]
        M: gl.constexpr = 64
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
        bufs = gl.allocate_shared_memory(in_desc.dtype, [3 * R, 1, 1, BWC, K], in_desc.layout)
        if SHUFFLE == 0:
            out_smem = gl.allocate_shared_memory(out_desc.dtype, [1, 1, BWC, M], out_desc.layout)
            out_view = out_smem.reshape([BWC, M]).permute((1, 0))
        ready = gl.allocate_shared_memory(gl.int64, [R, 1], mbarrier.MBarrierLayout())
        for j in gl.static_range(R):
            mbarrier.init(ready.index(j), count=1)

        w0 = _tap(w_ptr, 0, M, K, ld, dot_a)
        w1 = _tap(w_ptr, 1, M, K, ld, dot_a)
        w2 = _tap(w_ptr, 2, M, K, ld, dot_a)
        w3 = _tap(w_ptr, 3, M, K, ld, dot_a)
        w4 = _tap(w_ptr, 4, M, K, ld, dot_a)
        w5 = _tap(w_ptr, 5, M, K, ld, dot_a)
        w6 = _tap(w_ptr, 6, M, K, ld, dot_a)
        w7 = _tap(w_ptr, 7, M, K, ld, dot_a)
        w8 = _tap(w_ptr, 8, M, K, ld, dot_a)
        offs_c = gl.arange(0, M, layout=vec)
        ch2 = gl.expand_dims(offs_c, 1)
        # the epilogue's extra inputs (partial sums, residuals) are loaded 8 channels (16 bytes) a thread, then
        # moved to the accumulator's layout through shared memory: loaded in that layout directly, each element is
        # a 2-byte load with a 64-bit address of its own, and the registers spill
        ldv: gl.constexpr = gl.BlockedLayout(
            size_per_thread=[8, 1], threads_per_warp=[8, 4], warps_per_cta=[1, num_warps], order=[0, 1]
        )
        ch_v = gl.expand_dims(gl.arange(0, M, layout=gl.SliceLayout(1, ldv)), 1)
        px_v = gl.expand_dims(gl.arange(0, BWC, layout=gl.SliceLayout(0, ldv)), 0)
        bias = gl.expand_dims(gl.load(bias_ptr + offs_c), 1)
        slope = gl.expand_dims(gl.load(slope_ptr + offs_c), 1)
        if SHUFFLE > 0:
            # output channel c = oc·s² + i·s + j lands on plane oc at (s·y + i, s·x + j). The store layout gives
            # each thread the s channels j of one pixel and a warp 32 neighbouring pixels: one contiguous run of
            # an output row (the MMA layout would scatter 2-byte stores)
            SPT: gl.constexpr = SHUFFLE if SHUFFLE == 2 or SHUFFLE == 4 else 1
            st: gl.constexpr = gl.BlockedLayout(
                size_per_thread=[SPT, 1], threads_per_warp=[1, 32], warps_per_cta=[num_warps, 1], order=[0, 1]
            )
            offs_s = gl.arange(0, M, layout=gl.SliceLayout(1, st))
            c_ok = gl.expand_dims(offs_s < C_REAL, 1)
            oc = gl.expand_dims(offs_s // (SHUFFLE * SHUFFLE), 1)
            si = gl.expand_dims((offs_s // SHUFFLE) % SHUFFLE, 1)
            sj = gl.expand_dims(offs_s % SHUFFLE, 1)
            offs_x = gl.arange(0, BWC, layout=gl.SliceLayout(0, st))

        rows_in = U + 2
        acc = gl.zeros([M, BWC], gl.float32, layout=mma)
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
                acc = warpgroup_mma(w0, _b(bufs, s0, 0, BWC, K), acc, use_acc=False, is_async=True)
                acc = warpgroup_mma(w1, _b(bufs, s0, 1, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w2, _b(bufs, s0, 2, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w3, _b(bufs, s1, 0, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w4, _b(bufs, s1, 1, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w5, _b(bufs, s1, 2, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w6, _b(bufs, s2, 0, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w7, _b(bufs, s2, 1, BWC, K), acc, is_async=True)
                acc = warpgroup_mma(w8, _b(bufs, s2, 2, BWC, K), acc, is_async=True)
                if SHUFFLE == 0 and (ACC or HAS_RES):
                    y = y0 + i
                    px = x0 + px_v
                    ok = (px < W) & (y < H) & (ch_v >= 0)
                    n64 = n.to(gl.int64)
                    if ACC:  # the partial sum, loaded while the MMAs run
                        prev = gl.load(out_ptr + n64 * son + ch_v * soc + y * soh + px * sow, mask=ok, other=0.0)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                # input row i is no longer needed: its slot takes row i + R
                _load_row(i + R, rows_in, base, n, y0, x0, in_desc, bufs, ready, R)
                v = acc + bias
                if SHUFFLE == 0 and ACC:
                    v = v + gl.convert_layout(prev, mma).to(gl.float32)
                if ACT != 0:
                    neg = v < 0
                    if ACT_ROWS < M:  # the rows past ACT_ROWS are partial sums: no activation yet
                        neg = neg & (ch2 < ACT_ROWS)
                    v = gl.where(neg, v * (slope if ACT == 1 else SLOPE), v)
                if SHUFFLE == 0:
                    v = v * alpha
                if SHUFFLE == 0 and HAS_RES:
                    resv = gl.load(res_ptr + n64 * srn + ch_v * src + y * srh + px * srw, mask=ok, other=0.0)
                    v = v + gl.convert_layout(resv, mma).to(gl.float32)
                if SHUFFLE == 0:
                    tma.store_wait(pendings=0)  # the previous row's store has left out_smem
                    out_view.store(v.to(out_desc.dtype))
                    fence_async_shared()
                    # rows past the image bottom (a unit's tail) are clipped by the TMA unit
                    _tma_store(out_desc, [n, y0 + i, x0, 0], out_smem)
                else:
                    y = y0 + i
                    px = gl.expand_dims(x0 + offs_x, 0)
                    ok = c_ok & (px < W) & (y < H)
                    n64 = n.to(gl.int64)
                    res = gl.load(res_ptr + n64 * srn + oc * src + y * srh + px * srw, mask=ok, other=0.0)
                    # rounded to the output type before the shuffle (half the scratch: two CTAs still fit an SM)
                    v = gl.convert_layout(v.to(out_ptr.dtype.element_ty), st).to(gl.float32) + res.to(gl.float32)
                    dst = out_ptr + n64 * son + oc * soc + (y * SHUFFLE + si) * soh + (px * SHUFFLE + sj) * sow
                    gl.store(dst, v.to(out_ptr.dtype.element_ty), mask=ok)
        if SHUFFLE == 0:
            tma.store_wait(pendings=0)
        for j in gl.static_range(R):
            mbarrier.invalidate(ready.index(j))


def _nhwc_ok(t: torch.Tensor, channels: int = C) -> bool:
    """What a TMA descriptor takes: channels innermost and dense, 16-byte aligned base and strides."""
    if t.dim() != 4 or t.stride(1) != 1 or t.shape[1] != channels or t.data_ptr() % 16:
        return False
    return all(t.stride(d) * t.element_size() % 16 == 0 for d in (0, 2, 3))


def _on_hopper(x: torch.Tensor) -> bool:
    if gluon is None or _disabled_reason is not None or not x.is_cuda:
        return False
    return x.dtype in (torch.float16, torch.bfloat16) and torch.cuda.get_device_capability(x.device)[0] == 9


def usable(x: torch.Tensor, out: torch.Tensor, c_in: int, c_out: int, act: str | None) -> bool:
    """Whether `conv3x3_rows` takes this plain layer: Hopper, fp16/bf16, 64 → 64, NHWC-dense input and output."""
    if not _on_hopper(x) or c_in != C or c_out != C or act not in ACTS or out.dtype != x.dtype:
        return False
    return _nhwc_ok(x) and _nhwc_ok(out)


def rows_per_unit(n: int, h: int, w: int, slots: int) -> int:
    """Rows a CTA sweeps per unit of work: as many units as the GPU holds CTAs at once, so every CTA gets one and
    all finish together; never under 8 rows (each unit loads two halo rows). On the H100 this choice is within 2%
    of the best of 8–128 rows at 540p, 720p, 1080p, 2160p and 4×1080p (docs/benchmarks.md)."""
    strips = -(-w // BW)
    chunks = max(1, slots // max(1, n * strips))
    return max(8, -(-h // chunks))


@dataclass(frozen=True, slots=True)
class RowWeights:
    """One layer's parameters as the kernel reads them, outputs zero-padded to 64: `weight` 9·64 tap-major rows
    of (out, in), `bias` and PReLU `slope` (fp32, 64 each)."""

    weight: torch.Tensor
    bias: torch.Tensor
    slope: torch.Tensor | None

    @staticmethod
    def of(
        weight: torch.Tensor, bias: torch.Tensor, slope: torch.Tensor | None, c_out: int, k_pad: int, n_pad: int
    ) -> RowWeights | None:
        """From `PackedConv`'s (9 tap-major blocks of (k_pad in, n_pad out)); None where the kernel takes no
        such layer: it needs inputs padded to 16, 32 or 64 and 64 outputs, or 3·s² for SRVGG's tail."""
        if k_pad not in (16, 32, C) or c_out not in (C, 12, 27, 48):
            return None
        w = torch.zeros(9, C, k_pad, dtype=weight.dtype, device=weight.device)
        w[:, :n_pad] = weight.reshape(9, k_pad, n_pad).transpose(1, 2)

        def pad(v: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(C, dtype=torch.float32, device=v.device)
            full[: v.numel()] = v
            return full

        return RowWeights(w.reshape(9 * C, k_pad).contiguous(), pad(bias), None if slope is None else pad(slope))

    @staticmethod
    def of_taps(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> RowWeights:
        """From (64, K, 3, 3) convolution weights (K = 16, 32 or 64) and 64 biases: for layers a caller cuts out
        of bigger ones (`fused.FusedRRDB`'s dense blocks)."""
        if tuple(weight.shape[2:]) != (3, 3) or weight.shape[0] != C or weight.shape[1] not in (16, 32, C):
            raise ValueError(f"the row kernel takes (64, 16|32|64, 3, 3) weights, not {tuple(weight.shape)}")
        w = weight.permute(2, 3, 0, 1).reshape(9 * C, weight.shape[1])  # tap-major blocks of (out, in)
        return RowWeights(w.to(dtype).contiguous(), bias.detach().float().contiguous(), None)


def serves(x: torch.Tensor) -> bool:
    """Whether the kernel runs for inputs like `x` here (Hopper, fp16/bf16, not turned off); the layout checks
    are the caller's (`usable`, `try_layer`)."""
    return _on_hopper(x)


def _padded(x: torch.Tensor, k: int) -> torch.Tensor:
    """`x` with its channels zero-padded to k in NHWC-dense memory (a TMA box row needs ≥ 16 bytes: an RGB
    pixel has 6); one pass over the small input, paid once per frame by the network's first layer."""
    return torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, k - x.shape[1])).permute(0, 3, 1, 2)


def conv3x3_rows(
    x: torch.Tensor,
    rw: RowWeights,
    out: torch.Tensor,
    *,
    act: str | None,
    slope: float = 0.2,
    rows: int | None = None,
    shuffle: int = 0,
    res: torch.Tensor | None = None,
    accumulate: bool = False,
    act_rows: int = C,
    alpha: float = 1.0,
) -> torch.Tensor:
    """`out = act(conv3x3(x) + bias)` for NCHW views with NHWC-dense memory and 16, 32 or 64 input channels;
    `out` has 64 channels. With `shuffle` = s ≥ 1 (SRVGG's tail): `out` (N, 3, sH, sW), any strides, gets the
    first 3·s² output channels pixel-shuffled plus `res` (N, 3, H, W) upsampled nearest. Check `usable` or go
    through `try_layer`. `slope` is LeakyReLU's (PReLU's come in `rw`).

    Without shuffle, for convolutions split over input channels (`fused.FusedRRDB`'s dense blocks): `accumulate`
    adds what `out` holds before the bias (a partial sum from an earlier call), the activation applies to the first
    `act_rows` output channels only (the others are partial sums), and `out = act(conv + bias [+ out]) · alpha
    [+ res]`, `res` an (N, 64, H, W) view with channels innermost."""
    n, k, h, w = x.shape
    bits = 8 * x.element_size()
    in_lay = gl.NVMMASharedLayout(swizzle_byte_width=min(128, k * x.element_size()), element_bitwidth=bits, rank=4)
    in_desc = TensorDescriptor.from_tensor(x.permute(0, 2, 3, 1), [1, 1, BW, k], in_lay)
    if shuffle == 0:
        out_lay = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=bits, rank=4)
        out_desc = TensorDescriptor.from_tensor(out.permute(0, 2, 3, 1), [1, 1, BW, C], out_lay)
        ostrides, c_real = out.stride(), C
        rstrides, res_t = (res.stride(), res) if res is not None else ((0, 0, 0, 0), out)
    else:
        if res is None:
            raise ValueError("the shuffle epilogue adds the upsampled input: res is required")
        out_desc = in_desc  # unused by this epilogue
        ostrides, rstrides, res_t, c_real = out.stride(), res.stride(), res, 3 * shuffle * shuffle
    slots = CTAS_PER_SM * torch.cuda.get_device_properties(x.device).multi_processor_count
    u = rows if rows is not None else rows_per_unit(n, h, w, slots)
    strips = triton.cdiv(w, BW)
    per_img = triton.cdiv(h, u) * strips
    units = n * per_img
    try:
        _rowconv_kernel[(min(slots, units),)](
            in_desc, out_desc, rw.weight, rw.bias, rw.slope if rw.slope is not None else rw.bias,
            strips, per_img, units, u,
            out, res_t, h, w, *ostrides, *rstrides, float(alpha),
            ACT=ACTS[act], SLOPE=float(slope), R=RING, SHUFFLE=shuffle, C_REAL=c_real,
            ACC=accumulate, ACT_ROWS=act_rows, HAS_RES=shuffle == 0 and res is not None, num_warps=4,
        )  # fmt: skip
    except Exception as e:
        # raised while compiling (Gluon's API and its MLIR verifier move between Triton releases) or launching
        # (resources); a kernel that runs and fails reports it later, on synchronisation, and is not caught here
        raise KernelBuildError(f"{type(e).__name__}: {str(e)[:300]}") from e
    return out


def try_layer(
    x: torch.Tensor,
    rw: RowWeights | None,
    out: torch.Tensor,
    *,
    c_in: int,
    c_out: int,
    act: str | None,
    slope: float,
    up: int,
    shuffle: int,
    res1: torch.Tensor | None,
    alpha: float,
    res2: torch.Tensor | None,
) -> bool:
    """Run a `fused.conv3x3` layer here if this kernel covers it, and say whether it did: plain 64 → 64 layers,
    a first layer from 3 (or up to 64) channels to 64, and SRVGG's tail (64 → 3·s², pixel shuffle s, plus the
    upsampled input). Anything else (nearest-upsampled input, scaled residuals, channel slices the TMA cannot
    address) stays with the Triton kernel."""
    if rw is None or up != 1 or res2 is not None or act not in ACTS or not _on_hopper(x) or out.dtype != x.dtype:
        return False
    if act == "prelu" and rw.slope is None:
        return False
    k = rw.weight.shape[1]
    tail = shuffle > 1 and c_in == C and c_out == 3 * shuffle * shuffle and act is None and alpha == 1.0
    if tail:
        if res1 is None or tuple(res1.shape) != (x.shape[0], 3, x.shape[2], x.shape[3]) or res1.dtype != x.dtype:
            return False
    elif shuffle != 1 or res1 is not None or c_out != C or not _nhwc_ok(out):
        return False
    if c_in == k and not _nhwc_ok(x, k):
        return False
    xin = x if c_in == k else _padded(x, k)  # an RGB input: the network's first layer
    conv3x3_rows(xin, rw, out, act=act, slope=slope, shuffle=shuffle if tail else 0, res=res1 if tail else None)
    return True


def status(device: torch.device) -> str:
    """Whether this kernel serves `device`, and if not why: for `vidpipe doctor`."""
    if gluon is None:
        return "off (no Triton with Gluon installed)"
    if _disabled_reason is not None:
        return f"off ({_disabled_reason})"
    if device.type != "cuda":
        return "off (not a CUDA device)"
    major, minor = torch.cuda.get_device_capability(device)
    if major != 9:
        return f"off (sm_{major}{minor}; it needs Hopper, sm_90)"
    return f"on (Triton {triton.__version__}, sm_90)"


def disable(reason: str) -> None:
    """Stop using the kernel for the rest of the process (a Triton whose Gluon no longer builds it)."""
    global _disabled_reason
    if _disabled_reason is None:
        log.warning("row-sweep convolution kernel off, the Triton kernel takes its layers: %s", reason)
    _disabled_reason = reason
