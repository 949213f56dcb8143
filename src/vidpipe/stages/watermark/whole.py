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
from typing import Final

import numpy as np
import torch

from ...frames import FrameBatch, float_pixels
from ...media.yuv import PlanarBatch, planes_to_rgb_frames
from .detect import Detection, DetectOptions, detect_marks, gradients, merge_marks, presence_any_background
from .fade import runs as _runs
from .marks import Mark

#: a mark whose support (α > 0.1) and a support shown to be the scene's have at least this IoU are one feature
SAME_PLACE: Final = 0.5


#: frames per detection window
DETECT_WINDOW: Final = 48
#: frames per batch read for detection (windows are whole batches, so this and `DETECT_WINDOW` fix where
#: windows start)
DETECT_BATCH: Final = 16
#: detection windows in flight at once on a GPU (threads, each with its own CUDA stream); the CPU runs one, its
#: operations already use every core
GPU_WINDOWS_IN_FLIGHT: Final = 3
#: windows before a mark's first window in which it is looked for (`_Places`), the least run of frames there, and
#: the least `presence_any_background` of a frame there: the bench clip's logo (α 0.6, found over a light sky) reads
#: 0.49–0.51 over the black shot that follows, 0.92 over the next sky; the detector's own threshold (`present`, 0.5,
#: signed) reads 0.36 there
LOOK_BACK: Final = 2
EXTEND_RUN: Final = 2
EXTEND_PRESENT: Final = 0.3
#: least run of frames inside a window that did not find the mark (a run touching the window's edge continues
#: across it and needs only `EXTEND_RUN`): the detector's own least (`DetectOptions.min_frames`). Runs of 2–4
#: frames at 0.3–0.5 were scattered over the 900-frame bench clip's shots with 2 frames everywhere
INSIDE_RUN: Final = DetectOptions().min_frames
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
    batches: Iterable[FrameBatch | PlanarBatch],
    device: torch.device,
    window: int = DETECT_WINDOW,
    in_flight: int | None = None,
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

    places = _Places(device)

    def detect(fb: FrameBatch) -> Detection:
        # inference mode is per thread; a worker's own stream, drained before its tensors reach another thread
        with torch.inference_mode():
            if device.type != "cuda" or in_flight <= 1:
                det = detect_marks(float_pixels(fb.data, device=device), list(fb.index))
            else:
                if getattr(local, "stream", None) is None:
                    local.stream = torch.cuda.Stream(device)
                with torch.cuda.stream(local.stream):
                    det = detect_marks(float_pixels(fb.data, device=device), list(fb.index))
                local.stream.synchronize()
            det.small = _held(det.small)  # on the host: the last windows' are kept (`_Places`)
            return det

    def fold(fb: FrameBatch, det: Detection) -> None:
        out.notes.extend(n for n in det.notes if n not in out.notes)
        found.extend(det.marks)
        with torch.inference_mode():
            found.extend(places.fold(list(fb.index), det))
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
            for item in batches:
                if not len(item):
                    if isinstance(item, PlanarBatch):
                        item.done()
                    continue
                batch = _rgb_on(item, device) if isinstance(item, PlanarBatch) else item
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


def _rgb_on(batch: PlanarBatch, device: torch.device) -> FrameBatch:
    """A planar batch as RGB on `device` (its pooled host buffer handed back): the YUV → RGB conversion of the
    run's own GPU path instead of swscale on the host. Finished before the windows' streams read it."""
    fmt = batch.fmt
    rgb = torch.empty(len(batch), 3, fmt.height, fmt.width, dtype=fmt.dtype, device=device)
    planes_to_rgb_frames(batch.data.to(device, non_blocking=True), fmt, batch.colour, rgb)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    batch.done()
    return FrameBatch(data=rgb, pts=batch.pts, time_base=batch.time_base, colour=batch.colour, index=batch.index)


def _held(small: torch.Tensor | None) -> torch.Tensor | None:
    """A window's analysis frames as kept for `LOOK_BACK`: on the host (float16 from a GPU: ~19 MB at 1080p)."""
    if small is None or small.device.type == "cpu":
        return small
    return small.half().cpu()


@dataclass(slots=True)
class _Place:
    """Where a mark was found: the first mark found there (its α and W serve the frames found by presence) and
    its gradient template (`Detection.templates`), on the detection's device."""

    mark: Mark
    template: torch.Tensor
    support: np.ndarray


