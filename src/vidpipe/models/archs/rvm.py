"""Robust Video Matting (RVM, Lin et al., WACV 2022): a recurrent human matting network, our own modules.

    src ─(bilinear ×downsample_ratio)→ backbone → f1 (1/2) f2 (1/4) f3 (1/8) f4 (1/16)
    f4 → LR-ASPP → decode4 (ConvGRU on half the channels) → decode3/2/1 (×2 up, skip + pooled image, conv,
    ConvGRU) → decode0 (×2 up, image, two convs) → project_mat (fgr residual + alpha)
    → Deep Guided Filter refiner back to full resolution (only when downsample_ratio ≠ 1) → fgr, pha

Each ConvGRU keeps a recurrent state (r1 … r4) that the caller carries from frame to frame: `forward` takes the
previous states and returns the new ones. Inputs are (B, 3, H, W) frames or (B, T, 3, H, W) sequences: every
convolution runs over all B·T frames at once and only the ConvGRUs step through time.

Two backbones, as released: MobileNetV3-Large (ImageNet-normalised input, the last stage dilated instead of
strided, so f4 is 1/16) and ResNet-50 (unnormalised input, layer4 dilated). The key names are those of the
official checkpoints `rvm_mobilenetv3.pth` / `rvm_resnet50.pth`, whose backbones are torchvision's
MobileNetV3 (`features.N.block.M…`) and ResNet (`layerN.M.convK`, `bnK`, `downsample`); torchvision is not used.
The optional segmentation head (`project_seg`, used in training) is built only when the weights have it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..descriptor import Architecture, register_architecture

ARCH = "rvm"
Backbone = Literal["mobilenetv3", "resnet50"]
BACKBONES: tuple[Backbone, ...] = ("mobilenetv3", "resnet50")

#: ImageNet statistics the MobileNetV3 backbone normalises its input with (the ResNet-50 one does not)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's MobileNetV3 batch norms use eps 1e-3; everything else in RVM uses PyTorch's default 1e-5
MOBILENET_BN_EPS = 1e-3
BN_EPS = 1e-5
#: the refiner's box filter starts as a 3×3 mean (it is a learned weight in the checkpoints)
BOX_FILTER_SIZE = 3
#: recurrent state channels (r1 … r4) per backbone: half of each decoder stage's output
STATE_CHANNELS: dict[Backbone, tuple[int, int, int, int]] = {
    "mobilenetv3": (16, 20, 40, 64),
    "resnet50": (16, 32, 64, 128),
}


def conv_bn(
    cin: int,
    cout: int,
    kernel: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
    eps: float = BN_EPS,
) -> nn.Sequential:
    """Convolution (no bias) → batch norm → activation, as a Sequential: keys `.0.weight`, `.1.*`."""
    pad = (kernel - 1) // 2 * dilation
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- MobileNetV3-Large ------------------------------------------------------------------------------------


def _divisible8(v: float) -> int:
    """The SE squeeze width: `v` rounded to a multiple of 8, never more than 10% below it (the MobileNet rule)."""
    out = max(8, int(v + 4) // 8 * 8)
    return out + 8 if out < 0.9 * v else out


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = _divisible8(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))
        return x * F.hardsigmoid(self.fc2(s))


@dataclass(frozen=True, slots=True)
class _Stage:
    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hardswish: bool
    stride: int
    dilation: int


#: MobileNetV3-Large's bneck table (Howard et al. 2019, table 1) with RVM's change: the last stage (index 12 on)
#: keeps stride 1 and dilates by 2, so the deepest feature stays at 1/16
_MOBILENET_LARGE = tuple(
    _Stage(*row)
    for row in (
        (16, 3, 16, 16, False, False, 1, 1),
        (16, 3, 64, 24, False, False, 2, 1),
        (24, 3, 72, 24, False, False, 1, 1),
        (24, 5, 72, 40, True, False, 2, 1),
        (40, 5, 120, 40, True, False, 1, 1),
        (40, 5, 120, 40, True, False, 1, 1),
        (40, 3, 240, 80, False, True, 2, 1),
        (80, 3, 200, 80, False, True, 1, 1),
        (80, 3, 184, 80, False, True, 1, 1),
        (80, 3, 184, 80, False, True, 1, 1),
        (80, 3, 480, 112, True, True, 1, 1),
        (112, 3, 672, 112, True, True, 1, 1),
        (112, 5, 672, 160, True, True, 2, 2),
        (160, 5, 960, 160, True, True, 1, 2),
        (160, 5, 960, 160, True, True, 1, 2),
    )
)
#: `features` indices whose outputs are f1 … f4
_MOBILENET_TAPS = (1, 3, 6, 16)


class InvertedResidual(nn.Module):
    """Expand (1×1, skipped when the width does not change) → depthwise → [squeeze-excite] → project (1×1)."""

    def __init__(self, s: _Stage) -> None:
        super().__init__()
        act = nn.Hardswish if s.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if s.expanded != s.cin:
            layers.append(conv_bn(s.cin, s.expanded, 1, act=act, eps=MOBILENET_BN_EPS))
        stride = 1 if s.dilation > 1 else s.stride  # a dilated stage replaces its stride
        layers.append(
            conv_bn(
                s.expanded,
                s.expanded,
                s.kernel,
                stride=stride,
                dilation=s.dilation,
                groups=s.expanded,
                act=act,
                eps=MOBILENET_BN_EPS,
            )
        )
        if s.se:
            layers.append(SqueezeExcite(s.expanded))
        layers.append(conv_bn(s.expanded, s.cout, 1, act=None, eps=MOBILENET_BN_EPS))
        self.block = nn.Sequential(*layers)
        # the table's stride decides, as in torchvision: the dilated first block of the last stage has none
        self.residual = s.stride == 1 and s.cin == s.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MobileNetV3Encoder(nn.Module):
    channels = (16, 24, 40, 960)

    def __init__(self) -> None:
        super().__init__()
        stem = conv_bn(3, 16, 3, stride=2, act=nn.Hardswish, eps=MOBILENET_BN_EPS)
        last = conv_bn(160, 960, 1, act=nn.Hardswish, eps=MOBILENET_BN_EPS)
        self.features = nn.Sequential(stem, *(InvertedResidual(s) for s in _MOBILENET_LARGE), last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # constants made here, not buffers: the loader builds modules on the meta device and assigns only
        # the checkpoint's tensors
        x = (x - x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _MOBILENET_TAPS:
                taps.append(x)
        return taps


# --- ResNet-50 --------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3×3 convolution."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int, downsample: bool) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Encoder(nn.Module):
    channels = (64, 256, 512, 2048)
    #: (blocks, width, stride) of layer1 … layer4; layer4 trades its stride for dilation 2 (f4 stays at 1/16)
    _LAYERS = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, dilation = 64, 1
        for i, (blocks, width, stride) in enumerate(self._LAYERS, start=1):
            first_dilation = dilation
            if i == 4:  # torchvision's replace_stride_with_dilation=[False, False, True]
                dilation, stride = dilation * stride, 1
            cout = width * Bottleneck.expansion
            layer = [Bottleneck(cin, width, stride, first_dilation, downsample=stride != 1 or cin != cout)]
            layer += [Bottleneck(cout, width, 1, dilation, downsample=False) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = F.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(F.max_pool2d(f1, 3, 2, 1))
        f3 = self.layer2(f2)
        return [f1, f2, f3, self.layer4(self.layer3(f3))]


# --- LR-ASPP, recurrent decoder, heads, refiner -----------------------------------------------------------


class LRASPP(nn.Module):
    """Lite R-ASPP: a 1×1 conv branch gated by a sigmoid of the globally pooled input."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.aspp1 = conv_bn(cin, cout, 1)
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp1(x) * self.aspp2(x)


