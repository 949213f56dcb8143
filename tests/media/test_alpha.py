"""RGBA outputs (issue 16, item 3): a moving picture with a known matte, written to each alpha format and decoded
back. Alpha must come back exactly from the lossless formats, within the 10-bit quantisation from ProRes 4444 and
within the issue's 2/255 mean from VP9 at crf 20; outputs that cannot carry alpha refuse it with a UsageError."""

from __future__ import annotations

import logging
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from vidpipe.errors import UsageError
from vidpipe.frames import Colour, FrameBatch, StreamSpec
from vidpipe.media.alpha import rescale
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.info import MediaInfo
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.media.synth import AudioTrack
from vidpipe.media.writer import FRAME_NAME, VideoWriter, WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.base import Stage
from vidpipe.testing import decode_all, psnr

RATE = F(25)
SIZE = (96, 64)  # width, height
FRAMES = 8
#: the issue's bound for VP9 alpha at crf ≤ 20: mean absolute error ≤ 2/255
VP9_ALPHA_MAE_LEVELS = 2.0
VP9_CRF = 20
#: VP9 at crf 20 on this smooth moving picture: 42 dB measured (4:2:0 and the codec's loss); 38 leaves margin
#: and still fails on a wrong matrix, a shifted frame or a lost channel (those give < 25 dB)
VP9_RGB_PSNR_DB = 38.0
#: ProRes 4444 alpha, in 8-bit levels: one 10-bit step (half of it from writing at 10 bits, the rest the 12-bit
#: decode of prores_ks's 16-bit alpha); 0.156 measured, 0.30 when swscale moves the plane
PRORES_ALPHA_LEVELS = 255 / 1023
#: ProRes 4444 colour: 10-bit 4:4:4 with a light quantiser; 1.65 levels measured on this picture, 3 with margin
PRORES_RGB_LEVELS = 3


