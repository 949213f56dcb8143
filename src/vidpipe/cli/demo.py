"""`vidpipe demo`: generate a sample clip (video + two audio tracks + subtitles + chapters) and run the main job
on it, so a new user sees the whole path work in one command."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from ..media.synth import AudioTrack, ClipSpec, Subtitle, make_clip
from ..runtime.pipeline import RunOptions, RunResult, run
from ..stages.resize import Resize

SAMPLE = ClipSpec(
    size=(640, 360),
    rate=Fraction(24000, 1001),
    frames=120,
    source="testsrc2",
    audio=(AudioTrack(language="eng"), AudioTrack(language="fra", frequency=660)),
    subtitles=(Subtitle(start=Fraction(1), end=Fraction(3), text="vidpipe demo"),),
    subtitle_language="eng",
    chapters=((Fraction(0), Fraction(2), "Part 1"), (Fraction(2), Fraction(5), "Part 2")),
)


def run_demo(out_dir: Path, options: RunOptions) -> RunResult:
    sample = make_clip(out_dir / "sample.mkv", SAMPLE)
    return run(sample, out_dir / "sample_x2.mkv", [Resize(1280, 720, "bicubic")], options)
