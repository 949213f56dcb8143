"""Detection over a whole input, window by window (issue 17): what `vidpipe watermark detect` runs, and the
analysis pass `--dewatermark auto` makes over a file before removing (`Dewatermark.analyse_source`).

Frames come in batches (the reader's); they are gathered until at least `window` frames wait, and each such
group is one `detect_marks` window (several detection mechanisms, drift and fade among them, need ≥ 48 frames);
what is left at the end is a last, shorter window. The marks of all windows are joined by `merge_marks`. On the
CPU one window's frames are held at a time; on a GPU up to `GPU_WINDOWS_IN_FLIGHT` windows are detected at once,
each on its own thread and CUDA stream: at the analysis size a window's work is thousands of small kernels and
host round trips (issue 17: ~11 ms a 1080p frame on the H100, the GPU mostly idle), so one window's launches and
syncs overlap another's. Windows are folded in input order, so the result is the same as one at a time.

A window's frames may show a candidate to be the scene's (`Detection.scene`: something passed in front of it);
a mark found at the same place in another window, where nothing happened to pass, is that feature of the scene
too (`in_scene`), and is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import torch

from ...frames import FrameBatch, float_pixels
from .detect import Detection, detect_marks, merge_marks

#: a mark whose support (α > 0.1) and a support shown to be the scene's have at least this IoU are one feature
SAME_PLACE: Final = 0.5

if TYPE_CHECKING:
    from .marks import Mark

#: frames per detection window
DETECT_WINDOW: Final = 48
#: frames per batch read for detection (windows are whole batches, so this and `DETECT_WINDOW` fix where
#: windows start)
DETECT_BATCH: Final = 16
#: detection windows in flight at once on a GPU (threads, each with its own CUDA stream); the CPU runs one, its
#: operations already use every core
GPU_WINDOWS_IN_FLIGHT: Final = 3
#: most preview frames held at once (one per window with a mark; whether a window's marks are kept is known only
#: at the end, when every window has shown what is the scene's)
PREVIEWS: Final = 4


@dataclass(slots=True)
class ClipDetection:
    """The marks found over an input (merged across windows), the detector's notes, frames and windows seen,
    seconds taken; `preview`: the first frame (H×W×3, the reader's dtype) of the first window with a kept mark
    (None when no mark was kept), and `first_frame` the input's first frame (None when no frame came)."""

    marks: list[Mark] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frames: int = 0
    windows: int = 0
    seconds: float = 0.0
    preview: np.ndarray | None = None
    first_frame: np.ndarray | None = None


def detect_clip(
    batches: Iterable[FrameBatch], device: torch.device, window: int = DETECT_WINDOW, in_flight: int | None = None
) -> ClipDetection:
    """The marks in `batches` (consecutive frames of one input, in order), detected on `device` in windows of
    at least `window` frames, `in_flight` windows at once (None: `GPU_WINDOWS_IN_FLIGHT` on CUDA, else 1)."""
    t0 = time.perf_counter()
    if in_flight is None:
        in_flight = GPU_WINDOWS_IN_FLIGHT if device.type == "cuda" else 1
    out = ClipDetection()
    found: list[Mark] = []
    scene: list[np.ndarray] = []
    pending: list[FrameBatch] = []
    # (a window's first frame, its marks): the first windows with a mark that may still be kept
    previews: list[tuple[np.ndarray, list[Mark]]] = []
    # windows in flight, oldest first: (its frames, its detection to come)
    running: deque[tuple[FrameBatch, Future[Detection]]] = deque()
    local = threading.local()  # each worker thread's CUDA stream

    def detect(fb: FrameBatch) -> Detection:
        # inference mode is per thread; a worker's own stream, drained before its tensors reach another thread
        with torch.inference_mode():
            if device.type != "cuda" or in_flight <= 1:
                return detect_marks(float_pixels(fb.data, device=device), list(fb.index))
            if getattr(local, "stream", None) is None:
                local.stream = torch.cuda.Stream(device)
            with torch.cuda.stream(local.stream):
                det = detect_marks(float_pixels(fb.data, device=device), list(fb.index))
            local.stream.synchronize()
            return det

    def fold(fb: FrameBatch, det: Detection) -> None:
        out.notes.extend(n for n in det.notes if n not in out.notes)
        found.extend(det.marks)
        scene.extend(s.cpu().numpy() for s in det.scene)
        out.windows += 1
        if not det.marks:
            return
        if len(previews) >= PREVIEWS:
            # a window all of whose marks are already at the scene's places keeps none (the scene only grows)
            previews[:] = [p for p in previews if not all(in_scene(m, scene) for m in p[1])]
        if len(previews) < PREVIEWS:
            previews.append((fb.data[0, :3].permute(1, 2, 0).cpu().numpy(), det.marks))

    with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="detect") as pool:

        def run(group: list[FrameBatch]) -> None:
            nonlocal in_flight
            fb = FrameBatch.concat(group)
            if device.type == "cuda" and out.windows == 0 and not running:
                # as many windows as the free memory holds: a window is its float frames (~1.2 GB at 1080p)
                # and about as much again of the detector's own, with room to spare
                free, _ = torch.cuda.mem_get_info(device)
                in_flight = max(1, min(in_flight, free // (3 * 4 * fb.data[:, :3].numel())))
            running.append((fb, pool.submit(detect, fb)))
            while len(running) >= max(1, in_flight) or (running and running[0][1].done()):
                fold(running[0][0], running[0][1].result())
                running.popleft()

        try:
            for batch in batches:
                if not len(batch):
                    continue
                if out.first_frame is None:
                    out.first_frame = batch.data[0, :3].permute(1, 2, 0).cpu().numpy()
                out.frames += len(batch)
                pending.append(batch)
                if sum(len(b) for b in pending) >= window:
                    run(pending)
                    pending = []
            if pending:
                run(pending)
            while running:
                fold(running[0][0], running[0][1].result())
                running.popleft()
        finally:
            for _, fut in running:
                fut.cancel()
    kept = [m for m in found if not in_scene(m, scene)]
    out.preview = next((frame for frame, marks in previews if any(not in_scene(m, scene) for m in marks)), None)
    if len(kept) < len(found):
        out.notes.append(
            f"{len(found) - len(kept)} mark(s) of some windows dropped: at the place of a part of the picture that "
            "other windows showed hidden by something passing in front of it (the scene's)"
        )
    out.marks = merge_marks(kept)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - t0
    return out


def in_scene(mark: Mark, scene: list[np.ndarray], same: float = SAME_PLACE) -> bool:
    """Whether `mark`'s support (α > 0.1) is at the place of one of the `scene` supports (H×W bool): IoU ≥ `same`."""
    a = mark.alpha > 0.1
    for s in scene:
        union = int((a | s).sum())
        if union and int((a & s).sum()) / union >= same:
            return True
    return False