class _Places:
    """A mark found in one window is looked for in the windows that did not find it at its place. Where the
    picture under it hardly moves, a window has no evidence either way (a still shot: `detect_marks` notes "held
    edges over a picture that hardly moves") and a logo present throughout the input was left in those windows'
    frames, with their frames taken for mark-free ones by the removal's copies (issue 17: the bench clip's still
    shots, half its frames). Such a window's frames that show the mark's template (`presence_any_background` ≥
    `EXTEND_PRESENT`, in runs of at least `INSIDE_RUN`, or `EXTEND_RUN` at the window's edge) get it as another span
    of that mark; a part of a larger place's mark (`_fragment`) is not carried. So do the frames at a
    window's edge that its own detection left out next to the mark's span, where a window lies beyond that edge (a
    cut to a black shot two frames before the window ends: the detector's signed presence reads 0.36 there); a
    window alone (the eval's clips) is as its detection found it. Windows are folded in input order; the last
    `LOOK_BACK` windows' analysis frames are kept for a mark first found after them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.places: list[_Place] = []
        #: (stream indices, analysis frames, places found there) of the last windows
        self.recent: deque[tuple[list[int], torch.Tensor, set[int]]] = deque(maxlen=LOOK_BACK)
        #: the last window's edge frames that show a mark found there, given once a window follows it
        self.tail: list[Mark] = []

    def fold(self, index: list[int], det: Detection) -> list[Mark]:
        """The spans, as marks, of known marks in this window (stream `index`, `det` its detection) and of its new
        marks in the kept windows before it."""
        here: dict[int, set[int]] = {}  # place → the window's frames (positions) its marks there cover
        new: list[int] = []
        if det.small is None or len(det.templates) != len(det.marks):  # not `detect_marks`'s: nothing to look for
            out, self.tail = self.tail, []
            return out
        for m, tmpl in zip(det.marks, det.templates, strict=True):
            i = place_of(m, [p.support for p in self.places])
            if i is None:
                self.places.append(_Place(m, tmpl, m.alpha > 0.1))
                i = len(self.places) - 1
                new.append(i)
            here.setdefault(i, set()).update(k for k, ix in enumerate(index) if m.covers(ix))
        out, self.tail = self.tail, []
        first = not self.recent
        grads = self._gradients(det.small)
        for i in range(len(self.places)):
            if self._fragment(i):
                continue
            covered = here.get(i)
            for a, b, mark in self._look(index, grads, i, covered or set()):
                if covered is None:
                    if _whole_run(a, b, len(index)):
                        out.append(mark)  # a window that did not find it
                elif a == 0 and not first:
                    out.append(mark)  # its own window's first frames, after another window
                elif b == len(index):
                    self.tail.append(mark)  # its last frames: only if another window follows
        for old_index, small, there in self.recent:
            if looked := [i for i in new if i not in there and not self._fragment(i)]:
                old = self._gradients(small)
                runs = [run for i in looked for run in self._look(old_index, old, i, set())]
                out += [mark for a, b, mark in runs if _whole_run(a, b, len(old_index))]
        self.recent.append((index, det.small, set(here)))
        return out

    def _fragment(self, i: int) -> bool:
        """Whether place `i` is a part of a larger place's mark (at least half its support inside it): the detector
        also finds a logo's parts on their own in some windows; carried across windows they would be removed
        again over the whole mark's removal."""
        own = self.places[i].support
        area = int(own.sum())
        return any(
            j != i and int(p.support.sum()) > area and int((own & p.support).sum()) >= 0.5 * area
            for j, p in enumerate(self.places)
        )

    def _gradients(self, small: torch.Tensor) -> torch.Tensor:
        """A window's analysis frames' gradients, on the detection's device (once a window, for every place)."""
        return gradients(small.to(self.device, torch.float32))

    def _look(self, index: list[int], grads: torch.Tensor, i: int, skip: set[int]) -> list[tuple[int, int, Mark]]:
        """(start, stop, the mark over them) of the runs of frames (positions not in `skip`) of a window (stream
        `index`, its analysis frames' `grads`) that show place `i`'s mark."""
        p = self.places[i]
        presence = presence_any_background(grads, p.template.to(self.device))
        presence = [0.0 if k in skip else v for k, v in enumerate(presence)]
        out: list[tuple[int, int, Mark]] = []
        for a, b in _runs(presence, EXTEND_PRESENT):
            if b - a >= EXTEND_RUN:
                info = {"presence": round(float(np.mean(presence[a:b])), 3), "found": "at its place in another window"}
                out.append((a, b, Mark(index[a], index[b - 1], p.mark.alpha, p.mark.colour, "auto", info)))
        return out


def _whole_run(a: int, b: int, frames: int) -> bool:
    """Whether frames a..b−1 of a window of `frames` that did not find a mark are kept as its span: `INSIDE_RUN`
    long, or touching the window's edge (a span going on across it)."""
    return b - a >= INSIDE_RUN or a == 0 or b == frames


def place_of(mark: Mark, supports: list[np.ndarray], same: float = SAME_PLACE) -> int | None:
    """The first of `supports` (H×W bool) at `mark`'s place: its support (α > 0.1) and it have IoU ≥ `same`."""
    a = mark.alpha > 0.1
    for i, s in enumerate(supports):
        union = int((a | s).sum())
        if union and int((a & s).sum()) / union >= same:
            return i
    return None


def in_scene(mark: Mark, scene: list[np.ndarray], same: float = SAME_PLACE) -> bool:
    """Whether `mark`'s support (α > 0.1) is at the place of one of the `scene` supports (H×W bool): IoU ≥ `same`."""
    return place_of(mark, scene, same) is not None
