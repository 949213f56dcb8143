"""Frame-rate conform (`vidpipe run --conform 24`): every frame kept and shown at the target rate, the other
streams moved with it — what a 25 fps (PAL) master needs to play at film speed again.

- Video: the n-th frame reaching the writer gets pts n at time base 1/target: none dropped or duplicated, the
  duration × source/target. The stages run before the conform, on the source's timeline (an interpolation to
  `--fps 50` then a conform to 24 slows 50 fps down to 24).
- Audio is decoded, time-stretched by the same factor through an FFmpeg filter graph (PyAV, no command line) and
  re-encoded (a copy cannot change speed): `pitch="keep"` runs `atempo` (tempo target/source, chained in steps
  within [0.5, 2], the range every FFmpeg takes); `"lower"` plays the samples at the new speed, as a film
  projector would (`asetrate`, the pitch moves by target/source), then `aresample` back to the track's rate.
  Codec: the one asked for, else the track's own where an encoder for it opens and the container holds it, else
  the container's fallback (AAC, Opus for WebM); bit rate: the one asked for, else the track's. atempo's
  start-up loss (content would come out ~12 ms early) is measured and made up for in the output's times
  (`atempo_latency`). Output times count the samples from the track's first one: a gap inside a track is
  closed up. asetrate takes whole rates: 48 kHz × 24000/1001 / 25 is 46034 Hz for 46033.97 (0.7 ppm, 5 ms
  over two hours).
- Subtitles (text and bitmap) keep their packets, with pts, dts and duration × source/target; DVD subtitles
  also carry their display end inside the packet (its control sequences' delays), which is scaled too.
  Chapters are scaled; metadata is kept.
- The source must be constant-rate: a VFR input is refused (`UsageError`) unless a stage makes the stream
  constant-rate first (interpolation with `--fps` stamps exact constant-rate pts: `StreamSpec.rate`), as
  there is no single factor to stretch its audio by. The writer also checks each frame against the
  constant-rate timeline and stops at the first that is half a period off (a VFR stretch the probe's
  sample did not see, or gaps).

The writer (`media/writer.py`) applies it when `WriterOptions.conform` is set.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Literal

import av
import av.error
import av.filter
import numpy as np

from ..errors import UsageError
from ..frames import StreamSpec
from .info import MediaInfo

log = logging.getLogger(__name__)

Pitch = Literal["keep", "lower"]
PITCHES: Final = ("keep", "lower")
#: `atempo`'s factor range in every FFmpeg (newer ones take up to 100); factors outside it are chained
ATEMPO_MIN, ATEMPO_MAX = Fraction(1, 2), Fraction(2)
#: the NTSC-family rates as they are usually written (23.976, 29.97, 59.94, …): k·1000/1001 rounded to these
#: decimals; a decimal rate that matches one is taken as the exact k·1000/1001 it stands for
NTSC_DECIMALS: Final = (2, 3)
#: a frame this many periods off the constant-rate timeline stops a conform (rounded container times are
#: far below it; a dropped frame or a VFR stretch is above)
DRIFT_PERIODS: Final = Fraction(1, 2)
#: atempo's latency probe: silence, then a tone burst (seconds), whose middle is found in the output
_PROBE_SILENCE_S, _PROBE_BURST_S, _PROBE_TONE_HZ = Fraction(1, 4), Fraction(1, 4), 1000
#: DVD subtitle (SPU) control sequences count delays in 1024/90000 s; their field is 16 bits
_SPU_DELAY_MAX: Final = 0xFFFF
_RATE = re.compile(r"\d+(\.\d+)?(/\d+)?")
_BITRATE = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Conform:
    """Re-time the output to `rate` (frames per second); see the module's docstring."""

    rate: Fraction
    pitch: Pitch = "keep"
    #: audio encoder (FFmpeg name: ac3, aac, libopus, flac, …); None: the track's own codec where possible
    audio_codec: str | None = None
    #: audio bit rate in bits/s; None: the track's
    audio_bitrate: int | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise UsageError(f"--conform rate must be > 0, got {self.rate}")
        if self.pitch not in PITCHES:
            raise UsageError(f"invalid --conform-pitch {self.pitch!r}; valid: {', '.join(PITCHES)}")

    @property
    def time_base(self) -> Fraction:
        return 1 / self.rate


def parse_rate(value: str) -> Fraction:
    """`24`, `25`, `24000/1001`, or a decimal: `23.976`, `29.97`, `59.94` are the NTSC rates k·1000/1001 (what
    they are short for); other decimals are exact (`12.5`)."""
    text = value.strip()
    if not _RATE.fullmatch(text):
        raise UsageError(f"invalid --conform rate {value!r}; expected e.g. 24, 23.976, 24000/1001 or 25")
    try:
        rate = Fraction(text)
    except ZeroDivisionError:
        raise UsageError(f"invalid --conform rate {value!r}: division by zero") from None
    if rate <= 0:
        raise UsageError(f"--conform rate must be > 0, got {value}")
    if "." in text and "/" not in text:
        decimals = len(text.split(".")[1])
        k = round(rate * Fraction(1001, 1000))
        ntsc = Fraction(k * 1000, 1001)
        if decimals in NTSC_DECIMALS and round(ntsc, decimals) == rate and ntsc != rate:
            return ntsc
    return rate


