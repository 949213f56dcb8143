"""Our SRVGGNetCompact and RRDBNet: official key layout, hyper-parameters read back from shapes, forward
shapes, and clear errors for state dicts of something else."""

from __future__ import annotations

import pytest
import torch

from vidpipe.errors import ModelError
from vidpipe.models.archs.rrdb import RRDBNet, build_rrdb
from vidpipe.models.archs.srvgg import SRVGGNetCompact, build_srvgg
from vidpipe.models.loading import build_model, detect_arch
from vidpipe.models.spec import get_arch

# Keys of the official BasicSR / Real-ESRGAN modules (x4plus: 23 blocks; animevideov3: 16 convs).
OFFICIAL_RRDB_KEYS = {
    "conv_first.weight",
    "body.0.rdb1.conv1.weight",
    "body.22.rdb3.conv5.bias",
    "conv_body.weight",
    "conv_up1.weight",
    "conv_up2.bias",
    "conv_hr.weight",
    "conv_last.bias",
}
OFFICIAL_SRVGG_KEYS = {"body.0.weight", "body.1.weight", "body.33.weight", "body.34.bias"}


def test_default_models_use_the_official_key_layout() -> None:
    rrdb = RRDBNet().state_dict()
    assert rrdb.keys() >= OFFICIAL_RRDB_KEYS
    assert len(rrdb) == 2 * (1 + 23 * 15 + 5)  # weight + bias for every conv
    srvgg = SRVGGNetCompact().state_dict()
    assert srvgg.keys() >= OFFICIAL_SRVGG_KEYS
    assert "body.35.weight" not in srvgg
    assert get_arch("RRDBNet") is build_rrdb and get_arch("SRVGGNetCompact") is build_srvgg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_feat": 32, "num_conv": 8, "scale": 4},
        {"num_feat": 16, "num_conv": 2, "scale": 2},
        {"num_feat": 8, "num_conv": 0, "scale": 3, "in_channels": 1},
    ],
)
def test_srvgg_hyper_parameters_come_back_from_shapes(kwargs: dict[str, int]) -> None:
    src = SRVGGNetCompact(**kwargs)
    built = build_srvgg(src.state_dict())
    assert {k: v for k, v in built.hparams.items() if k in kwargs} == kwargs
    assert detect_arch(src.state_dict()) == "SRVGGNetCompact"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_block": 6, "num_feat": 32, "num_grow_ch": 16, "scale": 4},
        {"num_block": 2, "num_feat": 16, "num_grow_ch": 8, "scale": 2},
        {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 1},
        {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 4, "in_channels": 4, "out_channels": 4},
    ],
)
def test_rrdb_hyper_parameters_come_back_from_shapes(kwargs: dict[str, int]) -> None:
    src = RRDBNet(**kwargs)
    built = build_rrdb(src.state_dict())
    assert {k: v for k, v in built.hparams.items() if k in kwargs} == kwargs
    assert built.size_multiple == {4: 1, 2: 2, 1: 4}[kwargs["scale"]]
    assert detect_arch(src.state_dict()) == "RRDBNet"


@pytest.mark.parametrize(
    ("model", "size", "out"),
    [
        (SRVGGNetCompact(num_feat=8, num_conv=2, scale=4), (12, 20), (48, 80)),
        (SRVGGNetCompact(num_feat=8, num_conv=2, scale=3), (12, 20), (36, 60)),
        (RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=4), (12, 20), (48, 80)),
        (RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=2), (12, 20), (24, 40)),
        (RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=1), (12, 20), (12, 20)),
    ],
)
def test_forward_scales_the_image(model: torch.nn.Module, size: tuple[int, int], out: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 3, *out)
    assert torch.isfinite(y).all()


def test_srvgg_with_zero_residual_is_nearest_upscaling() -> None:
    """The forward adds a nearest-upsampled input: with a zero last conv the output is exactly that."""
    model = SRVGGNetCompact(num_feat=8, num_conv=1, scale=2)
    with torch.no_grad():
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
    x = torch.rand(1, 3, 5, 7)
    with torch.inference_mode():
        y = model(x)
    assert torch.equal(y, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_channels_last_and_half_precision_keep_the_result() -> None:
    torch.manual_seed(0)
    model = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        bf = model.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
    assert (bf - ref).abs().max() < 0.05  # bf16 has 8 bits of mantissa


def test_foreign_state_dicts_are_refused_clearly() -> None:
    srvgg = SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()
    with pytest.raises(ModelError, match="PReLU"):
        build_srvgg({k: v for k, v in srvgg.items() if k != "body.3.weight"})
    with pytest.raises(ModelError, match=r"missing 'conv_up1\.weight'"):
        build_rrdb({k: v for k, v in RRDBNet(num_block=1, num_feat=8).state_dict().items() if "conv_up1" not in k})
    with pytest.raises(ModelError, match="architecture"):
        detect_arch({"model.0.weight": torch.zeros(1)})
    # right keys, wrong size somewhere: load_state_dict's complaint becomes a ModelError
    bad = dict(srvgg)
    bad["body.2.bias"] = torch.zeros(9)
    with pytest.raises(ModelError, match="do not fit SRVGGNetCompact"):
        build_model(bad)