def matte(n: int = FRAMES, size: tuple[int, int] = SIZE, deep: bool = False) -> torch.Tensor:
    """N×4×H×W RGBA: smooth colour gradients moving over time; alpha a horizontal gradient, a fully transparent
    band, a half-transparent block and a hard-edged opaque bar that moves 3 pixels a frame."""
    w, h = size
    t = torch.arange(n, dtype=torch.float64)[:, None, None]
    x = torch.arange(w, dtype=torch.float64)[None, None, :] / (w - 1)
    y = torch.arange(h, dtype=torch.float64)[None, :, None] / (h - 1)
    r = (0.15 + 0.6 * x + 0.02 * t).expand(n, h, w)
    g = (0.2 + 0.5 * y + 0.1 * x).expand(n, h, w)
    b = (0.8 - 0.4 * x * y - 0.01 * t).expand(n, h, w)
    a = x.expand(n, h, w).clone()  # 0 → 1 left to right
    a[:, :, w // 4 : w // 4 + 6] = 0.0
    a[:, h // 2 :, w // 2 : w // 2 + 12] = 0.5
    for i in range(n):
        a[i, : h // 3, 10 + 3 * i : 22 + 3 * i] = 1.0
    rgba = torch.stack([r, g, b, a], dim=1).clamp(0, 1)
    top = 65535 if deep else 255
    out = (rgba * top).round()
    return out.to(torch.int32).to(torch.uint16) if deep else out.to(torch.uint8)


def spec_of(frames: torch.Tensor) -> StreamSpec:
    n, _, h, w = frames.shape
    return StreamSpec(width=w, height=h, time_base=1 / RATE, rate=RATE, alpha=frames.shape[1] == 4, frames=n,
                      bit_depth=16 if frames.dtype == torch.uint16 else 8)  # fmt: skip


def writer(target: Path, spec: StreamSpec, source: MediaInfo | None = None, **encoder: Any) -> VideoWriter:
    return VideoWriter(target, spec, Colour(), source, WriterOptions(encoder=EncoderOptions(**encoder)))


def write(target: Path, frames: torch.Tensor, source: MediaInfo | None = None, **encoder: Any) -> VideoWriter:
    w = writer(target, spec_of(frames), source, **encoder)
    w.write(FrameBatch(data=frames, pts=list(range(len(frames))), time_base=1 / RATE))
    w.close()
    return w


def png_frames(folder: Path, deep: bool) -> torch.Tensor:
    files = sorted(folder.glob("*.png"))
    arrays = []
    for f in files:
        with av.open(str(f)) as c:
            arrays.append(next(c.decode(video=0)).to_ndarray(format="rgba64le" if deep else "rgba"))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def levels(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """|got − want| in 8-bit levels (uint16 tensors span 0..65535)."""
    g = got.double() / (257 if got.dtype == torch.uint16 else 1)
    w = want.double() / (257 if want.dtype == torch.uint16 else 1)
    return (g - w).abs()


@pytest.mark.parametrize("deep", [False, True], ids=["8bit", "16bit"])
def test_ffv1_and_png_give_rgba_back_bit_exact(tmp_path, deep):
    frames = matte(deep=deep)
    if deep:  # values between the 8-bit steps, so a squeeze through 8 bits would show
        frames = (frames.to(torch.int32) + torch.arange(SIZE[0]) % 200).clamp(0, 65535).to(torch.uint16)
    ffv1 = write(tmp_path / "m.mkv", frames, encoder="ffv1")
    assert ffv1.choice.pix_fmt == ("gbrap16le" if deep else "bgra")
    _, back = decode_all(tmp_path / "m.mkv")
    assert back.dtype == frames.dtype and torch.equal(back, frames)

    png = write(tmp_path / "seq", frames, encoder="png")
    assert png.choice.pix_fmt == ("rgba64be" if deep else "rgba")
    assert len(list((tmp_path / "seq").iterdir())) == FRAMES
    assert torch.equal(png_frames(tmp_path / "seq", deep), frames)
    assert FRAME_NAME.endswith(".png")


def test_vp9_webm_alpha_within_two_levels_and_marked(tmp_path):
    frames = matte()
    out = tmp_path / "m.webm"
    w = write(out, frames, encoder="vp9", crf=VP9_CRF)
    assert (w.choice.codec, w.choice.pix_fmt, w.choice.alpha) == ("libvpx-vp9", "yuva420p", True)
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.metadata.get("alpha_mode") == "1"  # the Matroska track says alpha travels beside the picture
        # FFmpeg's own vp9 decoder ignores that alpha: the reason the reader takes libvpx-vp9 for such streams
        assert next(c.decode(vs)).format.name == "yuv420p"
    v = probe(out).video
    assert (v.codec, v.alpha, v.pix_fmt) == ("vp9", True, "yuva420p")

    with VideoReader(probe(out)) as r:
        back = torch.cat([b.data for b in r])
        assert "libvpx-vp9" in r.stats.decoder
    assert back.shape == frames.shape
    alpha_err = levels(back[:, 3], frames[:, 3])
    assert alpha_err.mean() <= VP9_ALPHA_MAE_LEVELS, f"alpha mean error {alpha_err.mean():.3f} levels"
    # the hard-edged bar is found where it moved to in every frame (a frozen or shifted matte would not be)
    for i in range(FRAMES):
        assert back[i, 3, : SIZE[1] // 3 - 1, 12 + 3 * i : 20 + 3 * i].float().mean() >= 250
    assert psnr(back[:, :3], frames[:, :3]) >= VP9_RGB_PSNR_DB

    _, rgb_only = decode_all(out, keep_alpha=False)  # the option: alpha left out when not wanted
    assert rgb_only.shape[1] == 3 and psnr(rgb_only, frames[:, :3]) >= VP9_RGB_PSNR_DB


def test_joined_vp9_alpha_segments_keep_their_alpha(tmp_path):
    """A job's segments joined by stream copy (jobs.segments.join_segments) stay a WebM with alpha."""
    from vidpipe.jobs.segments import join_segments

    frames = matte()
    parts = []
    for k, (a, b) in enumerate([(0, FRAMES // 2), (FRAMES // 2, FRAMES)]):
        parts.append(tmp_path / f"s{k}.webm")
        w = writer(parts[-1], spec_of(frames[a:b]), encoder="vp9", crf=VP9_CRF)
        w.write(FrameBatch(data=frames[a:b], pts=list(range(a, b)), time_base=1 / RATE))
        w.close()
    joined = tmp_path / "joined.webm"
    join_segments(parts, probe(parts[0]), joined, copy_streams=False)
    v = probe(joined).video
    assert (v.alpha, v.pix_fmt) == (True, "yuva420p")
    with VideoReader(probe(joined)) as r:
        back = torch.cat([b.data for b in r])
    assert back.shape == frames.shape
    assert levels(back[:, 3], frames[:, 3]).mean() <= VP9_ALPHA_MAE_LEVELS


@pytest.mark.parametrize("deep", [False, True], ids=["8bit", "16bit"])
def test_prores_4444_alpha_within_its_10_bit_quantisation(tmp_path, deep):
    frames = matte(deep=deep)
    out = tmp_path / "m.mov"
    w = write(out, frames, encoder="prores")
    assert (w.choice.pix_fmt, w.choice.options["profile"]) == ("yuva444p10le", "4")
    v = probe(out).video
    assert v.alpha and v.codec == "prores"
    _, back = decode_all(out)
    assert back.shape == frames.shape and back.dtype == torch.uint16  # decoded at 12 bits
    assert levels(back[:, 3], frames[:, 3]).max() <= PRORES_ALPHA_LEVELS
    assert levels(back[:, :3], frames[:, :3]).max() <= PRORES_RGB_LEVELS


def test_matte_over_decoded_source_keeps_its_layout_and_exact_alpha(make, tmp_path):
    """The chain a matting stage makes: a 4:2:0 source decoded, alpha added, lossless FFV1 out. The source's
    layout is kept (yuva420p), the alpha comes back bit for bit and the colour exactly as it does without alpha."""
    src = make("alpha-src420.mkv", codec="ffv1", pix_fmt="yuv420p", size=SIZE, frames=FRAMES)
    info = probe(src)
    _, rgb = decode_all(src)
    frames = torch.cat([rgb, matte()[:, 3:]], dim=1)
    w = write(tmp_path / "m.mkv", frames, info, encoder="ffv1")
    assert w.choice.pix_fmt == "yuva420p"
    assert write(tmp_path / "plain.mkv", rgb, info, encoder="ffv1").choice.pix_fmt == "yuv420p"
    _, back = decode_all(tmp_path / "m.mkv")
    _, plain = decode_all(tmp_path / "plain.mkv")
    assert torch.equal(back[:, 3], frames[:, 3])
    assert torch.equal(back[:, :3], plain)


def test_rescale_rounds_to_nearest_full_range():
    assert rescale(np.array([0, 128, 255], np.uint8), 8, 10).tolist() == [0, 514, 1023]
    assert rescale(np.array([0, 512, 1023], np.uint16), 10, 16).tolist() == [0, 32800, 65535]
    assert rescale(np.array([0, 32768, 65535], np.uint16), 16, 8).tolist() == [0, 128, 255]
    every = np.arange(256, dtype=np.uint8)
    assert np.array_equal(rescale(rescale(every, 8, 10), 10, 8), every)  # 8 → 10 → 8 is exact


@pytest.mark.parametrize(
    ("name", "encoder", "why"),
    [
        ("m.mp4", {"encoder": "h264"}, "h264 cannot store alpha"),
        ("m.mp4", {}, "h264 cannot store alpha"),  # auto picks H.264 for .mp4
        ("m.mov", {"encoder": "vp9"}, "VP9 alpha is carried only in .webm/.mkv"),
        ("m.webm", {"encoder": "vp9", "pix_fmt": "yuv420p"}, "pixel format yuv420p has none"),
    ],
)
def test_output_that_cannot_carry_a_made_alpha_is_refused(tmp_path, name, encoder, why):
    with pytest.raises(UsageError, match=why) as e:
        writer(tmp_path / name, spec_of(matte(1)), **encoder)
    if "pixel format" not in why:
        assert ".webm" in str(e.value) and "prores" in str(e.value) and "png" in str(e.value)  # where alpha goes
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_source_alpha_dropped_with_a_warning_unless_kept(make, tmp_path, caplog):
    """A source's own alpha (a ProRes 4444 master to H.264) is dropped with a warning in `auto`, refused in
    `keep`; `drop` writes none without a word."""
    src = probe(make("alpha-master.mkv", codec="ffv1", pix_fmt="yuva444p", size=SIZE, frames=2, alpha=True))
    assert src.video.alpha
    spec = spec_of(matte(2))
    with caplog.at_level(logging.WARNING, logger="vidpipe.media.encoders"):
        auto = writer(tmp_path / "a.mp4", spec, src, encoder="h264")
    assert not auto.choice.alpha and "alpha channel is dropped" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vidpipe.media.encoders"):
        dropped = writer(tmp_path / "d.mkv", spec, alpha="drop")
    assert not dropped.choice.alpha and dropped.choice.pix_fmt == "yuv420p" and not caplog.text
    with pytest.raises(UsageError, match="must keep its alpha"):
        writer(tmp_path / "k.mp4", spec, src, alpha="keep")
    vp9_mov = writer(tmp_path / "v.mov", spec, src, encoder="vp9")
    assert not vp9_mov.choice.alpha and vp9_mov.choice.pix_fmt == "yuv420p"  # no alpha encoded only to be lost


def test_alpha_undeclared_by_the_stream_is_dropped_with_a_warning(tmp_path):
    """A stage that hands RGBA frames but declared an RGB stream: the writer chose an encoder without alpha, so
    the alpha goes, but not without a word."""
    frames = matte(2)
    w = writer(tmp_path / "u.mkv", spec_of(frames[:, :3]), encoder="ffv1")
    w.write(FrameBatch(data=frames, pts=[0, 1], time_base=1 / RATE))
    w.close()
    assert any("declared without it" in m for m in w.stats.warnings)
    _, back = decode_all(tmp_path / "u.mkv")
    assert back.shape[1] == 3


@pytest.mark.parametrize(("codec", "rate"), [("ac3", 48000), ("aac", 44100)])
def test_webm_with_alpha_keeps_audio_as_opus(make, tmp_path, codec, rate):
    """WebM holds only Opus or Vorbis: other audio is re-encoded to Opus (at a rate Opus takes), never lost."""
    frames = 25
    src = make(f"alpha-audio-{codec}.mkv", codec="ffv1", size=SIZE, frames=frames,
               audio=[AudioTrack(codec=codec, sample_rate=rate)])  # fmt: skip
    info = probe(src)
    _, rgb = decode_all(src)
    rgba = torch.cat([rgb, matte(frames)[:, 3:]], 1)
    out = tmp_path / "m.webm"
    w = writer(out, spec_of(rgba), info, encoder="vp9")
    w.write(FrameBatch(data=rgba, pts=list(range(frames)), time_base=1 / RATE))
    stats = w.close()
    assert stats.reencoded and "libopus" in stats.reencoded[0] and not stats.dropped
    got = probe(out)
    assert got.video.alpha
    (audio,) = got.of_type("audio")
    assert audio.codec == "opus" and audio.sample_rate == 48000
    with av.open(str(out)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    # the whole second of sound is there (Opus adds up to one 20 ms frame of padding, the encoder's delay less)
    assert abs(samples / 48000 - frames / RATE) <= 0.05


class AddMatte(Stage):
    """What a matting stage does to the stream: the frames gain the test matte as their alpha."""

    name = "add-matte"

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        return spec.but(alpha=True)

    def process(self, batch: FrameBatch) -> FrameBatch:
        alpha = matte(max(batch.index) + 1, (batch.width, batch.height))[batch.index, 3:]
        return batch.with_data(torch.cat([batch.data, alpha.to(batch.device)], dim=1))


def test_pipeline_keeps_a_stage_made_alpha_or_refuses_before_decoding(make, tmp_path):
    src = make("alpha-pipe.mkv", codec="ffv1", size=SIZE, frames=FRAMES, audio=[AudioTrack(codec="ac3")])
    opts = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(crf=VP9_CRF)))
    with pytest.raises(UsageError, match="h264 cannot store alpha"):
        run(src, tmp_path / "m.mp4", [AddMatte()], opts)
    assert not list(tmp_path.iterdir())

    res = run(src, tmp_path / "m.webm", [AddMatte()], opts)
    assert res.manifest["encoder"]["pix_fmt"] == "yuva420p"
    assert not [w for w in res.manifest["warnings"] if "bit rate" in w]  # Opus's rate is ours, not FFmpeg's guess
    got = probe(tmp_path / "m.webm")
    assert got.video.alpha and [a.codec for a in got.of_type("audio")] == ["opus"]
    _, back = decode_all(tmp_path / "m.webm")
    assert levels(back[:, 3], matte()[:, 3]).mean() <= VP9_ALPHA_MAE_LEVELS


@pytest.mark.gpu
def test_hardware_decode_asked_for_keeps_alpha_on_the_cpu(tmp_path):
    """NVDEC's vp9_cuvid would hand out nv12 and lose the matte: a source with alpha stays on libvpx."""
    frames = matte()
    write(tmp_path / "m.webm", frames, encoder="vp9", crf=VP9_CRF)
    with VideoReader(probe(tmp_path / "m.webm"), ReaderOptions(hwaccel="cuda")) as r:
        back = torch.cat([b.data for b in r])
        assert "libvpx-vp9" in r.stats.decoder and any("alpha" in w for w in r.stats.warnings)
    assert levels(back[:, 3], frames[:, 3]).mean() <= VP9_ALPHA_MAE_LEVELS
