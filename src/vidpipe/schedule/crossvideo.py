"""Cross-video micro-batches: frames of several videos run through one frame-independent stage together, as seed
001 §0 allows when component, model_signature, runtime, the preprocessing that reaches the model and the
resolution bucket all match, with a hard cap of 8 videos per micro-batch.

The bucket is the seed's rule for what may share a batch; one tensor batch also needs frames of one exact shape
and dtype, so those are part of the key too (two 720-bucket videos of 1280×720 and 960×720 form separate
micro-batches). Padding them to a common size would change the border pixels against a solo run.

`plan` is pure: it decides which frames go together, keeping each video's frames in order. `gather` builds a
micro-batch's input tensor, `scatter` splits its output back per video, and `run` does all three over a
function, so each video's frames come out exactly as if it had been processed alone (for a function whose
output frame depends on its input frame only).

A recurrent stage (RVM matting) is not frame-independent, but its videos' next batches can still step together:
`JointSteps` runs the batches of videos whose copies of the stage have one signature and whose batches have one
shape (T frames of one size) as one `RecurrentStage.step_many` call, each video with its own state (RVM's states
are per batch element), at most the stage's planned batch of frames (B·T) and `max_videos` videos at a time.
Everything else about the engine stays the video's own runner's: a video whose batch holds a cut past its first
frame, or whose runner emits a part of the stream, runs alone; and a joint step that fails (out of memory
included) changes no state (steps are pure), so each of its videos re-runs alone under its runner's OOM policy,
and later joint steps take half as many videos.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import Interrupted, StageError, UsageError
from ..frames import FrameBatch
from ..stages.base import Stage
from ..stages.temporal import RecurrentStage
from .costs import Runtime, bucket_for
from .oom import is_oom, release_cached
from .temporal import RecurrentRunner

log = logging.getLogger(__name__)

#: seed 001 §0: hard cap on the videos in one cross-video micro-batch
MAX_VIDEOS_PER_MICRO_BATCH = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchKey:
    """What must match for frames of different videos to share a micro-batch."""

    component: str
    model_signature: str
    runtime: Runtime
    #: parameters that change what the model sees (analysis fps/size, resize policy), as sorted (name, value)
    preprocessing: tuple[tuple[str, str], ...]
    bucket: int
    #: (channels, height, width) of one frame, and its dtype: one tensor batch needs them identical
    frame_shape: tuple[int, int, int]
    dtype: str

    @staticmethod
    def make(
        *,
        component: str,
        model_signature: str,
        runtime: Runtime,
        preprocessing: Mapping[str, Any],
        frames: FrameBatch,
    ) -> BatchKey:
        return BatchKey(
            component=component,
            model_signature=model_signature,
            runtime=runtime,
            preprocessing=tuple(sorted((k, str(v)) for k, v in preprocessing.items())),
            bucket=bucket_for(frames.width, frames.height),
            frame_shape=(int(frames.data.shape[1]), frames.height, frames.width),
            dtype=str(frames.data.dtype).removeprefix("torch."),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """`frames` frames of `video` waiting for the stage."""

    video: str
    key: BatchKey
    frames: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """Frames `start`..`stop - 1` of the pending frames of `video`."""

    video: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class MicroBatch:
    key: BatchKey
    parts: tuple[Part, ...]

    @property
    def frames(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def videos(self) -> tuple[str, ...]:
        return tuple(p.video for p in self.parts)


def plan(
    pending: Sequence[Pending], batch_size: int, *, max_videos: int = MAX_VIDEOS_PER_MICRO_BATCH
) -> list[MicroBatch]:
    """Micro-batches of at most `batch_size` frames from at most `max_videos` videos, all of one key.

    Groups keep the order in which their keys first appear; inside a group videos are taken in the order given
    and each video's frames in order, a video spilling into the next micro-batch when one is full. Every pending
    frame is in exactly one micro-batch."""
    if batch_size < 1:
        raise UsageError(f"batch size must be ≥ 1, got {batch_size}")
    if not 1 <= max_videos <= MAX_VIDEOS_PER_MICRO_BATCH:
        raise UsageError(f"max_videos must be 1..{MAX_VIDEOS_PER_MICRO_BATCH} (seed 001 hard cap), got {max_videos}")
    seen: set[str] = set()
    groups: dict[BatchKey, list[Pending]] = {}
    for p in pending:
        if p.video in seen:
            raise UsageError(f"video {p.video!r} is pending twice; give each video's frames once")
        if p.frames < 0:
            raise UsageError(f"video {p.video!r} has {p.frames} pending frames")
        seen.add(p.video)
        groups.setdefault(p.key, []).append(p)
    out: list[MicroBatch] = []
    for key, videos in groups.items():
        parts: list[Part] = []
        count = 0
        for v in videos:
            pos = 0
            while pos < v.frames:
                if count == batch_size or len(parts) == max_videos:
                    out.append(MicroBatch(key=key, parts=tuple(parts)))
                    parts, count = [], 0
                take = min(v.frames - pos, batch_size - count)
                parts.append(Part(video=v.video, start=pos, stop=pos + take))
                pos += take
                count += take
        if parts:
            out.append(MicroBatch(key=key, parts=tuple(parts)))
    return out


def gather(mb: MicroBatch, frames: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The input tensor of a micro-batch: its parts' frames, concatenated in the plan's order."""
    return torch.cat([frames[p.video][p.start : p.stop] for p in mb.parts])


