"""Modulated deformable convolution (archs/deform.py): ours against a direct, loop-by-loop evaluation of the DCNv2
definition on CPU, and against torchvision's kernel on a GPU machine; the Triton kernel (archs/deform_triton.py)
against ours in Triton's interpreter on CPU, and against torchvision's kernel on a GPU machine."""

from __future__ import annotations

import importlib.util
import math
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F
from test_fused import _interpret  # the same interpreter subprocess as the fused kernels' tests

from vidpipe.errors import ModelError
from vidpipe.models.archs import deform

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

#: ours against the float64 loop reference, on float32 inputs (the issue's bound for the CPU reference)
CPU_TOLERANCE = 1e-5
#: ours against torchvision's CUDA kernel (issue 18's acceptance line)
GPU_TOLERANCE = 1e-4


def _bilinear(plane: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """plane (C × H × W) at (y, x): the four neighbours weighted, each one outside the image counting zero."""
    h, w = plane.shape[-2:]
    y0, x0 = math.floor(y), math.floor(x)
    total = plane.new_zeros(plane.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * plane[:, yy, xx]
    return total


def reference(
    inputs: tuple, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]
) -> torch.Tensor:
    """The definition, one output pixel, tap and deformable group at a time, in float64. `inputs`: x, offset,
    weight, bias, mask (the last two may be None)."""
    x, offset, weight, bias, mask = inputs
    x, offset, weight = x.double(), offset.double(), weight.double()
    n, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups, dg = c // cin_g, offset.shape[1] // (2 * kh * kw)
    cg = c // dg
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = torch.zeros(n, cout, ho, wo, dtype=torch.float64)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                column = torch.zeros(c, kh, kw, dtype=torch.float64)  # the sampled, masked input window
                for g in range(dg):
                    for i in range(kh):
                        for j in range(kw):
                            t = i * kw + j
                            dy = float(offset[b, g * 2 * kh * kw + 2 * t, oy, ox])
                            dx = float(offset[b, g * 2 * kh * kw + 2 * t + 1, oy, ox])
                            y = oy * stride[0] - padding[0] + i * dilation[0] + dy
                            xx = ox * stride[1] - padding[1] + j * dilation[1] + dx
                            m = 1.0 if mask is None else float(mask[b, g * kh * kw + t, oy, ox])
                            column[g * cg : (g + 1) * cg, i, j] = m * _bilinear(x[b, g * cg : (g + 1) * cg], y, xx)
                for gi in range(groups):
                    cols = column[gi * cin_g : (gi + 1) * cin_g].reshape(-1)
                    rows = slice(gi * cout // groups, (gi + 1) * cout // groups)
                    out[b, rows, oy, ox] = weight[rows].reshape(cout // groups, -1) @ cols
    if bias is not None:
        out += bias.double().view(1, -1, 1, 1)
    return out


CASES = {
    # name: (N, C, H, W, Cout, kernel, stride, padding, dilation, groups, deform_groups, masked)
    "plain 3x3": (2, 4, 7, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True),
    "deform groups": (1, 8, 6, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 4, True),
    "conv groups": (1, 6, 6, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, 3, True),
    "stride 2": (2, 4, 9, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1, 2, True),
    "dilation 2": (1, 4, 9, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 2, 2, True),
    "3x2, mixed": (1, 4, 8, 7, 4, (3, 2), (2, 1), (1, 0), (1, 2), 1, 2, True),
    "no mask": (1, 4, 6, 6, 4, (3, 3), (1, 1), (0, 0), (1, 1), 1, 2, False),
}


def _inputs(case: tuple, seed: int) -> tuple[torch.Tensor, ...]:
    n, c, h, w, cout, k, stride, padding, dilation, groups, dg, masked = case
    gen = torch.Generator().manual_seed(seed)
    ho, wo = deform.output_size((h, w), k, stride, padding, dilation)
    taps = k[0] * k[1]
    x = torch.randn(n, c, h, w, generator=gen)
    offset = torch.randn(n, dg * 2 * taps, ho, wo, generator=gen) * 2.5  # fractional, some past the edges
    far = torch.rand(offset.shape, generator=gen) < 0.1  # and some far outside on either side
    offset[far] = torch.sign(offset[far]) * (h + w)
    whole = torch.rand(offset.shape, generator=gen) < 0.1  # and integer ones (exact pixels, edges at -1 and H)
    offset[whole] = offset[whole].round()
    mask = torch.rand(n, dg * taps, ho, wo, generator=gen) if masked else None
    weight = torch.randn(cout, c // groups, *k, generator=gen)
    bias = torch.randn(cout, generator=gen)
    return x, offset, weight, bias, mask


@pytest.mark.parametrize("name", list(CASES))
def test_ours_matches_the_definition(name: str) -> None:
    case = CASES[name]
    x, offset, weight, bias, mask = _inputs(case, seed=len(name))
    stride, padding, dilation = case[6], case[7], case[8]
    got = deform.deform_conv2d(
        x, offset, weight, bias, mask=mask, stride=stride, padding=padding, dilation=dilation, backend="ours"
    )
    want = reference((x, offset, weight, bias, mask), stride, padding, dilation)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got.double() - want).abs().max().item() <= CPU_TOLERANCE * max(1.0, want.abs().max().item())
    # the outside-the-image taps did matter: with offsets clamped into the image the result changes
    inside = deform.deform_conv2d(
        x, offset.clamp(-1, 1), weight, bias, mask=mask, stride=stride, padding=padding, dilation=dilation
    )
    assert not torch.allclose(inside, got)


def test_zero_offsets_and_unit_mask_are_a_plain_convolution() -> None:
    gen = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(2, 6, 11, 13, generator=gen), torch.randn(4, 3, 3, 3, generator=gen), torch.randn(4)
    offset = torch.zeros(2, 3 * 18, 6, 7)
    mask = torch.ones(2, 3 * 9, 6, 7)
    got = deform.deform_conv2d(x, offset, weight, bias, mask=mask, stride=2, padding=1, backend="ours")
    want = F.conv2d(x, weight, bias, stride=2, padding=1, groups=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bands_of_rows_give_the_whole_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column budget of one row at a time gives what one band over the whole output gives."""
    x, offset, weight, bias, mask = _inputs(CASES["stride 2"], seed=5)
    whole = deform.deform_conv2d(x, offset, weight, bias, mask=mask, stride=2, padding=1, backend="ours")
    monkeypatch.setattr(deform, "COLUMN_BUDGET_BYTES", 1)
    banded = deform.deform_conv2d(x, offset, weight, bias, mask=mask, stride=2, padding=1, backend="ours")
    torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-6)


def test_half_precision_samples_at_fp32_positions() -> None:
    """bf16 features far from the origin: positions past 256 are not representable in bf16, so a sampler that
    computed them in the input's dtype would read the wrong pixels; ours stays within bf16's rounding."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 4, 600, generator=gen)
    offset = torch.rand(1, 18, 4, 600, generator=gen) - 0.5
    weight, mask = torch.randn(2, 2, 3, 3, generator=gen), torch.rand(1, 9, 4, 600, generator=gen)
    want = deform.deform_conv2d(x, offset, weight, mask=mask, padding=1, backend="ours")
    got = deform.deform_conv2d(
        x.bfloat16(), offset.bfloat16(), weight.bfloat16(), mask=mask.bfloat16(), padding=1, backend="ours"
    )
    # bf16 keeps 8 bits of mantissa: inputs, offsets and products each round by ≤ 2^-8 relative
    err = (got.float() - want).abs().max().item()
    assert err < 0.1 * want.abs().max().item()


def test_shapes_that_do_not_fit_are_refused() -> None:
    x, weight = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3)
    with pytest.raises(ModelError, match="offset has 17 channels"):
        deform.deform_conv2d(x, torch.zeros(1, 17, 6, 6), weight)
    with pytest.raises(ModelError, match="offset is"):
        deform.deform_conv2d(x, torch.zeros(1, 18, 8, 8), weight)
    with pytest.raises(ModelError, match="mask is"):
        deform.deform_conv2d(x, torch.zeros(1, 18, 6, 6), weight, mask=torch.zeros(1, 18, 6, 6))
    with pytest.raises(ModelError, match="valid: auto, ours, torchvision, triton"):
        deform.deform_conv2d(x, torch.zeros(1, 18, 6, 6), weight, backend="mmcv")  # type: ignore[arg-type]


# --- the Triton kernel ----------------------------------------------------------------------------------

#: the kernel against ours, in Triton's interpreter (chosen when the kernel is defined, at import: a subprocess).
#: Cases: (N, C, H, W, Cout, kernel, stride, padding, dilation, deform_groups, masked, dtype, layout), offsets as
#: `_inputs` makes them (fractional, past the edges, far outside, whole pixels)
_TRITON_CHECKS = textwrap.dedent(
    """
    import torch
    from vidpipe.errors import ModelError
    from vidpipe.models.archs import deform

    CL, NCHW = torch.channels_last, torch.contiguous_format
    f32, f16 = torch.float32, torch.float16
    CASES = [
        (2, 16, 5, 7, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, True, f32, CL),  # 8 channels per group, as BasicVSR++
        (1, 32, 6, 5, 16, (3, 3), (1, 1), (1, 1), (1, 1), 4, True, f32, NCHW),  # NCHW input (copied)
        (1, 8, 5, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), 8, False, f32, CL),  # 1 channel per group, Cout 5
        (1, 6, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 3, True, f32, CL),  # 2 per group: padded groups
        (1, 12, 4, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, True, f32, CL),  # 6 per group: padded channels
        (1, 64, 4, 5, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, f32, CL),  # one group over two K tiles
        (2, 8, 9, 8, 6, (3, 3), (2, 2), (1, 1), (1, 1), 2, True, f32, CL),  # stride 2
        (1, 8, 9, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 2, True, f32, CL),  # dilation 2
        (1, 8, 8, 7, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2, True, f32, CL),  # 3×2, mixed geometry
        (1, 4, 6, 6, 150, (3, 3), (1, 1), (0, 0), (1, 1), 2, False, f32, CL),  # Cout over two N tiles
        (2, 16, 5, 7, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, True, f16, CL),
        (1, 32, 6, 5, 16, (3, 3), (1, 1), (1, 1), (1, 1), 4, False, f16, CL),
    ]  # (no bf16: the interpreter's tl.dot reads bf16 operands wrongly, Triton 3.9; the GPU tests cover it)

    def inputs(case, seed):
        n, c, h, w, cout, k, stride, padding, dilation, dg, masked, dtype, fmt = case
        gen = torch.Generator().manual_seed(seed)
        ho, wo = deform.output_size((h, w), k, stride, padding, dilation)
        taps = k[0] * k[1]
        x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
        # offsets and mask as channel slices of bigger channels-last tensors (BasicVSR++'s are chunks of one)
        both = torch.randn(n, dg * 3 * taps + 3, ho, wo, generator=gen).contiguous(memory_format=CL)
        offset, mask = both[:, 1 : 1 + 2 * dg * taps], both[:, 2 + 2 * dg * taps : 2 + 3 * dg * taps]
        offset.mul_(2.5)  # fractional, some past the edges
        far = torch.rand(offset.shape, generator=gen) < 0.1  # and some far outside on either side
        offset[far] = torch.sign(offset[far]) * (h + w)
        whole = torch.rand(offset.shape, generator=gen) < 0.1  # and integer ones (exact pixels, edges at -1, H)
        offset[whole] = offset[whole].round()
        mask = torch.sigmoid(mask) if masked else None
        weight, bias = torch.randn(cout, c, *k, generator=gen), torch.randn(cout, generator=gen)
        return x, offset, weight, bias, mask

    for i, case in enumerate(CASES):
        x, offset, weight, bias, mask = inputs(case, seed=i)
        dtype, geometry = case[11], {"stride": case[6], "padding": case[7], "dilation": case[8]}
        want = deform.deform_conv2d(x, offset, weight, bias, mask=mask, backend="ours", **geometry)
        half = [None if t is None else t.to(dtype) for t in (x, offset, weight, bias, mask)]
        got = deform.deform_conv2d(*half[:4], mask=half[4], backend="triton", **geometry)
        assert got.dtype == dtype and got.shape == want.shape, (i, got.dtype, got.shape)
        # fp32: float rounding only; fp16: inputs rounded to 11 bits, the A tile and the output rounded too
        tol = {f32: 1e-5, f16: 5e-3}[dtype] * max(1.0, want.abs().max().item())
        err = (got.float() - want).abs().max().item()
        assert err <= tol, (i, err, tol)
        print(i, err)
        if i == 0:  # the kernel's input may be a slice of a wider channels-last buffer; no bias; weights repacked
            wide = torch.randn(x.shape[0], x.shape[1] + 5, *x.shape[2:]).contiguous(memory_format=CL)
            wide[:, 3 : 3 + x.shape[1]] = x
            a = deform.deform_conv2d(wide[:, 3 : 3 + x.shape[1]], offset, weight, mask=mask, backend="triton",
                                     **geometry)
            b = deform.deform_conv2d(x, offset, weight, mask=mask, backend="ours", **geometry)
            assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())
            weight.mul_(2)  # in place: the packed copy must follow
            a = deform.deform_conv2d(x, offset, weight, mask=mask, backend="triton", **geometry)
            assert (a - 2 * b).abs().max().item() <= 2e-5 * max(1.0, b.abs().max().item())
    # what the kernel does not cover is refused, naming why ("auto" falls back on those)
    x, weight = torch.zeros(1, 4, 6, 6), torch.zeros(4, 2, 3, 3)
    for call, why in (
        (lambda: deform.deform_conv2d(x, torch.zeros(1, 36, 6, 6), weight, padding=1, backend="triton"), "groups"),
        (lambda: deform.deform_conv2d(x.double(), torch.zeros(1, 18, 4, 4), weight.double().repeat(1, 2, 1, 1),
                                      backend="triton"), "fp16, bf16 and fp32"),
    ):
        try:
            call()
        except ModelError as e:
            assert why in str(e), e
        else:
            raise AssertionError(why)
    print("triton ok")
    """
)


@needs_triton
@pytest.mark.timeout(600)
def test_triton_kernel_matches_ours_in_the_interpreter() -> None:
    assert "triton ok" in _interpret(_TRITON_CHECKS)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs Triton on CPU")
def test_triton_asked_for_on_cpu_is_an_error_and_auto_is_ours() -> None:
    x, offset, weight = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6), torch.randn(4, 4, 3, 3)
    with pytest.raises(ModelError, match="backend 'triton' cannot run this call"):
        deform.deform_conv2d(x, offset, weight, padding=1, backend="triton")
    if not deform.has_torchvision():  # CPU "auto" without torchvision: ours, exactly
        torch.testing.assert_close(
            deform.deform_conv2d(x, offset, weight, padding=1),
            deform.deform_conv2d(x, offset, weight, padding=1, backend="ours"),
            atol=0,
            rtol=0,
        )


@pytest.mark.skipif(deform.has_torchvision(), reason="torchvision is installed here")
def test_torchvision_asked_for_without_it_is_an_error() -> None:
    x, weight = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3)
    with pytest.raises(ModelError, match="torchvision does not import"):
        deform.deform_conv2d(x, torch.zeros(1, 18, 6, 6), weight, backend="torchvision")
    # "auto" falls back to ours
    assert deform.deform_conv2d(x, torch.zeros(1, 18, 6, 6), weight).shape == (1, 4, 6, 6)


@pytest.fixture
def exact_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 matmuls and convolutions without TF32 (another test may have allowed it for the process)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_ours_matches_torchvision_on_cuda(name: str, exact_fp32: None) -> None:
    pytest.importorskip("torchvision")
    if not deform.has_torchvision():
        pytest.skip("torchvision is installed but its ops do not load")
    case = CASES[name]
    cuda = torch.device("cuda")
    x, offset, weight, bias, mask = (None if t is None else t.to(cuda) for t in _inputs(case, seed=11))
    kw = {"mask": mask, "stride": case[6], "padding": case[7], "dilation": case[8]}
    ours = deform.deform_conv2d(x, offset, weight, bias, backend="ours", **kw)
    theirs = deform.deform_conv2d(x, offset, weight, bias, backend="torchvision", **kw)
    assert (ours - theirs).abs().max().item() <= GPU_TOLERANCE * max(1.0, theirs.abs().max().item())


@pytest.mark.gpu
def test_ours_matches_torchvision_on_cuda_at_basicvsrpp_size(exact_fp32: None) -> None:
    """BasicVSR++'s alignment layer (128 → 64 channels, 16 deformable groups, 3×3) on a 1024×432 feature map,
    with flow-sized offsets: the size the vsr stage runs, banded in our implementation."""
    pytest.importorskip("torchvision")
    cuda = torch.device("cuda")
    gen = torch.Generator(device=cuda).manual_seed(0)
    x = torch.randn(1, 128, 432, 1024, device=cuda, generator=gen)
    offset = torch.randn(1, 16 * 18, 432, 1024, device=cuda, generator=gen) * 8
    mask = torch.rand(1, 16 * 9, 432, 1024, device=cuda, generator=gen)
    weight = torch.randn(64, 128, 3, 3, device=cuda, generator=gen) * 0.03
    bias = torch.randn(64, device=cuda, generator=gen)
    ours = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="ours")
    theirs = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="torchvision")
    assert (ours - theirs).abs().max().item() <= GPU_TOLERANCE * max(1.0, theirs.abs().max().item())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_through_torchvision_on_cuda(dtype: torch.dtype, exact_fp32: None) -> None:
    """fp16/bf16 inputs run through torchvision (in fp32, the result back in the input's dtype) and through
    ours, both within the half dtype's rounding of the fp32 result."""
    pytest.importorskip("torchvision")
    cuda = torch.device("cuda")
    case = CASES["deform groups"]
    x, offset, weight, bias, mask = (t.to(cuda) for t in _inputs(case, seed=13))
    want = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="torchvision")
    for backend in ("torchvision", "ours"):
        got = deform.deform_conv2d(
            x.to(dtype),
            offset.to(dtype),
            weight.to(dtype),
            bias.to(dtype),
            mask=mask.to(dtype),
            padding=1,
            backend=backend,
        )
        assert got.dtype == dtype
        # inputs rounded to 8 (bf16) or 11 (fp16) bits of mantissa: a few per cent of the output's range at most
        assert (got.float() - want).abs().max().item() < 0.05 * want.abs().max().item(), backend


