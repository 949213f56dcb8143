"""RVM (archs/rvm.py): the official checkpoints' key layout for both backbones, a random-weight round trip
through the loader, and the recurrent contract (a sequence equals its frames stepped one by one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidpipe.errors import ModelError
from vidpipe.models.archs import rvm
from vidpipe.models.descriptor import detect_architecture
from vidpipe.models.loading import load_model_info

CPU = torch.device("cpu")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# --- the official layout, written out from the RobustVideoMatting sources (model/*.py at master) and the
# torchvision classes its backbones subclass; independent of archs/rvm.py's code ---------------------------

#: torchvision's parameter counts of the classifiers the encoders drop: mobilenet_v3_large has 5,483,032
#: parameters, its classifier (960→1280→1000) 2,511,080; resnet50 has 25,557,032, its fc 2,049,000
BACKBONE_PARAMS = {"mobilenetv3": 5_483_032 - 2_511_080, "resnet50": 25_557_032 - 2_049_000}

#: torchvision InvertedResidualConfig rows of RVM's MobileNetV3LargeEncoder: (in, kernel, expanded, out, SE)
MOBILENET_ROWS = [
    (16, 3, 16, 16, False),
    (16, 3, 64, 24, False),
    (24, 3, 72, 24, False),
    (24, 5, 72, 40, True),
    (40, 5, 120, 40, True),
    (40, 5, 120, 40, True),
    (40, 3, 240, 80, False),
    (80, 3, 200, 80, False),
    (80, 3, 184, 80, False),
    (80, 3, 184, 80, False),
    (80, 3, 480, 112, True),
    (112, 3, 672, 112, True),
    (112, 5, 672, 160, True),
    (160, 5, 960, 160, True),
    (160, 5, 960, 160, True),
]
#: SE squeeze widths torchvision computes (_make_divisible(expanded // 4, 8))
SQUEEZE = {72: 24, 120: 32, 480: 120, 672: 168, 960: 240}


def _conv_bn(keys: dict[str, tuple[int, ...]], prefix: str, conv: str, bn: str, shape: tuple[int, ...]) -> None:
    keys[f"{prefix}{conv}.weight"] = shape
    for k in BN:
        keys[f"{prefix}{bn}.{k}"] = () if k == "num_batches_tracked" else (shape[0],)


def _mobilenet_layout() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    p = "backbone.features."
    _conv_bn(keys, p, "0.0", "0.1", (16, 3, 3, 3))
    for i, (cin, k, exp, cout, se) in enumerate(MOBILENET_ROWS, start=1):
        j = 0
        if exp != cin:
            _conv_bn(keys, p, f"{i}.block.0.0", f"{i}.block.0.1", (exp, cin, 1, 1))
            j = 1
        _conv_bn(keys, p, f"{i}.block.{j}.0", f"{i}.block.{j}.1", (exp, 1, k, k))
        if se:
            j += 1
            sq = SQUEEZE[exp]
            keys |= {
                f"{p}{i}.block.{j}.fc1.weight": (sq, exp, 1, 1),
                f"{p}{i}.block.{j}.fc1.bias": (sq,),
                f"{p}{i}.block.{j}.fc2.weight": (exp, sq, 1, 1),
                f"{p}{i}.block.{j}.fc2.bias": (exp,),
            }
        j += 1
        _conv_bn(keys, p, f"{i}.block.{j}.0", f"{i}.block.{j}.1", (cout, exp, 1, 1))
    _conv_bn(keys, p, "16.0", "16.1", (960, 160, 1, 1))
    return keys


def _resnet_layout() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    _conv_bn(keys, "backbone.", "conv1", "bn1", (64, 3, 7, 7))
    cin = 64
    for li, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=1):
        for b in range(blocks):
            p = f"backbone.layer{li}.{b}."
            _conv_bn(keys, p, "conv1", "bn1", (width, cin, 1, 1))
            _conv_bn(keys, p, "conv2", "bn2", (width, width, 3, 3))
            _conv_bn(keys, p, "conv3", "bn3", (width * 4, width, 1, 1))
            if b == 0:
                _conv_bn(keys, p, "downsample.0", "downsample.1", (width * 4, cin, 1, 1))
            cin = width * 4
    return keys


def _heads_layout(backbone: str) -> dict[str, tuple[int, ...]]:
    """LRASPP, RecurrentDecoder, Projection ×2 and DeepGuidedFilterRefiner of model/model.py."""
    feats, aspp, dec = (
        ((16, 24, 40, 960), 128, (80, 40, 32, 16))
        if backbone == "mobilenetv3"
        else ((64, 256, 512, 2048), 256, (128, 64, 32, 16))
    )
    keys: dict[str, tuple[int, ...]] = {}
    _conv_bn(keys, "aspp.", "aspp1.0", "aspp1.1", (aspp, feats[3], 1, 1))
    keys["aspp.aspp2.1.weight"] = (aspp, feats[3], 1, 1)

    def gru(prefix: str, c: int) -> None:
        keys[f"{prefix}.gru.ih.0.weight"], keys[f"{prefix}.gru.ih.0.bias"] = (2 * c, 2 * c, 3, 3), (2 * c,)
        keys[f"{prefix}.gru.hh.0.weight"], keys[f"{prefix}.gru.hh.0.bias"] = (c, 2 * c, 3, 3), (c,)

    gru("decoder.decode4", aspp // 2)
    ins = [(aspp, feats[2]), (dec[0], feats[1]), (dec[1], feats[0])]
    for n, (x, skip), out in zip((3, 2, 1), ins, dec[:3], strict=True):
        _conv_bn(keys, f"decoder.decode{n}.", "conv.0", "conv.1", (out, x + skip + 3, 3, 3))
        gru(f"decoder.decode{n}", out // 2)
    _conv_bn(keys, "decoder.decode0.", "conv.0", "conv.1", (16, dec[2] + 3, 3, 3))
    _conv_bn(keys, "decoder.decode0.", "conv.3", "conv.4", (16, 16, 3, 3))
    keys |= {
        "project_mat.conv.weight": (4, 16, 1, 1),
        "project_mat.conv.bias": (4,),
        "project_seg.conv.weight": (1, 16, 1, 1),
        "project_seg.conv.bias": (1,),
        "refiner.box_filter.weight": (4, 1, 3, 3),
        "refiner.conv.6.weight": (4, 16, 1, 1),
        "refiner.conv.6.bias": (4,),
    }
    _conv_bn(keys, "refiner.", "conv.0", "conv.1", (16, 24, 1, 1))
    _conv_bn(keys, "refiner.", "conv.3", "conv.4", (16, 16, 1, 1))
    return keys


def official_layout(backbone: str) -> dict[str, tuple[int, ...]]:
    body = _mobilenet_layout() if backbone == "mobilenetv3" else _resnet_layout()
    return body | _heads_layout(backbone)


# --- tests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", rvm.BACKBONES)
def test_state_dict_is_the_official_layout(backbone: str) -> None:
    net = rvm.MattingNetwork(backbone, segmentation_head=True)  # type: ignore[arg-type]
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == official_layout(backbone)
    assert sum(p.numel() for p in net.backbone.parameters()) == BACKBONE_PARAMS[backbone]


@pytest.mark.parametrize("backbone", rvm.BACKBONES)
def test_random_weights_round_trip_through_the_loader(backbone: str, tmp_path: Path) -> None:
    """A checkpoint saved in the official layout (a plain state dict, as torch.save writes it) is recognised,
    built and loaded strictly, every tensor back unchanged, and computes what the saved network computes."""
    torch.manual_seed(0)
    net = rvm.MattingNetwork(backbone, segmentation_head=True).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # non-trivial norms, so that a mis-assigned batch-norm statistic shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"rvm_{backbone}.pth"
    torch.save(net.state_dict(), path)
    info = load_model_info(path, CPU, torch.float32, task="matte")
    assert (info.arch, info.task, info.params) == ("rvm", "matte", {"backbone": backbone, "segmentation_head": True})
    assert info.descriptor.tiling == "discouraged"
    loaded = info.module.state_dict()
    assert list(loaded) == list(net.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    x = torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        want, got = net(x, downsample_ratio=0.5), info.module(x, downsample_ratio=0.5)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def test_detected_only_as_rvm() -> None:
    state = rvm.MattingNetwork("mobilenetv3").state_dict()
    assert detect_architecture(state).name == "rvm"  # and no other registered architecture claims it
    with pytest.raises(ModelError, match="refiner"):
        rvm.build_rvm({k: v for k, v in state.items() if not k.startswith("refiner.")})
    with pytest.raises(ModelError, match="neither a MobileNetV3"):
        rvm.build_rvm({k: v for k, v in state.items() if not k.startswith("backbone.")})


@pytest.fixture(scope="module")
def mobilenet() -> rvm.MattingNetwork:
    torch.manual_seed(1)
    return rvm.MattingNetwork("mobilenetv3").eval()


def test_outputs_and_state_shapes(mobilenet: rvm.MattingNetwork) -> None:
    x = torch.rand(2, 3, 67, 93)  # odd sizes: the decoder crops its upsampled maps to the pooled image
    with torch.inference_mode():
        fgr, pha, *rec = mobilenet(x, downsample_ratio=0.5)
    assert fgr.shape == (2, 3, 67, 93) and pha.shape == (2, 1, 67, 93)
    # states at 1/2 … 1/16 of the downsampled 33×46 input, ceil-rounded
    assert [tuple(r.shape) for r in rec] == [(2, 16, 17, 23), (2, 20, 9, 12), (2, 40, 5, 6), (2, 64, 3, 3)]
    assert float(pha.min()) >= 0 and float(pha.max()) <= 1 and float(fgr.min()) >= 0 and float(fgr.max()) <= 1


def test_a_sequence_equals_its_frames_stepped_with_the_state(mobilenet: rvm.MattingNetwork) -> None:
    seq = torch.rand(1, 4, 3, 48, 64)
    with torch.inference_mode():
        fgr_t, pha_t, *rec_t = mobilenet(seq, downsample_ratio=0.5)
        rec: list[torch.Tensor | None] = [None] * 4
        for t in range(4):
            fgr, pha, *rec = mobilenet(seq[:, t], *rec, downsample_ratio=0.5)
            torch.testing.assert_close(fgr_t[:, t], fgr, rtol=0, atol=1e-5)
            torch.testing.assert_close(pha_t[:, t], pha, rtol=0, atol=1e-5)
    for a, b in zip(rec_t, rec, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # the state matters: the last frame from scratch leaves another state than after three frames (random
    # weights clamp most of alpha to 0, so the unclamped states show it)
    with torch.inference_mode():
        fresh = mobilenet(seq[:, 3], downsample_ratio=0.5)[2:]
    assert all(float((a - b).abs().max()) > 1e-3 for a, b in zip(fresh, rec_t, strict=True))


def test_a_broadcast_zero_state_is_no_state(mobilenet: rvm.MattingNetwork) -> None:
    """The ONNX export starts from 1×1×1×1 zeros; our None start is the same network input."""
    x = torch.rand(1, 3, 48, 64)
    zeros = [torch.zeros(1, 1, 1, 1)] * 4
    with torch.inference_mode():
        a, b = mobilenet(x, downsample_ratio=0.5), mobilenet(x, *zeros, downsample_ratio=0.5)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_full_resolution_skips_the_refiner(mobilenet: rvm.MattingNetwork) -> None:
    x = torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        before = mobilenet(x)
        saved = mobilenet.refiner.box_filter.weight.clone()
        mobilenet.refiner.box_filter.weight.zero_()
        after, refined = mobilenet(x), mobilenet(x, downsample_ratio=0.5)
        mobilenet.refiner.box_filter.weight.copy_(saved)
        refined_before = mobilenet(x, downsample_ratio=0.5)
    assert all(torch.equal(u, v) for u, v in zip(before, after, strict=True))
    assert not torch.equal(refined[1], refined_before[1])


def test_segmentation_head_only_when_the_weights_have_it(mobilenet: rvm.MattingNetwork) -> None:
    x = torch.rand(1, 3, 32, 48)
    with pytest.raises(ModelError, match="no segmentation head"), torch.inference_mode():
        mobilenet(x, segmentation_pass=True)
    with_head = rvm.MattingNetwork("mobilenetv3", segmentation_head=True).eval()
    with torch.inference_mode():
        seg, *rec = with_head(x, segmentation_pass=True)
    assert seg.shape == (1, 1, 32, 48) and len(rec) == 4
    with pytest.raises(ModelError, match="valid: mobilenetv3, resnet50"):
        rvm.MattingNetwork("vgg")  # type: ignore[arg-type]


def test_conv_order_and_norm_pairs(mobilenet: rvm.MattingNetwork) -> None:
    order = rvm.forward_conv_order(mobilenet)
    pairs = rvm.conv_norm_pairs(mobilenet)
    assert sorted(order) == sorted(pairs)  # every convolution is used (no segmentation head here)
    assert order[0] == "backbone.features.0.0" and order[-4:-3] == ["refiner.box_filter"]
    assert order[-3:] == ["refiner.conv.0", "refiner.conv.3", "refiner.conv.6"]
    assert pairs["backbone.features.0.0"] == "backbone.features.0.1" and pairs["aspp.aspp2.1"] is None
    assert pairs["decoder.decode0.conv.3"] == "decoder.decode0.conv.4" and pairs["project_mat.conv"] is None
    assert sum(v is not None for v in pairs.values()) == 54  # the export's 54 generated-name weight/bias pairs
    resnet = rvm.conv_norm_pairs(rvm.MattingNetwork("resnet50"))
    assert resnet["backbone.conv1"] == "backbone.bn1"
    assert resnet["backbone.layer4.0.downsample.0"] == "backbone.layer4.0.downsample.1"
