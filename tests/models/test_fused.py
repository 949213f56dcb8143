"""Our Triton kernels (`vidpipe.models.fused`) against PyTorch's layers.

On CPU they run in Triton's interpreter, in a subprocess (the interpreter is chosen when the kernels are defined,
at import): every feature of the kernel (input channel slices, nearest ×2 input, PReLU/LeakyReLU, two scaled
residuals, pixel shuffle, channel padding) and both networks, in fp32 and fp16. On CUDA the compiled kernels are
checked against the eager networks and through the upscale stage."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from calibration import scaled
from vidpipe.errors import UsageError
from vidpipe.models.archs.rrdb import RRDBNet
from vidpipe.models.archs.srvgg import SRVGGNetCompact

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

_CONV_CHECKS = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from torch import nn
    from vidpipe.models.fused import PackedConv, conv3x3
    torch.manual_seed(0)

    def check(cin, cout, up=1, act=None, shuffle=1, res=False, dtype=torch.float32):
        n, h, w = 2, 5, 7
        conv = nn.Conv2d(cin, cout, 3, 1, 1)
        pr = nn.PReLU(cout) if act == "prelu" else None
        if pr is not None:
            pr.weight.data.uniform_(-0.5, 0.5)
        x = torch.randn(n, cin, h, w)
        big = torch.randn(n, cin + 5, h, w).contiguous(memory_format=torch.channels_last)
        big[:, 2 : 2 + cin] = x  # the kernel reads a channel slice of a bigger channels-last buffer
        xu = F.interpolate(x, scale_factor=up, mode="nearest") if up > 1 else x
        ref = conv(xu)
        ref = pr(ref) if act == "prelu" else F.leaky_relu(ref, 0.2) if act == "leaky" else ref
        co = cout // (shuffle * shuffle)
        r1 = torch.randn(n, co, h * up, w * up) if res else None
        r2 = torch.randn(n, co, h * up, w * up).contiguous(memory_format=torch.channels_last) if res else None
        if shuffle > 1:
            ref = F.pixel_shuffle(ref, shuffle)
        if res:
            near = lambda r: F.interpolate(r, scale_factor=shuffle, mode="nearest") if shuffle > 1 else r
            ref = (ref * 0.2 + near(r1)) * 0.3 + near(r2)
        out = torch.empty(n, co, h * up * shuffle, w * up * shuffle, dtype=dtype)
        conv3x3(big[:, 2 : 2 + cin].to(dtype), PackedConv.of(conv, pr, dtype=dtype), out, act=act, up=up,
                shuffle=shuffle, res1=None if r1 is None else r1.to(dtype), alpha=0.2,
                res2=None if r2 is None else r2.to(dtype), beta=0.3)
        return (out.float() - ref.detach()).abs().max().item()

    with torch.no_grad():
        for args, tol in [
            ((64, 64, 1, "prelu"), 1e-4), ((3, 64, 1, "prelu"), 1e-4), ((96, 32, 1, "leaky"), 1e-4),
            ((160, 32, 1, "leaky"), 1e-4), ((64, 48, 1, None, 4, True), 1e-4), ((192, 64, 1, None, 1, True), 1e-4),
            ((64, 64, 2, "leaky"), 1e-4), ((64, 3), 1e-4),
        ]:
            err = check(*args)
            assert err < tol, (args, err)
        err = check(64, 64, act="prelu", dtype=torch.float16)
        assert err < 0.05, err
    print("conv ok")
    """
)

_NET_CHECKS = textwrap.dedent(
    """
    import torch
    from vidpipe.models.archs.rrdb import RRDBNet
    from vidpipe.models.archs.srvgg import SRVGGNetCompact
    from vidpipe.models.fused import fuse
    torch.manual_seed(0)
    nets = [SRVGGNetCompact(num_feat=16, num_conv=3, scale=4), SRVGGNetCompact(num_feat=16, num_conv=2, scale=2),
            RRDBNet(num_feat=16, num_block=2, num_grow_ch=16, scale=4),
            RRDBNet(num_feat=16, num_block=1, num_grow_ch=16, scale=2)]
    for net in nets:
        for p in net.parameters():
            p.data.normal_(0, 0.1)
        x = torch.rand(2, 3, 6, 10).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ref = net.eval()(x)
            fz = fuse(net, torch.float32)
            for planar in (False, True):
                fz.channels_last_out = not planar
                out = fz(x)
                assert out.shape == ref.shape, (type(net).__name__, out.shape, ref.shape)
                err = (out - ref).abs().max().item()
                assert err < 1e-4, (type(net).__name__, err)
    print("nets ok")
    """
)


