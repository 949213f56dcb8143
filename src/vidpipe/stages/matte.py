"""`matte`: human video matting with Robust Video Matting (RVM), a recurrent stage on the temporal engine.

- The model (`rvm-mobilenetv3`, `rvm-resnet50`, an imported name or a weights file) is loaded once in `setup`:
  fp16 on CUDA by default (`resolve_dtype`), fp32 on the CPU; channels-last on CUDA, where cuDNN's fp16
  convolutions want it (oneDNN on the CPU gains nothing from it for RVM's depthwise layers); `--compile`
  (torch.compile, no CUDA graphs) fuses its many small layers.
- `step` runs each batch as one B×T sequence (B = 1, T = the batch's frames) from the recurrent state r1…r4 the
  engine carries (`schedule.temporal.RecurrentRunner`): every convolution runs over the T frames at once and
  only the ConvGRUs step through time. It never changes a state tensor in place, so an out-of-memory retry
  re-runs the same frames from the same state; a state of None (the stream's start, a hard cut, a mid-stream
  start before the pre-roll) is RVM's own start (zeros).
- `downsample_ratio`: RVM segments a downsampled copy of the frame and its Deep Guided Filter refines the matte
  back at full resolution. Its authors' table (RobustVideoMatting, documentation/inference.md, "Downsample
  ratio", portrait column: ≤512×512 → 1, 1280×720 → 0.375, 1920×1080 → 0.25, 3840×2160 → 0.125) keeps the
  downsampled frame's long side at 480 px, inside the 256–512 px they advise: `auto_downsample` writes that rule
  out (1 up to a 512-px long side, else 480 / long side). `--downsample R` overrides it (full-body shots want
  about 1.6× more, per the same table).
- `preroll` = 30 frames: where a job segment or a GPU's share starts mid-video, the engine feeds the 30 frames
  before it first, so the state starts warm. RVM's state is a decaying memory, not a finite window, so the
  pre-rolled frames come close to a run from the start rather than equal to it; 30 frames (1 s at 30 fps) is
  where its effect on the matte has faded (the parity evaluation carries state over ≥ 30 frames too).
- `reset_at_cuts`: a new shot shares nothing with the last one; the engine starts afresh at hard cuts (`--cuts`).

VR (`layout`, `--layout auto|mono|sbs|tb`):
- `sbs` frames hold the left eye in the left half and the right eye in the right half, `tb` the top and the
  bottom half. Both eyes go through ONE network call as a batch of two (B = 2, T = the batch's frames): RVM keeps
  its recurrent state per batch element, so each eye has its own state (a state tensor's first dimension is the
  eye), and the two alphas are put back in place; the outputs (rgba, alpha, composite, green) are then made on
  the whole frame as for mono. An eye's result equals that eye's half matted as a video of its own within fp32
  rounding (the batch of two sums in another order than a batch of one; tests/stages/test_matte_vr.py), and
  one eye's pixels never reach the other's output. The state stays a pure value, so snapshots, pre-roll and
  resets at cuts (both eyes at once) work as for mono. `auto_downsample` is taken on one eye's size: an 8K×4K
  SBS frame is two 3840×3840 eyes at 0.125.
- `auto` takes what the input states (`StreamSpec.stereo`: its stereo metadata, else its name's `_LR`/`_TB`
  tokens; `media.stereo`), else mono. A stated packing that is not two halves (frame sequence, checkerboard,
  lines, columns) is refused (`--layout mono` mattes such frames as one picture). An sbs frame of odd width or a
  tb frame of odd height has no two equal eyes: a UsageError naming the size. So is a stereo layout after
  `--pad` (the padded frame's halves are not the eyes).

Memory (what the scheduler sizes T by): per frame, the network's activations at the downsampled size (backbone,
LR-ASPP, decoder: proportional to eyes × eye area × ratio²) plus the Deep Guided Filter's at the full size
(the frame as floats, its 4-channel guide, the upsampled A and b, A·x + b and the outputs: about 25 values per
pixel in the stage's dtype, ≈ 1.5 GB per 8K×4K frame in fp16, the same whatever the layout, as the eyes tile the
frame). `cost_signature` holds the layout and the eye count and the cost probe runs `probe_call` (a step from a
fresh state) on whole frames, so a measured row's memory per frame holds both eyes and a mono row never sizes
a stereo run: T shrinks as the eyes' cost grows. If one frame does not fit at T = 1, the OOM policy ends the run
with its `DeviceOutOfMemoryError` (exit 5). What a user can do then: a smaller `--downsample` (the
low-resolution part shrinks with ratio²), fp16 (the default on CUDA; `--dtype fp32` doubles both parts), or a
smaller frame before matting (`--resize WxH --order resize,matte`), the one thing that shrinks the refiner's part.

Outputs (`output`, `--matte-output`):
- `rgba`: the *source's* RGB, untouched, plus the predicted alpha (C = 4); the writer keeps alpha in VP9 WebM
  (`yuva420p`), ProRes 4444, FFV1 and PNG. RVM's predicted foreground is never used: compositing from it leaves
  a halo of the old background at soft edges (RobustVideoMatting issue #167).
- `alpha`: the matte as a grey picture (R = G = B = alpha).
- `composite`: source · a + background · (1 − a) onto `--background`: a colour (`#00ff00`, `#0f0`, a name in
  `COLOURS`), an image, or a video (decoded by the stage with `media.reader`, looped; the background frame shown
  with a source frame is the one at the source frame's time, modulo the background's duration, so a job's
  segments and an out-of-memory retry composite the same background frames as a whole run).
- `green`: `composite` onto pure green (#00ff00), a chroma key for editors without alpha support.
Alpha is quantised to the output's levels before compositing, so a pixel whose written alpha is full is the
source pixel exactly. Frames are uint8 or uint16 (scaled by their type's full value, `frames.to_float`); the
model sees RGB only (a source's own alpha is replaced).
"""

