from __future__ import annotations

from fractions import Fraction as F

import pytest
import torch

from vidpipe.assets import opencv_clip
from vidpipe.errors import UsageError
from vidpipe.frames import FrameBatch
from vidpipe.models.zoo_realesrgan import ensure_offline_weights
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

MODEL = "realesr-animevideov3-x4"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def crop() -> torch.Tensor:
    """Two real 256×256 crops of vtest.avi (a street scene)."""
    ensure_offline_weights(MODEL)
    _, frames = decode_all(opencv_clip("vtest.avi"))
    return frames[10:12, :, 200:456, 300:556].contiguous()


def _spec(w: int, h: int, **kw: object) -> StreamSpec:
    return StreamSpec(width=w, height=h, time_base=F(1, 10), **kw)  # type: ignore[arg-type]


def _float_run(stage: Upscale, x: torch.Tensor) -> torch.Tensor:
    return stage._run((x.float() / 255).contiguous(memory_format=torch.channels_last))


def test_tiled_matches_untiled_within_one_level(crop):
    whole = Upscale(MODEL, tile=0)
    tiled = Upscale(MODEL, tile=96, overlap=16)
    for s in (whole, tiled):
        s.setup(CPU, _spec(256, 256))
    a, b = _float_run(whole, crop), _float_run(tiled, crop)
    assert a.shape == b.shape == (2, 3, 1024, 1024)
    assert (a - b).abs().max().item() <= 1 / 255


def test_outscale_resizes_after_the_model_and_keeps_timing(crop):
    st = Upscale(MODEL, outscale=2)
    out_spec = st.setup(CPU, _spec(256, 256, crop_to=(250, 240)))
    assert (out_spec.width, out_spec.height, out_spec.crop_to) == (512, 512, (500, 480))
    b = FrameBatch(data=crop, pts=[7, 9], time_base=F(1, 10))
    y = st.process(b)
    assert y.data.shape == (2, 3, 512, 512) and y.data.dtype == torch.uint8 and y.pts == [7, 9]
    assert st.signature()["model_signature"]


def test_ten_bit_and_alpha_pass_through(crop):
    st = Upscale(MODEL, tile=0)
    st.setup(CPU, _spec(64, 64))
    rgb16 = (crop[:1, :, :64, :64].to(torch.int32) * 257).to(torch.uint16)
    alpha = torch.full((1, 1, 64, 64), 40000, dtype=torch.int32).to(torch.uint16)
    y = st.process(FrameBatch(data=torch.cat([rgb16, alpha], 1), pts=[0], time_base=F(1, 10)))
    assert y.data.dtype == torch.uint16 and y.data.shape == (1, 4, 256, 256)
    assert (y.data[:, 3].int() - 40000).abs().max() <= 1


@pytest.mark.parametrize(("tile", "runs"), [(None, 0), (0, 0), (64, 64)])
def test_outside_the_scheduler_it_runs_whole_frames_or_its_tile_and_an_oom_propagates(crop, monkeypatch, tile, runs):
    """The stage sizes no tile and has no OOM policy of its own (both are the scheduler's, schedule/chain.py): an
    automatic tile runs whole frames until the scheduler sets one, and an out-of-memory error reaches the caller
    after one model call, the tile unchanged."""
    st = Upscale(MODEL, tile=tile)
    st.setup(CPU, _spec(256, 256))
    assert st.tile == runs and st.signature()["tile"] == ("auto" if tile is None else tile)
    assert (st.tiling() is not None) == (tile is None)  # only an automatic tile is the scheduler's to choose
    calls = []

    def always(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        raise torch.OutOfMemoryError("injected")

    monkeypatch.setattr(st, "_model", always)
    with pytest.raises(torch.OutOfMemoryError):
        st.process(FrameBatch(data=crop, pts=[0, 1], time_base=F(1, 10)))
    assert len(calls) == 1 and st.tile == runs
    assert calls[0] == ((256, 256) if not runs else (80, 80))  # the corner tile and its 16 px of overlap inward


def test_a_tile_set_by_the_scheduler_is_what_runs(crop, monkeypatch):
    small = crop[:1, :, :128, :128]
    whole = Upscale(MODEL)
    whole.setup(CPU, _spec(128, 128))
    expected = _float_run(whole, small)
    whole.set_tile(64)
    assert whole.tile == 64 and whole.signature()["tile"] == "auto"  # the tile chosen is the schedule block's
    sides, real = [], whole._model
    monkeypatch.setattr(whole, "_model", lambda x: sides.append(max(x.shape[-2:])) or real(x))
    got = _float_run(whole, small)
    assert len(sides) == 4 and max(sides) == 64 + 16  # 2×2 tiles, each with its overlap inward
    assert (got - expected).abs().max().item() <= 1 / 255
    with pytest.raises(UsageError, match="tile"):
        whole.set_tile(32)


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="valid: auto, fp32"):
        Upscale(MODEL, dtype="int8")
    with pytest.raises(UsageError, match="tile"):
        Upscale(MODEL, tile=10)
    with pytest.raises(UsageError, match="fp16 is for CUDA"):
        Upscale(MODEL, dtype="fp16").setup(CPU, _spec(64, 64))
