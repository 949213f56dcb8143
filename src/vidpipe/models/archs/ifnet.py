"""IFNet, the flow network of RIFE, in the layouts of the official checkpoints.

Two families, told apart by their state-dict keys (a leading `module.` from DataParallel is stripped):

* **HDv3** (ECCV2022-RIFE `train_log/IFNet_HDv3.py`, the "HD" v3 weights): 3 IFBlocks of PReLU convs
  (`blockN.conv0`, `blockN.convblock0..3`, flow head `conv1`, mask head `conv2`), every level run in both
  directions and averaged; pyramid levels 4/2/1; interpolates the mid-point only (τ = 0.5).
* **v4** (Practical-RIFE 4.x): IFBlocks of LeakyReLU convs with residual `convblock.K` (`conv` + `beta`) and a
  `lastconv` transpose conv + PixelShuffle; a timestep plane is an input, so any τ in (0, 1) works.
  - 4.6 layout: 4 blocks, no feature encoder, the mask is accumulated over levels; levels 8/4/2/1.
  - 4.22 / 4.25 layout: a feature encoder `encode.cnn0..3` whose features (and their warps) feed each block,
    blocks also pass a feature map on (`lastconv` gives 13 channels), the mask is replaced at each level;
    4 blocks (4.22, levels 8/4/2/1) or 5 blocks (4.25, levels 16/8/4/2/1).

Channel widths, block counts and encoder width are read from tensor shapes. Everything takes its device and
dtype from the input tensors; nothing is cached between calls, so one process may run several GPUs and sizes.

Inputs are float N×3×H×W in 0..1 with H and W multiples of `size_multiple_at(scale)`; `interpolate()` pads and
crops with `models.padding`, so callers with arbitrary sizes cannot get a size mismatch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelError, UsageError
from ..descriptor import Architecture, register_architecture
from ..padding import multiple_for_scale, pad_to_multiple

Variant = Literal["hdv3", "v4.6", "v4.22", "v4.25"]

#: `scale` values the official inference accepts (`--scale`); 0.5 is the "UHD" mode for ≥ 4K input.
VALID_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: the official scripts pad to at least 32 at scale 1, also where the pyramid would allow less (HDv3: 16)
_MIN_MULTIPLE = 32
#: conv0 downsamples by 4 below a level's own 1/level resize, so a level of L needs H, W multiples of 4·L
_CONV0_STRIDE = 4


def backward_warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample `image` at (x + flow_x, y + flow_y), bilinear, border-clamped: RIFE's warp.

    The sampling grid is built on the input's device each call (Practical-RIFE's `warplayer.py` caches grids
    in a module-level dict and builds them on a global device, which breaks a second GPU). The grid and the
    sampling are done in float32 whatever the model dtype: in fp16 the normalised coordinates of a 1920-pixel
    row are spaced 1e-3 apart, the same as fp16's resolution near 1, i.e. up to half a pixel of error.
    """
    _, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    flow32 = flow.float()
    # Pixels → normalised [-1, 1] units (align_corners=True: -1 and 1 are the centres of the edge pixels),
    # broadcast against the base coordinates: no full-size base grid is materialised.
    grid = torch.stack(
        (xs + flow32[:, 0] / ((image.shape[3] - 1.0) / 2.0), ys + flow32[:, 1] / ((image.shape[2] - 1.0) / 2.0)),
        dim=-1,
    )
    padding_mode = "border"
    if image.device.type == "mps":
        # MPS has no "border" mode; clamping the grid to the edge centres gives the same samples.
        padding_mode = "zeros"
        grid = grid.clamp(-1.0, 1.0)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.to(image.dtype)


def _resize(x: Tensor, factor: float) -> Tensor:
    # scale_factor (not size) as the reference does: with sizes multiple of the level both give the same grid,
    # and this keeps the sampling arithmetic identical to the official code.
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)


def _down(parts: tuple[Tensor, ...], level: float) -> Tensor:
    """Resize each part by 1/level and concatenate. Bilinear resizing works channel by channel, so this equals
    resizing the concatenation (what the official code does) without building it at full resolution."""
    return torch.cat([_resize(p, 1.0 / level) for p in parts], 1)