from __future__ import annotations

import logging
import re
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

import torch
import torch.nn.functional as F

from ..errors import InputError, UsageError
from ..frames import FrameBatch, from_float, max_value, to_float
from ..models.loading import LoadedModel, load_model_info
from .base import StreamSpec, check_dtype, resolve_dtype
from .interrupt import StopCheck, layer_checks, never
from .temporal import RecurrentStage, State

log = logging.getLogger(__name__)

Output = Literal["rgba", "alpha", "composite", "green"]
OUTPUTS: Final[tuple[Output, ...]] = ("rgba", "alpha", "composite", "green")
Layout = Literal["mono", "sbs", "tb"]
#: `--layout` values: auto (what the input states, else mono) or one of the layouts
LAYOUTS: Final[tuple[str, ...]] = ("auto", "mono", "sbs", "tb")
#: the frame axis a layout halves into its two eyes (left/top first): width for sbs, height for tb
EYE_AXIS: Final[dict[Layout, int]] = {"sbs": -1, "tb": -2}
#: RVM's authors keep the downsampled frame's long side at 480 px (their table, module docstring) ...
AUTO_LONG_SIDE: Final = 480
#: ... and run frames up to 512 px at full resolution (ratio 1: no refiner)
FULL_RES_UP_TO: Final = 512
#: frames fed before a mid-stream start so the recurrent state is warm (module docstring)
PREROLL: Final = 30
#: colour names `--background` takes, as 0..1 RGB
COLOURS: Final[dict[str, tuple[float, float, float]]] = {
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "grey": (0.5, 0.5, 0.5),
    "gray": (0.5, 0.5, 0.5),
    "magenta": (1.0, 0.0, 1.0),
}
#: the chroma key of `green`
KEY_GREEN: Final = "#00ff00"
_HEX = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


def auto_downsample(width: int, height: int) -> float:
    """RVM's downsample ratio for a frame size, by its authors' table: 1 up to a 512-px long side, else the ratio
    that makes the long side 480 px (0.375 at 720p, 0.25 at 1080p, 0.125 at 2160p)."""
    long_side = max(width, height)
    return 1.0 if long_side <= FULL_RES_UP_TO else AUTO_LONG_SIDE / long_side


