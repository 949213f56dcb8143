"""The temporal engine's identity tests (issue 15): small pure-torch stages whose exact output is known, run
whole, in batches of any size, split into shares of the video (with the engine's pre-roll and context), in
windows of any length and overlap, and with an out-of-memory error injected mid-run: the frames written are
always bit-identical to the whole run. Integer arithmetic makes every output exact, on the CPU and on CUDA."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import pytest
import torch

from temporal_stages import MovingAverage, Recorder, RunningMean, drive, recurrent_whole, runner_oom
from vidpipe.errors import DeviceOutOfMemoryError, StageError, UsageError
from vidpipe.frames import FrameBatch
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.temporal import RecurrentRunner, WindowRunner, chain_reach, feed_span
from vidpipe.stages.base import GridRule, Stage
from vidpipe.stages.temporal import Reach, WindowedStage
from vidpipe.testing import decode_all

N = 41  # frames of the test video: prime, so no window or batch size divides it

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
]


def video(n: int = N, device: str = "cpu") -> FrameBatch:
    g = torch.Generator().manual_seed(7)
    data = torch.randint(0, 256, (n, 3, 6, 8), generator=g, dtype=torch.uint8).to(device)
    return FrameBatch(data=data, pts=[3 * i for i in range(n)], time_base=Fraction(1, 75), index=list(range(n)))


def batches(v: FrameBatch, lo: int, hi: int, size: int) -> list[FrameBatch]:
    return [v.slice(a, min(hi, a + size)) for a in range(lo, hi, size)]


def same(a: FrameBatch, b: FrameBatch) -> None:
    assert a.index == b.index
    assert a.pts == b.pts
    assert torch.equal(a.data, b.data)


# -- recurrent -----------------------------------------------------------------------------------------------


def recurrent_shares(v: FrameBatch, p: int, bounds: list[int], batch: int, cuts: tuple[int, ...] = ()) -> FrameBatch:
    outs = []
    for start, end in pairwise(bounds):
        stage = RunningMean(p)
        first, stop = feed_span(stage.reach, start, end, total=N, hard_cuts=cuts)
        runner = RecurrentRunner(stage, runner_oom(batch), emit_from=start, emit_to=end, hard_cuts=cuts)
        outs.append(drive(runner, batches(v, first, stop, batch)))
    return FrameBatch.concat(outs)


def test_running_mean_stage_is_what_it_says() -> None:
    v = video()
    out = recurrent_whole(v, 3)
    want = (v.data[3:6].to(torch.int32).sum(0) // 3).to(torch.uint8)
    assert torch.equal(out.data[5], want)
    assert torch.equal(out.data[0], v.data[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 4, 16, 64])
@pytest.mark.parametrize("bounds", [[0, N], [0, 10, 25, N], [0, 1, 2, 3, 40, N], [0, 20, N]])
def test_recurrent_split_into_shares_and_batches_is_the_whole_run(device: str, batch: int, bounds: list[int]) -> None:
    v = video(device=device)
    same(recurrent_shares(v, 5, bounds, batch), recurrent_whole(v, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_hard_cuts_reset_the_state_and_shorten_the_preroll(device: str) -> None:
    v = video(device=device)
    cuts = (9, 23)
    whole = recurrent_whole(v, 6, cuts)
    # a cut starts afresh: its first output is its own frame, and what follows ignores the previous shot
    assert torch.equal(whole.data[9], v.data[9])
    assert not torch.equal(whole.data[10], recurrent_whole(v, 6).data[10])
    same(recurrent_shares(v, 6, [0, 11, 25, N], 3, cuts), whole)
    assert feed_span(Reach(before=5), 11, 25, hard_cuts=cuts) == (9, 25)
    assert feed_span(Reach(before=5), 30, 35, hard_cuts=cuts) == (25, 35)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("oom_on_call", [1, 2, 5])
def test_recurrent_oom_mid_run_changes_nothing(device: str, oom_on_call: int) -> None:
    v = video(device=device)
    stage = RunningMean(4, oom_on_call=oom_on_call)
    oom = runner_oom(8)
    out = drive(RecurrentRunner(stage, oom, hard_cuts=(17,)), batches(v, 0, N, 8))
    same(out, recurrent_whole(v, 4, (17,)))
    assert len(oom.events) == 1 and oom.size == 4  # the failed sub-batch re-ran from the same state, halved


# -- windowed -------------------------------------------------------------------------------------------------


def windowed_whole(v: FrameBatch, k: int) -> FrameBatch:
    return drive(WindowRunner(MovingAverage(k, window=N, overlap=k), runner_oom(N)), [v])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window", [1, 2, 5, 16, 64])
@pytest.mark.parametrize("extra", [0, 3])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_windows_of_any_length_and_overlap_are_the_whole_run(device: str, window: int, extra: int, batch: int) -> None:
    v = video(device=device)
    k = 2
    stage = MovingAverage(k, window=window, overlap=k + extra)
    runner = WindowRunner(stage, runner_oom(window))
    same(drive(runner, batches(v, 0, N, batch)), windowed_whole(v, k))
    # memory: the kept frames, their context and the batch being added, whatever the video's length
    assert runner.peak_held <= window + 2 * (k + extra) - 1 + batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bounds", [[0, 13, N], [0, 1, 2, 30, N], [0, 8, 16, 24, 32, N]])
@pytest.mark.parametrize("window", [3, 8])
def test_windowed_split_into_shares_is_the_whole_run(device: str, bounds: list[int], window: int) -> None:
    v = video(device=device)
    k = 3
    outs = []
    for start, end in pairwise(bounds):
        stage = MovingAverage(k, window=window, overlap=k)
        first, stop = feed_span(stage.reach, start, end, total=N)
        runner = WindowRunner(stage, runner_oom(window), emit_from=start, emit_to=end)
        outs.append(drive(runner, batches(v, first, stop, 5)))
    same(FrameBatch.concat(outs), windowed_whole(v, k))


@pytest.mark.parametrize("device", DEVICES)
def test_a_share_fed_past_its_end_writes_only_its_frames(device: str) -> None:
    v = video(device=device)
    runner = WindowRunner(MovingAverage(2, window=4, overlap=2), runner_oom(4), emit_from=10, emit_to=20)
    out = drive(runner, batches(v, 0, N, 6))  # the whole video fed: context beyond the share is ignored
    same(out, windowed_whole(v, 2).slice(10, 20))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("oom_on_call", [1, 3])
def test_windowed_oom_shrinks_the_window_over_the_same_frames(device: str, oom_on_call: int) -> None:
    v = video(device=device)
    stage = MovingAverage(2, window=8, overlap=2, oom_on_call=oom_on_call)
    oom = runner_oom(8)
    out = drive(WindowRunner(stage, oom), batches(v, 0, N, 10))
    same(out, windowed_whole(v, 2))
    assert len(oom.events) == 1 and oom.size == 4
    # the re-run: 4 kept frames with their context (2 each side, none before frame 0)
    assert stage.sizes[oom_on_call] == {1: 4 + 2, 3: 4 + 2 * 2}[oom_on_call]


def test_windowed_oom_at_one_frame_is_an_error() -> None:
    v = video()

    class Never(MovingAverage):
        def process_window(self, frames: FrameBatch) -> FrameBatch:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(DeviceOutOfMemoryError):
        drive(WindowRunner(Never(1, window=4, overlap=1), runner_oom(4)), [v])


class Marks(WindowedStage):
    """Outputs the number of the call that computed a frame, so the seam's blend weights can be read back."""

    name = "marks"
    seam = "crossfade"

    def __init__(self, window: int, overlap: int, fade: int) -> None:
        self.window, self.overlap, self.fade = window, overlap, fade
        self.calls = 0

    def process_window(self, frames: FrameBatch) -> FrameBatch:
        self.calls += 1
        return frames.with_data(torch.full_like(frames.data, 0.0, dtype=torch.float32) + 100.0 * self.calls)


