"""The padded HDv3 (models.ifnet_pad) computes the same function as the module it was made from."""

from __future__ import annotations

import pytest
import torch

from vidpipe.errors import ModelError
from vidpipe.models.archs.ifnet import IFNetHDv3, IFNetV4
from vidpipe.models.ifnet_pad import PaddedIn, padded_hdv3, round_up


def _net(widths: tuple[int, ...]) -> IFNetHDv3:
    torch.manual_seed(0)
    net = IFNetHDv3(widths).double().eval().requires_grad_(False)
    # non-default slopes and biases, so a padded channel that leaked a bias or a slope would show
    for m in net.modules():
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(0.05, 0.5)
    return net


@pytest.mark.parametrize("widths", [(90, 90, 90), (20, 36, 50)])
@pytest.mark.parametrize("pad_input", [True, False])
def test_the_padded_net_equals_the_net(widths: tuple[int, ...], pad_input: bool) -> None:
    net = _net(widths)
    wide = padded_hdv3(net, pad_input=pad_input)
    assert wide.widths == tuple(round_up(c) for c in widths)
    assert all(c % 16 == 0 for c in wide.widths)
    firsts = [getattr(wide, f"block{i}").conv0[0][0] for i in range(wide.n_blocks)]
    assert all(isinstance(f, PaddedIn) for f in firsts) == pad_input
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 64, 96, generator=g, dtype=torch.float64)
    b = torch.roll(a, (2, 3), (2, 3)) * 0.9 + 0.05
    with torch.inference_mode():
        want, got = net(a, b), wide(a, b)
    assert want.shape == got.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # the original module is untouched: still its own widths and keys
    assert net.widths == widths and "block0.conv0.0.0.weight" in net.state_dict()


def test_the_padded_channels_stay_zero_inside_a_block() -> None:
    net = _net((90, 90, 90))
    wide = padded_hdv3(net)
    block = wide.block2
    x = torch.rand(1, 11, 64, 64, dtype=torch.float64)
    with torch.inference_mode():
        feat = block.conv0(x)
        assert feat.shape[1] == 96
        assert torch.count_nonzero(feat[:, 90:]) == 0
        for k in range(wide.n_res):
            feat = getattr(block, f"convblock{k}")(feat) + feat
        assert torch.count_nonzero(feat[:, 90:]) == 0


def test_only_hdv3_is_padded() -> None:
    with pytest.raises(ModelError, match="HDv3"):
        padded_hdv3(IFNetV4((32, 32, 32, 32)))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="even"):
        padded_hdv3(_net((20, 20, 20)), multiple=7)
