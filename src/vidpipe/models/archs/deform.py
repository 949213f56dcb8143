"""Modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019) without mmcv: our own code.

Each output pixel of a k×k convolution reads its k·k taps not at the fixed grid positions but at those positions
moved by a learned offset (dy, dx) per tap and per *deformable group* (a slice of the input channels), sampled
bilinearly, and multiplied by a learned mask in 0..1 (the "modulated" of v2). The layout is the one mmcv's
`modulated_deform_conv2d` and torchvision's `ops.deform_conv2d` share:

    offset: N × (deform_groups · 2 · kh · kw) × Ho × Wo, per group the taps in row-major order, each (dy, dx)
    mask:   N × (deform_groups · kh · kw) × Ho × Wo
    weight: Cout × (Cin / groups) × kh × kw  (ordinary convolution groups on top of the deformable groups)

`deform_conv2d` runs, with `backend="auto"`: on CUDA our fused Triton kernel (`deform_triton`: an implicit GEMM
that never writes the columns) where Triton is present and the call is one it covers (groups = 1, fp16/bf16/fp32);
else torchvision's kernel where torchvision imports (the GPU machines have it; it is never imported at module
load); else ours. `backend="triton"`, `"torchvision"` or `"ours"` asks for that one. Ours gathers the four
bilinear corners of every tap from the flattened input (exact arithmetic, no normalised `grid_sample`
coordinates), zero outside the image as torchvision's kernel, weights them by bilinear weight × mask, and
multiplies the resulting im2col columns by the weights. The columns of one output row are Cin·kh·kw·Wo values,
so it works through the output in bands of rows that keep them under `COLUMN_BUDGET_BYTES`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ...errors import ModelError

log = logging.getLogger(__name__)

#: "auto": the Triton kernel on CUDA where it covers the call, else torchvision's kernel where it imports, else
#: ours; "ours"/"torchvision"/"triton": that one (an error if it is missing or does not cover the call)
Backend = Literal["auto", "ours", "torchvision", "triton"]
BACKENDS: tuple[Backend, ...] = ("auto", "ours", "torchvision", "triton")
#: bytes of im2col columns held at once; about three times that is live while a band is gathered (the
#: sum so far, one corner's values, its weighted copy). 64 MiB keeps a 1024×432 BasicVSR++ alignment
#: (128 channels × 9 taps) to bands of ~14 rows without making the per-band overhead matter
COLUMN_BUDGET_BYTES = 64 << 20

Pair = int | tuple[int, int]
#: why the Triton kernel failed in this process (then "auto" no longer tries it); None: not failed
_triton_failed: str | None = None


def _pair(v: Pair, what: str) -> tuple[int, int]:
    out = (v, v) if isinstance(v, int) else tuple(v)
    if len(out) != 2 or not all(isinstance(i, int) for i in out):
        raise ModelError(f"deform_conv2d: {what} must be an int or a pair of ints, got {v!r}")
    return out[0], out[1]


@functools.cache
def _torchvision_op() -> Callable[..., torch.Tensor] | None:
    """torchvision's `ops.deform_conv2d`, or None where torchvision does not import (imported once, lazily)."""
    try:
        from torchvision.ops import deform_conv2d as op  # optional: only the GPU machines have torchvision
    except Exception:  # not installed, or a build that does not match torch (its ops fail to load)
        return None
    return op


def has_torchvision() -> bool:
    return _torchvision_op() is not None


