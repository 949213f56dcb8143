"""Watermark detection and removal (issue 17): the fill primitives, α/W estimation, detection over windows and
spans, the `dewatermark` stage's requests and bad input, and `vidpipe run --dewatermark` end to end.

Clips are real footage (opencv-doc's Megamind) panned across a larger frame, so the picture moves under a
generated mark of known α, the situation detection and propagation are built for."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_matte import batch_of, real_frames, write_rgb

from vidpipe.errors import UsageError
from vidpipe.frames import FrameBatch, StreamSpec
from vidpipe.media.probe import probe
from vidpipe.stages.dewatermark import Dewatermark, parse_requests, request_marks, seed_window
from vidpipe.stages.watermark.detect import detect_marks, merge_marks
from vidpipe.stages.watermark.estimate import estimate_blend
from vidpipe.stages.watermark.fill import dilate, feather, harmonic, local_shift, propagate, pushpull
from vidpipe.stages.watermark.marks import OPEN_END, save_marks
from vidpipe.stages.watermark.remove import FEATHER, remove_mark

W, H = 160, 120
#: the pan per frame (px, x and y): every frame shows new picture under a fixed mark
STEP = (2, 3)


def pan(count: int) -> torch.Tensor:
    """`count` W×H frames (float 0..1) cut from a larger real frame at a moving offset."""
    big = real_frames("Megamind.avi", 1, start=100, size=(2 * W, 2 * H))[0].float() / 255
    return torch.stack(
        [big[:, 10 + i * STEP[1] : 10 + i * STEP[1] + H, 4 + i * STEP[0] : 4 + i * STEP[0] + W] for i in range(count)]
    )


def logo(alpha: float, x: int = 100, y: int = 88, w: int = 44, h: int = 22) -> np.ndarray:
    """A ring-and-bar logo of opacity `alpha` in the box (x, y, w, h) of a W×H frame."""
    a = np.zeros((H, W), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / h * 2, (xx - w / 2) / w * 2)
    shape = ((r < 0.95) & (r > 0.5)) | ((abs(yy - h / 2) < 2) & (abs(xx - w / 2) < w * 0.4))
    a[y : y + h, x : x + w] = shape * alpha
    return a


def marked(frames: torch.Tensor, alpha: np.ndarray, colour: float = 1.0) -> torch.Tensor:
    """Frames with the mark blended in (I = α·W + (1 − α)·B), rounded to 8 bits as a decoder would give them."""
    a = torch.from_numpy(alpha)[None, None]
    return ((a * colour + (1 - a) * frames) * 255).round() / 255


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# --- fill primitives ------------------------------------------------------------------------------------------


def _ramp_fill(fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, float]:
    """A horizontal ramp with a hole filled by `fill`: (its pixels outside the hole are the ramp's, the largest
    error inside the hole)."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 48, 64).contiguous()
    hole = torch.zeros(1, 1, 48, 64, dtype=torch.bool)
    hole[..., 16:32, 24:40] = True
    out = fill(ramp, hole)
    kept = torch.equal(out[~hole.expand_as(out)], ramp[~hole.expand_as(ramp)])
    return kept, float((out - ramp).abs()[hole.expand_as(out)].max())


def test_pushpull_keeps_known_pixels_and_continues_a_smooth_picture_into_the_hole() -> None:
    kept, err = _ramp_fill(pushpull)
    assert kept and err < 0.05  # a linear ramp is continued, not flattened


def test_harmonic_fill_keeps_known_pixels_and_continues_a_ramp_almost_exactly() -> None:
    kept, err = _ramp_fill(harmonic)
    # a linear ramp is harmonic: the relaxed fill meets it (measured 0.0002), push-pull alone is off by 0.016
    assert kept and err < 0.002 and _ramp_fill(pushpull)[1] > 0.01


def test_feather_rises_from_the_hole_edge_to_one_inside() -> None:
    hole = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    hole[..., 5:15, 5:15] = True
    w = feather(hole, 2)
    assert float(w[~hole].abs().max()) == 0
    assert 0 < float(w[0, 0, 5, 10]) < float(w[0, 0, 6, 10]) < float(w[0, 0, 7, 10]) == 1.0


