"""`vidpipe bench dewatermark` (issue 17): the generated logo clip, the step timings read from a stage report,
and (with the dewatermark stage) a small real run on the CPU."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest

from vidpipe.bench import dewatermark as bd
from vidpipe.errors import UsageError


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_logo_clip_puts_the_logo_in_its_corner(tmp_path):
    size, frames = (192, 108), 6
    path = bd.logo_clip(tmp_path / "a.mp4", size, frames, source="testsrc2", opacity=1.0, corner="top-right")
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 192, 108)
    marked = _frames(path)
    assert len(marked) == frames
    plain = av.open("testsrc2=size=192x108:rate=30", format="lavfi")
    try:
        clean = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), plain.decode(video=0), strict=False)]
    finally:
        plain.close()
    strong = np.abs(marked[0].astype(int) - clean[0]).max(axis=2) > 60  # far above x264's crf-18 error
    logo = round(bd.LOGO_HEIGHT * 108)
    x1, y0 = 192 - round(bd.LOGO_MARGIN * 192), round(bd.LOGO_MARGIN * 108)
    inside = np.zeros_like(strong)
    inside[y0 : y0 + logo, x1 - logo : x1] = True
    assert strong[inside].mean() > 0.3  # the ring and the triangle
    # elsewhere only x264's rare misses at the bars' colour edges (4:2:0 chroma)
    grown = np.zeros_like(strong)
    grown[max(0, y0 - 4) : y0 + logo + 4, x1 - logo - 4 : x1 + 4] = True
    assert strong[~grown].mean() < 0.01
    # a second call reuses the file
    mtime = path.stat().st_mtime_ns
    assert bd.logo_clip(path, size, frames) == path and path.stat().st_mtime_ns == mtime
    assert bd.logo_box(size, "top-right") == (x1 - logo, y0, logo, logo)


def _pillarboxed(path, frames: int) -> None:
    """A 64×36 clip: a moving gradient in columns 8…55, black bars either side."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10, options={"crf": "10"})
        vs.width, vs.height, vs.pix_fmt = 64, 36, "yuv420p"
        for n in range(frames):
            img = np.zeros((36, 64, 3), np.uint8)
            img[:, 8:56] = ((np.arange(48)[None, :, None] * 4 + n * 9) % 200 + 40).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = n
            out.mux(vs.encode(f))
        out.mux(vs.encode())


def test_footage_crops_the_bars_scales_and_loops(tmp_path):
    clip = tmp_path / "boxed.mp4"
    _pillarboxed(clip, 5)
    assert bd._content_box(clip) == (9, 0, 46, 36)  # the bars and their soft edge cut off
    frames, rate = bd.footage(clip, (80, 48), 12, start=1)
    got = list(frames)
    assert rate == 10 and len(got) == 12  # 4 frames from frame 1, looped thrice
    assert all(g.shape == (48, 80, 3) for g in got)
    assert min(int(g[:, :3].min()) for g in got) >= 20  # no black bar left at the sides
    assert np.array_equal(got[0], got[4]) and not np.array_equal(got[0], got[1])


def test_logo_clip_over_footage_marks_the_logo_box(tmp_path):
    clip = tmp_path / "boxed.mp4"
    _pillarboxed(clip, 6)
    path = bd.logo_clip(tmp_path / "b.mp4", (128, 72), 8, source=str(clip), opacity=1.0)
    marked = _frames(path)
    assert len(marked) == 8
    clean, _ = bd.footage(clip, (128, 72), 8)
    x, y, w, h = bd.logo_box((128, 72))
    diff = np.abs(marked[0].astype(int) - next(clean)).max(axis=2) > 60
    assert diff[y : y + h, x : x + w].mean() > 0.3
    diff[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] = False
    assert diff.mean() < 0.01


def test_sources_and_box_iou():
    assert bd.is_lavfi("testsrc2") and bd.is_lavfi("life=ratio=0.2") and not bd.is_lavfi(bd.DEFAULT_SOURCE)
    assert not bd.is_lavfi("vtest.avi")
    assert bd.box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert bd.box_iou((0, 0, 4, 4), (10, 10, 2, 2)) == 0.0


