"""Joins of segments (issue 22, item 2): every container a job writes, constant- and variable-rate sources, one
and three segments. The joined file must have monotonic timestamps and decode to the frames and times of one
plain `run` of the same pipeline.

The encoders are lossless (x264 qp 0, VP9 lossless) so that the frames of a segmented encode can equal those of
one encode; x264 still reorders (B-frames), which is what makes the decoding timestamps of a join hard: Matroska
stores none (the demuxer leaves the first packets of a segment without one) and x264 extrapolates a segment's
first ones backwards from its own frame gaps, which on a variable-rate timeline can reach before the previous
segment's last.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction as F
from itertools import pairwise
from pathlib import Path

import av
import pytest
import torch

from vidpipe.jobs.runner import run_job
from vidpipe.jobs.segments import _DecodeTimes, join_segments, plan_segments, scan_frames
from vidpipe.jobs.spec import JobSpec, build_spec
from vidpipe.media.probe import probe
from vidpipe.media.synth import AudioTrack
from vidpipe.runtime.pipeline import TimeWindow, run
from vidpipe.testing import decode_all

pytestmark = pytest.mark.timeout(300)

SIZE = (64, 48)
#: keyframe every 20 frames, so 1-s segments fall on the 2nd and 3rd keyframe of a 60-frame clip
GOP = 20
X264_GOP = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0"}
SEGMENT_S = 1


def _vfr_times() -> list[F]:
    """60 frames, 3 GOPs, each starting with two 120-ms gaps and ending with three 10-ms ones: the worst case
    for a segment's extrapolated first decoding times (two gaps after a boundary span more than three before)."""
    gaps = [F(120, 1000)] * 2 + [F(40, 1000)] * (GOP - 5) + [F(10, 1000)] * 3
    times, t = [], F(0)
    for i in range(3 * GOP):
        times.append(t)
        t += gaps[i % GOP]
    return times


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny frames gain nothing from more threads on a shared 2-core runner
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _source(make, container: str, rate: str) -> Path:
    """A 60-frame H.264 (B-frames) + AAC clip in `container` (the job's output container follows the input's)."""
    times = _vfr_times() if rate == "vfr" else None
    # webm holds neither H.264 nor AAC: its source is a Matroska file, the output container is named instead
    suffix = "mkv" if container == "webm" else container
    return make(f"r22-{rate}.{suffix}", size=SIZE, frames=3 * GOP, times=times, options=X264_GOP, audio=[AudioTrack()])


def _spec(src: Path, tmp: Path, container: str, segments: int, *, lossless: bool = True) -> JobSpec:
    # x264 drops its B-frames when lossless; x265 keeps them
    encoder = "vp9" if container == "webm" else "hevc" if lossless else "h264"
    doc = {
        "inputs": [str(src)],
        "output": {"dir": str(tmp / "out"), "container": container, "upload": False},
        "pipeline": {"encoder": encoder, "lossless": lossless, "device": "cpu", "resize": "32x24"},
        "segments": {"seconds": SEGMENT_S if segments > 1 else 0},
        "result_json": str(tmp / "result.json"),
        "sentinel": str(tmp / "DONE"),
    }
    return build_spec(doc, base_dir=tmp, env={}, workspace=tmp / "none")


def _plain(src: Path, spec: JobSpec, target: Path) -> Path:
    """The same pipeline as one plain `vidpipe run` (no segments, no join)."""
    run(src, target, spec.pipeline.stages(), replace(spec.pipeline.run_options(progress="none"), manifest=False))
    return target


def assert_monotonic(path: Path) -> None:
    """Per stream: decoding times strictly increasing for video (non-decreasing for the rest), never after the
    presentation time, and no two video frames shown at once."""
    with av.open(str(path)) as c:
        last: dict[int, int] = {}
        shown: list[int] = []
        for pkt in c.demux():
            if pkt.dts is None and pkt.pts is None:
                continue
            i = pkt.stream.index
            video = pkt.stream.type == "video"
            if pkt.dts is not None:
                if i in last:
                    assert pkt.dts > last[i] if video else pkt.dts >= last[i], (
                        f"{path.name} stream {i}: dts {pkt.dts} after {last[i]}"
                    )
                last[i] = pkt.dts
                if pkt.pts is not None:
                    assert pkt.dts <= pkt.pts, f"{path.name} stream {i}: dts {pkt.dts} > pts {pkt.pts}"
            if video:
                assert pkt.pts is not None, f"{path.name}: a video packet without pts"
                shown.append(pkt.pts)
        assert len(shown) == len(set(shown)), f"{path.name}: two video packets share a pts"


def _check_join(make, tmp_path: Path, container: str, rate: str, segments: int) -> None:
    src = _source(make, container, rate)
    spec = _spec(src, tmp_path, container, segments)
    outcome = run_job(spec, env={})
    assert outcome.ok, outcome.errors
    joined = outcome.outputs[0]
    assert joined.suffix == f".{container}"
    manifest = json.loads(joined.with_name(joined.name + ".json").read_text())
    assert len(manifest["segments"]) == segments
    assert_monotonic(joined)
    plain = _plain(src, spec, tmp_path / f"plain.{container}")
    t_plain, f_plain = decode_all(plain)
    t_join, f_join = decode_all(joined)
    assert len(t_plain) == 3 * GOP
    assert t_join == t_plain
    assert torch.equal(f_join, f_plain)
    assert [s.type for s in probe(joined).streams] == [s.type for s in probe(plain).streams] == ["video", "audio"]