def test_local_shift_finds_the_pan_between_two_real_frames() -> None:
    f = pan(2)
    ring = torch.ones(1, H, W, dtype=torch.bool)
    dy, dx, rms = local_shift(f[0], f[1], ring, torch.zeros_like(ring), 8)
    assert (dy, dx) == (-STEP[1], -STEP[0]) and rms < 1e-6


def test_propagation_fills_a_hole_with_the_exact_pixels_another_frame_showed() -> None:
    f = pan(6)
    hole = torch.zeros(6, 1, H, W, dtype=torch.bool)
    hole[..., 50:60, 60:72] = True
    corrupted = torch.where(hole, torch.zeros_like(f), f)
    out, left = propagate(corrupted, hole, ring=6, radius=12, reach=5)
    assert not bool(left.any())  # a pan of (2, 3) px per frame: 3 frames away uncover any pixel of it
    assert torch.equal(out, f)  # integer shifts of the same picture: bit for bit


# --- estimation and detection ---------------------------------------------------------------------------------


def test_blend_estimate_recovers_alpha_and_colour_of_a_semi_transparent_mark() -> None:
    truth = logo(0.5)
    x = marked(pan(24), truth, colour=0.9)
    crop = (slice(70, 120), slice(80, 160))
    frames, support = x[:, :, crop[0], crop[1]], torch.from_numpy(truth[crop] > 0)
    around = dilate(support[None, None], 2).expand(len(frames), 1, *support.shape)
    shown, unseen = propagate(frames, around, ring=6, radius=24, reach=12)  # the background other frames showed
    blend = estimate_blend(frames, support, background=shown, seen=around & ~unseen)
    a = blend.alpha.numpy()
    inside = truth[crop] > 0
    assert abs(float(a[inside].mean()) - 0.5) < 0.08 and float(np.abs(a - truth[crop])[inside].mean()) < 0.12
    w = blend.colour.permute(1, 2, 0).numpy()[inside & blend.confident.numpy()]
    assert abs(float(np.median(w)) - 0.9) < 0.08


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_detection_finds_a_mark_over_moving_footage(alpha: float) -> None:
    truth = logo(alpha)
    det = detect_marks(marked(pan(32), truth), list(range(100, 132)))
    assert len(det.marks) == 1, det.notes
    m = det.marks[0]
    assert (m.first, m.last) == (100, 131)
    assert iou(m.alpha > 0.05, truth > 0) >= 0.9  # measured 0.986 for both α


def test_detection_splits_a_jumping_mark_into_spans_and_finds_none_on_clean_footage() -> None:
    clean = pan(32)
    x = torch.cat([marked(clean[:16], logo(1.0, x=8, y=8)), marked(clean[16:], logo(1.0))])
    marks = merge_marks(detect_marks(x, list(range(32))).marks)
    spans = sorted((m.first, m.last, m.box(0.5)[0] < 50) for m in marks)  # type: ignore[index]
    assert spans == [(0, 15, True), (16, 31, False)]
    assert detect_marks(clean, list(range(32))).marks == []


def test_a_picture_that_never_changes_gives_no_mark_and_says_why() -> None:
    still = real_frames("vtest.avi", 1, size=(W, H)).float() / 255
    det = detect_marks(marked(still.expand(24, -1, -1, -1), logo(1.0)), list(range(24)))
    assert det.marks == [] and "nothing changes" in det.notes[0]


