"""Many videos with matting (issue 16, item 5): `vidpipe run a.mp4 b.mp4 DIR/ -o OUT/ --matte …`.

- Each video keeps its own recurrent state: a recurrent stage is never one copy shared by several videos (before,
  RVM's context-free declaration made it a "frame-independent" cross-video stage, and videos of one size shared
  one state); any temporal stage, whatever its pre-roll, runs per video.
- Videos of one frame size step together (`schedule.crossvideo.JointSteps`: B videos × T frames in one
  `Matte.step_many` call, each with its own state), a video of another size alone, and every output is the one a
  solo run writes (within fp32 rounding, tests/framecheck.py; bit for bit on the CPUs measured so far).
- A joint step that runs out of memory changes no state: its videos re-run alone, outputs unchanged.
- Progress: `rates` (the ETA arithmetic), a line per video plus the total, and JSON lines whose `per_video`
  entries give each video's frames, total, fps and ETA, with each video's end reported once.
The model is RVM MobileNetV3 with random weights (`registry.random_rvm`), its alpha head moved to mid-range so
the matte is neither all 0 nor all 255 and depends on the carried state.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from framecheck import assert_frames_close
from temporal_stages import RunningMean
from vidpipe.frames import FrameBatch, StreamSpec
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.models.loading import save_safetensors
from vidpipe.runtime import progress as progress_mod
from vidpipe.runtime.multi import Job, frame_independent, run_many
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.stages.cuts.stage import Cuts
from vidpipe.stages.matte import Matte
from vidpipe.stages.registry import random_rvm
from vidpipe.stages.temporal import State
from vidpipe.testing import decode_all

#: three clips of one size (different lengths: the last rounds have other T) and one of another size
SAME = {"ma.mkv": ("testsrc2", 6), "mb.mkv": ("mandelbrot", 5), "mc.mkv": ("smptehdbars", 7)}
SIZE, OTHER_SIZE = (64, 48), (80, 48)
#: frames per round: 6 over 4 open videos is 2 frames each, so the joint step (planned at 6 frames) takes 3 videos
ROUND = 6


@pytest.fixture(scope="module")
def rvm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random RVM weights whose alpha sits mid-range: the random alpha head alone gives 0 everywhere."""
    state = load_file(str(random_rvm()))
    g = torch.Generator().manual_seed(1)
    head = state["project_mat.conv.weight"]
    head[3] = torch.randn(head[3].shape, generator=g) * 0.5  # channel 3 is alpha (fgr residual, then alpha)
    state["project_mat.conv.bias"][3] = 0.5
    return save_safetensors(state, tmp_path_factory.mktemp("rvm") / "rvm-mid.safetensors")


@pytest.fixture(scope="module")
def clips(make) -> list[Path]:
    same = [make(n, size=SIZE, frames=f, rate=Fraction(25), source=src) for n, (src, f) in SAME.items()]
    return [*same, make("md.mkv", size=OTHER_SIZE, frames=6, rate=Fraction(25))]


def _opts(*, reader_batch: int = ROUND, mode: str = "none") -> RunOptions:
    return RunOptions(
        device="cpu",
        progress=mode,  # type: ignore[arg-type]
        reader=ReaderOptions(batch_size=reader_batch),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(),
    )


def _solo(src: Path, stages: list[Any], tmp_path: Path) -> torch.Tensor:
    out = tmp_path / "solo" / src.name
    run(src, out, stages, _opts(reader_batch=8))
    return decode_all(out, keep_alpha=True)[1]


def _jobs(clips: list[Path], where: Path) -> list[Job]:
    return [Job(c, where / c.name) for c in clips]


def test_same_size_videos_step_together_and_each_matches_its_solo_run(rvm, clips, tmp_path):
    res = run_many(_jobs(clips, tmp_path / "out"), [Matte(rvm, output="rgba")], _opts())
    assert [v.status for v in res.videos] == ["done"] * 4
    same = {str(c) for c in clips[:3]}
    joint = [mb for mb in res.micro_batches if mb.stage == "matte"]
    assert joint and all(set(mb.videos) <= same for mb in joint)  # never the other size
    assert max(len(mb.videos) for mb in joint) == 3  # B = 3 videos × T = 2 frames: the planned 6
    for c, v in zip(clips, res.videos, strict=True):
        got = decode_all(v.job.output, keep_alpha=True)[1]
        want = _solo(c, [Matte(rvm, output="rgba")], tmp_path)
        assert got.shape[1] == 4 and len(got) == v.frames_in
        alpha = got[:, 3]
        assert int(alpha.max()) - int(alpha.min()) > 20  # a real matte, not one level everywhere
        assert_frames_close(got, want, what=c.name)  # FFV1 RGBA is lossless: only fp32 rounding may differ
        assert v.manifest is not None
        cross = v.manifest["schedule"]["cross_video"]
        assert cross["joint_steps"] == "matte" and cross["stages"] == []
        assert (cross["micro_batches"] > 0) == (str(c) in same)


