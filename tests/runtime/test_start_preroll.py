"""`vidpipe run --start/--duration` over a temporal stage (issue 15, item 3): the part is fed the stages' reach
(pre-roll before `--start`, look-ahead past its end), so its frames are those of the whole run at the same
times, bit for bit; without the reach the first frames of the part differ (the test can fail)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temporal_stages import MovingAverage, RunningMean
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.runtime.recipe import trimmed
from vidpipe.stages.base import Reach, Stage
from vidpipe.testing import decode_all

pytestmark = pytest.mark.timeout(120)

FRAMES = 50
#: --start at frame 20 (0.8 s at 25 fps), --duration 12 frames; keyframes every 10 frames
START, LENGTH = 20, 12


@pytest.fixture(scope="module")
def clip(make) -> Path:
    return make("start-preroll.mkv", size=(64, 48), frames=FRAMES, codec="ffv1", options={"g": "10"})


def _opts() -> RunOptions:
    return RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))


class NoReach(RunningMean):
    """The same stage declaring no pre-roll: a part then starts its mean afresh at --start."""

    @property
    def reach(self) -> Reach:
        return Reach()


@pytest.mark.parametrize(
    "make_stage", [lambda: RunningMean(6), lambda: MovingAverage(3, window=4, overlap=3)], ids=["recurrent", "windowed"]
)
def test_a_part_is_the_whole_runs_frames(clip, tmp_path, make_stage) -> None:
    run(clip, tmp_path / "whole.mkv", [make_stage()], _opts())
    _, whole = decode_all(tmp_path / "whole.mkv")
    part_opts = trimmed(_opts(), start=str(START / 25), duration=str(LENGTH / 25), frames=None)
    run(clip, tmp_path / "part.mkv", [make_stage()], part_opts)
    _, part = decode_all(tmp_path / "part.mkv")
    assert part.shape[0] == LENGTH
    assert torch.equal(part, whole[START : START + LENGTH])


def test_without_the_reach_the_part_differs(clip, tmp_path) -> None:
    stages: list[Stage] = [NoReach(6)]
    run(clip, tmp_path / "whole.mkv", [RunningMean(6)], _opts())
    _, whole = decode_all(tmp_path / "whole.mkv")
    part_opts = trimmed(_opts(), start=str(START / 25), duration=str(LENGTH / 25), frames=None)
    run(clip, tmp_path / "part.mkv", stages, part_opts)
    _, part = decode_all(tmp_path / "part.mkv")
    assert part.shape[0] == LENGTH
    assert not torch.equal(part[:5], whole[START : START + 5])
