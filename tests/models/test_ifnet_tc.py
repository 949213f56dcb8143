"""RIFE HDv3's tc path (models.ifnet_tc): padded widths on cuDNN-style convolutions with one epilogue pass each,
heads as convolutions + a channels-last pixel shuffle. The same function as the module, on the CPU in fp64."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidpipe.errors import ModelError
from vidpipe.models.archs.ifnet import IFNetHDv3
from vidpipe.models.ifnet_fast import FastHDv3, FastHDv3Runner, available_tc_parts
from vidpipe.models.ifnet_tc import HEAD_OUT, bias_prelu_, shuffle2, subpixel_order, tc_input, tc_levels


def _net() -> IFNetHDv3:
    torch.manual_seed(0)
    net = IFNetHDv3().double().eval().requires_grad_(False)
    for m in net.modules():  # slopes and biases away from the defaults, so a misplaced one shows
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(0.05, 0.5)
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) and m.bias is not None:
            m.bias.data.uniform_(-0.05, 0.05)
    return net


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return a, torch.roll(a, (2, 3), (2, 3)) * 0.9 + 0.05


def test_each_level_equals_its_block() -> None:
    net = _net()
    x = torch.rand(2, 11, 32, 64, dtype=torch.float64)
    for i, lv in enumerate(tc_levels(net)):
        assert lv.cin == 16
        flow, mask = getattr(net, f"block{i}")(x)
        out = lv(tc_input(((x,),), lv.cin))
        assert out.shape == (2, HEAD_OUT, 32, 64)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out[:, :4], flow, rtol=0, atol=1e-12)
        torch.testing.assert_close(out[:, 4:5], mask, rtol=0, atol=1e-12)
        assert torch.count_nonzero(out[:, 5:]) == 0


def test_the_tc_forward_equals_the_torch_forward() -> None:
    net = _net()
    a, b = _pair()
    with torch.inference_mode():
        want = FastHDv3(net, parts=())(a, b)  # the same flow/mask accumulation in fp32
        got = FastHDv3(net, parts=("tc",))(a, b)
        module = net(a, b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert (got - module).abs().max().item() < 1e-5


def test_the_runner_takes_any_size() -> None:
    net = _net()
    a = torch.rand(1, 3, 50, 70, dtype=torch.float64)
    b = torch.roll(a, 2, -1)
    with torch.inference_mode():
        got = FastHDv3Runner(net, parts=("tc",)).interpolate(a, b)
        want = net.interpolate(a, b)
    assert got.shape == (1, 3, 50, 70)
    assert (got - want).abs().max().item() < 1e-5


def test_shuffle2_is_pixel_shuffle_in_subpixel_order() -> None:
    y = torch.rand(2, 4 * 6, 5, 7)
    order = subpixel_order(6, y.device)
    # channel (2·ry + rx)·C + o of the reordered tensor is channel 4·o + 2·ry + rx of pixel_shuffle's input
    plain = torch.empty_like(y)
    plain[:, order] = y
    got = shuffle2(y.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, F.pixel_shuffle(plain, 2), rtol=0, atol=0)


def test_bias_prelu_in_place() -> None:
    x = torch.randn(2, 8, 3, 5).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 8, 3, 5)
    b, a = torch.randn(8), torch.rand(8)
    v = x + b.view(1, 8, 1, 1)
    want = torch.where(v > 0, v, v * a.view(1, 8, 1, 1)) + skip
    y = x.clone(memory_format=torch.channels_last)
    out = bias_prelu_(y, b, a, skip)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, want)
    with pytest.raises(ModelError, match="channels"):
        bias_prelu_(y, b[:4], a)


def test_parts_tc_and_fused_exclude_each_other() -> None:
    with pytest.raises(ModelError, match="pick one"):
        FastHDv3(_net(), parts=("tc", "fused"))
    assert available_tc_parts(torch.device("cpu")) == ()


_KERNEL_CHECK = textwrap.dedent(
    """
    import torch
    from vidpipe.models.ifnet_tc import bias_prelu_
    g = torch.Generator().manual_seed(0)
    for c, skip in ((16, False), (96, True), (384, False)):
        x = torch.randn(2, c, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
        s = torch.randn(2, c, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
        b, a = torch.randn(c, generator=g), torch.rand(c, generator=g)
        v = x + b.view(1, c, 1, 1)
        want = torch.where(v > 0, v, v * a.view(1, c, 1, 1)) + (s if skip else 0)
        got = bias_prelu_(x.clone(memory_format=torch.channels_last), b, a, s if skip else None)
        print(c, skip, (got - want).abs().max().item())
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_triton_epilogue_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")[:-1]
    assert len(lines) == 3
    for line in lines:
        assert float(line.split()[-1]) < 1e-6, line
