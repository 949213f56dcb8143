"""Frame-rate conform (issue 18, item 4): `vidpipe run --conform RATE` keeps every frame and re-times it, stretches
every audio track (pitch kept or lowered), re-times subtitles (text and bitmap) and chapters, keeps metadata, and
refuses a variable-rate input. Clips are generated here: 25 fps, two sine tracks, SRT subtitles, chapters."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction as F
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidpipe.cli.app import main
from vidpipe.errors import UsageError
from vidpipe.frames import FrameBatch
from vidpipe.media.conform import (
    AudioStretch,
    Conform,
    RateCheck,
    parse_bitrate,
    parse_rate,
    retime_spu,
    tempo_steps,
)
from vidpipe.media.encoders import EncoderOptions, resolve
from vidpipe.media.synth import AudioTrack, Subtitle
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.runtime.recipe import trimmed
from vidpipe.stages.base import Stage, StreamSpec

SOURCE_RATE = F(25)
FRAMES = 100  # 4 s
TONES = (440, 1000)
SUBTITLES = (Subtitle(start=F(1), end=F(2), text="one"), Subtitle(start=F(3), end=F(7, 2), text="two"))
CHAPTERS = ((F(0), F(2), "first"), (F(2), F(4), "second"))
#: the acceptance's pitch tolerance: the dominant frequency within 1 %
PITCH_TOLERANCE = 0.01
#: Matroska stores times in milliseconds: a re-timed time may be half a millisecond off, twice rounded
MKV_TICK_S = F(1, 1000)
#: a DVD subtitle's display delays count ticks of 1024/90000 s (FFmpeg's dvdsub decoder reports whole ms)
SPU_TICK_S = F(1024, 90000)


@pytest.fixture(scope="module")
def source(make: Callable[..., Path]) -> Path:
    return make(
        "conform-25.mkv",
        size=(96, 64),
        rate=SOURCE_RATE,
        frames=FRAMES,
        audio=[AudioTrack(frequency=f, language=lang) for f, lang in zip(TONES, ("eng", "fra"), strict=True)],
        subtitles=SUBTITLES,
        subtitle_language="eng",
        chapters=CHAPTERS,
        metadata={"title": "conform test"},
    )


def _conform(rate: F, pitch: str = "keep", **kw: object) -> RunOptions:
    writer = WriterOptions(conform=Conform(rate=rate, pitch=pitch, **kw))  # type: ignore[arg-type]
    return RunOptions(device="cpu", progress="none", writer=writer)


@dataclass(frozen=True)
class Track:
    start: F
    seconds: F  # samples / rate
    frequency: float
    codec: str
    language: str | None


def _frequency(x: np.ndarray, rate: int) -> float:
    """The dominant frequency of `x` (Hann-windowed FFT, peak refined by a parabola through its neighbours)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x))


def _audio(path: Path) -> list[Track]:
    tracks = []
    with av.open(str(path)) as c:
        indices = [s.index for s in c.streams.audio]
    for i in indices:
        with av.open(str(path)) as c:
            stream = c.streams[i]
            frames = list(c.decode(stream))
            x = np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float64)  # first channel
            rate = frames[0].sample_rate
            start = frames[0].pts * frames[0].time_base
            tracks.append(
                Track(start, F(len(x), rate), _frequency(x, rate), stream.codec_context.name, stream.language)
            )
    return tracks


def _video_times(path: Path) -> list[F]:
    with av.open(str(path)) as c:
        return [F(f.pts) * f.time_base for f in c.decode(video=0)]


def _subtitles(path: Path) -> list[tuple[F, F, bytes]]:
    with av.open(str(path)) as c:
        stream = c.streams.subtitles[0]
        return [(p.pts * p.time_base, p.duration * p.time_base, bytes(p)) for p in c.demux(stream) if p.pts is not None]


def _chapters(path: Path) -> list[tuple[F, F, str]]:
    with av.open(str(path)) as c:
        return [
            (ch["start"] * ch["time_base"], ch["end"] * ch["time_base"], ch["metadata"]["title"]) for ch in c.chapters()
        ]


