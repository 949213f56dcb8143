"""Segments: the unit of resume. A long input is processed as consecutive time windows, each encoded to its own
file and checkpointed; at the end the encoded packets are stream-copied, in order, into one container together
with the source's audio, subtitles, attachments and chapters (what `vidpipe run` keeps).

Why the joined output equals one uninterrupted run, frame for frame:

- A segment is the output time window [t0, t1) where t0 and t1 are times of source frames. The reader decodes
  the frames the chain reaches around it (`Segment.feed`, from `schedule.temporal.feed_span` over the stages'
  added `reach`: a recurrent stage's pre-roll before t0, a windowed stage's overlap on both sides,
  interpolation's one frame of look-ahead for its last pair): it seeks to the keyframe at or before the first
  of them and drops decoded frames before it. The chain runs over all of them; the pipeline then drops output
  frames outside the window (`runtime.pipeline.TimeWindow`). 1:1 stages keep source times, so the windows
  partition the frames, and each frame inside one has the context a whole run gives it.
- Interpolation re-times its input by count from its first frame (frame i at start + i/rate) and lays its
  output grid from there. A boundary frame s is therefore only used where that grid is the whole run's:
  its time is exactly start + s/rate and, for an fps target F, s·F/rate is a whole number (25 → 60 fps: every
  5th frame). For VFR sources this rarely holds, and such an input stays one segment.
- Boundaries are keyframes (no decoding is wasted before t0), near multiples of the segment length, preferring
  keyframes an encoder placed at a scene cut (x264/x265 reset their GOP there, so a keyframe that comes before
  the regular GOP length is due marks a cut). Segments never share a frame, so they can be redone alone.
- Stages that hold context without a finite reach (`Stage.starts_mid_stream` false: the cut detectors), a
  reach next to interpolation's grid (`schedule.temporal.chain_reach`), AVI (no presentation times) and
  `on_corrupt=skip` with interpolation (skipped frames shift the count) keep the input whole: one segment.

The state of one input lives in its own directory named by the checkpoint key, sha256 of the input's bytes
plus the pipeline signature (stage signatures with weights hashes, encoder, container, versions). A run with
another input or other parameters gets another key and so never picks up this checkpoint: it starts afresh and
names the checkpoints it ignores. A state file inside the directory that disagrees with its key (edited,
copied) is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

import av
import av.error

from ..errors import OutputError, UsageError
from ..media.info import MediaInfo
from ..media.probe import open_input
from ..media.reader import STAMP_SAMPLE_PACKETS, pts_copy_dts
from ..media.writer import INTERLEAVE_AHEAD_S, WriterStats, _StreamCopier, partial_path
from ..paths import sha256_file
from ..stages.base import GridRule  # where a stage's output grid allows a boundary (re-exported)
from . import atomic

log = logging.getLogger(__name__)

STATE_SCHEMA: Final = "vidpipe.segments/1"
STATE_FILE: Final = "state.json"
#: a boundary may move this fraction of the segment length towards a better keyframe (a cut)
BOUNDARY_TOLERANCE: Final = Fraction(1, 4)
#: no segment shorter than this fraction of the length at the end: it is merged into the one before
MIN_TAIL: Final = Fraction(1, 4)


class CheckpointError(UsageError):
    """A checkpoint that does not belong to this input and pipeline (refused, never mixed in)."""


# -- planning ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """Presentation times (seconds, sorted) of a video's frames and which are keyframes, from demuxing only."""

    times: tuple[Fraction, ...]
    keyframes: frozenset[int]
    container: str
    #: the stream's pts are copies of its dts (`media.reader.pts_copy_dts`): frames are stamped by their order,
    #: so the file cannot be read from a seek point
    pts_copies: bool = False

    @property
    def count(self) -> int:
        return len(self.times)


def scan_frames(path: Path) -> FrameIndex:
    """Demux (no decoding) the first video stream: every packet's pts and keyframe flag."""
    stamps: list[tuple[int, bool]] = []
    head: list[tuple[int | None, int | None]] = []
    with open_input(path) as c:
        vs = c.streams.video[0]
        tb = vs.time_base
        reorders = bool(vs.codec_context.has_b_frames)
        try:
            for pkt in c.demux(vs):
                if len(head) < STAMP_SAMPLE_PACKETS and pkt.size:
                    head.append((pkt.pts, pkt.dts))
                # packets the demuxer marks discard (before an edit list's start) are never shown
                if pkt.pts is not None and not pkt.is_discard:
                    stamps.append((pkt.pts, bool(pkt.is_keyframe)))
        except av.error.InvalidDataError:
            pass  # a damaged tail: plan on what could be read; the reader reports the damage
        name = c.format.name
    stamps.sort()
    assert tb is not None
    return FrameIndex(
        times=tuple(p * tb for p, _ in stamps),
        keyframes=frozenset(i for i, (_, key) in enumerate(stamps) if key),
        container=name,
        pts_copies=name != "avi" and pts_copy_dts(reorders, head),
    )


