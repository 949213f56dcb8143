"""4:2:0 planes ⇄ RGB in torch (media/yuv.py), the pooled host buffers, and the pipeline with colour conversion on
the stage device. The CUDA case at the end skips itself on CPU machines."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import av
import pytest
import torch

from calibration import scaled
from vidpipe.frames import Colour
from vidpipe.media.buffers import HostBuffers
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.media.yuv import (
    PlanarBatch,
    PlanarFormat,
    copy_frame_planes,
    fit,
    frame_from_planes,
    planes_to_rgb,
    rgb_to_planes,
)
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.pad import Pad
from vidpipe.stages.resize import Resize
from vidpipe.testing import decode_all, psnr

SWS = {"bt709": "itu709", "smpte170m": "smpte170m", "bt2020nc": "bt2020"}
LOSSLESS = WriterOptions(encoder=EncoderOptions(encoder="ffv1"))


def first_frame(path) -> av.VideoFrame:
    with av.open(str(path)) as c:
        return next(c.decode(video=0))


def packed(frame: av.VideoFrame, fmt: PlanarFormat) -> torch.Tensor:
    row = torch.empty(1, fmt.elements, dtype=fmt.dtype)
    copy_frame_planes(frame, fmt, row[0])
    return row


@pytest.mark.parametrize("size", [(640, 480), (642, 482), (321, 241), (1920, 1080)])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_planes_round_trip_through_av_frames_exactly(size, pix_fmt):
    fmt = PlanarFormat(pix_fmt, *size)
    top = (1 << fmt.bit_depth) - 1
    row = torch.randint(0, top + 1, (fmt.elements,), dtype=torch.int32).to(fmt.dtype)
    frame = frame_from_planes(row, fmt)
    assert (frame.width, frame.height, frame.format.name) == (*size, pix_fmt)
    back = torch.empty_like(row)
    copy_frame_planes(frame, fmt, back)
    assert torch.equal(back, row)


@pytest.mark.parametrize("source", ["mandelbrot", "smptebars", "testsrc2"])
@pytest.mark.parametrize("matrix", ["bt709", "smpte170m", "bt2020nc"])
@pytest.mark.parametrize("rng", ["tv", "pc"])
def test_rgb_round_trip_keeps_the_planes(make, source, matrix, rng):
    """YUV → RGB → YUV: the chroma filters are exact inverses, so only rounding and out-of-gamut clipping remain.
    The generated clips are BT.601 content: read with that matrix they are in gamut and come back within a
    fraction of a code value, closer than swscale's own round trip; read with another matrix some colours
    clip, and the luma of the pixels that did not clip still comes back."""
    frame = first_frame(make(f"yuv-{source}.mkv", frames=1, size=(320, 240), source=source, codec="ffv1"))
    fmt = PlanarFormat("yuv420p", 320, 240)
    row = packed(frame, fmt)
    col = Colour(matrix=matrix, range=rng)
    rgb = planes_to_rgb(row, fmt, col, torch.uint8)
    err = (rgb_to_planes(rgb, fmt, col).int() - row.int()).abs().float()
    luma, chroma = err[0, : 320 * 240].view(240, 320), err[:, 320 * 240 :]
    unclipped = ((rgb[0] > 0) & (rgb[0] < 255)).all(dim=0)
    assert luma[unclipped].mean() < 0.25, luma[unclipped].mean()
    if matrix == "smpte170m":
        assert luma.mean() < 0.25, luma.mean()
        assert chroma.mean() < 0.4, chroma.mean()
        levels = {"src_colorspace": SWS[matrix], "src_color_range": "JPEG" if rng == "pc" else "MPEG"}
        sw = frame.reformat(format="rgb24", **levels)
        back_levels = {"dst_colorspace": levels["src_colorspace"], "dst_color_range": levels["src_color_range"]}
        sw_back = sw.reformat(format="yuv420p", **back_levels)
        sw_err = (packed(sw_back, fmt).int() - row.int()).abs().float().mean()
        assert err.mean() < sw_err, (err.mean(), sw_err)


KR_KB = {"bt709": (0.2126, 0.0722), "smpte170m": (0.299, 0.114), "bt2020nc": (0.2627, 0.0593)}


@pytest.mark.parametrize("matrix", ["bt709", "smpte170m", "bt2020nc"])
@pytest.mark.parametrize("rng", ["tv", "pc"])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_rgb_matches_the_matrix_in_flat_areas(make, matrix, rng, pix_fmt):
    """Where the picture is flat (SMPTE bars away from edges) chroma interpolation plays no part: every pixel
    equals the inverse of the standard's RGB→YCbCr matrix (computed here independently, in float64) within one
    code value, and stays within a few code values of swscale (whose fixed-point path rounds coarser)."""
    src = make("yuv-bars.mkv", frames=1, size=(320, 240), source="smptebars", codec="ffv1")
    frame = first_frame(src).reformat(format=pix_fmt)
    fmt = PlanarFormat(pix_fmt, 320, 240)
    deep = fmt.bit_depth > 8
    row = packed(frame, fmt)
    ours = planes_to_rgb(row, fmt, Colour(matrix=matrix, range=rng), torch.uint16 if deep else torch.uint8)[0]
    y, u, v = (p[0].double() for p in fmt.split(row))
    flat = y.new_ones(y.shape, dtype=torch.bool)
    for plane, k in ((y, 9), (u, 5), (v, 5)):
        pad = k // 2
        hi = torch.nn.functional.max_pool2d(plane[None, None], k, 1, pad)[0, 0]
        lo = -torch.nn.functional.max_pool2d(-plane[None, None], k, 1, pad)[0, 0]
        same = (hi == lo).repeat_interleave(320 // plane.shape[1], 1).repeat_interleave(240 // plane.shape[0], 0)
        flat &= same
    assert flat.float().mean() > 0.5
    kr, kb = KR_KB[matrix]
    kg = 1 - kr - kb
    to_ycc = torch.tensor(
        [[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5], [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]],
        dtype=torch.float64,
    )
    s = float(1 << (fmt.bit_depth - 8))
    top = (1 << fmt.bit_depth) - 1
    if rng == "tv":
        ycc = torch.stack([(y - 16 * s) / (219 * s), (up(u) - 128 * s) / (224 * s), (up(v) - 128 * s) / (224 * s)])
    else:
        ycc = torch.stack([y / top, (up(u) - 128 * s) / top, (up(v) - 128 * s) / top])
    rgb = torch.linalg.solve(to_ycc, ycc.reshape(3, -1)).reshape(3, 240, 320).clamp(0, 1)
    full = 65535.0 if deep else 255.0
    exact = (rgb * full).round()
    diff = (ours.double() - exact).abs()[:, flat]
    assert diff.max() <= 1.0, diff.max()
    levels = {"src_colorspace": SWS[matrix], "src_color_range": "JPEG" if rng == "pc" else "MPEG"}
    sw = frame.to_ndarray(format="rgb48le" if deep else "rgb24", **levels)
    sw_diff = (ours.double() - torch.from_numpy(sw.astype("float64")).permute(2, 0, 1)).abs()[:, flat]
    assert sw_diff.max() <= (4 * 64 if deep else 3), sw_diff.max()  # 3-4 code values of the 8-bit scale


def up(c: torch.Tensor) -> torch.Tensor:
    """Nearest chroma upsampling: exact in flat areas, and independent of the code under test."""
    return c.repeat_interleave(2, 0).repeat_interleave(2, 1)


def test_grey_is_exact_against_swscale():
    """Neutral chroma isolates the luma levels: every code value of a ramp matches swscale exactly."""
    fmt = PlanarFormat("yuv420p", 256, 2)
    frame = av.VideoFrame(256, 2, "yuv420p")
    row = torch.full((1, fmt.elements), 128, dtype=torch.uint8)
    row[0, :512] = torch.arange(256, dtype=torch.uint8).repeat(2)
    for plane, part in zip(frame.planes, (row[0, :512], row[0, 512:640], row[0, 640:]), strict=True):
        plane.update(part.numpy().tobytes())
    for rng in ("tv", "pc"):
        ours = planes_to_rgb(row, fmt, Colour(matrix="bt709", range=rng), torch.uint8)[0, 1, 0]
        sw = frame.to_ndarray(
            format="rgb24", src_colorspace="itu709", src_color_range="JPEG" if rng == "pc" else "MPEG"
        )
        assert (ours.int() - torch.from_numpy(sw[0, :, 1]).int()).abs().max() <= 1


def test_fit_crops_then_repeats_edges():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    y = fit(x, (5, 3), (6, 4))
    assert y.shape == (2, 3, 4, 6)
    assert torch.equal(y[:, :, :3, :5], x[:, :, :3, :5])
    assert torch.equal(y[:, :, :3, 5], x[:, :, :3, 4])  # the cropped-back edge, not the stage's padding
    assert torch.equal(y[:, :, 3], y[:, :, 2])


def test_planar_batch_checks_its_shape():
    fmt = PlanarFormat("yuv420p", 4, 4)
    with pytest.raises(ValueError, match="does not hold"):
        PlanarBatch(data=torch.zeros(2, fmt.elements + 1, dtype=torch.uint8), fmt=fmt, pts=[0, 1], time_base=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 frames but 1 pts"):
        PlanarBatch(data=torch.zeros(2, fmt.elements, dtype=torch.uint8), fmt=fmt, pts=[0], time_base=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: yuv420p"):
        PlanarFormat("nv12", 4, 4)


def test_host_buffers_are_bounded_and_reused():
    pool = HostBuffers(10, torch.uint8, 2, pin=False)
    a, b = pool.get(4), pool.get(4)
    got: list[torch.Tensor] = []
    t = threading.Thread(target=lambda: got.append(pool.get(4)))
    t.start()
    time.sleep(0.3)
    assert not got  # both buffers out: the third get waits
    pool.put(a)
    t.join(scaled(5))
    assert got and got[0].data_ptr() == a.data_ptr()
    pool.put(b)
    bigger = pool.get(6)  # b is too small for 6 rows: replaced, the count stays 2
    assert bigger.shape == (6, 10) and bigger.data_ptr() != b.data_ptr()


def test_host_buffers_wait_calls_check():
    pool = HostBuffers(10, torch.uint8, 1, pin=False, check=lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    pool.get(1)
    with pytest.raises(KeyboardInterrupt):
        pool.get(1)


@pytest.mark.parametrize(
    "size,stages",
    [((320, 240), lambda: []), ((322, 242), lambda: [Resize(641, 481)]), ((321, 241), lambda: [Pad(16)])],
    ids=["identity", "resize-odd", "pad-odd"],
)
def test_pipeline_colour_on_device_matches_swscale_path(make, tmp_path, size, stages):
    src = make(f"yuvpipe-{size[0]}.mkv", frames=12, size=size, source="mandelbrot", codec="ffv1", pix_fmt="yuv420p")
    base = run(
        src, tmp_path / "sws.mkv", stages(), RunOptions(progress="none", writer=LOSSLESS, colour_on_device="off")
    )
    dev = run(src, tmp_path / "dev.mkv", stages(), RunOptions(progress="none", writer=LOSSLESS, colour_on_device="on"))
    assert base.manifest["colour_conversion"] == {"decode": "swscale", "encode": "swscale"}
    assert dev.manifest["colour_conversion"]["decode"].startswith("yuv420p planes")
    assert dev.manifest["colour_conversion"]["encode"].startswith("RGB → yuv420p")
    t1, a = decode_all(tmp_path / "sws.mkv")
    t2, b = decode_all(tmp_path / "dev.mkv")
    assert t1 == t2 and a.shape == b.shape and dev.frames_out == base.frames_out == 12
    # not identical by design: swscale replicates chroma, we interpolate it at the H.264 default siting
    assert psnr(a, b) > 30


def test_large_batches_go_down_in_pieces_that_bound_the_pool(make, tmp_path, monkeypatch):
    """A batch of more frames than the download pool's share per buffer (a windowed stage's window) goes to the
    encoder in pieces of at most that many frames: the same output, the pool's buffers that small."""
    from vidpipe.runtime import transfer

    src = make("yuv-pieces.mkv", frames=12, size=(64, 48), source="mandelbrot", codec="ffv1", pix_fmt="yuv420p")
    opts = RunOptions(progress="none", writer=LOSSLESS, colour_on_device="on")
    whole = run(src, tmp_path / "whole.mkv", [], replace(opts, reader=ReaderOptions(batch_size=12)))
    sizes: list[int] = []
    down = transfer.Transfer.download
    monkeypatch.setattr(transfer.Transfer, "download", lambda self, out: sizes.append(len(out)) or down(self, out))
    frame = 64 * 48 * 3 // 2
    monkeypatch.setattr(transfer, "DOWNLOAD_POOL_BYTES", 5 * frame * (opts.encode_queue + 3))  # 5 frames a piece
    cut = run(src, tmp_path / "cut.mkv", [], replace(opts, reader=ReaderOptions(batch_size=12)))
    assert sizes == [5, 5, 2] and cut.frames_out == whole.frames_out == 12
    t1, a = decode_all(tmp_path / "whole.mkv")
    t2, b = decode_all(tmp_path / "cut.mkv")
    assert t1 == t2 and torch.equal(a, b)