def parse_downsample(value: str | float | None) -> float | None:
    """`--downsample`: "auto" (None) or a ratio in (0, 1]."""
    if value is None or value == "auto":
        return None
    try:
        ratio = float(value)
    except ValueError:
        raise UsageError(f"invalid --downsample {value!r}; valid: auto or a ratio in (0, 1], e.g. 0.25") from None
    if not 0 < ratio <= 1:
        raise UsageError(f"--downsample must be auto or a ratio in (0, 1], got {value}")
    return ratio


def parse_colour(value: str) -> tuple[float, float, float] | None:
    """A colour as 0..1 RGB: `#rrggbb`, `#rgb` or a name in `COLOURS`; None when `value` is none of them."""
    if value.lower() in COLOURS:
        return COLOURS[value.lower()]
    m = _HEX.fullmatch(value)
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    r, g, b = (int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return r, g, b


class MovingBackground:
    """An image or a video decoded frame by frame (`media.reader`), looped: `frames_at(times)` gives, for each
    source time, the background frame at that time modulo the background's duration, resized to the output.
    Decoding runs forward with a few recent frames kept; a time before them (a loop, a retry) reopens the file.
    An image is a one-frame video."""

    #: decoded frames kept (resized, in their integer type, on the host: 100 MB at 1080p): enough for a retried
    #: batch without reopening the file
    KEEP: Final = 16

    def __init__(self, path: Path) -> None:
        from ..media.probe import probe

        self.path = path
        try:
            self.info = probe(path)
        except InputError as e:
            raise UsageError(f"--background {path}: not a readable image or video ({e})") from None
        self.size = (0, 0)
        #: (time from the background's start, frame) of the latest decoded frames, in order
        self._kept: deque[tuple[Fraction, torch.Tensor]] = deque(maxlen=self.KEEP)
        self._frames: Iterator[tuple[Fraction, torch.Tensor]] | None = None
        #: the background's length in seconds once decoded to its end (None: not yet)
        self.duration: Fraction | None = None
        self._finalizer: weakref.finalize | None = None

    def _open(self) -> None:
        from ..media.reader import ReaderOptions, VideoReader

        self.close()
        reader = VideoReader(self.info, ReaderOptions(batch_size=1, queue_size=2, keep_alpha=False))
        self._finalizer = weakref.finalize(self, reader.close)  # a run that ends mid-background stops its thread
        self._kept.clear()
        self._frames = self._decode(reader)

    def _decode(self, reader: Any) -> Iterator[tuple[Fraction, torch.Tensor]]:
        first: Fraction | None = None
        w, h = self.size
        for batch in reader:
            for t, frame in zip(batch.times(), batch.data, strict=True):
                first = t if first is None else first
                x = frame[None, :3]
                if x.shape[-2:] != (h, w):
                    x = x.float() / max_value(x.dtype)
                    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
                    x = from_float(x, frame.dtype)
                yield t - first, x[0]

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._frames = self._finalizer = None

    def _at(self, t: Fraction) -> torch.Tensor:
        # a source time before 0 (some streams start there) shows the first frame until the length is known
        t = t % self.duration if self.duration is not None else max(t, Fraction(0))
        if not self._kept or t < self._kept[0][0]:
            self._open()
        while self._frames is not None and (not self._kept or self._kept[-1][0] < t):
            nxt = next(self._frames, None)
            if nxt is None:  # the end: its length is known, and times wrap from now on
                last = self._kept[-1][0] if self._kept else Fraction(0)
                rate = self.info.video.rate or Fraction(25)
                self.duration = last + 1 / rate
                self.close()
                if t >= self.duration:
                    return self._at(t)
                break
            self._kept.append(nxt)
        return next(f for ft, f in reversed(self._kept) if ft <= t)

    def frames_at(self, times: list[Fraction], size: tuple[int, int]) -> torch.Tensor:
        """N×3×H×W float 0..1 on the host: the background at each time, `size` = (width, height)."""
        if size != self.size:
            self.size = size
            self.close()
            self._kept.clear()
        frames = torch.stack([self._at(t) for t in times])
        return frames.float() / max_value(frames.dtype)

    def signature(self) -> dict[str, Any]:
        from ..paths import content_sample

        return {"file": self.path.name, "content": content_sample(self.path)}


Background = tuple[float, float, float] | MovingBackground


def parse_background(value: str) -> Background:
    """`--background`: a colour (`#rrggbb`, `#rgb`, a name) or an image or video file."""
    colour = parse_colour(value)
    if colour is not None:
        return colour
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(
            f"invalid --background {value!r}; valid: a colour (#rrggbb, #rgb or {', '.join(COLOURS)}) or an image "
            "or video file"
        )
    return MovingBackground(path)


def resolve_layout(request: str, stated: str | None) -> Layout:
    """The layout a run mattes: `request` unless "auto", else what the input states (`StreamSpec.stereo`), else
    mono. A stated packing whose views are not two halves of the frame is refused rather than matted as one
    picture with both eyes in its recurrent state."""
    if request not in LAYOUTS:
        raise UsageError(f"invalid --layout {request!r}; valid: {', '.join(LAYOUTS)}")
    if request != "auto":
        return request  # type: ignore[return-value]
    if stated is None or stated in EYE_AXIS or stated == "mono":
        return stated or "mono"  # type: ignore[return-value]
    raise UsageError(
        f"--layout auto: the input states the stereo packing {stated!r}, whose views are not the halves of a frame; "
        "the matte stage splits sbs (left/right) and tb (top/bottom) only. Give --layout mono to matte each frame "
        "as one picture"
    )


def eye_size(layout: Layout, width: int, height: int) -> tuple[int, int]:
    """(width, height) of one eye; an sbs (tb) frame of odd width (height) has no two equal halves: UsageError."""
    if layout == "mono":
        return width, height
    axis, side = ("width", width) if layout == "sbs" else ("height", height)
    if side % 2:
        raise UsageError(
            f"--layout {layout} needs an even frame {axis} to split into two eyes; the input is {width}×{height}"
        )
    return (width // 2, height) if layout == "sbs" else (width, height // 2)


class Matte(RecurrentStage):
    name = "matte"
    unit = "frame"
    preroll = PREROLL
    reset_at_cuts = True

    def __init__(
        self,
        model: str | Path,
        *,
        output: str = "rgba",
        background: str | None = None,
        downsample: str | float | None = None,
        dtype: str = "auto",
        compile: bool = False,
        layout: str = "auto",
    ) -> None:
        check_dtype(dtype)
        resolve_layout(layout, None)  # a bad value fails when the chain is built, before any input is read
        if output not in OUTPUTS:
            raise UsageError(f"invalid --matte-output {output!r}; valid: {', '.join(OUTPUTS)}")
        if output == "composite" and background is None:
            raise UsageError("--matte-output composite needs --background (a colour, an image or a video)")
        if output != "composite" and background is not None:
            raise UsageError(f"--background is for --matte-output composite, not {output}")
        self.model_ref = model
        self.output: Output = output  # type: ignore[assignment]
        self.background_arg = KEY_GREEN if output == "green" else background
        self.background: Background | None = (
            parse_background(self.background_arg) if self.background_arg is not None else None
        )
        self.downsample_request = parse_downsample(downsample)  # None: auto, from the frame size in setup
        self.downsample_ratio = 1.0
        self.dtype_request = dtype
        self.dtype_name = dtype
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.loaded: LoadedModel | None = None
        self._loaded_on: tuple[torch.device, torch.dtype] | None = None
        self.compile = compile
        #: what `alpha` calls: the loaded network, or its torch.compile'd form
        self.net: Any = None
        self.size = (0, 0)
        self.layout_request = layout
        #: the layout of the input set up last (`setup`), and the size of one of its eyes
        self.layout: Layout = "mono"
        self.eye = (0, 0)
        self.stop_check: StopCheck = never

    # -- setup --
    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        self.dtype_name, self.dtype = resolve_dtype(self.dtype_request, device)
        if self.loaded is None or self._loaded_on != (device, self.dtype):
            self.loaded = load_model_info(self.model_ref, device, self.dtype, task="matte")
            if device.type == "cuda":
                self.loaded.module.to(memory_format=torch.channels_last)
            self._loaded_on = (device, self.dtype)
            self.net = self.loaded.module
            if self.compile:
                # one graph per frame size and T, plus one for the first call (no state yet); CUDA graphs are
                # left out: their outputs are overwritten by the next replay, and the states are carried
                self.net = torch.compile(self.loaded.module, mode="max-autotune-no-cudagraphs", dynamic=False)
        self.size = (spec.width, spec.height)
        # the layout comes from the run's input description (`StreamSpec.stereo`, set from the probe by the
        # runtime) rather than from the input's path at build time: one chain serves every input of a run, and the
        # spec is what `setup` already receives per input, so no stage needs a path or a probe of its own
        self.layout = resolve_layout(self.layout_request, spec.stereo)
        if self.layout != "mono" and spec.crop_to is not None:
            raise UsageError(
                f"--layout {self.layout} after --pad: the padded frame's halves are not the eyes; pad after matting "
                "(--order) or leave --pad out"
            )
        self.eye = eye_size(self.layout, *self.size)
        ratio = self.downsample_request
        self.downsample_ratio = auto_downsample(*self.eye) if ratio is None else ratio  # RVM sees one eye
        log.info(
            "matte: %s on %s in %s, layout %s%s, downsample %.4g%s, output %s%s",
            Path(str(self.model_ref)).name,
            device,
            self.dtype_name,
            self.layout,
            f" ({self.eye[0]}×{self.eye[1]} eyes)" if self.layout != "mono" else "",
            self.downsample_ratio,
            " (auto)" if ratio is None else "",
            self.output,
            f" onto {self.background_arg}" if self.output == "composite" else "",
        )
        return spec.but(alpha=self.output == "rgba")

    def set_stop_check(self, check: StopCheck) -> None:
        """The run's stop request: called before each batch and, on the CPU, before every layer (stages.interrupt)."""
        self.stop_check = check

    # -- frames --
    def alpha(self, frames: FrameBatch, state: State | None) -> tuple[torch.Tensor, State]:
        """The predicted alpha (T×1×H×W float 0..1 in the stage's dtype) and the state after the last frame. A
        stereo frame's eyes are batch elements of one call (B = 2: RVM keeps a state per batch element, so each
        eye has its own), and their alphas are put back side by side (top and bottom)."""
        assert self.loaded is not None, "step() after setup()"
        self.stop_check()
        x = to_float(frames, self.dtype)[:, :3].to(self.device, non_blocking=True)
        axis = EYE_AXIS.get(self.layout)
        if axis is not None:
            x = torch.cat(x.chunk(2, dim=axis))  # (2T)×3×h×w: the left (top) eye's frames, then the other's
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.unflatten(0, (1 if axis is None else 2, -1))  # B×T×3×h×w (a view: channels-last kept)
        rec = state if state is not None else (None, None, None, None)
        # layer by layer on the CPU (eager only: hooks do not run inside a compiled graph); GPU layers are queued
        eager = self.device.type == "cpu" and self.net is self.loaded.module
        with torch.no_grad(), layer_checks(self.loaded.module, self.stop_check if eager else never):
            # not inference_mode: its tensors refuse the in-place ops that follow (from_float)
            _fgr, pha, *new = self.net(x, *rec, downsample_ratio=self.downsample_ratio)
        return (pha[0] if axis is None else torch.cat(pha.unbind(0), dim=axis)), tuple(new)

    def step(self, frames: FrameBatch, state: State | None) -> tuple[FrameBatch, State]:
        pha, new = self.alpha(frames, state)
        return frames.with_data(self._output(frames, pha)), new

    def step_many(self, frames: Sequence[FrameBatch], states: Sequence[State | None]) -> list[tuple[FrameBatch, State]]:
        """Several videos' batches as one B×T sequence (B videos, T frames each: the runtime gives batches of one
        shape): RVM's states r1–r4 are per batch element, so video i's state is row i in and out. Videos at
        their start (state None) and those with a state go as two batches (a None state is RVM's zeros, but
        its shapes are the network's); one video alone is `step`."""
        if self.signature().get("eyes", 1) != 1:
            # a stereo layout's rows are already its eyes (one state row each): each video goes through `step`
            return super().step_many(frames, states)
        out: list[tuple[FrameBatch, State] | None] = [None] * len(frames)
        fresh = [i for i, s in enumerate(states) if s is None]
        for group in (fresh, [i for i in range(len(frames)) if i not in fresh]):
            if len(group) == 1:
                out[group[0]] = self.step(frames[group[0]], states[group[0]])
            elif group:
                assert self.loaded is not None, "step_many() after setup()"
                self.stop_check()
                # B·T frames stacked as `alpha` lays out one video's T (channels-last on CUDA), then split by video
                x = torch.cat([to_float(frames[i], self.dtype)[:, :3] for i in group]).to(self.device)
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                held = [states[i] for i in group]
                rec = [None] * 4 if held[0] is None else [torch.cat([h[k] for h in held if h]) for k in range(4)]
                eager = self.device.type == "cpu" and self.net is self.loaded.module
                with torch.no_grad(), layer_checks(self.loaded.module, self.stop_check if eager else never):
                    _fgr, pha, *new = self.net(
                        x.unflatten(0, (len(group), -1)), *rec, downsample_ratio=self.downsample_ratio
                    )
                for row, i in enumerate(group):
                    state = tuple(r[row : row + 1] for r in new)
                    out[i] = (frames[i].with_data(self._output(frames[i], pha[row])), state)
        return out  # type: ignore[return-value]

    def _output(self, frames: FrameBatch, pha: torch.Tensor) -> torch.Tensor:
        src = frames.data[:, :3].to(self.device)
        like = src.dtype
        a = from_float(pha.float(), like)  # the alpha as written: composites agree with it level for level
        if self.output == "rgba":
            out = torch.cat([src, a], dim=1)
        elif self.output == "alpha":
            out = a.expand(-1, 3, -1, -1)
        else:
            a_f = a.float() / max_value(like)
            bg = self._background(frames)
            out = from_float(to_float(frames.with_data(src)) * a_f + bg * (1 - a_f), like)
        return out.contiguous(memory_format=torch.channels_last)

    def _background(self, frames: FrameBatch) -> torch.Tensor:
        """N×3×H×W (or 1×3×1×1 for a colour) float 0..1 on the device."""
        bg = self.background
        assert bg is not None
        if isinstance(bg, MovingBackground):
            return bg.frames_at(frames.times(), (frames.width, frames.height)).to(self.device)
        return torch.tensor(bg, device=self.device).view(1, 3, 1, 1)

    # -- identity --
    def signature(self) -> dict[str, Any]:
        assert self.loaded is not None, "signature() after setup()"
        bg = self.background
        return {
            "stage": self.name,
            "model": str(self.model_ref),
            "model_signature": self.loaded.signature,
            "arch": self.loaded.arch,
            "dtype": self.dtype_name,
            "compile": self.compile,
            "downsample": "auto" if self.downsample_request is None else self.downsample_request,
            "downsample_ratio": self.downsample_ratio,
            "output": self.output,
            "background": bg.signature() if isinstance(bg, MovingBackground) else bg,
            "preroll": self.preroll,
            # the network's work per frame (one call of B = eyes), so cost rows of other layouts never apply
            "layout": self.layout,
            "eyes": 1 if self.layout == "mono" else 2,
        }

    def report(self) -> dict[str, Any]:
        """The manifest's `stage_reports.matte`: the layout matted, as asked and as resolved, and one eye's size."""
        return {
            "layout": self.layout,
            "layout_requested": self.layout_request,
            "eyes": 1 if self.layout == "mono" else 2,
            "eye_size": list(self.eye),
            "downsample_ratio": self.downsample_ratio,
        }

    def cost_signature(self) -> dict[str, Any]:
        """Cost rows: the network's work, whatever is done with its alpha."""
        return {k: v for k, v in self.signature().items() if k not in ("output", "background")}
