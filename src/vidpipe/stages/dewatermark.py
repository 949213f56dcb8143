"""`dewatermark`: watermark and logo removal on the temporal engine (issue 17; `vidpipe run IN -o OUT
--dewatermark auto|box:X,Y,W,H[@F0-F1]|mask:PATH[@F0-F1]`, several joined by `;`).

A `WindowedStage`: each window of T kept frames with `overlap` frames of context on each side is the frames a
hole is propagated from (`watermark.remove`). The engine keeps each window's centre frames (`seam` "pick").

- `auto` over a file (`vidpipe run`: `analyse_source`): before the main pass, the marks of the whole input (the
  frames the run reads: `--start/--duration/--frames` alike) by `vidpipe watermark detect`'s detection
  (`watermark.whole`, windows of 48 frames), then removed exactly as `mask:marks.json` of that detection would be:
  as the user's own marks, their α/W fit and still fill carried from window to window. Frames handed in without
  a file (or changed by a stage before this one) are detected within each window (its T + 2·overlap frames).

- `box:X,Y,W,H` a rectangle, `mask:PATH` a PNG of the frame's size (non-zero = mark) or a marks .json written by
  `vidpipe watermark detect` (its α and colour used as they are); `@F0-F1` limits it to frames F0..F1 (stream
  frame numbers, inclusive; `@F0-` to the end). A box or PNG has no α: inside it α and W are estimated from the
  window's frames where its background moves, and what cannot be estimated is treated as opaque.
- Bad input is a UsageError naming it: an unknown kind, a box outside the frame, a mask file of another size, a
  mark covering more than `MAX_COVER` of the frame (nothing left to fill from). `auto` that finds no mark is no
  error: the frames pass through bit for bit, and the log and `report()` say so.
- Window size: `window` kept frames, by default from the seed's VRAM table (S2: its "inpaint batch" per VRAM
  class) on CUDA, `CPU_WINDOW` on the CPU; an out-of-memory error shrinks it (the engine's policy).
- Diagnostics: `report()` (manifest `stage_reports.dewatermark`) gives the marks found and, per step (detect,
  estimate, propagate, fill), its seconds and outcome (pixels inverted, propagated, filled); a failing step raises
  a StageError naming the step.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import torch

from ..errors import StageError, UsageError, VidpipeError
from ..frames import FrameBatch, float_pixels, from_float
from .base import StreamSpec
from .temporal import WindowedStage
from .watermark.detect import detect_marks, merge_marks
from .watermark.marks import OPEN_END, Mark, load_marks
from .watermark.remove import FEATHER, RING, SHIFT_RADIUS, MarkMemory, Outcome, StepError, remove_mark

if TYPE_CHECKING:
    from ..media.source_pass import SourcePass

log = logging.getLogger(__name__)

#: kept frames per window on the CPU
CPU_WINDOW: Final = 16
#: context frames on each side: the detection's median sees T + 2·8 frames, propagation reaches 8 frames past
#: a window's edge
DEFAULT_OVERLAP: Final = 8
#: the seed's (S2) VRAM table: (least VRAM in GB, inpaint batch) — its batch is our window's kept frames
SEED_VRAM_TABLE: Final = ((24, 16), (16, 12), (10, 10), (8, 8), (0, 6))
#: a mark covering more of the frame than this leaves too little picture to fill from
MAX_COVER: Final = 0.9
KINDS: Final = ("auto", "box", "mask")
#: a window's region around its marks: `remove_mark`'s crop margin (feather + its ring or shift search + 1) and
#: one pixel more
REGION_MARGIN: Final = FEATHER + max(RING, SHIFT_RADIUS) + 2

_SPAN = re.compile(r"^(\d+)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One item of `--dewatermark`: its kind, argument and frame span (last = OPEN_END: to the end)."""

    kind: str
    arg: str = ""
    first: int = 0
    last: int = OPEN_END