def _basicvsrpp_inputs(cuda: torch.device) -> tuple[torch.Tensor, ...]:
    """BasicVSR++'s alignment layer at 1024×432 (128 → 64 channels, 16 deformable groups, 3×3, padding 1) in the
    network's layout: channels-last features, offsets and mask as channel slices of one channels-last output."""
    gen = torch.Generator(device=cuda).manual_seed(0)
    x = torch.randn(1, 128, 432, 1024, device=cuda, generator=gen).contiguous(memory_format=torch.channels_last)
    out = torch.randn(1, 3 * 16 * 9, 432, 1024, device=cuda, generator=gen).contiguous(
        memory_format=torch.channels_last
    )
    offset = out[:, : 2 * 16 * 9].mul_(8)  # flow-sized: many taps past the edges near the borders
    mask = torch.sigmoid(out[:, 2 * 16 * 9 :])
    weight = torch.randn(64, 128, 3, 3, device=cuda, generator=gen) * 0.03
    bias = torch.randn(64, device=cuda, generator=gen)
    return x, offset, weight, bias, mask


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_torchvision_on_cuda(name: str, exact_fp32: None) -> None:
    """fp32 through the kernel (IEEE fp32 dot) against torchvision's; conv groups (not covered): "auto" falls
    back, "triton" refuses."""
    pytest.importorskip("triton")
    pytest.importorskip("torchvision")
    case = CASES[name]
    cuda = torch.device("cuda")
    x, offset, weight, bias, mask = (None if t is None else t.to(cuda) for t in _inputs(case, seed=11))
    kw = {"mask": mask, "stride": case[6], "padding": case[7], "dilation": case[8]}
    theirs = deform.deform_conv2d(x, offset, weight, bias, backend="torchvision", **kw)
    if case[9] != 1:
        with pytest.raises(ModelError, match="groups = 1"):
            deform.deform_conv2d(x, offset, weight, bias, backend="triton", **kw)
        auto = deform.deform_conv2d(x, offset, weight, bias, **kw)
        assert (auto - theirs).abs().max().item() <= GPU_TOLERANCE * max(1.0, theirs.abs().max().item())
        return
    for fmt in (torch.contiguous_format, torch.channels_last):
        got = deform.deform_conv2d(x.contiguous(memory_format=fmt), offset, weight, bias, backend="triton", **kw)
        assert got.is_contiguous(memory_format=fmt)
        assert (got - theirs).abs().max().item() <= GPU_TOLERANCE * max(1.0, theirs.abs().max().item())