def _check_scale(scale: float) -> None:
    if scale not in VALID_SCALES:
        valid = ", ".join(str(s) for s in VALID_SCALES)
        raise UsageError(f"RIFE scale {scale} not supported; valid: {valid} (0.5 for ≥ 4K input)")


def _timestep(timestep: float | Tensor, like: Tensor) -> Tensor:
    """τ as N×1×1×1 (expanded to a plane where needed); a float (one τ for the batch) or N values."""
    n = like.shape[0]
    t = torch.as_tensor(timestep, device=like.device, dtype=like.dtype)
    if t.numel() == 1:
        return t.reshape(1, 1, 1, 1).expand(n, 1, 1, 1)
    if t.numel() != n:
        raise UsageError(f"timestep has {t.numel()} values for a batch of {n} pairs; give 1 or {n}")
    return t.reshape(n, 1, 1, 1)


def _plane(t: Tensor, like: Tensor) -> Tensor:
    # A constant plane resizes to itself, so τ is made directly at each level's size.
    return t.expand(like.shape[0], 1, like.shape[2], like.shape[3])


def _swap(flow: Tensor) -> Tensor:
    """(flow 0→t, flow 1→t) → (flow 1→t, flow 0→t): the flow pair seen from the other frame."""
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


class IFNetBase(nn.Module):
    """What the interpolate stage relies on, whatever the layout."""

    #: False: only τ = 0.5 (reach other τ by mid-point bisection, `stages.timeline.bisection_steps`)
    supports_timestep: bool
    #: spatial scale of the output (the loader's contract; RIFE's own `scale` option is a forward argument)
    scale: int = 1

    def __init__(self, variant: Variant, widths: tuple[int, ...], n_res: int) -> None:
        super().__init__()
        self.variant: Variant = variant
        self.widths = tuple(int(c) for c in widths)
        self.n_blocks = len(widths)
        self.n_res = n_res
        #: pyramid levels at scale 1, coarse to fine: block i runs on the input resized by 1/levels[i]
        #: (HDv3 4/2/1, 4.6 and 4.22 8/4/2/1, 4.25 16/8/4/2/1)
        self.levels = tuple(float(2 ** (self.n_blocks - 1 - i)) for i in range(self.n_blocks))

    def size_multiple_at(self, scale: float = 1.0) -> int:
        """H and W of the input must be multiples of this at RIFE `scale` (32 for HDv3, 4.6, 4.22 and 64 for
        4.25 at scale 1; twice that at scale 0.5)."""
        _check_scale(scale)
        base = max(_MIN_MULTIPLE, int(_CONV0_STRIDE * max(self.levels)))
        return multiple_for_scale(base, scale)

    @property
    def size_multiple(self) -> int:
        """The multiple at scale 1 (the loader's contract)."""
        return self.size_multiple_at(1.0)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"variant": self.variant, "widths": list(self.widths), "n_res": self.n_res}

    def _check_inputs(self, img0: Tensor, img1: Tensor, scale: float) -> None:
        if img0.shape != img1.shape or img0.ndim != 4 or img0.shape[1] != 3:
            raise UsageError(
                f"IFNet wants two N×3×H×W tensors of one shape, got {tuple(img0.shape)} and {tuple(img1.shape)}"
            )
        m = self.size_multiple_at(scale)
        h, w = img0.shape[2], img0.shape[3]
        if h % m or w % m:
            raise UsageError(
                f"IFNet input {w}×{h} is not a multiple of {m} at scale {scale}: pad it with "
                "models.padding (or call interpolate(), which does)"
            )

    def forward(self, img0: Tensor, img1: Tensor, timestep: float | Tensor = 0.5, scale: float = 1.0) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def interpolate(self, img0: Tensor, img1: Tensor, timestep: float | Tensor = 0.5, scale: float = 1.0) -> Tensor:
        """The frame at τ between `img0` and `img1` (N×3×H×W, any H and W): pad, run, crop back."""
        m = self.size_multiple_at(scale)
        x0, pad = pad_to_multiple(img0, m)
        x1, _ = pad_to_multiple(img1, m)
        return pad.crop(self(x0, x1, timestep, scale))


# --------------------------------------------------------------------------------------------------- HDv3


