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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import StageError, UsageError
from ..frames import FrameBatch
from .costs import Runtime, bucket_for

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