@pytest.mark.parametrize(("pitch", "frequency_factor"), [("keep", F(1)), ("lower", F(24, 25))])
def test_conform_25_to_24(source: Path, tmp_path: Path, pitch: str, frequency_factor: F) -> None:
    """The acceptance: frame count unchanged, duration × 25/24, each audio track as long as the video within one
    frame, its tone unchanged (or × 24/25 with pitch lowered) within 1 %, chapters and subtitles × 25/24."""
    out = tmp_path / f"conformed-{pitch}.mkv"
    result = run(source, out, (), _conform(F(24), pitch))
    scale = SOURCE_RATE / 24
    period = F(1, 24)

    times = _video_times(out)
    assert len(times) == FRAMES == result.frames_out
    # every frame on the 24 fps grid, in order: none dropped, none duplicated
    assert all(abs(t - F(n, 24)) <= MKV_TICK_S for n, t in enumerate(times))
    video_seconds = times[-1] + period
    assert abs(video_seconds - F(FRAMES) / SOURCE_RATE * scale) <= period

    source_tracks = _audio(source)
    tracks = _audio(out)
    assert [t.language for t in tracks] == ["eng", "fra"]
    for tone, src, got in zip(TONES, source_tracks, tracks, strict=True):
        assert abs(got.seconds - video_seconds) <= period, (got.seconds, video_seconds)
        assert abs(got.seconds - src.seconds * scale) <= period
        # the track keeps its offset from the picture, scaled (plus atempo's start-up loss, which is skipped:
        # test_stretch_keeps_audio_in_sync)
        assert 0 <= got.start - src.start * scale <= period / 2
        want = tone * float(frequency_factor)
        assert abs(got.frequency - want) <= PITCH_TOLERANCE * want, (got.frequency, want)

    subs = _subtitles(out)
    assert [text for *_, text in subs] == [s.text.encode() for s in SUBTITLES]
    for (start, length, _), s in zip(subs, SUBTITLES, strict=True):
        assert abs(start - s.start * scale) <= MKV_TICK_S
        assert abs(length - (s.end - s.start) * scale) <= MKV_TICK_S
    chapters = _chapters(out)
    assert [c[2] for c in chapters] == [c[2] for c in CHAPTERS]
    for (start, end, _), (s0, e0, _) in zip(chapters, CHAPTERS, strict=True):
        assert abs(start - s0 * scale) <= MKV_TICK_S and abs(end - e0 * scale) <= MKV_TICK_S

    with av.open(str(out)) as c:
        assert c.metadata.get("title") == "conform test"
        assert c.streams.video[0].average_rate == 24
    conform = result.manifest["conform"]
    assert (conform["from_fps"], conform["to_fps"], conform["duration_scale"]) == ("25", "24", "25/24")
    assert conform["pitch"] == pitch
    assert len(result.manifest["streams"]["reencoded"]) == 2


def _check_grid_and_audio(out: Path, rate: F) -> None:
    """Every frame on the target's grid in order, each audio track as long as the video within a frame."""
    times = _video_times(out)
    assert len(times) == FRAMES
    assert all(abs(t - n / rate) <= MKV_TICK_S for n, t in enumerate(times))
    for track in _audio(out):
        assert abs(track.seconds - (times[-1] + 1 / rate)) <= 1 / rate


def test_conform_with_parallel_chunk_encoders(source: Path, tmp_path: Path) -> None:
    """x264 in parallel closed chunks (the path of hosts with ≥ 8 cores, forced here): same grid, same audio."""
    out = tmp_path / "chunked.mkv"
    writer = WriterOptions(conform=Conform(rate=F(24)), encode_workers=2)
    result = run(source, out, (), RunOptions(device="cpu", progress="none", writer=writer))
    assert result.manifest["encoder"]["parallel"] is not None
    _check_grid_and_audio(out, F(24))


@pytest.mark.gpu
def test_conform_on_the_gpu_path(source: Path, tmp_path: Path) -> None:
    """On CUDA the writer gets 4:2:0 planes converted on the device (`PlanarBatch`): stamped the same way."""
    out = tmp_path / "gpu.mkv"
    writer = WriterOptions(conform=Conform(rate=F(24)))
    result = run(source, out, (), RunOptions(device="cuda", progress="none", writer=writer))
    assert "planes" in result.manifest["colour_conversion"]["encode"]
    _check_grid_and_audio(out, F(24))


