"""Many inputs in one run (issue 6; matting, issue 16 item 5): `vidpipe run a.mp4 clips/ @list.txt -o OUTDIR`
(`runtime.inputs` turns the arguments into jobs).

Each video keeps its own reader, writer and manifest, made as `pipeline.run` makes them; the device and one loaded
copy of each model are shared.
- The leading frame-independent stages of the chain (`frame_independent`: no context, no reach, no carried state:
  pad, resize, upscale) run in cross-video micro-batches (`schedule.crossvideo`, seed 001 §0): frames of up to 8
  videos go through a stage together when component, model signature, runtime ("inprocess"), preprocessing (the
  stages before it, the colour description) and resolution bucket all match (and, to make one tensor, the frame
  shape). Each video's frames come out as if it ran alone: the stages are frame-independent and a micro-batch only
  concatenates (bit for bit where the model's arithmetic does not depend on the batch; the CPU tests check it,
  `vidpipe bench crossvideo` reports the largest difference on a GPU).
- From the first other stage on, every video runs its own copy of the rest of the chain: copies share the loaded
  weights, never the stream state (held frames, timelines, a recurrent state). A temporal stage is stateful
  whatever its pre-roll, so RVM matting (no context, a 30-frame pre-roll) is never one copy shared by two videos.
- The first recurrent stage after them (`crossvideo.steps_across_videos`: matting) steps across videos
  (`crossvideo.JointSteps`): the next T frames of videos whose copies have one signature (model, downsample,
  output…) and whose batches have one shape run as one `step_many` call, B videos × T frames, each row with its
  own state, at most its planned batch (B·T frames) and 8 videos at a time. Each video's output is its solo run's
  (within fp32 rounding; bit for bit in the CPU tests). A batch with a cut past its first frame runs alone, and a
  joint step that fails (out of memory) changed no state: its videos re-run alone under their own OOM policy.
- Rounds: each open video hands over its next batch, the cross-video stages run over all of them, then each
  video's frames go through its own stages (the joint step among them) to its own writer. At most 8 videos are
  open at once (the micro-batch cap; more would only add decoders and host memory), each reading about
  `batch_size / open videos` frames per round when a stage gathers frames across videos, so that one round fills
  about one micro-batch (a whole batch each when none does).
- Progress (`runtime.progress`): a line (or rich task) per open video, its frames of its total, fps and ETA, plus
  the run's total, whose expected frames are exact for opened videos and estimated for the rest (`Totals`); JSON
  lines carry the same per video (`per_video`).
- A finished video is closed and its manifest written at once, so an interrupted run keeps what it finished, and
  the next input opens. With `schedule.skip_finished`, an output already finished with the same signatures is
  skipped (schedule.idempotency) and said so.
- A video whose input, output or own stages fail is reported failed and the others go on; an error in a shared
  stage (out of memory, a broken device) stops the run.
- FFmpeg's log is captured once for the whole run (its messages cannot be told apart by video) and logged at the
  end; per-video manifests carry the reader's and writer's own warnings.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import InputError, OutputError, StageError, UsageError, VidpipeError
from ..frames import FrameBatch
from ..media.info import MediaInfo
from ..media.probe import max_pixels_limit, probe
from ..media.reader import VideoReader
from ..media.threads import Consumer
from ..media.writer import VideoWriter, WriterStats, check_target
from ..paths import write_json
from ..schedule import crossvideo
from ..schedule.chain import ScheduledStage, plan_stage, share_cuts
from ..schedule.costs import CostBook, bucket_for, cost_signature
from ..schedule.idempotency import finished, model_signature, signature_fields
from ..schedule.temporal import RecurrentRunner
from ..stages.base import Reach, Stage, StreamSpec
from .device import resolve_device
from .inputs import Job, expand_inputs, output_jobs, plan_outputs, single_file
from .pipeline import (
    FFmpegLog,
    RunOptions,
    build_manifest,
    check_frame_memory,
    flush_chain,
    manifest_path,
    run_chain,
    source_spec,
    stop_request,
)
from .progress import Progress, Totals

__all__ = [
    "Job",
    "MultiResult",
    "VideoResult",
    "expand_inputs",
    "output_jobs",
    "plan_outputs",
    "run_many",
    "single_file",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class VideoResult:
    job: Job
    status: Literal["done", "skipped", "failed"]
    frames_in: int = 0
    frames_out: int = 0
    wall_s: float = 0.0
    manifest: dict[str, Any] | None = None
    #: why it was skipped, made (again) or failed
    reason: str = ""
    exit_code: int = 0


@dataclass(frozen=True, slots=True)
class MicroBatchRecord:
    """One cross-video micro-batch, as run."""

    stage: str
    bucket: int
    #: the videos (inputs) whose frames it held, in order
    videos: tuple[str, ...]
    frames: int


@dataclass(slots=True)
class MultiResult:
    videos: list[VideoResult]
    micro_batches: list[MicroBatchRecord] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def frames_out(self) -> int:
        return sum(v.frames_out for v in self.videos if v.status == "done")

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def failed(self) -> list[VideoResult]:
        return [v for v in self.videos if v.status == "failed"]


def _picture(spec: StreamSpec) -> StreamSpec:
    """`spec` without its timing, length and file: what a frame-independent stage's setup depends on (a stage
    that reads the file, `--crop auto`, is stateful: never shared)."""
    return spec.but(time_base=Fraction(1), rate=None, nominal_rate=None, frames=None, source=None)


@dataclass(slots=True)
class _Group:
    """A frame-independent stage set up for one input spec, shared by every video that feeds it that spec."""

    scheduled: ScheduledStage
    out_spec: StreamSpec
    cost_signature: str


@dataclass(slots=True)
class _Video:
    job: Job
    info: MediaInfo
    #: input spec of each stage
    specs: list[StreamSpec]
    #: the stage objects this video runs through (group copies, then its own), for its manifest
    used: list[Stage]
    #: the preprocessing of each cross-video stage (signatures of the stages before it, the colour)
    pre: list[dict[str, str]]
    suffix: list[ScheduledStage]
    signed: dict[str, Any]
    reader: VideoReader
    writer: VideoWriter
    sink: Consumer[FrameBatch, WriterStats]
    frames: Iterator[FrameBatch]
    t0: float
    #: why it is being made (the skip check's answer)
    why: str = ""
    micro_batches: int = 0


class MultiRunner:
    """Runs one stage chain (`stages`, not yet set up; used as templates) over many inputs; see the module
    docstring. `cross_video=False` runs the same rounds with every stage per video (for comparisons)."""

    def __init__(
        self,
        stages: Sequence[Stage],
        options: RunOptions | None = None,
        *,
        cross_video: bool = True,
        max_videos: int = crossvideo.MAX_VIDEOS_PER_MICRO_BATCH,
    ) -> None:
        options = options or RunOptions()
        if getattr(options, "window", None) is not None:
            raise UsageError("a time window applies to one input; run segments one by one")
        if not 1 <= max_videos <= crossvideo.MAX_VIDEOS_PER_MICRO_BATCH:
            raise UsageError(f"max_videos must be 1..{crossvideo.MAX_VIDEOS_PER_MICRO_BATCH}, got {max_videos}")
        self.templates = list(stages)
        self.options = options
        self.max_videos = max_videos
        self.device = resolve_device(options.device)
        leading = next((i for i, s in enumerate(self.templates) if not frame_independent(s)), len(self.templates))
        self.n_cross = leading if cross_video else 0
        #: the recurrent stage whose videos step together (`crossvideo.JointSteps`): the first after the
        #: cross-video ones; None: every later stage runs video by video
        self.joint_at = next(
            (i for i in range(leading, len(self.templates)) if crossvideo.steps_across_videos(self.templates[i])),
            None,
        )
        if not cross_video:
            self.joint_at = None
        self._joint = crossvideo.JointSteps(self._solo, max_videos=max_videos, record=self._record)
        self._ready: set[int] = set()
        self._groups: dict[tuple[int, StreamSpec], _Group] = {}
        self._book: CostBook | None = None
        self.micro_batches: list[MicroBatchRecord] = []
        self.stop = stop_request()
        #: this round's open videos, and those that ended in it (with their results)
        self._live: dict[str, _Video] = {}
        self._ended: list[tuple[_Video, VideoResult]] = []

    # -- stages --
    def _template(self, i: int, spec: StreamSpec) -> Stage:
        """Template `i`, set up once (its weights loaded) so that copies share them."""
        if i not in self._ready:
            self.templates[i].setup(self.device, spec)
            self._ready.add(i)
        return self.templates[i]

    def _scheduled(self, stage: Stage, spec: StreamSpec, reader_batch: int) -> ScheduledStage:
        sched = self.options.schedule
        if self._book is None and sched.batch_size is None:
            self._book = sched.book or CostBook.default()
        plan = plan_stage(stage, spec, self.device, sched, reader_batch=reader_batch, book=self._book)
        # the stop request reaches inside the stages' batches (tiles, pairs, layers on the CPU), as in `run`
        return ScheduledStage(stage, plan, self.device, policy=sched.policy, sleep=sched.sleep, check=self.stop.check)

    def _group(self, i: int, spec: StreamSpec) -> tuple[_Group, StreamSpec]:
        """The shared copy of stage `i` for input `spec`, and this input's output spec. Groups are keyed by the
        picture (size, alpha, depth, crop) alone: a frame-independent stage keeps each video's timing, so videos
        of other rates and lengths share it."""
        key = (i, _picture(spec))
        if key not in self._groups:
            stage = copy.copy(self._template(i, spec))
            out = stage.setup(self.device, key[1])
            scheduled = self._scheduled(stage, key[1], self.options.reader.batch_size)
            self._groups[key] = _Group(scheduled=scheduled, out_spec=out, cost_signature=cost_signature(stage))
        g = self._groups[key]
        return g, g.out_spec.but(
            time_base=spec.time_base, rate=spec.rate, nominal_rate=spec.nominal_rate, frames=spec.frames
        )

    # -- videos --
    def _reader_batch(self, n_jobs: int) -> int:
        """Frames each open video reads per round: a share of one batch when a cross-video stage (or a joint
        recurrent step) gathers them, a whole batch when every stage runs per video."""
        per_round = self.options.reader.batch_size
        if not self.n_cross and self.joint_at is None:
            return per_round
        return max(1, -(-per_round // max(1, min(n_jobs, self.max_videos))))

    def _open(self, job: Job, reader_batch: int, progress: Progress) -> _Video | VideoResult:
        opts = self.options
        check_target(job.output, opts.writer)  # before decoding: an unwritable output fails this video at once
        info = probe(job.input, max_pixels=max_pixels_limit(opts.max_pixels))
        reader_opts = replace(opts.reader, batch_size=reader_batch)
        spec = source_spec(info, reader_opts.keep_alpha, reader_opts.deinterlace)
        specs: list[StreamSpec] = []
        used: list[Stage] = []
        for i in range(len(self.templates)):
            specs.append(spec)
            if i < self.n_cross:
                g, spec = self._group(i, spec)
                used.append(g.scheduled.stage)
            else:
                own = copy.copy(self._template(i, spec))  # shares the loaded weights; setup gives it its own state
                spec = own.setup(self.device, spec)
                used.append(own)
        check_frame_memory(job.input, specs[0] if specs else spec, spec, replace(opts, reader=reader_opts))
        signed = signature_fields(job.input, used, reader_opts, opts.writer)
        why = ""
        if opts.schedule.skip_finished:
            old, why = finished(job.input, job.output, manifest_path(job.output), signed)
            if old is not None:
                log.info("skipped %s: %s", job.output, why)
                return VideoResult(
                    job, "skipped", old.get("frames_in", 0), old.get("frames_out", 0), manifest=old, reason=why
                )
            if why != "no manifest":
                log.info("making %s again: %s", job.output, why)
        # a joint step runs B videos × T frames: its stage is planned for a whole round's frames, as a group is
        whole = self.options.reader.batch_size
        suffix = [
            self._scheduled(s, specs[i], whole if i == self.joint_at else reader_batch)
            for i, s in enumerate(used)
            if i >= self.n_cross
        ]
        share_cuts(suffix)  # this video's own board (a cut detector has context: never a cross-video stage)
        reader = VideoReader(info, reader_opts, check=self.stop.check)
        pre = [{"before": model_signature(used[:i]), "colour": repr(reader.colour)} for i in range(self.n_cross)]
        writer: VideoWriter | None = None
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            writer = VideoWriter(job.output, spec, reader.colour, info, opts.writer)

            def encode_all(batches: Iterator[FrameBatch], writer: VideoWriter = writer) -> WriterStats:
                for b in batches:
                    writer.write(b)
                    progress.advance(len(b), video=str(job.input))
                return writer.close()

            sink: Consumer[FrameBatch, WriterStats] = Consumer(
                f"encode:{job.output.name}", encode_all, maxsize=opts.encode_queue, check=self.stop.check
            )
        except BaseException:
            reader.close()
            if writer is not None:
                writer.abort()
            raise
        return _Video(
            job=job,
            info=info,
            specs=specs,
            used=used,
            pre=pre,
            suffix=suffix,
            signed=signed,
            reader=reader,
            writer=writer,
            sink=sink,
            frames=iter(reader),  # type: ignore[arg-type]  # planar batches are never asked for here
            t0=time.monotonic(),
            why=why,
        )

    def _cross(self, i: int, batches: dict[str, FrameBatch], videos: dict[str, _Video]) -> dict[str, FrameBatch]:
        """Stage `i` over every video's batch, in cross-video micro-batches per group."""
        groups: dict[StreamSpec, dict[str, FrameBatch]] = {}
        for vid, b in batches.items():
            groups.setdefault(_picture(videos[vid].specs[i]), {})[vid] = b
        out: dict[str, FrameBatch] = {}
        for picture, members in groups.items():
            out.update(self._cross_group(i, self._groups[(i, picture)], members, videos))
        return out

    def _cross_group(
        self, i: int, g: _Group, members: dict[str, FrameBatch], videos: dict[str, _Video]
    ) -> dict[str, FrameBatch]:
        stage = g.scheduled
        keys = {
            vid: crossvideo.BatchKey.make(
                component=stage.name,
                model_signature=g.cost_signature,
                runtime="inprocess",
                preprocessing=videos[vid].pre[i],
                frames=b,
            )
            for vid, b in members.items()
        }
        current: list[crossvideo.MicroBatch] = []

        def record(mb: crossvideo.MicroBatch) -> None:
            current[:] = [mb]
            self._record(mb)

        def run(x: torch.Tensor) -> torch.Tensor:
            # pts and index are placeholders: a frame-independent stage reads pixels only (and the colour, which
            # is part of the key, so one micro-batch has one)
            one = members[current[0].parts[0].video]
            y = run_chain(
                [stage], FrameBatch(data=x, pts=list(range(len(x))), time_base=one.time_base, colour=one.colour)
            )
            assert y is not None  # a frame-independent stage returns every frame
            return y.data

        return crossvideo.run(members, keys, run, stage.runner.size, max_videos=self.max_videos, record=record)

    def _finish(self, v: _Video, ffmpeg_warnings: list[str]) -> VideoResult:
        for out in flush_chain(v.suffix):
            v.sink.put(out.with_data(out.data.cpu()))
        wstats = v.sink.finish()
        v.reader.close()
        wall = time.monotonic() - v.t0
        manifest = build_manifest(v.info, v.job.output, v.used, v.reader, wstats, self.device, wall, ffmpeg_warnings)
        manifest.update(v.signed)
        cross = [self._groups[(i, _picture(v.specs[i]))].scheduled for i in range(self.n_cross)]
        sched = self.options.schedule
        manifest["schedule"] = {
            "device": str(self.device),
            "oom_policy": {"attempts": sched.policy.attempts, "backoff_s": sched.policy.backoff_s},
            "reader_batch": v.reader.options.batch_size,
            # cross-video stages are shared: their OOM events are those of every video of the group
            "stages": [{**s.schedule_report(), "cross_video": True} for s in cross]
            + [s.schedule_report() for s in v.suffix],
            "cross_video": {
                "stages": [s.name for s in cross],
                # the recurrent stage whose steps this video shared with others (its own state each)
                "joint_steps": None if self.joint_at is None else self.templates[self.joint_at].name,
                "max_videos_per_micro_batch": self.max_videos,
                # micro-batches and joint steps this video's frames were part of
                "micro_batches": v.micro_batches,
            },
        }
        if self.options.manifest:
            write_json(manifest_path(v.job.output), manifest)
        log.info("wrote %s (%d frames)", v.job.output, wstats.frames)
        return VideoResult(v.job, "done", v.reader.stats.frames, wstats.frames, wall, manifest, reason=v.why)

    @staticmethod
    def _abandon(v: _Video) -> None:
        v.sink.cancel()
        v.reader.close()
        v.writer.abort()

    def _failed(self, job: Job, e: VidpipeError, v: _Video | None = None) -> VideoResult:
        if v is not None:
            self._abandon(v)
        log.error("%s failed: %s", job.input, e)
        return VideoResult(job, "failed", reason=str(e), exit_code=e.exit_code)

    # -- the run --
    def run(self, jobs: Sequence[Job]) -> MultiResult:
        t0 = time.monotonic()
        results: dict[Job, VideoResult] = {}
        pending = deque(jobs)
        active: list[_Video] = []
        reader_batch = self._reader_batch(len(jobs))
        # the overall total: every input's frame count now (headers only), each exact once its video opens
        totals = Totals({str(j.input): _input_frames(j.input) for j in jobs})
        progress = Progress(self.options.progress, totals.total(), f"{len(jobs)} videos", videos=len(jobs))
        progress.stage = " → ".join(s.name for s in self.templates) or "copy"
        ok = False
        with FFmpegLog() as ffmpeg_log, self.stop.installed():
            try:
                progress.start()
                with torch.inference_mode():
                    while pending or active:
                        while pending and len(active) < self.max_videos:
                            job = pending.popleft()
                            key = str(job.input)
                            try:
                                opened = self._open(job, reader_batch, progress)
                            except (InputError, OutputError) as e:
                                results[job] = self._failed(job, e)
                                totals.opened(key, None, 0)
                                progress.set_total(totals.total())
                                progress.video_ended(key, "failed", job.output.name)
                                continue
                            if isinstance(opened, VideoResult):
                                results[job] = opened
                                totals.opened(key, opened.frames_in, 0)
                                progress.video_ended(key, "skipped", job.output.name)
                            else:
                                active.append(opened)
                                totals.opened(key, opened.info.video.frames, opened.writer.spec.frames)
                                progress.video_started(key, job.output.name, opened.writer.spec.frames)
                            progress.set_total(totals.total())
                        if active:
                            for v, result in self._round(active):
                                results[v.job] = result
                                active.remove(v)
                                key = str(v.job.input)
                                if result.status == "failed":  # what it wrote counts; the rest will not come
                                    totals.opened(key, None, progress.per_video[key].done)
                                    progress.set_total(totals.total())
                                progress.video_ended(key, result.status)
                    for g in self._groups.values():
                        if g.scheduled.flush() is not None:
                            raise StageError(f"{g.scheduled.name} held frames at the end: it is not frame-independent")
                ok = True
            finally:
                if not ok:
                    ffmpeg_log.detach()
                    for v in active:
                        self._abandon(v)
                        progress.video_ended(str(v.job.input), "failed")  # stopped with the run, output removed
                progress.finish(ok)
        for msg in ffmpeg_log.messages[:10]:
            log.warning("ffmpeg: %s", msg)
        return MultiResult(
            videos=[results[j] for j in jobs], micro_batches=self.micro_batches, wall_s=time.monotonic() - t0
        )

    def _round(self, active: list[_Video]) -> list[tuple[_Video, VideoResult]]:
        """One batch of every open video through the chain; returns the videos that ended (finished or failed)."""
        self._ended = []
        videos = self._live = {str(v.job.input): v for v in active}
        batches: dict[str, FrameBatch] = {}
        finished: list[_Video] = []
        for vid, v in videos.items():
            self.stop.check()
            try:
                b = next(v.frames)
            except StopIteration:
                finished.append(v)
                continue
            except InputError as e:
                self._ended.append((v, self._failed(v.job, e, v)))
                continue
            batches[vid] = b.with_data(b.data.to(self.device, non_blocking=True))
        for i in range(self.n_cross):
            batches = self._cross(i, batches, videos)
        # the video's own stages: those before the joint step, the joint step across videos, those after it
        k = None if self.joint_at is None else self.joint_at - self.n_cross
        outs = {vid: self._guarded(videos[vid], 0, k, b) for vid, b in batches.items()}
        if k is not None:
            ready = {vid: b for vid, b in outs.items() if b is not None and len(b) and self._alive(vid)}
            self.stop.check()
            for vid, y in self._joint.run(ready, {vid: _recurrent(videos[vid].suffix[k]) for vid in ready}).items():
                outs[vid] = self._guarded(videos[vid], k + 1, None, y)
        for vid, out in outs.items():
            if out is not None and len(out):
                self._guarded(videos[vid], 0, None, out, write=True)
        for v in finished:
            try:
                self._ended.append((v, self._finish(v, [])))
            except (StageError, OutputError) as e:
                self._ended.append((v, self._failed(v.job, e, v)))
        for v, _ in self._ended:
            self._joint.forget(str(v.job.input))
        return self._ended

    def _alive(self, vid: str) -> bool:
        return all(str(v.job.input) != vid for v, _ in self._ended)

    def _guarded(
        self, v: _Video, start: int, stop: int | None, b: FrameBatch | None, *, write: bool = False
    ) -> FrameBatch | None:
        """`b` through `v`'s own stages [start, stop) (or to its writer); a failure there fails `v` alone (it is
        ended with its result) and gives None."""
        if b is None or not self._alive(str(v.job.input)):
            return None
        try:
            if write:
                v.sink.put(b.with_data(b.data.cpu()))
                return None
            return run_chain(v.suffix[:stop], b, start=start)
        except (StageError, OutputError) as e:
            self._ended.append((v, self._failed(v.job, e, v)))
            return None

    def _solo(self, vid: str, b: FrameBatch) -> FrameBatch | None:
        """`vid`'s batch through its own copy of the joint stage, under its runner's OOM policy (`JointSteps`
        runs batches that cannot step together this way)."""
        assert self.joint_at is not None
        k = self.joint_at - self.n_cross
        return self._guarded(self._live[vid], k, k + 1, b)

    def _record(self, mb: crossvideo.MicroBatch) -> None:
        self.micro_batches.append(
            MicroBatchRecord(stage=mb.key.component, bucket=mb.key.bucket, videos=mb.videos, frames=mb.frames)
        )
        for vid in set(mb.videos):
            self._live[vid].micro_batches += 1