FAST: Sequence[tuple[str, str, int]] = (("mkv", "cfr", 3), ("mp4", "vfr", 3), ("mkv", "vfr", 3))
MATRIX = [
    (container, rate, segments)
    for container in ("mkv", "mp4", "mov", "webm")
    for rate in ("cfr", "vfr")
    for segments in (1, 3)
]


@pytest.mark.parametrize(("container", "rate", "segments"), FAST)
def test_join_is_monotonic_and_frame_identical(make, tmp_path, container, rate, segments):
    _check_join(make, tmp_path, container, rate, segments)


@pytest.mark.slow
@pytest.mark.parametrize(("container", "rate", "segments"), [m for m in MATRIX if m not in FAST])
def test_join_matrix(make, tmp_path, container, rate, segments):
    _check_join(make, tmp_path, container, rate, segments)


@pytest.mark.parametrize(("container", "rate"), [("mkv", "cfr"), ("mp4", "vfr")])
def test_lossy_h264_join_keeps_every_source_time(make, tmp_path, container, rate):
    """The issue's encoder (lossy x264 with B-frames): its segments cannot equal one encode frame for frame,
    but the join must succeed with monotonic timestamps and every source frame at its source time."""
    src = _source(make, container, rate)
    outcome = run_job(_spec(src, tmp_path, container, 3, lossless=False), env={})
    assert outcome.ok, outcome.errors
    assert_monotonic(outcome.outputs[0])
    assert decode_all(outcome.outputs[0])[0] == list(scan_frames(src).times)


def test_join_of_mkv_segments_whose_first_packets_carry_no_dts(make, tmp_path):
    """The Matroska case at the level of `join_segments`: h264 segment files whose later segments start with
    packets the demuxer gives no dts."""
    src = _source(make, "mkv", "cfr")
    spec = _spec(src, tmp_path, "mkv", 3)
    options = replace(spec.pipeline.run_options(progress="none"), manifest=False)
    plan = plan_segments(scan_frames(src), F(SEGMENT_S))
    assert len(plan) == 3
    files = []
    for seg in plan:
        out = tmp_path / f"seg{seg.index}.mkv"
        window = TimeWindow(seg.start, seg.end)
        run(
            src,
            out,
            spec.pipeline.stages(),
            replace(options, window=window, writer=replace(options.writer, copy_streams=False)),
        )
        files.append(out)
    with av.open(str(files[1])) as c:
        first = next(p for p in c.demux(c.streams.video[0]) if p.size)
    assert first.pts is not None and first.dts is None  # what made the muxer refuse the join
    target = tmp_path / "joined.mkv"
    join_segments(files, probe(src), target)
    assert_monotonic(target)
    plain = _plain(src, spec, tmp_path / "plain.mkv")
    t_plain, f_plain = decode_all(plain)
    t_join, f_join = decode_all(target)
    assert t_join == t_plain and torch.equal(f_join, f_plain)


@pytest.mark.slow
def test_issue_reproduction_250s_mkv_joins(make, cli, tmp_path):
    """The issue's reproduction as it was reported: a 250-s 64×48 h264+aac mkv through `vidpipe job run` with the
    default (lossy h264) encoder and segment length: two segments of 120 s and 130 s, the second starting with
    packets Matroska gives no dts. Lossy segments cannot equal one encode frame for frame; their times can."""
    src = make("r22-long250.mkv", size=(64, 48), frames=250 * 25, audio=[AudioTrack()])
    out = tmp_path / "out"
    r = cli("job", "run", "-i", str(src), "-o", str(out), "--no-upload", "--resize", "32x24", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    joined = out / "r22-long250_result.mkv"
    manifest = json.loads(joined.with_name(joined.name + ".json").read_text())
    assert len(manifest["segments"]) == 2
    assert_monotonic(joined)
    times, _ = decode_all(joined)
    assert times == list(scan_frames(src).times)  # 1:1 stages keep the source's times: all 6250 frames, in order
    assert [s.type for s in probe(joined).streams] == ["video", "audio"]


def test_decode_times_are_strictly_increasing_and_never_after_their_pts():
    # two segments in decoding order: a B-pyramid (depth 2) then a deeper reordering (depth 3) at a new VFR pace
    shown = array("q", [0, 160, 80, 40, 120, 200, 600, 450, 300, 250, 650])
    times = _DecodeTimes.plan(shown, [-80, -40, 0])
    assert times.delay == 3
    dts = [times.dts(i) for i in range(len(shown))]
    assert all(a < b for a, b in pairwise(dts)) and all(d <= p for d, p in zip(dts, shown, strict=True))
    # the first segment's own leading dts are kept only when they fit before its first pts: here 3 are needed
    # and the third (0) does not, so the lead steps back from the first pts by the first frame gap (40)
    assert dts[:3] == [-120, -80, -40]
    # Matroska: no dts at all on the first packets
    assert [_DecodeTimes.plan(shown[:5], [None, None, 0]).dts(i) for i in range(5)] == [-80, -40, 0, 40, 80]
