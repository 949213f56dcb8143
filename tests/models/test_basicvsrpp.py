"""BasicVSR++ (archs/basicvsrpp.py, zoo_basicvsrpp.py): the official checkpoints' key layout, a random-weight
round trip through the loader in the checkpoint's own naming, the pieces whose conventions are easy to get wrong
(flow warping, the alignment's offset layout), and forwards on tiny clips."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calibration import scaled
from vidpipe.errors import ModelError
from vidpipe.models import zoo_basicvsrpp
from vidpipe.models.archs import basicvsrpp
from vidpipe.models.descriptor import detect_architecture
from vidpipe.models.loading import describe, load_model_info
from vidpipe.models.spec import get_spec

CPU = torch.device("cpu")

# --- the official layout, written out from mmagic's BasicVSRPlusPlusNet.__init__ and the modules it uses
# (SPyNet / SPyNetBasicModule / ResidualBlocksWithInputConv in basicvsr_net.py, ResidualBlockNoBN,
# PixelShufflePack, mmcv's ModulatedDeformConv2d: `weight` and `bias` only); independent of basicvsrpp.py -------

#: BasicVSR++'s size in the paper (Chan et al. 2022, table 1: 7.3 M parameters, SPyNet included)
PAPER_PARAMS_M = 7.3
#: SPyNetBasicModule: five 7×7 ConvModules (conv + ReLU, none after the last), 8 → 32 → 64 → 32 → 16 → 2
SPYNET_WIDTHS = (8, 32, 64, 32, 16, 2)
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


def official_layout(mid: int = 64, blocks: int = 7, deform_groups: int = 16, low_res: bool = True) -> dict:
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int = 3) -> None:
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def blocks_with_input_conv(prefix: str, cin: int, n: int) -> None:
        conv(f"{prefix}.main.0", mid, cin)
        for i in range(n):
            conv(f"{prefix}.main.2.{i}.conv1", mid, mid)
            conv(f"{prefix}.main.2.{i}.conv2", mid, mid)

    for level in range(6):
        for j in range(5):
            conv(f"spynet.basic_module.{level}.basic_module.{j}.conv", SPYNET_WIDTHS[j + 1], SPYNET_WIDTHS[j], 7)
    keys["spynet.mean"] = keys["spynet.std"] = (1, 3, 1, 1)
    if low_res:
        blocks_with_input_conv("feat_extract", 3, 5)
    else:
        conv("feat_extract.0", mid, 3)
        conv("feat_extract.2", mid, mid)
        blocks_with_input_conv("feat_extract.4", mid, 5)
    for i, b in enumerate(BRANCHES):
        keys[f"deform_align.{b}.weight"], keys[f"deform_align.{b}.bias"] = (mid, 2 * mid, 3, 3), (mid,)
        conv(f"deform_align.{b}.conv_offset.0", mid, 3 * mid + 4)
        conv(f"deform_align.{b}.conv_offset.2", mid, mid)
        conv(f"deform_align.{b}.conv_offset.4", mid, mid)
        conv(f"deform_align.{b}.conv_offset.6", 27 * deform_groups, mid)
        blocks_with_input_conv(f"backbone.{b}", (2 + i) * mid, blocks)
    blocks_with_input_conv("reconstruction", 5 * mid, 5)
    conv("upsample1.upsample_conv", 4 * mid, mid)
    conv("upsample2.upsample_conv", 4 * 64, mid)
    conv("conv_hr", 64, 64)
    conv("conv_last", 3, 64)
    return keys


def random_checkpoint(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in `layout`, keyed as the .pth stores them (`generator.` + key, and `step_counter`),
    scaled like an initialised network (weights ~ 1/√fan-in) so that a forward stays finite."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        if key.endswith((".mean", ".std")):
            t = 0.3 + 0.2 * torch.rand(shape, generator=gen)
        elif len(shape) > 1:
            t = torch.randn(shape, generator=gen) * (0.5 / math.sqrt(math.prod(shape[1:])))
        else:
            t = torch.randn(shape, generator=gen) * 0.01
        state[f"generator.{key}"] = t
    state["step_counter"] = torch.tensor([600000.0])
    return state


def _clip(n: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- layout and loading ---------------------------------------------------------------------------------


def test_state_dict_is_the_official_layout() -> None:
    net = basicvsrpp.BasicVSRPlusPlus()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == official_layout()
    params = sum(p.numel() for p in net.parameters())
    assert round(params / 1e6, 1) == PAPER_PARAMS_M
    assert basicvsrpp.ARCHITECTURE.task == "vsr" and basicvsrpp.ARCHITECTURE.tiling == "discouraged"


def test_random_checkpoint_round_trips_through_the_loader(tmp_path: Path) -> None:
    """Random weights under the checkpoint's own names (`generator.` prefix, `step_counter`) load strictly, every
    tensor lands where its name says, and after save → load the network computes exactly what it did."""
    saved = random_checkpoint(official_layout())
    path = tmp_path / "bvsrpp_random.pth"
    torch.save(saved, path)
    info = load_model_info(path, CPU, torch.float32, task="vsr")
    assert (info.arch, info.task, info.scale, info.size_multiple) == ("basicvsrpp", "vsr", 4, 1)
    assert info.params == {
        "mid_channels": 64,
        "num_blocks": 7,
        "extract_blocks": 5,
        "reconstruct_blocks": 5,
        "deform_groups": 16,
        "low_res_input": True,
    }
    loaded = info.module.state_dict()
    assert set(loaded) == {k.removeprefix("generator.") for k in saved if k != "step_counter"}
    assert all(torch.equal(loaded[k.removeprefix("generator.")], v) for k, v in saved.items() if k != "step_counter")
    # the same weights put straight into a fresh network (strict load), that network saved in our layout and
    # loaded back through the loader (built on the meta device, weights assigned): the same tensors, same frames
    direct = basicvsrpp.BasicVSRPlusPlus().eval()
    direct.load_state_dict(basicvsrpp.canonical_basicvsrpp(saved), strict=True)
    again = tmp_path / "ours.pth"
    torch.save(direct.state_dict(), again)
    reloaded = load_model_info(again, CPU, torch.float32, task="vsr").module
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in loaded.items())
    clip = _clip(1, 2, 8, 12)
    with torch.inference_mode():
        want = direct(clip)
        assert torch.isfinite(want).all() and want.shape == (1, 2, 3, 32, 48)
        assert torch.equal(reloaded(clip), want)


def test_the_mmcv_checkpoint_wrapper_loads(tmp_path: Path) -> None:
    """The published files are mmcv checkpoints: the state dict under `state_dict`, beside `meta`."""
    path = tmp_path / "wrapped.pth"
    meta = {"mmedit_version": "0.7.0", "config": "model = dict(type='BasicVSR')", "iter": 600000}
    torch.save({"meta": meta, "state_dict": random_checkpoint(official_layout())}, path)
    assert load_model_info(path, CPU, torch.float32, task="vsr").arch == "basicvsrpp"


def test_hyper_parameters_come_from_the_shapes() -> None:
    """The NTIRE 2021 models (128 channels, 25 blocks) and the same-size-input layout load by shape alone."""
    ntire = {k.removeprefix("generator."): v for k, v in random_checkpoint(official_layout(128, 25)).items()}
    desc = describe(ntire)  # detected, canonicalised (the stray step_counter dropped), built, loaded strictly
    assert desc.hparams["mid_channels"] == 128 and desc.hparams["num_blocks"] == 25 and desc.scale == 4
    same_size = random_checkpoint(official_layout(16, 2, deform_groups=8, low_res=False))
    desc = describe(same_size)
    assert (desc.scale, desc.size_multiple, desc.hparams["low_res_input"], desc.hparams["deform_groups"]) == (
        1,
        4,
        False,
        8,
    )
    with torch.inference_mode():
        out = desc.module.eval()(_clip(1, 2, 32, 40))
    assert out.shape == (1, 2, 3, 32, 40) and torch.isfinite(out).all()
    with pytest.raises(ModelError, match="multiples of 4"):
        desc.module(_clip(1, 2, 30, 40))


def test_detected_only_as_basicvsrpp() -> None:
    state = random_checkpoint(official_layout(16, 1, deform_groups=2))
    assert detect_architecture(state).name == "basicvsrpp"  # prefixed as in the file
    plain = basicvsrpp.canonical_basicvsrpp(state)
    assert "step_counter" not in plain and detect_architecture(plain).name == "basicvsrpp"
    with pytest.raises(ModelError, match="feature extractor"):
        basicvsrpp.build_basicvsrpp({k: v for k, v in plain.items() if not k.startswith("feat_extract.")})


def test_registry_entries() -> None:
    names = ("basicvsrpp-reds4", "basicvsrpp-vimeo90k-bi", "basicvsrpp-vimeo90k-bd")
    for name in names:
        s = get_spec(name, "vsr")
        assert (s.arch, s.scale, s.task, s.licence, s.format) == ("basicvsrpp", 4, "vsr", "Apache-2.0", "pth")
        assert s.url == f"https://download.openmmlab.com/mmediting/restorers/basicvsr_plusplus/{s.filename}"
        # OpenMMLab's file names end in the first 8 hex digits of the file's sha256
        short = re.fullmatch(r"basicvsr_plusplus_c64n7_8x1_\d+k_[a-z0-9_]+_\d{8}-([0-9a-f]{8})\.pth", s.filename)
        assert short is not None and re.fullmatch(r"[0-9a-f]{64}", s.sha256)
        assert s.sha256.startswith(short.group(1)), name
        assert s.in_default_set and not s.offline_source
    assert zoo_basicvsrpp.REDS4.filename == "basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth"


# --- the conventions inside ------------------------------------------------------------------------------


def test_flow_warp_moves_by_whole_pixels_exactly() -> None:
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 2, 9, 11)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # (dx, dy): each output pixel reads 2 to the right, 1 up
    out = basicvsrpp.flow_warp(x, flow)
    torch.testing.assert_close(out[:, :, 1:, :-2], x[:, :, :-1, 2:], atol=1e-6, rtol=0)
    assert (out[:, :, 0] == 0).all() and (out[:, :, :, -2:] == 0).all()  # zeros from outside
    border = basicvsrpp.flow_warp(x, flow, padding="border")
    torch.testing.assert_close(border[:, :, 0, :-2], x[:, :, 0, 2:], atol=1e-6, rtol=0)
    half = basicvsrpp.flow_warp(x.bfloat16(), flow.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), out.bfloat16().float())


def test_alignment_offsets_are_the_flows_of_each_half() -> None:
    """With the residue layer zeroed (mmagic's initialisation), the offsets are exactly the flows and the mask
    is ½: the deformable convolution is then a plain one over the previous output shifted by flow 1 and the
    output two steps back shifted by flow 2 (whole-pixel flows, compared away from the borders)."""
    c = 4
    align = basicvsrpp.SecondOrderDeformableAlignment(c, deform_groups=4)
    with torch.no_grad():
        align.conv_offset[-1].weight.zero_()
        align.conv_offset[-1].bias.zero_()
        align.bias.normal_()
    gen = torch.Generator().manual_seed(1)
    prev, before = torch.randn(1, c, 12, 13, generator=gen), torch.randn(1, c, 12, 13, generator=gen)
    flow_1, flow_2 = torch.zeros(1, 2, 12, 13), torch.zeros(1, 2, 12, 13)
    flow_1[:, 0], flow_1[:, 1] = 2.0, -1.0
    flow_2[:, 0], flow_2[:, 1] = -1.0, 3.0
    cond = torch.randn(1, 3 * c, 12, 13, generator=gen)
    with torch.no_grad():
        got = align(torch.cat((prev, before), 1), cond, flow_1, flow_2, backend="ours")
        shifted = torch.cat((basicvsrpp.flow_warp(prev, flow_1), basicvsrpp.flow_warp(before, flow_2)), 1)
        want = F.conv2d(0.5 * shifted, align.weight, align.bias, padding=1)
    margin = 4  # the largest flow component plus the kernel's reach
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    torch.testing.assert_close(got[inner], want[inner], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and the flows are not interchangeable: swapped, the result differs
        swapped = align(torch.cat((prev, before), 1), cond, flow_2, flow_1, backend="ours")
    assert not torch.allclose(swapped[inner], want[inner], atol=1e-3)


#: the alignment module (random weights, 8 channels per deformable group as the real network's 2·64/16, learned
#: offsets around whole-pixel-and-a-half flows) through the Triton kernel in its interpreter and through ours
_TRITON_ALIGNMENT = textwrap.dedent(
    """
    import torch
    from vidpipe.models.archs import basicvsrpp

    torch.manual_seed(0)
    c = 16
    align = basicvsrpp.SecondOrderDeformableAlignment(c, deform_groups=4)
    for p in align.parameters():
        torch.nn.init.normal_(p, std=0.2)
    cl = torch.channels_last
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 5e-3)):
        net = align.to(dtype=dtype, memory_format=cl)
        feats = torch.randn(1, 2 * c, 7, 9).to(dtype=dtype, memory_format=cl)
        cond = torch.randn(1, 3 * c, 7, 9).to(dtype=dtype, memory_format=cl)
        flow_1, flow_2 = (torch.randn(1, 2, 7, 9) * 1.5).to(dtype), (torch.randn(1, 2, 7, 9) * 3).to(dtype)
        with torch.no_grad():
            want = net(feats, cond, flow_1, flow_2, backend="ours")
            got = net(feats, cond, flow_1, flow_2, backend="triton")
        assert got.dtype == dtype and got.shape == want.shape == (1, c, 7, 9)
        err = (got.float() - want.float()).abs().max().item()
        assert err <= tol * max(1.0, want.float().abs().max().item()), (dtype, err)
        print(dtype, err)
    print("alignment ok")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.timeout(600)