class ConvGRU(nn.Module):
    """A convolutional GRU over (B·T, C, H, W) inputs stepped through `time` frames; h is (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor, h: torch.Tensor | None, time: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs = x.unflatten(0, (-1, time))
        b, _, c, hh, ww = xs.shape
        # no state yet: zeros; the ONNX export starts from a 1×1×1×1 zero that it broadcasts the same way
        state = x.new_zeros(b, c, hh, ww) if h is None else h.expand(b, c, hh, ww)
        out = []
        for t in range(time):
            xt = xs[:, t]
            r, z = self.ih(torch.cat([xt, state], 1)).split(self.channels, 1)
            cand = self.hh(torch.cat([xt, r * state], 1))
            state = (1 - z) * state + z * cand
            out.append(state)
        return torch.stack(out, 1).flatten(0, 1), state


def _half_gru(x: torch.Tensor, gru: ConvGRU, h: torch.Tensor | None, time: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrent half: the second half of the channels goes through the GRU, the first half passes."""
    a, b = x.split(gru.channels, 1)
    b, h = gru(b, h, time)
    return torch.cat([a, b], 1), h


def _up2_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """×2 bilinear (half-pixel) upsampling cropped to `like`'s size (odd sizes round up on the way down)."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, : like.shape[2], : like.shape[3]]


class BottleneckBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None, time: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _half_gru(x, self.gru, h, time)


class UpsamplingBlock(nn.Module):
    def __init__(self, cin: int, skip: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn(cin + skip + src, cout, 3)
        self.gru = ConvGRU(cout // 2)

    def forward(
        self, x: torch.Tensor, f: torch.Tensor, s: torch.Tensor, h: torch.Tensor | None, time: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(torch.cat([_up2_like(x, s), f, s], 1))
        return _half_gru(x, self.gru, h, time)


class OutputBlock(nn.Module):
    def __init__(self, cin: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*conv_bn(cin + src, cout, 3), *conv_bn(cout, cout, 3))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([_up2_like(x, s), s], 1))


class RecurrentDecoder(nn.Module):
    def __init__(self, features: Sequence[int], widths: Sequence[int]) -> None:
        super().__init__()
        self.decode4 = BottleneckBlock(features[3])
        self.decode3 = UpsamplingBlock(features[3], features[2], 3, widths[0])
        self.decode2 = UpsamplingBlock(widths[0], features[1], 3, widths[1])
        self.decode1 = UpsamplingBlock(widths[1], features[0], 3, widths[2])
        self.decode0 = OutputBlock(widths[2], 3, widths[3])

    def forward(
        self, s0: torch.Tensor, f: Sequence[torch.Tensor], r: Sequence[torch.Tensor | None], time: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # the image at 1/2, 1/4, 1/8 (ceil: odd sizes keep their last row and column)
        s1 = F.avg_pool2d(s0, 2, 2, count_include_pad=False, ceil_mode=True)
        s2 = F.avg_pool2d(s1, 2, 2, count_include_pad=False, ceil_mode=True)
        s3 = F.avg_pool2d(s2, 2, 2, count_include_pad=False, ceil_mode=True)
        x4, r4 = self.decode4(f[3], r[3], time)
        x3, r3 = self.decode3(x4, f[2], s3, r[2], time)
        x2, r2 = self.decode2(x3, f[1], s2, r[1], time)
        x1, r1 = self.decode1(x2, f[0], s1, r[0], time)
        return self.decode0(x1, s0), [r1, r2, r3, r4]


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DeepGuidedFilterRefiner(nn.Module):
    """Deep Guided Filter (Wu et al. 2018): a local linear model y ≈ A·x + b fitted at low resolution (x: the
    image and its grey mean, y: fgr residual and alpha), A predicted by 1×1 convs from the statistics and the
    decoder's hidden features, then A and b upsampled and applied to the full-resolution image."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, BOX_FILTER_SIZE, padding=BOX_FILTER_SIZE // 2, bias=False, groups=4)
        nn.init.constant_(self.box_filter.weight, 1.0 / BOX_FILTER_SIZE**2)
        self.conv = nn.Sequential(
            *conv_bn(4 * 2 + hidden, hidden, 1), *conv_bn(hidden, hidden, 1), nn.Conv2d(hidden, 4, 1)
        )

    def forward(
        self, fine: torch.Tensor, base: torch.Tensor, fgr: torch.Tensor, pha: torch.Tensor, hid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fine_x = torch.cat([fine, fine.mean(1, keepdim=True)], 1)
        base_x = torch.cat([base, base.mean(1, keepdim=True)], 1)
        base_y = torch.cat([fgr, pha], 1)
        mean_x, mean_y = self.box_filter(base_x), self.box_filter(base_y)
        cov_xy = self.box_filter(base_x * base_y) - mean_x * mean_y
        var_x = self.box_filter(base_x * base_x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, hid], 1))
        b = mean_y - a * mean_x
        size = fine.shape[2:]
        a = F.interpolate(a, size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size, mode="bilinear", align_corners=False)
        return (a * fine_x + b).split([3, 1], 1)


