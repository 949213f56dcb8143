"""Run-time shim for RIFE's `inference_video.py`, copied into a temp dir as `skvideo/io.py`: the one function the
script uses from scikit-video, `vreader(path)`, yielding RGB frames (H×W×3 uint8) like the real one.

scikit-video 1.1.11 fails on numpy 2 (`np.int`) and decodes through an `ffmpeg` binary; this reads with
`cv2.VideoCapture` instead (OpenCV's bundled FFmpeg), which the script already needs for its writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2


def vreader(fname: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
    cap = cv2.VideoCapture(fname)
    if not cap.isOpened():
        raise OSError(f"cv2.VideoCapture cannot open {fname}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