def output_size(
    size: tuple[int, int], kernel: tuple[int, int], stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1
) -> tuple[int, int]:
    """(Ho, Wo) of a convolution over an H×W input (the same rule as `nn.Conv2d`)."""
    st, pad, dil = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) // st[i] + 1 for i in range(2)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Layout:
    """The geometry of one call, checked: what torchvision's kernel also takes from the shapes."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int
    deform_groups: int


def _layout(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, geometry: tuple[Pair, Pair, Pair]) -> _Layout:
    """Groups and deformable groups told from the shapes, which must agree with each other and the geometry
    (stride, padding, dilation); the mask and bias are checked against the result by the caller."""
    if x.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise ModelError(
            f"deform_conv2d: input, offset and weight must be 4-D, got {tuple(x.shape)}, {tuple(offset.shape)},"
            f" {tuple(weight.shape)}"
        )
    stride, padding, dilation = (
        _pair(geometry[0], "stride"),
        _pair(geometry[1], "padding"),
        _pair(geometry[2], "dilation"),
    )
    n, c = x.shape[:2]
    cout, cin_g, kh, kw = weight.shape
    out_hw = output_size((x.shape[2], x.shape[3]), (kh, kw), stride, padding, dilation)
    taps = kh * kw
    if cin_g == 0 or c % cin_g or cout % (c // cin_g):
        raise ModelError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit {c} input channels in groups")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) or c % (offset.shape[1] // (2 * taps)):
        raise ModelError(
            f"deform_conv2d: offset has {offset.shape[1]} channels; expected deform_groups × 2 × {taps}"
            f" with deform_groups dividing {c}"
        )
    dg = offset.shape[1] // (2 * taps)
    want = (n, *out_hw)
    if (offset.shape[0], *offset.shape[2:]) != want:
        raise ModelError(f"deform_conv2d: offset is {tuple(offset.shape)}; expected N × C × Ho × Wo = {want}")
    if min(out_hw) <= 0:
        raise ModelError(f"deform_conv2d: the output would be {out_hw[0]}×{out_hw[1]}: input too small")
    return _Layout(
        stride=stride, padding=padding, dilation=dilation, out_hw=out_hw, groups=c // cin_g, deform_groups=dg
    )


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    stride: Pair = 1,
    padding: Pair = 0,
    dilation: Pair = 1,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Modulated deformable convolution of `x` (N × C × H × W). Groups and deformable groups are told from the
    shapes of `weight` and `offset`, as torchvision does; `mask=None` is a mask of ones (DCNv1)."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown deform_conv2d backend {backend!r}; valid: {', '.join(BACKENDS)}")
    layout = _layout(x, offset, weight, (stride, padding, dilation))
    want = (x.shape[0], layout.deform_groups * weight.shape[2] * weight.shape[3], *layout.out_hw)
    if mask is not None and tuple(mask.shape) != want:
        raise ModelError(f"deform_conv2d: mask is {tuple(mask.shape)}; expected {want}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ModelError(f"deform_conv2d: bias is {tuple(bias.shape)}; expected ({weight.shape[0]},)")
    global _triton_failed
    if backend == "triton" or (backend == "auto" and x.is_cuda and _triton_failed is None):
        from . import deform_triton  # lazily: Triton's import is slow, and CPU runs of "auto" never need it

        why = deform_triton.check(x, offset, mask, weight, layout.groups)
        if why is None:
            try:
                return deform_triton.deform_conv2d_triton(
                    x,
                    offset,
                    weight,
                    bias,
                    mask,
                    stride=layout.stride,
                    padding=layout.padding,
                    dilation=layout.dilation,
                    out_hw=layout.out_hw,
                    deform_groups=layout.deform_groups,
                    memory_format=_layout_of(x),
                )
            except torch.cuda.OutOfMemoryError:
                raise  # the scheduler's to handle (smaller windows), not a reason to leave the kernel
            except Exception as e:
                if backend == "triton":
                    raise
                # "auto": a kernel that does not build or launch on this device/driver must not stop the run;
                # torchvision's (or ours) takes over for the rest of the process, said once
                _triton_failed = f"{type(e).__name__}: {e}"
                log.warning("deform_conv2d: the Triton kernel failed (%s); using the fallback", _triton_failed)
        elif backend == "triton":
            raise ModelError(f"deform_conv2d backend 'triton' cannot run this call: {why}")
    if backend in ("auto", "torchvision"):
        op = _torchvision_op()
        if op is not None:
            # its CUDA kernel has no bf16 (and under autocast it runs in fp32): other dtypes go through fp32
            dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
            # straight to the contiguous fp32 the kernel reads (one copy each, not a cast and then a transpose)
            out = op(
                *(None if t is None else t.to(dtype=dtype, memory_format=torch.contiguous_format)
                  for t in (x, offset, weight, bias)),
                stride=layout.stride,
                padding=layout.padding,
                dilation=layout.dilation,
                mask=None if mask is None else mask.to(dtype=dtype, memory_format=torch.contiguous_format),
            )  # fmt: skip
            return out.to(dtype=x.dtype, memory_format=_layout_of(x))  # the input's layout (channels-last nets)
        if backend == "torchvision":
            raise ModelError("deform_conv2d backend 'torchvision' asked for, but torchvision does not import")
    return _deform_conv2d(x, offset, weight, bias, mask, layout).contiguous(memory_format=_layout_of(x))


def _layout_of(t: torch.Tensor) -> torch.memory_format:
    """Channels-last for a channels-last CUDA input (its network keeps that layout), else contiguous."""
    if t.is_cuda and t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    layout: _Layout,
) -> torch.Tensor:
    n, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    (ho, wo), groups, dg = layout.out_hw, layout.groups, layout.deform_groups
    stride, padding, dilation = layout.stride, layout.padding, layout.dilation
    taps, cg = kh * kw, c // dg
    # Sample positions and bilinear weights in at least fp32: fp16 has no integer precision past 2048, and
    # torchvision's kernel computes them in fp32 under autocast too.
    pos_dtype = torch.promote_types(offset.dtype, torch.float32)
    dev = x.device
    src = x.reshape(n * dg, cg, h * w)
    off = offset.to(pos_dtype).view(n, dg, taps, 2, ho, wo)
    mod = None if mask is None else mask.to(pos_dtype).view(n, dg, taps, ho, wo)
    w_mat = weight.reshape(groups, cout // groups, cin_g * taps)
    # each tap's place in the kernel window, row-major as the offsets list them
    tap_y = (torch.arange(kh, device=dev, dtype=pos_dtype) * dilation[0]).repeat_interleave(kw).view(1, 1, taps, 1, 1)
    tap_x = (torch.arange(kw, device=dev, dtype=pos_dtype) * dilation[1]).repeat(kh).view(1, 1, taps, 1, 1)
    col_x = (torch.arange(wo, device=dev, dtype=pos_dtype) * stride[1] - padding[1]).view(1, 1, 1, 1, wo)
    row_bytes = n * c * taps * wo * x.element_size()
    band = max(1, min(ho, COLUMN_BUDGET_BYTES // max(row_bytes, 1)))
    out = x.new_empty(n, cout, ho, wo)
    for r0 in range(0, ho, band):
        r1 = min(ho, r0 + band)
        rows = r1 - r0
        row_y = (torch.arange(r0, r1, device=dev, dtype=pos_dtype) * stride[0] - padding[0]).view(1, 1, 1, rows, 1)
        py = row_y + tap_y + off[:, :, :, 0, r0:r1]  # N × dg × taps × rows × Wo
        px = col_x + tap_x + off[:, :, :, 1, r0:r1]
        scale = None if mod is None else mod[:, :, :, r0:r1]
        cols = _sample(src, py, px, h, w, scale)  # (N·dg) × cg × (taps·rows·Wo)
        # channel order (dg, cg) is the input's, then the tap: exactly the weight's (Cin/groups, kh, kw) flattening
        cols = cols.view(n, groups, cin_g * taps, rows * wo)
        out[:, :, r0:r1] = torch.matmul(w_mat, cols).view(n, cout, rows, wo)
    if bias is not None:
        out += bias.view(1, cout, 1, 1)
    return out


def _sample(
    src: torch.Tensor, py: torch.Tensor, px: torch.Tensor, h: int, w: int, scale: torch.Tensor | None
) -> torch.Tensor:
    """Bilinear samples of `src` ((N·dg) × cg × (H·W)) at pixel positions (py, px) (N × dg × …), each corner
    outside the image counting zero; times `scale` (the mask) where given. Returns (N·dg) × cg × positions."""
    groups, cg = src.shape[:2]
    y0f, x0f = py.floor(), px.floor()
    ly, lx = py - y0f, px - x0f
    y0, x0 = y0f.long(), x0f.long()
    acc: torch.Tensor | None = None
    for dy, wy in ((0, 1 - ly), (1, ly)):
        yy = y0 + dy
        inside_y = (yy >= 0) & (yy < h)
        for dx, wx in ((0, 1 - lx), (1, lx)):
            xx = x0 + dx
            wt = wy * wx * (inside_y & (xx >= 0) & (xx < w))
            if scale is not None:
                wt = wt * scale
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(groups, 1, -1)
            val = src.gather(2, idx.expand(groups, cg, idx.shape[-1])) * wt.view(groups, 1, -1).to(src.dtype)
            acc = val if acc is None else acc.add_(val)
    assert acc is not None
    return acc