def test_conform_to_23_976_from_the_cli_with_ac3(source: Path, tmp_path: Path) -> None:
    """`--conform 23.976` is NTSC film, 24000/1001; the seed's `-c:a ac3 -b:a 640k` as options (the command run
    in this process: the options' path through `vidpipe run`, without a second torch start-up)."""
    out = tmp_path / "ntsc.mkv"
    main([
        "run", str(source), "-o", str(out), "--conform", "23.976",
        "--conform-audio-codec", "ac3", "--conform-audio-bitrate", "640k", "--progress", "none",
    ])  # fmt: skip
    rate = F(24000, 1001)
    scale = SOURCE_RATE / rate
    times = _video_times(out)
    assert len(times) == FRAMES
    assert all(abs(t - n / rate) <= MKV_TICK_S for n, t in enumerate(times))
    video_seconds = times[-1] + 1 / rate
    assert abs(video_seconds - F(FRAMES) / SOURCE_RATE * scale) <= 1 / rate
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == rate
        assert [(s.codec_context.name, s.bit_rate) for s in c.streams.audio] == [("ac3", 640_000)] * 2
    for tone, track in zip(TONES, _audio(out), strict=True):
        assert abs(track.seconds - video_seconds) <= 1 / rate
        assert abs(track.frequency - tone) <= PITCH_TOLERANCE * tone
    assert abs(_subtitles(out)[0][0] - SUBTITLES[0].start * scale) <= MKV_TICK_S
    manifest = json.loads(Path(f"{out}.json").read_text())
    assert manifest["conform"]["to_fps"] == "24000/1001"


def test_conform_of_a_part_moves_and_scales_every_stream(source: Path, tmp_path: Path) -> None:
    """`--start 1 --duration 2` with a conform: the part starts at 0 and every stream is moved back by 1 s, then
    scaled; chapters are clipped to the part first."""
    out = tmp_path / "part.mkv"
    opts = trimmed(_conform(F(24)), start="1", duration="2", frames=None)
    run(source, out, (), opts)
    scale = SOURCE_RATE / 24
    times = _video_times(out)
    assert len(times) == 50 and times[0] == 0
    video_seconds = times[-1] + F(1, 24)
    for track in _audio(out):
        assert abs(track.seconds - video_seconds) <= F(1, 24)
    (start, length, text), *_ = _subtitles(out)
    assert text == b"one" and start == 0 and abs(length - 1 * scale) <= MKV_TICK_S
    chapters = _chapters(out)
    assert [c[2] for c in chapters] == ["first", "second"]
    assert abs(chapters[0][1] - 1 * scale) <= MKV_TICK_S and abs(chapters[1][1] - 2 * scale) <= MKV_TICK_S


def test_conform_to_the_source_rate_changes_nothing(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "same.mkv"
    result = run(source, out, (), _conform(F(25)))
    assert "conform" not in result.manifest
    assert result.manifest["streams"]["reencoded"] == []  # the audio is copied as without a conform
    assert _chapters(out) == [(s, e, t) for s, e, t in CHAPTERS]


def test_vfr_input_is_refused_before_decoding(make: Callable[..., Path], tmp_path: Path) -> None:
    times = [F(n, 25) if n < 10 else F(10, 25) + F(n - 10, 50) for n in range(40)]
    vfr = make("conform-vfr.mkv", size=(64, 48), frames=40, times=times)
    out = tmp_path / "vfr.mkv"
    with pytest.raises(UsageError, match="variable-rate"):
        run(vfr, out, (), _conform(F(24)))
    assert not out.exists() and not list(tmp_path.iterdir())


class _ConstantRate(Stage):
    """Stands in for `--interpolate … --fps 25` over a VFR source: frames restamped at an exact constant rate."""

    name = "constant-rate"

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self._count = 0
        return spec.but(rate=SOURCE_RATE, time_base=1 / SOURCE_RATE)

    def process(self, batch: FrameBatch) -> FrameBatch:
        pts = list(range(self._count, self._count + len(batch)))
        self._count += len(batch)
        return FrameBatch(data=batch.data, pts=pts, time_base=1 / SOURCE_RATE, colour=batch.colour)


def test_vfr_input_made_constant_rate_by_a_stage_is_conformed(make: Callable[..., Path], tmp_path: Path) -> None:
    times = [F(n, 25) if n < 10 else F(10, 25) + F(n - 10, 50) for n in range(40)]
    vfr = make("conform-vfr.mkv", size=(64, 48), frames=40, times=times)
    out = tmp_path / "regridded.mkv"
    result = run(vfr, out, [_ConstantRate()], _conform(F(24)))
    assert result.manifest["conform"]["from_fps"] == "25"
    times = _video_times(out)
    assert len(times) == 40 and all(abs(t - F(n, 24)) <= MKV_TICK_S for n, t in enumerate(times))


def test_a_frame_off_the_constant_rate_timeline_stops_the_conform() -> None:
    """What the probe's sample of the first packets cannot see: a gap later on."""
    check = RateCheck(F(25))
    for n in range(10):
        check.check(F(n, 25) + F(1, 1000))  # container rounding is fine
    with pytest.raises(UsageError, match=r"frame 10 is at 0\.480 s, not 0\.401 s"):
        check.check(F(12, 25))


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("24", F(24)),
        ("25", F(25)),
        ("23.976", F(24000, 1001)),
        ("23.98", F(24000, 1001)),
        ("29.97", F(30000, 1001)),
        ("59.94", F(60000, 1001)),
        ("24000/1001", F(24000, 1001)),
        ("12.5", F(25, 2)),
        ("25.0", F(25)),
    ],
)
def test_parse_rate(text: str, rate: F) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "0", "-24", "24fps", "1/0", "abc"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="conform"):
        parse_rate(text)


