"""Cut detection as an analysis stage of `vidpipe run` (issue 15, item 4): frames through unchanged, each held
only until the detector's answer about it is final, that answer settled on the run's `CutBoard`, which
`RecurrentRunner` (state reset at hard cuts) and interpolate (never across a cut) read in the same pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cut_clips import CUT, RATE, two_shot_frames
from test_synthetic import _sequence  # the detector tests' clip: a hard cut at 30, a dissolve, a fade

from temporal_stages import Recorder, RunningMean, recurrent_whole
from vidpipe.errors import StageError, UsageError
from vidpipe.frames import FrameBatch
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.models.zoo_rife import ensure_offline_weights
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.runtime.recipe import PipelineRecipe
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.cutboard import BoardCut, CutBoard
from vidpipe.stages.cuts.detector import SETTLE_LAG, CutDetector, CutOptions
from vidpipe.stages.cuts.presets import PRESET_NAMES
from vidpipe.stages.cuts.run import run_detector
from vidpipe.stages.cuts.stage import DETECTORS, HOLD_FACTOR, TRANSNET_LAG, Cuts
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.registry import CUT_DETECTORS
from vidpipe.testing import decode_all

CPU = torch.device("cpu")


def _batches(frames: np.ndarray, size: int, first: int = 0) -> Iterator[FrameBatch]:
    """`frames` (N×H×W×3) as batches of `size`, numbered from source frame `first`."""
    data = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    for s in range(0, len(frames), size):
        n = min(size, len(frames) - s)
        pts = list(range(s, s + n))
        yield FrameBatch(data=data[s : s + n], pts=pts, time_base=1 / RATE, index=[first + p for p in pts])


def _spec(frames: np.ndarray) -> StreamSpec:
    return StreamSpec(width=frames.shape[2], height=frames.shape[1], time_base=1 / RATE, nominal_rate=RATE)


def _expected(events: list[dict], frames: int) -> dict[int, str | None]:
    """What the board must say of each frame, from the final events: a hard cut at its frame; a soft transition
    for every pair that touches its span (the frame before its start … the frame after its end)."""
    out: dict[int, str | None] = dict.fromkeys(range(frames))
    for e in events:
        if e["kind"] == "soft":
            for f in range(e["start"], min(frames, e["end"] + 2)):
                out[f] = "soft"
    for e in events:
        if e["kind"] == "hard":
            out[e["frame"]] = "hard"
    return out


def _drive(stage: Cuts, frames: np.ndarray, size: int) -> tuple[FrameBatch, dict[int, str | None], list[int]]:
    """Frames through the stage with a board: (all frames out, the board's answer for each frame read the moment
    it came out, frames held after each call)."""
    board = CutBoard()
    stage.setup(CPU, _spec(frames))
    stage.use_cuts(board)
    outs: list[FrameBatch] = []
    seen: dict[int, str | None] = {}
    held: list[int] = []
    fed = 0

    def take(out: FrameBatch | None) -> None:
        if out is None:
            return
        outs.append(out)
        assert board.settled_through == out.index[-1]
        for f in out.index:
            cut = board.before(f)
            seen[f] = None if cut is None else cut.kind

    for b in _batches(frames, size):
        take(stage.process(b))
        fed += len(b)
        held.append(fed - sum(len(o) for o in outs))
        if held[-1]:  # a frame still held has no answer yet: asking is a chain-order bug, not a guess
            with pytest.raises(StageError, match="before the analysis stage let it go"):
                board.before(fed - 1)
    take(stage.flush())
    return FrameBatch.concat(outs), seen, held


def test_cut_detector_names_agree_with_the_presets() -> None:
    assert ("off", *DETECTORS) == CUT_DETECTORS
    assert (*PRESET_NAMES, "transnetv2") == DETECTORS
    with pytest.raises(UsageError, match="invalid --cuts detector 'slow'; valid: off, quality"):
        PipelineRecipe(cuts="slow").stages()
    assert [s.name for s in PipelineRecipe(cuts="fast", pad=8).stages()] == ["cuts", "pad"]
    assert PipelineRecipe().stages() == []


def test_board_answers_only_settled_frames_in_order() -> None:
    board = CutBoard()
    board.settle(0, None)
    board.settle(3, BoardCut("hard", 0.9))
    assert board.before(0) is None and board.hard_cut(3) and not board.hard_cut(2)
    with pytest.raises(StageError, match="frame 4 asked for before"):
        board.before(4)
    with pytest.raises(StageError, match="settled after frame 3"):
        board.settle(3, None)


@pytest.mark.parametrize("size", [1, 7, 16])
def test_each_frame_leaves_with_its_final_answer_and_unchanged(size: int) -> None:
    """A hard cut, a dissolve and a fade: the answer read as each frame leaves is the one the final events give,
    the frames are the ones fed, and the events are the classical detector's own."""
    frames = np.stack([np.clip(f + 0.5, 0, 255).astype(np.uint8) for f in _sequence()])
    stage = Cuts("fast")
    out, seen, held = _drive(stage, frames, size)
    report = stage.report()
    assert report["final"] and report["settled_early"] == 0
    assert seen == _expected(report["events"], len(frames))
    assert [e["frame"] for e in report["events"] if e["kind"] == "hard"] == [30]
    assert sum(v == "soft" for v in seen.values()) >= 20  # the dissolve's and the fade's pairs
    assert out.index == list(range(len(frames))) and out.pts == list(range(len(frames)))
    assert torch.equal(out.data, torch.from_numpy(frames).permute(0, 3, 1, 2))
    det = CutDetector(CutOptions(preset="fast"))
    for b in _batches(frames, size):
        det.process(b)
    det.flush()
    assert report["events"] == [e.to_json() for e in det.events]
    assert max(held) <= HOLD_FACTOR * SETTLE_LAG + size


