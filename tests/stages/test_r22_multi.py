"""Issue 22, item 8: `vidpipe run --interpolate … --multi k` lasts as long as its input (n·k frames, the last
source frame held k−1 more periods, as `--fps` holds it), so the stream-copied audio ends with the video."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction as F
from pathlib import Path

import av
import pytest
import torch

from vidpipe.media.synth import AudioTrack
from vidpipe.models.zoo_rife import ensure_offline_weights
from vidpipe.runtime.recipe import PipelineRecipe
from vidpipe.stages.interpolate import Interpolate

MODEL = "rife-hdv3"
#: 16 frames at 25 fps (0.64 s); PCM audio has no encoder delay or padding, so the source's audio ends exactly where
#: its video does and any gap in the output is the interpolation's
FRAMES, RATE, MULTI = 16, F(25), 4


@pytest.fixture(scope="module", autouse=True)
def _weights_and_threads() -> Iterator[None]:
    ensure_offline_weights(MODEL)
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the suite shares 2 cores
    yield
    torch.set_num_threads(before)


def _ends(path: Path) -> tuple[int, F, F, F]:
    """(video frames, video end, audio end, video rate) of a file, from its packets (end = pts + duration)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        rate = F(v.average_rate)
        ends: dict[str, F] = {"video": F(0), "audio": F(0)}
        frames = 0
        for pkt in c.demux(v, a):
            if pkt.pts is None:
                continue
            kind = pkt.stream.type
            # a video packet without a duration shows for one period of the constant output rate
            dur = pkt.duration * pkt.time_base if pkt.duration else (1 / rate if kind == "video" else F(0))
            ends[kind] = max(ends[kind], pkt.pts * pkt.time_base + dur)
            frames += kind == "video"
    return frames, ends["video"], ends["audio"], rate


def test_multi_output_lasts_as_long_as_the_input(make, cli, tmp_path):
    src = make("r22-multi.mkv", size=(64, 48), rate=RATE, frames=FRAMES, audio=[AudioTrack(codec="pcm_s16le")])
    n_in, v_in, a_in, _ = _ends(src)
    assert n_in == FRAMES and v_in == F(FRAMES) / RATE and a_in == v_in  # the premise: A/V end together
    out = tmp_path / "x4.mkv"
    res = cli(
        "run", str(src), "-o", str(out), "--interpolate", MODEL, "--multi", str(MULTI), "--device", "cpu",
        "--progress", "none", "--encoder", "h264",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    n_out, v_out, a_out, rate = _ends(out)
    assert rate == RATE * MULTI
    assert n_out == FRAMES * MULTI, f"{n_out} frames; want n·k = {FRAMES * MULTI}"
    assert abs(v_out - a_out) < 1 / rate, f"video ends at {float(v_out):.4f} s, audio at {float(a_out):.4f} s"
    assert abs(v_out - v_in) < 1 / rate


def test_multi_recipe_asks_for_the_tail_as_fps_does():
    """The recipe (shared by `run` and `job run`) builds the same duration rule for both targets."""
    multi = PipelineRecipe(interpolate=MODEL, multi=MULTI).stages()[0]
    fps = PipelineRecipe(interpolate=MODEL, fps="60").stages()[0]
    assert isinstance(multi, Interpolate) and isinstance(fps, Interpolate)
    assert multi.fill_tail is True and fps.fill_tail in (None, True)