def test_parse_bitrate() -> None:
    assert [parse_bitrate(v) for v in ("640k", "1.5M", "192000", "448K")] == [640_000, 1_500_000, 192_000, 448_000]
    with pytest.raises(UsageError, match="640k"):
        parse_bitrate("fast")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conform", "24", "--conform-pitch", "higher"], "valid: keep, lower"),
        (["--conform", "24", "--conform-audio-codec", "nope"], "no audio encoder 'nope'"),
        (["--conform", "24", "--conform-audio-codec", "libx264"], "video encoder"),
        (["--conform", "24", "--conform-audio-bitrate", "loud"], "640k"),
        (["--conform", "1/0"], "division by zero"),
        (["--conform-pitch", "lower"], "go with --conform"),
        (["--conform", "24", "--conform-audio-codec", "ac3", "-o", "{tmp}/x.webm"], "cannot hold ac3"),
    ],
)
def test_bad_conform_options_are_usage_errors(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "x.mkv"
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(source), "-o", str(out), "--progress", "none", *[a.format(tmp=tmp_path) for a in args]])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, no partial output left


def test_tempo_steps_chain_atempo_within_its_range() -> None:
    for tempo in (F(24, 25), F(3, 10), F(5), F(1, 7)):
        steps = tempo_steps(tempo)
        assert all(F(1, 2) <= s <= 2 for s in steps)
        assert np.prod([float(s) for s in steps]) == pytest.approx(float(tempo))
    assert tempo_steps(F(3, 10)) == [F(1, 2), F(3, 5)]


def test_stretch_outside_atempo_range_keeps_pitch_and_length() -> None:
    """25 → 10 fps: the audio 2.5 × as long through two chained atempo filters, its tone the same."""
    rate, seconds, tone = 48000, 1, 1000
    stretch = AudioStretch(F(5, 2), "keep", lambda t: t * F(5, 2))
    out: list[av.AudioFrame] = []
    with av.open(f"sine=frequency={tone}:sample_rate={rate}:duration={seconds}", format="lavfi") as src:
        for frame in src.decode(audio=0):
            out += stretch.push(frame)
    out += stretch.push(None)
    x = np.concatenate([f.to_ndarray()[0] for f in out]).astype(np.float64)
    assert abs((out[0].pts + len(x)) / rate - seconds * 2.5) <= 1 / 10  # within a frame of 10 fps
    assert abs(_frequency(x, rate) - tone) <= PITCH_TOLERANCE * tone
    assert [f.pts for f in out] == list(out[0].pts + np.cumsum([0] + [f.samples for f in out[:-1]]))  # no gaps