def test_a_state_is_never_shared_even_without_pre_roll(make, tmp_path):
    """A recurrent stage declaring no pre-roll and no context still carries state: each video its own copy. The
    integer running mean makes the comparison exact; its `step_many` is the default loop."""

    def chain() -> list[Any]:
        stage = RunningMean(3)
        stage.preroll = 0
        return [stage]

    assert not frame_independent(chain()[0])
    clips = [make(f"rm{i}.mkv", size=(32, 24), frames=5, rate=Fraction(25), source=s)
             for i, s in enumerate(("testsrc2", "mandelbrot"))]  # fmt: skip
    res = run_many(_jobs(clips, tmp_path / "out"), chain(), _opts(reader_batch=4))
    assert res.micro_batches and all(mb.stage == "running-mean" for mb in res.micro_batches)
    for c, v in zip(clips, res.videos, strict=True):
        assert torch.equal(decode_all(v.job.output)[1], _solo(c, chain(), tmp_path)), c.name


def _two_shots(make, path: Path, first: str, second: str, frames: int) -> Path:
    """`frames` frames of one lavfi source then as many of another (a hard cut between), as lossless RGB FFV1."""
    shots = [decode_all(make(f"{src}-{frames}.mkv", size=(64, 48), frames=frames, source=src))[1]
             for src in (first, second)]  # fmt: skip
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "bgr0"
        for f in torch.cat(shots).permute(0, 2, 3, 1).numpy():
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(s.encode())
    return path


def test_cuts_reset_each_video_alone_while_steps_go_together(make, tmp_path):
    """`--cuts` before a recurrent stage: each video's board resets its own state (a cut past a batch's first frame
    runs that batch alone), and the outputs are the solo runs' exactly (integer running mean)."""
    cut = _two_shots(make, tmp_path / "cut.mkv", "testsrc2", "mandelbrot", 45)
    plain = _two_shots(make, tmp_path / "plain.mkv", "smptehdbars", "smptehdbars", 45)

    def chain() -> list[Any]:
        return [Cuts("fast"), RunningMean(3)]

    res = run_many(_jobs([cut, plain], tmp_path / "out"), chain(), _opts(reader_batch=8))
    events = [v.manifest["stage_reports"]["cuts"]["events"] for v in res.videos]  # type: ignore[index]
    assert [(e["frame"], e["kind"]) for e in events[0]] == [(45, "hard")] and events[1] == []
    assert any(len(mb.videos) == 2 for mb in res.micro_batches)
    for c, v in zip([cut, plain], res.videos, strict=True):
        assert torch.equal(decode_all(v.job.output)[1], _solo(c, chain(), tmp_path)), c.name


def test_a_stereo_matte_steps_each_video_through_step(rvm):
    """A stereo layout (issue 16 item 4: the eyes are the rows of one call, a state row each) leaves B to its eyes:
    `step_many` then steps each video through `step`, never mixing videos' rows with eyes."""

    class Stereo(Matte):
        steps = 0

        def signature(self) -> dict[str, Any]:
            return {**super().signature(), "eyes": 2}

        def step(self, frames: FrameBatch, state: State | None) -> tuple[FrameBatch, State]:
            Stereo.steps += 1
            return super().step(frames, state)

    stage = Stereo(rvm, output="alpha")
    stage.setup(torch.device("cpu"), StreamSpec(width=SIZE[0], height=SIZE[1], time_base=Fraction(1, 25)))
    x = torch.zeros(2, 3, SIZE[1], SIZE[0], dtype=torch.uint8)
    batches = [FrameBatch(data=x, pts=[0, 1], time_base=Fraction(1, 25)) for _ in range(3)]
    assert len(stage.step_many(batches, [None] * 3)) == 3 and Stereo.steps == 3


class OomTogether(Matte):
    """Its first joint step runs out of memory (`calls` counts joint steps)."""

    calls = 0

    def step_many(self, frames: Any, states: Any) -> list[tuple[FrameBatch, State]]:
        OomTogether.calls += 1
        if OomTogether.calls == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super().step_many(frames, states)