@pytest.mark.gpu
def test_triton_matches_torchvision_on_cuda_at_basicvsrpp_size(exact_fp32: None) -> None:
    """The network's real layer in fp32, and "auto" (CUDA with Triton: the kernel) giving the same."""
    pytest.importorskip("triton")
    pytest.importorskip("torchvision")
    x, offset, weight, bias, mask = _basicvsrpp_inputs(torch.device("cuda"))
    theirs = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="torchvision")
    got = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="triton")
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - theirs).abs().max().item() <= GPU_TOLERANCE * max(1.0, theirs.abs().max().item())
    auto = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1)
    torch.testing.assert_close(auto, got, atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_triton_at_basicvsrpp_size(dtype: torch.dtype, tolerance: float, exact_fp32: None) -> None:
    """fp16/bf16 through the kernel against torchvision's fp32 on the same rounded inputs: what is left is the A
    tile's rounding to the dtype (fp32 accumulation) and the output's (fp16: ~4·10⁻⁴ of the range expected)."""
    pytest.importorskip("triton")
    pytest.importorskip("torchvision")
    half = [t.to(dtype) for t in _basicvsrpp_inputs(torch.device("cuda"))]
    x, offset, weight, bias, mask = half
    theirs = deform.deform_conv2d(*(t.float() for t in half[:4]), mask=mask.float(), padding=1, backend="torchvision")
    got = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="triton")
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert (got.float() - theirs).abs().max().item() <= tolerance * max(1.0, theirs.abs().max().item())


@pytest.mark.gpu
def test_auto_falls_back_when_the_triton_kernel_fails_and_triton_says_it(monkeypatch, caplog) -> None:
    """A kernel that does not build or launch (a driver, a Triton version) must not stop a run on "auto": the
    fallback takes over for the process, said once; `backend="triton"` still raises."""
    pytest.importorskip("triton")
    from vidpipe.models.archs import deform_triton

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("PTX: no kernel image for this device")

    monkeypatch.setattr(deform_triton, "deform_conv2d_triton", broken)
    monkeypatch.setattr(deform, "_triton_failed", None)
    x, offset, weight, bias, mask = _basicvsrpp_inputs(torch.device("cuda"))
    with pytest.raises(RuntimeError, match="no kernel image"):
        deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend="triton")
    with caplog.at_level("WARNING"):
        got = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1)
        deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no kernel image" in (deform._triton_failed or "")
    fallback = "torchvision" if deform.has_torchvision() else "ours"
    want = deform.deform_conv2d(x, offset, weight, bias, mask=mask, padding=1, backend=fallback)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
