"""RIFE HDv3's fast path (`vidpipe.models.ifnet_fast`) against the module it rearranges.

On the CPU: the exact rewrites (a transposed convolution as a convolution and a pixel shuffle, the merged heads)
and the torch-only path; the Triton parts (fused convolutions, the warp) in Triton's interpreter, in a subprocess
(the interpreter is chosen when the kernels are defined). On CUDA: fp16 through every part and CUDA graphs against
the fp32 module, and the interpolate stage taking the path."""

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
from torch import nn

from vidpipe.errors import ModelError
from vidpipe.models.archs.ifnet import IFNetHDv3
from vidpipe.models.ifnet_fast import PARTS, TC_PARTS, FastHDv3, FastHDv3Runner, _merged_heads, deconv_as_conv

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _net(width: int = 16, std: float = 0.05) -> IFNetHDv3:
    # weights small enough that the flow stays tame: with large random weights the network is chaotic, and fp32
    # rounding alone moves its output (float64 differs from float32 by 0.1 there)
    torch.manual_seed(0)
    net = IFNetHDv3((width, width, width)).eval().requires_grad_(False)
    for p in net.parameters():
        p.data.normal_(0.0, std)
    return net


def _pair(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(1))
    return a, torch.roll(a, (2, 3), (-2, -1)) * 0.9


def test_a_transposed_convolution_is_a_convolution_and_a_pixel_shuffle() -> None:
    torch.manual_seed(0)
    for cin, cout in ((6, 3), (9, 1), (4, 8)):
        d = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        x = torch.randn(2, cin, 5, 7)
        got = F.pixel_shuffle(deconv_as_conv(d)(x), 2)
        assert got.shape == d(x).shape
        assert torch.allclose(got, d(x), atol=1e-5)
    with pytest.raises(ModelError, match="4×4 stride-2"):
        deconv_as_conv(nn.ConvTranspose2d(4, 4, 3, 2, 1))


def test_the_merged_heads_give_both_heads_outputs() -> None:
    net = _net()
    feat = torch.randn(2, 16, 6, 10)
    for i in range(3):
        block = getattr(net, f"block{i}")
        first, act, second = _merged_heads(block)
        out = second(act(first(feat)))
        assert torch.equal(out[:, :4], block.conv1(feat)) or torch.allclose(out[:, :4], block.conv1(feat), atol=1e-6)
        assert torch.allclose(out[:, 4:], block.conv2(feat), atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_the_torch_path_equals_the_module(scale: float) -> None:
    net = _net()
    a, b = _pair(2, 64, 128)
    with torch.inference_mode():
        ref = net(a, b, 0.5, scale)
        got = FastHDv3(net, parts=())(a, b, scale)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert (got - ref).abs().max().item() < 1e-5


def test_parts_are_checked() -> None:
    with pytest.raises(ModelError, match="unknown fast-path parts"):
        FastHDv3(_net(), parts=("fused", "magic"))
    assert PARTS == ("fused", "warp", "graphs")


def test_the_runner_pads_and_crops_any_size_on_the_cpu() -> None:
    net = _net()
    a, b = _pair(1, 50, 70)  # not multiples of 32
    with torch.inference_mode():
        ref = net.interpolate(a, b)
        got = FastHDv3Runner(net, parts=()).interpolate(a, b)
    assert got.shape == (1, 3, 50, 70)
    assert (got - ref).abs().max().item() < 1e-5


_TRITON_CHECKS = textwrap.dedent(
    """
    import torch
    from vidpipe.models.archs.ifnet import IFNetHDv3, backward_warp
    from vidpipe.models.ifnet_fast import FastHDv3, warp
    torch.manual_seed(0)
    # the warp, flows large enough to leave the frame on every side (border clamping), any layout
    img = torch.rand(2, 3, 20, 28).contiguous(memory_format=torch.channels_last)
    flow = torch.randn(2, 2, 20, 28) * 12
    print("WARP", (warp(img, flow) - backward_warp(img, flow)).abs().max().item())
    print("WARP16", (warp(img.half(), flow).float() - backward_warp(img.half(), flow).float()).abs().max().item())
    net = IFNetHDv3((16, 16, 16)).eval().requires_grad_(False)
    for p in net.parameters():
        p.data.normal_(0.0, 0.05)
    a = torch.rand(1, 3, 32, 64)
    b = torch.roll(a, 3, -1) * 0.9
    with torch.inference_mode():
        ref = net(a, b)
        for parts in (("fused",), ("warp",), ("fused", "warp")):
            got = FastHDv3(net, parts=parts)(a, b)
            print("NET", "+".join(parts), (got - ref).abs().max().item())
    """
)


@needs_triton
@pytest.mark.slow
def test_the_triton_parts_equal_the_module_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECKS], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = {" ".join(line.split()[:-1]): float(line.split()[-1]) for line in done.stdout.splitlines()}
    assert got["WARP"] < 1e-5, got
    assert got["WARP16"] < 2e-3, got  # the same fp32 arithmetic, rounded to fp16 once
    for parts in ("fused", "warp", "fused+warp"):
        assert got[f"NET {parts}"] < 1e-4, got


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / torch.mean((a.float() - b.float()) ** 2)))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("parts", [("graphs",), ("fused", "warp"), PARTS, ("tc",), TC_PARTS])
def test_fp16_fast_path_on_cuda_is_close_to_the_fp32_module(parts: tuple[str, ...]) -> None:
    dev = torch.device("cuda")
    net32 = _net(90, 0.02).to(dev)
    net16 = _net(90, 0.02).to(dev).half()
    a, b = (t.to(dev) for t in _pair(2, 270, 480))
    with torch.inference_mode():
        ref = net32.interpolate(a, b)
        runner = FastHDv3Runner(net16, parts=parts)
        got = runner.interpolate(a.half(), b.half())
        again = runner.interpolate(a.half(), b.half())  # a graph's replay, for parts with graphs
    assert got.shape == ref.shape and got.dtype == torch.float16
    assert _psnr(got, ref) >= 45.0
    assert torch.equal(got, again)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kernels", ["fast", "tc", "auto"])
