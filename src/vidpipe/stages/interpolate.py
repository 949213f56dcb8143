"""`interpolate`: RIFE frame interpolation to a target rate (`fps=`) or a multiplier (`multi=`), streaming.

- Model by registry name (default `rife-hdv3`), cache name or weights path; loaded once in `setup` on the
  stage's device, fp16 on CUDA by default, fp32 on the CPU. Any IFNet layout `models.archs.ifnet` reads.
- Timing comes from `stages.timeline.Planner` in exact `Fraction`s. The source is planned on its constant-rate
  grid: frame i at `start + i/src_rate` (`src_rate` = the incoming `StreamSpec.rate`, else its nominal rate;
  `start` = the first frame's time), so the output is exactly constant-rate and covers
  `[start, start + n/src_rate)`, the input's duration. A source whose pts stray from that grid by more than
  half a frame (VFR) is re-timed by frame count; that is logged once and stated in `report()`.
- Output time base: the coarsest one that holds both the source ticks and the output period,
  `gcd(src_time_base, 1/rate)` (1/3000 for a 1/1000 source at 60 fps), so every output pts is exact. Should
  that not fit FFmpeg's 32-bit rationals, `1/rate` is used (pts stay consecutive integers; only the start is
  rounded to the nearest output tick).
- Each planned frame at τ = 0 is its source frame, bit for bit. Other frames run the model on their pair; all
  model work of one batch goes through the network together. RIFE 4.x takes τ directly; HDv3 makes τ = 1/2
  only, so τ is rounded to the nearest multiple of 1/2**depth and reached by mid-point bisection, one network
  call per bisection level for all pairs of the batch (`timeline.bisection_schedule`).
- Scene cuts: a pair judged a cut is never synthesised: its frames are the nearer source frame
  (`scene_cut="fill"`) or a linear blend (`"blend"`). Every cut is listed by `report()` (the manifest hook;
  `signature()` holds parameters only). Who judges:
  - with a cut detector earlier in the run (`vidpipe run --cuts`), its `CutBoard` alone (`use_cuts`): a pair
    that ends on a hard cut or touches a soft transition (dissolve, fade) is a cut. The detector's decisions
    replace the thumbnail check rather than add to it: it compares each pair with its neighbours and asks
    optical flow whether motion explains the change, so fast motion (which can push thumbnails past any fixed
    threshold, and would then be filled with a held frame, a visible judder) is not a cut, while dissolves,
    which no single pair shows, are; the frames the run treats as cuts are then those of its manifest's events.
  - otherwise a pair whose score (1 − SSIM of 32×32 grey thumbnails) is above `cut_threshold`.
- Memory: the stage holds the last two source frames between batches (the planner finalises a frame one source
  frame late, so a frame still pending may need the pair before the newest frame): O(batch), never O(video).
- 8-bit frames come back as uint8, deeper ones as uint16, the model working in float; an alpha plane is not
  seen by the model and is blended linearly at the frame's τ.
- Interrupts (`stages.interrupt`): a run's stop check is called before each network call and, on the CPU, where
  pairs go through the network in chunks of at most `CPU_LAYER_PIXELS` (one 1080p pair, many small ones), before
  each layer of each chunk.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import ModelError, StageError, UsageError
from ..frames import Colour, FrameBatch, from_float, max_value
from ..metrics import ssim_per_frame
from ..models.archs.ifnet import VALID_SCALES, IFNetBase, IFNetHDv3
from ..models.loading import LoadedModel, load_model_info
from .base import GridRule, Reach, Stage, StreamSpec, check_dtype, resolve_dtype
from .cutboard import CutBoard, CutKind
from .interrupt import StopCheck, cpu_chunks, layer_checks, never
from .timeline import PlannedFrame, Planner, bisection_schedule

log = logging.getLogger(__name__)

SceneCut = Literal["fill", "blend"]
SCENE_CUT_MODES: tuple[SceneCut, ...] = ("fill", "blend")
#: HDv3 bisection depth: τ rounded to 1/8 of the source interval, ≤ 2.6 ms off at 24 fps (a sixth of a 60 fps
#: output period) for at most 3 network calls per pair; the timeline module's 24→60 example uses the same
DEFAULT_DEPTH = 3
#: How HDv3 runs on CUDA in fp16/bf16 (`models.ifnet_fast`; elsewhere, and for other layouts, the module as is):
#: tc: cuDNN on zero-padded widths + one Triton epilogue per convolution + CUDA graphs (`models.ifnet_tc`);
#: fast: our fused Triton convolutions + CUDA graphs (no faster than eager on the H100 at 1080p, and ~70 s of
#: autotuning on a fresh machine: docs/benchmarks.md, issue 24); torch: the module as is; auto: tc.
KERNELS = ("auto", "tc", "fast", "torch")
#: side of the grey thumbnails the cut check compares; Practical-RIFE's inference_video.py resizes to 32×32
CUT_THUMB = 32
#: a pair is a cut when 1 − SSIM of its thumbnails exceeds this. Practical-RIFE treats SSIM < 0.2 as a scene
#: change (inference_video.py); 1.0 turns the check off (the score is clamped to 0..1)
DEFAULT_CUT_THRESHOLD = 0.8
#: largest numerator/denominator of an FFmpeg AVRational (two int32s)
_AV_RATIONAL_MAX = 2**31 - 1
#: Rec. 601 luma weights, for the grey thumbnails (the cut score does not need the source's exact matrix)
_LUMA = (0.299, 0.587, 0.114)
#: source frames kept between batches: the newest one and the one before (see the module docstring)
_HOLD = 2
#: what `process`/`flush` advance (all set in `_reset`), saved by `snapshot`
_STREAM_STATE = (
    "_planner", "_start", "_n", "_held", "_held_index", "_scores", "_mids", "_cuts", "_pairs_checked", "_model_calls",
    "_model_frames", "_frames_out", "_source_frames", "_synthesized_frames", "_cut_frames", "_max_drift", "_colour",
)  # fmt: skip


def _float(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pixels of any batch dtype as float 0..1 (`frames.to_float` for bare tensors)."""
    scale = max_value(x.dtype)
    y = x.to(dtype)
    return y if scale == 1.0 else y / scale


