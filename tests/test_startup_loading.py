"""Issue 24, item 1: model load without the meta-device initialisation (models/loading.py `_no_init`). The built
module holds exactly the file's tensors and torch's init functions are back afterwards (the speed-up is in
docs/benchmarks.md, "Start-up")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidpipe.errors import ModelError
from vidpipe.models import loading
from vidpipe.models.archs.srvgg import SRVGGNetCompact


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SRVGGNetCompact(num_feat=16, num_conv=4, scale=2).state_dict()


def test_built_module_holds_the_files_tensors_and_init_is_restored() -> None:
    before = {name: getattr(nn.init, name) for name in loading._INIT_FUNCTIONS}
    state = _state()
    module = loading.build_model(state)
    got = module.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert {name: getattr(nn.init, name) for name in loading._INIT_FUNCTIONS} == before
    conv = nn.Conv2d(3, 3, 3)  # real initialisation works again (not all zeros, not the no-op)
    assert conv.weight.abs().sum() > 0


def test_init_is_restored_after_a_failed_build() -> None:
    before = nn.init.kaiming_uniform_
    state = _state()
    state["body.1.weight"] = state.pop("body.0.weight")  # no first convolution: the build itself refuses it
    with pytest.raises(ModelError, match="convolutions must sit at"):
        loading.build_model(state, arch="SRVGGNetCompact")
    assert nn.init.kaiming_uniform_ is before