def scatter(mb: MicroBatch, output: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """A micro-batch's output cut back into (video, frames) in the plan's order; the function must have made one
    output frame per input frame."""
    if int(output.shape[0]) != mb.frames:
        raise StageError(
            f"cross-video batching needs one output frame per input frame; got {int(output.shape[0])} for "
            f"{mb.frames} (only frame-independent 1:1 stages may be batched across videos)"
        )
    pieces: list[tuple[str, torch.Tensor]] = []
    start = 0
    for p in mb.parts:
        pieces.append((p.video, output[start : start + len(p)]))
        start += len(p)
    return pieces


def run(
    batches: Mapping[str, FrameBatch],
    keys: Mapping[str, BatchKey],
    fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    *,
    max_videos: int = MAX_VIDEOS_PER_MICRO_BATCH,
    record: Callable[[MicroBatch], None] | None = None,
) -> dict[str, FrameBatch]:
    """Each video's batch through `fn` in cross-video micro-batches; returns each video's frames with its own
    timing and colour, in its own order. `record` sees each micro-batch before it runs (reports, tests)."""
    pending = [Pending(video=v, key=keys[v], frames=len(b)) for v, b in batches.items()]
    data = {v: b.data for v, b in batches.items()}
    outputs: dict[str, list[torch.Tensor]] = {v: [] for v in batches}
    for mb in plan(pending, batch_size, max_videos=max_videos):
        if record is not None:
            record(mb)
        for video, piece in scatter(mb, fn(gather(mb, data))):
            outputs[video].append(piece)
    result: dict[str, FrameBatch] = {}
    for v, b in batches.items():
        pieces = outputs[v]
        result[v] = b.with_data(torch.cat(pieces) if pieces else fn(b.data))
    return result


def steps_across_videos(stage: Stage) -> bool:
    """`stage` may run several videos' batches in one call, each with its own state (`JointSteps`)."""
    return isinstance(stage, RecurrentStage)


class JointSteps:
    """One recurrent stage's steps across videos (module docstring). `solo(video, batch)` runs a video's batch
    through its own scheduled stage (its runner, its OOM policy); `record` sees each joint step as a micro-batch
    (reports, tests)."""

    def __init__(
        self,
        solo: Callable[[str, FrameBatch], FrameBatch | None],
        *,
        max_videos: int = MAX_VIDEOS_PER_MICRO_BATCH,
        record: Callable[[MicroBatch], None] | None = None,
    ) -> None:
        if not 1 <= max_videos <= MAX_VIDEOS_PER_MICRO_BATCH:
            raise UsageError(
                f"max_videos must be 1..{MAX_VIDEOS_PER_MICRO_BATCH} (seed 001 hard cap), got {max_videos}"
            )
        self.solo = solo
        self.max_videos = max_videos
        self.record = record
        #: joint steps that failed and re-ran video by video
        self.fallbacks = 0
        #: each video's runner and its stage's signature (fixed after setup; a background's costs a file read)
        self._signed: dict[str, tuple[RecurrentRunner, str]] = {}

    def _signature(self, video: str, runner: RecurrentRunner) -> str:
        known = self._signed.get(video)
        if known is None or known[0] is not runner:
            known = (runner, json.dumps(runner.stage.signature(), sort_keys=True, default=str))
            self._signed[video] = known
        return known[1]

    def forget(self, video: str) -> None:
        """`video` has ended."""
        self._signed.pop(video, None)

    def _key(self, video: str, r: RecurrentRunner, b: FrameBatch) -> BatchKey | None:
        """What must match for a joint step; None: this batch runs alone."""
        if len(b) == 0 or r.emit_from != 0 or r.emit_to is not None or any(_cut(r, ix) for ix in b.index[1:]):
            return None
        sig = self._signature(video, r)
        return BatchKey.make(
            component=r.stage.name, model_signature=sig, runtime="inprocess", preprocessing={}, frames=b
        )

    def run(
        self, batches: Mapping[str, FrameBatch], runners: Mapping[str, RecurrentRunner]
    ) -> dict[str, FrameBatch | None]:
        """Each video's batch through its recurrent stage, its own state advanced; outputs by video."""
        out: dict[str, FrameBatch | None] = {}
        groups: dict[tuple[BatchKey, int], list[str]] = {}  # and T: a B×T batch has one length
        for vid, b in batches.items():
            key = self._key(vid, runners[vid], b)
            if key is None:
                out[vid] = self.solo(vid, b)
            else:
                groups.setdefault((key, len(b)), []).append(vid)
        for (key, frames), vids in groups.items():
            width = min(self.max_videos, runners[vids[0]].oom.size // frames)
            for at in range(0, len(vids), max(1, width)):
                chunk = vids[at : at + max(1, width)]
                if len(chunk) == 1:
                    out[chunk[0]] = self.solo(chunk[0], batches[chunk[0]])
                else:
                    out.update(self._joint(key, chunk, batches, runners))
        return out

    def _joint(
        self, key: BatchKey, vids: list[str], batches: Mapping[str, FrameBatch], runners: Mapping[str, RecurrentRunner]
    ) -> dict[str, FrameBatch | None]:
        rs = [runners[v] for v in vids]
        frames = [batches[v] for v in vids]
        states = [None if _cut(r, b.index[0]) else r.state for r, b in zip(rs, frames, strict=True)]
        why = ""
        try:
            results = rs[0].stage.step_many(frames, states)
        except Interrupted:
            raise
        except Exception as e:
            # only a description is kept: the exception's traceback pins the failed attempt's tensors
            why = "out of memory" if is_oom(e) else f"{type(e).__name__}: {e}"
        if not why:
            for r, b, (y, state) in zip(rs, frames, results, strict=True):
                if len(y) != len(b):
                    raise StageError(f"{r.stage.name}: step_many returned {len(y)} frames for {len(b)}")
                r.state = state
            if self.record is not None:
                self.record(
                    MicroBatch(key=key, parts=tuple(Part(video=v, start=0, stop=len(batches[v])) for v in vids))
                )
            return {v: y for v, (y, _) in zip(vids, results, strict=True)}
        self.fallbacks += 1
        self.max_videos = max(1, self.max_videos // 2)
        release_cached(frames[0].device)
        log.warning(
            "%s: a step of %d videos together failed (%s); each runs alone, later steps take at most %d videos",
            rs[0].stage.name,
            len(vids),
            why,
            self.max_videos,
        )
        return {v: self.solo(v, b) for v, b in zip(vids, frames, strict=True)}


def _cut(r: RecurrentRunner, frame: int) -> bool:
    """A hard cut at `frame` resets `r`'s state (the runner's own rule: its cuts given up front and its board's)."""
    return frame in r.cuts or (r.board is not None and r.board.hard_cut(frame))