def test_a_joint_step_out_of_memory_reruns_its_videos_alone(rvm, clips, tmp_path, caplog):
    OomTogether.calls = 0
    res = run_many(_jobs(clips[:3], tmp_path / "out"), [OomTogether(rvm, output="alpha")], _opts(reader_batch=4))
    assert OomTogether.calls > 1 and "each runs alone" in caplog.text
    assert len(res.micro_batches) == OomTogether.calls - 1  # the failed step is not recorded as run
    for c, v in zip(clips[:3], res.videos, strict=True):
        assert_frames_close(decode_all(v.job.output)[1], _solo(c, [Matte(rvm, output="alpha")], tmp_path), what=c.name)


# -- progress --


def test_eta_arithmetic() -> None:
    assert progress_mod.rates(30, 120, 10.0) == (3.0, 30.0)  # 90 frames left at 3 frames/s
    assert progress_mod.rates(0, 120, 5.0) == (0.0, None)  # no rate yet
    assert progress_mod.rates(10, None, 2.0) == (5.0, None)  # no total
    assert progress_mod.rates(130, 120, 10.0) == (13.0, 0.0)  # past an estimated total: never negative
    assert progress_mod.rates(0, 10, 0.0) == (0.0, None)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_and_json_per_video_with_a_total_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    monkeypatch.setattr(progress_mod, "JSON_INTERVAL_S", 0.0)
    out = io.StringIO()
    p = progress_mod.Progress("json", 100, "2 videos", out, videos=2)
    p.start()
    p.video_started("in/a.mp4", "a.webm", 40)
    p.video_started("in/b.mp4", "b.webm", 60)
    etas = []
    for _ in range(4):  # 10 frames a second in all, 5 each
        clock.t += 1.0
        p.advance(5, "matte", video="in/a.mp4")
        p.advance(5, "matte", video="in/b.mp4")
        etas.append(json.loads(out.getvalue().splitlines()[-1])["eta_s"])
    assert etas == [9.0, 8.0, 7.0, 6.0]  # (100 − done) / 10 frames/s
    last = json.loads(out.getvalue().splitlines()[-1])
    a, b = last["per_video"]
    assert a == {"video": "in/a.mp4", "output": "a.webm", "state": "running", "frames": 20, "total": 40,
                 "fps": 5.0, "eta_s": 4.0, "elapsed_s": 4.0}  # fmt: skip
    assert (b["frames"], b["total"], b["eta_s"]) == (20, 60, 8.0)
    clock.t += 4.0
    p.advance(20, video="in/a.mp4")
    p.video_ended("in/a.mp4", "done")
    ended = json.loads(out.getvalue().splitlines()[-1])  # said at once, not rate-limited
    assert [(v["output"], v["state"], v["frames"], v["eta_s"]) for v in ended["per_video"]] == [
        ("a.webm", "done", 40, 0.0),
        ("b.webm", "running", 20, 16.0),
    ]
    clock.t += 1.0
    p.advance(5, video="in/b.mp4")
    assert [v["output"] for v in json.loads(out.getvalue().splitlines()[-1])["per_video"]] == ["b.webm"]
    p.video_ended("in/c.mp4", "skipped", "c.webm")  # never opened
    assert json.loads(out.getvalue().splitlines()[-1])["per_video"][-1]["state"] == "skipped"

    # the same run as plain lines (a bar off a terminal): one line per open video, then the total
    lines = io.StringIO()
    q = progress_mod.Progress("bar", 100, "2 videos", lines, videos=2)
    q.start()
    q.video_started("in/a.mp4", "a.webm", 40)
    clock.t += 2.0
    q.advance(10, "matte", video="in/a.mp4")
    q._line(*q._rates())
    q.video_ended("in/a.mp4", "failed")
    q.finish(ok=False)
    text = lines.getvalue().splitlines()
    assert text[0] == "  a.webm: 10/40 frames (25%), 5.0 fps, ETA 0:06"
    assert text[1].startswith("2 videos: 10/100 frames (10%), 5.0 fps") and "ETA 0:18" in text[1]
    assert text[2] == "  a.webm: failed, 10 frames" and "failed" in text[3]


def test_json_progress_of_a_matte_run_has_each_video(rvm, clips, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "JSON_INTERVAL_S", 0.0)
    res = run_many(_jobs(clips, tmp_path / "out"), [Matte(rvm, output="alpha")], _opts(mode="json"))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["eta_s"] == 0.0
    assert events[-1]["frames"] == events[-1]["total"] == sum(v.frames_out for v in res.videos)
    ends = [v for e in events for v in e["per_video"] if v["state"] != "running"]
    assert sorted((v["video"], v["state"], v["frames"]) for v in ends) == sorted(
        (str(v.job.input), "done", v.frames_out) for v in res.videos
    )  # each video's end once, with all its frames
    running = [v for e in events for v in e["per_video"] if v["state"] == "running"]
    assert {v["video"] for v in running if v["frames"]} == {str(c) for c in clips}  # each reported as it ran
    for v in running:
        assert 0 <= v["frames"] <= v["total"]
        assert v["eta_s"] is None if v["frames"] == 0 else (v["fps"] > 0 and v["eta_s"] >= 0)
    for e in events:
        assert e["videos"] == 4 and e["total"] == events[-1]["total"] and (e["eta_s"] is None or e["eta_s"] >= 0)


