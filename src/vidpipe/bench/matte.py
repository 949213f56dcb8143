"""`vidpipe bench matte`: frames/s of the matte stage's network (RVM), alone and end to end.

- Model-only: the network exactly as the stage runs it (`Matte.alpha`: one B×T sequence of T frames per call
  from the recurrent state the previous call left, in the stage's dtype, channels-last on CUDA, the downsample
  ratio its rule gives for the size), over random frames already on the device; steady state after a warm-up,
  timed with CUDA events (the wall clock on the CPU). frames/s = T × calls/s.
- End to end: `vidpipe run` of a generated clip (decode → matte → encode) into the two alpha routes: VP9 WebM
  `yuva420p` (libvpx on the CPU encodes the picture and the alpha plane, two VP9 streams: at 1080p it caps the
  figure long before the GPU does) and ProRes 4444 `.mov` (prores_ks, intra-only: the faster alpha route).
  The stage's batch is given (`--batch`), so no cost row or probe is needed.

Runs on any device: the CPU at a tiny size is how the tests check it; the figures that matter are a GPU's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..errors import UsageError
from ..frames import FrameBatch, StreamSpec
from ..stages.matte import Matte
from .timing import release, steady_rate

#: end-to-end routes: name → (encoder preset, output suffix)
ROUTES: dict[str, tuple[str, str]] = {"vp9": ("vp9", ".webm"), "prores": ("prores", ".mov")}
HEADER = (
    "| model | input | dtype | downsample | T | route | frames/s | warm-up s | device |\n"
    "|---|---|---|---:|---:|---|---:|---:|---|"
)


@dataclass(frozen=True, slots=True)
class MatteResult:
    model: str
    size: tuple[int, int]
    dtype: str
    downsample: float
    batch: int
    #: "model eager|compile" (the network alone) or an end-to-end route ("e2e vp9 yuva420p", "e2e prores …")
    route: str
    fps: float
    warmup_s: float
    device: str

    def row(self) -> str:
        w, h = self.size
        return (
            f"| {self.model} | {w}x{h} | {self.dtype} | {self.downsample:.4g} | {self.batch} | {self.route} | "
            f"{self.fps:.1f} | {self.warmup_s:.1f} | {self.device} |"
        )


#: model-only execution modes: the network eager, or torch.compile'd as `--compile` runs it
MODES = ("eager", "compile")


def _stage(
    model: str, size: tuple[int, int], device: torch.device, dtype: str, downsample: str, compile: bool
) -> Matte:
    stage = Matte(model, output="alpha", dtype=dtype, downsample=downsample, compile=compile)
    stage.setup(device, StreamSpec(width=size[0], height=size[1], time_base=Fraction(1, 30)))
    return stage


def model_only(
    model: str,
    size: tuple[int, int],
    *,
    device: torch.device,
    dtype: str = "auto",
    batch: int = 8,
    downsample: str = "auto",
    seconds: float = 3.0,
    mode: str = "eager",
) -> MatteResult:
    """Network frames/s at `size` (W, H), `batch` frames per call, carrying the state from call to call; `mode`
    in `MODES` (compilation is in the warm-up time)."""
    if batch < 1:
        raise UsageError(f"batch must be ≥ 1 frame, got {batch}")
    if mode not in MODES:
        raise UsageError(f"invalid mode {mode!r}; valid: {', '.join(MODES)}")
    result = _model_rate(model, size, device, dtype, batch, downsample, seconds, mode)
    if device.type == "cuda":
        release(device)  # the stage and its frames are gone: the next figure starts clean
    return result


def _model_rate(
    model: str,
    size: tuple[int, int],
    device: torch.device,
    dtype: str,
    batch: int,
    downsample: str,
    seconds: float,
    mode: str,
) -> MatteResult:
    stage = _stage(model, size, device, dtype, downsample, compile=mode == "compile")
    w, h = size
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (batch, 3, h, w), generator=g, dtype=torch.uint8).to(device)
    frames = FrameBatch(data=data, pts=list(range(batch)), time_base=Fraction(1, 30))
    state: list[tuple[torch.Tensor, ...] | None] = [None]

    def call() -> None:
        _alpha, state[0] = stage.alpha(frames, state[0])

    rate, warm = steady_rate(call, device, seconds=seconds)
    return MatteResult(
        Path(model).stem, size, stage.dtype_name or dtype, stage.downsample_ratio, batch, f"model {mode}",
        rate * batch, warm, device.type,
    )  # fmt: skip


def end_to_end(
    model: str,
    size: tuple[int, int],
    *,
    device: torch.device,
    frames: int,
    work_dir: Path,
    route: str = "vp9",
    dtype: str = "auto",
    batch: int = 8,
    downsample: str = "auto",
    hwaccel: str = "none",
    compile: bool = False,
    encode_workers: int | None = None,
) -> MatteResult:
    """`vidpipe run` frames/s of a generated `size` clip of `frames` frames through the matte stage (rgba) into
    `route` (`ROUTES`), with `encode_workers` parallel chunk encoders (None: the writer's auto, 0: one encoder)."""
    from ..media.encoders import EncoderOptions
    from ..media.reader import ReaderOptions
    from ..media.synth import ClipSpec, cached_clip
    from ..media.writer import WriterOptions
    from ..runtime.pipeline import RunOptions, run
    from ..schedule.chain import ScheduleOptions

    if route not in ROUTES:
        raise UsageError(f"invalid route {route!r}; valid: {', '.join(ROUTES)}")
    encoder, suffix = ROUTES[route]
    work_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    src = cached_clip(
        work_dir / f"matte-{w}x{h}-{frames}.mp4",
        ClipSpec(size=size, rate=Fraction(30), frames=frames, options={"crf": "18", "preset": "veryfast"}),
    )
    opts = RunOptions(
        device=str(device),
        progress="none",
        reader=ReaderOptions(batch_size=batch, hwaccel=hwaccel),  # type: ignore[arg-type]
        writer=WriterOptions(encoder=EncoderOptions(encoder=encoder), encode_workers=encode_workers),  # type: ignore[arg-type]
        schedule=ScheduleOptions(batch_size=batch),
    )
    stage = Matte(model, output="rgba", dtype=dtype, downsample=downsample, compile=compile)
    res = run(src, work_dir / f"matte-out-{Path(model).stem}-{w}x{h}{suffix}", [stage], opts)
    enc = res.manifest["encoder"]
    return MatteResult(
        Path(model).stem, size, stage.dtype_name or dtype, stage.downsample_ratio, batch,
        f"e2e {route} {enc['pix_fmt']}" + (" compile" if compile else "")
        + f", {enc.get('parallel') or 'one encoder'}", res.fps, 0.0, device.type,
    )  # fmt: skip