def _recurrent(stage: ScheduledStage) -> RecurrentRunner:
    """The engine of a scheduled recurrent stage (`crossvideo.steps_across_videos` picked it)."""
    assert isinstance(stage.engine, RecurrentRunner)
    return stage.engine


def frame_independent(stage: Stage) -> bool:
    """Each output frame depends on its input frame alone: no held context, no reach (pre-roll, look-ahead) and
    no carried state (a recurrent or windowed stage is stateful). Only such stages serve several videos from one
    copy."""
    return stage.context == 0 and stage.reach == Reach() and not stage.stateful


def _input_frames(path: Path) -> int | None:
    """The input's frame count as its header says (for the progress total); None when it cannot be read (the
    run reports that input failed when it gets to it)."""
    try:
        return probe(path).video.frames
    except VidpipeError:
        return None


def run_many(
    jobs: Sequence[Job],
    stages: Sequence[Stage],
    options: RunOptions | None = None,
    *,
    cross_video: bool = True,
    max_videos: int = crossvideo.MAX_VIDEOS_PER_MICRO_BATCH,
) -> MultiResult:
    """Run `stages` over every job's input into its output; see the module docstring."""
    return MultiRunner(stages, options, cross_video=cross_video, max_videos=max_videos).run(jobs)


def bucket_of(path: Path) -> int:
    """The resolution bucket of a video file (its displayed size), as cross-video batching groups it."""
    w, h = probe(path).video.display_size
    return bucket_for(w, h)