@pytest.mark.parametrize("pitch", ["keep", "lower"])
def test_stretch_keeps_audio_in_sync(pitch: str) -> None:
    """A 440 Hz burst from 0.5 to 1.5 s of a 2 s track comes out centred where × 25/24 puts it (1.0417 s), within
    2 ms: atempo's start-up loss (~12 ms at 48 kHz) is made up for in the output's times."""
    rate, scale = 48000, F(25, 24)
    t = np.arange(2 * rate) / rate
    x = np.where((t >= 0.5) & (t < 1.5), 10000 * np.sin(2 * np.pi * 440 * t), 0).astype(np.int16)
    stretch = AudioStretch(scale, pitch, lambda u: u * scale)  # type: ignore[arg-type]
    out: list[av.AudioFrame] = []
    for i in range(0, len(x), 1024):
        frame = av.AudioFrame.from_ndarray(x[None, i : i + 1024], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i, F(1, rate)
        out += stretch.push(frame)
    out += stretch.push(None)
    y = np.concatenate([f.to_ndarray()[0] for f in out]).astype(np.float64)
    loud = np.nonzero(np.abs(y) > 5000)[0]
    centre = F(out[0].pts + (loud[0] + loud[-1]) / 2) / rate
    assert abs(centre - 1 * scale) <= F(2, 1000), float(centre)


# -- bitmap subtitles: DVD subpictures carry their display end inside the packet --


def _spu(stop_delay: int) -> bytes:
    """A minimal DVD subpicture: a 4×2 opaque box, shown at once, hidden `stop_delay` ticks (1024/90000 s) later."""
    pixels = b"\x00\x00\x00\x00"  # one end-of-line code per field line: the line in colour 0
    first = bytes([0, 0, 0, 32, 0x03, 0x01, 0x23, 0x04, 0xFF, 0xFF])  # delay 0, next at 32; palette; opaque
    first += bytes([0x05, 0x00, 0x00, 0x03, 0x00, 0x00, 0x01, 0x06, 0x00, 0x04, 0x00, 0x06, 0x01, 0xFF])
    last = bytes([stop_delay >> 8, stop_delay & 0xFF, 0, 32, 0x02, 0xFF])  # points to itself: the last one
    size = 4 + len(pixels) + len(first) + len(last)
    return bytes([size >> 8, size & 0xFF, 0, 8]) + pixels + first + last


def _dvdsub_clip(path: Path, show_at_ms: int, stop_delay: int) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        sub = out.add_mux_stream("dvd_subtitle")
        sub.time_base = F(1, 1000)
        for n in range(25):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = n, F(1, 25)
            if n * 40 == show_at_ms:
                pkt = av.Packet(_spu(stop_delay))
                pkt.pts = pkt.dts = show_at_ms
                pkt.time_base, pkt.stream = F(1, 1000), sub
                out.mux(pkt)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
    return path


def _decoded_spu(path: Path) -> tuple[F, F]:
    """(when the subpicture shows, when it is hidden) in seconds, as FFmpeg's decoder reads them."""
    with av.open(str(path)) as c:
        stream = c.streams.subtitles[0]
        for pkt in c.demux(stream):
            if pkt.pts is not None:
                subs = stream.codec_context.decode2(pkt)
                start = pkt.pts * pkt.time_base
                return start + F(subs.start_display_time, 1000), start + F(subs.end_display_time, 1000)
    raise AssertionError("no subpicture")


def test_dvd_subtitles_are_retimed_inside_the_packet(tmp_path: Path) -> None:
    src = _dvdsub_clip(tmp_path / "dvdsub.mkv", show_at_ms=200, stop_delay=88)  # hidden ~1 s later
    shown, hidden = _decoded_spu(src)
    assert (shown, hidden) == (F(1, 5), F(1, 5) + F(1001, 1000))
    out = tmp_path / "dvdsub-24.mkv"
    run(src, out, (), _conform(F(24)))
    scale = F(25, 24)
    got_shown, got_hidden = _decoded_spu(out)
    assert abs(got_shown - shown * scale) <= MKV_TICK_S
    assert abs(got_hidden - hidden * scale) <= SPU_TICK_S + MKV_TICK_S


def test_retime_spu_leaves_malformed_packets_alone() -> None:
    assert retime_spu(b"\x00\x01", F(25, 24)) == b"\x00\x01"
    loop = bytes([0, 12, 0, 4, 0, 10, 0, 8, 0, 20, 0, 4])  # two sequences pointing at each other
    assert retime_spu(loop, F(2)) == bytes([0, 12, 0, 4, 0, 20, 0, 8, 0, 40, 0, 4])


# -- the seed's final encode as a named encoder preset --


def test_hevc_grain_preset_is_the_seeds_x265_encode() -> None:
    choice = resolve(EncoderOptions(encoder="hevc-grain"), suffix=".mkv", source_depth=8, alpha=False)
    assert (choice.codec, choice.pix_fmt, choice.bit_depth) == ("libx265", "yuv420p10le", 10)
    assert choice.options["crf"] == "16" and choice.options["preset"] == "slow" and choice.options["tune"] == "grain"
    params = dict(kv.split("=") for kv in choice.options["x265-params"].split(":"))
    assert params | {"log-level": "error"} == {
        "log-level": "error", "aq-mode": "3", "aq-strength": "0.8", "rc-grain": "1",
    }  # fmt: skip
    over = resolve(
        EncoderOptions(encoder="hevc-grain", crf=20, speed="medium", bit_depth=8),
        suffix=".mkv", source_depth=8, alpha=False,
    )  # fmt: skip
    assert (over.options["crf"], over.options["preset"], over.pix_fmt) == ("20", "medium", "yuv420p")
    with pytest.raises(UsageError, match="lossless"):
        resolve(EncoderOptions(encoder="hevc-grain", lossless=True), suffix=".mkv", source_depth=8, alpha=False)