def _conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.PReLU(cout))


def _deconv_head(c: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2), nn.ConvTranspose2d(c // 2, cout, 4, 2, 1)
    )


class _BlockHDv3(nn.Module):
    """One pyramid level of HDv3 on its input already resized by 1/level: features at a further 1/4, 4 residual
    pairs, then flow (4 channels) and mask (1) heads back at the input's size."""

    def __init__(self, cin: int, c: int, n_res: int = 4) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_prelu(cin, c // 2, 2), _conv_prelu(c // 2, c, 2))
        # Named convblock0..3 (not a list) to match the checkpoint keys.
        for k in range(n_res):
            self.add_module(f"convblock{k}", nn.Sequential(_conv_prelu(c, c), _conv_prelu(c, c)))
        self.n_res = n_res
        self.conv1 = _deconv_head(c, 4)
        self.conv2 = _deconv_head(c, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.conv0(x)
        for k in range(self.n_res):
            feat = getattr(self, f"convblock{k}")(feat) + feat
        return self.conv1(feat), self.conv2(feat)


class IFNetHDv3(IFNetBase):
    supports_timestep = False

    def __init__(self, widths: tuple[int, ...] = (90, 90, 90), n_res: int = 4) -> None:
        super().__init__("hdv3", widths, n_res)
        for i, c in enumerate(self.widths):
            # 6 image channels + mask (1) + flow (4)
            self.add_module(f"block{i}", _BlockHDv3(7 + 4, c, n_res))

    def forward(self, img0: Tensor, img1: Tensor, timestep: float | Tensor = 0.5, scale: float = 1.0) -> Tensor:
        if not bool(torch.all(torch.as_tensor(timestep) == 0.5)):
            raise UsageError("RIFE HDv3 interpolates τ = 0.5 only; reach other τ by mid-point bisection")
        self._check_inputs(img0, img1, scale)
        n = img0.shape[0]
        flow = img0.new_zeros(n, 4, img0.shape[2], img0.shape[3])
        mask = img0.new_zeros(n, 1, img0.shape[2], img0.shape[3])
        warped0, warped1 = img0, img1
        for i in range(self.n_blocks):
            block: _BlockHDv3 = getattr(self, f"block{i}")
            level = self.levels[i] / scale
            w0, w1, m, f = (_resize(t, 1.0 / level) for t in (warped0, warped1, mask, flow))
            f = f / level
            # Both directions (0→1 and, swapped, 1→0) as one batch of 2N: one pass of the weights.
            x = torch.cat((torch.cat((w0, w1, m, f), 1), torch.cat((w1, w0, -m, _swap(f)), 1)), 0)
            fd, md = block(x)
            # Average the directions before upsampling (upsampling is linear): one full-size resize, not two.
            flow = flow + _resize((fd[:n] + _swap(fd[n:])) / 2, level) * level
            mask = mask + _resize((md[:n] - md[n:]) / 2, level)
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return warped0 * m + warped1 * (1 - m)


# --------------------------------------------------------------------------------------------------- v4


def _conv_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, inplace=True))