def test_alignment_through_the_triton_kernel_in_the_interpreter() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_ALIGNMENT], env=env, capture_output=True, text=True, timeout=scaled(600)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alignment ok" in proc.stdout


# --- forwards --------------------------------------------------------------------------------------------


def test_tiny_clip_shape_and_determinism() -> None:
    """The official c64n7 network (random weights) on a 2×3×32×32 clip: ×4 frames, the same twice."""
    torch.manual_seed(0)
    net = basicvsrpp.BasicVSRPlusPlus().eval()
    clip = _clip(2, 3, 32, 32)
    with torch.inference_mode():
        a, b = net(clip), net(clip)
    assert a.shape == (2, 3, 3, 128, 128) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def small() -> basicvsrpp.BasicVSRPlusPlus:
    """A narrow network (16 channels, 2 blocks, 4 deformable groups): the same code paths, less work."""
    torch.manual_seed(0)
    return basicvsrpp.BasicVSRPlusPlus(mid_channels=16, num_blocks=2, deform_groups=4).eval()


def test_batched_equals_one_at_a_time(small: basicvsrpp.BasicVSRPlusPlus) -> None:
    clip = _clip(2, 3, 16, 16, seed=1)
    with torch.inference_mode():
        batched = small(clip)
        one = torch.cat([small(clip[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(one, batched, atol=1e-5, rtol=1e-5)


def test_every_frame_sees_the_whole_clip(small: basicvsrpp.BasicVSRPlusPlus) -> None:
    """Bidirectional propagation: changing the last frame changes the first frame's output, and the first
    frame the last one's. Without a path between them the outputs would be bit-identical; random weights damp
    the propagated signal, so the change is small but far above rounding."""
    clip = _clip(1, 4, 16, 16, seed=2)
    changed_last, changed_first = clip.clone(), clip.clone()
    changed_last[:, -1] = torch.rand(3, 16, 16)
    changed_first[:, 0] = torch.rand(3, 16, 16)
    with torch.inference_mode():
        base, last, first = small(clip), small(changed_last), small(changed_first)
    assert (last[:, 0] - base[:, 0]).abs().max() > 1e-6
    assert (first[:, -1] - base[:, -1]).abs().max() > 1e-6


def test_some_outputs_only_are_those_of_the_whole_call(small: basicvsrpp.BasicVSRPlusPlus) -> None:
    """`outputs=(a, b)` reconstructs frames a..b−1 alone (a window's kept frames), from the whole clip's
    propagation: bit for bit those frames of the full output."""
    clip = _clip(1, 6, 16, 12, seed=4)
    with torch.inference_mode():
        full = small(clip)
        for a, b in [(0, 6), (1, 5), (2, 3), (0, 1), (5, 6)]:
            part = small(clip, outputs=(a, b))
            assert part.shape == (1, b - a, 3, 64, 48)
            assert torch.equal(part, full[:, a:b])
        for bad in [(3, 3), (-1, 2), (2, 7)]:
            with pytest.raises(ModelError, match="outputs"):
                small(clip, outputs=bad)


def test_batched_parts_run_in_chunks_of_one_shape(small: basicvsrpp.BasicVSRPlusPlus, monkeypatch) -> None:
    """Feature extraction and SPyNet see chunks of CHUNK images whatever the clip's length (the last one padded):
    cuDNN tunes once per run. The outputs are those of one call over all frames."""
    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0])) for m in (small.feat_extract,
             small.spynet)]  # fmt: skip
    clip = _clip(1, 11, 16, 12, seed=5)
    try:
        with torch.inference_mode():
            chunked = small(clip)
            assert seen and set(seen) == {basicvsrpp.CHUNK}
            monkeypatch.setattr(basicvsrpp, "CHUNK", 64)
            whole = small(clip)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_a_single_frame_and_what_it_cannot_take(small: basicvsrpp.BasicVSRPlusPlus) -> None:
    """One frame has no neighbour to align: every branch runs on it alone, with no flow."""
    with torch.inference_mode():
        one = small(_clip(1, 1, 16, 12))
    assert one.shape == (1, 1, 3, 64, 48) and torch.isfinite(one).all()
    with pytest.raises(ModelError, match="N×T×3×H×W"):
        small(torch.rand(1, 3, 32, 32))


