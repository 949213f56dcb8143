"""A saved flow artefact is reused only on an identical frame axis."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from vidpipe.frames import FrameBatch
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.flow_reuse import FlowReuse, FlowReuseError, save_flow


def _artefact(tmp_path: Path, indices: list[int]) -> Path:
    p = tmp_path / "flow.npz"
    save_flow(p, indices, [0.0] + [0.5] * (len(indices) - 1))
    return p


def test_matching_axis_is_reused(tmp_path: Path) -> None:
    reuse = FlowReuse.open(_artefact(tmp_path, list(range(10))), "require")
    assert reuse.check(range(10))
    assert reuse.magnitude_at(3, 3) == pytest.approx(0.5)


def test_mismatch_refused_in_require_mode(tmp_path: Path) -> None:
    reuse = FlowReuse.open(_artefact(tmp_path, list(range(0, 20, 2))), "require")
    with pytest.raises(FlowReuseError, match="frame indices differ"):
        reuse.check(range(10))
    reuse = FlowReuse.open(_artefact(tmp_path, list(range(10))), "require")
    with pytest.raises(FlowReuseError, match="ours 9"):
        reuse.check(range(9))  # same prefix, different length: still another axis


def test_mismatch_falls_back_in_prefer_mode(tmp_path: Path) -> None:
    reuse = FlowReuse.open(_artefact(tmp_path, [0, 1, 2, 4]), "prefer")
    assert reuse.magnitude_at(2, 2) == pytest.approx(0.5)
    assert reuse.magnitude_at(3, 3) is None  # artefact frame 4, ours 3
    assert not reuse.active and "position 3" in reuse.reason
    assert reuse.magnitude_at(2, 2) is None  # never again once refused


def test_missing_file_fails_fast_only_when_required(tmp_path: Path) -> None:
    with pytest.raises(FlowReuseError):
        FlowReuse.open(tmp_path / "none.npz", "require")
    assert not FlowReuse.open(tmp_path / "none.npz", "prefer").active


def _batch(n: int, start: int) -> FrameBatch:
    g = torch.Generator().manual_seed(start)
    data = torch.randint(0, 255, (n, 3, 36, 64), dtype=torch.uint8, generator=g)
    return FrameBatch(data=data, pts=list(range(start, start + n)), time_base=Fraction(1, 25),
                      index=list(range(start, start + n)))  # fmt: skip


def test_detector_uses_artefact_and_refuses_shifted_one(tmp_path: Path) -> None:
    opts = CutOptions(detectors=("motion",), preset="fast")
    det = CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(12))), "require"))
    det.process(_batch(12, 0))
    det.flush()
    assert det.stats.flow_reused == 11 and det.stats.flow_pairs == 0
    shifted = CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(1, 13))), "require"))
    with pytest.raises(FlowReuseError):
        shifted.process(_batch(12, 0))
    prefer = CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(1, 13))), "prefer"))
    prefer.process(_batch(12, 0))
    prefer.flush()
    assert prefer.stats.flow_reused == 0 and prefer.stats.flow_pairs == 11
    assert np.isfinite([e.score for e in prefer.events]).all()


def test_artefact_longer_than_the_stream_is_refused_at_the_end(tmp_path: Path) -> None:
    """Every analysed frame matches, but the artefact has one more: another axis, caught when the stream ends."""
    opts = CutOptions(detectors=("motion",), preset="fast")
    det = CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(13))), "require"))
    det.process(_batch(12, 0))
    assert det.stats.flow_reused == 11
    with pytest.raises(FlowReuseError, match="artefact has 13 frames, ours 12"):
        det.flush()


def test_decimated_analysis_refuses_an_every_frame_artefact(tmp_path: Path) -> None:
    """At analysis_fps 12.5 of a 25 fps source we analyse frames 0, 2, 4 …: an artefact on 0, 1, 2 … is not ours."""
    opts = CutOptions(detectors=("motion",), preset="fast", analysis_fps=Fraction(25, 2))
    with pytest.raises(FlowReuseError, match="artefact frame 1, ours 2"):
        CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(12))), "require")).process(
            _batch(12, 0)
        )
    on_axis = CutDetector(opts, flow_reuse=FlowReuse.open(_artefact(tmp_path, list(range(0, 12, 2))), "require"))
    on_axis.process(_batch(12, 0))
    on_axis.flush()
    assert on_axis.stats.frame_indices == list(range(0, 12, 2)) and on_axis.stats.flow_reused == 5
