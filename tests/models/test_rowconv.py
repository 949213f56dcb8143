"""The Hopper row-sweep convolution (`vidpipe.models.rowconv`) against PyTorch's layers.

On a CPU machine the kernel cannot run, but it is compiled for sm_90 with the installed Triton (in a subprocess,
with a stand-in driver): Gluon's API moves between Triton releases, and this is where a Triton that no longer
builds it shows up. On an H100 it is checked against `F.conv2d` on awkward shapes (narrower than a strip, fewer
rows than the ring, several units per CTA so the ring's phases run on across units, channel slices of bigger
buffers), in fp16 and bf16, for each activation; so are the first layer (RGB in) and SRVGG's tail (pixel shuffle
and upsampled input in the epilogue); and the fused SRVGG network is checked to route all its layers through it."""

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

from calibration import scaled

needs_gluon = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("triton.experimental.gluon") is None,
    reason="Triton with Gluon is not installed",
)


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


_COMPILE = textwrap.dedent(
    """
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class Sm90:  # the driver's answers compile() needs, for a GPU this machine does not have
        def get_current_target(self): return GPUTarget("cuda", 90, 32)
        def get_current_device(self): return 0
        def get_current_stream(self, device=None): return 0
        def get_active_torch_device(self): return torch.device("cpu")
        def is_active(self): return True
        def map_python_to_cpp_type(self, t): return t
    driver.set_active(Sm90())

    from vidpipe.models import rowconv as rc
    from triton.experimental.gluon import language as gl
    # (input channels, shuffle, partial sum in, activated rows, residual): plain layers, the first layer, SRVGG's
    # tail, and the variants of RRDB's dense blocks
    variants = ((64, 0, False, 64, False), (16, 0, False, 64, False), (64, 4, False, 64, False),
                (64, 0, False, 32, False), (32, 0, True, 32, False), (64, 0, True, 32, False), (64, 0, True, 64, True))
    for dtype in (torch.float16, torch.bfloat16):
        for k, shuffle, acc, act_rows, res in variants:
            x = torch.empty(1, k, 40, 130, dtype=dtype).contiguous(memory_format=torch.channels_last)
            lay = gl.NVMMASharedLayout(swizzle_byte_width=min(128, 2 * k), element_bitwidth=16, rank=4)
            desc = rc.TensorDescriptor.from_tensor(x.permute(0, 2, 3, 1), [1, 1, rc.BW, k], lay)
            olay = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=4)
            y = torch.empty(1, 64, 40, 130, dtype=dtype).contiguous(memory_format=torch.channels_last)
            odesc = rc.TensorDescriptor.from_tensor(y.permute(0, 2, 3, 1), [1, 1, rc.BW, 64], olay)
            w = torch.empty(9 * 64, k, dtype=dtype)
            b = torch.empty(64)
            out = torch.empty(1, 3, 160, 520, dtype=dtype)
            if shuffle == 0:
                out = y
            k_ = rc._rowconv_kernel.warmup(desc, odesc, w, b, b, 3, 15, 15, 8, out, x, 40, 130,
                                           *out.stride(), *out.stride(), 0.2, ACT=1 if shuffle == 0 else 0,
                                           SLOPE=0.2, R=rc.RING, SHUFFLE=shuffle, C_REAL=48, ACC=acc,
                                           ACT_ROWS=act_rows, HAS_RES=res, num_warps=4, grid=(1,))
            ptx = k_.asm["ptx"]
            # 9 taps x k/16 steps, A (weights) from registers: its operand list opens with "{%r"
            mmas = [ln for ln in ptx.splitlines() if "wgmma.mma_async" in ln]
            print("mmas", k, shuffle, len(mmas), all(ln.split("}, ")[1].startswith("{") for ln in mmas),
                  k_.metadata.shared)
    """
)


@needs_gluon
@pytest.mark.slow  # a full Gluon compile for sm_90 in a subprocess: ~20 s on 2 quiet cores
def test_kernel_compiles_for_hopper_with_the_installed_triton():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    env.pop("TRITON_INTERPRET", None)
    run = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=scaled(600))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("mmas")]
    assert len(lines) == 14, run.stdout
    for ln in lines:
        _, k, _shuffle, mmas, reg_a, shared = ln.split()
        assert int(mmas) == 9 * int(k) // 16 and reg_a == "True", ln
        # two CTAs must fit an H100 SM (228 KB, 1 KB of it reserved per CTA)
        assert int(shared) <= (228 * 1024) // 2 - 1024, ln


