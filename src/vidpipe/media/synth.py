"""Generated clips (FFmpeg lavfi sources through PyAV): the demo sample and the test fixtures.

Everything is made at run time: no media is committed. `make_clip` covers what the tests need to exercise:
rates as Fractions, VFR timelines, several audio tracks with languages, SRT subtitles, attachments, chapters,
rotation, 10-bit and alpha pixel formats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .colour import MATRIX, PRIMARIES, TRANSFER, code_of


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioTrack:
    codec: str = "aac"
    language: str | None = None
    frequency: int = 440
    sample_rate: int = 48000


@dataclass(frozen=True, slots=True, kw_only=True)
class Subtitle:
    start: Fraction  # seconds
    end: Fraction
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipSpec:
    size: tuple[int, int] = (320, 240)
    rate: Fraction = Fraction(25)
    frames: int = 50
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    source: str = "testsrc2"  # any lavfi video source: testsrc2, mandelbrot, smptehdbars, …
    #: explicit per-frame times in seconds (VFR); overrides `rate` for timing
    times: Sequence[Fraction] | None = None
    time_base: Fraction | None = None
    audio: Sequence[AudioTrack] = ()
    subtitles: Sequence[Subtitle] = ()
    subtitle_language: str | None = None
    attachments: Sequence[tuple[str, str, bytes]] = ()  # (filename, mimetype, data)
    chapters: Sequence[tuple[Fraction, Fraction, str]] = ()
    rotation: int = 0  # counter-clockwise display rotation
    options: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    #: frames with an alpha ramp (for yuva/rgba formats)
    alpha: bool = False
    #: colour tags (primaries, transfer, matrix) in FFmpeg names, e.g. ("bt2020", "smpte2084", "bt2020nc")
    colour_tags: tuple[str, str, str] | None = None
    #: muxer options, e.g. {"movflags": "faststart"}
    container_options: dict[str, str] = field(default_factory=dict)


def _video_frames(spec: ClipSpec) -> Iterator[tuple[str, np.ndarray]]:
    w, h = spec.size
    rate = spec.rate
    deep = any(x in spec.pix_fmt for x in ("10", "12", "16"))
    src = av.open(f"{spec.source}=size={w}x{h}:rate={rate.numerator}/{rate.denominator}", format="lavfi")
    fmt = ("rgba64le" if spec.alpha else "rgb48le") if deep else ("rgba" if spec.alpha else "rgb24")
    try:
        for n, frame in enumerate(src.decode(video=0)):
            if n >= spec.frames:
                break
            arr = frame.to_ndarray(format="rgb48le" if deep else "rgb24")
            if spec.alpha:
                top = 65535 if deep else 255
                # alpha varies over x and time, so both spatial and temporal alpha errors show
                ramp = (np.linspace(0, top, w)[None, :] + n * 7) % (top + 1)
                alpha = np.broadcast_to(ramp, (h, w)).astype(arr.dtype)[..., None]
                arr = np.concatenate([arr, alpha], axis=2)
            yield fmt, arr
    finally:
        src.close()


def _subtitle_packet(s: Subtitle, stream: av.stream.Stream) -> av.Packet:
    """SRT packets are plain text, muxed as they are (no subtitle encoder needed)."""
    pkt = av.Packet(s.text.encode())
    pkt.pts = pkt.dts = int(s.start * 1000)
    pkt.duration = int((s.end - s.start) * 1000)
    pkt.time_base = Fraction(1, 1000)
    pkt.stream = stream
    return pkt


def make_clip(path: str | Path, spec: ClipSpec = ClipSpec()) -> Path:
    """Write a clip described by `spec`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=dict(spec.container_options)) as out:
        out.metadata.update(spec.metadata)
        vs = out.add_stream(spec.codec, rate=spec.rate, options=dict(spec.options))
        vs.width, vs.height = spec.size
        vs.pix_fmt = spec.pix_fmt
        tb = spec.time_base or (Fraction(1, 1000) if spec.times is not None else 1 / spec.rate)
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if spec.colour_tags:
            cc = vs.codec_context
            for attr, table, name in zip(
                ("color_primaries", "color_trc", "colorspace"),
                (PRIMARIES, TRANSFER, MATRIX),
                spec.colour_tags,
                strict=True,
            ):
                setattr(cc, attr, code_of(table, name))
        if spec.rotation:
            vs.set_display_rotation(spec.rotation)
        audio = []
        for t in spec.audio:
            a = out.add_stream(t.codec, rate=t.sample_rate)
            if t.language:
                a.metadata["language"] = t.language
            audio.append((a, t))
        sub = None
        if spec.subtitles:
            sub = out.add_mux_stream("subrip")
            sub.time_base = Fraction(1, 1000)
            if spec.subtitle_language:
                sub.metadata["language"] = spec.subtitle_language
        for name, mime, data in spec.attachments:
            out.add_attachment(name, mime, data)
        if spec.chapters:
            out.set_chapters(
                [
                    {
                        "id": i + 1,
                        "start": int(s * 1000),
                        "end": int(e * 1000),
                        "time_base": Fraction(1, 1000),
                        "metadata": {"title": title},
                    }
                    for i, (s, e, title) in enumerate(spec.chapters)
                ]
            )
        pending_subs = sorted(spec.subtitles, key=lambda s: s.start)
        for i, (fmt, arr) in enumerate(_video_frames(spec)):
            t = spec.times[i] if spec.times is not None else i / spec.rate
            while sub is not None and pending_subs and pending_subs[0].start <= t:
                out.mux(_subtitle_packet(pending_subs.pop(0), sub))
            frame = av.VideoFrame.from_ndarray(arr, format=fmt)
            frame.pts = int(t / tb)
            frame.time_base = tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        for s in pending_subs if sub is not None else ():
            out.mux(_subtitle_packet(s, sub))
        duration = (spec.times[-1] + (spec.times[-1] - spec.times[-2])) if spec.times else spec.frames / spec.rate
        for a, t in audio:
            src = av.open(
                f"sine=frequency={t.frequency}:sample_rate={t.sample_rate}:duration={float(duration)}",
                format="lavfi",
            )
            try:
                for fr in src.decode(audio=0):
                    fr.pts = None  # let the encoder count samples
                    out.mux(a.encode(fr))
            finally:
                src.close()
            out.mux(a.encode())
    return path


def cached_clip(path: str | Path, spec: ClipSpec) -> Path:
    """`make_clip` unless `path` already exists (benchmarks reuse their generated inputs between runs)."""
    path = Path(path)
    return path if path.exists() else make_clip(path, spec)