def parse_requests(text: str) -> list[Request]:
    """`auto`, `box:X,Y,W,H[@F0-F1]`, `mask:PATH[@F0-F1]`, several joined by `;`."""
    out = []
    for item in (p.strip() for p in text.split(";")):
        if not item:
            continue
        kind, _, arg = item.partition(":")
        if kind not in KINDS:
            raise UsageError(
                f"invalid --dewatermark item {item!r}; valid: auto, box:X,Y,W,H[@F0-F1], mask:PATH[@F0-F1]"
            )
        first, last = 0, OPEN_END
        head, at, tail = arg.rpartition("@")
        if at and (m := _SPAN.match(tail)):
            arg, first, last = head, int(m[1]), int(m[2]) if m[2] else OPEN_END
            if last != OPEN_END and last < first:
                raise UsageError(f"--dewatermark {item!r}: frame span {first}-{last} ends before it starts")
        if kind == "auto" and arg:
            raise UsageError(f"--dewatermark auto takes no argument, got {item!r}")
        if kind != "auto" and not arg:
            raise UsageError(f"--dewatermark {kind}: needs an argument, e.g. box:10,10,120,40 or mask:logo.png")
        out.append(Request(kind, arg, first, last))
    if not out:
        raise UsageError("--dewatermark needs at least one of auto, box:X,Y,W,H, mask:PATH")
    return out


def request_marks(req: Request, width: int, height: int) -> list[Mark]:
    """The marks a box or mask request gives on frames of width×height (UsageError for a bad one)."""
    if req.kind == "box":
        try:
            x, y, w, h = (int(v) for v in req.arg.split(","))
        except ValueError:
            raise UsageError(f"invalid box {req.arg!r}; expected X,Y,W,H in pixels, e.g. box:10,10,120,40") from None
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise UsageError(f"box {x},{y},{w},{h} is not inside the {width}x{height} frame (X,Y ≥ 0, W,H ≥ 1)")
        alpha = np.zeros((height, width), np.float32)
        alpha[y : y + h, x : x + w] = 1.0
        marks = [Mark(req.first, req.last, alpha, None, "box")]
    elif req.arg.endswith(".json"):
        marks = [_clip(m, req) for m in load_marks(Path(req.arg))]
        marks = [m for m in marks if m is not None]
    else:
        marks = [Mark(req.first, req.last, _read_mask(Path(req.arg)), None, "mask")]
    for m in marks:
        if m.size != (width, height):
            raise UsageError(f"mask {req.arg} is {m.size[0]}x{m.size[1]}, the frames are {width}x{height}")
        cover = float((m.alpha > 0).mean())
        if cover > MAX_COVER:
            raise UsageError(
                f"--dewatermark {req.kind}:{req.arg} covers {cover:.0%} of the frame (more than {MAX_COVER:.0%}): "
                "nothing is left to fill it from"
            )
    return marks


def _clip(m: Mark, req: Request) -> Mark | None:
    """A loaded mark limited to the request's span (None if they do not meet)."""
    first = max(m.first, req.first)
    ends = [e for e in (m.last, req.last) if e != OPEN_END]
    last = min(ends) if ends else OPEN_END
    if last != OPEN_END and last < first:
        return None
    return Mark(first, last, m.alpha, m.colour, m.source, m.info)


def _read_mask(path: Path) -> np.ndarray:
    import av  # here: only a mask: request needs it

    try:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            grey = frame.to_ndarray(format="gray")
    except (OSError, StopIteration, av.FFmpegError) as e:
        raise UsageError(f"cannot read mask {path}: {e} (expected a PNG of the frame's size, or a marks .json)") from e
    return (grey > 0).astype(np.float32)


B = TypeVar("B", bound=Sized)


def _logged(batches: Iterator[B], path: str, every_s: float = 30.0) -> Iterator[B]:
    """`batches`, with a log line of the frames read so far every `every_s` seconds (a long input's pass)."""
    last, frames = time.monotonic(), 0
    for b in batches:
        frames += len(b)
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            log.info("dewatermark: auto: %d frames of %s read for detection", frames, path)
        yield b


