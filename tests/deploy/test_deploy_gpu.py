"""The container's start-up block and the serverless worker on a CUDA machine (skipped without one): the block names
the GPU and the NVDEC decoders that open, and two requests on the GPU load the model once."""

from __future__ import annotations

import asyncio
import json

import pytest
from deploy_env import HOST_NAMES, container_env, run_python

from vidpipe.models import loading
from vidpipe.serve import runpod as serve_runpod
from vidpipe.serve.worker import DevicePool, Worker

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

UPSCALE = "realesr-animevideov3-x2"


def test_the_startup_block_names_the_gpu_and_nvdec(clip, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(HOST_NAMES)} | {
        "AUTO_UPLOAD_B2": "0",
        "VIDPIPE_INPUT": str(clip),
        "VIDPIPE_OUTPUT_DIR": str(tmp_path / "out"),
        "VIDPIPE_UPSCALE": UPSCALE,
        "VIDPIPE_DEVICE": "cuda",
        "UPLOAD_RESULT_JSON": str(tmp_path / "result.json"),
    }
    proc = run_python(["-m", "vidpipe", "container"], env, tmp_path, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = proc.stdout.split("vidpipe container start-up\n", 1)[1]
    assert "  GPU 0: " in block and "  device 'cuda': " in block and "FAILED" not in block
    assert "  NVDEC: h264_cuvid" in block  # the GPU box's PyAV opens h264_cuvid (shared GPU notes)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "succeeded"


def test_two_requests_on_the_gpu_load_the_model_once(s3_server, bucket, clip, tmp_path, monkeypatch):
    s3_server.admin_client().put_object(Bucket=bucket, Key="raw/clip.mp4", Body=clip.read_bytes())
    pool = DevicePool()
    assert pool.devices[0] == "cuda:0"
    w = Worker(tmp_path / "serve", env=container_env(s3_server, bucket), devices=pool)
    monkeypatch.setattr(serve_runpod, "_worker", w)
    monkeypatch.setattr(serve_runpod, "send_progress", lambda job, update: None)
    reads = []
    real = loading._read
    monkeypatch.setattr(loading, "_read", lambda path, expected: reads.append(path) or real(path, expected))
    request = {"video": f"s3://{bucket}/raw/clip.mp4", "options": {"upscale": UPSCALE}}
    first = asyncio.run(serve_runpod.handler({"id": "g1", "input": request}))
    n = len(reads)
    second = asyncio.run(serve_runpod.handler({"id": "g2", "input": request}))
    assert first["status"] == second["status"] == "succeeded", (first, second)
    assert first["device"] == second["device"] == "cuda:0"
    assert n > 0 and len(reads) == n and second["models_were_loaded"] is True
    assert serve_runpod.concurrency(1) == len(pool.devices)
