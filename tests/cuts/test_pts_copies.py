"""Files whose container copies each packet's dts into its pts while the codec reorders frames (opencv-doc's
box.mp4, written by VLC 2.1's stream output): every frame is read in display order with increasing times, none is
dropped for its times; what the decoder cannot give is still reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cut_clips import CUT, FRAMES, RATE, run_main, two_shot_frames

from vidpipe.errors import TruncatedInputError, UsageError
from vidpipe.eval.cuts import source_path
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.media.yuv import PlanarBatch
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.run import run_detector

#: box.mp4: 456 packets; FFmpeg's H.264 decoder gives 455 frames (the last packet, a B-frame whose mini-GOP the
#: recording cut off, never comes out)
BOX_PACKETS = 456
BOX_FRAMES = 455


def _packet_times(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [p.pts for p in c.demux(video=0) if p.size]


def _read(path: Path, **options: object) -> tuple[list[int], list[torch.Tensor], int]:
    """Every frame's pts, each batch's pixels (RGB, or 4:2:0 planes with `planar=True`), and the frames the reader
    skipped."""
    reader = VideoReader(probe(path), ReaderOptions(keep_alpha=False, **options))  # type: ignore[arg-type]
    pts: list[int] = []
    data: list[torch.Tensor] = []
    with reader:
        for b in reader:
            pts += b.pts
            data.append(b.data.clone())
            if isinstance(b, PlanarBatch):
                b.done()  # the pooled buffer goes back
    return pts, data, reader.stats.corrupt_skipped


def test_generated_clip_has_the_defect(two_shots: Callable[..., Path]) -> None:
    """The fixture is what it claims: pts equal dts on every packet, yet the decoder's own pts come out of order."""
    path = two_shots(pts_copies=True)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.has_b_frames
        assert all(p.pts == p.dts for p in c.demux(vs) if p.size)
    with av.open(str(path)) as c:
        raw = [f.pts for f in c.decode(video=0)]
    assert len(raw) == FRAMES and raw != sorted(raw)


def test_frames_in_display_order_with_the_packet_times(two_shots: Callable[..., Path]) -> None:
    path = two_shots(pts_copies=True)
    pts, batches, skipped = _read(path)
    assert skipped == 0
    assert pts == _packet_times(path)  # the container's times, increasing, one per frame
    # each frame is the source frame of its place (neighbours differ by a 2-px pan, the cut by a whole picture)
    src = two_shot_frames().astype(np.int16)
    frames = np.concatenate([b.permute(0, 2, 3, 1).numpy() for b in batches]).astype(np.int16)
    nearest = [int(np.argmin(np.abs(src - f).mean(axis=(1, 2, 3)))) for f in frames]
    assert nearest == list(range(FRAMES))


def test_cut_found_at_its_frame_and_time(two_shots: Callable[..., Path]) -> None:
    path = two_shots(pts_copies=True)
    run = run_detector(path, CutDetector(CutOptions(detectors=("hard",), preset="fast")))
    assert (run.frames, run.skipped) == (FRAMES, 0)
    assert [(e.frame, e.time) for e in run.events] == [(CUT, Fraction(CUT) / RATE)]


def test_same_as_the_correctly_muxed_clip(two_shots: Callable[..., Path]) -> None:
    """Planes or RGB, the defective file reads as the correct mux of the same stream: same frames, same times."""
    good, bad = two_shots(), two_shots(pts_copies=True)
    tb_good, tb_bad = probe(good).video.time_base, probe(bad).video.time_base
    for planar in (False, True):
        (pg, bg, _), (pb, bb, _) = _read(good, planar=planar), _read(bad, planar=planar)
        assert len(pg) == FRAMES and [p * tb_good for p in pg] == [p * tb_bad for p in pb]
        assert len(bg) == len(bb) and all(x.equal(y) for x, y in zip(bg, bb, strict=True))


def test_reading_from_a_time_is_refused(two_shots: Callable[..., Path]) -> None:
    """A seek loses the packets' places, so the frames' times would be guesses: refused with one clear message."""
    with pytest.raises(UsageError, match="pts are copies of its dts, so it cannot be read from 1s"):
        _read(two_shots(pts_copies=True), start=Fraction(1))


# ------------------------------------------------------------------------------------------ the real clip


def test_box_mp4_frames_get_the_packet_times() -> None:
    box = source_path("box.mp4")
    times = _packet_times(box)
    assert len(times) == BOX_PACKETS
    # planes: no RGB conversion, the cheapest full read
    pts, _, skipped = _read(box, planar=True, on_corrupt="skip")
    assert pts == sorted(times)[:BOX_FRAMES]
    assert skipped == BOX_PACKETS - BOX_FRAMES


def test_box_mp4_cli_reports_the_missing_frame_then_skips_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Regression: `vidpipe cuts box.mp4` stopped at the second frame with "non-increasing pts". Now it reads every
    frame; the one the decoder never gives stops the default run with one line naming the option, and with
    `--on-corrupt skip` is counted in the summary."""
    box, out = source_path("box.mp4"), tmp_path / "box.json"
    code, _, err = run_main(capsys, "cuts", str(box), "-o", str(out), "--preset", "fast")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == TruncatedInputError.exit_code, err
    assert len(errors) == 1 and "non-increasing" not in err
    assert f"1 of {BOX_PACKETS} frames missing at the end" in errors[0] and "--on-corrupt skip" in errors[0]
    assert not out.exists()

    code, _, err = run_main(capsys, "cuts", str(box), "-o", str(out), "--preset", "fast", "--on-corrupt", "skip")
    assert code == 0, err
    assert f"in {BOX_FRAMES} frames, 1 skipped as damaged or missing" in err
    # single-shot footage (the evaluation's dataset uses it whole as one shot)
    assert [e for e in json.loads(out.read_text()) if e["kind"] in ("hard", "soft")] == []


def test_jobs_process_such_a_file_whole(two_shots: Callable[..., Path]) -> None:
    """Job segments start at seek points, which such a file cannot be read from: the planner runs it whole."""
    from vidpipe.jobs.runner import whole_file_reason
    from vidpipe.jobs.segments import scan_frames
    from vidpipe.stages.resize import Resize

    copies, proper = scan_frames(two_shots(pts_copies=True)), scan_frames(two_shots())
    assert copies.pts_copies and not proper.pts_copies
    assert copies.count == proper.count == FRAMES and copies.times == proper.times
    assert "pts are copies of its dts" in (whole_file_reason(copies, [Resize(96, 64)], "fail") or "")
    assert whole_file_reason(proper, [Resize(96, 64)], "fail") is None