def test_a_mark_that_comes_and_goes_over_a_fixed_camera_is_found_in_its_frames() -> None:
    """A fixed camera (vtest: people walk, the rest holds still): no temporal statistic of a still picture tells
    a mark that stays from the scene, but one that comes and goes changes a compact region at once; the same
    frames without it give no mark (a part of the scene that only passers-by move around is not one)."""
    still = real_frames("vtest.avi", 32, size=(W, H)).float() / 255
    truth = logo(0.5, x=8, y=8)
    x = torch.cat([still[:10], marked(still[10:26], truth), still[26:]])
    marks = merge_marks(detect_marks(x, list(range(32))).marks)
    assert [(m.first, m.last) for m in marks] == [(10, 25)], [(m.first, m.last, m.box(0.5)) for m in marks]
    assert iou(marks[0].alpha >= 0.5 * marks[0].alpha.max(), truth >= 0.25) >= 0.7
    assert detect_marks(still, list(range(32))).marks == []


# --- removal --------------------------------------------------------------------------------------------------


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-12)))


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_removal_restores_the_background_and_leaves_the_rest_alone(alpha: float) -> None:
    clean = pan(16)
    truth = logo(alpha)
    x = marked(clean, truth)
    box = np.zeros_like(truth)
    box[86:112, 98:146] = 1  # a user's box around the logo: α and W unknown
    new, crop, outcome = remove_mark(x, torch.from_numpy(box), None)
    y0, y1, x0, x1 = (int(v) for v in crop)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = new
    region = (slice(None), slice(None), slice(86, 112), slice(98, 146))
    gain = _psnr(out[region], clean[region]) - _psnr(x[region], clean[region])
    assert gain > 10  # with 24 frames of this clip (not 16) it measured 29.7 dB opaque, 34.1 dB at α 0.5
    assert outcome.propagated > 0
    grown = torch.zeros(H, W, dtype=torch.bool)
    grown[86 - FEATHER : 112 + FEATHER, 98 - FEATHER : 146 + FEATHER] = True
    assert torch.equal(out[:, :, ~grown], x[:, :, ~grown])


def test_a_true_mask_changes_only_its_own_pixels_and_beats_a_dilated_fill() -> None:
    # a still shot (nothing to propagate or fit): the spatial fill alone, over the mark's pixels and no others
    still = real_frames("vtest.avi", 8, size=(W, H)).float() / 255
    truth = logo(1.0)
    x = marked(still, truth)
    mask = (truth > 0).astype(np.float32)
    new, crop, _ = remove_mark(x, torch.from_numpy(mask), None)
    y0, y1, x0, x1 = (int(v) for v in crop)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = new
    outside = torch.from_numpy(truth == 0)
    assert torch.equal(out[:, :, outside], x[:, :, outside])
    region = (slice(None), slice(None), slice(88, 110), slice(100, 144))
    # the same fill over the mask grown by FEATHER px replaces true picture around the mark: lower PSNR
    grown = dilate(torch.from_numpy(truth > 0)[None, None], FEATHER).expand(len(x), 1, H, W)
    wider = pushpull(x, grown)
    assert _psnr(out[region], still[region]) > _psnr(wider[region], still[region]) + 1
    assert _psnr(out[region], still[region]) > _psnr(x[region], still[region]) + 5


def test_frames_without_the_mark_give_back_the_background_it_hides() -> None:
    # a fixed camera and a mark that jumps: where it sat in frames 0..7, frames 8..15 show the picture itself
    still = real_frames("vtest.avi", 16, size=(W, H)).float() / 255
    here, there = logo(1.0), logo(1.0, x=8, y=8)
    x = torch.cat([marked(still[:8], here), marked(still[8:], there)])
    mask = torch.from_numpy((here > 0).astype(np.float32))
    dirty = torch.from_numpy(there > 0).expand(8, H, W)
    region = (slice(None), slice(None), slice(88, 110), slice(100, 144))
    scores = []
    for free in (None, x[8:]):
        new, crop, outcome = remove_mark(x[:8], mask, None, free=free, free_dirty=None if free is None else dirty)
        y0, y1, x0, x1 = (int(v) for v in crop)
        out = x[:8].clone()
        out[:, :, y0:y1, x0:x1] = new
        assert torch.equal(out[:, :, torch.from_numpy(here == 0)], x[:8, :, torch.from_numpy(here == 0)])
        scores.append(_psnr(out[region], still[:8][region]))
    assert outcome.propagated > 0
    # people walk through vtest, so the copy is not exact everywhere; the spatial fill alone is far below
    assert scores[1] > 35 and scores[1] > scores[0] + 10, scores


