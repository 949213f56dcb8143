"""Issue 22 (media fidelity) and issue 15 (7b): audio that does not decode, oversized frames, pixel aspect and
interlacing, and lossless output keeping the source's chroma."""

from __future__ import annotations

import json
import struct
import zlib
from fractions import Fraction as F
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidpipe.assets import opencv_clip
from vidpipe.errors import InputTooLargeError, UnsupportedFormatError
from vidpipe.frames import Colour, FrameBatch
from vidpipe.media.encoders import EncoderOptions, layout, resolve
from vidpipe.media.probe import DEFAULT_MAX_PIXELS, probe
from vidpipe.media.writer import VideoWriter
from vidpipe.schedule.budget import check_host_memory, host_frame_bytes
from vidpipe.stages.base import StreamSpec


def _tiny_batch(n: int, w: int = 64, h: int = 48, tb: F = F(1, 24)) -> FrameBatch:
    data = torch.randint(0, 255, (n, 3, h, w), dtype=torch.uint8)
    return FrameBatch(data=data, pts=list(range(n)), time_base=tb)


# -- issue 22 (13): WebM from Megamind.avi, whose first AC3 packet is damaged --


def test_webm_from_ac3_drops_undecodable_audio_and_counts_it(tmp_path: Path) -> None:
    """The audio is re-encoded to Opus for WebM; a packet the AC3 decoder refuses is dropped with a warning and
    counted, and the rest of the track is still written."""
    info = probe(opencv_clip("Megamind.avi"))
    spec = StreamSpec(width=64, height=48, time_base=F(1, 24), nominal_rate=F(24))
    out = tmp_path / "mega.webm"
    writer = VideoWriter(out, spec, Colour(), info)
    writer.write(_tiny_batch(4))
    stats = writer.close()
    assert stats.audio_dropped_packets >= 1
    assert any("AC3" in w.upper() and "dropped" in w for w in stats.warnings)
    with av.open(str(out)) as c:
        (audio,) = c.streams.audio
        assert audio.codec_context.name == "opus"
        seconds = sum(p.duration or 0 for p in c.demux(audio)) * audio.time_base
    assert seconds > info.duration * F(9, 10)  # all but the damaged packets' audio


