"""GPU paths: skipped on CPU machines, run on a lent H100 with the device tool."""

from __future__ import annotations

import pytest
import torch

from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.resize import Resize
from vidpipe.testing import decode_all, psnr

pytestmark = pytest.mark.gpu


def test_nvdec_decodes_the_same_frames_as_the_cpu(make):
    src = make("nvdec.mp4", frames=30, size=(1280, 720))
    t_cpu, f_cpu = decode_all(src)
    t_gpu, f_gpu = decode_all(src, hwaccel="cuda")
    assert t_gpu == t_cpu
    assert f_gpu.shape == f_cpu.shape
    assert psnr(f_gpu, f_cpu) > 50  # same bitstream, repacked to the same layout: near-identical


def test_pipeline_on_cuda_matches_cpu(make, tmp_path):
    src = make("cuda-run.mkv", frames=16, size=(640, 360))
    opts = {"progress": "none", "writer": WriterOptions(encoder=EncoderOptions(encoder="ffv1"))}
    # the CPU run converts colour the same way the CUDA run does by default (media/yuv.py), not with swscale
    run(src, tmp_path / "cpu.mkv", [Resize(1280, 720)], RunOptions(device="cpu", colour_on_device="on", **opts))
    res = run(src, tmp_path / "gpu.mkv", [Resize(1280, 720)], RunOptions(device="cuda", **opts))
    assert res.manifest["device"].startswith("cuda")
    t1, a = decode_all(tmp_path / "cpu.mkv")
    t2, b = decode_all(tmp_path / "gpu.mkv")
    assert t1 == t2 and a.shape == b.shape
    assert psnr(a, b) > 40
    assert torch.cuda.is_available()
