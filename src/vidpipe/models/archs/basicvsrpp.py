"""BasicVSR++ (Chan et al., CVPR 2022): video super-resolution by second-order grid propagation with
flow-guided deformable alignment. Our own modules, written from the paper and mmagic's
`basicvsr_plusplus_net.py` / `basicvsr_net.py`; no mmcv.

    frames (N, T, 3, H, W) ─ SPyNet ─→ flows between neighbours, both directions (on the low-res frames)
           └─ feat_extract ─→ per-frame features (C channels)
    propagation, four branches in turn: backward_1, forward_1, backward_2, forward_2. Each walks the frames in
    its direction; at each frame it aligns its previous two outputs to the current frame — warped by the flow
    (and by the flow composed over two steps), then refined by a modulated deformable convolution whose
    offsets are the flow plus a learned residue of at most ±`max_residue_magnitude` pixels — and adds a
    residual-block update computed from the current frame's features and every earlier branch's
    reconstruction: all five feature streams → residual blocks → ×2 pixel shuffle ×2 → RGB,
           plus the bilinearly ×4 upsampled input                       → (N, T, 3, 4H, 4W)

The key names are those of the official checkpoints (`basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth`
and the Vimeo-90K BI/BD ones), whose state dict prefixes every key with `generator.` and adds the training
wrapper's `step_counter`: `canonical` strips the prefix and drops what is not the generator's. Hyper-parameters
(channels, residual blocks per branch, deformable groups, low-res or same-size input) come from tensor shapes,
so the NTIRE 2021 models (128 channels, 25 blocks) load as well; the same-size ones (`is_low_res_input=False`:
two stride-2 convolutions in front, output at the input's size) too.

Inputs are RGB in 0..1. SPyNet resizes frames to multiples of 32 itself, so any size runs; it was trained on
frames of at least `MIN_FLOW_SIZE` pixels a side (mmagic refuses smaller ones) and its coarsest level works at
1/32 of the frame: tiles smaller than that give coarser flow, and even with context a tile's flow differs from
the whole frame's (tiling is "discouraged"). Memory grows with T: five feature maps per frame are kept until the
reconstruction, which then runs one frame at a time (the ×4 maps are 16× larger).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..descriptor import Architecture, register_architecture
from .basicvsr import flow_warp, layout
from .deform import Backend, deform_conv2d

ARCH = "basicvsrpp"
#: prefix of the generator's keys in mmagic/mmediting checkpoints (the training wrapper's other keys go)
CHECKPOINT_PREFIX = "generator."
#: the training wrapper's own entries (BasicVSR's fixed-SPyNet iteration counter), never the network's
TRAINING_KEYS = frozenset({"step_counter"})
#: propagation branches, in the order they run; each sees the outputs of those before it
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
#: SPyNet's ImageNet input statistics (buffers `spynet.mean` / `spynet.std` in the checkpoints)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SPyNet levels: the frame and five ×2 average-pooled copies, so flow starts at 1/32 of the frame
SPYNET_LEVELS = 6
#: the smallest low-res frame side mmagic accepts (its assert; trained on 64×64 crops and larger)
MIN_FLOW_SIZE = 64
#: images per call of the batched parts (feature extraction, SPyNet): see `_chunked`
CHUNK = 8
#: clamp on the learned offset residue around the flow, in pixels (Eq. 6 of the paper; 10 in every config)
MAX_RESIDUE_MAGNITUDE = 10.0
LEAKY_SLOPE = 0.1
#: the alignment's deformable convolution: 3×3, padding 1, on [previous output, output two steps back]
DEFORM_KERNEL = 3


# --- SPyNet (Ranjan & Black, CVPR 2017; BasicVSR's variant: six levels, no batch norm) ------------------------


class _Conv(nn.Module):
    """A convolution with an optional ReLU after it (mmcv's ConvModule without a norm: key `conv.*`)."""

    def __init__(self, cin: int, cout: int, kernel: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.relu(y) if self.relu else y


class _FlowLevel(nn.Module):
    """One pyramid level: [reference, warped support, upsampled flow] (8 channels) → flow residue."""

    WIDTHS = (8, 32, 64, 32, 16, 2)
    KERNEL = 7

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTHS
        self.basic_module = nn.Sequential(
            *(_Conv(w[i], w[i + 1], self.KERNEL, relu=i + 2 < len(w)) for i in range(len(w) - 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Optical flow from `ref` to `supp` (N×3×H×W RGB in 0..1): the (dx, dy) that warps `supp` onto `ref`.
    Coarse to fine over a six-level average-pooled pyramid; frames are resized to multiples of 32 and the
    flow scaled back to the frame."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(_FlowLevel() for _ in range(SPYNET_LEVELS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _pyramid(self, img: torch.Tensor) -> list[torch.Tensor]:
        levels = [(img - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2, count_include_pad=False))
        return levels[::-1]  # coarsest first

    def _flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs, supps = self._pyramid(ref), self._pyramid(supp)
        n, _, h, w = refs[0].shape
        flow = ref.new_zeros(n, 2, h, w).contiguous(memory_format=layout(ref))
        for level, (r, s) in enumerate(zip(refs, supps, strict=True)):
            if level:  # ×2 in size, and so in pixels
                flow = 2.0 * F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True)
            warped = flow_warp(s, flow, padding="border")
            flow = flow + self.basic_module[level](torch.cat((r, warped, flow), dim=1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        step = 1 << (SPYNET_LEVELS - 1)
        hu, wu = -(-h // step) * step, -(-w // step) * step
        ref = F.interpolate(ref, size=(hu, wu), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(hu, wu), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        return flow * flow.new_tensor([w / wu, h / hu]).view(1, 2, 1, 1)


# --- BasicVSR++ ------------------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    """conv → ReLU → conv, plus the input (ResidualBlockNoBN, residual scale 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualBlocks(nn.Module):
    """A conv from `cin` to `cout` channels, a leaky ReLU, then `blocks` residual blocks (keys `main.0`,
    `main.2.<i>.conv1/conv2`: mmagic's ResidualBlocksWithInputConv)."""

    def __init__(self, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Sequential(*(_ResidualBlock(cout) for _ in range(blocks))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class _PixelShuffleUp(nn.Module):
    """3×3 conv to 4× the channels, then a ×2 pixel shuffle (key `upsample_conv`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample_conv = nn.Conv2d(cin, cout * 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.upsample_conv(x)
        # CUDA's pixel shuffle returns NCHW whatever it is given: back to the conv's layout, or the next conv
        # (upsample2, conv_hr) converts it itself (the H100 GPU test found both fed NCHW)
        return F.pixel_shuffle(y, 2).contiguous(memory_format=layout(y))


class SecondOrderDeformableAlignment(nn.Module):
    """Aligns [previous output, output two steps back] (2C channels) to the current frame.

    `conv_offset` reads the condition (both outputs pre-warped by their flows, and the current frame's
    features: 3C channels) and the two flows, and gives per deformable group and tap an offset residue
    (bounded by tanh to ±`max_residue`) and a mask (sigmoid). The deformable convolution's offsets are the flow
    (as (dy, dx): the layout's order) plus that residue: the first half of the deformable groups (the previous
    output's channels) around `flow_1`, the second half (two steps back) around `flow_2`."""

    def __init__(self, channels: int, deform_groups: int, max_residue: float = MAX_RESIDUE_MAGNITUDE) -> None:
        super().__init__()
        if deform_groups % 2 or (2 * channels) % deform_groups:
            raise ModelError(f"{deform_groups} deformable groups do not split 2×{channels} channels in halves")
        self.deform_groups = deform_groups
        self.max_residue = max_residue
        taps = DEFORM_KERNEL * DEFORM_KERNEL
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, DEFORM_KERNEL, DEFORM_KERNEL))
        self.bias = nn.Parameter(torch.empty(channels))
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, 1, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(channels, 3 * taps * deform_groups, 3, 1, 1),  # offsets (dy, dx) and a mask per tap
        )
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        nn.init.zeros_(self.bias)

    def forward(
        self,
        x: torch.Tensor,
        condition: torch.Tensor,
        flow_1: torch.Tensor,
        flow_2: torch.Tensor,
        backend: Backend = "auto",
    ) -> torch.Tensor:
        fmt = layout(condition)  # the features' layout throughout (flows come in theirs: small, converted here)
        flows = torch.cat((flow_1, flow_2), dim=1).contiguous(memory_format=fmt)
        out = self.conv_offset(torch.cat((condition, flows), dim=1))
        o1, o2, mask = out.chunk(3, dim=1)
        residue = self.max_residue * torch.tanh(torch.cat((o1, o2), dim=1))
        half = residue.shape[1] // 2  # one (dy, dx) pair per tap and group: half the groups per flow
        offset = residue + torch.cat(
            (flow_1.flip(1).repeat(1, half // 2, 1, 1), flow_2.flip(1).repeat(1, half // 2, 1, 1)), dim=1
        ).contiguous(memory_format=layout(residue))
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            mask=torch.sigmoid(mask),
            padding=DEFORM_KERNEL // 2,
            backend=backend,
        )


class BasicVSRPlusPlus(nn.Module):
    """frames (N, T ≥ 1, 3, H, W) RGB 0..1 → (N, T, 3, sH, sW), s = 4 for low-res input (the VSR models) and 1
    otherwise (H and W then multiples of 4). `deform_backend` picks the deformable convolution's kernel."""

    def __init__(
        self,
        *,
        mid_channels: int = 64,
        num_blocks: int = 7,
        extract_blocks: int = 5,
        reconstruct_blocks: int = 5,
        deform_groups: int = 16,
        low_res_input: bool = True,
        max_residue: float = MAX_RESIDUE_MAGNITUDE,
        deform_backend: Backend = "auto",
    ) -> None:
        super().__init__()
        c = mid_channels
        self.mid_channels = c
        self.low_res_input = low_res_input
        self.deform_backend: Backend = deform_backend
        self.scale = 4 if low_res_input else 1
        #: same-size input is quartered for the flow and by two stride-2 convolutions for the features
        self.size_multiple = 1 if low_res_input else 4
        self.hparams: dict[str, Any] = {
            "mid_channels": c,
            "num_blocks": num_blocks,
            "extract_blocks": extract_blocks,
            "reconstruct_blocks": reconstruct_blocks,
            "deform_groups": deform_groups,
            "low_res_input": low_res_input,
        }
        self.spynet = SPyNet()
        if low_res_input:
            self.feat_extract: nn.Module = ResidualBlocks(3, c, extract_blocks)
        else:
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, c, 3, 2, 1),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.Conv2d(c, c, 3, 2, 1),
                nn.LeakyReLU(LEAKY_SLOPE),
                ResidualBlocks(c, c, extract_blocks),
            )
        self.deform_align = nn.ModuleDict(
            {b: SecondOrderDeformableAlignment(c, deform_groups, max_residue) for b in BRANCHES}
        )
        self.backbone = nn.ModuleDict({b: ResidualBlocks((2 + i) * c, c, num_blocks) for i, b in enumerate(BRANCHES)})
        self.reconstruction = ResidualBlocks(5 * c, c, reconstruct_blocks)
        self.upsample1 = _PixelShuffleUp(c, c)
        self.upsample2 = _PixelShuffleUp(c, 64)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)

    def _flows(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(to_next, to_previous), each N×(T−1)×2×h×w: flow i goes from frame i to i+1, resp. from i+1 to i."""
        n, t, c, h, w = lr.shape
        if t == 1:  # a single frame: nothing to align, the branches run without flows
            none = lr.new_zeros(n, 0, 2, h, w)
            return none, none
        fmt = layout(lr[:, 0])  # the frames' layout (a 5-D slice of channels-last frames keeps their strides)
        earlier = lr[:, :-1].reshape(-1, c, h, w).contiguous(memory_format=fmt)
        later = lr[:, 1:].reshape(-1, c, h, w).contiguous(memory_format=fmt)
        to_next = _chunked(self.spynet, earlier, later).view(n, t - 1, 2, h, w)
        to_previous = _chunked(self.spynet, later, earlier).view(n, t - 1, 2, h, w)
        return to_next, to_previous

    def _propagate(
        self, feats: dict[str, list[torch.Tensor]], branch: str, flows: torch.Tensor, stop: int | None = None
    ) -> None:
        """Run `branch` over the frames and store its output per frame, in frame order, as `feats[branch]`.
        `flows` point from each frame to the one the walk visited just before it: to_next (flow j: frame j →
        j+1) for a backward walk, to_previous (flow j: frame j+1 → j) for a forward one. A forward walk ends
        before frame `stop` when given (the last branch: no later one reads its outputs past the last frame
        reconstructed)."""
        t = len(feats["spatial"])
        backward = branch.startswith("backward")
        order = range(t - 1, -1, -1) if backward else range(t if stop is None else stop)
        earlier = [k for k in feats if k not in ("spatial", branch)]
        align, update = self.deform_align[branch], self.backbone[branch]
        outputs: list[torch.Tensor] = []
        prop = torch.zeros_like(feats["spatial"][0])  # in the features' layout (channels-last nets: all of it)
        for step, frame in enumerate(order):
            current = feats["spatial"][frame]
            if step:
                # flow from this frame to the one processed just before it (its neighbour in the walk)
                flow_1 = flows[:, frame] if backward else flows[:, frame - 1]
                cond_1 = flow_warp(prop, flow_1)
                if step > 1:
                    before = outputs[-2]
                    flow_prev = flows[:, frame + 1] if backward else flows[:, frame - 2]
                    flow_2 = flow_1 + flow_warp(flow_prev, flow_1)  # composed: this frame → two steps back
                    cond_2 = flow_warp(before, flow_2)
                else:
                    before, flow_2, cond_2 = torch.zeros_like(prop), torch.zeros_like(flow_1), torch.zeros_like(prop)
                prop = align(
                    torch.cat((prop, before), dim=1),
                    torch.cat((cond_1, current, cond_2), dim=1),
                    flow_1,
                    flow_2,
                    backend=self.deform_backend,
                )
            stacked = torch.cat([current, *(feats[k][frame] for k in earlier), prop], dim=1)
            prop = prop + update(stacked)
            outputs.append(prop)
        feats[branch] = outputs[::-1] if backward else outputs

    def forward(self, frames: torch.Tensor, outputs: tuple[int, int] | None = None) -> torch.Tensor:
        """`outputs` (a, b): reconstruct frames a..b−1 only (N×(b−a)×3×sH×sW), each from the whole sequence's
        propagation: the same values as those frames of the full output, without the ×4 reconstruction of the
        others (a window's context frames)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ModelError(f"BasicVSR++ takes N×T×3×H×W frames, got {tuple(frames.shape)}")
        n, t, c, h, w = frames.shape
        a, b = (0, t) if outputs is None else outputs
        if not 0 <= a < b <= t:
            raise ModelError(f"BasicVSR++: outputs {a}..{b} asked for from {t} frames")
        if h % self.size_multiple or w % self.size_multiple:
            raise ModelError(f"this BasicVSR++ takes H and W in multiples of {self.size_multiple}, got {h}×{w}")
        flat = frames.reshape(n * t, c, h, w)
        if self.low_res_input:
            lr = frames
        else:
            lr = F.interpolate(flat, scale_factor=0.25, mode="bicubic").view(n, t, c, h // 4, w // 4)
        spatial = _chunked(self.feat_extract, flat)
        spatial = spatial.view(n, t, *spatial.shape[1:]).unbind(1)
        feats: dict[str, list[torch.Tensor]] = {"spatial": list(spatial)}
        to_next, to_previous = self._flows(lr)
        for branch in BRANCHES:
            flows = to_next if branch.startswith("backward") else to_previous
            self._propagate(feats, branch, flows, b if branch == BRANCHES[-1] else None)
        return torch.stack([self._reconstruct(frames[:, i], feats, i) for i in range(a, b)], dim=1)

    def _reconstruct(self, frame: torch.Tensor, feats: dict[str, list[torch.Tensor]], i: int) -> torch.Tensor:
        hr = self.reconstruction(torch.cat([feats["spatial"][i], *(feats[b][i] for b in BRANCHES)], dim=1))
        hr = F.leaky_relu(self.upsample1(hr), LEAKY_SLOPE)
        hr = F.leaky_relu(self.upsample2(hr), LEAKY_SLOPE)
        hr = self.conv_last(F.leaky_relu(self.conv_hr(hr), LEAKY_SLOPE))
        if self.low_res_input:
            return hr + F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)
        return hr + frame


def _chunked(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """`module(*inputs)` over the batch dimension in chunks of `CHUNK` images, the last one padded with copies
    of its last image (their outputs dropped): the same outputs per image, in shapes that do not change with
    the window's length, so cuDNN's autotuning (`benchmark`) runs once per run, not again for each window of a
    new length (the first and last windows of a video, OOM retries); and the temporaries of one chunk at a
    time (SPyNet's 64-channel 7×7 layers over 95 pairs of 1024×448 frames: 5.6 GB a layer in fp16)."""
    n = inputs[0].shape[0]
    outs = []
    for a in range(0, n, CHUNK):
        part = [x[a : a + CHUNK] for x in inputs]
        short = CHUNK - part[0].shape[0]
        if short and n > CHUNK:
            fmt = layout(part[0])
            part = [torch.cat([x, x[-1:].expand(short, *x.shape[1:])]).contiguous(memory_format=fmt) for x in part]
        outs.append(module(*part)[: CHUNK - short])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# --- the registered architecture ------------------------------------------------------------------------


def canonical_basicvsrpp(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our layout: a checkpoint's `generator.` keys without the prefix (the training wrapper's other entries
    dropped), and never the wrapper's `step_counter`, even in a state dict stripped by hand."""
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state):
        state = {k.removeprefix(CHECKPOINT_PREFIX): v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    return {k: v for k, v in state.items() if k not in TRAINING_KEYS}


def looks_like_basicvsrpp(state: Mapping[str, torch.Tensor]) -> bool:
    keys = canonical_basicvsrpp(state)
    return (
        "deform_align.backward_1.conv_offset.0.weight" in keys
        and "spynet.basic_module.0.basic_module.0.conv.weight" in keys
    )


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Residual blocks under `prefix` (`<prefix>.<i>.conv1.weight` for i = 0, 1, …)."""
    n = 0
    while f"{prefix}.{n}.conv1.weight" in state:
        n += 1
    return n


def build_basicvsrpp(state: Mapping[str, torch.Tensor]) -> BasicVSRPlusPlus:
    """An untrained BasicVSR++ shaped like `state` (our layout): channels, blocks and deformable groups from
    tensor shapes, low-res or same-size input from the feature extractor's keys."""
    low_res = "feat_extract.main.0.weight" in state
    extract = "feat_extract.main" if low_res else "feat_extract.4.main"
    if f"{extract}.0.weight" not in state:
        raise ModelError("BasicVSR++ weights without a feature extractor (feat_extract.main or feat_extract.4.main)")
    mid = int(state[f"{extract}.0.weight"].shape[0])
    offsets = int(state["deform_align.backward_1.conv_offset.6.weight"].shape[0])
    taps = DEFORM_KERNEL * DEFORM_KERNEL
    if offsets % (3 * taps):
        raise ModelError(f"BasicVSR++ conv_offset gives {offsets} channels, not 3 × {taps} × deformable groups")
    return BasicVSRPlusPlus(
        mid_channels=mid,
        num_blocks=_count(state, "backbone.backward_1.main.2"),
        extract_blocks=_count(state, f"{extract}.2"),
        reconstruct_blocks=_count(state, "reconstruction.main.2"),
        deform_groups=offsets // (3 * taps),
        low_res_input=low_res,
    )


#: SPyNet's coarse levels see motion across the whole frame (its 1/32 level's receptive field spans ~1000
#: pixels), so a tile's flow differs from the frame's: tiling is discouraged. fp16/bf16 run (warps and
#: deformable sampling positions are kept in fp32); their effect on quality is for the vsr stage to measure
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="vsr",
        detect=looks_like_basicvsrpp,
        build=build_basicvsrpp,
        canonical=canonical_basicvsrpp,
        tiling="discouraged",
        description="BasicVSR++: SPyNet flow, second-order grid propagation, flow-guided deformable alignment, ×4",
    )
)