@pytest.mark.gpu
def test_torchvision_and_our_deformable_convolution_agree_in_the_network() -> None:
    """On CUDA with torchvision: the whole network with torchvision's kernel and with ours."""
    pytest.importorskip("torchvision")
    cuda = torch.device("cuda")
    net = describe(random_checkpoint(official_layout())).module.to(cuda).eval()
    clip = _clip(1, 5, 64, 96).to(cuda)
    with torch.inference_mode():
        net.deform_backend = "torchvision"
        theirs = net(clip)
        net.deform_backend = "ours"
        ours = net(clip)
    assert (ours - theirs).abs().max().item() < 1e-3


@pytest.mark.gpu
def test_torchvision_and_the_triton_deformable_convolution_agree_in_the_network(monkeypatch) -> None:
    """On CUDA with Triton and torchvision: the whole network (fp32, no TF32: the kernel's fp32 then runs three
    TF32 products per term) with torchvision's kernel and with the Triton one, and channels-last fp16 through both
    within the fp16 bound of `test_half_precision_network_on_cuda`."""
    pytest.importorskip("triton")
    pytest.importorskip("torchvision")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cuda = torch.device("cuda")
    net = describe(random_checkpoint(official_layout())).module.to(cuda).eval()
    clip = _clip(1, 5, 64, 96).to(cuda)
    with torch.inference_mode():
        net.deform_backend = "torchvision"
        theirs = net(clip)
        net.deform_backend = "triton"
        ours = net(clip)
        assert (ours - theirs).abs().max().item() < 1e-3
        net.to(dtype=torch.float16, memory_format=torch.channels_last)
        frames = clip[0].half().contiguous(memory_format=torch.channels_last)[None]
        half = net(frames)
        net.deform_backend = "torchvision"
        half_theirs = net(frames)
    assert torch.isfinite(half).all()
    assert (half.float() - theirs).abs().max().item() < 0.05
    assert (half.float() - half_theirs.float()).abs().max().item() < 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_network_on_cuda(dtype: torch.dtype) -> None:
    """The network cast to fp16/bf16 (warps and sampling positions stay fp32 inside) gives finite frames near
    the fp32 ones. On CPU, random weights: bf16 within 0.006 and fp16 within 0.0007 of fp32 at most (57 and
    75 dB PSNR); the bound leaves room for the GPU kernels' own rounding."""
    cuda = torch.device("cuda")
    net = describe(random_checkpoint(official_layout())).module.to(cuda).eval()
    clip = _clip(1, 4, 64, 64).to(cuda)
    with torch.inference_mode():
        want = net(clip)
        got = net.to(dtype)(clip.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - want).abs().max().item() < 0.05