def test_logo_clip_refuses_bad_values(tmp_path):
    with pytest.raises(UsageError, match="top-right"):
        bd.logo_clip(tmp_path / "a.mp4", (64, 64), 2, corner="middle")
    with pytest.raises(UsageError, match="opacity"):
        bd.logo_clip(tmp_path / "a.mp4", (64, 64), 2, opacity=0)


def test_step_seconds_reads_every_timing():
    report = {
        "marks": 2,
        "detect_s": 1.5,
        "steps": {"fill": {"seconds": 0.25, "pixels": 900}, "propagate_s": 2},
        "ok": True,
        "name_s": "not a number",
    }
    assert bd.step_seconds(report) == {"detect_s": 1.5, "steps.fill.seconds": 0.25, "steps.propagate_s": 2.0}
    # the shape the dewatermark stage reports: a dict of steps under "seconds"
    nested = {"seconds": {"detect": 1.0, "fill": 0.5}, "pixels": {"filled": 30}}
    assert bd.step_seconds(nested) == {"seconds.detect": 1.0, "seconds.fill": 0.5}


def test_bench_result_lines():
    r = bd.DewatermarkBench(
        input="320x180", frames=30, device="cpu", spec="auto", decode_fps=300.0, copy_fps=120.0, e2e_fps=4.5,
        steady_fps=5.0, wall_s=6.7, steps={"detect_s": 3.0}, report={},
    )  # fmt: skip
    assert r.row() == "| 320x180 | 30 | cpu | auto | 300.0 | 120.0 | 4.5 | 5.0 | 6.7 |"
    assert r.step_lines()[-1] == "| detect_s | 3.000 | 100.00 |"


@pytest.mark.gpu
def test_bench_runs_end_to_end_on_cuda(tmp_path):
    r = bd.bench_dewatermark((640, 360), frames=48, device="cuda", work_dir=tmp_path)
    assert r.frames == 48 and r.e2e_fps > 0 and r.decode_fps > 0 and r.copy_fps > 0
    assert r.device.startswith("cuda")  # runtime.device.describe: "cuda:0 (NAME, … GiB)"
    assert "seconds.detect" in r.steps  # the stage's own timings reached the table


def test_bound_lines_name_the_encoder_settings_and_each_runs_bound():
    r = bd.DewatermarkBench(
        input="320x180", frames=30, device="cpu", spec="auto", decode_fps=300.0, copy_fps=120.0, e2e_fps=4.5,
        steady_fps=5.0, wall_s=6.7, steps={}, report={}, speed="superfast", encode_workers=4,
        copy_bound={"bound_by": "encode", "fps": {"decode": 300.0, "encode": 120.25}},
    )  # fmt: skip
    assert r.bound_lines() == [
        "encode: x264 --speed superfast, --encode-workers 4",
        "copy: bound by encode (encode 120.2, decode 300.0 fps)",
        "end to end: bound not reported",
    ]
    assert replace(r, encode_workers=None).bound_lines()[0].endswith("--encode-workers auto")


def test_found_lines_give_the_true_box_and_each_marks_iou():
    r = bd.DewatermarkBench(
        input="320x180", frames=30, device="cpu", spec="auto", decode_fps=300.0, copy_fps=120.0, e2e_fps=4.5,
        steady_fps=5.0, wall_s=6.7, steps={}, report={"marks": [{"first": 8, "last": 29, "box": [10, 0, 10, 10],
        "source": "auto"}]}, logo=(5, 0, 10, 10),
    )  # fmt: skip
    assert r.found_lines() == [
        "logo: box:5,0,10,10 (its true box: pass it as --spec to time removal alone)",
        "auto mark, frames 8–29: box [10, 0, 10, 10], IoU 0.333",
    ]
    assert replace(r, report={}).found_lines()[1] == "auto: no mark removed: the end-to-end run timed detection alone"
    given = {"marks": [{"first": 0, "last": -1, "box": [5, 0, 10, 10], "source": "box"}]}
    assert (
        replace(r, spec="box:5,0,10,10", report=given).found_lines()[1]
        == "box mark, frames 0–end: box [5, 0, 10, 10], IoU 1.000"
    )
    assert replace(r, logo=None).found_lines() == []


def test_bench_refuses_negative_encode_workers(tmp_path):
    with pytest.raises(UsageError, match="encode workers"):
        bd.bench_dewatermark((64, 36), frames=2, work_dir=tmp_path, encode_workers=-1)
