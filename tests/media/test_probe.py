from __future__ import annotations

from fractions import Fraction as F

import pytest

from vidpipe.assets import opencv_clip
from vidpipe.media.probe import probe
from vidpipe.media.synth import AudioTrack, Subtitle


def test_probe_describes_every_stream_chapter_and_rotation(make):
    p = make(
        "rich.mkv",
        rate=F(24000, 1001),
        frames=24,
        rotation=90,
        audio=[AudioTrack(language="eng"), AudioTrack(codec="libopus", language="fra")],
        subtitles=[Subtitle(start=F(1, 4), end=F(1, 2), text="hello")],
        subtitle_language="eng",
        attachments=[("font.ttf", "application/x-truetype-font", b"\0\1font")],
        chapters=[(F(0), F(1, 2), "One"), (F(1, 2), F(1), "Two")],
        metadata={"title": "fixture"},
    )
    info = probe(p)
    v = info.video
    assert v.rate == F(24000, 1001) and not v.vfr
    assert (v.width, v.height) == (320, 240) and v.display_size == (240, 320) and v.rotation == 90
    assert v.frames == 24 and v.frames_exact
    assert [s.type for s in info.streams] == ["video", "audio", "audio", "subtitle", "attachment"]
    assert [s.language for s in info.of_type("audio")] == ["eng", "fra"]
    assert info.of_type("subtitle")[0].codec in ("subrip", "srt")
    assert info.of_type("attachment")[0].filename == "font.ttf"
    assert [(c.start, c.end, c.title) for c in info.chapters] == [(0, F(1, 2), "One"), (F(1, 2), 1, "Two")]
    assert info.metadata.get("title") == "fixture"
    js = info.to_json()
    assert js["video"]["rate"] == "24000/1001" and js["display_size"] == [240, 320]


def test_probe_vfr_and_cfr(make):
    times = [F(i * 40, 1000) for i in range(10)] + [F(400 + i * 100, 1000) for i in range(10)]
    assert probe(make("vfr.mkv", times=times, frames=20)).video.vfr
    assert not probe(make("cfr25.mp4", frames=20)).video.vfr
    # 29.97 in a millisecond time base steps 33/34 ms: still constant rate
    assert not probe(make("ntsc.mkv", rate=F(30000, 1001), frames=30)).video.vfr


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "depth"),
    [("libx265", "yuv420p10le", 10), ("ffv1", "yuv420p10le", 10), ("libx264", "yuv420p", 8)],
)
def test_probe_bit_depth(make, codec, pix_fmt, depth):
    opts = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    v = probe(make(f"depth-{codec}.mkv", codec=codec, pix_fmt=pix_fmt, frames=3, options=opts)).video
    assert v.colour.bit_depth == depth and v.pix_fmt == pix_fmt


def test_probe_alpha_vp9_and_prores(make):
    vp9 = make(
        "alpha.webm", codec="libvpx-vp9", pix_fmt="yuva420p", frames=3, alpha=True, options={"auto-alt-ref": "0"}
    )
    assert probe(vp9).video.alpha
    prores = make(
        "alpha.mov", codec="prores_ks", pix_fmt="yuva444p10le", frames=3, alpha=True, options={"profile": "4"}
    )
    assert probe(prores).video.alpha


def test_probe_real_clip_with_ac3_audio():
    info = probe(opencv_clip("Megamind.avi"))
    assert info.video.frames == 270 and info.video.rate == F(2997, 125)
    assert [s.codec for s in info.of_type("audio")] == ["ac3"]
