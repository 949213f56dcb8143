"""A synthetic hard cut, dissolve and fade are found at the right frames; a moving single shot gives nothing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from vidpipe.frames import FrameBatch
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.events import Event
from vidpipe.stages.cuts.presets import PRESET_NAMES
from vidpipe.stages.cuts.run import run_detector

W, H = 192, 128


def _scene(seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    """A large smooth random texture to pan over."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.random((40, 60, 3), dtype=np.float32), (W * 3, H * 3), interpolation=cv2.INTER_CUBIC)
    return np.clip(big * np.array(tint, np.float32) * 255, 0, 255)


def _shot(tex: np.ndarray, t: int) -> np.ndarray:
    x, y = t, t // 2  # a slow diagonal pan: motion inside the shot (fast same-direction pans: see report)
    return tex[y : y + H, x : x + W]


def _run(frames: list[np.ndarray], preset: str = "default") -> list[Event]:
    det = CutDetector(CutOptions(detectors=("hard", "soft", "motion"), preset=preset))
    arr = np.stack([np.clip(f + 0.5, 0, 255).astype(np.uint8) for f in frames])
    data = torch.from_numpy(arr).permute(0, 3, 1, 2)
    for s in range(0, len(arr), 16):
        n = min(16, len(arr) - s)
        det.process(FrameBatch(data=data[s : s + n], pts=list(range(s, s + n)), time_base=Fraction(1, 25),
                               index=list(range(s, s + n))))  # fmt: skip
    det.flush()
    return det.events


def _sequence() -> list[np.ndarray]:
    """A hard cut at 30, a dissolve over 50..61 and a fade over 87..97, between slowly panning shots."""
    a, b, c = _scene(1, (1.0, 0.8, 0.6)), _scene(2, (0.5, 0.8, 1.0)), _scene(3, (0.9, 0.9, 0.5))
    frames = [_shot(a, t) for t in range(30)]  # hard cut at 30
    frames += [_shot(b, t) for t in range(20)]
    for i in range(12):  # dissolve B → C over frames 50..61
        al = (i + 1) / 13
        frames.append((1 - al) * _shot(b, 20 + i) + al * _shot(c, i))
    frames += [_shot(c, 12 + t) for t in range(25)]  # frames 62..86
    for i in range(5):  # fade C → black → A over frames 87..97: 5 down, 1 black, 5 up
        frames.append(_shot(c, 37 + i) * (5 - i) / 6)
    frames.append(np.zeros((H, W, 3), np.float32))
    for i in range(5):
        frames.append(_shot(a, 40 + i) * (i + 1) / 6)
    frames += [_shot(a, 45 + t) for t in range(25)]
    return frames


def _check(events: list[Event], span_tolerance: int = 3) -> None:
    hard = [e for e in events if e.kind == "hard"]
    soft = [e for e in events if e.kind == "soft"]
    assert [e.frame for e in hard] == [30]
    assert hard[0].time == Fraction(30, 25)
    assert len(soft) == 2
    for e, (centre, start, end) in zip(soft, [(55, 50, 61), (92, 87, 97)], strict=True):
        assert e.start is not None and e.end is not None
        assert abs(e.frame - centre) <= 1
        assert abs(e.start - start) <= span_tolerance and abs(e.end - end) <= span_tolerance  # span: α edges


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hard_cut_dissolve_and_fade_at_the_right_frames(preset: str) -> None:
    _check(_run(_sequence(), preset))


@pytest.mark.parametrize("planar", [True, False])
def test_from_a_file_as_planes_or_rgb(tmp_path: Path, planar: bool) -> None:
    """`run_detector` hands the detector the decoder's 4:2:0 planes (no RGB conversion) or RGB batches: the same
    boundaries either way (BT.709-tagged limited-range H.264, so matrix and range are exercised)."""
    path = tmp_path / "seq.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"crf": "12"}
        st.codec_context.colorspace = 1  # BT.709
        for i, f in enumerate(_sequence()):
            frame = av.VideoFrame.from_ndarray(np.clip(f + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709")
            frame.pts = i
            c.mux(st.encode(frame))
        c.mux(st.encode(None))
    det = CutDetector(CutOptions(detectors=("hard", "soft"), preset="fast"))
    det.planar_input = planar  # type: ignore[misc]
    result = run_detector(path, det)
    assert result.frames == 123
    # compression noise moves where α leaves 0 and 1, so the spans' edges by a few more frames
    _check(result.events, span_tolerance=6)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_single_moving_shot_has_no_boundary(preset: str) -> None:
    a = _scene(4, (1.0, 1.0, 1.0))
    events = _run([_shot(a, t) for t in range(60)], preset)
    assert [e for e in events if e.kind in ("hard", "soft")] == []