def _interpret(code: str) -> str:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=scaled(600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@needs_triton
@pytest.mark.timeout(600)
def test_conv_kernel_matches_pytorch_layers_in_the_interpreter():
    assert "conv ok" in _interpret(_CONV_CHECKS)


@needs_triton
@pytest.mark.slow  # both networks through Triton's interpreter: over a minute on 2 quiet cores
@pytest.mark.timeout(600)
def test_fused_networks_match_the_modules_in_the_interpreter():
    assert "nets ok" in _interpret(_NET_CHECKS)


def test_kernels_option_is_checked(tmp_path):
    from vidpipe.stages.base import StreamSpec
    from vidpipe.stages.upscale import Upscale

    with pytest.raises(UsageError, match="invalid kernels"):
        Upscale("x.safetensors", kernels="cudnn")
    with pytest.raises(UsageError, match="--compile applies"):
        Upscale("x.safetensors", kernels="fused", compile=True)
    if os.environ.get("TRITON_INTERPRET") != "1":
        from safetensors.torch import save_file

        path = tmp_path / "tiny.safetensors"
        save_file(SRVGGNetCompact(num_feat=8, num_conv=1, scale=2).state_dict(), str(path))
        stage = Upscale(str(path), kernels="fused")
        spec = StreamSpec(width=32, height=24, time_base=Fraction(1, 25))
        with pytest.raises(UsageError, match="needs a CUDA device"):
            stage.setup(torch.device("cpu"), spec)


def _random(net: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return net.eval()


@pytest.mark.gpu
@pytest.mark.parametrize(
    "net",
    [
        SRVGGNetCompact(num_feat=64, num_conv=16, scale=4),  # realesr-animevideov3's shape
        RRDBNet(num_feat=64, num_block=2, num_grow_ch=32, scale=4),  # x4plus's block shape, 2 of its 23 blocks
        RRDBNet(num_feat=64, num_block=1, num_grow_ch=32, scale=2),
    ],
    ids=["srvgg", "rrdb-x4", "rrdb-x2"],
)
def test_fused_networks_match_eager_on_cuda(net):
    from vidpipe.models.fused import fuse

    dev = torch.device("cuda")
    net = _random(net).to(dev, torch.float16).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 120, 200, device=dev, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = net(x).float()
        out = fuse(net, torch.float16)(x).float()
    mse = (out - ref).pow(2).mean().item()
    assert out.shape == ref.shape and 10 * torch.log10(torch.tensor(1 / max(mse, 1e-12))).item() > 50


@pytest.mark.gpu
def test_upscale_stage_with_fused_kernels_matches_torch(tmp_path):
    from safetensors.torch import save_file

    from vidpipe.frames import FrameBatch
    from vidpipe.stages.base import StreamSpec
    from vidpipe.stages.upscale import Upscale

    path = tmp_path / "srvgg.safetensors"
    save_file(_random(SRVGGNetCompact(num_feat=64, num_conv=4, scale=4)).state_dict(), str(path))
    dev = torch.device("cuda")
    frames = torch.randint(0, 256, (3, 3, 90, 160), dtype=torch.uint8)
    outs = []
    for kernels in ("torch", "fused"):
        stage = Upscale(str(path), kernels=kernels, outscale=2, tile=0)
        stage.setup(dev, StreamSpec(width=160, height=90, time_base=Fraction(1, 25)))
        batch = FrameBatch(data=frames, pts=[0, 1, 2], time_base=Fraction(1, 25), index=[0, 1, 2])
        outs.append(stage.process(batch).data.cpu().int())
    assert outs[0].shape == outs[1].shape == (3, 3, 180, 320)
    assert (outs[0] - outs[1]).abs().max().item() <= 2