def test_cli_many_videos_to_webm_with_alpha(rvm, clips, tmp_path, cli):
    folder = tmp_path / "in"
    folder.mkdir()
    for c in clips[2:]:
        (folder / c.name).write_bytes(c.read_bytes())
    out = tmp_path / "out"
    matte = ["--matte", str(rvm), "--matte-output", "rgba", "--suffix", ".webm", "--crf", "20"]
    r = cli("run", str(clips[0]), str(clips[1]), str(folder), "-o", f"{out}/", *matte, "--device", "cpu",
            "--progress", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.webm")) == ["ma.webm", "mb.webm", "mc.webm", "md.webm"]
    for c in clips:
        v = probe(out / f"{c.stem}.webm").video
        assert (v.codec, v.pix_fmt, v.alpha) == ("vp9", "yuva420p", True)
    back = decode_all(out / "mb.webm", keep_alpha=True)[1]  # libvpx: FFmpeg's own vp9 decoder drops alpha
    want = _solo(clips[1], [Matte(rvm, output="rgba")], tmp_path)
    err = (back[:, 3].double() - want[:, 3].double()).abs().mean()
    assert err <= 2.0, f"alpha mean error {err:.3f} levels"  # the VP9 bound at crf 20 (tests/stages/test_matte.py)
    done = [json.loads(line) for line in r.stdout.splitlines()][-1]
    assert done["event"] == "done" and done["videos"] == 4


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_bar_has_a_task_per_open_video() -> None:
    out = Terminal()
    p = progress_mod.Progress("bar", 30, "2 videos", out, videos=2)
    p.start()
    p.video_started("in/a.mp4", "a.webm", 10)
    p.video_started("in/b.mp4", "b.webm", 20)
    p.advance(4, "matte", video="in/a.mp4")
    assert [t.description.strip() for t in p._bar.tasks] == ["2 videos", "a.webm", "b.webm"]
    assert p._bar.tasks[1].completed == 4 and p._bar.tasks[1].total == 10
    p.advance(6, video="in/a.mp4")
    p.video_ended("in/a.mp4", "done")
    assert [t.description.strip() for t in p._bar.tasks] == ["2 videos", "b.webm"]  # ended: its line printed
    p.finish()
    assert "a.webm: done, 10 frames in" in out.getvalue()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_joint_steps_on_cuda_match_solo_steps(rvm, monkeypatch, dtype):
    """On CUDA the B×T batch may pick other kernels than B = 1: fp32 (TF32 off) within rounding, as on the CPU;
    fp16 within fp16's own bound against fp32 (tests/stages/test_matte.py's 30 dB)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from vidpipe.testing import psnr

    stage = Matte(rvm, output="alpha", dtype=dtype)
    stage.setup(torch.device("cuda"), StreamSpec(width=SIZE[0], height=SIZE[1], time_base=Fraction(1, 25)))
    g = torch.Generator().manual_seed(2)
    videos = [torch.randint(0, 256, (8, 3, SIZE[1], SIZE[0]), dtype=torch.uint8, generator=g).cuda() for _ in range(3)]

    def batch(x: torch.Tensor, at: int) -> FrameBatch:
        return FrameBatch(data=x[at : at + 4], pts=list(range(at, at + 4)), time_base=Fraction(1, 25),
                          index=list(range(at, at + 4)))  # fmt: skip

    solo = []
    for x in videos:
        state, outs = None, []
        for at in (0, 4):
            y, state = stage.step(batch(x, at), state)
            outs.append(y.data)
        solo.append(torch.cat(outs).cpu())
    states: list[State | None] = [None] * 3
    joint: list[list[torch.Tensor]] = [[], [], []]
    for at in (0, 4):
        for i, (y, s) in enumerate(stage.step_many([batch(x, at) for x in videos], states)):
            joint[i].append(y.data)
            states[i] = s
    for i in range(3):
        got = torch.cat(joint[i]).cpu()
        if dtype == "fp32":
            assert_frames_close(got, solo[i], what=f"video {i}")
        else:
            assert psnr(got, solo[i]) >= 30.0
