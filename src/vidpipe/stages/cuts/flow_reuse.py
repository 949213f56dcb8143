"""Reuse of a saved optical-flow artefact (`core_optical_flow`'s `flow.npz`) for the motion curve.

The artefact holds `frame_indices` (int, the source frame numbers flow was computed on, ascending) and
`magnitude` (float, same length: mean flow magnitude between frame_indices[i-1] and frame_indices[i], in
fractions of the frame diagonal; magnitude[0] = 0). Its values are only valid on the exact same frame axis:
reuse is allowed only when its frame indices equal ours exactly (seed S1 §2.1), otherwise the time axis of the
motion curve would silently shift.

Modes: `prefer` (best effort: reuse when the indices match, else compute flow and say why) and `require`
(fail fast with `FlowReuseError` naming the first mismatch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ...errors import InputError

log = logging.getLogger(__name__)

ReuseMode = Literal["prefer", "require"]
REUSE_MODES: tuple[ReuseMode, ...] = ("prefer", "require")


class FlowReuseError(InputError):
    """The flow artefact cannot be reused (missing, malformed or on another frame axis) in `require` mode."""


def save_flow(path: Path, frame_indices: Sequence[int], magnitude: Sequence[float]) -> None:
    """Write an artefact in the layout `load_flow` reads (used by tests and by our own detector's output)."""
    idx = np.asarray(frame_indices, dtype=np.int64)
    mag = np.asarray(magnitude, dtype=np.float32)
    if idx.shape != mag.shape:
        raise InputError(f"flow artefact: {idx.size} frame indices but {mag.size} magnitudes")
    np.savez(path, frame_indices=idx, magnitude=mag)


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> str:
    n = min(a.size, b.size)
    diff = np.nonzero(a[:n] != b[:n])[0]
    if diff.size:
        i = int(diff[0])
        return f"position {i}: artefact frame {int(a[i])}, ours {int(b[i])}"
    return f"artefact has {a.size} frames, ours {b.size}"


@dataclass(slots=True)
class FlowReuse:
    """Loaded artefact plus its reuse policy. `magnitude_at(position, frame)` answers None when the value must
    be computed instead (prefer mode after a mismatch)."""

    path: Path
    mode: ReuseMode
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    magnitude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    active: bool = True
    reason: str = ""

    @staticmethod
    def open(path: Path, mode: ReuseMode) -> FlowReuse:
        if mode not in REUSE_MODES:
            raise InputError(f"flow reuse mode {mode!r} invalid; valid: {', '.join(REUSE_MODES)}")
        reuse = FlowReuse(path=Path(path), mode=mode)
        try:
            with np.load(path) as z:
                reuse.frame_indices = np.asarray(z["frame_indices"], dtype=np.int64)
                reuse.magnitude = np.asarray(z["magnitude"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as e:
            reuse._refuse(f"cannot read {path} ({e}); expected keys frame_indices, magnitude")
            return reuse
        if reuse.frame_indices.shape != reuse.magnitude.shape:
            reuse._refuse(f"{path}: frame_indices and magnitude differ in length")
        return reuse

    def _refuse(self, why: str) -> None:
        if self.mode == "require":
            raise FlowReuseError(f"--require-core-optical-flow: {why}")
        if self.active:
            log.warning("cuts: not reusing %s: %s; computing optical flow instead", self.path, why)
        self.active = False
        self.reason = why

    def check(self, ours: Sequence[int]) -> bool:
        """Whole-axis check, used up front when our frame indices are known in advance and at end of stream."""
        mine = np.asarray(ours, dtype=np.int64)
        if self.active and not np.array_equal(self.frame_indices, mine):
            self._refuse(f"frame indices differ ({_first_mismatch(self.frame_indices, mine)})")
        return self.active

    def magnitude_at(self, position: int, frame: int) -> float | None:
        """The saved magnitude for our `position`-th analysed frame, source frame `frame`, if reusable."""
        if not self.active:
            return None
        if position >= self.frame_indices.size or int(self.frame_indices[position]) != frame:
            have = int(self.frame_indices[position]) if position < self.frame_indices.size else None
            self._refuse(f"frame indices differ (position {position}: artefact frame {have}, ours {frame})")
            return None
        return float(self.magnitude[position])
