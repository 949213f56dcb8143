"""Modulated deformable convolution as one Triton implicit GEMM (`deform_conv2d(..., backend="triton")`).

Why (issue 18, H100 profile): the deformable alignment was ~55 % of BasicVSR++'s GPU time. torchvision's kernel
writes the whole im2col matrix in fp32 (Cin · taps values per output pixel: 1152 at 128 channels, 3×3) and then
runs a GEMM over it; ours (`deform._deform_conv2d`) gathers it with torch ops, several passes over memory. Here a
program takes BLOCK_M output pixels × BLOCK_N output channels and loops over taps × blocks of input channels: it
loads the tap's offsets and mask for its pixels (one pair and one mask per deformable group), gathers the four
bilinear corners of BLOCK_K channels from the channels-last input (a group's channels are contiguous there, so
each corner is one vector load), forms the weighted, masked A tile in registers and `tl.dot`s it with the packed
weights. Nothing of the columns reaches memory.

Arithmetic as torchvision's: positions and bilinear weights in fp32, each corner outside the image counting zero,
the four corners summed in fp32 and then multiplied by the mask; products accumulate in fp32. The A tile is
rounded to the input's dtype for the tensor cores (fp16/bf16 inputs); fp32 inputs run TF32 where torch allows
it for matmuls, else three TF32 products per term (~fp32 accuracy; `_precision`).

Covers groups = 1, any kernel, stride, padding, dilation and deformable groups dividing Cin; fp16, bf16, fp32.
`check` says why a call is not covered (the "auto" backend then falls back). The K axis is laid out per tap as
deformable groups × channels, each padded to a power of two (`_Geometry`), the weights packed to match once per
weight tensor (`packed_weight`).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import torch

from ..fused import _image_span, _interpreting, available

try:  # Triton ships with CUDA builds of torch; CPU builds and CI run without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

#: input dtypes the kernel takes (its A tile is formed in the input's dtype)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: K elements per `tl.dot` (16 is tl.dot's least; 32 keeps one block to 4 BasicVSR++ groups of 8 channels)
BLOCK_K = 32
#: output channels per program at most; wider layers take several programs along N (each gathers again)
MAX_BLOCK_N = 128


def _pow2_at_least(n: int, lo: int = 1) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True, slots=True)
class _Geometry:
    """How one tap's K axis is laid out: `dg_pad` groups × `cg_pad` channel slots, tiled by BLOCK_K as `gpb`
    groups × `cpb` channels per tile (so a tile never splits a group's positions, only its channels)."""

    dg: int  # deformable groups
    cg: int  # channels per deformable group
    cg_pad: int  # cg padded to a power of two (the kernel's aranges)
    cpb: int  # channels of one group in a K tile
    gpb: int  # groups in a K tile
    dg_pad: int  # deformable groups padded to a multiple of gpb
    block_k: int

    @property
    def k_tap(self) -> int:
        return self.dg_pad * self.cg_pad

    @property
    def even(self) -> bool:
        """No padded slots: the kernel's loads need no channel mask."""
        return self.cg_pad == self.cg and self.dg_pad == self.dg

    @staticmethod
    def of(c: int, dg: int) -> _Geometry:
        cg = c // dg
        cg_pad = _pow2_at_least(cg)
        cpb = min(cg_pad, BLOCK_K)
        gpb = max(1, BLOCK_K // cg_pad)
        dg_pad = -(-dg // gpb) * gpb
        return _Geometry(dg=dg, cg=cg, cg_pad=cg_pad, cpb=cpb, gpb=gpb, dg_pad=dg_pad, block_k=cpb * gpb)


# packed weights per source tensor: id → (weak reference, version, key, packed); a handful of layers at a time
_PACKED: dict[int, tuple[weakref.ref[torch.Tensor], int, tuple[object, ...], torch.Tensor]] = {}
_PACKED_MAX = 32


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # an inference tensor (made under inference_mode) has no version counter: not cached
        return None


def packed_weight(weight: torch.Tensor, geo: _Geometry, n_pad: int, dtype: torch.dtype) -> torch.Tensor:
    """`weight` (Cout × Cin × kh × kw) as the kernel reads it: (taps · dg_pad · cg_pad) × n_pad, rows tap-major
    then group then channel, zero in padded slots, in `dtype`. Cached per weight tensor (and its version: an
    in-place update repacks)."""
    key = (geo, n_pad, dtype, weight.device, tuple(weight.shape))
    version = _version(weight)
    hit = _PACKED.get(id(weight))
    if hit is not None and version is not None and hit[0]() is weight and hit[1] == version and hit[2] == key:
        return hit[3]
    cout, _c, kh, kw = weight.shape
    w = weight.detach().to(torch.float32).permute(2, 3, 1, 0).reshape(kh * kw, geo.dg, geo.cg, cout)
    packed = torch.zeros(kh * kw, geo.dg_pad, geo.cg_pad, n_pad, dtype=torch.float32, device=weight.device)
    packed[:, : geo.dg, : geo.cg, :cout] = w
    packed = packed.reshape(-1, n_pad).to(dtype).contiguous()
    if version is not None:
        if len(_PACKED) >= _PACKED_MAX:
            _PACKED.pop(next(iter(_PACKED)))
        _PACKED[id(weight)] = (weakref.ref(weight), version, key, packed)
    return packed


def check(
    x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor, groups: int
) -> str | None:
    """Why the kernel does not take this call (shapes `deform._layout` has checked), or None when it does."""
    if triton is None:
        return "Triton is not installed"
    if not available(x.device):
        return f"Triton kernels run on CUDA (or in Triton's interpreter), not on {x.device}"
    if x.dtype not in DTYPES or weight.dtype not in (*DTYPES, torch.float64):
        return f"the kernel takes fp16, bf16 and fp32 inputs, not {x.dtype}"
    if groups != 1:
        return f"the kernel takes groups = 1, not {groups}"
    out_span = weight.shape[0] * offset.shape[2] * offset.shape[3]  # a dense output image (any layout)
    for name, span in (("input", _image_span(x)), ("offset", _image_span(offset)), ("output", out_span)):
        if span >= 2**31:
            return f"the {name} of one image is too large for the kernel's 32-bit offsets"
    if mask is not None and _image_span(mask) >= 2**31:
        return "the mask of one image is too large for the kernel's 32-bit offsets"
    return None


if triton is not None:

    def _configs() -> list[triton.Config]:
        if _interpreting():  # one config: the interpreter is slow and timing it means nothing
            return [triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)]
        # not timed yet (no GPU when written); chosen from sm_90 builds of BasicVSR++'s layer (ptxas, fp16): one
        # stage gathers with direct 16-byte loads at ~100 registers (64 × 4 warps, 128 × 8), i.e. several
        # programs per SM to hide the gathers' latency; two stages make them cp.async copies into shared memory
        # (pipelined over the taps) at ~125–175 registers. 128 × 4 warps × 2 stages and 256-pixel tiles spilled.
        return [
            triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=s)
            for bm, w, s in ((64, 4, 1), (128, 8, 1), (128, 4, 1), (64, 8, 2), (64, 4, 2), (128, 8, 2))
        ]

    def _autotune_cache() -> dict[str, bool]:
        # the chosen config kept on disk (Triton ≥ 3.2), as fused.py does
        ok = "cache_results" in inspect.signature(triton.autotune).parameters and not _interpreting()
        return {"cache_results": True} if ok else {}

    @triton.jit
    def _gather(ptrs, mask, EVEN: tl.constexpr):
        # every address is inside the image (clamped); only padded channel/group slots need the mask
        v = tl.load(ptrs) if EVEN else tl.load(ptrs, mask=mask, other=0.0)
        return v.to(tl.float32)

    @triton.autotune(
        configs=_configs(), key=["HW_BUCKET", "K_TAP", "BLOCK_N", "KH", "KW", "PRECISION"], **_autotune_cache()
    )
    @triton.jit
    def _dcn_kernel(
        x_ptr, off_ptr, msk_ptr, w_ptr, b_ptr, y_ptr,
        H, W, HO, WO, C_OUT, DG, HW_BUCKET,
        sxn, sxc, sxh, sxw,
        son, soc, soh, sow,
        smn, smc, smh, smw,
        syn, syc, syh, syw,
        STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
        DIL_H: tl.constexpr, DIL_W: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
        CG: tl.constexpr, CG_PAD: tl.constexpr, CPB: tl.constexpr, GPB: tl.constexpr, K_TAP: tl.constexpr,
        BLOCK_K: tl.constexpr, EVEN: tl.constexpr, N_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    ):  # fmt: skip
        # one image per grid row: its base offsets are scalars in 64 bits; offsets inside an image stay 32-bit
        # (the host checks the spans), which keeps the per-element address arithmetic cheap
        n = tl.program_id(2).to(tl.int64)
        x_ptr += n * sxn
        off_ptr += n * son
        msk_ptr += n * smn
        y_ptr += n * syn
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = offs_m < HO * WO
        oy = offs_m // WO
        ox = offs_m % WO
        off_pix = oy * soh + ox * sow
        msk_pix = oy * smh + ox * smw
        gi = tl.arange(0, GPB)  # the groups of a K tile
        ci = tl.arange(0, CPB)  # their channels
        hf = H * 1.0  # (not .to: an int argument equal to 1 arrives as a constexpr)
        wf = W * 1.0
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for tap in tl.range(0, KH * KW):
            # the tap's grid position (rows × stride − padding + its place in the window), then the offsets
            ky = tap // KW
            kx = tap % KW
            base_y = (oy * STRIDE_H - PAD_H + ky * DIL_H).to(tl.float32)
            base_x = (ox * STRIDE_W - PAD_W + kx * DIL_W).to(tl.float32)
            for kb in tl.static_range(K_TAP // BLOCK_K):
                k0 = kb * BLOCK_K
                g = k0 // CG_PAD + gi  # [GPB]
                ch = g[:, None] * CG + (k0 % CG_PAD + ci)[None, :]  # [GPB, CPB] input channels
                g_ok = g < DG
                pm = m_ok[:, None] & g_ok[None, :]  # [BLOCK_M, GPB]
                # offset channels: per group 2·taps of them, (dy, dx) per tap: loaded as pairs (one 4-byte load
                # each from channels-last fp16 offsets)
                oc = (g * (2 * KH * KW) + 2 * tap) * soc
                pair = off_ptr + off_pix[:, None, None] + oc[None, :, None] + (tl.arange(0, 2) * soc)[None, None, :]
                dy, dx = tl.split(tl.load(pair, mask=pm[:, :, None], other=0.0).to(tl.float32))
                py = base_y[:, None] + dy
                px = base_x[:, None] + dx
                y0f = tl.floor(py)
                x0f = tl.floor(px)
                ly = py - y0f
                lx = px - x0f
                # clamped before the integer conversion (far or non-finite offsets): corners stay outside
                y0 = tl.minimum(tl.maximum(y0f, -2.0), hf).to(tl.int32)
                x0 = tl.minimum(tl.maximum(x0f, -2.0), wf).to(tl.int32)
                y1 = y0 + 1
                x1 = x0 + 1
                # each corner outside the image counts zero (its weight), its load clamped inside (no mask)
                wy0 = tl.where((y0 >= 0) & (y0 < H), 1.0 - ly, 0.0)
                wy1 = tl.where((y1 >= 0) & (y1 < H), ly, 0.0)
                wx0 = tl.where((x0 >= 0) & (x0 < W), 1.0 - lx, 0.0)
                wx1 = tl.where((x1 >= 0) & (x1 < W), lx, 0.0)
                ry0 = tl.minimum(tl.maximum(y0, 0), H - 1) * sxh
                ry1 = tl.minimum(tl.maximum(y1, 0), H - 1) * sxh
                rx0 = tl.minimum(tl.maximum(x0, 0), W - 1) * sxw
                rx1 = tl.minimum(tl.maximum(x1, 0), W - 1) * sxw
                cofs = (ch * sxc)[None, :, :]  # [1, GPB, CPB]
                lmask = (g_ok[:, None] & ((k0 % CG_PAD + ci) < CG)[None, :])[None, :, :]  # padded slots
                v00 = _gather(x_ptr + (ry0 + rx0)[:, :, None] + cofs, lmask, EVEN)
                v01 = _gather(x_ptr + (ry0 + rx1)[:, :, None] + cofs, lmask, EVEN)
                v10 = _gather(x_ptr + (ry1 + rx0)[:, :, None] + cofs, lmask, EVEN)
                v11 = _gather(x_ptr + (ry1 + rx1)[:, :, None] + cofs, lmask, EVEN)
                a3 = (wy0 * wx0)[:, :, None] * v00 + (wy0 * wx1)[:, :, None] * v01
                a3 += (wy1 * wx0)[:, :, None] * v10 + (wy1 * wx1)[:, :, None] * v11
                if HAS_MASK:  # the modulation, after the four corners are summed (torchvision's order)
                    mc = (g * (KH * KW) + tap) * smc
                    mod = tl.load(msk_ptr + msk_pix[:, None] + mc[None, :], mask=pm, other=0.0).to(tl.float32)
                    a3 = a3 * mod[:, :, None]
                a = tl.reshape(a3, (BLOCK_M, BLOCK_K)).to(w_ptr.dtype.element_ty)
                rows = tap * K_TAP + k0 + tl.arange(0, BLOCK_K)
                b = tl.load(w_ptr + rows[:, None] * N_PAD + offs_n[None, :])
                acc = tl.dot(a, b, acc, input_precision=PRECISION)

        n_ok = offs_n < C_OUT
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        ptrs = y_ptr + (oy * syh + ox * syw)[:, None] + (offs_n * syc)[None, :]
        tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _precision(dtype: torch.dtype) -> str:
    """tl.dot's precision for fp32 inputs as torch's matmul flag says (torchvision's GEMM follows it too): TF32
    where allowed, else three TF32 products (~fp32's accuracy, still on the tensor cores). Moot for fp16/bf16."""
    if dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "tf32x3"


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    sn, sc, sh, sw = (int(s) for s in t.stride())
    return sn, sc, sh, sw


def deform_conv2d_triton(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
    deform_groups: int,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """The kernel on a call `deform.deform_conv2d` has checked and `check` passed. The output is in x's dtype
    and `memory_format`."""
    n, c, h, w = x.shape
    cout, _cin, kh, kw = weight.shape
    ho, wo = out_hw
    if x.stride(1) != 1:  # channels-last: a group's channels are one vector load per corner
        x = x.contiguous(memory_format=torch.channels_last)
    geo = _Geometry.of(c, deform_groups)
    n_pad = _pow2_at_least(cout, 16)
    block_n = min(n_pad, MAX_BLOCK_N)
    wpk = packed_weight(weight, geo, n_pad, x.dtype)
    out = torch.empty(n, cout, ho, wo, device=x.device, dtype=x.dtype, memory_format=memory_format)
    if out.numel() == 0:
        return out
    b = bias.contiguous() if bias is not None else wpk  # an unused pointer still needs a tensor
    m = mask if mask is not None else offset
    grid = lambda meta: (triton.cdiv(ho * wo, meta["BLOCK_M"]), n_pad // block_n, n)  # noqa: E731
    _dcn_kernel[grid](
        x, offset, m, wpk, b, out,
        h, w, ho, wo, cout, deform_groups, _pow2_at_least(ho * wo, 1 << 14),
        *_strides(x), *_strides(offset), *_strides(m), *_strides(out),
        STRIDE_H=stride[0], STRIDE_W=stride[1], PAD_H=padding[0], PAD_W=padding[1],
        DIL_H=dilation[0], DIL_W=dilation[1], KH=kh, KW=kw,
        CG=geo.cg, CG_PAD=geo.cg_pad, CPB=geo.cpb, GPB=geo.gpb, K_TAP=geo.k_tap, BLOCK_K=geo.block_k,
        EVEN=geo.even, N_PAD=n_pad, BLOCK_N=block_n,
        HAS_MASK=mask is not None, HAS_BIAS=bias is not None, PRECISION=_precision(x.dtype),
    )  # fmt: skip
    return out
