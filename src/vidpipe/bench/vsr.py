"""`vidpipe bench vsr` (issue 18, item 5): BasicVSR++ ×4 end to end, ours against the seed's baseline, in one call.

- **Ours**: `vidpipe run` of the input through the `vsr` stage (decode thread → windows of T kept frames with
  `overlap` frames of context each side on the device, in the stage's dtype: fp16 on CUDA, warps in fp32 →
  encode thread), TF32 and cuDNN autotuning on for the run. The window length is given (`batch_size`), so no
  cost row or probe is needed.
- **The seed's baseline** (S4, `restoration_video_streaming.py` as the seed describes it), rebuilt here: the
  network in fp32 with PyTorch's default math flags (no AMP, nothing set), the sequence cut into chunks of
  `max_seq_len` frames with no overlap, each chunk read (sequentially: the seed's random `vr[i]` access would only
  be slower), moved to the device as one float tensor, run, brought back, and every output frame written as a PNG
  file (zlib level 1, OpenCV's default) before the next chunk is read. One thread, as the script is.
- Host RSS is sampled every 0.25 s during each run: peak and slope (least squares over the run after its first
  10 %, MB per minute), so "RSS flat < 3 GB over a 10-minute input" can be checked with `--seconds 600`.
- The input is generated (testsrc2 through libx264, streamed to disk frame by frame, never held in memory) at the
  seed's mezzanine size 1024×432, 25 fps; `--size` for a quick run on the CPU.
- The model is BasicVSR++ in the official layout with random weights (seeded; the official files are not
  available offline): speed does not depend on the values. `dtype_psnr` states what fp16/bf16 cost in quality,
  with real weights (`basicvsr-reds4`) on real frames (vtest): PSNR of each dtype's output against fp32's.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np
import torch

from ..errors import UsageError
from ..metrics import psnr_per_frame
from ..models.loading import load_model_info, save_safetensors
from ..runtime.device import math_flags
from ..stages.base import resolve_dtype
from .io import _RssSampler

#: the seed's mezzanine (S4: 1024×432, 25p)
SEED_SIZE: Final = (1024, 432)
SEED_RATE: Final = Fraction(25)
#: the baseline's chunk by default. The seed runs `--max-seq-len 250`, which fits a 24 GB card only because
#: mmedit's BasicVSR++ moves features to host memory past 100 frames (`cpu_cache_length`), which we do not
#: rebuild: our network keeps a chunk's features on the device (fp32 at 1024×432: ~0.6 GB a frame), so 250
#: would not fit 80 GB. 100 frames all on the device is the baseline's most favourable setting, not a handicap
BASELINE_SEQ_LEN: Final = 100
#: OpenCV's default PNG compression (cv2.imwrite, which mmedit's tensor2img → imwrite path uses)
PNG_LEVEL: Final = 1
HEADER: Final = (
    "| run | input | frames | dtype | frames per call | wall s | frames/s | peak RSS MB | RSS slope MB/min |\n"
    "|---|---|---:|---|---|---:|---:|---:|---:|"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFigures:
    """One run of the benchmark: what ran, how long, and the host RSS samples (seconds, MB) taken during it."""

    name: str
    #: the network's dtype, and its frames per call: "T + 2·O" (ours) or "chunk N" (the baseline)
    dtype: str
    calls: str
    #: input (W, H)
    size: tuple[int, int]
    rss: list[tuple[float, int]]
    frames: int
    wall_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def peak_mb(self) -> int:
        return max((mb for _, mb in self.rss), default=0)

    @property
    def slope_mb_per_min(self) -> float:
        return rss_slope(self.rss)

    def row(self) -> str:
        w, h = self.size
        return (
            f"| {self.name} | {w}x{h} | {self.frames} | {self.dtype} | {self.calls} | {self.wall_s:.1f} | "
            f"{self.fps:.2f} | {self.peak_mb} | {self.slope_mb_per_min:+.1f} |"
        )


def rss_slope(samples: Sequence[tuple[float, int]]) -> float:
    """MB per minute, least squares over the samples after the first 10 % of the run (start-up allocations:
    model, first window, encoder buffers) — 0 with fewer than 3 samples there."""
    if not samples:
        return 0.0
    t_end = samples[-1][0]
    rest = [(t, mb) for t, mb in samples if t > 0.1 * t_end]
    if len(rest) < 3:
        return 0.0
    t, mb = np.array(rest, dtype=np.float64).T
    return float(np.polyfit(t / 60.0, mb, 1)[0])


def random_basicvsrpp(seed: int = 0) -> Path:
    """BasicVSR++ (mid 64, 7 blocks: the REDS4 model's shape) with random weights, saved once as safetensors."""
    from ..models.archs.basicvsrpp import BasicVSRPlusPlus

    path = Path(tempfile.gettempdir()) / f"vidpipe-basicvsrpp-random-{seed}.safetensors"
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_safetensors(BasicVSRPlusPlus().state_dict(), path)
    return path


def generated_input(work_dir: Path, size: tuple[int, int], seconds: float) -> tuple[Path, int]:
    """A testsrc2 clip of `seconds` at `size` and the seed's 25 fps (made once, streamed to disk)."""
    from ..media.synth import ClipSpec, cached_clip

    frames = max(1, round(seconds * SEED_RATE))
    w, h = size
    path = work_dir / f"vsr-{w}x{h}-{frames}.mp4"
    spec = ClipSpec(size=size, rate=SEED_RATE, frames=frames, options={"crf": "18", "preset": "veryfast"})
    return cached_clip(path, spec), frames


#: ours: TF32 everywhere fp32 remains, cuDNN autotuning (frame sizes are fixed within a run)
OURS_FLAGS: Final = {"matmul_tf32": True, "cudnn_tf32": True, "benchmark": True}
#: PyTorch's own defaults (matmul TF32 off, cuDNN TF32 on, no autotuning): what a script that sets nothing, as
#: the seed's baseline, runs with
TORCH_DEFAULT_FLAGS: Final = {"matmul_tf32": False, "cudnn_tf32": True, "benchmark": False}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- ours


def ours(
    src: Path,
    model: str | Path,
    *,
    size: tuple[int, int],
    device: torch.device,
    work_dir: Path,
    dtype: str = "auto",
    window: int,
    overlap: int,
    encoder: str = "h264",
    encode_workers: int | None = None,
) -> RunFigures:
    """`vidpipe run src → vsr → encode` (module doc), host RSS sampled; `encode_workers` as `--encode-workers`."""
    from ..media.encoders import EncoderOptions
    from ..media.writer import WriterOptions
    from ..runtime.pipeline import RunOptions, run
    from ..schedule.chain import ScheduleOptions
    from ..stages.vsr import Vsr

    stage = Vsr(model, window=window, overlap=overlap, dtype=dtype)
    opts = RunOptions(
        device=str(device),
        progress="none",
        writer=WriterOptions(encoder=EncoderOptions(encoder=encoder), encode_workers=encode_workers),  # type: ignore[arg-type]
        schedule=ScheduleOptions(batch_size=window),
    )
    with math_flags(**OURS_FLAGS), _RssSampler() as rss:
        res = run(src, work_dir / f"vsr-ours-{src.stem}.mkv", [stage], opts)
    return RunFigures(
        name=f"ours ({encoder})" if encode_workers is None else f"ours ({encoder}, {encode_workers} encoders)",
        size=size,
        frames=res.frames_out,
        dtype=stage.dtype_name or dtype,
        calls=f"{window} + 2·{overlap}",
        wall_s=res.wall_s,
        rss=rss.samples,
    )


# ---------------------------------------------------------------- the seed's baseline


class PngWriter:
    """One PNG file per frame (`%08d.png`), as the seed's runner writes them."""

    def __init__(self, out_dir: Path, size: tuple[int, int]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.codec = av.CodecContext.create("png", "w")
        self.codec.width, self.codec.height = size
        self.codec.pix_fmt = "rgb24"
        self.codec.options = {"compression_level": str(PNG_LEVEL)}
        self.written = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        data = b"".join(bytes(p) for p in self.codec.encode(frame))
        (self.out_dir / f"{self.written:08d}.png").write_bytes(data)
        self.written += 1


def _chunks(src: Path, length: int) -> Iterator[np.ndarray]:
    """The video's frames as RGB uint8 arrays, `length` at a time (T×H×W×3), read in order."""
    with av.open(str(src)) as container:
        chunk: list[np.ndarray] = []
        for frame in container.decode(video=0):
            chunk.append(frame.to_ndarray(format="rgb24"))
            if len(chunk) == length:
                yield np.stack(chunk)
                chunk = []
        if chunk:
            yield np.stack(chunk)


def seed_baseline(
    src: Path, model: str | Path, *, device: torch.device, out_dir: Path, max_seq_len: int = BASELINE_SEQ_LEN
) -> RunFigures:
    """The seed's runner (module doc): fp32, chunks of `max_seq_len` with no overlap, PNG per output frame."""
    if max_seq_len < 1:
        raise UsageError(f"--baseline-seq-len must be ≥ 1 frame, got {max_seq_len}")
    with math_flags(**TORCH_DEFAULT_FLAGS), _RssSampler() as rss:
        t0 = time.perf_counter()
        net = load_model_info(model, device, torch.float32, task="vsr").module
        if hasattr(net, "deform_backend") and importlib.util.find_spec("torchvision") is not None:
            net.deform_backend = "torchvision"  # the seed's mmcv kernel is im2col + GEMM as torchvision's, not ours
        writer: PngWriter | None = None
        size = (0, 0)
        for chunk in _chunks(src, max_seq_len):
            lq = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div(255.0)[None].to(device)
            with torch.no_grad():
                out = net(lq)[0].cpu()
            frames = out.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            if writer is None:
                size = (chunk.shape[2], chunk.shape[1])
                writer = PngWriter(out_dir, (frames.shape[2], frames.shape[1]))
            for f in frames:
                writer.write(np.ascontiguousarray(f))
        sync(device)
        wall = time.perf_counter() - t0
    return RunFigures(
        name="seed baseline (PNG)",
        size=size,
        frames=0 if writer is None else writer.written,
        dtype="fp32",
        calls=f"chunk {max_seq_len}",
        wall_s=wall,
        rss=rss.samples,
    )


# ---------------------------------------------------------------- fp16/bf16 against fp32


@dataclass(frozen=True, slots=True, kw_only=True)
class DtypeQuality:
    model: str
    size: tuple[int, int]
    #: dtype → per-frame PSNR of its output against fp32's (dB, capped)
    psnr: dict[str, list[float]]

    def lines(self) -> list[str]:
        w, h = self.size
        out = [f"fp16/bf16 against fp32, {Path(self.model).stem} on {len(next(iter(self.psnr.values()), []))} "
               f"frames of vtest at {w}x{h} (PSNR dB on float RGB, per frame min / mean):"]  # fmt: skip
        out += [f"  {d}: min {min(v):.2f}, mean {float(np.mean(v)):.2f}" for d, v in self.psnr.items()]
        return out


def dtype_psnr(
    model: str | Path,
    *,
    device: torch.device,
    size: tuple[int, int],
    frames: int = 8,
    dtypes: Sequence[str] = ("fp16", "bf16"),
) -> DtypeQuality:
    """PSNR of the stage's output in each of `dtypes` against fp32, one window over `frames` frames of vtest
    area-resized to `size` (dtypes the device cannot run, fp16 on the CPU, are left out)."""
    from ..eval.vsr import clip_path, make_stage, read_frames

    lr = read_frames(clip_path("vtest.avi"), frames, size)
    ref_stage = make_stage(model, device, size, window=frames, overlap=0, dtype="fp32")
    ref = ref_stage.upscale(lr.to(device)).float().clamp(0, 1).cpu()
    del ref_stage
    psnr: dict[str, list[float]] = {}
    for d in dtypes:
        try:
            resolve_dtype(d, device)
        except UsageError:
            continue
        stage = make_stage(model, device, size, window=frames, overlap=0, dtype=d)
        out = stage.upscale(lr.to(device, stage.dtype)).float().clamp(0, 1).cpu()
        psnr[d] = psnr_per_frame(out, ref).tolist()
        del stage
    return DtypeQuality(model=str(model), size=size, psnr=psnr)


def report(baseline: RunFigures | None, mine: RunFigures) -> list[str]:
    lines = [HEADER, mine.row()]
    if baseline is not None:
        lines.append(baseline.row())
        if baseline.fps > 0:
            lines.append(
                f"ours / seed baseline: **{mine.fps / baseline.fps:.2f}×** (issue 18's target on the H100: ≥ 3×)"
            )
    return lines


def run_vsr_bench(
    *,
    device: torch.device,
    size: tuple[int, int] = SEED_SIZE,
    seconds: float = 10.0,
    model: str | Path | None = None,
    window: int,
    overlap: int,
    dtype: str = "auto",
    encoder: str = "h264",
    encode_workers: int | None = None,
    baseline: bool = True,
    baseline_seq_len: int = BASELINE_SEQ_LEN,
    quality_model: str | None = "basicvsr-reds4",
    quality_frames: int = 8,
    quality_size: tuple[int, int] | None = None,
    work_dir: Path,
) -> Iterator[str]:
    """The whole benchmark (module doc), one report line at a time: ours, the seed's baseline on the same input,
    the ratio, and fp16/bf16 against fp32."""
    if seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {seconds}")
    work_dir.mkdir(parents=True, exist_ok=True)
    net = model or random_basicvsrpp()
    src, frames = generated_input(work_dir, size, seconds)
    w, h = size
    yield f"input: {src.name}, {frames} frames of {w}x{h} at {SEED_RATE} fps; model {Path(str(net)).name}"
    mine = ours(src, net, size=size, device=device, work_dir=work_dir, dtype=dtype, window=window,
                overlap=overlap, encoder=encoder, encode_workers=encode_workers)  # fmt: skip
    seed = None
    if baseline:
        gc.collect()  # ours' run leaves nothing the baseline needs: its cached blocks go back before a 4K chunk
        if device.type == "cuda":
            torch.cuda.empty_cache()
        pngs = work_dir / "vsr-baseline-png"
        seed = seed_baseline(src, net, device=device, out_dir=pngs, max_seq_len=baseline_seq_len)
        for p in pngs.glob("*.png"):  # thousands of files at 4096×1728: the next run starts clean
            p.unlink()
    yield from report(seed, mine)
    if quality_model and quality_frames > 1:
        yield from dtype_psnr(quality_model, device=device, size=quality_size or size, frames=quality_frames).lines()