# --- the stage: requests, bad input -----------------------------------------------------------------------------


def test_requests_parse_and_bad_ones_are_usage_errors(tmp_path: Path) -> None:
    reqs = parse_requests("auto; box:1,2,30,40@5-9;mask:a@b.png@7-")
    assert [(r.kind, r.arg, r.first, r.last) for r in reqs] == [
        ("auto", "", 0, OPEN_END),
        ("box", "1,2,30,40", 5, 9),
        ("mask", "a@b.png", 7, OPEN_END),
    ]
    for bad, match in [("logo:1", "valid: auto"), ("box:", "needs an argument"), ("box:1,2,3,4@9-3", "ends before")]:
        with pytest.raises(UsageError, match=match):
            parse_requests(bad)
    with pytest.raises(UsageError, match="not inside the 160x120 frame"):
        request_marks(parse_requests("box:150,10,20,20")[0], W, H)
    with pytest.raises(UsageError, match="covers 100% of the frame"):
        request_marks(parse_requests(f"box:0,0,{W},{H}")[0], W, H)
    png = tmp_path / "small.png"
    from vidpipe.cli.watermark_cmd import write_png

    write_png(png, np.full((60, 80), 255, np.uint8))
    with pytest.raises(UsageError, match="is 80x60, the frames are 160x120"):
        request_marks(parse_requests(f"mask:{png}")[0], W, H)
    assert seed_window(80) == 16 and seed_window(12) == 10 and seed_window(4) == 6


def _stage(spec: str, frames: torch.Tensor) -> tuple[Dewatermark, FrameBatch]:
    st = Dewatermark(spec, window=len(frames))
    st.setup(torch.device("cpu"), StreamSpec(width=W, height=H, time_base=Fraction(1, 25)))
    u8 = (frames * 255).round().to(torch.uint8)
    return st, FrameBatch(data=u8, pts=list(range(len(u8))), time_base=Fraction(1, 25), index=list(range(len(u8))))


def test_stage_removes_auto_marks_within_their_span_and_reports_each_step() -> None:
    clean = pan(24)
    x = torch.cat([clean[:4], marked(clean[4:], logo(1.0))])
    st, batch = _stage("auto", x)
    out = st.process_window(batch)
    assert torch.equal(out.data[:4], batch.data[:4])  # before the mark appears: untouched
    assert out.pts == batch.pts and out.index == batch.index
    rep = st.report()
    assert rep["auto_found"] == 1 and rep["marks"][0]["first"] == 4
    assert rep["pixels"]["propagated"] > 0 and set(rep["seconds"]) >= {"detect", "estimate", "propagate", "fill"}