def test_pipeline_keeps_rgb_path_for_alpha_and_rotation(make, tmp_path):
    src = make("yuv-rot.mp4", frames=4, size=(64, 48), rotation=90)
    res = run(src, tmp_path / "r.mkv", [], RunOptions(progress="none", writer=LOSSLESS, colour_on_device="on"))
    assert res.manifest["colour_conversion"]["decode"] == "swscale"  # rotated sources turn on the CPU


@pytest.mark.gpu
def test_cuda_conversion_matches_cpu(make):
    frame = first_frame(make("yuv-mandel.mkv", frames=1, size=(320, 240), source="mandelbrot", codec="ffv1"))
    fmt = PlanarFormat("yuv420p", 320, 240)
    row = packed(frame, fmt)
    col = Colour(matrix="bt709")
    cpu = planes_to_rgb(row, fmt, col, torch.uint8)
    gpu = planes_to_rgb(row.cuda(), fmt, col, torch.uint8).cpu()
    assert (cpu.int() - gpu.int()).abs().max() <= 1
    back = rgb_to_planes(gpu.cuda(), fmt, col).cpu()
    assert (back.int() - rgb_to_planes(cpu, fmt, col).int()).abs().max() <= 1


@pytest.mark.gpu
def test_cuda_pipeline_uses_device_conversion_and_pinned_buffers(make, tmp_path):
    src = make("yuv-cuda.mkv", frames=24, size=(640, 360), source="mandelbrot", codec="ffv1")
    res = run(src, tmp_path / "c.mkv", [Resize(1280, 720)], RunOptions(device="cuda", progress="none", writer=LOSSLESS))
    assert "cuda" in res.manifest["colour_conversion"]["decode"]
    ref = run(src, tmp_path / "s.mkv", [Resize(1280, 720)], RunOptions(device="cpu", progress="none", writer=LOSSLESS))
    t1, a = decode_all(tmp_path / "c.mkv")
    t2, b = decode_all(tmp_path / "s.mkv")
    assert t1 == t2 and res.frames_out == ref.frames_out == 24
    assert psnr(a, b) > 30


def test_planar_reader_closes_while_waiting_for_a_buffer(make):
    """Batches taken and never released (a consumer that failed) leave the decoder waiting on its buffer pool:
    close() must still end it."""
    from vidpipe.media.probe import probe
    from vidpipe.media.reader import ReaderOptions, VideoReader

    src = make("yuv-close.mkv", frames=30, size=(64, 48), codec="ffv1")
    reader = VideoReader(probe(src), ReaderOptions(planar=True, batch_size=1, queue_size=1))
    held = []
    for batch in reader:
        held.append(batch)  # never `done()`: the pool (queue + 3 = 4 buffers) runs dry
        if len(held) == 3:
            break
    time.sleep(0.3)  # the decoder is now waiting for a fifth buffer
    closer = threading.Thread(target=reader.close)
    closer.start()
    closer.join(scaled(10))
    assert not closer.is_alive()
    assert all(isinstance(b, PlanarBatch) for b in held)
