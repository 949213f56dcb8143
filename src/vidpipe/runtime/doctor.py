"""`vidpipe doctor`: what this machine can really do, found by trying, not by reading build flags."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import av
import av.error
import torch

from ..errors import VidpipeError
from ..media.encoders import _CPU_CODEC, _NVENC_CODEC, encoder_opens
from .device import describe, resolve_device
from .pipeline import versions

log = logging.getLogger(__name__)

_CUVID = ("h264_cuvid", "hevc_cuvid", "av1_cuvid", "vp9_cuvid", "mpeg2_cuvid")


def decoder_opens(name: str) -> bool:
    try:
        cc = av.codec.CodecContext.create(name, "r")
        cc.width, cc.height = 256, 256
        cc.open()
        return True
    except (av.error.FFmpegError, av.codec.codec.UnknownCodecError, ValueError, OSError) as e:
        log.debug("decoder %s does not open: %s", name, e)
        return False


def report(device: str = "auto") -> Iterator[str]:
    v = versions()
    yield f"vidpipe {v['vidpipe']}  python {v['python']}  torch {v['torch']} (CUDA build: {v['cuda']})"
    yield f"PyAV {v['av']}  FFmpeg {v['ffmpeg']}  CPU cores: {os.cpu_count()}"
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            yield f"GPU {i}: {describe(torch.device('cuda', i))}, free {free / 2**30:.1f} GiB of {total / 2**30:.1f}"
    else:
        yield "GPU: none visible to torch"
    try:
        yield f"device {device!r} resolves to: {describe(resolve_device(device))}"
    except VidpipeError as e:
        yield f"device {device!r}: {e}"
    hw_dec = [n for n in _CUVID if decoder_opens(n)]
    yield "hardware decoders (NVDEC) that open: " + (", ".join(hw_dec) or "none")
    hw_enc = [n for n in _NVENC_CODEC.values() if encoder_opens(n)]
    yield "hardware encoders (NVENC) that open: " + (", ".join(hw_enc) or "none (encoding on the CPU)")
    cpu = []
    for preset, codec in _CPU_CODEC.items():
        ok = encoder_opens(
            codec, pix_fmt="rgb24" if preset == "png" else "yuv420p" if preset != "prores" else "yuv422p10le"
        )
        cpu.append(f"{preset}={codec}{'' if ok else ' (MISSING)'}")
    yield "CPU encoders: " + ", ".join(cpu)