def parse_bitrate(value: str) -> int:
    """`640k`, `1.5M`, `192000` → bits/s."""
    m = _BITRATE.fullmatch(value.strip())
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"invalid --conform-audio-bitrate {value!r}; expected e.g. 640k, 1.5M or 192000")
    unit = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
    return round(Fraction(m.group(1)) * unit)


def audio_encoder(name: str) -> av.codec.Codec:
    """The audio encoder `name` (an FFmpeg encoder or codec name), or UsageError naming why not."""
    try:
        codec = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise UsageError(
            f"no audio encoder {name!r} in this FFmpeg build; e.g. ac3, eac3, aac, libopus, flac"
        ) from None
    if codec.type != "audio":
        raise UsageError(f"{name!r} is a {codec.type} encoder; --conform-audio-codec takes an audio one (ac3, aac, …)")
    if codec.experimental:
        raise UsageError(f"FFmpeg's {codec.name} encoder is experimental; choose another (ac3, aac, libopus, flac)")
    return codec


def make_conform(
    rate: str, *, pitch: str = "keep", audio_codec: str | None = None, audio_bitrate: str | None = None
) -> Conform:
    """A `Conform` from `vidpipe run`'s option values, each checked (UsageError listing valid values)."""
    if audio_codec is not None:
        audio_encoder(audio_codec)
    return Conform(
        rate=parse_rate(rate),
        pitch=pitch,  # type: ignore[arg-type]  # checked in __post_init__
        audio_codec=audio_codec,
        audio_bitrate=parse_bitrate(audio_bitrate) if audio_bitrate is not None else None,
    )


def source_rate(spec: StreamSpec, source: MediaInfo | None) -> Fraction:
    """The constant rate of the frames reaching the writer, which the conform re-times: a rate-changing stage's
    (exact constant-rate pts), else the source's. A VFR source without such a stage is refused."""
    if spec.rate:
        return spec.rate
    if source is not None and source.video.vfr:
        raise UsageError(
            f"--conform needs a constant frame rate, and {source.path} is variable-rate (mean "
            f"{float(source.video.rate):.3f} fps): there is no single factor to stretch its audio by. Make it "
            "constant-rate first, e.g. --interpolate MODEL --fps RATE, or convert it without --conform"
        )
    rate = spec.nominal_rate or (source.video.rate if source is not None else None)
    if not rate:
        raise UsageError("--conform needs the source's frame rate, and none is known")
    return rate


@dataclass(slots=True)
class RateCheck:
    """Checks each frame's source time against the constant-rate timeline from the first frame."""

    rate: Fraction
    first: Fraction | None = None
    count: int = 0

    def check(self, t: Fraction) -> None:
        if self.first is None:
            self.first = t
        expected = self.first + self.count / self.rate
        if abs(t - expected) > DRIFT_PERIODS / self.rate:
            raise UsageError(
                f"--conform needs a constant frame rate: frame {self.count} is at {float(t):.3f} s, not "
                f"{float(expected):.3f} s as {self.rate} fps puts it (the input is variable-rate or has gaps)"
            )
        self.count += 1