@pytest.mark.gpu
def test_a_channels_last_network_on_cuda_keeps_its_layout() -> None:
    """Channels-last weights and frames on CUDA: every 64-channel convolution of the propagation and the
    reconstruction gets a channels-last input (no conversion per conv, no mixed-layout adds: the H100 profile's
    copies), and the frames are those of the NCHW network."""
    cuda = torch.device("cuda")
    net = describe(random_checkpoint(official_layout())).module.to(cuda).eval()
    clip = _clip(1, 5, 64, 96).to(cuda)
    with torch.inference_mode():
        want = net(clip)
        net.to(memory_format=torch.channels_last)
        frames = clip[0].contiguous(memory_format=torch.channels_last)[None]
        wrong: list[str] = []
        hooks = [
            m.register_forward_pre_hook(
                lambda m, a, name=name: (
                    wrong.append(name) if not a[0].is_contiguous(memory_format=torch.channels_last) else None
                )
            )
            for name, m in net.named_modules()
            if isinstance(m, torch.nn.Conv2d) and not name.startswith("spynet") and m.in_channels >= 64
        ]
        try:
            got = net(frames)
        finally:
            for h in hooks:
                h.remove()
    assert not wrong, f"NCHW inputs to {sorted(set(wrong))[:5]}"
    assert (got - want).abs().max().item() < 1e-3
