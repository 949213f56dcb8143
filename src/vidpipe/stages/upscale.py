"""`upscale`: a super-resolution model (Real-ESRGAN family or any registered/imported SR weights) over every frame.

- Model by registry name, cache name or weights path; loaded once in `setup` on the stage's device.
- fp16 on CUDA by default (bf16/fp32 on request), fp32 on the CPU; channels-last memory.
- Frames are padded (edge pixels repeated) to the model's size multiple and cropped back.
- Tiling: `tile=0` runs whole frames; `tile=N` uses N×N tiles; `tile=None` ("auto") leaves the tile to the
  scheduler (`tiling()` offers it, `set_tile` sets it; schedule/chain.py sizes it from the cost row and steps it
  down on out-of-memory), and runs whole frames until it is set: a stage used outside the scheduler runs whole
  frames or its given tile, and an out-of-memory error propagates. The stage never sizes a tile itself. Each tile
  is read with `overlap` pixels of extra context per side and blended into its neighbours with linear weights
  over an `overlap`-wide band, so no seam shows.
- `outscale` resizes after the model (as Real-ESRGAN's own script does) when it differs from the model scale.
- 8-bit frames come back as uint8, deeper ones as uint16: the model works in float either way.
- Interrupts (`stages.interrupt`): a run's stop check is called between tiles and, on the CPU, before every layer
  of the network, where frames also go one at a time; so the work between two checks is one layer of one tile
  of one frame. On the CPU `tile` bounds that work: x4plus's last layers run at 4× the tile's side.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ModelError, UsageError
from ..frames import FrameBatch, from_float, to_float
from ..models.graphs import Graphed
from ..models.loading import LoadedModel, load_model_info
from .base import Stage, StreamSpec, check_dtype, resolve_dtype
from .interrupt import StopCheck, layer_checks, never

log = logging.getLogger(__name__)

#: below this tile side the model sees too little context to be worth running; OOM there is final
MIN_TILE = 64
#: overlap of 16 px keeps tiled output within 1/255 of untiled for the Real-ESRGAN nets (tested)
DEFAULT_OVERLAP = 16
#: how the model runs: PyTorch's own kernels (optionally `--compile`d), or ours (`models.fused`, Triton)
KERNELS = ("torch", "fused")


def _spans(n: int, tile: int) -> list[tuple[int, int]]:
    """Core spans partitioning [0, n) into pieces of at most `tile`."""
    count = max(1, math.ceil(n / tile))
    edges = [round(i * n / count) for i in range(count + 1)]
    return list(itertools.pairwise(edges))


def _ramp(length: int, start: int, end: int, lo: int, hi: int, band: int) -> torch.Tensor:
    """Blend weights along one axis for a tile kept over [lo, hi) whose core is [start, end) of [0, length):
    1 inside the core, falling linearly to 0 across a `band`-wide band centred on each inner core edge."""
    x = torch.arange(lo, hi, dtype=torch.float32) + 0.5
    w = torch.ones(hi - lo)
    if band > 0 and start > 0:
        w = torch.minimum(w, ((x - (start - band / 2)) / band).clamp(0, 1))
    if band > 0 and end < length:
        w = torch.minimum(w, (((end + band / 2) - x) / band).clamp(0, 1))
    return w


class Upscale(Stage):
    name = "upscale"
    context = 0
    unit = "frame"

    def __init__(
        self,
        model: str | Path,
        *,
        outscale: float | None = None,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        dtype: str = "auto",
        compile: bool = False,
        kernels: str = "torch",
    ) -> None:
        check_dtype(dtype)
        if kernels not in KERNELS:
            raise UsageError(f"invalid kernels {kernels!r}; valid: {', '.join(KERNELS)}")
        if kernels == "fused" and compile:
            raise UsageError("--compile applies to the torch kernels; --kernels fused is compiled already")
        if tile is not None and tile != 0 and tile < MIN_TILE:
            raise UsageError(f"tile must be 0 (whole frames), auto, or ≥ {MIN_TILE}; got {tile}")
        if overlap < 0:
            raise UsageError(f"overlap must be ≥ 0, got {overlap}")
        if outscale is not None and outscale <= 0:
            raise UsageError(f"outscale must be > 0, got {outscale}")
        self.model_ref, self.outscale, self.overlap = model, outscale, overlap
        self.tile_request = tile  # None: auto (the scheduler sets it); `tile` is what runs
        self.tile = tile or 0
        self.dtype_request = dtype  # what was asked (may be auto); dtype_name is what setup resolved it to
        self.dtype_name = dtype
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.loaded: LoadedModel | None = None
        self.compile = compile
        self.kernels = kernels
        self._net: Any = None
        self._loaded_on: tuple[torch.device, torch.dtype] | None = None
        self.out_size = (0, 0)
        #: the run's stop request (`set_stop_check`); `never` for a stage used on its own
        self.stop_check: StopCheck = never

    # -- setup --
    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        self.dtype_name, self.dtype = resolve_dtype(self.dtype_request, device)
        # once per device and dtype: a stage set up again for another input size (or copied per video by the
        # multi-input runner) keeps one copy of the weights
        if self.loaded is None or self._loaded_on != (device, self.dtype):
            self.loaded = load_model_info(self.model_ref, device, self.dtype, task="upscale")
            self.loaded.module.to(memory_format=torch.channels_last)
            self._loaded_on = (device, self.dtype)
            self._net = self.loaded.module
            if self.kernels == "fused":
                self._net = self._fused(device)
            elif self.compile:
                # fuses the activations and residual adds into the convolutions (2× on an H100,
                # docs/benchmarks.md); compiled once per piece shape, so whole frames or fixed tiles compile once
                self._net = torch.compile(self.loaded.module, mode="max-autotune-no-cudagraphs", dynamic=False)
        scale = self.outscale or self.loaded.scale
        self.out_size = (round(spec.width * scale), round(spec.height * scale))
        crop = spec.crop_to
        if crop is not None:
            crop = (round(crop[0] * scale), round(crop[1] * scale))
        log.info(
            "upscale: %s ×%d%s on %s in %s, %s",
            Path(str(self.model_ref)).name,
            self.loaded.scale,
            f" → outscale {scale:g}" if self.outscale else "",
            device,
            self.dtype_name,
            "tiles: auto (the scheduler's)"
            if self.tile_request is None
            else "whole frames"
            if not self.tile
            else f"tiles of {self.tile}px (overlap {self.overlap})",
        )
        return spec.but(width=self.out_size[0], height=self.out_size[1], crop_to=crop)

    def _fused(self, device: torch.device) -> Any:
        """The model through our Triton kernels (`models.fused`): CUDA, fp16/bf16, SRVGGNetCompact or RRDBNet;
        replayed from a CUDA graph per piece shape (`models.graphs`: x4plus launches ~560 kernels a frame)."""
        from ..models import fused

        assert self.loaded is not None
        if not fused.available(device) or self.dtype == torch.float32:
            raise UsageError(
                f"--kernels fused needs a CUDA device with Triton and fp16/bf16; got {device} in {self.dtype_name}"
            )
        try:
            return Graphed(fused.fuse(self.loaded.module, self.dtype))
        except ModelError as e:
            raise UsageError(f"--kernels fused: {e}") from e

    # -- frames --
    def process(self, batch: FrameBatch) -> FrameBatch:
        x = to_float(batch, self.dtype).to(self.device, non_blocking=True)
        alpha = x[:, 3:] if batch.alpha else None
        y = self._run(x[:, :3].contiguous(memory_format=torch.channels_last))
        if alpha is not None:  # the model knows RGB only: alpha follows the picture with a smooth resize
            a = F.interpolate(alpha.float(), size=y.shape[-2:], mode="bicubic", align_corners=False)
            y = torch.cat([y, a.to(y.dtype)], dim=1)
        w, h = self.out_size
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return batch.with_data(from_float(y, batch.data.dtype).contiguous(memory_format=torch.channels_last))

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        """Model on one piece: pad to the size multiple (edges repeated), run, crop back."""
        assert self.loaded is not None
        self.stop_check()
        m, scale = self.loaded.size_multiple, self.loaded.scale
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if self.device.type != "cpu":
            y = self._net(x)
        else:
            # A frame at a time, layer by layer (eager nets; see stages.interrupt): each layer runs to completion
            # on the CPU, so one over the whole batch would be the work between two stop checks. The CPU is as
            # busy with one frame, and the results are the same bits.
            eager = self._net is self.loaded.module
            with layer_checks(self._net, self.stop_check if eager else never):
                y = torch.cat([self._net(x[i : i + 1]) for i in range(len(x))])
        return y[..., : h * scale, : w * scale]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        tile = self.tile
        n, _c, h, w = x.shape
        if not tile or (h <= tile and w <= tile):
            return self._model(x)
        assert self.loaded is not None
        s, ov = self.loaded.scale, self.overlap
        half = ov // 2
        out = torch.zeros(n, 3, h * s, w * s, device=x.device, dtype=torch.float32)
        weight = torch.zeros(1, 1, h * s, w * s, device=x.device, dtype=torch.float32)
        for y0, y1 in _spans(h, tile):
            for x0, x1 in _spans(w, tile):
                # kept region: core ± half the overlap; model input: kept region ± the other half as context
                ky0, ky1, kx0, kx1 = max(0, y0 - half), min(h, y1 + half), max(0, x0 - half), min(w, x1 + half)
                iy0, iy1, ix0, ix1 = max(0, ky0 - half), min(h, ky1 + half), max(0, kx0 - half), min(w, kx1 + half)
                piece = self._model(x[:, :, iy0:iy1, ix0:ix1].contiguous(memory_format=torch.channels_last))
                piece = piece[:, :, (ky0 - iy0) * s : (ky1 - iy0) * s, (kx0 - ix0) * s : (kx1 - ix0) * s]
                wy = _ramp(h * s, y0 * s, y1 * s, ky0 * s, ky1 * s, ov * s).to(x.device)
                wx = _ramp(w * s, x0 * s, x1 * s, kx0 * s, kx1 * s, ov * s).to(x.device)
                wt = (wy[:, None] * wx[None, :])[None, None]
                out[:, :, ky0 * s : ky1 * s, kx0 * s : kx1 * s] += piece.float() * wt
                weight[:, :, ky0 * s : ky1 * s, kx0 * s : kx1 * s] += wt
        return (out / weight).to(x.dtype)

    def flush(self) -> None:
        return None

    def set_stop_check(self, check: StopCheck) -> None:
        """The run's stop request, called between tiles and frames and, on the CPU, layers (`stages.interrupt`)."""
        self.stop_check = check

    def signature(self) -> dict[str, Any]:
        """Parameters as requested: an automatic tile is "auto", whatever size this device and input got (tiled
        output stays within 1/255 of untiled, tested), so runs on different GPUs share one signature; the tile
        used is in the manifest's schedule block."""
        assert self.loaded is not None, "signature() after setup()"
        return {
            "stage": self.name,
            "model": str(self.model_ref),
            "model_signature": self.loaded.signature,
            "arch": self.loaded.arch,
            "scale": self.loaded.scale,
            "outscale": self.outscale,
            "dtype": self.dtype_name,
            "tile": "auto" if self.tile_request is None else self.tile,
            "overlap": self.overlap,
        }

    # -- scheduler hooks (vidpipe.schedule.chain) --
    def cost_signature(self) -> dict[str, Any]:
        """What a cost row of this stage is keyed by: rows hold whole-frame costs, the tile is derived from them."""
        return {k: v for k, v in self.signature().items() if k != "tile"}

    def tiling(self) -> tuple[int, int, int] | None:
        """(size multiple, overlap, smallest tile) when the tile is automatic and the model's descriptor says tiles
        give the whole frame's result (its tiling advice), so the scheduler's to choose."""
        if self.tile_request is not None or self.loaded is None or self.loaded.descriptor.tiling != "supported":
            return None
        return max(8, self.loaded.size_multiple), self.overlap, MIN_TILE

    def set_tile(self, tile: int) -> None:
        """Run `tile`-pixel tiles (0: whole frames) from the next batch on."""
        if tile != 0 and tile < MIN_TILE:
            raise UsageError(f"tile must be 0 (whole frames) or ≥ {MIN_TILE}; got {tile}")
        if tile != self.tile and isinstance(self._net, Graphed):
            self._net.release()  # each captured graph holds a forward pass's memory for a shape no longer run
        self.tile = tile
