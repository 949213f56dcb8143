"""Segment-parallel encoding (media/chunked.py through VideoWriter): the chunks joined are one valid stream with
the same frames, times and other streams as one encoder gives."""

from __future__ import annotations

import platform
import sys
import weakref
from fractions import Fraction as F

import av
import pytest
import torch

from vidpipe.media import chunked
from vidpipe.media import writer as writer_mod
from vidpipe.media.encoders import EncoderChoice, EncoderOptions, resolve
from vidpipe.media.probe import probe
from vidpipe.media.synth import AudioTrack
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.resize import Resize
from vidpipe.testing import decode_all


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    """Chunks of 8 frames, so a short clip spans several of them."""
    monkeypatch.setattr(writer_mod, "MIN_CHUNK_FRAMES", 8)
    monkeypatch.setattr(writer_mod, "CHUNK_SECONDS", 0)


def opts(workers: int, encoder: str = "h264", lossless: bool = True, device_colour: str = "off") -> RunOptions:
    enc = EncoderOptions(encoder=encoder, lossless=lossless)  # type: ignore[arg-type]
    w = WriterOptions(encoder=enc, encode_workers=workers)
    return RunOptions(progress="none", writer=w, colour_on_device=device_colour)  # type: ignore[arg-type]


def keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]


@pytest.mark.parametrize("device_colour", ["off", "on"])
def test_chunks_join_to_the_same_frames_as_one_encoder(make, tmp_path, device_colour):
    src = make("chunk-src.mp4", frames=45, size=(160, 120))
    one = run(src, tmp_path / "one.mkv", [], opts(0, device_colour=device_colour))
    par = run(src, tmp_path / "par.mkv", [], opts(3, device_colour=device_colour))
    assert one.manifest["encoder"].get("parallel") is None
    assert par.manifest["encoder"]["parallel"].startswith("3 encoders")
    t1, a = decode_all(tmp_path / "one.mkv")
    t2, b = decode_all(tmp_path / "par.mkv")
    assert t1 == t2 and len(t2) == 45
    assert torch.equal(a, b)  # lossless both ways: identical pictures
    assert keyframes(tmp_path / "par.mkv")[:6] == [0, 8, 16, 24, 32, 40]  # each chunk opens with an IDR


def test_chunks_keep_audio_and_duration(make, tmp_path):
    src = make("chunk-audio.mkv", frames=50, size=(160, 120), audio=(AudioTrack(codec="aac", language="eng"),))
    out = tmp_path / "a.mp4"
    run(src, out, [Resize(128, 96)], opts(2, lossless=False))
    info_in, info_out = probe(src), probe(out)
    assert [s.type for s in info_out.streams] == [s.type for s in info_in.streams]
    with av.open(str(src)) as c:
        n_in = sum(1 for p in c.demux(audio=0) if p.size)
    with av.open(str(out)) as c:
        n_out = sum(1 for p in c.demux(audio=0) if p.size)
    assert n_out == n_in
    assert abs(info_out.duration - info_in.duration) <= F(1, 25)
    assert len(decode_all(out)[0]) == 50


def test_chunks_keep_variable_frame_times(make, tmp_path):
    times = [F(i * 40, 1000) for i in range(12)] + [F(480 + i * 100, 1000) for i in range(12)]
    src = make("chunk-vfr.mkv", times=times, frames=len(times))
    for suffix in (".mkv", ".mp4"):
        out = tmp_path / f"vfr{suffix}"
        run(src, out, [], opts(2, lossless=False))
        assert decode_all(out)[0] == times


def test_hevc_chunks(make, tmp_path):
    src = make("chunk-hevc.mp4", frames=20, size=(160, 120))
    res = run(src, tmp_path / "h.mkv", [], opts(2, encoder="hevc", lossless=False))
    assert res.manifest["encoder"]["parallel"].startswith("2 encoders")
    t, frames = decode_all(tmp_path / "h.mkv")
    assert len(t) == 20 and frames.shape[0] == 20


def test_auto_workers_only_for_chunkable_codecs_on_many_cores(monkeypatch, make, tmp_path):
    src = make("chunk-auto.mp4", frames=10, size=(64, 48))
    monkeypatch.setattr(writer_mod.os, "cpu_count", lambda: 16)
    res = run(src, tmp_path / "x.mkv", [], opts(None, lossless=False))  # type: ignore[arg-type]
    assert res.manifest["encoder"]["parallel"] == "4 encoders × 4 threads, chunks of 8 frames"
    res = run(src, tmp_path / "f.mkv", [], opts(None, encoder="ffv1"))  # type: ignore[arg-type]
    assert res.manifest["encoder"].get("parallel") is None
    monkeypatch.setattr(writer_mod.os, "cpu_count", lambda: 4)
    res = run(src, tmp_path / "y.mkv", [], opts(None, lossless=False))  # type: ignore[arg-type]
    assert res.manifest["encoder"].get("parallel") is None