def _time(value: Fraction | None) -> str | None:
    return None if value is None else str(value)


def _parse_time(value: str | None) -> Fraction | None:
    return None if value is None else Fraction(value)


@dataclass(frozen=True, slots=True)
class Segment:
    """Source frames [first, first + frames), shown in [start, end) seconds; None: open (first/last). `feed`: the
    times the reader decodes around them for the stages' reach (`runtime.pipeline.TimeWindow.feed`); None: the
    window with one frame of look-ahead."""

    index: int
    first: int
    frames: int
    start: Fraction | None
    end: Fraction | None
    feed: tuple[Fraction | None, Fraction | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first": self.first,
            "frames": self.frames,
            "start": _time(self.start),
            "end": _time(self.end),
            "feed": None if self.feed is None else [_time(t) for t in self.feed],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        feed = d.get("feed")
        return cls(
            index=int(d["index"]),
            first=int(d["first"]),
            frames=int(d["frames"]),
            start=_parse_time(d["start"]),
            end=_parse_time(d["end"]),
            feed=None if feed is None else (_parse_time(feed[0]), _parse_time(feed[1])),
        )


def _cut_keyframes(keys: Sequence[int]) -> set[int]:
    """Keyframes that came sooner than the regular GOP length (the most common gap): an encoder's scene cuts."""
    gaps = {k: k - prev for prev, k in pairwise(keys)}
    if len(gaps) < 2:
        return set()
    regular = Counter(gaps.values()).most_common(1)[0][0]
    return {k for k, gap in gaps.items() if gap < regular}


def plan_segments(index: FrameIndex, seconds: Fraction | None, rule: GridRule | None = None) -> list[Segment]:
    """Split the frames into segments of about `seconds` (None or 0: one segment), see the module docstring."""
    n = index.count
    whole = [Segment(index=0, first=0, frames=n, start=None, end=None)]
    if not seconds or n < 2:
        return whole
    times = index.times
    keys = sorted(index.keyframes)
    candidates = [s for s in keys if s > 0 and (rule is None or rule.allows(s, times[s]))]
    cuts = _cut_keyframes(keys)
    tolerance = seconds * BOUNDARY_TOLERANCE
    bounds: list[int] = []
    last = times[0]
    end = times[-1]
    while True:
        target = last + seconds
        near = [s for s in candidates if times[s] > last and abs(times[s] - target) <= tolerance]
        if near:
            at_cut = [s for s in near if s in cuts]
            pick = min(at_cut or near, key=lambda s: (abs(times[s] - target), s))
        else:
            later = [s for s in candidates if times[s] > target]
            if not later:
                break
            pick = later[0]
        if end - times[pick] < seconds * MIN_TAIL:
            break
        bounds.append(pick)
        last = times[pick]
    if not bounds:
        return whole
    firsts = [0, *bounds]
    return [
        Segment(
            index=i,
            first=s,
            frames=(firsts[i + 1] if i + 1 < len(firsts) else n) - s,
            start=None if i == 0 else times[s],
            end=times[firsts[i + 1]] if i + 1 < len(firsts) else None,
        )
        for i, s in enumerate(firsts)
    ]


# -- checkpoint state --------------------------------------------------------------------------------------


#: sha256 of a whole file (an interrupt check between chunks): one implementation, in vidpipe.paths
file_sha256 = sha256_file


def checkpoint_key(input_sha256: str, signature: dict[str, Any]) -> str:
    """sha256 of the input's hash and the canonical JSON of the pipeline signature."""
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{input_sha256}\n{text}".encode()).hexdigest()


def fsync_file(path: Path) -> None:
    """Flush a finished file to disk before the checkpoint says it is done (a rename alone may not survive a
    power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(kw_only=True)
class SegmentRecord:
    file: str  # name inside the state directory
    size: int
    sha256: str
    frames: int
    seconds: float


@dataclass(kw_only=True)
class InputState:
    """What is done for one input; rewritten atomically after every step (a SIGKILL loses at most the step in
    progress)."""

    directory: Path
    key: str
    input_sha256: str
    signature: dict[str, Any]
    plan: list[Segment] = field(default_factory=list)
    done: dict[int, SegmentRecord] = field(default_factory=dict)
    joined: dict[str, Any] | None = None
    upload: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def segment_path(self, seg: Segment, suffix: str) -> Path:
        return self.directory / f"seg_{seg.index:05d}{suffix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "key": self.key,
            "input_sha256": self.input_sha256,
            "signature": self.signature,
            "plan": [s.to_json() for s in self.plan],
            "done": {str(i): vars(r) for i, r in sorted(self.done.items())},
            "joined": self.joined,
            "upload": self.upload,
        }

    def save(self) -> None:
        atomic.write_json(self.path, self.to_json())

    @classmethod
    def open(cls, directory: Path, *, key: str, input_sha256: str, signature: dict[str, Any]) -> InputState:
        """The state in `directory` if there is one (checked against key, input and signature), else a new one."""
        path = directory / STATE_FILE
        fresh = cls(directory=directory, key=key, input_sha256=input_sha256, signature=signature)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({e}); delete {directory} to start afresh") from e
        if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
            raise CheckpointError(f"{path} is not a {STATE_SCHEMA} checkpoint; delete {directory} to start afresh")
        problems = []
        if doc.get("key") != key:
            problems.append("its key")
        if doc.get("input_sha256") != input_sha256:
            problems.append("the input's sha256")
        theirs = doc.get("signature") if isinstance(doc.get("signature"), dict) else {}
        differing = sorted(k for k in {*theirs, *signature} if theirs.get(k) != signature.get(k))
        if differing:
            problems.append(f"the pipeline ({', '.join(differing)})")
        if problems:
            raise CheckpointError(
                f"checkpoint {path} was made for another job: {' and '.join(problems)} differ; "
                f"delete {directory} to start afresh"
            )
        state = fresh
        state.plan = [Segment.from_json(s) for s in doc.get("plan") or []]
        state.done = {int(i): SegmentRecord(**r) for i, r in (doc.get("done") or {}).items()}
        state.joined = doc.get("joined")
        state.upload = doc.get("upload")
        return state

    def verified_done(self, seg: Segment, suffix: str) -> bool:
        """Whether `seg` is done and its file is still exactly what was checkpointed."""
        rec = self.done.get(seg.index)
        if rec is None:
            return False
        path = self.segment_path(seg, suffix)
        try:
            ok = path.stat().st_size == rec.size and file_sha256(path) == rec.sha256
        except OSError:
            ok = False
        if not ok:
            log.warning("segment %d: checkpointed file %s is missing or changed; redoing it", seg.index + 1, path)
            del self.done[seg.index]
        return ok


# -- joining -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class JoinStats:
    packets: int = 0
    writer: WriterStats = field(default_factory=WriterStats)


def _same_stream(a: av.video.stream.VideoStream, b: av.video.stream.VideoStream) -> list[str]:
    ca, cb = a.codec_context, b.codec_context
    diffs = []
    for what, x, y in (
        ("codec", ca.name, cb.name),
        ("size", (ca.width, ca.height), (cb.width, cb.height)),
        ("pixel format", ca.pix_fmt, cb.pix_fmt),
        ("codec extradata", ca.extradata, cb.extradata),
        # decoding times are computed across segments in one time base (`_DecodeTimes`)
        ("time base", a.time_base, b.time_base),
    ):
        if x != y:
            diffs.append(what)
    return diffs


@dataclass(frozen=True, slots=True)
class _DecodeTimes:
    """Decoding times (dts) for the joined video, computed rather than copied.

    The segments' own dts cannot be trusted across a join: Matroska stores none (its demuxer leaves a segment's
    first packets of a reordering codec without one) and x264/x265 extrapolate a segment's first ones backwards
    from its own first frame gaps, which on a variable-rate timeline can reach before the previous segment's
    last. So packet i (in decoding order over all segments) gets the i-th smallest pts minus `delay` places:
    strictly increasing, never after its own pts (`delay` is the deepest reordering seen), and at a boundary
    the gap between segments is filled with the previous segment's last pts. The first `delay` packets keep the
    first segment's dts where it has valid ones (MP4's edit list then matches one plain run's), else step back
    from the first pts by its first frame gap.
    """

    order: array[int]  # every video packet's pts, sorted
    delay: int
    lead: tuple[int, ...]  # dts of the first `delay` packets

    @classmethod
    def plan(cls, shown: array[int], first_dts: Sequence[int | None]) -> _DecodeTimes:
        order = array("q", sorted(shown))
        delay = max((i - bisect_left(order, p) for i, p in enumerate(shown)), default=0)
        own = [d for d in first_dts[:delay] if d is not None]
        if len(own) == delay and all(a < b for a, b in pairwise([*own, order[0]])):
            lead = tuple(own)
        else:
            step = max(1, order[1] - order[0]) if len(order) > 1 else 1
            lead = tuple(order[0] - (delay - i) * step for i in range(delay))
        return cls(order=order, delay=delay, lead=lead)

    def __len__(self) -> int:
        return len(self.order)

    def dts(self, i: int) -> int:
        return self.lead[i] if i < self.delay else self.order[i - self.delay]


def _scan_segments(files: Sequence[Path], template: av.video.stream.VideoStream) -> _DecodeTimes:
    """Demux (no decoding) every segment's video: check they can be joined (same encoding, no overlap) and plan
    the joined stream's decoding times."""
    shown: array[int] = array("q")
    first_dts: list[int | None] = []
    shown_until: int | None = None  # the latest frame time of the segments scanned so far
    for n, f in enumerate(files):
        latest = shown_until
        with av.open(str(f)) as c:
            vs = c.streams.video[0]
            diffs = _same_stream(template, vs)
            if diffs:
                raise OutputError(f"segment {f.name} was encoded differently ({', '.join(diffs)}); cannot join")
            for pkt in c.demux(vs):
                if pkt.dts is None and pkt.pts is None:
                    continue  # the demuxer's flush packet
                if pkt.pts is None:
                    raise OutputError(f"segment {f.name} has a video packet without a presentation time; cannot join")
                if shown_until is not None and pkt.pts <= shown_until:
                    raise OutputError(
                        f"segment {f.name} overlaps the one before it at {float(pkt.pts * vs.time_base):.3f}s"
                    )
                if n == 0:
                    first_dts.append(pkt.dts)
                shown.append(pkt.pts)
                latest = pkt.pts if latest is None else max(latest, pkt.pts)
        shown_until = latest
    return _DecodeTimes.plan(shown, first_dts)