def test_usable_refuses_what_the_kernel_cannot_take():
    from vidpipe.models import rowconv as rc

    half = torch.float16
    x = torch.empty(1, 64, 8, 8, dtype=half).contiguous(memory_format=torch.channels_last)
    assert not rc.usable(x, x, 64, 64, "prelu")  # a CPU tensor
    assert not rc._nhwc_ok(torch.empty(1, 64, 8, 8, dtype=half))  # NCHW: channels are not innermost
    assert rc._nhwc_ok(x)
    big = torch.empty(1, 96, 8, 8, dtype=half).contiguous(memory_format=torch.channels_last)
    assert rc._nhwc_ok(big[:, 32:96])  # a 16-byte aligned channel slice is a valid TMA view
    assert not rc._nhwc_ok(big[:, 4:68])  # 8-byte aligned base: refused


def test_rows_per_unit_gives_every_cta_one_unit():
    from vidpipe.models.rowconv import BW, rows_per_unit

    for n, h, w in ((1, 1080, 1920), (1, 720, 1280), (1, 540, 960), (8, 1080, 1920), (2, 37, 45)):
        u = rows_per_unit(n, h, w, 264)
        units = n * -(-w // BW) * -(-h // u)
        assert u >= 8 and (units <= 264 or u == 8), (n, h, w, u, units)
        assert units > 132 or u * 2 > h or u == 8  # no fewer units than half the slots unless rows run out


def _reference(x: torch.Tensor, conv: torch.nn.Conv2d, act: str | None, slopes: torch.Tensor) -> torch.Tensor:
    y = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
    if act == "prelu":
        return F.prelu(y, slopes)
    return F.leaky_relu(y, 0.2) if act == "leaky" else y


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("act", ["prelu", "leaky", None])
@pytest.mark.parametrize(
    ("n", "h", "w", "rows"),
    [(1, 70, 130, None), (2, 37, 45, None), (1, 3, 5, None), (2, 70, 200, 1), (1, 41, 64, 5), (1, 19, 70, 8)],
)
def test_rowconv_matches_pytorch(dtype, act, n, h, w, rows):
    from vidpipe.models import rowconv as rc
    from vidpipe.models.fused import PackedConv

    torch.manual_seed(0)
    dev = torch.device("cuda")
    conv = torch.nn.Conv2d(64, 64, 3, 1, 1).to(dev)
    prelu = torch.nn.PReLU(64).to(dev)
    prelu.weight.data.uniform_(-0.5, 0.5)
    packed = PackedConv.of(conv, prelu, dtype=dtype)
    # input and output are channel slices of wider channels-last buffers (as in RRDB's dense blocks)
    xin = torch.randn(n, 96, h, w, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x = xin[:, 32:96]
    big = torch.full((n, 128, h, w), float("nan"), device=dev, dtype=dtype)
    big = big.contiguous(memory_format=torch.channels_last)
    out = big[:, 64:]
    assert rc.usable(x, out, 64, 64, act)
    with torch.no_grad():
        rc.conv3x3_rows(x, packed.rows, out, act=act, rows=rows)
        ref = _reference(x, conv, act, prelu.weight.float())
    assert not out.isnan().any(), "pixels left unwritten"
    assert big[:, :64].isnan().all(), "wrote outside its channel slice"
    tol = 5e-3 if dtype == torch.float16 else 4e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("scale", [4, 3, 2])
def test_first_layer_and_shuffle_tail_match_pytorch(monkeypatch, scale):
    """SRVGG's first layer (RGB → 64, input padded to 16 channels) and its tail (64 → 3·s², pixel shuffle, plus
    the nearest-upsampled input) through `fused.conv3x3`, which hands both to the row kernel."""
    from vidpipe.models import rowconv as rc
    from vidpipe.models.fused import PackedConv, conv3x3

    calls = []
    real = rc.conv3x3_rows
    monkeypatch.setattr(rc, "conv3x3_rows", lambda *a, **k: calls.append(k.get("shuffle", 0)) or real(*a, **k))
    torch.manual_seed(0)
    dev, half = torch.device("cuda"), torch.float16
    n, h, w = 2, 37, 75
    first = torch.nn.Conv2d(3, 64, 3, 1, 1).to(dev)
    prelu = torch.nn.PReLU(64).to(dev)
    prelu.weight.data.uniform_(-0.5, 0.5)
    last = torch.nn.Conv2d(64, 3 * scale * scale, 3, 1, 1).to(dev)
    img = torch.rand(n, 3, h, w, device=dev, dtype=half).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        feat = torch.empty(n, 64, h, w, device=dev, dtype=half).contiguous(memory_format=torch.channels_last)
        conv3x3(img, PackedConv.of(first, prelu, dtype=half), feat, act="prelu")
        ref_feat = F.prelu(F.conv2d(img.float(), first.weight, first.bias, padding=1), prelu.weight)
        torch.testing.assert_close(feat.float(), ref_feat, atol=5e-3, rtol=5e-3)
        out = torch.full((n, 3, h * scale, w * scale), float("nan"), device=dev, dtype=half)  # planar
        conv3x3(feat, PackedConv.of(last, dtype=half), out, shuffle=scale, res1=img)
        ref = F.pixel_shuffle(F.conv2d(feat.float(), last.weight, last.bias, padding=1), scale)
        ref = ref + F.interpolate(img.float(), scale_factor=scale, mode="nearest")
    assert calls == [0, scale], "the row kernel did not take both layers"
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref, atol=5e-3, rtol=5e-3)


def _eager_and_fused(num_conv: int, h: int, w: int, *, rrdb: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A random-weight SRVGGNetCompact (or RRDBNet with `num_conv` blocks) on the GPU in fp16, eager and through
    `fuse`, on one random frame."""
    from vidpipe.models.archs.rrdb import RRDBNet
    from vidpipe.models.archs.srvgg import SRVGGNetCompact
    from vidpipe.models.fused import fuse

    dev = torch.device("cuda")
    torch.manual_seed(0)
    net = RRDBNet(num_block=num_conv) if rrdb else SRVGGNetCompact(num_feat=64, num_conv=num_conv, scale=4)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    net = net.eval().to(dev, torch.float16).to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, h, w, device=dev, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return net(x).float(), fuse(net, torch.float16)(x).float()


def _count_row_kernel_calls(monkeypatch) -> list[int]:
    from vidpipe.models import rowconv as rc

    calls: list[int] = []
    real = rc.conv3x3_rows
    monkeypatch.setattr(rc, "conv3x3_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (out - ref).pow(2).mean().item()
    return 10 * torch.log10(torch.tensor(1 / max(mse, 1e-12))).item()


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
def test_fused_srvgg_routes_every_layer_through_rowconv(monkeypatch):
    calls = _count_row_kernel_calls(monkeypatch)
    ref, out = _eager_and_fused(16, 72, 136)
    assert len(calls) == 18  # all of them: the first (3 → 64), the 16 64 → 64 body layers and the tail
    assert out.shape == ref.shape and _psnr(out, ref) > 50


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
def test_a_kernel_that_does_not_build_falls_back_to_triton(monkeypatch, caplog):
    """A Triton whose Gluon rejects the kernel (here: the compiler's own error, injected) costs one warning and
    the speed, never the frames: every layer runs on the Triton kernel instead."""
    from vidpipe.models import rowconv as rc

    class Rejected:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("error encountered during parsing")

            return launch

    monkeypatch.setattr(rc, "_disabled_reason", None)  # restored after the test: the switch-off is global
    monkeypatch.setattr(rc, "_rowconv_kernel", Rejected())
    with caplog.at_level("WARNING"):
        ref, out = _eager_and_fused(4, 40, 72)
    assert "row-sweep convolution kernel off" in caplog.text and "error encountered during parsing" in caplog.text
    assert rc.status(torch.device("cuda")).startswith("off (RuntimeError: error encountered during parsing")
    assert out.shape == ref.shape and _psnr(out, ref) > 50


# ------------------------------------------------------------------ dense blocks split over input channels
def _fake_rows(x, rw, out, *, act, slope=0.2, rows=None, shuffle=0, res=None, accumulate=False, act_rows=64,
               alpha=1.0):  # fmt: skip
    """What `conv3x3_rows` computes without a shuffle, by its docstring, in fp32 with PyTorch."""
    k = rw.weight.shape[1]
    w = rw.weight.float().reshape(3, 3, 64, k).permute(2, 3, 0, 1)
    v = F.conv2d(x.float(), w, rw.bias.float(), padding=1)
    if accumulate:
        v = v + out.float()
    if act == "leaky":
        v[:, :act_rows] = F.leaky_relu(v[:, :act_rows], slope)
    v = v * alpha
    if res is not None:
        v = v + res.float()
    out.copy_(v.to(out.dtype))
    return out


def test_dense_cut_computes_rrdb_blocks(monkeypatch):
    """`DenseCut` (a dense block cut into 64-output × 64/32-input convolutions with partial sums kept in the
    block's own buffer) gives what RRDB's blocks give. The row kernel is replaced by `_fake_rows`, its contract
    in PyTorch, which the GPU test below holds the kernel to."""
    from vidpipe.models import rowconv as rc
    from vidpipe.models.archs.rrdb import RRDBNet
    from vidpipe.models.fused import FusedRRDB

    torch.manual_seed(0)
    net = RRDBNet(num_block=2).eval()  # x4plus's blocks: 64 features, growth 32
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    calls = []
    monkeypatch.setattr(rc, "conv3x3_rows", lambda *a, **k: calls.append(a[2].shape) or _fake_rows(*a, **k))
    fz = FusedRRDB(net, torch.float32)
    feat = torch.randn(2, 64, 11, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fz._trunk(feat, rows=True)
        ref = net.body(feat)
    assert len(calls) == 8 * 3 * 2 and all(s[1] == 64 for s in calls)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    ("k", "act", "accumulate", "act_rows", "alpha", "with_res"),
    [(64, "leaky", False, 32, 1.0, False), (32, "leaky", True, 32, 1.0, False), (64, None, True, 64, 0.2, False),
     (64, None, True, 64, 0.04, True), (64, "leaky", True, 32, 1.0, False)],
)  # fmt: skip
def test_rowconv_partial_sum_epilogue_matches_its_contract(dtype, k, act, accumulate, act_rows, alpha, with_res):
    from vidpipe.models import rowconv as rc

    torch.manual_seed(0)
    dev = torch.device("cuda")
    n, h, w = 2, 37, 75
    conv = torch.nn.Conv2d(k, 64, 3, 1, 1).to(dev)
    rw = rc.RowWeights.of_taps(conv.weight, conv.bias, dtype)
    buf = torch.randn(n, 224, h, w, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x, out, res = buf[:, 64 : 64 + k], buf[:, 128:192], (buf[:, :64] if with_res else None)
    kw = dict(act=act, accumulate=accumulate, act_rows=act_rows, alpha=alpha, res=res)
    before = buf.clone()
    with torch.no_grad():
        want = _fake_rows(x.clone(), rw, out.clone(), **{**kw, "res": None if res is None else res.clone()})
        rc.conv3x3_rows(x, rw, out, **kw)
    assert torch.equal(buf[:, :128], before[:, :128]) and torch.equal(buf[:, 192:], before[:, 192:])
    tol = 1e-2 if dtype == torch.float16 else 6e-2
    torch.testing.assert_close(out.float(), want.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
def test_fused_rrdb_runs_its_dense_blocks_through_rowconv(monkeypatch):
    calls = _count_row_kernel_calls(monkeypatch)
    ref, out = _eager_and_fused(3, 70, 130, rrdb=True)
    # 8 per dense block, 3 blocks a group; plus the first layer and conv_hr (conv_body adds a residual: Triton)
    assert len(calls) == 8 * 3 * 3 + 2
    assert out.shape == ref.shape and _psnr(out, ref) > 50


@pytest.mark.gpu
@pytest.mark.skipif(not _hopper(), reason="needs an sm_90 GPU")
def test_a_dense_block_kernel_that_does_not_build_falls_back_to_triton(monkeypatch, caplog):
    """A row kernel that fails to build in the middle of RRDB's trunk: the whole trunk runs again on the Triton
    kernel (its partial sums are thrown away), one warning, same output."""
    from vidpipe.models import rowconv as rc

    real = rc.conv3x3_rows
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 6:
            raise rc.KernelBuildError("RuntimeError: error encountered during parsing")
        return real(*a, **k)

    monkeypatch.setattr(rc, "_disabled_reason", None)
    monkeypatch.setattr(rc, "conv3x3_rows", flaky)
    with caplog.at_level("WARNING"):
        ref, out = _eager_and_fused(1, 40, 72, rrdb=True)
    assert "row-sweep convolution kernel off" in caplog.text
    assert len(calls) == 6  # the first layer and four of the block's eight calls, then none: Triton took the rest
    assert out.shape == ref.shape and _psnr(out, ref) > 50
