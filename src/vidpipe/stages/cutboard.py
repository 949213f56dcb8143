"""The cuts one run has detected, shared by its chain: the analysis stage (`stages.cuts.stage.Cuts`) writes them,
the stages after it read them (`RecurrentRunner` resets its state at hard cuts; interpolate never synthesises
across a hard cut or inside a soft transition).

One board per run, made where the chain is scheduled (`schedule.chain.share_cuts`) and handed to every stage
through `Stage.use_cuts`; nothing global. Frames are source frame numbers (`FrameBatch.index` as the analysis
stage sees them). The analysis stage settles frames in stream order, each exactly once, when it lets them go:
a frame that has left the analysis stage has a final answer, and asking about one that has not is a bug of the
chain's order (a `StageError`), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import StageError

CutKind = Literal["hard", "soft"]


@dataclass(frozen=True, slots=True)
class BoardCut:
    """What lies between a frame and the one before it: a hard cut (the frame starts a new shot) or a soft
    transition (a dissolve or fade the pair belongs to); `score` is the detector's event score."""

    kind: CutKind
    score: float


class CutBoard:
    """Hard cuts and soft transitions of one run, frame by frame as the analysis stage settles them."""

    def __init__(self) -> None:
        #: frame → the cut between the frame before it and it (only frames with a cut are stored)
        self._cuts: dict[int, BoardCut] = {}
        #: the last frame settled (frames are settled in increasing order)
        self._through = -1

    @property
    def settled_through(self) -> int:
        """The last frame settled (−1: none yet)."""
        return self._through

    def settle(self, frame: int, cut: BoardCut | None) -> None:
        """Final word on `frame`: the cut before it, or None (same shot as the frame before)."""
        if frame <= self._through:
            raise StageError(f"cut board: frame {frame} settled after frame {self._through} (frames go in order)")
        self._through = frame
        if cut is not None:
            self._cuts[frame] = cut

    def before(self, frame: int) -> BoardCut | None:
        """The cut between `frame` and the frame before it, None within a shot."""
        if frame > self._through:
            raise StageError(
                f"cut board: frame {frame} asked for before the analysis stage let it go (settled through "
                f"{self._through}); a stage reading cuts must run after the cuts stage"
            )
        return self._cuts.get(frame)

    def hard_cut(self, frame: int) -> bool:
        """`frame` starts a new shot."""
        cut = self.before(frame)
        return cut is not None and cut.kind == "hard"

    def cuts(self) -> dict[int, BoardCut]:
        """Every cut settled so far, by frame (a copy)."""
        return dict(self._cuts)