class _ResConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class _BlockV4(nn.Module):
    """One level of RIFE 4.x on its input already resized by 1/level; emits, at that size, 4 flow + 1 mask
    channels (+ a feature map for the next level in 4.2x)."""

    def __init__(self, cin: int, c: int, n_res: int, cout: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_lrelu(cin, c // 2, 2), _conv_lrelu(c // 2, c, 2))
        self.convblock = nn.Sequential(*(_ResConv(c) for _ in range(n_res)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * cout, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.lastconv(self.convblock(self.conv0(x)))


class _Encoder(nn.Module):
    """4.2x per-frame feature encoder (`encode.cnn0..3`): full-resolution features of `cout` channels."""

    def __init__(self, c: int, cout: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, c, 3, 2, 1)
        self.cnn1 = nn.Conv2d(c, c, 3, 1, 1)
        self.cnn2 = nn.Conv2d(c, c, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(c, cout, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNetV4(IFNetBase):
    supports_timestep = True

    def __init__(
        self,
        widths: tuple[int, ...],
        *,
        n_res: int = 8,
        encoder: tuple[int, int] | None = None,
        out_channels: int = 6,
        variant: Variant = "v4.6",
    ) -> None:
        """`widths`: c of each block; `encoder`: (hidden, out) channels of the feature encoder, None in 4.6;
        `out_channels`: what each block emits, 4 flow + 1 mask + the rest: 4.6 emits 6 (the 6th unused),
        4.22/4.25 emit 13 and pass the last 8 on to the next block."""
        super().__init__(variant, widths, n_res)
        self.encoder_channels = encoder
        self.out_channels = out_channels
        self.block_feat = block_feat = out_channels - 5 if out_channels > 6 else 0
        ef = 0
        if encoder is not None:
            self.encode = _Encoder(*encoder)
            ef = encoder[1]
        self.has_encoder = encoder is not None
        for i, c in enumerate(self.widths):
            # level 0: img0, img1, their features, τ; later: warped images and features, τ, mask, block
            # features, plus the flow (4) concatenated inside the block
            cin = 7 + 2 * ef if i == 0 else 8 + 2 * ef + block_feat + 4
            self.add_module(f"block{i}", _BlockV4(cin, c, n_res, out_channels))

    @property
    def hparams(self) -> dict[str, Any]:
        enc = list(self.encoder_channels) if self.encoder_channels else None
        return {**super().hparams, "encoder": enc, "out_channels": self.out_channels}

    def forward(self, img0: Tensor, img1: Tensor, timestep: float | Tensor = 0.5, scale: float = 1.0) -> Tensor:
        self._check_inputs(img0, img1, scale)
        t = _timestep(timestep, img0)
        if self.has_encoder:
            f01 = self.encode(torch.cat((img0, img1), 0))  # one encoder pass for both frames
            f0, f1 = f01[: img0.shape[0]], f01[img0.shape[0] :]
        flow: Tensor | None = None
        mask = feat = img0.new_zeros(0)
        warped0, warped1 = img0, img1
        for i in range(self.n_blocks):
            block: _BlockV4 = getattr(self, f"block{i}")
            level = self.levels[i] / scale
            # Channels worth upsampling to full size: flow, mask and, except after the last block, the
            # features the next block reads (resizing is per channel, so dropping the others changes nothing).
            keep = 5 + (self.block_feat if i + 1 < self.n_blocks else 0)
            if flow is None:
                parts = (img0, img1, f0, f1) if self.has_encoder else (img0, img1)
                x = _down(parts, level)
                out = _resize(block(torch.cat((x, _plane(t, x)), 1))[:, :keep], level)
                flow, mask, feat = out[:, :4] * level, out[:, 4:5], out[:, 5:]
            else:
                if self.has_encoder:
                    wf0 = backward_warp(f0, flow[:, :2])
                    wf1 = backward_warp(f1, flow[:, 2:4])
                    low = _down((warped0, warped1, wf0, wf1), level)
                    rest = _down((mask, feat[:, : self.block_feat]), level)
                else:
                    low = _down((warped0, warped1), level)
                    rest = _down((mask,), level)
                f = _resize(flow, 1.0 / level) / level
                out = _resize(block(torch.cat((low, _plane(t, low), rest, f), 1))[:, :keep], level)
                flow = flow + out[:, :4] * level
                # 4.6 refines the mask additively; the encoder models (4.7 on) predict it afresh per level.
                mask = out[:, 4:5] if self.has_encoder else mask + out[:, 4:5]
                feat = out[:, 5:]
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return warped0 * m + warped1 * (1 - m)


# --------------------------------------------------------------------------------------------------- loading

_BLOCK_KEY = re.compile(r"^block(\d+)\.")


#: checkpoint parts used only in training: HDv3's distillation teacher (`block_tea`), which the official
#: `train_log/flownet.pkl` carries beside the network
TRAINING_ONLY = ("block_tea.", "teacher.", "caltime.")


def _strip_module(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in sd.items()}


def canonical_state(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The network's own tensors: the DataParallel `module.` prefix and the training-only parts removed, as
    the official inference (`Model.load_model`) loads it."""
    return {k: v for k, v in _strip_module(state_dict).items() if not k.startswith(TRAINING_ONLY)}


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def looks_like_ifnet(state_dict: Mapping[str, Tensor]) -> bool:
    """A RIFE IFNet checkpoint (any supported layout), so that a weights file given by path loads without a
    registry entry: e.g. Practical-RIFE's `train_log/flownet.pkl`."""
    try:
        detect_variant(state_dict)
    except ModelError:
        return False
    return True


def detect_variant(state_dict: Mapping[str, Tensor]) -> Variant:
    """Which IFNet layout a state dict holds (keys with or without `module.`)."""
    sd = _strip_module(state_dict)
    if "block0.convblock0.0.0.weight" in sd and "block0.conv1.0.weight" in sd:
        return "hdv3"
    if "block0.convblock.0.conv.weight" in sd and "block0.lastconv.0.weight" in sd:
        if "encode.cnn0.weight" not in sd:
            if any(k.startswith("encode.") for k in sd):
                raise ModelError(
                    "RIFE 4.7–4.14 (Sequential encoder) checkpoints are not supported; "
                    "supported layouts: HDv3, 4.6, 4.22, 4.25"
                )
            return "v4.6"
        n = _count(sd, r"^block(\d+)\.")
        return "v4.25" if n >= 5 else "v4.22"
    raise ModelError(
        "state dict is not a RIFE IFNet checkpoint in a supported layout (HDv3, 4.6, 4.22, 4.25): "
        f"first keys {list(sd)[:4]}"
    )


def build_ifnet(state_dict: Mapping[str, Tensor]) -> IFNetBase:
    """Build the IFNet a checkpoint describes and load it (strict on every key our module has; training-only
    parts such as HDv3's `block_tea` teacher are dropped). The module holds the checkpoint's tensors (device and
    dtype as given); move it with `.to(device, dtype)`."""
    sd = _strip_module(state_dict)
    variant = detect_variant(sd)
    n_blocks = _count(sd, r"^block(\d+)\.")
    if sorted(int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)) and k.endswith("conv0.0.0.weight")) != list(
        range(n_blocks)
    ):
        raise ModelError(f"RIFE checkpoint has gaps in its block numbering ({n_blocks} blocks)")
    widths = tuple(int(sd[f"block{i}.conv0.1.0.weight"].shape[0]) for i in range(n_blocks))
    model: IFNetBase
    # On the meta device: no random initialisation; the checkpoint's tensors are assigned below.
    with torch.device("meta"):
        if variant == "hdv3":
            model = IFNetHDv3(widths, _count(sd, r"^block0\.convblock(\d+)\."))
        else:
            cout = int(sd["block0.lastconv.0.weight"].shape[1]) // 4  # before PixelShuffle(2)
            encoder = None
            if "encode.cnn0.weight" in sd:
                encoder = (int(sd["encode.cnn0.weight"].shape[0]), int(sd["encode.cnn3.weight"].shape[1]))
            n_res = _count(sd, r"^block0\.convblock\.(\d+)\.")
            model = IFNetV4(widths, n_res=n_res, encoder=encoder, out_channels=cout, variant=variant)
    wanted = model.state_dict().keys()
    prefixes = {k.split(".", 1)[0] for k in wanted}
    ours = {k: v for k, v in sd.items() if k.split(".", 1)[0] in prefixes}
    missing = sorted(set(wanted) - set(ours))
    unexpected = sorted(set(ours) - set(wanted))
    if missing or unexpected:
        raise ModelError(
            f"RIFE {variant} checkpoint does not match its layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(ours, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise ModelError(f"RIFE {variant} checkpoint has tensors of unexpected shapes: {e}") from None
    return model.eval().requires_grad_(False)


ARCH = "ifnet"
#: the flow pyramid sees motion across the whole frame: tiles would cut it (the interpolate stage never tiles);
#: warps and sampling grids run in fp32 whatever the dtype (`backward_warp`), so fp16 and bf16 are safe
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="interpolate",
        detect=looks_like_ifnet,
        build=build_ifnet,
        canonical=canonical_state,
        dtypes=("fp32", "fp16", "bf16"),
        tiling="discouraged",
        description="RIFE IFNet: ECCV2022-RIFE HDv3, Practical-RIFE 4.6 / 4.22 / 4.25",
    )
)
