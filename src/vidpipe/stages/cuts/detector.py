"""The classical cut detector: an analysis stage over a decimated, downscaled stream that emits `Event`s.

Streaming: each analysed frame becomes a small record (a thumbnail, mean luma, the `fast` cascade's histogram,
and the frame's halving-pyramid level from which the grey images at the SSIM and flow sides are made when a
pair first needs them); only the last `WINDOW` records are kept, so memory is O(window) whatever the length of
the video. Decisions are taken with a fixed look-ahead (`HARD_CONTEXT` pairs for hard and motion cuts,
the largest dissolve scale for soft ones) and finished in `flush()`.

Detectors
- `hard`: a pair whose SSIM dissimilarity spikes above its neighbours, whose change is concentrated in that one
  pair (not spread as in a short dissolve), and that the optical flow cannot explain (not fast motion).
  The `fast` preset computes SSIM and flow only for pairs whose histogram difference passes a gate.
- `soft`: dissolves by a blend test (the middle frame of a window is a mix (1−α)·A + α·B of its ends with α
  in the middle range, rising through the window, and the change is not explained by flow); fades by a run of
  dark frames with the luma ramps around it. The `fast` preset asks the thumbnails' flow first and the flow at
  `flow_max_side` only when that one is undecided.
- `motion`: spikes of the mean flow magnitude curve (whip pans, sudden camera moves) that are not hard cuts.

Every threshold below is named; the values were set on the dataset of `vidpipe.eval.cuts` (seed 0) and on the
real single-shot clips of opencv-doc (no false cuts on vtest.avi, box.mp4, cup.mp4); seeds 1–3 check them.

Speed (the `fast` preset must keep up with PySceneDetect's ContentDetector, `vidpipe bench cuts`): frames are
shrunk by exact halvings (`features.halve_to`), every test whose inputs are cheap runs before the SSIM and flow
ones, and SSIM/flow images are made only for pairs that reach those tests.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UsageError
from ...frames import FrameBatch
from ...media.yuv import PlanarBatch
from ..base import Stage, StreamSpec
from . import features as ft
from .events import KINDS, Event, Kind
from .flow_reuse import FlowReuse
from .presets import Preset, choose_preset, get_preset

log = logging.getLogger(__name__)

B = TypeVar("B", FrameBatch, PlanarBatch)

# -- hard cuts --
#: pairs looked at on each side to judge whether one pair's change is a spike
HARD_CONTEXT = 6
#: a cut changes structure a lot: 1 − SSIM at least this (SSIM ≤ 0.7); motion blur and noise stay far below
HARD_MIN_DISSIM = 0.3
#: … and at least this many times the median dissimilarity of its neighbours (AdaptiveDetector's idea: a
#: spike relative to the local level, so continuous fast motion does not fire)
HARD_SPIKE_RATIO = 2.5
#: … plus this margin, so near-static shots (median ~0.01) need a real jump
HARD_SPIKE_MARGIN = 0.15
#: share of the 3-pair change (frames i−2 → i+1) that happens in the pair i−1 → i: ~1 for a cut, ≤ ⅓ for a
#: dissolve of 3+ frames
HARD_MIN_CONCENTRATION = 0.6
#: flow residual / raw difference: the share of the pair's change the optical flow cannot explain; motion
#: leaves ≲ 0.4, a cut ~0.8–1
HARD_MIN_UNEXPLAINED = 0.55
#: `fast` cascade: pairs whose HSV histogram distance is below this never reach SSIM and flow (set below the
#: smallest histogram jump of a real cut in the evaluation set, so the gate costs no recall there)
CASCADE_HIST_GATE = 0.04
#: … unless their thumbnails changed this much (cuts between shots of similar colours)
CASCADE_THUMB_GATE = 0.06
#: the cascade's histogram is taken on the frame's halving-pyramid level of at least this size (fit to this
#: longest side): a global statistic, 20–60k pixels fill 3×32 bins well at a fraction of the analysis frame's cost
HIST_SIDE = 128

# -- soft cuts (dissolves) --
#: half-widths of the blend test windows; the largest covers a 30-frame dissolve (2·16 ≥ 30 + 2)
SOFT_SCALES = (2, 3, 4, 6, 8, 11, 16)
#: the two ends must differ this much (mean |B − A| on 0..1 thumbnails): no transition within one shot
SOFT_MIN_ENDPOINT_DIFF = 0.06
#: α of the middle frame must be in this range: near 0 or 1 the middle frame is one of the shots (a hard cut)
SOFT_ALPHA_RANGE = (0.2, 0.8)
#: a dissolve between two shots changes most of the picture: at least this share of the thumbnail's pixels must
#: differ between the window's ends by more than `SOFT_CHANGE_LEVEL` (largest channel, 0..1). An object moved
#: over a still background changes a small part and can pass the blend test (opencv-doc's cup.mp4, a hand moving
#: a cup before a wall: 14–18 %, the only false soft events on seeds 0–3 before this test; true dissolve windows
#: there: median 76–93 %)
SOFT_MIN_CHANGED_AREA = 0.25
SOFT_CHANGE_LEVEL = 0.1
#: residual of the blend fit relative to |B − A|: a true blend fits to ~0.1 (compression, motion inside
#: the shots); a pan or an unrelated frame does not fit
SOFT_MAX_RESIDUAL = 0.35
#: α must rise through the window: α(c − h/2) + this < α(c) < α(c + h/2) − this
SOFT_MIN_ALPHA_STEP = 0.05
#: share of the change over the window that flow cannot explain (see HARD_MIN_UNEXPLAINED); a blend ~0.7+
SOFT_MIN_UNEXPLAINED = 0.45
#: `soft_flow_gate` (fast): the flow test of a dissolve window runs first between thumbnails. Below this share
#: unexplained there, the window is motion; at or above `SOFT_GATE_BLEND`, a blend; in between the flow at
#: `flow_max_side` decides. Coarse flow explains less than fine flow: synthetic pan 0.16 at 96 px (0.01 at 256),
#: synthetic 12-frame dissolve 0.55 (0.47: undecided, so the full test runs); on the seed 1–2 clips all 344
#: windows that reached the test had ≥ 0.6 at 96 px and ≥ 0.48 at full size (all blends)
SOFT_GATE_MOTION = 0.3
SOFT_GATE_BLEND = 0.6
#: α below which a frame counts as still in shot A (above 1 − this: already in B) when measuring the span
SOFT_SPAN_ALPHA = 0.05
#: centres at most this far apart belong to the same transition
SOFT_GROUP_GAP = 3
#: thumbnail size (longest side) of the blend test
THUMB_SIDE = 96

# -- fades --
#: a frame is black when its mean luma is below this (0..1) — video black is 16/255 limited → 0 full range
FADE_DARK_LUMA = 0.06
#: a ramp frame is at least this much brighter than the next darker one (mean luma 0..1)
FADE_MIN_STEP = 0.004
#: longest fade ramp followed (frames): 30-frame fades have two ramps of ~15
FADE_MAX_RAMP = 40

# -- motion cuts --
#: the motion curve must jump to at least this many times its local median …
MOTION_SPIKE_RATIO = 4.0
#: … and at least this mean flow magnitude (fraction of the diagonal: ~1 % of the frame per frame)
MOTION_MIN_MAG = 0.01

#: records kept: the widest soft window plus the hard context plus the concentration test's reach
WINDOW = 2 * max(SOFT_SCALES) + HARD_CONTEXT + 4
#: analysed frames after a frame that can still change what is known about it (`CutDetector.settled`): a fade
#: found later starts at most FADE_MAX_RAMP frames back, a dissolve decided later at most 2·max(SOFT_SCALES) − 1
#: back, a hard cut is decided HARD_CONTEXT pairs on
SETTLE_LAG = max(FADE_MAX_RAMP, 2 * max(SOFT_SCALES), HARD_CONTEXT + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CutOptions:
    """Settings of the classical detector. `preset=None` applies the policy on the source's short side."""

    detectors: tuple[Kind, ...] = ("hard", "soft")
    preset: str | None = None
    #: scheduler throughput emergency: lets the policy choose `fast` for S > 720
    emergency: bool = False
    #: analysis stream: frames fit into this box (None: the larger of the preset's sides); fps None = every frame
    analysis_width: int | None = None
    analysis_height: int | None = None
    analysis_fps: Fraction | None = None

    def __post_init__(self) -> None:
        bad = [d for d in self.detectors if d not in KINDS]
        if bad or not self.detectors:
            raise UsageError(f"unknown cut detector(s) {bad or '(none)'}; valid: {', '.join(KINDS)}")
        if self.preset is not None:
            get_preset(self.preset)
        for v in (self.analysis_width, self.analysis_height):
            if v is not None and v < 16:
                raise UsageError(f"analysis size must be at least 16 px, got {v}")
        if self.analysis_fps is not None and self.analysis_fps <= 0:
            raise UsageError(f"analysis fps must be positive, got {self.analysis_fps}")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint16:
        return (x.to(torch.int32) >> 8).to(torch.uint8)
    if x.dtype != torch.uint8:
        return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x