def test_auto_workers_keep_open_chunks_and_encoders_within_memory(monkeypatch, make, tmp_path):
    src = make("chunk-auto.mp4", frames=10, size=(64, 48))
    monkeypatch.setattr(writer_mod.os, "cpu_count", lambda: 16)
    chunk_bytes = 64 * 48 * 3 // 2 * 8  # 8-frame chunks of 64×48 yuv420p
    encoder_bytes = 64 * 48 * writer_mod.ENCODER_BYTES_PER_PIXEL["libx264:veryfast"]
    room = 3 * chunk_bytes + 2 * encoder_bytes  # (2 + 1) open chunks and 2 encoders
    monkeypatch.setattr(writer_mod, "WRITER_MEMORY_BYTES", room)
    res = run(src, tmp_path / "m.mkv", [], opts(None, lossless=False))  # type: ignore[arg-type]
    assert res.manifest["encoder"]["parallel"].startswith("2 encoders")
    monkeypatch.setattr(writer_mod, "WRITER_MEMORY_BYTES", room - 1)  # not even two workers fit
    res = run(src, tmp_path / "n.mkv", [], opts(None, lossless=False))  # type: ignore[arg-type]
    assert res.manifest["encoder"].get("parallel") is None


def _choice(encoder: str, speed: str | None = None) -> EncoderChoice:
    enc = EncoderOptions(encoder=encoder, speed=speed)  # type: ignore[arg-type]
    return resolve(enc, suffix=".mov" if encoder == "prores" else ".mkv", source_depth=8, alpha=False)


def test_auto_workers_leave_room_for_the_encoders_themselves():
    """Issue 18: BasicVSR++ ×4 to 4096×1728 on the 16-core host peaked at 3974 MB of host RSS with 4 chunk
    encoders (one x264 veryfast instance holds ~560 MB there); one encoder now. 1080p keeps the 4 that encode
    it faster (docs/benchmarks.md, "Pipeline")."""
    h264 = _choice("h264")
    assert writer_mod.auto_workers(h264, 4096, 1728, 50, cores=16) == 0
    assert writer_mod.auto_workers(h264, 1920, 1080, 50, cores=16) == 4
    # a slower preset holds more frames: fewer of its encoders at the same size (1080p60's 2-s chunks)
    assert writer_mod.auto_workers(h264, 1920, 1080, 120, cores=16) == 4
    assert writer_mod.auto_workers(_choice("h264", "medium"), 1920, 1080, 120, cores=16) < 4
    for preset in ("h264", "hevc", "vp9", "prores"):  # every chunkable codec has its estimate; 8K fits one only
        choice = _choice(preset)
        assert choice.codec in chunked.CHUNKABLE
        assert writer_mod.auto_workers(choice, 7680, 4320, 50, cores=16) == 0
        assert writer_mod.auto_workers(choice, 640, 360, 50, cores=16) == 4


def test_asked_workers_are_kept_whatever_the_memory(monkeypatch, make, tmp_path):
    src = make("chunk-auto.mp4", frames=10, size=(64, 48))
    monkeypatch.setattr(writer_mod, "WRITER_MEMORY_BYTES", 0)
    res = run(src, tmp_path / "w.mkv", [], opts(3, lossless=False))
    assert res.manifest["encoder"]["parallel"].startswith("3 encoders")


class _Held:
    """A codec context behind an object that can be weakly referenced (PyAV's cannot): tells when it is freed."""

    def __init__(self, ctx: av.codec.context.CodecContext) -> None:
        self.ctx = ctx

    def encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        return self.ctx.encode(frame)


def test_each_chunk_frees_its_encoder_then_trims_the_heap(monkeypatch):
    """Issue 18: each pool thread's malloc arena kept its freed x264 encoders' pages, so RSS climbed towards
    workers × encoder size with one encoder at work; after each chunk the heap is trimmed, with the chunk's
    encoder already gone (docs/benchmarks.md, "Writer host memory")."""
    made: list[weakref.ref[_Held]] = []
    alive_at_trim: list[int] = []

    def make_context() -> _Held:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 48, "yuv420p", F(1, 25)
        held = _Held(ctx)
        made.append(weakref.ref(held))
        return held

    def trim() -> bool:
        alive_at_trim.append(sum(r() is not None for r in made))
        return True

    monkeypatch.setattr(chunked, "trim_heap", trim)
    enc = chunked.ChunkedEncoder(make_context, workers=1, chunk_frames=4, time_base=F(1, 25))  # type: ignore[arg-type]
    for i in range(12):
        frame = av.VideoFrame(64, 48, "yuv420p")
        frame.pts = i
        enc.encode(frame)
    assert len(list(enc.finish())) == 12
    # one worker: chunks one after another, each trim after its chunk's encoder is freed
    assert alive_at_trim == [0, 0, 0]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"
)
def test_trim_heap_reaches_glibc():
    assert chunked.trim_heap()
