"""VR layouts of the matte stage (issue 16, item 4): `--layout auto|mono|sbs|tb`.

- sbs and tb frames are matted eye by eye, each eye with its own recurrent state: the result equals each eye
  matted as a video of its own (its cropped half through a mono Matte and an engine of its own), within fp32
  rounding (tests/framecheck.py: both eyes run as one B = 2 call, and oneDNN may sum a batch of two in another
  order than a batch of one);
- a change in the left eye's frames never changes the right eye's output (bit for bit: the same call otherwise);
- `auto` reads the input's stereo metadata (Matroska StereoMode, MP4 st3d, both written with PyAV here), else
  the file name's tokens, else mono; a packing that is not two halves is refused;
- an odd size for sbs/tb is a UsageError (exit 2 through the CLI), naming the size;
- `vidpipe run clip_LR.mp4 -o out.webm --matte <random weights>` end to end, alpha per eye; a job spec's
  `layout`;
- the layout is part of the stage's cost signature (a mono cost row never sizes a stereo run), and on CUDA a
  4K (and 8K) SBS clip runs within the scheduler's budget (`gpu`, the lead runs them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_matte import real_frames

from framecheck import assert_frames_close
from vidpipe.errors import UsageError
from vidpipe.frames import FrameBatch, StreamSpec
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import VideoReader
from vidpipe.media.stereo import declared_packing, packing_of_name
from vidpipe.media.writer import WriterOptions
from vidpipe.models.zoo_rvm import ensure_offline_weights
from vidpipe.runtime.pipeline import RunOptions, run, source_spec
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.costs import CostBook, CostRow, InputBucket, Provenance, key_for
from vidpipe.schedule.oom import OomPolicy, OomRunner
from vidpipe.schedule.temporal import RecurrentRunner
from vidpipe.stages.matte import LAYOUTS, Matte, auto_downsample
from vidpipe.stages.registry import MATTE_LAYOUTS, build_chain, random_rvm
from vidpipe.testing import decode_all

MODEL = "rvm-mobilenetv3"
EYE = (128, 96)  # width, height of one eye: small enough for the CPU (~20 ms a frame)
RATE = Fraction(25)
FRAMES = 6
CPU = torch.device("cpu")
#: a downsample below 1, so the Deep Guided Filter (RVM's full-resolution refiner) runs in these tests too
REFINED = "0.5"
#: alpha (float, 0..1) of the two eyes in one B = 2 call against each eye's own B = 1 call: a reordered fp32 sum
#: moves it by a few ulps (2**-24 ≈ 6e-8 near 1; measured 1.2e-6 on this CPU); a wrong eye, frame or state would
#: move it by tenths
FP32_ROUNDING = 1e-5


@pytest.fixture(scope="module")
def eyes() -> tuple[torch.Tensor, torch.Tensor]:
    """Two different "eyes": a person (Megamind) and a street (vtest), so each eye's matte is its own."""
    ensure_offline_weights(MODEL)
    return real_frames("Megamind.avi", FRAMES, 10, size=EYE), real_frames("vtest.avi", FRAMES, size=EYE)


def pack(left: torch.Tensor, right: torch.Tensor, layout: str) -> torch.Tensor:
    return torch.cat([left, right], dim=-1 if layout == "sbs" else -2)


def batch_of(frames: torch.Tensor) -> FrameBatch:
    n = len(frames)
    return FrameBatch(data=frames, pts=list(range(n)), time_base=1 / RATE, index=list(range(n)))


def spec_of(frames: torch.Tensor, stereo: str | None = None) -> StreamSpec:
    return StreamSpec(width=frames.shape[-1], height=frames.shape[-2], time_base=1 / RATE, stereo=stereo)


def set_up(frames: torch.Tensor, stereo: str | None = None, **options: object) -> Matte:
    stage = Matte(MODEL, output="alpha", dtype="fp32", **options)  # type: ignore[arg-type]
    stage.setup(CPU, spec_of(frames, stereo))
    return stage


def engine(stage: Matte, frames: torch.Tensor, batch: int) -> torch.Tensor:
    """The temporal engine over `frames` in batches of `batch`, its own state from the first frame."""
    oom = OomRunner(batch, policy=OomPolicy(backoff_s=0.0), sleep=lambda _s: None, release=lambda _d: None)
    runner = RecurrentRunner(stage, oom)
    v = batch_of(frames)
    outs = [runner.process(v.slice(a, a + batch)) for a in range(0, len(frames), batch)]
    return torch.cat([o.data for o in outs if o is not None])