def seed_window(vram_gb: float) -> int:
    """The seed's inpaint batch for a GPU with `vram_gb` of memory (S2's table)."""
    return next(batch for least, batch in SEED_VRAM_TABLE if vram_gb >= least)


class Dewatermark(WindowedStage):
    name = "dewatermark"
    unit = "window"
    seam = "pick"

    def __init__(self, spec: str, *, window: int | None = None, overlap: int = DEFAULT_OVERLAP) -> None:
        self.requests = parse_requests(spec)
        self.spec_text = spec
        if window is not None and window < 1:
            raise UsageError(f"dewatermark window must be ≥ 1 frame, got {window}")
        self.window_request = window
        self.window = window or CPU_WINDOW
        self.overlap = overlap
        self.auto = any(r.kind == "auto" for r in self.requests)
        self.device = torch.device("cpu")
        self.user_marks: list[Mark] = []
        self._on_device: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        #: a kept mark's support box (y0, y1, x0, x1; None: empty), for `_region`
        self._support_box: dict[int, tuple[int, int, int, int] | None] = {}
        #: a user mark's α/W fit and still fill carried from window to window (a few maps per mark, no frames)
        self._memory: dict[int, MarkMemory] = {}
        #: per such mark, the first frame the last window did not write (its last kept one + 1)
        self._seam: dict[int, int] = {}
        self.found: list[Mark] = []
        #: `auto` over a file: the analysis pass's facts (None: detection per window)
        self.source_pass: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.outcome = Outcome()
        self.detect_seconds = 0.0
        self.windows = 0
        self._warned = False

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = device
        self.user_marks = [
            m for r in self.requests if r.kind != "auto" for m in request_marks(r, spec.width, spec.height)
        ]
        self._on_device.clear()
        self._support_box.clear()
        self._memory = {id(m): MarkMemory() for m in self.user_marks}
        self._seam.clear()
        self.found, self.notes, self.source_pass = [], [], None
        if self.window_request is None:
            if device.type == "cuda":
                vram = torch.cuda.get_device_properties(device).total_memory / 2**30
                self.window = seed_window(vram)
            else:
                self.window = CPU_WINDOW
        log.info(
            "dewatermark: %s on %s, windows of %d frames + %d of context each side",
            self.spec_text,
            device,
            self.window,
            self.overlap,
        )
        return spec

    def analyse_source(self, source: SourcePass) -> None:
        """`auto` over a file: the marks of the whole input (`vidpipe watermark detect`'s detection, windows of
        `DETECT_WINDOW` frames), found before the main pass and then removed as the user's own marks
        (`mask:marks.json`): their α/W fit and still fill carried from window to window."""
        if not self.auto:
            return
        from .watermark.whole import DETECT_BATCH, DETECT_WINDOW, detect_clip

        log.info("dewatermark: auto: detecting marks over %s before removing them", source.path)
        try:
            with torch.inference_mode():
                gpu = self.device.type == "cuda"  # planes converted on the GPU (`detect_clip`)
                batches = _logged(source.batches(DETECT_BATCH, after=self.overlap, planar=gpu, pin=gpu), source.path)
                det = detect_clip(batches, self.device, DETECT_WINDOW)
        except VidpipeError:
            raise  # the input's own (decoding): as the main pass would say it
        except Exception as e:
            raise StageError(f"dewatermark: step detect failed on {source.path}: {e}") from e
        for note in det.notes:
            self.notes.append(note)
            log.warning("dewatermark: %s", note)
        self.found = det.marks
        self.detect_seconds += det.seconds
        self._memory |= {id(m): MarkMemory() for m in det.marks}
        self.source_pass = {"frames": det.frames, "windows": det.windows, "seconds": round(det.seconds, 3)}
        log.info(
            "dewatermark: auto found %d mark(s) in %d frames (%d windows, %.1f s)",
            len(det.marks),
            det.frames,
            det.windows,
            det.seconds,
        )

    @property
    def _kept(self) -> list[Mark]:
        """The marks kept across windows: the user's and those of the analysis pass."""
        return [*self.user_marks, *self.found] if self.source_pass is not None else self.user_marks

    def _tensors(self, m: Mark) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A mark's α and colour on the device: a user's kept there across windows, a window's own not."""
        key = id(m)
        if key in self._on_device:
            return self._on_device[key]
        colour = None if m.colour is None else torch.from_numpy(m.colour).permute(2, 0, 1).to(self.device)
        pair = (torch.from_numpy(m.alpha).to(self.device), colour)
        if any(m is u for u in self._kept):
            self._on_device[key] = pair
        return pair

    def process_window(self, frames: FrameBatch) -> FrameBatch:
        self.windows += 1
        marks = [m for m in self._kept if any(m.covers(i) for i in frames.index)]
        if self.auto and self.source_pass is None:
            marks += self._detect(float_pixels(frames.data, device=self.device), frames.index)
        if not marks:
            return frames
        # only the marks' surroundings as float on the device: `remove_mark` works inside each mark's crop box,
        # and a whole 1080p window would be ~0.8 GB of float32 (converted on one host core for host frames)
        ry0, ry1, rx0, rx1 = self._region(marks, frames.data.shape[-2:])
        x = float_pixels(frames.data[..., ry0:ry1, rx0:rx1], device=self.device)
        data = frames.data.clone()
        for m in marks:
            sel = [i for i, ix in enumerate(frames.index) if m.covers(ix)]
            alpha, colour = self._tensors(m)
            alpha = alpha[ry0:ry1, rx0:rx1]
            colour = None if colour is None else colour[:, ry0:ry1, rx0:rx1]
            free, dirty = self._free_frames(x, frames.index, m, marks, (ry0, ry1, rx0, rx1))
            try:
                memory = self._memory.get(id(m))
                ramp = self._ramp(m, [frames.index[i] for i in sel]) if memory is not None else None
                when = ([frames.index[i] for i in sel], [ix for ix in frames.index if not m.covers(ix)])
                new, box, outcome = remove_mark(
                    x[sel], alpha, colour, free=free, free_dirty=dirty, memory=memory, ramp=ramp, when=when
                )
            except StepError as e:
                raise StageError(f"dewatermark: step {e.step} failed on frames {frames.index[sel[0]]}..: {e}") from e
            self.outcome.add(outcome)
            if new.numel() == 0:
                continue
            y0, y1, x0, x1 = (int(v) for v in box)
            idx = torch.tensor(sel, device=x.device)
            x[idx, :, y0:y1, x0:x1] = new
            data[idx, :, ry0 + y0 : ry0 + y1, rx0 + x0 : rx0 + x1] = from_float(new, data.dtype).to(data.device)
        return frames.with_data(data)

    def _region(self, marks: list[Mark], size: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the box holding every mark's `remove_mark` crop box (its support grown by
        `REGION_MARGIN` ≥ that crop's margin), within the frame. Inside it each crop box comes out as in the whole
        frame: cut by the same frame edges, nowhere else."""
        h, w = int(size[0]), int(size[1])
        y0, y1, x0, x1 = h, 0, w, 0
        for m in marks:
            box = self._support_box.get(id(m))
            if box is None:
                ys, xs = np.nonzero(np.asarray(m.alpha) > 0)
                box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1) if len(ys) else None
                if any(m is u for u in self._kept):
                    self._support_box[id(m)] = box
            if box is not None:
                y0, y1, x0, x1 = min(y0, box[0]), max(y1, box[1]), min(x0, box[2]), max(x1, box[3])
        if y1 <= y0:  # no mark has support: nothing will be removed; a 1-pixel region keeps the loop simple
            return 0, 1, 0, 1
        g = REGION_MARGIN
        return max(0, y0 - g), min(h, y1 + g), max(0, x0 - g), min(w, x1 + g)

    def _ramp(self, m: Mark, index: list[int]) -> torch.Tensor | None:
        """Per frame (stream `index`), its way (0..1) from the earlier windows' fit of `m` to this window's: 0 up to
        the last frame written, 1 from this window's last kept frame (its end less the overlap) on: the fit moves
        over the kept frames instead of stepping at their first. None for a mark's first window."""
        end = max(index[0], index[-1] - self.overlap)
        seam = self._seam.get(id(m))
        self._seam[id(m)] = end + 1
        if seam is None:
            return None
        span = max(1, end - seam + 1)
        return torch.tensor([min(1.0, max(0.0, (i - seam + 1) / span)) for i in index], device=self.device)

    def _free_frames(
        self, x: torch.Tensor, index: list[int], m: Mark, marks: list[Mark], region: tuple[int, int, int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The window's frames without mark `m` (the background it hides may show there) and, per such frame,
        the pixels the other marks on it cover (not to be taken as background); `x` is the window's `region`
        (y0, y1, x0, x1) of the frame."""
        free = [i for i, ix in enumerate(index) if not m.covers(ix)]
        if not free:
            return None, None
        y0, y1, x0, x1 = region
        dirty = torch.zeros(len(free), *x.shape[-2:], dtype=torch.bool, device=x.device)
        for o in marks:
            if o is m:
                continue
            on = [k for k, i in enumerate(free) if o.covers(index[i])]
            if on:
                dirty[on] |= self._tensors(o)[0][y0:y1, x0:x1] > 0
        return x[free], dirty

    def _detect(self, x: torch.Tensor, index: list[int]) -> list[Mark]:
        t0 = time.perf_counter()
        try:
            det = detect_marks(x, list(index))
        except Exception as e:
            raise StageError(f"dewatermark: step detect failed on frames {index[0]}..{index[-1]}: {e}") from e
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        self.detect_seconds += time.perf_counter() - t0
        for note in det.notes:
            if note not in self.notes:
                self.notes.append(note)
                log.warning("dewatermark: %s", note)
        self.found = merge_marks([*self.found, *det.marks])
        return det.marks

    def report(self) -> dict[str, Any]:
        """The manifest's `stage_reports.dewatermark`: marks found and each step's seconds and outcome."""
        if self.auto and not self.found and not self._warned:
            self._warned = True
            log.warning("dewatermark: auto found no mark in %d windows: the output equals the input", self.windows)
        marks = [*self.user_marks, *self.found]
        return {
            "requests": self.spec_text,
            "windows": self.windows,
            "marks": [
                {"first": m.first, "last": m.last, "box": m.box(0.0), "source": m.source, "info": m.info} for m in marks
            ],
            "auto_found": len(self.found) if self.auto else None,
            # how auto detected: one pass over the input file before removing (its frames, windows, seconds),
            # or within each removal window (frames handed in without a file, or changed by a stage before)
            "auto_detection": self._auto_detection(),
            "message": "auto found no mark: the output equals the input" if self.auto and not marks else None,
            "notes": list(self.notes),
            "pixels": {
                "inverted": self.outcome.inverted,
                "propagated": self.outcome.propagated,
                "filled": self.outcome.filled,
            },
            "seconds": {"detect": round(self.detect_seconds, 3)}
            | {k: round(v, 3) for k, v in self.outcome.seconds.items()},
        }

    def _auto_detection(self) -> dict[str, Any] | None:
        if not self.auto:
            return None
        if self.source_pass is None:
            return {"over": "each window"}
        return {"over": "input", **self.source_pass}

    def signature(self) -> dict[str, Any]:
        # auto's way of detecting: outputs made when it detected per window only are made again
        auto = {"auto_detection": "whole input where read from a file"} if self.auto else {}
        return {
            "stage": self.name,
            "requests": self.spec_text,
            "window": self.window,
            "overlap": self.overlap,
            "seam": self.seam,
        } | auto

    def cost_signature(self) -> dict[str, Any]:
        """Cost rows: the work per window (auto detects; boxes and masks only remove)."""
        return {"stage": self.name, "auto": self.auto, "overlap": self.overlap}