def test_cli_webm_from_megamind_finishes_and_counts_dropped_audio(cli, tmp_path: Path) -> None:
    out = tmp_path / "mega.webm"
    r = cli("run", str(opencv_clip("Megamind.avi")), "-o", str(out), "--resize", "96x-1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads(Path(f"{out}.json").read_text())
    assert manifest["streams"]["audio_dropped_packets"] >= 1
    assert any("did not decode" in w for w in manifest["warnings"])


# -- issue 15 (7b): a lossless intermediate keeps the source's chroma and depth --


def _rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_ffv1_rgb_source_stays_rgb_and_frame_identical(make, cli, tmp_path: Path) -> None:
    src = make("rgb-ffv1.mkv", codec="ffv1", pix_fmt="bgr0", frames=4, size=(96, 64))
    out = tmp_path / "rgb-out.mkv"
    r = cli("run", str(src), "-o", str(out), "--encoder", "ffv1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert probe(out).video.pix_fmt in ("bgr0", "gbrp")
    a, b = _rgb_frames(src), _rgb_frames(out)
    assert len(a) == len(b) == 4
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_ffv1_keeps_444_chroma_and_depth(make, cli, tmp_path: Path) -> None:
    src = make("yuv444-10.mkv", codec="ffv1", pix_fmt="yuv444p10le", frames=2, size=(64, 48))
    out = tmp_path / "444.mkv"
    r = cli("run", str(src), "-o", str(out), "--encoder", "ffv1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert probe(out).video.pix_fmt == "yuv444p10le"


def test_pix_fmt_option_overrides_and_is_checked(make, cli, tmp_path: Path) -> None:
    src = make("rgb-ffv1.mkv", codec="ffv1", pix_fmt="bgr0", frames=4, size=(96, 64))
    out = tmp_path / "420.mkv"
    r = cli("run", str(src), "-o", str(out), "--encoder", "ffv1", "--pix-fmt", "yuv420p", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert probe(out).video.pix_fmt == "yuv420p"
    r = cli("run", str(src), "-o", str(tmp_path / "bad.mkv"), "--encoder", "ffv1", "--pix-fmt", "nv12")
    assert r.returncode == 2 and "yuv444p" in r.stderr  # the valid formats are listed


def test_lossless_h264_hevc_keep_the_source_layout() -> None:
    def pick(preset: str, src: str, **kw: object) -> tuple[str, str]:
        opts = EncoderOptions(encoder=preset, lossless=True, **kw)  # type: ignore[arg-type]
        c = resolve(opts, suffix=".mkv", source_depth=layout(src).depth, alpha=False, source_pix_fmt=src)
        return c.codec, c.pix_fmt

    assert pick("h264", "gbrp") == ("libx264rgb", "bgr0")
    assert pick("h264", "yuv444p") == ("libx264", "yuv444p")
    assert pick("hevc", "gbrp10le") == ("libx265", "gbrp10le")
    assert pick("h264", "yuv420p") == ("libx264", "yuv420p")
    assert pick("ffv1", "yuv422p", bit_depth=10) == ("ffv1", "yuv422p10le")


# -- issue 22 (6): a pixel cap and a host-memory check, refused from the probe before any frame is decoded --


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A 1-bit grey PNG written row by row: a huge frame in a file of a few kB, without the frame in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_pixel_cap_from_environment_refuses_with_exit_3_and_names_the_limit(make, cli, tmp_path: Path) -> None:
    src = make("cap.mp4", frames=2)  # 320x240 = 76800 pixels
    r = cli("run", str(src), "-o", str(tmp_path / "o.mkv"), env={"VIDPIPE_MAX_PIXELS": "10000"})
    assert r.returncode == 3, r.stderr[-2000:]
    assert "10000" in r.stderr and "320x240" in r.stderr
    assert not (tmp_path / "o.mkv").exists()
    # the option overrides the environment
    r = cli("run", str(src), "-o", str(tmp_path / "o.mkv"), "--max-pixels", "76800", "--progress", "none",
            env={"VIDPIPE_MAX_PIXELS": "10000"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]


def test_default_pixel_cap_refuses_16000x16000_before_decoding(cli, tmp_path: Path) -> None:
    src = _huge_png(tmp_path / "huge.png", 16000, 16000)
    r = cli("run", str(src), "-o", str(tmp_path / "o.mkv"), "--progress", "none")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "16000x16000" in r.stderr and str(DEFAULT_MAX_PIXELS) in r.stderr
    with pytest.raises(InputTooLargeError):
        probe(src, max_pixels=DEFAULT_MAX_PIXELS)
    with pytest.raises(UnsupportedFormatError):  # describing a file has no cap (a 1-bit PNG is refused later)
        probe(src)


def test_host_frame_buffers_checked_against_free_ram() -> None:
    spec = StreamSpec(width=3840, height=2160, time_base=F(1, 24), nominal_rate=F(24))
    out = spec.but(width=7680, height=4320)
    need = host_frame_bytes(spec, out, batch=8, reader_queue=4, encode_queue=4)
    # reader: (4 + 2) batches of 8 RGB 4K frames; encoder: (4 + 2) batches of 8 RGB 8K frames
    assert need == 6 * 8 * 3840 * 2160 * 3 + 6 * 8 * 7680 * 4320 * 3
    check_host_memory(need, available_mb=need // 2**20 * 2)
    with pytest.raises(InputTooLargeError, match="batch"):
        check_host_memory(need, available_mb=need // 2**20 // 2)


# -- issue 22 (7): pixel aspect and interlacing --


def _clip(path: Path, codec: str, *, sar: F | None = None, interlaced: bool = False, frames: int = 6,
          size: tuple[int, int] = (64, 48), options: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A clip with a sample aspect ratio and/or woven fields: each interlaced frame takes its even rows from one
    moment of a 50 fps source and its odd rows from the next (real combing), coded with interlaced tools."""
    w, h = size
    src = av.open(f"testsrc2=size={w}x{h}:rate=50", format="lavfi")
    moments = [f.to_ndarray(format="rgb24") for _, f in zip(range(2 * frames), src.decode(video=0), strict=False)]
    src.close()
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25, options=options or {})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if sar is not None:
            vs.sample_aspect_ratio = vs.codec_context.sample_aspect_ratio = sar
        if interlaced:
            vs.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        for i in range(frames):
            arr = moments[2 * i].copy()
            if interlaced:
                arr[1::2] = moments[2 * i + 1][1::2]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def _combing(path: Path) -> float:
    """Mean step between a row and the next one (other field) less the step to the row two below (same field):
    large when the fields are two moments."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="gray").astype(np.float64) for f in c.decode(video=0)]
    across = np.mean([np.abs(f[:-2] - f[1:-1]).mean() for f in frames])
    within = np.mean([np.abs(f[:-2] - f[2:]).mean() for f in frames])
    return float(across - within)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_sar_is_kept(cli, tmp_path: Path, suffix: str) -> None:
    src = _clip(tmp_path / f"sar{suffix}", "libx264", sar=F(2))
    assert probe(src).video.sar == 2
    out = tmp_path / f"out{suffix}"
    r = cli("run", str(src), "-o", str(out), "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    v = probe(out).video
    assert v.sar == 2 and v.dar == F(8, 3)


def test_upscale_keeps_sar_and_display_aspect(cli, tmp_path: Path) -> None:
    src = _clip(tmp_path / "sar.mkv", "libx264", sar=F(2), frames=3)
    out = tmp_path / "x2.mkv"
    r = cli("run", str(src), "-o", str(out), "--upscale", "realesr-animevideov3-x2", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    v = probe(out).video
    assert (v.width, v.height, v.sar, v.dar) == (128, 96, 2, F(8, 3))


@pytest.mark.parametrize(
    ("args", "size", "sar"),
    [
        (["--resize", "128x48"], (128, 48), F(1)),  # to the display aspect: square pixels
        (["--resize", "64x64"], (64, 64), F(8, 3)),  # another shape: the display aspect is kept by the SAR
        (["--resize", "32x-1"], (32, 24), F(2)),  # one side computed: the SAR stays
        (["--square-pixels"], (128, 48), F(1)),  # pixels squared, no resolution lost
        (["--square-pixels", "--resize", "96x96"], (96, 96), F(1)),  # asked for square 96x96: stretched, said
    ],
)
def test_resize_and_square_pixels_keep_or_state_the_display_aspect(cli, tmp_path, args, size, sar) -> None:
    src = _clip(tmp_path / "sar.mkv", "libx264", sar=F(2), frames=2)
    out = tmp_path / "out.mkv"
    r = cli("run", str(src), "-o", str(out), *args, "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    v = probe(out).video
    assert ((v.width, v.height), v.sar) == (size, sar)
    if "96x96" in args:
        assert "display aspect" in r.stderr  # the stretch is said


@pytest.mark.parametrize(
    ("codec", "options"), [("libx264", {"x264-params": "tff=1"}), ("mpeg2video", {})], ids=["h264", "mpeg2"]
)
def test_interlaced_sources_are_detected_warned_and_recorded(cli, tmp_path, codec, options) -> None:
    src = _clip(tmp_path / f"il-{codec}.mkv", codec, interlaced=True, options=options)
    v = probe(src).video
    assert v.interlaced and v.field_order in ("tff", "bff")
    out = tmp_path / "out.mkv"
    r = cli("run", str(src), "-o", str(out), "--encoder", "ffv1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "interlaced" in r.stderr and "--deinterlace" in r.stderr  # loudly
    m = json.loads(Path(f"{out}.json").read_text())
    assert "interlaced" in m["input"]["scan"]
    assert any("interlaced" in w for w in m["warnings"])


def test_deinterlace_removes_combing_and_keeps_timing(cli, tmp_path: Path) -> None:
    src = _clip(tmp_path / "il.mkv", "libx264", interlaced=True, options={"x264-params": "tff=1:qp=0"})
    out = tmp_path / "out.mkv"
    r = cli("run", str(src), "-o", str(out), "--deinterlace", "auto", "--encoder", "ffv1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(Path(f"{out}.json").read_text())
    assert "bwdif" in m["decoder"] and m["frames_out"] == m["frames_in"] == 6
    assert not any("interlaced" in w for w in m["warnings"])
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert [f.time for f in a.decode(video=0)] == [f.time for f in b.decode(video=0)]
    assert _combing(out) < _combing(src) / 2


def test_progressive_sources_are_not_called_interlaced(make) -> None:
    assert not probe(make("prog.mp4", frames=4)).video.interlaced  # x264 flags progressive
    v = probe(opencv_clip("Megamind.avi")).video  # no field order in AVI/MPEG-4: idet decides
    assert not v.interlaced and v.field_order == "progressive"