def write_clip(path: Path, frames: torch.Tensor, codec: str = "ffv1", stereo_mode: str | None = None) -> Path:
    """A clip of `frames` (FFV1 bgr0 is lossless: our reader gives them back bit for bit); `stereo_mode` is
    written as Matroska's StereoMode (FFmpeg's muxer takes it from the stream's metadata)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=RATE)
        s.width, s.height = frames.shape[3], frames.shape[2]
        s.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if stereo_mode is not None:
            s.metadata["stereo_mode"] = stereo_mode
        for f in frames.permute(0, 2, 3, 1).numpy():
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("layout", ["sbs", "tb"])
def test_each_eye_is_matted_as_a_video_of_its_own(eyes, layout):
    left, right = eyes
    frames = pack(left, right, layout)
    stage = set_up(frames, layout=layout, downsample=REFINED)
    assert (stage.layout, stage.eye) == (layout, EYE)
    axis = -1 if layout == "sbs" else -2
    pha, _ = stage.alpha(batch_of(frames[:2]), None)
    each = [set_up(eye, downsample=REFINED).alpha(batch_of(eye[:2]), None)[0] for eye in (left, right)]
    assert (pha - torch.cat(each, dim=axis)).abs().max() <= FP32_ROUNDING  # within fp32 rounding, not bit for bit
    got = engine(stage, frames, 2)  # three batches: each eye's state is carried from batch to batch
    got_left, got_right = got.chunk(2, dim=axis)
    # each eye alone: a mono stage of its own (its own state) over the cropped half, in other batches
    alone = [engine(set_up(eye, downsample=REFINED), eye, 3) for eye in (left, right)]
    assert_frames_close(got_left, alone[0], what=f"{layout}: the first eye vs matted alone")
    assert_frames_close(got_right, alone[1], what=f"{layout}: the second eye vs matted alone")
    # not a trivial matte (both kinds of pixels); matting the frame as one picture would not equal the halves
    assert (got_left == 255).any() and (got_left == 0).any()


def test_the_left_eye_never_changes_the_right_eyes_output(eyes):
    left, right = eyes
    stage = set_up(pack(left, right, "sbs"), layout="sbs")
    base = engine(stage, pack(left, right, "sbs"), 3)
    other_left = left.flip(-1).roll(7, dims=0)  # other pictures in the left eye, from the first frame on
    changed = engine(stage, pack(other_left, right, "sbs"), 3)
    w = EYE[0]
    assert not torch.equal(changed[..., :w], base[..., :w])  # the left eye's matte follows its frames …
    assert torch.equal(changed[..., w:], base[..., w:])  # … the right eye's never sees them, state included


def test_state_stays_a_pure_value_and_cuts_reset_both_eyes(eyes):
    left, right = eyes
    frames = pack(left, right, "tb")
    stage = set_up(frames, layout="tb")
    _, state = stage.step(batch_of(frames[:3]), None)
    kept = tuple(t.clone() for t in state)
    assert all(t.shape[0] == 2 for t in state)  # one state per eye (batch element)
    again, _ = stage.step(batch_of(frames[3:]), state)
    twice, _ = stage.step(batch_of(frames[3:]), state)  # a retry from the same state: the same frames
    assert torch.equal(again.data, twice.data)
    assert all(torch.equal(a, b) for a, b in zip(state, kept, strict=True))  # never written in place
    # a hard cut at frame 3 starts both eyes afresh: frames 3.. as if the video began there
    oom = OomRunner(8, policy=OomPolicy(backoff_s=0.0), sleep=lambda _s: None, release=lambda _d: None)
    cut = RecurrentRunner(stage, oom, hard_cuts=[3]).process(batch_of(frames))
    assert cut is not None
    fresh, _ = stage.step(batch_of(frames[3:]), None)
    assert torch.equal(cut.data[3:], fresh.data)


def test_auto_downsample_is_per_eye():
    # an 8K×4K SBS frame is two 3840×3840 eyes: RVM's rule applies to the eye (480 / 3840), not to the frame
    stage = Matte(random_rvm(), layout="sbs")
    stage.setup(CPU, StreamSpec(width=7680, height=3840, time_base=1 / RATE))
    assert stage.eye == (3840, 3840) and stage.downsample_ratio == auto_downsample(3840, 3840) == 0.125
    auto = Matte(random_rvm())
    auto.setup(CPU, StreamSpec(width=7680, height=3840, time_base=1 / RATE, stereo="tb"))
    assert (auto.layout, auto.eye, auto.downsample_ratio) == ("tb", (7680, 1920), auto_downsample(7680, 1920))
    mono = Matte(random_rvm())
    mono.setup(CPU, StreamSpec(width=7680, height=3840, time_base=1 / RATE))
    assert (mono.layout, mono.eye, mono.downsample_ratio) == ("mono", (7680, 3840), 0.0625)  # the frame's rule


def test_the_layout_is_part_of_the_cost_signature():
    """A cost row measured for mono frames (one network call of B = 1) never sizes a stereo run (B = 2 at four
    times the downsampled area per frame here): the scheduler finds no row and probes the stereo stage itself."""
    spec = StreamSpec(width=1024, height=512, time_base=1 / RATE)
    stages = {}
    for layout in ("mono", "sbs", "tb"):
        stages[layout] = Matte(random_rvm(), layout=layout)
        stages[layout].setup(CPU, spec)
    keys = {n: key_for(s, spec, CPU, "fp32", "inprocess") for n, s in stages.items()}
    assert len({k.model_signature for k in keys.values()}) == 3
    assert stages["sbs"].cost_signature()["eyes"] == 2 and stages["mono"].cost_signature()["eyes"] == 1
    row = CostRow(
        component="matte",
        unit="frame",
        input_bucket=InputBucket.of(1024, 512),
        runtime="inprocess",
        model_signature=keys["mono"].model_signature,
        dtype="fp32",
        gpu_memory_per_task_mb=None,
        cpu_rss_peak_mb=100.0,
        latency_ms_per_unit=10.0,
        max_batch_size_component=8,
        cross_video_batching=False,
        provenance=Provenance.here(CPU, "test"),
    )
    book = CostBook([row])
    assert book.row_for(stages["mono"], spec, CPU, "fp32")[1] == "table"
    assert book.row_for(stages["sbs"], spec, CPU, "fp32") == (None, "none")


def test_auto_reads_the_name_then_nothing():
    for name, want in [
        ("clip_LR.mp4", "sbs"),
        ("clip-sbs.mkv", "sbs"),
        ("trip.360.3dh.mp4", "sbs"),
        ("dive_180_TB.mp4", "tb"),
        ("x ou.mov", "tb"),
        ("a_3DV.webm", "tb"),
        ("COLOR.mp4", None),  # letters of a token inside a word are not the token
        ("clipLR.mp4", None),
        ("SBS_and_TB.mp4", None),  # both kinds: the name states nothing
        ("plain.mp4", None),
    ]:
        assert packing_of_name(name) == want, name
    assert declared_packing("tb", "clip_LR.mp4") == "tb"  # the file's metadata wins over its name
    assert declared_packing("sbs", "x.mp4", rotation=90) == "tb"  # a quarter turn: halves side by side → stacked
    assert declared_packing(None, "clip_LR.mp4", rotation=90) == "sbs"  # a name describes the picture as shown


@pytest.mark.parametrize("mode,want", [("left_right", "sbs"), ("top_bottom", "tb"), ("mono", "mono")])
def test_auto_reads_matroska_stereo_metadata(tmp_path, mode, want):
    frames = torch.zeros(2, 3, 16, 32, dtype=torch.uint8)
    path = write_clip(tmp_path / "plain.mkv", frames, stereo_mode=mode)  # no token in the name
    info = probe(path)
    assert info.video.stereo == want
    assert source_spec(info).stereo == want
    stage = Matte(random_rvm())
    stage.setup(CPU, source_spec(info))
    assert stage.layout == want
    renamed = path.rename(tmp_path / "plain_TB.mkv")
    assert source_spec(probe(renamed)).stereo == want  # metadata before the name


def test_auto_reads_mp4_st3d(tmp_path):
    """Google's Spherical Video V2 `st3d` box, as VR cameras write it. FFmpeg's MP4 muxer writes `st3d` (with
    `strict unofficial`) from a stream's stereo side data, copied here from a Matroska stream by remuxing, and
    Apple's `vexu` box beside it, which FFmpeg's demuxer reads back as an unspecified packing: the file carries
    st3d alone once `vexu` is renamed to `free` (a box every reader skips), as spatial-media's files do."""
    mkv = write_clip(tmp_path / "src.mkv", torch.zeros(2, 3, 16, 32, dtype=torch.uint8), "mpeg4", "left_right")
    both = tmp_path / "both.mp4"
    with av.open(str(mkv)) as i, av.open(str(both), "w", options={"strict": "unofficial"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                o.mux(p)
    data = both.read_bytes()
    assert data.count(b"st3d") == 1 and data.count(b"vexu") == 1
    assert probe(both).video.stereo is None  # FFmpeg reads vexu's packing as UNSPEC: unstated
    st3d = tmp_path / "st3d.mp4"
    st3d.write_bytes(data.replace(b"vexu", b"free"))
    assert probe(st3d).video.stereo == "sbs"


def test_a_packing_that_is_not_two_halves_is_refused(tmp_path):
    path = write_clip(tmp_path / "seq.mkv", torch.zeros(2, 3, 16, 32, dtype=torch.uint8), stereo_mode="checkerboard_lr")
    spec = source_spec(probe(path))
    assert spec.stereo == "checkerboard"
    with pytest.raises(UsageError, match=r"checkerboard.*--layout mono"):
        Matte(random_rvm()).setup(CPU, spec)
    forced = Matte(random_rvm(), layout="mono")  # the user's answer: the frame as one picture
    forced.setup(CPU, spec)
    assert forced.layout == "mono"


def test_bad_layouts_are_usage_errors():
    assert LAYOUTS == MATTE_LAYOUTS
    with pytest.raises(UsageError, match="--layout"):
        build_chain({"matte": MODEL, "layout": "lr"})
    with pytest.raises(UsageError, match=r"even frame width.*127×96"):
        Matte(random_rvm(), layout="sbs").setup(CPU, StreamSpec(width=127, height=96, time_base=1 / RATE))
    with pytest.raises(UsageError, match=r"even frame height.*128×95"):
        Matte(random_rvm()).setup(CPU, StreamSpec(width=128, height=95, time_base=1 / RATE, stereo="tb"))
    Matte(random_rvm(), layout="tb").setup(CPU, StreamSpec(width=127, height=96, time_base=1 / RATE))  # tb: fine
    with pytest.raises(UsageError, match="--pad"):
        spec = StreamSpec(width=128, height=96, time_base=1 / RATE, crop_to=(120, 96))
        Matte(random_rvm(), layout="sbs").setup(CPU, spec)


def test_odd_width_sbs_exits_2_through_the_cli(cli: Callable[..., object], tmp_path):
    src = write_clip(tmp_path / "odd_LR.mkv", torch.zeros(2, 3, 16, 33, dtype=torch.uint8))
    r = cli("run", str(src), "-o", str(tmp_path / "o.webm"), "--matte", str(random_rvm()), "--device", "cpu")
    assert r.returncode == 2, r.stderr  # type: ignore[attr-defined]
    assert "33×16" in r.stderr and "--layout sbs" in r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in r.stderr  # type: ignore[attr-defined]


def test_cli_run_of_an_lr_clip_writes_alpha_per_eye(cli: Callable[..., object], eyes, tmp_path):
    left, right = eyes
    left, right = left[:6], right[:6]
    src = write_clip(tmp_path / "clip_LR.mp4", pack(left, right, "sbs"), codec="mpeg4")
    out = tmp_path / "out.webm"
    weights = random_rvm()
    r = cli("run", str(src), "-o", str(out), "--matte", str(weights), "--device", "cpu", "--crf", "20")
    assert r.returncode == 0, r.stderr  # type: ignore[attr-defined]
    info = probe(out)
    assert (info.video.pix_fmt, info.video.alpha, info.video.width) == ("yuva420p", True, 2 * EYE[0])
    manifest = json.loads(Path(f"{out}.json").read_text())
    assert manifest["stage_reports"]["matte"] | {"downsample_ratio": 0} == {
        "layout": "sbs",
        "layout_requested": "auto",
        "eyes": 2,
        "eye_size": list(EYE),
        "downsample_ratio": 0,
    }
    with VideoReader(info) as reader:  # libvpx-vp9: the alpha plane
        back = torch.cat([b.data for b in reader])[:, 3]
    # what the stage gives for the frames as our reader decodes them, eye by eye
    _, decoded = decode_all(src)
    stage = Matte(weights)
    stage.setup(CPU, spec_of(decoded, "sbs"))
    want = stage.step(batch_of(decoded), None)[0].data[:, 3]
    err = (back.double() - want.double()).abs().mean()
    assert err <= 2.0, f"alpha mean error {err:.3f} levels"  # VP9 at crf 20 (tests/stages/test_matte.py's bound)


def test_a_job_spec_runs_with_its_layout(tmp_path):
    """`pipeline.layout` in a job spec (and `VIDPIPE_LAYOUT`) reaches the stage: a job over a clip whose name and
    metadata say nothing mattes it top/bottom because the spec says so."""
    from vidpipe.jobs.runner import run_job
    from vidpipe.jobs.spec import build_spec, env_spec_doc, read_spec_doc

    frames = torch.randint(0, 256, (3, 3, 2 * 32, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    src = write_clip(tmp_path / "plain.mkv", frames)
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        f"inputs: [{src}]\noutput: {{dir: {tmp_path / 'out'}, container: mkv}}\nsegments: {{seconds: 0}}\n"
        f"pipeline: {{matte: {random_rvm()}, layout: tb, matte_output: alpha, encoder: ffv1, device: cpu}}\n"
    )
    spec = build_spec(read_spec_doc(spec_file), base_dir=tmp_path, workspace=tmp_path / "ws")
    assert spec.pipeline.layout == "tb"
    outcome = run_job(spec, env={})
    (out,) = (tmp_path / "out").glob("*.mkv")
    (sig,) = [s for s in json.loads(Path(f"{out}.json").read_text())["stages"] if s["stage"] == "matte"]
    assert (sig["layout"], sig["eyes"]) == ("tb", 2), outcome
    doc, base = env_spec_doc({"VIDPIPE_INPUT": str(src), "VIDPIPE_MATTE": "rvm-mobilenetv3", "VIDPIPE_LAYOUT": "sbs"})
    assert build_spec(doc, base_dir=base, workspace=tmp_path / "ws").pipeline.layout == "sbs"
    spec_file.write_text(f"inputs: [{src}]\noutput: {{dir: out}}\npipeline: {{matte: rvm-mobilenetv3, layout: lr}}\n")
    with pytest.raises(UsageError, match="pipeline: invalid layout 'lr'; valid: auto, mono, sbs, tb"):
        build_spec(read_spec_doc(spec_file), base_dir=tmp_path, workspace=tmp_path / "ws")


# --- CUDA (the lead runs these) -----------------------------------------------------------------------------------


def _budget_ceiling_mb(manifest: dict) -> tuple[int, int]:
    """(used + budget) MB of the matte stage's plan: the scheduler's budget sits on top of the memory in use when
    it planned, so a run within it never allocates past this (total − headroom)."""
    import re

    (plan,) = [s for s in manifest["schedule"]["stages"] if s["stage"] == "matte"]
    text = " ".join(plan["reasons"])
    used = int(re.search(r"used (\d+) MB", text).group(1))  # type: ignore[union-attr]
    budget = int(re.search(r"budget (\d+) MB", text).group(1))  # type: ignore[union-attr]
    return used, budget


def _sbs_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """A generated SBS clip: moving gradients, mirrored in the right eye (FFV1: any frame size, fast to decode)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=RATE)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0 : width // 2]
        for i in range(frames):
            eye = np.stack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
            frame = np.concatenate([eye, eye[:, ::-1]], axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.gpu
@pytest.mark.parametrize("size", [(3840, 1920), (7680, 3840)], ids=["4k", "8k"])
def test_sbs_clip_on_cuda_stays_within_the_budget(tmp_path, size):
    """The acceptance line: a generated SBS clip through the pipeline with RVM MobileNetV3 (random weights) in
    fp16 on CUDA. The first run probes the stage (its cost row per frame holds both eyes) into a fresh cost book;
    the second, planned from that row, is measured: its peak allocation stays within the scheduler's budget."""
    w, h = size
    src = _sbs_clip(tmp_path / f"vr_{w}_LR.mkv", w, h, 24)
    book = CostBook(cache_dir=tmp_path / "costs")
    opts = RunOptions(device="cuda", progress="none", schedule=ScheduleOptions(probe="always", book=book),
                      writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))  # fmt: skip
    t0 = time.monotonic()
    run(src, tmp_path / "probe.mkv", build_chain({"matte": str(random_rvm()), "matte_output": "alpha"}), opts)
    if size[0] > 3840 and time.monotonic() - t0 > 60:
        pytest.skip(f"8K SBS took {time.monotonic() - t0:.0f} s (over the 60 s this check may take)")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    stages = build_chain({"matte": str(random_rvm()), "matte_output": "alpha"})
    res = run(src, tmp_path / "alpha.mkv", stages, opts)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20
    used, budget = _budget_ceiling_mb(res.manifest)
    (plan,) = [s for s in res.manifest["schedule"]["stages"] if s["stage"] == "matte"]
    assert plan["source"] == "table", plan  # sized by the row the first run probed
    assert peak_mb <= used + budget, f"peak {peak_mb:.0f} MB > used {used} + budget {budget} MB ({plan})"
    assert plan["oom_events"] == []
    report = res.manifest["stage_reports"]["matte"]
    assert (report["layout"], report["eyes"], report["eye_size"]) == ("sbs", 2, [w // 2, h])
    sig = next(s for s in res.manifest["stages"] if s["stage"] == "matte")
    assert (sig["layout"], sig["dtype"]) == ("sbs", "fp16")
    assert res.frames_out == 24