def test_within_a_shot_a_frame_waits_exactly_the_look_ahead() -> None:
    frames = two_shot_frames()[:CUT]  # one panning shot
    _, seen, held = _drive(Cuts("default"), frames, 1)
    assert held == [min(n, SETTLE_LAG) for n in range(1, CUT + 1)]
    assert set(seen.values()) == {None}


def test_a_long_black_is_held_no_longer_than_the_cap() -> None:
    """A fade through 150 black frames: whether the black belongs to a fade is known only when it ends, so frames
    past the cap (3× the look-ahead) leave with what is known then, counted, and memory stays bounded."""
    shots = two_shot_frames().astype(np.float32)
    down = [shots[20 + i] * (5 - i) / 6 for i in range(5)]
    up = [shots[30 + i] * (i + 1) / 6 for i in range(5)]
    black = [np.zeros_like(shots[0])] * 150
    frames = np.stack([*shots[:20], *down, *black, *up, *shots[35:60]]).round().astype(np.uint8)
    stage = Cuts("fast")
    out, _, held = _drive(stage, frames, 4)
    assert max(held) <= HOLD_FACTOR * SETTLE_LAG + 4
    assert stage.report()["settled_early"] > 0
    assert torch.equal(out.data, torch.from_numpy(frames).permute(0, 3, 1, 2))


@pytest.mark.slow  # 7–23 s, 36 s in CI at load 4: TransNetV2 on the CPU
def test_transnetv2_settles_its_cuts_on_the_board() -> None:
    frames = np.stack([np.clip(f + 0.5, 0, 255).astype(np.uint8) for f in _sequence()])
    stage = Cuts("transnetv2")
    out, seen, held = _drive(stage, frames, 8)
    report = stage.report()
    assert (30, "hard") in [(e["frame"], e["kind"]) for e in report["events"]]
    assert seen == _expected(report["events"], len(frames))
    assert len(out) == len(frames) and report["settled_early"] == 0
    assert max(held) <= HOLD_FACTOR * TRANSNET_LAG + 8


# -- in a run -----------------------------------------------------------------------------------------------------


