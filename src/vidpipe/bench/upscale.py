"""`vidpipe bench upscale`: model-only and end-to-end frames/s of SR models.

Model-only: one input size, fp16/bf16 channels-last on the device, steady state timed with CUDA events after a
warm-up (compile time reported separately), for several execution modes:
  eager · eager + cudnn.benchmark · torch.compile (max-autotune, no CUDA graphs) · torch.compile with CUDA graphs ·
  fused (our Triton kernels, `vidpipe.models.fused`: convolution, activation, residuals and shuffle in one pass;
  replayed from a CUDA graph, `vidpipe.models.graphs`, as the upscale stage runs them).
End-to-end: `vidpipe run` on a generated clip through the upscale stage into the chosen encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..models.fused import fuse
from ..models.graphs import Graphed
from ..models.loading import load_model_info
from ..stages.base import DTYPES
from .timing import check_gpu_modes, compiled, release, steady_rate

MODES = ("eager", "cudnn", "compile", "compile-graphs", "fused")


@dataclass(frozen=True, slots=True)
class ModelResult:
    model: str
    size: tuple[int, int]
    dtype: str
    mode: str
    batch: int
    fps: float
    warmup_s: float

    def row(self) -> str:
        w, h = self.size
        return (
            f"| {self.model} | {w}x{h} | {self.dtype} | {self.mode} | {self.batch} | {self.fps:.1f} | "
            f"{self.warmup_s:.1f} |"
        )


def model_only(
    model: str,
    size: tuple[int, int],
    *,
    device: torch.device,
    dtype: str = "fp16",
    modes: Sequence[str] = MODES,
    batch: int = 1,
    seconds: float = 3.0,
) -> list[ModelResult]:
    check_gpu_modes(device, modes, MODES, "upscale")
    results = []
    for mode in modes:
        torch.backends.cudnn.benchmark = mode != "eager"
        loaded = load_model_info(model, device, DTYPES[dtype])
        net = loaded.module.to(memory_format=torch.channels_last)
        w, h = size
        x = torch.rand(batch, 3, h, w, device=device, dtype=DTYPES[dtype]).contiguous(memory_format=torch.channels_last)
        # the stage's fused path: our kernels, replayed from a CUDA graph
        fn = Graphed(fuse(net, DTYPES[dtype])) if mode == "fused" else compiled(net, mode)
        with torch.inference_mode():
            rate, warm = steady_rate(lambda fn=fn, x=x: fn(x), device, seconds=seconds)  # type: ignore[misc]
        results.append(ModelResult(Path(model).stem, size, dtype, mode, batch, rate * batch, warm))
        del fn, net, loaded
        release(device)
    torch.backends.cudnn.benchmark = False
    return results


def end_to_end(
    model: str,
    size: tuple[int, int],
    *,
    device: torch.device,
    frames: int,
    work_dir: Path,
    encoder: str = "h264",
    speed: str = "veryfast",
    outscale: float | None = None,
    compile: bool = False,
    kernels: str = "torch",
) -> tuple[float, dict]:
    from ..media.encoders import EncoderOptions
    from ..media.synth import ClipSpec, cached_clip
    from ..media.writer import WriterOptions
    from ..runtime.pipeline import RunOptions, run
    from ..stages.upscale import Upscale

    work_dir.mkdir(parents=True, exist_ok=True)
    src = work_dir / f"sr-{size[0]}x{size[1]}-{frames}.mp4"
    cached_clip(src, ClipSpec(size=size, rate=Fraction(30), frames=frames, options={"crf": "18", "preset": "veryfast"}))
    opts = RunOptions(
        device=str(device), progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder=encoder, speed=speed))
    )  # type: ignore[arg-type]
    stage = Upscale(model, outscale=outscale, compile=compile, kernels=kernels)
    res = run(src, work_dir / f"sr-out-{Path(model).stem}.mkv", [stage], opts)
    return res.fps, res.manifest