def test_crossfade_blends_the_previous_window_into_the_next() -> None:
    v = video(20)
    v = v.with_data(v.data.float() / 255)
    out = drive(WindowRunner(Marks(window=6, overlap=3, fade=2), runner_oom(6)), [v])
    assert len(out) == 20 and out.index == list(range(20))
    got = [round(float(out.data[i, 0, 0, 0]), 3) for i in range(20)]
    # windows 1..4 keep 0–5, 6–11, 12–17, 18–19; the first two frames after a seam are ⅓ and ⅔ the new window
    assert got[:6] == [100.0] * 6
    assert got[6:8] == [round(100 * 2 / 3 + 200 / 3, 3), round(100 / 3 + 200 * 2 / 3, 3)]
    assert got[8:12] == [200.0] * 4
    assert got[18:20] == [round(300 * 2 / 3 + 400 / 3, 3), round(300 / 3 + 400 * 2 / 3, 3)]


class Parts(MovingAverage):
    """Records the output ranges the engine asks of each window (`process_part`)."""

    def __init__(self, k: int, *, window: int, overlap: int, seam: str = "pick", fade: int = 0) -> None:
        super().__init__(k, window=window, overlap=overlap)
        self.seam, self.fade = seam, fade  # type: ignore[assignment]
        self.asked: list[tuple[int, int, int]] = []

    def process_part(self, frames: FrameBatch, start: int, stop: int) -> FrameBatch:
        self.asked.append((len(frames), start, stop))
        return super().process_part(frames, start, stop)