@dataclass(slots=True)
class _Rec:
    pos: int  # position in the analysis stream
    frame: int  # source frame number
    time: Fraction
    thumb: np.ndarray
    hist: np.ndarray | None  # only the `fast` cascade reads it
    luma: float
    # pyramid level of the frame at least the analysis size, RGB (or Y' of a planar batch); turned into `grey` when
    # a grey image is first needed, and the SSIM/flow images are shrunk from that (lazily: `fast` needs few)
    level: np.ndarray | None
    grey: np.ndarray | None = None
    g_ssim: np.ndarray | None = None
    g_flow: np.ndarray | None = None
    # pair features against the previous record (pair `pos`), filled on demand
    hist_diff: float = 0.0
    thumb_diff: float = 0.0
    dissim: float | None = None
    flow: tuple[float, float, float] | None = None
    thumb_flow: tuple[float, float, float] | None = None
    motion: float | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A centre that passed the blend test (source frame numbers, so it outlives the window)."""

    pos: int
    frame: int
    time: Fraction
    score: float
    start: int
    end: int


@dataclass(slots=True)
class CutStats:
    frames: int = 0
    ssim_pairs: int = 0
    flow_pairs: int = 0
    flow_reused: int = 0
    frame_indices: list[int] = field(default_factory=list)


class CutDetector(Stage):
    """Analysis stage: frames pass through unchanged; `events` fills in; `flush()` finishes the last ones."""

    name = "cuts"
    context = WINDOW
    unit = "frame_pair"
    #: `process` also takes the reader's 4:2:0 planes (`run_detector` asks for them: no RGB conversion)
    planar_input = True

    def __init__(self, options: CutOptions = CutOptions(), *, flow_reuse: FlowReuse | None = None) -> None:
        self.options = options
        self.flow_reuse = flow_reuse
        self.preset: Preset | None = get_preset(options.preset) if options.preset else None
        self.events: list[Event] = []
        self.stats = CutStats()
        self._win: deque[_Rec] = deque(maxlen=WINDOW)
        self._sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
        self._next_time: Fraction | None = None
        self._hard_next = 1  # next pair position to decide
        self._soft_next = 0  # next centre to test
        self._soft_group: list[_Candidate] = []
        self._dark_start: _Rec | None = None
        self._fade_start = 0
        self._dark_last: _Rec | None = None
        self._ramp_last: _Rec | None = None
        self._soft: list[Event] = []
        self._hard: list[Event] = []
        self._motion: list[Event] = []
        self._device = torch.device("cpu")
        self._hist_size = (0, 0)
        #: Y' code → full-range grey of the planar stream (its range is fixed for a stream)
        self._luma_lut: np.ndarray | None = None

    # -- Stage contract --
    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self._device = device
        self._configure(spec.width, spec.height)
        return spec

    def signature(self) -> dict[str, Any]:
        p = self.preset
        return {
            "stage": self.name,
            "detectors": list(self.options.detectors),
            "preset": p.name if p else None,
            "ssim_max_side": p.ssim_max_side if p else None,
            "flow_max_side": p.flow_max_side if p else None,
            "hard_cuts_cascade": p.hard_cuts_cascade if p else None,
            "analysis": [self.options.analysis_width, self.options.analysis_height, str(self.options.analysis_fps)],
        }

    def process(self, batch: B) -> B:
        """Analyse a batch and hand it on unchanged. A `PlanarBatch` (the reader's 4:2:0 planes, which
        `run_detector` asks for) is read without an RGB conversion: grey images come from Y', colour only at
        the thumbnail size; the caller releases its buffer afterwards (nothing here keeps a view of it)."""
        planar = isinstance(batch, PlanarBatch)
        if self._sizes is None:
            w, h = (batch.fmt.width, batch.fmt.height) if planar else (batch.width, batch.height)  # type: ignore[union-attr]
            self._configure(w, h)
        keep = self._decimate(batch)
        if keep:
            levels = self._planar_levels(batch, keep) if planar else self._analysis_frames(batch, keep)  # type: ignore[arg-type]
            for (level, grey), i in zip(levels, keep, strict=True):
                self._push(level, grey, batch.index[i], batch.pts[i] * batch.time_base)
        return batch

    def flush(self) -> None:
        last = self._win[-1].pos if self._win else -1
        while self._hard_next <= last:
            self._decide_hard(self._hard_next, last)
            self._hard_next += 1
        while self._soft_next <= last:
            self._decide_soft(self._soft_next, last)
            self._soft_next += 1
        self._close_soft_group()
        if self.flow_reuse is not None and self.flow_reuse.mode == "require":
            self.flow_reuse.check(self.stats.frame_indices)
        self.events = self._merge()

    def settled(self) -> int:
        """How many analysed frames (positions 0..k−1) are settled: every event of the final `events` whose frame
        or span reaches one of them is already in `known_events()`, as it will be in `events`, and nothing later
        adds, drops or moves one (hard cuts inside a soft span are dropped only by spans that start before them).
        A frame waits `SETTLE_LAG` frames, longer inside a dissolve still growing or after a fade's first dark
        frame (until the fade is known). Frames are positions of the analysis stream (every frame without
        `analysis_fps`)."""
        if not self._win:
            return 0
        k = self._win[-1].pos + 1 - SETTLE_LAG
        if self._soft_group:  # its span may still grow forward; it starts at or after its first frame's start
            first = min(c.start for c in self._soft_group)
            k = min(k, bisect.bisect_left(self.stats.frame_indices, first))
        if self._dark_start is not None:  # whether frames from its ramp on are a fade is known when the dark ends
            k = min(k, self._fade_start)
        return max(0, k)

    def known_events(self) -> list[Event]:
        """The events decided so far, merged as `flush` merges them (final for the `settled()` frames)."""
        return self._merge()

    def held_bytes(self) -> int:
        """Bytes of the arrays the detector holds (its window of records and their images): its memory per video,
        bounded by `WINDOW` whatever the video's length (what the cost tables report as `cpu_rss_peak_mb`)."""
        seen: dict[int, int] = {}
        for r in self._win:
            for a in (r.thumb, r.hist, r.level, r.grey, r.g_ssim, r.g_flow):
                if a is not None:
                    seen[id(a)] = a.nbytes  # an image can serve twice (SSIM side = analysis side)
        return sum(seen.values())

    # -- setup --
    def _configure(self, width: int, height: int) -> None:
        if self.preset is None:
            self.preset = choose_preset(min(width, height), emergency=self.options.emergency)
        p = self.preset
        o = self.options
        if o.analysis_width or o.analysis_height:
            bw = o.analysis_width or width
            bh = o.analysis_height or height
            s = min(1.0, bw / width, bh / height)
            analysis = (max(16, round(width * s)), max(16, round(height * s)))
        else:
            analysis = ft.fit_side(width, height, max(p.ssim_max_side, p.flow_max_side))
        aw, ah = analysis
        self._sizes = (
            analysis,
            ft.fit_side(aw, ah, p.ssim_max_side),
            ft.fit_side(aw, ah, p.flow_max_side),
            ft.fit_side(aw, ah, THUMB_SIDE),
        )
        self._hist_size = ft.fit_side(aw, ah, HIST_SIDE)
        log.info("cuts: preset %s, analysis %dx%d, ssim %s, flow %s", p.name, aw, ah, self._sizes[1], self._sizes[2])

    def _decimate(self, batch: FrameBatch | PlanarBatch) -> list[int]:
        fps = self.options.analysis_fps
        if fps is None:
            return list(range(len(batch)))
        keep = []
        for i, t in enumerate(p * batch.time_base for p in batch.pts):
            if self._next_time is None or t >= self._next_time:
                keep.append(i)
                base = t if self._next_time is None else self._next_time
                self._next_time = base + 1 / fps
                while self._next_time <= t:  # a gap in the source: do not emit a burst afterwards
                    self._next_time += 1 / fps
        return keep

    def _analysis_frames(self, batch: FrameBatch, keep: list[int]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(RGB uint8 H×W×3 frame at least the analysis size, None): the level of its halving pyramid
        (`ft.halve_to`) on the CPU; resized to the analysis size on the batch's device when it is a GPU."""
        assert self._sizes is not None
        aw, ah = self._sizes[0]
        x = batch.data[:, :3]
        if x.device.type != "cpu" and (x.shape[2], x.shape[3]) != (ah, aw):
            y = F.interpolate(_to_uint8(x[keep]).float(), size=(ah, aw), mode="area").round().clamp(0, 255)
            return [(f, None) for f in y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()]
        # frame by frame: the reader's NHWC storage makes each H×W×3 view contiguous, so nothing is copied
        # before the first halving (indexing the batch with `keep` would copy it, then transpose it back)
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        for i in keep:
            a = np.ascontiguousarray(_to_uint8(x[i]).permute(1, 2, 0).cpu().numpy())
            level = ft.halve_to(a, (aw, ah))
            out.append((level.copy() if level is a else level, None))  # never keep a view of the batch
        return out

    def _planar_levels(self, batch: PlanarBatch, keep: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(RGB uint8 frame at least the thumbnail/histogram size, Y' at least the analysis size) from 4:2:0
        planes: Y' shrunk by halvings, chroma (half size already) halved alongside, then converted by the stream's
        matrix and range at the small size only; Y' becomes full-range grey (`_luma_lut`) when first needed."""
        assert self._sizes is not None and self.preset is not None
        colour = batch.colour
        full = colour.range == "pc"
        lut = self._luma_lut if self._luma_lut is not None else ft.luma_lut(full)
        to_rgb = ft.ycbcr_matrix(colour.matrix, full)
        shift = batch.fmt.bit_depth - 8
        small_size = self._hist_size if self.preset.hard_cuts_cascade else self._sizes[3]
        y, u, v = batch.fmt.split(batch.data)
        out = []
        for i in keep:
            planes = [p[i].numpy() for p in (y, u, v)]
            if shift:  # 10-bit in uint16: keep the top 8 bits, as the RGB path does
                planes = [(p >> shift).astype(np.uint8) for p in planes]
            luma = ft.halve_to(planes[0], self._sizes[0])
            small_y = ft.halve_to(luma, small_size)
            sw, sh = small_y.shape[1], small_y.shape[0]
            chroma = [ft.halve_to(c, (sw, sh)) for c in planes[1:]]
            chroma = [c if c.shape == small_y.shape else cv2.resize(c, (sw, sh), interpolation=cv2.INTER_LINEAR)
                      for c in chroma]  # fmt: skip
            small = cv2.transform(cv2.merge([small_y, *chroma]), to_rgb)
            out.append((small, luma.copy() if luma is planes[0] else luma))  # no view of the pooled buffer
        self._luma_lut = lut
        return out

    # -- per frame --
    def _push(self, level: np.ndarray, luma: np.ndarray | None, frame: int, time: Fraction) -> None:
        """`level`: RGB frame, at least the analysis size when `luma` is None (grey images are made from it), else
        at least the thumbnail/histogram size beside that Y' plane of at least the analysis size."""
        assert self._sizes is not None and self.preset is not None
        s_thumb = self._sizes[3]
        cascade = self.preset.hard_cuts_cascade
        small = ft.halve_to(level, self._hist_size) if cascade else level
        thumb = ft.resize(small, s_thumb).astype(np.float32) / 255.0
        rec = _Rec(
            pos=self.stats.frames,
            frame=frame,
            time=time,
            thumb=thumb,
            hist=ft.histogram(small) if cascade else None,
            luma=ft.mean_luma(thumb),
            level=level if luma is None else luma,
        )
        self.stats.frames += 1
        self.stats.frame_indices.append(frame)
        if self._win:
            prev = self._win[-1]
            if prev.hist is not None and rec.hist is not None:
                rec.hist_diff = ft.hist_diff(prev.hist, rec.hist)
            rec.thumb_diff = ft.mean_abs_diff(rec.thumb, prev.thumb)
        self._win.append(rec)
        if rec.pos > 0:
            if not cascade:
                self._dissim(rec.pos)
                self._flow(rec.pos)
            if "motion" in self.options.detectors:
                self._motion_of(rec.pos)
        if "soft" in self.options.detectors:
            self._fade_step(rec)
        last = rec.pos
        while self._hard_next + HARD_CONTEXT <= last:
            self._decide_hard(self._hard_next, last)
            self._hard_next += 1
        while self._soft_next + max(SOFT_SCALES) <= last:
            self._decide_soft(self._soft_next, last)
            self._soft_next += 1

    def _grey(self, r: _Rec) -> np.ndarray:
        if r.grey is None:
            assert r.level is not None
            if r.level.ndim == 2:  # Y' of a planar batch
                assert self._luma_lut is not None
                r.grey = cv2.LUT(r.level, self._luma_lut)
            else:
                r.grey = ft.grey(r.level)
            r.level = None
        return r.grey

    def _g_ssim(self, r: _Rec) -> np.ndarray:
        if r.g_ssim is None:
            assert self._sizes is not None
            r.g_ssim = ft.resize(self._grey(r), self._sizes[1])
        return r.g_ssim

    def _g_flow(self, r: _Rec) -> np.ndarray:
        if r.g_flow is None:
            assert self._sizes is not None
            r.g_flow = ft.resize(self._grey(r), self._sizes[2])
        return r.g_flow

    def _rec(self, pos: int) -> _Rec | None:
        if not self._win:
            return None
        i = pos - self._win[0].pos
        return self._win[i] if 0 <= i < len(self._win) else None

    def _dissim(self, pos: int) -> float:
        r, p = self._rec(pos), self._rec(pos - 1)
        if r is None or p is None:
            return 0.0
        if r.dissim is None:
            r.dissim = 1.0 - ft.ssim(self._g_ssim(p), self._g_ssim(r))
            self.stats.ssim_pairs += 1
        return r.dissim

    def _flow(self, pos: int) -> tuple[float, float, float]:
        r, p = self._rec(pos), self._rec(pos - 1)
        if r is None or p is None:
            return 0.0, 0.0, 0.0
        if r.flow is None:
            r.flow = ft.flow_features(self._g_flow(p), self._g_flow(r))
            self.stats.flow_pairs += 1
        return r.flow

    def _motion_of(self, pos: int) -> float:
        r = self._rec(pos)
        if r is None:
            return 0.0
        if r.motion is None:
            saved = self.flow_reuse.magnitude_at(pos, r.frame) if self.flow_reuse is not None else None
            if saved is not None:
                self.stats.flow_reused += 1
                r.motion = saved
            else:
                r.motion = self._flow(pos)[0]
        return r.motion

    def _unexplained(self, first: int, last: int, *, coarse: bool = False) -> float:
        """Share of the raw change over pairs first..last that the optical flow does not explain; `coarse`:
        flow between the thumbnails (~7× cheaper than at 256 px)."""
        resid = raw = 0.0
        for q in range(first, last + 1):
            _, r, w = self._thumb_flow(q) if coarse else self._flow(q)
            resid += r
            raw += w
        return resid / raw if raw > 0 else 0.0

    def _thumb_flow(self, pos: int) -> tuple[float, float, float]:
        r, p = self._rec(pos), self._rec(pos - 1)
        if r is None or p is None:
            return 0.0, 0.0, 0.0
        if r.thumb_flow is None:
            r.thumb_flow = ft.flow_features(ft.thumb_grey(p.thumb), ft.thumb_grey(r.thumb))
        return r.thumb_flow

    # -- hard + motion --
    def _decide_hard(self, j: int, last: int) -> None:
        r, p = self._rec(j), self._rec(j - 1)
        if r is None or p is None:
            return
        lo, hi = max(1, j - HARD_CONTEXT), min(last, j + HARD_CONTEXT)
        if "motion" in self.options.detectors:
            self._decide_motion(j, lo, hi)
        if "hard" not in self.options.detectors and "soft" not in self.options.detectors:
            return
        assert self.preset is not None
        if r.luma < FADE_DARK_LUMA and p.luma < FADE_DARK_LUMA:
            return  # SSIM of two black frames measures noise
        if self.preset.hard_cuts_cascade and r.hist_diff < CASCADE_HIST_GATE and r.thumb_diff < CASCADE_THUMB_GATE:
            return
        # every test below must pass; the cheap thumbnail one goes first, so the frames of a fade or dissolve
        # (which pass the cascade gate) cost no SSIM of the pair and its neighbours
        a, b = self._rec(max(0, j - 2)), self._rec(min(last, j + 1))
        if a is not None and b is not None:
            wide = ft.mean_abs_diff(b.thumb, a.thumb)
            if wide > 0 and r.thumb_diff / wide < HARD_MIN_CONCENTRATION:
                return
        s = self._dissim(j)
        if s < HARD_MIN_DISSIM:
            return
        neighbours = [self._dissim(q) for q in range(lo, hi + 1) if q != j]
        base = float(np.median(neighbours)) if neighbours else 0.0
        if s < HARD_SPIKE_RATIO * base + HARD_SPIKE_MARGIN:
            return
        _, resid, raw = self._flow(j)
        if raw > 0 and resid / raw < HARD_MIN_UNEXPLAINED:
            return
        self._hard.append(Event(frame=r.frame, time=r.time, kind="hard", score=round(s, 4)))

    def _decide_motion(self, j: int, lo: int, hi: int) -> None:
        r = self._rec(j)
        m = self._motion_of(j)
        if r is None or m < MOTION_MIN_MAG:
            return
        neighbours = [self._motion_of(q) for q in range(lo, hi + 1) if q != j]
        if not neighbours or m < max(neighbours):
            return  # only the local maximum of a burst
        base = float(np.median(neighbours))
        if m >= MOTION_SPIKE_RATIO * max(base, 1e-6):
            self._motion.append(Event(frame=r.frame, time=r.time, kind="motion", score=round(m / max(base, 1e-6), 3)))

    # -- soft: dissolves --
    def _decide_soft(self, c: int, last: int) -> None:
        if "soft" not in self.options.detectors:
            return
        mid = self._rec(c)
        if mid is None:
            return
        fits: list[tuple[float, int]] = []  # (relative residual, half-width) of windows that look like a blend
        for h in SOFT_SCALES:
            a, b = self._rec(c - h), self._rec(c + h)
            if a is None or b is None or c + h > last:
                break
            if min(a.luma, b.luma, mid.luma) < FADE_DARK_LUMA:
                continue  # through black: a fade, found by `_fade_step`
            alpha, rel, dab = ft.blend_fit(a.thumb, mid.thumb, b.thumb, SOFT_MIN_ENDPOINT_DIFF)
            lo_a, hi_a = SOFT_ALPHA_RANGE
            if dab < SOFT_MIN_ENDPOINT_DIFF or not lo_a <= alpha <= hi_a or rel > SOFT_MAX_RESIDUAL:
                continue
            if h >= 2:
                q1, q3 = self._rec(c - h // 2), self._rec(c + h // 2)
                assert q1 is not None and q3 is not None
                dd = cv2.norm(b.thumb, a.thumb, cv2.NORM_L2SQR)  # > 0: the ends differ (dab passed)
                a1 = ft.blend_alpha(a.thumb, q1.thumb, b.thumb, dd)
                a3 = ft.blend_alpha(a.thumb, q3.thumb, b.thumb, dd)
                if not a1 + SOFT_MIN_ALPHA_STEP < alpha < a3 - SOFT_MIN_ALPHA_STEP:
                    continue
            if ft.changed_share(a.thumb, b.thumb, SOFT_CHANGE_LEVEL) < SOFT_MIN_CHANGED_AREA:
                continue
            fits.append((rel, h))
        # the best window is the best-fitting one that flow cannot explain: trying them best first, the first
        # that passes is it, and flow (the costly part) runs on as few windows as possible
        best: tuple[float, int, int] | None = None
        assert self.preset is not None
        gate = self.preset.soft_flow_gate
        for rel, h in sorted(fits, key=lambda f: f[0]):
            if self._blend_not_motion(c - h + 1, c + h, gate):
                a, b = self._rec(c - h), self._rec(c + h)
                assert a is not None and b is not None
                start, end = self._span(a, b, c - h, c + h)
                best = (rel, start, end)
                break
        if best is None:
            if self._soft_group and c - self._soft_group[-1].pos > SOFT_GROUP_GAP:
                self._close_soft_group()
            return
        rel, start, end = best
        if self._soft_group and c - self._soft_group[-1].pos > SOFT_GROUP_GAP:
            self._close_soft_group()
        self._soft_group.append(_Candidate(c, mid.frame, mid.time, max(0.0, 1.0 - rel), start, end))

    def _blend_not_motion(self, first: int, last: int, gate: bool) -> bool:
        """Flow does not explain the change over pairs first..last (thumbnails first when `gate`)."""
        if gate:
            coarse = self._unexplained(first, last, coarse=True)
            if coarse < SOFT_GATE_MOTION or coarse >= SOFT_GATE_BLEND:
                return coarse >= SOFT_GATE_BLEND
        return self._unexplained(first, last) >= SOFT_MIN_UNEXPLAINED

    def _span(self, a: _Rec, b: _Rec, first: int, last: int) -> tuple[int, int]:
        """First and last source frame of the blend between records a and b."""
        dd = cv2.norm(b.thumb, a.thumb, cv2.NORM_L2SQR)
        inside = []
        for q in range(first, last + 1):
            r = self._rec(q)
            assert r is not None
            if SOFT_SPAN_ALPHA < ft.blend_alpha(a.thumb, r.thumb, b.thumb, dd) < 1 - SOFT_SPAN_ALPHA:
                inside.append(r.frame)
        return (min(inside), max(inside)) if inside else (a.frame, b.frame)

    def _close_soft_group(self) -> None:
        g = self._soft_group
        if not g:
            return
        self._soft_group = []
        # centres pass symmetrically around the middle of a linear blend: the middle candidate is its centre
        c = g[len(g) // 2]
        score = max(x.score for x in g)
        start, end = min(x.start for x in g), max(x.end for x in g)
        self._soft.append(Event(frame=c.frame, time=c.time, kind="soft", score=round(score, 4), start=start, end=end))

    # -- soft: fades --
    def _fade_step(self, rec: _Rec) -> None:
        dark = rec.luma < FADE_DARK_LUMA
        if dark:
            if self._ramp_last is not None:  # dark again right after a ramp: the ramp ended
                self._emit_fade()
            if self._dark_start is None:
                self._dark_start = rec
                q = rec.pos
                while q > 0 and rec.pos - q < FADE_MAX_RAMP:
                    cur, prev = self._rec(q), self._rec(q - 1)
                    if cur is None or prev is None or prev.luma < cur.luma + FADE_MIN_STEP:
                        break
                    q -= 1
                self._fade_start = q
            self._dark_last = rec
            return
        if self._dark_start is None:
            return
        prev = self._ramp_last or self._dark_last
        assert prev is not None
        rising = rec.luma > prev.luma + FADE_MIN_STEP and (
            self._dark_last is None or rec.pos - self._dark_last.pos <= FADE_MAX_RAMP
        )
        if rising:
            self._ramp_last = rec
        else:
            self._emit_fade()

    def _emit_fade(self) -> None:
        ds, dl = self._dark_start, self._dark_last
        end = self._ramp_last or dl
        self._dark_start = self._dark_last = self._ramp_last = None
        if ds is None or dl is None or end is None:
            return
        if ds.pos == 0 or (ds.pos - self._fade_start < 1 and end.pos == dl.pos):
            return  # starts black, or a black insert with no ramps: not a fade between shots
        start = self._rec(self._fade_start)
        centre = self._rec((ds.pos + dl.pos) // 2)
        start_frame = start.frame if start is not None else ds.frame
        c = centre if centre is not None else dl
        self._soft.append(Event(frame=c.frame, time=c.time, kind="soft", score=1.0, start=start_frame, end=end.frame))

    # -- end --
    def _merge(self) -> list[Event]:
        """Soft events merged where they overlap (a fade's halves also pass the blend test); hard and motion
        events inside a soft span dropped; motion events on a cut dropped."""
        soft: list[Event] = []
        for e in sorted(self._soft, key=lambda e: e.start or e.frame):
            if soft and e.start is not None and soft[-1].end is not None and e.start <= soft[-1].end:
                o = soft[-1]
                keep = o if (o.score >= e.score or o.score == 1.0) and e.score != 1.0 else e
                soft[-1] = Event(
                    frame=keep.frame,
                    time=keep.time,
                    kind="soft",
                    score=max(o.score, e.score),
                    start=min(o.start or o.frame, e.start),
                    end=max(o.end or o.frame, e.end or e.frame),
                )
            else:
                soft.append(e)

        def inside(f: int) -> bool:
            return any(s.start is not None and s.end is not None and s.start < f <= s.end for s in soft)

        hard = [e for e in self._hard if not inside(e.frame)] if "hard" in self.options.detectors else []
        cuts = {e.frame for e in hard}
        motion = [e for e in self._motion if not inside(e.frame) and not cuts & {e.frame - 1, e.frame, e.frame + 1}]
        keep_soft = soft if "soft" in self.options.detectors else []
        return sorted([*hard, *keep_soft, *motion], key=lambda e: (e.frame, e.kind))