def _write_ffv1(path: Path, frames: np.ndarray, pix_fmt: str = "yuv420p") -> Path:
    """RGB frames (N×H×W×3) as lossless FFV1 at RATE."""
    with av.open(str(path), "w") as c:
        st = c.add_stream("ffv1", rate=RATE)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = i
            c.mux(st.encode(f))
        c.mux(st.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`two_shot_frames` (a hard cut at 30) as lossless FFV1."""
    return _write_ffv1(tmp_path_factory.mktemp("cuts-stage") / "two.mkv", two_shot_frames())


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def _opts(batch: int, device: str = "cpu") -> RunOptions:
    return RunOptions(
        device=device,
        progress="none",
        reader=ReaderOptions(batch_size=batch),
        schedule=ScheduleOptions(batch_size=batch),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_frames_pass_bit_identical_and_events_reach_the_manifest(clip: Path, tmp_path: Path, device: str) -> None:
    plain, cut = (
        PipelineRecipe(encoder="ffv1", device=device),
        PipelineRecipe(encoder="ffv1", cuts="fast", device=device),
    )
    outs = []
    for name, recipe in (("plain", plain), ("cuts", cut)):
        res = run(clip, tmp_path / f"{name}.mkv", recipe.stages(), recipe.run_options("none"))
        outs.append((res, *decode_all(tmp_path / f"{name}.mkv")))
    (_, t_plain, f_plain), (res, t_cut, f_cut) = outs
    assert t_cut == t_plain and torch.equal(f_cut, f_plain)
    manifest = json.loads((tmp_path / "cuts.mkv.json").read_text())
    report = manifest["stage_reports"]["cuts"]
    assert manifest["frames_in"] == 60  # decoded once
    assert [(e["frame"], e["kind"]) for e in report["events"]] == [(CUT, "hard")]
    assert manifest["stages"][0]["stage"] == "cuts" and manifest["stages"][0]["detector"] == "fast"
    # what `vidpipe cuts` finds in the same file
    alone = run_detector(clip, CutDetector(CutOptions(preset="fast"))).events
    assert [(e.frame, e.kind) for e in alone] == [(CUT, "hard")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_recurrent_state_resets_at_the_detected_cut(clip: Path, tmp_path: Path, batch: int, device: str) -> None:
    seen, rec = Recorder(), Recorder()  # what the recurrent stage is given (decoded on the device), and gives
    run(clip, tmp_path / "o.mkv", [Cuts("fast"), seen, RunningMean(3), rec], _opts(batch, device))
    got, source = FrameBatch.concat(rec.seen), FrameBatch.concat(seen.seen)
    assert got.index == source.index == list(range(60))
    assert torch.equal(got.data, recurrent_whole(source, 3, (CUT,)).data)  # identical whatever the batch size
    assert torch.equal(got.data[CUT], source.data[CUT])  # afresh at the cut: its own frame, no mean with shot A
    assert not torch.equal(got.data[CUT + 1], recurrent_whole(source, 3).data[CUT + 1])
    assert torch.equal(got.data[:CUT], recurrent_whole(source, 3).data[:CUT])


def test_each_input_of_a_multi_run_has_its_own_detector_and_board(clip: Path, tmp_path: Path) -> None:
    from vidpipe.runtime.multi import Job, run_many

    one_shot = _write_ffv1(tmp_path / "one.mkv", two_shot_frames()[:CUT])
    jobs = [Job(clip, tmp_path / "a.mkv"), Job(one_shot, tmp_path / "b.mkv")]
    res = run_many(jobs, [Cuts("fast"), RunningMean(2)], _opts(4))
    assert [v.status for v in res.videos] == ["done", "done"]
    events = [v.manifest["stage_reports"]["cuts"]["events"] for v in res.videos]
    assert [[(e["frame"], e["kind"]) for e in ev] for ev in events] == [[(CUT, "hard")], []]


# -- interpolate --------------------------------------------------------------------------------------------------

MODEL = "rife-hdv3"


@pytest.fixture(scope="module")
def around_cut() -> np.ndarray:
    """Source frames 26..33 of the two shots, cropped to 64×48: the cut is between 29 and 30."""
    ensure_offline_weights(MODEL)
    return np.ascontiguousarray(two_shot_frames()[26:34, :48, :64])


def _interpolate(frames: np.ndarray, board: CutBoard | None) -> tuple[FrameBatch, dict]:
    stage = Interpolate(MODEL, multi=2, fill_tail=True)
    spec = _spec(frames)
    stage.setup(CPU, spec)
    stage.use_cuts(board)
    outs = []
    for b in _batches(frames, 3, first=26):  # source frame numbers 26…: the board is keyed by them
        if (o := stage.process(b)) is not None:
            outs.append(o)
    if (o := stage.flush()) is not None:
        outs.append(o)
    return FrameBatch.concat(outs), stage.report()


def _board(cuts: dict[int, BoardCut]) -> CutBoard:
    board = CutBoard()
    for f in range(26, 34):
        board.settle(f, cuts.get(f))
    return board


def test_interpolate_takes_the_boards_cuts_instead_of_its_thumbnails(around_cut: np.ndarray) -> None:
    src = torch.from_numpy(around_cut).permute(0, 3, 1, 2)
    # alone, its thumbnail check finds the cut (local pair 3 → 4)
    _, alone = _interpolate(around_cut, None)
    assert [c["pair"] for c in alone["scene_cuts"]] == [[3, 4]] and alone["cut_check"] == "thumbnails"
    # with a board: the detector's hard cut at 30, and a soft transition over 27..27 (pairs 26→27 and 27→28)
    out, rep = _interpolate(around_cut, _board({30: BoardCut("hard", 0.87), 27: BoardCut("soft", 0.7),
                                                28: BoardCut("soft", 0.7)}))  # fmt: skip
    assert rep["cut_check"] == "cuts stage"
    assert [(c["pair"], c["kind"]) for c in rep["scene_cuts"]] == [([0, 1], "soft"), ([1, 2], "soft"), ([3, 4], "hard")]
    assert rep["cut_frames"] == 3 and rep["synthesized_frames"] == 4
    for pair in (0, 1, 3):  # never synthesised: the mid frame (τ = ½) is the pair's left frame (fill)
        assert torch.equal(out.data[2 * pair + 1], src[pair])
    assert not any(torch.equal(out.data[2 * p + 1], s) for p in (2, 4, 5, 6) for s in src)
    # a board without cuts rules too: the shot change the thumbnails saw is interpolated
    _, none = _interpolate(around_cut, _board({}))
    assert none["scene_cuts"] == [] and none["synthesized_frames"] == 7


@pytest.mark.slow  # a CLI run with RIFE on the CPU: 6 s quiet, 36–69 s under load
def test_cli_run_with_cuts_and_interpolation_never_synthesises_across_the_cut(cli, tmp_path: Path) -> None:
    """`vidpipe run clip --cuts fast --interpolate rife-hdv3 --multi 2` on a 96×64 crop of the two shots
    (frames 14..45, the cut at 16)."""
    ensure_offline_weights(MODEL)
    src = _write_ffv1(tmp_path / "small.mkv", two_shot_frames()[14:46, :64, :96], "yuv444p")
    out = tmp_path / "out.mkv"
    res = cli("run", str(src), "-o", str(out), "--cuts", "fast", "--interpolate", MODEL, "--multi", "2",
              "--encoder", "ffv1", "--device", "cpu", "--progress", "none")  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = json.loads(out.with_name("out.mkv.json").read_text())
    cuts, interp = manifest["stage_reports"]["cuts"], manifest["stage_reports"]["interpolate"]
    assert [(e["frame"], e["kind"]) for e in cuts["events"]] == [(16, "hard")]
    assert [(c["pair"], c["kind"]) for c in interp["scene_cuts"]] == [([15, 16], "hard")]
    assert interp["cut_frames"] == 1 and interp["frames_out"] == 64 and manifest["frames_in"] == 32
    _, got = decode_all(out)
    assert torch.equal(got[31], got[30])  # the frame between 15 and 16 is 15 again (fill), not a blend of shots
    assert not torch.equal(got[29], got[28])  # within a shot: synthesised