def test_only_the_kept_outputs_of_a_window_are_asked_for() -> None:
    """Context frames' outputs are never used: a window is asked for its kept frames only (pick), or those and
    the crossfade's tail (none after the last window); the frames written are those of whole windows."""
    v = video(20)
    st = Parts(1, window=6, overlap=3)
    out = drive(WindowRunner(st, runner_oom(6)), [v])
    assert st.asked == [(9, 0, 6), (12, 3, 9), (11, 3, 9), (5, 3, 5)]
    ref = MovingAverage(1, window=6, overlap=3)
    whole = [ref.process_window(v.slice(max(0, a - 3), min(20, a + 9))) for a in range(0, 20, 6)]
    kept = [w.slice(min(a, 3), min(a, 3) + min(6, 20 - a)) for a, w in zip(range(0, 20, 6), whole, strict=True)]
    assert torch.equal(out.data, FrameBatch.concat(kept).data)
    fading = Parts(1, window=6, overlap=3, seam="crossfade", fade=2)
    drive(WindowRunner(fading, runner_oom(6)), [v])
    assert fading.asked == [(9, 0, 8), (12, 3, 11), (11, 3, 11), (5, 3, 5)]


def test_declarations_are_checked() -> None:
    with pytest.raises(UsageError, match="fade"):
        WindowRunner(Marks(window=4, overlap=1, fade=2), runner_oom(4))
    with pytest.raises(UsageError, match="window"):
        WindowRunner(MovingAverage(1, window=0, overlap=1), runner_oom(1))
    with pytest.raises(StageError, match="start"):
        feed_span(Reach(1, 1), 5, 3)
    assert Reach(2, 0) + Reach(1, 3) == Reach(3, 3)
    assert feed_span(Reach(before=2, after=4), 0, 10, total=12) == (0, 12)


class Gridded(Stage):
    """A stage that lays its own output grid (as interpolation does) and reads one frame past its last output."""

    name = "gridded"

    def process(self, batch: FrameBatch) -> FrameBatch | None:
        return batch

    @property
    def reach(self) -> Reach:
        return Reach(after=1)

    def segment_grid(self, start: Fraction) -> GridRule:
        return GridRule(start=start, rate=Fraction(25), out_rate=Fraction(60))


def test_a_chains_reach_adds_up_unless_it_meets_an_output_grid() -> None:
    rec, win = RunningMean(4), MovingAverage(2, window=4, overlap=3)
    t0 = Fraction(0)
    assert chain_reach([], t0) == Reach()
    assert chain_reach([rec, Recorder(), win], t0) == Reach(3 + 3, 3)  # pre-roll 3, overlap 3 on each side
    assert chain_reach([Recorder(), Gridded()], t0) == Reach(0, 1)
    # a pre-roll before the grid would move it; a reach after it counts the grid's frames, not the source's
    assert chain_reach([rec, Gridded()], t0) is None
    assert chain_reach([Gridded(), win], t0) is None


# -- through the real pipeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["recurrent", "windowed"])
def test_the_pipeline_runs_temporal_stages_through_the_engine(make, tmp_path, shape: str) -> None:
    """`vidpipe.runtime.pipeline.run` schedules a temporal stage with its engine (batches of 4 from the reader,
    windows of 5): what reaches the next stage is the engine's whole run over the decoded frames."""
    src = make("temporal-engine.mkv", frames=23, size=(64, 48))
    stage = RunningMean(3) if shape == "recurrent" else MovingAverage(2, window=5, overlap=2)
    rec = Recorder()
    options = RunOptions(
        device="cpu",
        progress="none",
        schedule=ScheduleOptions(batch_size=4),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),
    )
    run(src, tmp_path / "o.mkv", [stage, rec], options)
    got = FrameBatch.concat(rec.seen)
    _, frames = decode_all(src)
    source = FrameBatch(data=frames, pts=got.pts, time_base=got.time_base, index=list(range(len(frames))))
    want = recurrent_whole(source, 3) if shape == "recurrent" else windowed_whole(source, 2)
    assert got.index == list(range(23))
    assert torch.equal(got.data, want.data)