def test_stage_takes_a_jumping_marks_background_from_the_frames_where_it_sat_elsewhere(tmp_path: Path) -> None:
    still = real_frames("vtest.avi", 16, size=(W, H)).float() / 255  # a fixed camera
    here, there = logo(1.0), logo(1.0, x=8, y=8)
    x = torch.cat([marked(still[:8], here), marked(still[8:], there)])
    from vidpipe.cli.watermark_cmd import write_png

    pngs = [tmp_path / "m0.png", tmp_path / "m1.png"]
    for png, a in zip(pngs, (here, there), strict=True):
        write_png(png, (a > 0).astype(np.uint8) * 255)
    st, batch = _stage(f"mask:{pngs[0]}@0-7;mask:{pngs[1]}@8-15", x)
    out = st.process_window(batch).data.float() / 255
    for sl, a in ((slice(0, 8), here), (slice(8, 16), there)):
        ys, xs = np.nonzero(a)
        box = (sl, slice(None), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        assert _psnr(out[box], still[box]) > 35, (sl, _psnr(out[box], still[box]))  # a spatial fill alone: 25.7 dB
    assert st.report()["pixels"]["propagated"] > 0


def test_a_window_works_on_its_marks_region_exactly_as_on_the_whole_frame(tmp_path: Path, monkeypatch) -> None:
    """Only the box around a window's marks goes to the device as float (`Dewatermark._region`); with two marks
    far apart, one at the frame's corner (its crop box cut by the frame edges), the output is the whole frame's
    bit for bit."""
    import vidpipe.stages.dewatermark as dw
    from vidpipe.cli.watermark_cmd import write_png

    still = real_frames("vtest.avi", 12, size=(W, H)).float() / 255
    corner, middle = logo(1.0, x=0, y=0), logo(0.5, x=60, y=50)
    x = torch.cat([marked(still[:6], corner), marked(marked(still[6:], corner), middle)])
    pngs = [tmp_path / "corner.png", tmp_path / "middle.png"]
    for png, a in zip(pngs, (corner, middle), strict=True):
        write_png(png, (a > 0).astype(np.uint8) * 255)
    spec = f"mask:{pngs[0]};mask:{pngs[1]}@6-11"
    st, batch = _stage(spec, x)
    assert st._region(st._kept, (H, W)) != (0, H, 0, W)  # a part of the frame, not all of it
    cropped = st.process_window(batch).data
    monkeypatch.setattr(dw, "REGION_MARGIN", 10**6)
    st, batch = _stage(spec, x)
    assert st._region(st._kept, (H, W)) == (0, H, 0, W)
    whole = st.process_window(batch).data
    assert torch.equal(cropped, whole) and not torch.equal(cropped, batch.data)


def test_stage_with_auto_and_no_mark_passes_frames_through_and_says_so() -> None:
    st, batch = _stage("auto", pan(16))
    assert torch.equal(st.process_window(batch).data, batch.data)
    assert st.report()["message"] == "auto found no mark: the output equals the input"


def test_marks_json_from_detection_is_taken_back(tmp_path: Path) -> None:
    x = marked(pan(24), logo(0.5))
    marks = detect_marks(x, list(range(24))).marks
    save_marks(marks, tmp_path / "m.json")
    st, batch = _stage(f"mask:{tmp_path / 'm.json'}@10-", x)
    assert [(m.first, m.last, m.source) for m in st.user_marks] == [(10, 23, "auto")]
    out = st.process_window(batch)
    assert torch.equal(out.data[:10], batch.data[:10]) and not torch.equal(out.data[10:], batch.data[10:])


# --- end to end -------------------------------------------------------------------------------------------------


def test_run_keeps_frames_timestamps_audio_and_every_pixel_outside_the_box(tmp_path: Path, cli) -> None:
    src = write_rgb(tmp_path / "clean.mkv", (marked(pan(20), logo(1.0)) * 255).round().to(torch.uint8))
    with_audio = tmp_path / "in.mkv"
    with av.open(str(src)) as s, av.open(str(with_audio), "w") as d:
        v = d.add_stream_from_template(s.streams.video[0])
        a = d.add_stream("pcm_s16le", rate=48000, layout="mono")
        for p in s.demux(s.streams.video[0]):
            if p.dts is not None:
                p.stream = v
                d.mux(p)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 48000 * 20 // 25), np.int16), format="s16", layout="mono")
        silence.sample_rate, silence.pts = 48000, 0
        for p in [*a.encode(silence), *a.encode()]:
            d.mux(p)
    out = tmp_path / "out.mkv"
    r = cli(
        "run",
        str(with_audio),
        "-o",
        str(out),
        "--dewatermark",
        "box:98,86,48,26",
        "--encoder",
        "ffv1",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    info_in, info_out = probe(with_audio), probe(out)
    assert [st.type for st in info_out.streams] == [st.type for st in info_in.streams] == ["video", "audio"]
    assert info_out.video.frames == info_in.video.frames == 20

    def read(path: Path) -> tuple[np.ndarray, list[int]]:
        with av.open(str(path)) as c:
            fs = list(c.decode(video=0))
            return np.stack([f.to_ndarray(format="rgb24") for f in fs]), [int(f.pts * f.time_base * 1000) for f in fs]

    (a_px, a_ts), (b_px, b_ts) = read(with_audio), read(out)
    assert a_ts == b_ts
    grown = np.zeros((H, W), bool)
    grown[86 - FEATHER : 112 + FEATHER, 98 - FEATHER : 146 + FEATHER] = True
    assert np.array_equal(a_px[:, ~grown], b_px[:, ~grown]) and not np.array_equal(a_px, b_px)
    report = __import__("json").loads(out.with_name(out.name + ".json").read_text())
    assert report["stage_reports"]["dewatermark"]["pixels"]["propagated"] > 0


def test_watermark_detect_writes_marks_or_a_mask_png_and_a_preview(tmp_path: Path, cli) -> None:
    clip = write_rgb(tmp_path / "m.mkv", (marked(pan(32), logo(1.0)) * 255).round().to(torch.uint8))
    r = cli("watermark", "detect", str(clip), "-o", str(tmp_path / "marks.json"), "--device", "cpu", "--window", "32")
    assert r.returncode == 0, r.stderr
    assert "wrote 1 mark(s)" in r.stdout and (tmp_path / "marks.preview.png").is_file()
    # into a folder that is not there yet: made, as `vidpipe run -o` makes its own (it was a traceback after the
    # whole detection)
    mask_png = tmp_path / "new" / "dir" / "mask.png"
    r = cli("watermark", "detect", str(clip), "-o", str(mask_png), "--device", "cpu", "--window", "32")
    assert r.returncode == 0, r.stderr
    assert (mask_png.parent / "mask.preview.png").is_file()
    with av.open(str(mask_png)) as c:
        mask = next(c.decode(video=0)).to_ndarray(format="gray") > 12
    assert iou(mask, logo(1.0) > 0) >= 0.8
    r = cli("watermark", "detect", str(clip), "-o", str(tmp_path / "marks.txt"))
    assert r.returncode == 2 and "must end in .json" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_stage_on_the_gpu_finds_and_removes_what_it_does_on_the_cpu() -> None:
    clean = pan(24)
    x = marked(clean, logo(1.0))
    outs, reports = [], []
    for device in ("cpu", "cuda"):
        st = Dewatermark("auto", window=24)
        st.setup(torch.device(device), StreamSpec(width=W, height=H, time_base=Fraction(1, 25)))
        u8 = (x * 255).round().to(torch.uint8).to(device)
        batch = FrameBatch(data=u8, pts=list(range(24)), time_base=Fraction(1, 25), index=list(range(24)))
        outs.append(st.process_window(batch).data.cpu().float() / 255)
        reports.append(st.report())
    assert [(m["first"], m["last"], m["box"]) for m in reports[0]["marks"]] == [
        (m["first"], m["last"], m["box"]) for m in reports[1]["marks"]
    ]
    assert abs(_psnr(outs[0], clean) - _psnr(outs[1], clean)) < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_windows_detected_at_once_on_the_gpu_find_what_one_at_a_time_does() -> None:
    """`detect_clip` on CUDA runs several windows at once, each on its own thread and stream: the marks are
    those of one window at a time, bit for bit (a race between streams would show here)."""
    from vidpipe.stages.watermark.whole import detect_clip

    p = pan(36)
    x = marked(torch.cat([p, p.flip(0)]), logo(0.6))  # the pan there and back: 72 frames
    u8 = (x * 255).round().to(torch.uint8)
    batches = [batch_of(u8[i : i + 8], i) for i in range(0, 72, 8)]
    one = detect_clip(batches, torch.device("cuda"), window=24, in_flight=1)
    many = detect_clip(batches, torch.device("cuda"), window=24, in_flight=3)
    assert one.windows == many.windows == 3 and one.marks
    assert [(m.first, m.last) for m in one.marks] == [(m.first, m.last) for m in many.marks]
    for a, b in zip(one.marks, many.marks, strict=True):
        assert np.array_equal(a.alpha, b.alpha)
        assert (a.colour is None) == (b.colour is None)
        assert a.colour is None or np.array_equal(a.colour, b.colour)
