"""Small stages and fakes for the scheduler tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from vidpipe.frames import FrameBatch, from_float, to_float
from vidpipe.stages.base import Stage, StreamSpec


def spec(width: int, height: int) -> StreamSpec:
    return StreamSpec(width=width, height=height, time_base=Fraction(1, 90000), nominal_rate=Fraction(30))


def frames(n: int, width: int = 32, height: int = 24, *, start: int = 0, seed: int = 0) -> FrameBatch:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n, 3, height, width), generator=g, dtype=torch.uint8)
    idx = list(range(start, start + n))
    return FrameBatch(data=data, pts=[3000 * i for i in idx], time_base=Fraction(1, 90000), index=idx)


class ConvStage(Stage):
    """A frame-independent stage with a small seeded conv net: a stand-in for an SR model."""

    name = "testconv"
    context = 0
    unit = "frame"

    def __init__(self, dtype: torch.dtype = torch.float32, channels: int = 8, seed: int = 0) -> None:
        self.dtype, self.channels, self.seed = dtype, channels, seed
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(channels, 3, 3, padding=1)
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.device = torch.device("cpu")
        self.calls = 0

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        self.net = self.net.to(device=device, dtype=self.dtype).eval()
        return spec

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.calls += 1
        y = self.net(to_float(batch, self.dtype)[:, :3])
        return batch.with_data(from_float(y, batch.data.dtype))

    def flush(self) -> None:
        return None

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "channels": self.channels, "seed": self.seed, "dtype": str(self.dtype)}


def tiny_sr(path: Path, *, seed: int = 0, scale: int = 2) -> Path:
    """A small SRVGGNetCompact (8 features, 2 convolutions) with seeded random weights, saved in the official key
    layout as safetensors: a real upscale model that runs in milliseconds on a CPU."""
    from vidpipe.models.archs.srvgg import ARCH, SRVGGNetCompact
    from vidpipe.models.loading import META_ARCH, save_safetensors

    net = SRVGGNetCompact(num_feat=8, num_conv=2, scale=scale)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in net.state_dict().items()}
    return save_safetensors(state, path, {META_ARCH: ARCH})


#: the checklist fields of seed 001 §1 every cost row carries
SEED_FIELDS = {
    "component",
    "unit",
    "input_bucket",
    "runtime",
    "model_signature",
    "dtype",
    "gpu_memory_per_task_mb",
    "cpu_rss_peak_mb",
    "latency_ms_per_unit",
    "max_batch_size_component",
    "cross_video_batching",
    "provenance",
}
