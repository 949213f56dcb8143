"""Helpers shared by the cut-detection tests (imported by name: tests/ has no packages).

A generated clip: two slowly panning shots with a hard cut, H.264 with B-frames in MP4, muxed correctly or as
VLC 2.x's stream output writes such streams (every packet's pts a copy of its dts, so the file has no composition
offsets and the decoder's frames come out with their times out of order)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidpipe.cli.app import main

W, H = 192, 128
FRAMES = 60
#: first frame of the second shot
CUT = 30
RATE = Fraction(25)


def _scene(seed: int) -> np.ndarray:
    """A smooth random texture three times the frame size, to pan over."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(rng.random((40, 60, 3), dtype=np.float32), (W * 3, H * 3), interpolation=cv2.INTER_CUBIC)
    return np.clip(big * 255, 0, 255).astype(np.uint8)


def two_shot_frames() -> np.ndarray:
    """FRAMES×H×W×3 RGB: shot A panning 2 px a frame, then from CUT shot B."""
    a, b = _scene(1), _scene(2)
    return np.stack([(a if i < CUT else b)[:H, 2 * i : 2 * i + W] for i in range(FRAMES)])


def write_two_shots(path: Path, *, pts_copies: bool) -> Path:
    """`two_shot_frames` at RATE, H.264 crf 12 with pyramid B-frames, into an MP4 at `path`."""
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=RATE)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"crf": "12", "bf": "3", "b-pyramid": "normal"}  # reordering, as the real clip has
        packets = []
        for i, img in enumerate(two_shot_frames()):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            packets += st.encode(frame)
        packets += st.encode(None)
        first_dts = packets[0].dts
        for p in packets:
            if pts_copies:  # decode times from 0, presentation times copied from them
                p.dts -= first_dts
                p.pts = p.dts
            c.mux(p)
    return path


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess would spend seconds importing torch): exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