def _frac_gcd(a: Fraction, b: Fraction) -> Fraction:
    """Largest g with a/g and b/g both integers."""
    return Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


def output_time_base(src_time_base: Fraction, rate: Fraction) -> Fraction:
    """A time base in which `start + k/rate` is a whole number of ticks for every k and every start on the
    source's ticks; `1/rate` when that would not fit a 32-bit rational."""
    tb = _frac_gcd(Fraction(src_time_base), 1 / Fraction(rate))
    if tb.numerator > _AV_RATIONAL_MAX or tb.denominator > _AV_RATIONAL_MAX:
        return 1 / Fraction(rate)
    return tb


def planned_count(
    n: int, src_rate: Fraction, *, fps: Fraction | None, multi: int | None, fill_tail: bool | None
) -> int:
    """Output frames the planner gives for `n` constant-rate source frames (its rules, in closed form)."""
    if n < 1:
        return 0
    if multi is not None:
        return n * multi if fill_tail else (n - 1) * multi + 1
    assert fps is not None
    if fill_tail is False:  # grid points up to the last source frame
        return math.floor((n - 1) * fps / src_rate) + 1
    return math.ceil(n * fps / src_rate)


def _copied(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["_planner"] = copy.deepcopy(state["_planner"])
    out["_scores"], out["_mids"], out["_cuts"] = dict(state["_scores"]), dict(state["_mids"]), list(state["_cuts"])
    return out


def thumbnails(rgb: torch.Tensor) -> torch.Tensor:
    """N×3×H×W float 0..1 → N×1×32×32 grey (area average: small motion and noise wash out)."""
    w = torch.tensor(_LUMA, device=rgb.device, dtype=torch.float32).view(1, 3, 1, 1)
    grey = (rgb.float() * w).sum(1, keepdim=True)
    return F.adaptive_avg_pool2d(grey, (CUT_THUMB, CUT_THUMB))


def cut_scores(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """1 − SSIM (global mean of the local SSIM map, valid window), clamped to 0..1, of thumbnail pairs."""
    return [float(x) for x in (1 - ssim_per_frame(a, b)).clamp(0.0, 1.0).cpu()]


class Interpolate(Stage):
    name = "interpolate"
    context = 1
    unit = "frame_pair"
    #: its held frame, timeline and counters are restored by `snapshot`/`restore`, so an OOM re-runs a batch
    can_snapshot = True
    #: output times count source frames from the first (`segment_grid`): a dropped frame moves all later ones
    counts_frames = True

    def __init__(
        self,
        model: str | Path = "rife-hdv3",
        *,
        fps: Fraction | None = None,
        multi: int | None = None,
        scene_cut: SceneCut = "fill",
        cut_threshold: float = DEFAULT_CUT_THRESHOLD,
        depth: int = DEFAULT_DEPTH,
        scale: float = 1.0,
        dtype: str = "auto",
        fill_tail: bool | None = None,
        kernels: str = "auto",
    ) -> None:
        """`fill_tail`: as `timeline.Planner` (default: True for fps, False for multi, where n frames ×N give
        (n−1)·N+1; True holds the last frame N−1 more times so the output lasts exactly as long as the input, which
        is what `vidpipe run --multi` asks for: the audio it copies ends with the input's video)."""
        if (fps is None) == (multi is None):
            raise UsageError("give exactly one target: fps=Fraction(...) or multi=N")
        if fps is not None and (not isinstance(fps, Fraction | int) or isinstance(fps, bool) or fps <= 0):
            raise UsageError(f"fps must be a positive Fraction (e.g. Fraction(60000, 1001)), got {fps!r}")
        if multi is not None and (not isinstance(multi, int) or isinstance(multi, bool) or multi < 1):
            raise UsageError(f"multi must be an integer ≥ 1 (2, 4, …), got {multi!r}")
        if scene_cut not in SCENE_CUT_MODES:
            raise UsageError(f"invalid scene_cut {scene_cut!r}; valid: {', '.join(SCENE_CUT_MODES)}")
        if not 0.0 < cut_threshold <= 1.0:
            raise UsageError(f"cut_threshold must be in (0, 1] (1 turns cut detection off), got {cut_threshold}")
        if not isinstance(depth, int) or depth < 1:
            raise UsageError(f"depth must be an integer ≥ 1, got {depth!r}")
        if scale not in VALID_SCALES:
            raise UsageError(f"invalid scale {scale}; valid: {', '.join(map(str, VALID_SCALES))} (0.5 for ≥ 4K)")
        check_dtype(dtype)
        if kernels not in KERNELS:
            raise UsageError(f"invalid RIFE kernels {kernels!r}; valid: {', '.join(KERNELS)}")
        self.kernels = kernels
        self.model_ref = model
        self.fps = Fraction(fps) if fps is not None else None
        self.multi = multi
        self.scene_cut: SceneCut = scene_cut
        self.cut_threshold = float(cut_threshold)
        self.depth = depth
        self.scale = float(scale)
        self.dtype_request = dtype  # what was asked (may be auto); dtype_name is what setup resolved it to
        self.dtype_name = dtype
        self.fill_tail = fill_tail
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.loaded: LoadedModel | None = None
        self._loaded_on: tuple[torch.device, torch.dtype] | None = None
        #: HDv3's fast path on CUDA (`models.ifnet_fast`), made at set-up where `kernels` and the device allow
        self._fast: Any = None
        #: the run's stop request (`set_stop_check`); `never` for a stage used on its own
        self.stop_check: StopCheck = never
        #: the run's detected cuts (`use_cuts`); None: the thumbnail check judges cuts
        self._board: CutBoard | None = None
        self._reset()

    def _reset(self) -> None:
        self.src_rate = Fraction(0)
        self.rate = Fraction(0)
        self.time_base = Fraction(1)
        self._planner: Planner | None = None
        self._start: Fraction | None = None
        self._n = 0  # source frames seen
        self._held: torch.Tensor | None = None  # the last ≤ _HOLD source frames
        self._held_index: list[int] = []  # their source frame numbers (`FrameBatch.index`)
        #: (score, cut kind or None) of pair (i, i+1), for pairs still reachable
        self._scores: dict[int, tuple[float, CutKind | None]] = {}
        self._mids: dict[tuple[int, Fraction], torch.Tensor] = {}  # HDv3 mid-points of those pairs
        self._cuts: list[dict[str, Any]] = []
        self._pairs_checked = 0
        self._model_calls = 0
        self._model_frames = 0
        self._frames_out = 0
        self._source_frames = 0
        self._synthesized_frames = 0
        self._cut_frames = 0
        self._max_drift = Fraction(0)
        self._colour = Colour()

    # -- setup --
    @property
    def model(self) -> IFNetBase:
        assert self.loaded is not None, "setup() first"
        module = self.loaded.module
        assert isinstance(module, IFNetBase)
        return module

    def setup(self, device: torch.device, spec: StreamSpec) -> StreamSpec:
        self.device = torch.device(device)
        self.dtype_name, self.dtype = resolve_dtype(self.dtype_request, self.device)
        if self._loaded_on != (self.device, self.dtype):  # once per device and dtype, never per batch
            loaded = load_model_info(self.model_ref, self.device, self.dtype, task="interpolate")
            if not isinstance(loaded.module, IFNetBase):
                raise ModelError(
                    f"{self.model_ref} is a {loaded.arch} model, not a frame interpolation (RIFE IFNet) model"
                )
            self.loaded, self._loaded_on = loaded, (self.device, self.dtype)
            self._fast = self._fast_path()
        src_rate = spec.rate or spec.nominal_rate
        if not src_rate:
            raise UsageError("interpolate needs the source frame rate; the stream declares none")
        self._reset()
        self.src_rate = Fraction(src_rate)
        self.rate = self.fps if self.fps is not None else self.src_rate * (self.multi or 1)
        self.time_base = output_time_base(spec.time_base, self.rate)
        self._planner = Planner(time_base=self.time_base, fps=self.fps, multi=self.multi, fill_tail=self.fill_tail)
        frames = spec.frames
        if frames is not None:
            frames = planned_count(frames, self.src_rate, fps=self.fps, multi=self.multi, fill_tail=self.fill_tail)
        log.info(
            "interpolate: %s (%s) on %s in %s, %s → %s fps%s",
            Path(str(self.model_ref)).name,
            self.model.variant,
            self.device,
            self.dtype_name,
            self.src_rate,
            self.rate,
            f", bisection depth {self.depth}" if not self.model.supports_timestep else "",
        )
        return spec.but(rate=self.rate, nominal_rate=self.rate, time_base=self.time_base, frames=frames)

    # -- frames --
    @torch.inference_mode()
    def process(self, batch: FrameBatch) -> FrameBatch | None:
        if self._planner is None:
            raise StageError("interpolate: process() before setup()")
        if len(batch) == 0:
            return None
        data = batch.data.to(self.device, non_blocking=True)
        window = data if self._held is None else torch.cat([self._held, data])
        first = self._n - (0 if self._held is None else len(self._held))  # source index of window[0]
        times = batch.times()
        self._colour = batch.colour
        if self._start is None:
            self._start = times[0]
        planned: list[PlannedFrame] = []
        for t in times:
            grid = self._start + self._n / self.src_rate
            self._note_drift(abs(t - grid))
            planned += self._planner.push(grid)
            self._n += 1
        window_index = self._held_index + list(batch.index)
        out = self._render(planned, window, first, window_index)
        # Clone: a slice would keep the whole batch alive.
        self._held = window[-_HOLD:].clone()
        self._held_index = window_index[-_HOLD:]
        return out

    @torch.inference_mode()
    def flush(self) -> FrameBatch | None:
        if self._planner is None or self._start is None or self._held is None:
            return None
        planned = self._planner.finish(self._start + self._n / self.src_rate)
        held, first = self._held, self._n - len(self._held)
        self._held = None
        return self._render(planned, held, first, self._held_index)

    def _note_drift(self, drift: Fraction) -> None:
        if drift > self._max_drift:
            if drift > 1 / (2 * self.src_rate) >= self._max_drift:
                log.warning(
                    "interpolate: source frame times stray %.3f s from the %s fps grid (VFR?); frames are re-timed "
                    "by count at %s fps",
                    float(drift),
                    self.src_rate,
                    self.src_rate,
                )
            self._max_drift = drift

    def _render(
        self, planned: list[PlannedFrame], window: torch.Tensor, first: int, window_index: list[int]
    ) -> FrameBatch | None:
        """`window`: source frames `first`, `first`+1, … (counted from the stream's first), whose frame numbers
        (`FrameBatch.index`, what the cut board is keyed by) are `window_index`."""
        if not planned:
            return None

        def src(i: int) -> torch.Tensor:
            if not 0 <= i - first < len(window):
                raise StageError(f"interpolate: source frame {i} is no longer held (holding {first}…)")
            return window[i - first]

        pairs = sorted({p.src for p in planned if p.tau != 0})
        cut = self._cut_pairs(pairs, src, lambda i: window_index[i - first])
        # (pair, τ) → how the frame is made: a source frame, a blend, or the model at τ (dyadic for HDv3)
        model_taus: dict[int, set[Fraction]] = {}
        effective: dict[tuple[int, Fraction], Fraction] = {}
        for p in planned:
            if p.tau == 0:
                continue
            if self.model.supports_timestep:
                effective[(p.src, p.tau)] = p.tau
            else:
                approx, _ = bisection_schedule([p.tau], self.depth)
                effective[(p.src, p.tau)] = approx[p.tau]
            t_eff = effective[(p.src, p.tau)]
            if t_eff not in (0, 1) and p.src not in cut:
                model_taus.setdefault(p.src, set()).add(t_eff)
        made = self._run_model(model_taus, src) if model_taus else {}
        dtype = window.dtype
        frames: list[torch.Tensor] = []
        for p in planned:
            t_eff = effective.get((p.src, p.tau), Fraction(0))
            if p.tau != 0 and p.src in cut:  # never synthesised across a cut; the exact τ decides
                self._cut_frames += 1
                if self.scene_cut == "fill":
                    frames.append(src(p.src if p.tau <= Fraction(1, 2) else p.src + 1))  # the nearer frame
                else:
                    frames.append(from_float(self._blend(src(p.src), src(p.src + 1), p.tau), dtype))
            elif t_eff == 0:
                self._source_frames += 1
                frames.append(src(p.src))  # bit-exact pass-through
            elif t_eff == 1:
                self._source_frames += 1
                frames.append(src(p.src + 1))
            else:
                self._synthesized_frames += 1
                rgb = made[(p.src, t_eff)]
                if window.shape[1] == 4:  # alpha follows the frame's τ linearly
                    a = self._blend(src(p.src)[3:], src(p.src + 1)[3:], t_eff)
                    rgb = torch.cat([rgb.float(), a])
                frames.append(from_float(rgb, dtype))
        self._frames_out += len(planned)
        return FrameBatch(
            data=torch.stack(frames).contiguous(memory_format=torch.channels_last),
            pts=[p.pts for p in planned],
            time_base=self.time_base,
            colour=self._colour,
            index=[p.index for p in planned],
        )

    @staticmethod
    def _blend(a: torch.Tensor, b: torch.Tensor, tau: Fraction) -> torch.Tensor:
        """Linear blend at τ, in float32 0..1."""
        t = float(tau)
        return _float(a, torch.float32) * (1 - t) + _float(b, torch.float32) * t

    def use_cuts(self, board: CutBoard | None) -> None:
        """The run's cut detector judges cuts instead of the thumbnail check (see the module docstring)."""
        self._board = board

    def _cut_pairs(
        self, pairs: list[int], src: Callable[[int], torch.Tensor], frame_number: Callable[[int], int]
    ) -> set[int]:
        """Pairs (by left index) judged cuts; each pair is judged once and every cut recorded in `report()`."""
        if not pairs or (self._board is None and self.cut_threshold >= 1.0):
            return set()
        new = [i for i in pairs if i not in self._scores]
        if new:
            board = self._board
            if board is not None:
                verdicts = (board.before(frame_number(i + 1)) for i in new)
                judged: list[tuple[float, CutKind | None]] = [(c.score, c.kind) if c else (0.0, None) for c in verdicts]
            else:
                judged = self._thumbnail_cuts(new, src)
            for i, (s, kind) in zip(new, judged, strict=True):
                self._scores[i] = (s, kind)
                self._pairs_checked += 1
                if kind is not None:
                    assert self._start is not None
                    when = self._start + (i + 1) / self.src_rate
                    entry: dict[str, Any] = {"pair": [i, i + 1], "score": round(s, 4), "time_s": round(float(when), 6)}
                    self._cuts.append(entry | ({"kind": kind} if board is not None else {}))
                    log.info("interpolate: %s cut between source frames %d and %d (score %.3f)", kind, i, i + 1, s)
        cuts = {i for i in pairs if self._scores[i][1] is not None}
        # Later batches only ask for pairs of the held frames: forget older scores (memory stays O(1)).
        for i in [i for i in self._scores if i < self._n - _HOLD]:
            del self._scores[i]
        return cuts

    def _thumbnail_cuts(
        self, pairs: list[int], src: Callable[[int], torch.Tensor]
    ) -> list[tuple[float, CutKind | None]]:
        """(1 − SSIM of the pair's 32×32 grey thumbnails, "hard" above `cut_threshold` else None) per pair."""
        idx = sorted({j for i in pairs for j in (i, i + 1)})
        rgb = torch.stack([src(j)[:3] for j in idx])
        thumbs = thumbnails(_float(rgb, torch.float32))
        pos = {j: k for k, j in enumerate(idx)}
        scores = cut_scores(thumbs[[pos[i] for i in pairs]], thumbs[[pos[i + 1] for i in pairs]])
        return [(s, "hard" if s > self.cut_threshold else None) for s in scores]

    def _run_model(
        self, taus: dict[int, set[Fraction]], src: Callable[[int], torch.Tensor]
    ) -> dict[tuple[int, Fraction], torch.Tensor]:
        """RGB float frames at the wanted τ of each pair, every pair of the batch in one network call (per
        bisection level for HDv3)."""
        pairs = sorted(taus)
        idx = sorted({j for i in pairs for j in (i, i + 1)})
        stacked = torch.stack([src(j)[:3] for j in idx])
        rgb = _float(stacked, self.dtype)
        pos = {j: k for k, j in enumerate(idx)}
        model = self.model
        if model.supports_timestep:
            jobs = [(i, t) for i in pairs for t in sorted(taus[i])]
            left = rgb[[pos[i] for i, _ in jobs]]
            right = rgb[[pos[i + 1] for i, _ in jobs]]
            timestep = torch.tensor([float(t) for _, t in jobs], device=self.device, dtype=self.dtype)
            y = self._call(left, right, timestep)
            return {job: y[k] for k, job in enumerate(jobs)}
        # HDv3: known[(pair, position)] grows level by level; each level is one batch through the network.
        # Mid-points made in an earlier batch for a pair split across batches are reused, not made again.
        known: dict[tuple[int, Fraction], torch.Tensor] = {k: v for k, v in self._mids.items() if k[0] in taus}
        for i in pairs:
            known[(i, Fraction(0))] = rgb[pos[i]]
            known[(i, Fraction(1))] = rgb[pos[i + 1]]
        levels: dict[int, list[tuple[int, Fraction, Fraction, Fraction]]] = {}
        for i in pairs:
            _, steps = bisection_schedule(sorted(taus[i]), self.depth)
            for s in steps:
                if (i, s.mid) not in known:
                    levels.setdefault(s.level, []).append((i, s.mid, s.left, s.right))
        for level in sorted(levels):
            jobs4 = levels[level]
            left = torch.stack([known[(i, lo)] for i, _, lo, _ in jobs4])
            right = torch.stack([known[(i, hi)] for i, _, _, hi in jobs4])
            y = self._call(left, right, 0.5)
            for k, (i, mid, _, _) in enumerate(jobs4):
                known[(i, mid)] = y[k]
        # Keep the mid-points of pairs a later batch may still ask for (clones: a view keeps the whole batch).
        self._mids = {(i, t): v.clone() for (i, t), v in known.items() if i >= self._n - _HOLD and t not in (0, 1)}
        return {(i, t): known[(i, t)] for i in pairs for t in taus[i]}

    def _fast_path(self) -> Any:
        """`models.ifnet_fast`'s runner for HDv3 on CUDA in fp16/bf16 (`kernels` tc/auto or fast; one CUDA graph
        per batch shape), or None: `kernels="torch"`, another layout, the CPU, fp32."""
        if self.kernels == "torch" or self.device.type != "cuda" or self.dtype == torch.float32:
            return None
        if not isinstance(self.model, IFNetHDv3):
            return None
        from ..models.ifnet_fast import FastHDv3Runner, available_parts, available_tc_parts

        parts = available_parts(self.device) if self.kernels == "fast" else available_tc_parts(self.device)
        log.info("interpolate: HDv3 on CUDA through %s", ", ".join(parts) or "none")
        return FastHDv3Runner(self.model, parts=parts)

    def _call(self, left: torch.Tensor, right: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        self._model_calls += 1
        self._model_frames += int(left.shape[0])
        self.stop_check()
        if self._fast is not None and not isinstance(timestep, torch.Tensor) and timestep == 0.5:
            return self._fast.interpolate(left, right, self.scale)  # type: ignore[no-any-return]
        if self.device.type != "cpu":
            return self.model.interpolate(left.contiguous(), right.contiguous(), timestep, self.scale)
        # On the CPU layer by layer, in chunks of pairs (stages.interrupt.cpu_chunks): each layer runs to
        # completion there, so a layer over a whole batch of large pairs would be the work between two stop checks.
        out = []
        with layer_checks(self.model, self.stop_check):
            for part in cpu_chunks(len(left), left.shape[-2] * left.shape[-1]):
                t = timestep[part] if isinstance(timestep, torch.Tensor) else timestep
                out.append(self.model.interpolate(left[part].contiguous(), right[part].contiguous(), t, self.scale))
        return torch.cat(out)

    def set_stop_check(self, check: StopCheck) -> None:
        """The run's stop request, called before network calls and, on the CPU, pairs and layers."""
        self.stop_check = check

    # -- reporting --
    @property
    def cuts(self) -> list[dict[str, Any]]:
        """Scene cuts found so far: {"pair": [i, i+1], "score", "time_s": when frame i+1 starts}; the score is
        1 − SSIM of the thumbnails, or with a cut board the detector's event score and a "kind" (hard, soft)."""
        return list(self._cuts)

    def report(self) -> dict[str, Any]:
        """What this run's data made the stage do (for the run manifest; `signature()` stays parameter-only so
        skip logic can compare it before a run).

        Output frames, split three ways (`source_frames + synthesized_frames + cut_frames == frames_out`):
        `source_frames` are source frames passed through bit-exact (where the output time meets a source
        frame, and the held tail after the last one), `synthesized_frames` were made by the network,
        `cut_frames` lie between two shots (a copy of the nearer frame with `--scene-cut fill`, a linear blend
        with `blend`). Network work: `model_calls` forward passes computing `model_frames` frames; for HDv3 (no
        timestep input) that includes bisection mid-points never shown, so it exceeds `synthesized_frames`
        (24 → 60 fps: 2×). `interpolated_frames` is the old name of `model_frames`, kept for earlier readers."""
        return {
            "stage": self.name,
            "scene_cuts": self.cuts,
            "cut_check": "cuts stage" if self._board is not None else "thumbnails",
            "pairs_checked": self._pairs_checked,
            "model_calls": self._model_calls,
            "model_frames": self._model_frames,
            "interpolated_frames": self._model_frames,
            "frames_in": self._n,
            "frames_out": self._frames_out,
            "source_frames": self._source_frames,
            "synthesized_frames": self._synthesized_frames,
            "cut_frames": self._cut_frames,
            "source_rate": str(self.src_rate),
            "rate": str(self.rate),
            "time_base": str(self.time_base),
            "retimed_vfr": self._max_drift > 1 / (2 * self.src_rate) if self.src_rate else False,
            "max_time_drift_s": round(float(self._max_drift), 6),
        }

    # -- segments (jobs): boundaries only on the whole run's output grid --
    @property
    def reach(self) -> Reach:
        """The frame after its last output's source frame (a segment's window reads one frame past its end)."""
        return Reach(after=1)

    @property
    def starts_mid_stream(self) -> bool:
        """A segment that starts on `segment_grid` writes the frames of a whole run: the output frame at its
        start is a source frame, passed through, and every later time is counted from it."""
        return True

    def segment_grid(self, start: Fraction) -> GridRule:
        """Source frames counted from `start` at the incoming rate, output at `--fps` (None with `--multi`: any
        counted frame lies on the grid). Needs `setup()`, which reads the incoming rate."""
        if not self.src_rate:
            raise StageError("interpolate: segment_grid() before setup()")
        return GridRule(start=start, rate=self.src_rate, out_rate=self.fps)

    # -- scheduler hooks (vidpipe.schedule.chain) --
    def snapshot(self) -> dict[str, Any]:
        """The stream state, so that a batch that failed half-way (out of memory) can be undone and re-run:
        the OOM policy re-runs the same frames, and this stage must not see them twice. Containers are copied,
        tensors shared: they are replaced, never written in place, so a snapshot costs no device memory."""
        return _copied({k: getattr(self, k) for k in _STREAM_STATE})

    def restore(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Back to a `snapshot()`; the snapshot stays valid for another restore."""
        for k, v in _copied(state).items():
            setattr(self, k, v)

    def cost_signature(self) -> dict[str, Any]:
        """What a cost row is keyed by: the scene-cut settings only ever save work (a cut pair is not
        synthesised), so rows measure the worst case, every pair synthesised, and hold for any of them."""
        return {k: v for k, v in self.signature().items() if k not in ("scene_cut", "cut_threshold")}

    def signature(self) -> dict[str, Any]:
        assert self.loaded is not None, "signature() after setup()"
        return {
            "stage": self.name,
            "model": str(self.model_ref),
            "model_signature": self.loaded.signature,
            "arch": self.loaded.arch,
            "variant": self.model.variant,
            "fps": str(self.fps) if self.fps is not None else None,
            "multi": self.multi,
            "fill_tail": self.fill_tail,
            "scene_cut": self.scene_cut,
            "cut_threshold": self.cut_threshold,
            "depth": self.depth if not self.model.supports_timestep else None,
            "scale": self.scale,
            "dtype": self.dtype_name,
        }