def test_the_interpolate_stage_takes_the_fast_path_on_cuda(kernels: str) -> None:
    """The stage with its real weights, fast fp16 against eager fp32, on a pair with a flow to find (the bench's
    `parity_pair`): rolled random noise has none, and there fp16 eager and the fast path wander apart from fp32
    alike (25 dB between them on the H100), which says nothing about the kernels."""
    from fractions import Fraction

    from vidpipe.bench.interpolate import parity_pair
    from vidpipe.frames import StreamSpec
    from vidpipe.models.ifnet_fast import FastHDv3Runner as Runner
    from vidpipe.stages.interpolate import Interpolate

    path = Path(os.environ.get("VIDPIPE_HOME", Path.home() / ".cache/vidpipe")) / "models/flownet.safetensors"
    if not path.is_file():
        pytest.skip("rife-hdv3 weights are not cached")
    dev = torch.device("cuda")
    spec = StreamSpec(width=320, height=180, rate=Fraction(30), time_base=Fraction(1, 30))
    fast = Interpolate(str(path), multi=2, kernels=kernels)
    plain = Interpolate(str(path), multi=2, kernels="torch")
    ref = Interpolate(str(path), multi=2, kernels="torch", dtype="fp32")
    for stage in (fast, plain, ref):
        stage.setup(dev, spec)
    assert isinstance(fast._fast, Runner) and plain._fast is None and ref._fast is None
    assert ("tc" in fast._fast.fast.parts) == (kernels != "fast")
    a, b = (t.repeat(3, 1, 1, 1) for t in parity_pair((320, 180), dev))
    want = ref._call(a, b, 0.5).float()
    got = fast._call(a.half(), b.half(), 0.5)
    eager16 = plain._call(a.half(), b.half(), 0.5)
    assert got.dtype == torch.float16 and got.shape == want.shape
    assert _psnr(got, want) >= 45.0
    assert _psnr(got, want) >= _psnr(eager16, want) - 1.0  # no worse than fp16 eager, within 1 dB