def encoder_for(conform: Conform, source_codec: str, supported: set[str] | frozenset[str], fallback: str) -> str:
    """The encoder a conformed audio track is written with: `conform.audio_codec`, else the track's codec where an
    encoder for it opens (not experimental) and the container holds it, else `fallback` (by container)."""
    if conform.audio_codec is not None:
        asked = audio_encoder(conform.audio_codec)
        if asked.canonical_name not in supported:
            raise UsageError(
                f"--conform-audio-codec {conform.audio_codec}: the output container cannot hold "
                f"{asked.canonical_name}; use .mkv, or a codec it holds (e.g. {fallback})"
            )
        return conform.audio_codec
    try:
        own = av.codec.Codec(av.codec.Codec(source_codec, "r").canonical_name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return fallback
    if own.experimental or own.canonical_name not in supported:
        return fallback
    return own.name


def tempo_steps(tempo: Fraction) -> list[Fraction]:
    """`atempo` factors whose product is `tempo`, each within [ATEMPO_MIN, ATEMPO_MAX]."""
    steps: list[Fraction] = []
    while tempo < ATEMPO_MIN:
        steps.append(ATEMPO_MIN)
        tempo /= ATEMPO_MIN
    while tempo > ATEMPO_MAX:
        steps.append(ATEMPO_MAX)
        tempo /= ATEMPO_MAX
    return [*steps, tempo]


def _stretch_graph(scale: Fraction, pitch: Pitch, fmt: str, layout: str, rate: int) -> av.filter.Graph:
    """abuffer → atempo… (or asetrate → aresample) → abuffersink, for frames of `fmt`/`layout` at `rate` Hz."""
    graph = av.filter.Graph()
    node: Any = graph.add_abuffer(format=fmt, sample_rate=rate, layout=layout, time_base=Fraction(1, rate))
    tempo = 1 / scale
    if pitch == "keep":
        chain = [("atempo", f"{float(step):.12g}") for step in tempo_steps(tempo)]
    else:
        # the same samples played at rate × tempo: slower and lower alike; then back to the track's rate
        chain = [("asetrate", str(round(rate * tempo))), ("aresample", str(rate))]
    for name, args in chain:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    return graph


def _drain(graph: av.filter.Graph, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
    graph.push(frame)
    out: list[av.AudioFrame] = []
    while True:
        try:
            out.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError, BlockingIOError, EOFError):
            return out


@functools.cache
def atempo_latency(scale: Fraction, rate: int) -> int:
    """Output samples that atempo's chain leaves out at the start of a track (about half its analysis window
    a stage: content then comes out that much early). Measured, not derived from FFmpeg's internals: a tone
    burst after silence goes through the chain, and the middle of its envelope (half-amplitude crossings, so
    the ramps of the overlap-add cancel) is compared with where the stretch puts it."""
    graph = _stretch_graph(scale, "keep", "s16", "mono", rate)
    t = np.arange(round((2 * _PROBE_SILENCE_S + _PROBE_BURST_S) * rate)) / rate
    burst = (t >= _PROBE_SILENCE_S) & (t < _PROBE_SILENCE_S + _PROBE_BURST_S)
    x = np.where(burst, 16000 * np.sin(2 * np.pi * _PROBE_TONE_HZ * t), 0).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(x[None], format="s16", layout="mono")
    frame.sample_rate = rate
    y = np.concatenate([f.to_ndarray()[0] for f in _drain(graph, frame) + _drain(graph, None)]).astype(np.float64)
    loud = np.nonzero(np.abs(y) > 8000)[0]
    if not len(loud):
        return 0
    middle = (loud[0] + loud[-1]) / 2
    return max(0, round((_PROBE_SILENCE_S + _PROBE_BURST_S / 2) * scale * rate - middle))


class AudioStretch:
    """One audio track's stretch: decoded frames on the source's timeline in, frames on the output's out (pts in
    samples, counted from the first frame's time mapped by `to_output`, so the track keeps its offset from the
    picture; atempo's start-up loss is added, so what comes out lies where the stretch puts it). `scale` is
    output duration / source duration (source rate / target rate). The graph is built on the first frame."""

    def __init__(self, scale: Fraction, pitch: Pitch, to_output: Callable[[Fraction], Fraction]) -> None:
        self.scale, self.pitch, self.to_output = scale, pitch, to_output
        self._graph: av.filter.Graph | None = None
        self._next = 0  # pts of the next output sample, in 1/rate
        self._rate = 0

    def push(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """Frames ready after `frame` went in (None: end of the track, everything left)."""
        if self._graph is None:
            if frame is None:
                return []
            rate = self._rate = frame.sample_rate
            self._graph = _stretch_graph(self.scale, self.pitch, frame.format.name, frame.layout.name, rate)
            start = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else Fraction(0)
            self._next = round(self.to_output(start) * rate)
            if self.pitch == "keep":
                self._next += atempo_latency(self.scale, rate)
        if frame is not None:
            frame.pts = None  # the graph counts samples; times are stamped on the way out
        out = _drain(self._graph, frame)
        for got in out:
            got.pts, got.time_base = self._next, Fraction(1, self._rate)
            self._next += got.samples
        return out


def retime_spu(data: bytes, scale: Fraction) -> bytes:
    """A DVD subtitle packet (SPU) with its control sequences' delays (display start/stop after the packet's
    time) × `scale`. Malformed packets are returned unchanged (the decoder would refuse them anyway)."""
    buf = bytearray(data)
    if len(buf) < 4:
        return data
    size = int.from_bytes(buf[0:2], "big")
    off = int.from_bytes(buf[2:4], "big")
    seen: set[int] = set()
    while off + 4 <= min(size, len(buf)) and off not in seen:
        seen.add(off)
        delay = int.from_bytes(buf[off : off + 2], "big")
        buf[off : off + 2] = min(_SPU_DELAY_MAX, round(delay * scale)).to_bytes(2, "big")
        nxt = int.from_bytes(buf[off + 2 : off + 4], "big")
        if nxt == off:  # the last sequence points to itself
            break
        off = nxt
    return bytes(buf)


def describe(conform: Conform, source: Fraction) -> dict[str, Any]:
    """The manifest's `conform` entry."""
    scale = source / conform.rate
    return {
        "from_fps": str(source),
        "to_fps": str(conform.rate),
        "duration_scale": str(scale),
        "pitch": conform.pitch,
        "audio_filter": "atempo" if conform.pitch == "keep" else "asetrate+aresample",
    }