def join_segments(
    files: Sequence[Path],
    source: MediaInfo,
    target: Path,
    *,
    copy_streams: bool = True,
    check: Callable[[], None] = lambda: None,
    after_segment: Callable[[int], None] = lambda _i: None,
) -> JoinStats:
    """Stream-copy the video packets of `files`, in order, into `target` with the source's other streams
    (interleaved by time as the writer does); the video's decoding times are recomputed (`_DecodeTimes`).
    Written to a hidden temp file, fsynced, renamed into place."""
    if not files:
        raise OutputError(f"no segments to join into {target}")
    tmp = partial_path(target)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    stats = JoinStats()
    out = av.open(str(tmp), "w")
    copier: _StreamCopier | None = None
    try:
        with av.open(str(files[0])) as first:
            template = first.streams.video[0]
            ovs = out.add_stream_from_template(template)
            if template.metadata.get("alpha_mode") == "1":
                # VP9 alpha travels beside the picture (Matroska BlockAdditions); the template's decoder format
                # (yuv420p) would drop the track's alpha flag, and players would show no alpha
                ovs.codec_context.pix_fmt = "yuva420p"
            times = _scan_segments(files, template)
        check()
        if copy_streams:
            copier = _StreamCopier(source, out, stats.writer)
        for i, f in enumerate(files):
            with av.open(str(f)) as c:
                for pkt in c.demux(c.streams.video[0]):
                    if pkt.dts is None and pkt.pts is None:
                        continue  # the demuxer's flush packet
                    if stats.packets >= len(times):
                        raise OutputError(f"segment {f.name} changed while it was being joined")
                    pkt.dts = times.dts(stats.packets)
                    if copier is not None:
                        copier.until(pkt.dts * pkt.time_base + INTERLEAVE_AHEAD_S)
                    pkt.stream = ovs
                    out.mux(pkt)
                    stats.packets += 1
            check()
            after_segment(i)
        if stats.packets != len(times):
            raise OutputError(f"the segments changed while they were being joined into {target}")
        if copier is not None:
            copier.until(None)
        out.close()
        fsync_file(tmp)
        tmp.replace(target)
    except BaseException:
        try:
            out.close()
        except Exception as e:  # the temp file is removed anyway; say why closing failed
            log.debug("join: closing %s failed: %s", tmp, e)
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if copier is not None:
            copier.close()
    return stats