# --- the network ------------------------------------------------------------------------------------------

#: (ASPP out, decoder widths) per backbone, from the official MattingNetwork
_HEADS: dict[Backbone, tuple[int, tuple[int, int, int, int]]] = {
    "mobilenetv3": (128, (80, 40, 32, 16)),
    "resnet50": (256, (128, 64, 32, 16)),
}

State = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


class MattingNetwork(nn.Module):
    """RVM. `forward(src, r1, r2, r3, r4, downsample_ratio)` → (fgr, pha, r1, r2, r3, r4), as the official
    model: `src` in 0..1 RGB, (B, 3, H, W) or (B, T, 3, H, W); states None at the first frame."""

    def __init__(self, backbone: Backbone = "mobilenetv3", *, segmentation_head: bool = False) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ModelError(f"unknown RVM backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        self.variant: Backbone = backbone
        self.backbone: nn.Module = MobileNetV3Encoder() if backbone == "mobilenetv3" else ResNet50Encoder()
        feats = self.backbone.channels
        aspp, widths = _HEADS[backbone]
        self.aspp = LRASPP(feats[3], aspp)
        self.decoder = RecurrentDecoder((*feats[:3], aspp), widths)
        self.project_mat = Projection(widths[3], 4)
        self.project_seg = Projection(widths[3], 1) if segmentation_head else None
        self.refiner = DeepGuidedFilterRefiner(widths[3])
        self.scale = 1
        self.size_multiple = 1
        self.state_channels = STATE_CHANNELS[backbone]

    @property
    def hparams(self) -> dict[str, Any]:
        return {"backbone": self.variant, "segmentation_head": self.project_seg is not None}

    def forward(
        self,
        src: torch.Tensor,
        r1: torch.Tensor | None = None,
        r2: torch.Tensor | None = None,
        r3: torch.Tensor | None = None,
        r4: torch.Tensor | None = None,
        downsample_ratio: float = 1.0,
        segmentation_pass: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Returns (fgr, pha, r1, r2, r3, r4), or (seg, r1 … r4) with `segmentation_pass`; fgr and pha have
        src's shape (3 and 1 channels), the states are those after src's last frame."""
        sequence = src.ndim == 5
        if not sequence and src.ndim != 4:
            raise ModelError(f"RVM takes (B, 3, H, W) or (B, T, 3, H, W) input, got shape {tuple(src.shape)}")
        time = src.shape[1] if sequence else 1
        frames = src.flatten(0, 1) if sequence else src
        small = frames
        if downsample_ratio != 1:
            # scale_factor kept (not recomputed from the output size): the coordinates the model was trained on
            small = F.interpolate(
                frames,
                scale_factor=downsample_ratio,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
        f = self.backbone(small)
        f[3] = self.aspp(f[3])
        hid, rec = self.decoder(small, f, (r1, r2, r3, r4), time)
        if segmentation_pass:
            if self.project_seg is None:
                raise ModelError("these RVM weights have no segmentation head (project_seg)")
            outs = [self.project_seg(hid)]
        else:
            fgr_res, pha = self.project_mat(hid).split([3, 1], 1)
            if downsample_ratio != 1:
                fgr_res, pha = self.refiner(frames, small, fgr_res, pha, hid)
            outs = [(fgr_res + frames).clamp(0.0, 1.0), pha.clamp(0.0, 1.0)]
        if sequence:
            outs = [o.unflatten(0, (-1, time)) for o in outs]
        return (*outs, *rec)


def conv_norm_pairs(model: nn.Module) -> dict[str, str | None]:
    """Every convolution's name, in the order of `model.named_modules()`, with the batch norm that follows it
    (None if none): `P.k` → `P.(k+1)` in a Sequential, `convN` → `bnN`, `downsample.0` → `downsample.1`."""
    modules = dict(model.named_modules())
    pairs: dict[str, str | None] = {}
    for name, m in modules.items():
        if not isinstance(m, nn.Conv2d):
            continue
        parent, _, leaf = name.rpartition(".")
        if leaf.isdigit():
            bn = f"{parent}.{int(leaf) + 1}"
        elif leaf.startswith("conv") and leaf[4:].isdigit():
            bn = f"{parent}.bn{leaf[4:]}" if parent else f"bn{leaf[4:]}"
        else:
            bn = ""
        pairs[name] = bn if isinstance(modules.get(bn), nn.BatchNorm2d) else None
    return pairs


def forward_conv_order(model: MattingNetwork, size: tuple[int, int] = (64, 64)) -> list[str]:
    """Convolution names in the order the forward pass first uses them, refiner included (downsample 0.5):
    the order a traced export (ONNX) lists them in."""
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, _x, name=name: order.append(name) if name not in order else None)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size), downsample_ratio=0.5)
    finally:
        for h in hooks:
            h.remove()
    return order


def looks_like_rvm(state: Mapping[str, torch.Tensor]) -> bool:
    return "project_mat.conv.weight" in state and "decoder.decode4.gru.ih.0.weight" in state


def _backbone_of(state: Mapping[str, torch.Tensor]) -> Backbone:
    if "backbone.features.0.0.weight" in state:
        return "mobilenetv3"
    if "backbone.layer1.0.conv1.weight" in state:
        return "resnet50"
    raise ModelError("RVM weights with neither a MobileNetV3 (backbone.features.*) nor a ResNet-50 backbone")


def build_rvm(state: Mapping[str, torch.Tensor]) -> MattingNetwork:
    """An untrained RVM shaped like `state`: the backbone from its keys, the segmentation head if present."""
    if "refiner.box_filter.weight" not in state:
        raise ModelError("RVM weights without a Deep Guided Filter refiner (refiner.box_filter) are not supported")
    return MattingNetwork(_backbone_of(state), segmentation_head="project_seg.conv.weight" in state)


def state_names(model: nn.Module) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every entry of `model`'s state dict."""
    for k, v in model.state_dict().items():
        yield k, tuple(v.shape)


#: the whole frame shapes the result (LR-ASPP pools globally, the recurrent state spans the frame): never tiled.
#: fp16 is what RVM's authors run on GPUs; bf16 is not offered (not checked against fp32 here)
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="matte",
        detect=looks_like_rvm,
        build=build_rvm,
        dtypes=("fp32", "fp16"),
        tiling="discouraged",
        description="Robust Video Matting: MobileNetV3 or ResNet-50, recurrent ConvGRU decoder, guided-filter refiner",
    )
)
