"""The seeds' baseline for `vidpipe bench peers`, run as its own process (`python -m vidpipe.bench.peers_baseline`)
so that it is timed like the peers, start-up included.

What the seed pipelines did (run_realesrgan_pytorch.sh / run_rife_pytorch.sh and their batch runners; the S4 seed
calls its PNG-writing FP32 runner "abysmal"), in three sequential phases:
1. extract every frame to PNG (`ffmpeg -i IN frames/frame_%08d.png`; here PyAV's image2 muxer + png encoder);
2. run the model per frame (upscale) or per pair (interpolate, mid-point, the neighbours copied), reading and
   writing PNGs with cv2, plain PyTorch fp32 at batch 1, the model loaded once;
3. reassemble (`ffmpeg -framerate R -i out/frame_%08d.png -c:v libx264 -preset veryfast -crf 18 OUT`; here PyAV).
The model classes are vidpipe's own (same weights file as the peers); upscaling to an outscale other than the
model's scale resizes with Lanczos afterwards, as Real-ESRGAN's scripts do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from ..models.archs.ifnet import IFNetBase
from ..models.loading import load_model_info

PATTERN = "frame_%08d.png"


def extract_pngs(src: Path, dst: Path) -> tuple[int, Fraction]:
    """Every frame of `src` as `dst/frame_00000001.png` …; returns (frames, average rate)."""
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        rate = Fraction(vs.average_rate or vs.guessed_rate or 25)
        with av.open(str(dst / PATTERN), "w", format="image2") as out:
            png = out.add_stream("png", rate=rate)
            png.width, png.height, png.pix_fmt = vs.codec_context.width, vs.codec_context.height, "rgb24"
            for frame in c.decode(vs):
                rgb = frame.reformat(format="rgb24")
                rgb.pts, rgb.time_base = n, 1 / rate
                out.mux(png.encode(rgb))
                n += 1
            out.mux(png.encode())
    return n, rate


def assemble(src: Path, rate: Fraction, out_path: Path, *, preset: str, crf: int) -> int:
    """`src/frame_%08d.png` → H.264 (libx264, yuv420p) at `rate`; returns the frames written."""
    n = 0
    with (
        av.open(str(src / PATTERN), format="image2", options={"framerate": str(rate)}) as c,
        av.open(str(out_path), "w") as out,
    ):
        vs = c.streams.video[0]
        enc = out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": str(crf)})
        enc.width, enc.height, enc.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        for frame in c.decode(vs):
            yuv = frame.reformat(format="yuv420p")
            yuv.pts, yuv.time_base = n, 1 / rate
            out.mux(enc.encode(yuv))
            n += 1
        out.mux(enc.encode())
    return n


def _read(path: Path, device: torch.device) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cv2 cannot read {path}")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device).float().div_(255)


def _write(path: Path, x: torch.Tensor) -> None:
    rgb = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"cv2 cannot write {path}")


def upscale_pngs(src: Path, dst: Path, weights: Path, outscale: float, device: torch.device) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    loaded = load_model_info(weights, device, torch.float32)
    frames = sorted(src.glob("frame_*.png"))
    for path in frames:
        x = _read(path, device)
        with torch.inference_mode():
            y = loaded.module(x)
        if outscale != loaded.scale:
            out = y[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            size = (round(x.shape[3] * outscale), round(x.shape[2] * outscale))
            out = cv2.resize(out, size, interpolation=cv2.INTER_LANCZOS4)
            cv2.imwrite(str(dst / path.name), np.ascontiguousarray(out[:, :, ::-1]))
        else:
            _write(dst / path.name, y)
    return len(frames)


def interpolate_pngs(src: Path, dst: Path, weights: Path, device: torch.device) -> int:
    """×2: each source frame, then the mid-point of it and the next; 2N−1 frames for N."""
    dst.mkdir(parents=True, exist_ok=True)
    net = load_model_info(weights, device, torch.float32).module
    if not isinstance(net, IFNetBase):
        raise TypeError(f"{weights} is not a RIFE (IFNet) model")
    frames = sorted(src.glob("frame_*.png"))
    n = 0
    right = _read(frames[0], device) if frames else None
    for i, path in enumerate(frames):
        n += 1
        shutil.copyfile(path, dst / (PATTERN % n))
        if i + 1 == len(frames):
            break
        left, right = right, _read(frames[i + 1], device)
        assert left is not None and right is not None
        mid = net.interpolate(left, right, 0.5)
        n += 1
        _write(dst / (PATTERN % n), mid)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidpipe.bench.peers_baseline", description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("upscale", "interpolate"), required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="folder for the PNGs (emptied first)")
    p.add_argument("--outscale", type=float, default=2.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="veryfast")
    p.add_argument("--crf", type=int, default=18)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    shutil.rmtree(a.work, ignore_errors=True)
    t0 = time.perf_counter()
    n_in, rate = extract_pngs(a.input, a.work / "in")
    t1 = time.perf_counter()
    if a.task == "upscale":
        upscale_pngs(a.work / "in", a.work / "out", a.weights, a.outscale, device)
        out_rate = rate
    else:
        interpolate_pngs(a.work / "in", a.work / "out", a.weights, device)
        out_rate = rate * 2
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t2 = time.perf_counter()
    n_out = assemble(a.work / "out", out_rate, a.output, preset=a.preset, crf=a.crf)
    t3 = time.perf_counter()
    phases = {"extract_s": t1 - t0, "model_s": t2 - t1, "assemble_s": t3 - t2, "frames_in": n_in, "frames_out": n_out}
    # the last line of stdout is read by bench/peers.py for the row's notes
    print(json.dumps({"baseline_phases": phases}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
