"""`vidpipe doctor`: what this machine can really do, found by trying, not by reading build flags, and the batch and
tile size each model stage would run at here, with the scheduler's reasons (`schedule_report`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import av.error
import av.logging
import torch

from ..errors import ModelError, VidpipeError
from ..media.encoders import _CPU_CODEC, _NVENC_CODEC, cuda_device_present, encoder_opens
from ..media.reader import ReaderOptions
from ..schedule.chain import ScheduleOptions, plan_stage
from ..schedule.costs import TABLES_DIR, CostBook
from ..stages.base import Stage, StreamSpec
from ..stages.registry import STAGES, with_model
from .device import describe, resolve_device
from .pipeline import versions

log = logging.getLogger(__name__)

_CUVID = ("h264_cuvid", "hevc_cuvid", "av1_cuvid", "vp9_cuvid", "mpeg2_cuvid")
#: the stages `schedule_report` sizes when none is named: the video models vidpipe ships offline
DEFAULT_MODELS = (
    ("upscale", "realesr-animevideov3-x4"),
    ("upscale", "realesr-animevideov3-x2"),
    ("interpolate", "rife-hdv3"),
)
#: input sizes it sizes them for: the middle of three common resolution buckets
DEFAULT_SIZES = ((640, 360), (1280, 720), (1920, 1080))


def decoder_opens(name: str) -> bool:
    if name.endswith("_cuvid") and not cuda_device_present():
        return False  # NVDEC needs a CUDA device: not asked, so FFmpeg has nothing to complain about
    with av.logging.Capture(local=True):  # a failed probe is the answer, not a message for the terminal
        try:
            cc = av.codec.CodecContext.create(name, "r")
            cc.width, cc.height = 256, 256
            cc.open()
            return True
        except (av.error.FFmpegError, av.codec.codec.UnknownCodecError, ValueError, OSError) as e:
            log.debug("decoder %s does not open: %s", name, e)
            return False


def hardware_video() -> tuple[list[str], list[str], str]:
    """The NVDEC decoders and NVENC encoders that really open here, and why none may (empty when a CUDA device is
    present): `vidpipe doctor` and the container's start-up block print these."""
    why = "" if cuda_device_present() else ", no CUDA device here (the driver, libcuda.so.1, is missing or sees none)"
    return [n for n in _CUVID if decoder_opens(n)], [n for n in _NVENC_CODEC.values() if encoder_opens(n)], why


def gpu_lines() -> Iterator[str]:
    """One line per GPU torch sees (name, free memory), or one saying there is none."""
    if not torch.cuda.is_available():
        yield "GPU: none visible to torch"
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        free, total = torch.cuda.mem_get_info(i)
        yield f"GPU {i}: {describe(torch.device('cuda', i))}, free {free / 2**30:.1f} GiB of {total / 2**30:.1f}"


def report(device: str = "auto", *, quick: bool = False) -> Iterator[str]:
    """What this machine is; `quick`: only the checks of a few seconds (versions, GPUs, the device, hardware
    video, CPU encoders), the container's HEALTHCHECK."""
    v = versions()
    yield f"vidpipe {v['vidpipe']}  python {v['python']}  torch {v['torch']} (CUDA build: {v['cuda']})"
    yield f"PyAV {v['av']}  FFmpeg {v['ffmpeg']}  CPU cores: {os.cpu_count()}"
    yield from gpu_lines()
    try:
        dev = resolve_device(device)
        yield f"device {device!r} resolves to: {describe(dev)}"
        if not quick:  # imports Triton: seconds
            yield "--kernels fused (upscale): " + _fused_status(dev)
    except VidpipeError as e:
        yield f"device {device!r}: {e}"
    hw_dec, hw_enc, why = hardware_video()
    yield "hardware decoders (NVDEC) that open: " + (", ".join(hw_dec) or f"none{why}")
    yield "hardware encoders (NVENC) that open: " + (", ".join(hw_enc) or f"none (encoding on the CPU{why})")
    cpu = []
    for preset, codec in _CPU_CODEC.items():
        ok = encoder_opens(
            codec, pix_fmt="rgb24" if preset == "png" else "yuv420p" if preset != "prores" else "yuv422p10le"
        )
        cpu.append(f"{preset}={codec}{'' if ok else ' (MISSING)'}")
    yield "CPU encoders: " + ", ".join(cpu)
    if not quick:
        yield from stage_lines()


def _fused_status(dev: torch.device) -> str:
    from ..models import fused, rowconv

    triton = "Triton kernels " + ("available" if fused.available(dev) else "unavailable (needs CUDA and Triton)")
    return f"{triton}; Hopper row kernel {rowconv.status(dev)}"


def _stage(kind: str, model: str) -> Stage:
    return with_model(kind, model)  # the registered stage on this model, every other option at its default


def stage_lines() -> Iterator[str]:
    """The registered stages (stages/registry.py) and what each is."""
    yield "stages (vidpipe run, in default --order): " + ", ".join(STAGES)
    for name, e in STAGES.items():
        what = [e.task, f"cost per {e.unit}"]
        what += [f"model via --{e.model_option}"] if e.model_option else []
        what += ["changes the frame rate"] if e.rate_changing else []
        what += ["analysis only"] if e.analysis_only else []
        flags = " ".join(o.flag for o in e.options)
        yield f"  stage {name}: {', '.join(what)}; options {flags}"


def schedule_report(
    device: torch.device,
    models: Sequence[tuple[str, str]] = DEFAULT_MODELS,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    *,
    probe: bool | None = None,
    book: CostBook | None = None,
) -> Iterator[str]:
    """For each (stage kind, model) and input size: the batch and tile a run would use on `device`, and why.
    `probe`: measure combinations no table has (default: on CUDA, as a run does; a CPU is never probed unasked)."""
    options = ScheduleOptions(probe="auto" if probe is None else "always" if probe else "never")
    book = book or CostBook.default()
    reader_batch = ReaderOptions().batch_size
    yield f"scheduler on {describe(device)} (seed 001 budget; cost tables in {TABLES_DIR} and the probe cache):"
    for kind, model in models:
        stage = _stage(kind, model)
        for w, h in sizes:
            spec = StreamSpec(width=w, height=h, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))
            try:
                stage.setup(device, spec)
            except ModelError as e:
                yield f"  {kind} {model}: not available here ({e})"
                break
            plan = plan_stage(stage, spec, device, options, reader_batch=reader_batch, book=book)
            tile = "" if plan.tile is None else ", whole frames" if not plan.tile else f", tiles of {plan.tile}px"
            dtype = stage.dtype_name or "?"
            yield f"  {kind} {model} at {w}x{h} ({dtype}): batch {plan.batch_size}{tile} [{plan.source}]"
            for reason in plan.reasons:
                yield f"      {reason}"
