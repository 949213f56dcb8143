"""Issue 18 item 3, mezzanine pre-processing: deinterlacing (field order detected or given, one frame per frame or
per field), black borders found over a clip, resampling kernels, the BT.601 → BT.709 matrix conversion, and the
mezzanine encoders read back."""

from __future__ import annotations

from fractions import Fraction as F
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mezz_clips import BAR_STEP, bar_centre, bars_clip, interlaced_clip, letterboxed_clip
from vidpipe.errors import UsageError
from vidpipe.frames import Colour, FrameBatch
from vidpipe.media.borders import Box, detect, frame_box
from vidpipe.media.colour import target_colour
from vidpipe.media.deinterlace import Deinterlace, output_spec
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.media.synth import ClipSpec, make_clip
from vidpipe.media.writer import VideoWriter, WriterOptions
from vidpipe.runtime.pipeline import source_spec
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.crop import Crop, parse_crop
from vidpipe.stages.registry import RESIZE_METHODS
from vidpipe.stages.resample import KERNELS, resample, weights
from vidpipe.stages.resize import METHODS


def _read(path: Path, deinterlace: Deinterlace) -> tuple[list[np.ndarray], list[F], VideoReader]:
    """Every frame (RGB) and its time, through the reader."""
    reader = VideoReader(probe(path), ReaderOptions(deinterlace=deinterlace, batch_size=4))
    frames: list[np.ndarray] = []
    times: list[F] = []
    with reader:
        for b in reader:
            assert isinstance(b, FrameBatch)
            frames += [f.permute(1, 2, 0).numpy() for f in b.data]
            times += b.times()
    return frames, times, reader


def _steps(frames: list[np.ndarray]) -> np.ndarray:
    return np.diff([bar_centre(f) for f in frames])


def _in_time_order(frames: list[np.ndarray]) -> bool:
    """The bar moves forwards every frame, BAR_STEP px a field (coding noise moves a centre by < 2 px)."""
    steps = _steps(frames)
    return bool(np.all(steps > BAR_STEP / 2) and abs(np.median(steps) - BAR_STEP) < 0.25)


# -- deinterlacing --


@pytest.mark.parametrize("top_first", [True, False], ids=["tff", "bff"])
def test_field_order_from_the_codec_flags_gives_fields_in_time_order(tmp_path, top_first) -> None:
    """One frame per field: the bar moves BAR_STEP px every field when the fields are taken in the right order;
    the wrong order (given) makes it step back and forth. x264's tff=1 writes no per-picture order, so the decoded
    frames are not flagged top field first: the codec's order is the one to go by (bwdif's parity=auto plays
    the tff clip backwards)."""
    src = interlaced_clip(tmp_path / "il.mkv", top_first=top_first, frames=8)
    v = probe(src).video
    assert v.interlaced and v.field_order == ("tff" if top_first else "bff")
    frames, _times, reader = _read(src, Deinterlace(order="auto", mode="field"))
    assert len(frames) == 16 and f"parity={v.field_order}" in reader.stats.decoder
    assert _in_time_order(frames), _steps(frames)
    wrong = "bff" if top_first else "tff"
    frames, _, _ = _read(src, Deinterlace(order=wrong, mode="field"))  # type: ignore[arg-type]
    assert np.any(_steps(frames) < 0)


def test_one_frame_per_field_has_exact_times_and_twice_the_rate(tmp_path) -> None:
    src = interlaced_clip(tmp_path / "il.mkv", frames=6)
    info = probe(src)
    _frames, times, reader = _read(src, Deinterlace(order="auto", mode="field"))
    first = times[0]
    assert [t - first for t in times] == [F(n, 50) for n in range(12)]  # the last frame's second field too
    assert reader.time_base == info.video.time_base / 2
    spec = source_spec(info, deinterlace=Deinterlace(order="auto", mode="field"))
    assert (spec.rate, spec.nominal_rate, spec.time_base, spec.frames) == (
        50,
        50,
        info.video.time_base / 2,
        12,
    )
    assert source_spec(info, deinterlace=Deinterlace(order="auto")).rate is None  # one per frame: the source's


def test_one_frame_per_frame_keeps_pts_and_removes_combing(tmp_path) -> None:
    src = interlaced_clip(tmp_path / "il.mkv", frames=6)
    woven, t0, _ = _read(src, Deinterlace(order="off"))
    frames, t1, _ = _read(src, Deinterlace(order="auto"))
    assert t0 == t1 and len(frames) == 6

    # a woven frame's rows alternate between two bar positions; a deinterlaced one's agree
    def combing(f: np.ndarray) -> float:
        g = f[..., 1].astype(np.float64)
        return float(np.abs(g[:-1] - g[1:]).mean())

    assert np.mean([combing(f) for f in frames]) < np.mean([combing(f) for f in woven]) / 4


def test_unflagged_interlacing_found_by_idet_gets_its_order(tmp_path) -> None:
    """A woven top-field-first picture coded progressive (MPEG-4 part 2, no field flags): idet finds tff; bwdif's
    own `auto` would take unflagged frames for bottom field first and play the fields backwards."""
    src = interlaced_clip(tmp_path / "woven.avi", codec="mpeg4", flagged=False, frames=24)
    v = probe(src).video
    assert (v.interlaced, v.field_order) == (True, "tff")
    frames, _, reader = _read(src, Deinterlace(order="auto", mode="field"))
    assert "parity=tff" in reader.stats.decoder
    assert _in_time_order(frames), _steps(frames)


def test_given_order_deinterlaces_every_source_and_off_none(tmp_path) -> None:
    prog = make_clip(tmp_path / "p.mkv", ClipSpec(frames=4, size=(64, 48)))
    v = probe(prog).video
    assert not v.interlaced
    assert Deinterlace(order="tff").runs_on(v) and not Deinterlace(order="auto").runs_on(v)
    assert not Deinterlace(order="off", mode="field").runs_on(v)
    assert output_spec(source_spec(probe(prog)), v, Deinterlace(order="off", mode="field")).rate is None
    with pytest.raises(UsageError, match="valid: auto, tff, bff, off"):
        Deinterlace(order="yes")  # type: ignore[arg-type]


def test_small_hevc_is_not_called_interlaced(tmp_path) -> None:
    """idet called small progressive testsrc2 HEVC interlaced; HEVC's fields are flagged, so its flags decide."""
    src = make_clip(
        tmp_path / "h.mp4",
        ClipSpec(size=(160, 120), frames=30, codec="libx265", options={"x265-params": "log-level=none"}),
    )
    v = probe(src).video
    assert not v.interlaced and v.field_order == "unknown"


# -- black borders --


def test_borders_of_a_letterboxed_clip_with_a_dark_scene(tmp_path) -> None:
    """Bars of 19 rows and 11 columns (odd: the box widens to the 4:2:0 grid), noise in the bars, and a black
    stretch in the middle (a dark scene is not a border): one box for the clip."""
    src = letterboxed_clip(tmp_path / "lb.mkv", size=(160, 120), box=(138, 82, 11, 19), frames=60, dark=range(20, 40))
    box = detect(probe(src))
    assert box == Box(140, 84, 10, 18, (160, 120))


def test_frame_box_and_black_frames() -> None:
    luma = np.full((40, 60), 16.0)
    assert frame_box(luma) is None
    luma[5:30, 7:50] = 120
    assert frame_box(luma) == (7, 5, 50, 30)


def test_box_scales_outwards_to_the_grid() -> None:
    box = Box(140, 84, 10, 18, (160, 120))
    assert box.scaled(320, 240, (2, 2)) == Box(280, 168, 20, 36, (320, 240))
    # x 5..75 → 4..76, y 9..51 → 8..52: widened outwards, nothing of the picture cut
    assert box.scaled(80, 60, (2, 2)) == Box(72, 44, 4, 8, (80, 60))


def test_crop_auto_stage_maps_the_box_to_its_frames(tmp_path) -> None:
    src = letterboxed_clip(tmp_path / "lb.mkv", size=(160, 120), box=(120, 80, 20, 20), frames=30)
    spec = StreamSpec(width=320, height=240, time_base=F(1, 25), source=str(src))
    crop = Crop(parse_crop("auto"))
    out = crop.setup(torch.device("cpu"), spec)
    assert (out.width, out.height, crop.box) == (240, 160, (240, 160, 40, 40))
    data = torch.arange(320 * 240 * 3, dtype=torch.int32).reshape(1, 3, 240, 320) % 251
    batch = FrameBatch(data=data.to(torch.uint8), pts=[0], time_base=F(1, 25))
    assert torch.equal(crop.process(batch).data, batch.data[:, :, 40:200, 40:280])


def test_crop_given_must_fit_and_auto_needs_a_file() -> None:
    spec = StreamSpec(width=64, height=48, time_base=F(1, 25))
    with pytest.raises(UsageError, match="does not fit the 64x48"):
        Crop((64, 40, 8, 0)).setup(torch.device("cpu"), spec)
    with pytest.raises(UsageError, match="input file"):
        Crop(None).setup(torch.device("cpu"), spec)
    with pytest.raises(UsageError, match="W:H:X:Y"):
        parse_crop("64x48")


# -- resampling kernels --


def test_resize_methods_agree_with_the_registry() -> None:
    assert METHODS == RESIZE_METHODS


@pytest.mark.parametrize(("kernel", "pil"), [("catrom", Image.BICUBIC), ("lanczos", Image.LANCZOS)])
@pytest.mark.parametrize("size", [(120, 80), (20, 15), (53, 90)])
def test_kernels_match_pillow(kernel, pil, size) -> None:
    """Pillow's BICUBIC is Catmull–Rom (a = −½) and its LANCZOS 3 lobes, antialiased the same way: float
    pictures agree to float32 rounding, up and down."""
    a = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    ref = np.asarray(Image.fromarray(a, "F").resize(size, pil))
    ours = resample(torch.from_numpy(a)[None, None], size, kernel)[0, 0].numpy()
    assert np.abs(ref - ours).max() < 1e-5


#: how far each kernel's resampled ramp may bend off the line, away from the edges: the cubics and splines
#: reproduce linear pictures exactly; a windowed sinc's weights only nearly (Lanczos 3: ~0.02 of a level step)
RAMP_TOLERANCE = {"catrom": 1e-9, "mitchell": 1e-9, "lanczos": 0.03, "spline16": 1e-9, "spline36": 1e-9}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernels_keep_flat_and_linear_pictures(kernel) -> None:
    m = weights(kernel, 40, 96)
    assert np.allclose(m.sum(axis=1), 1)
    ramp = np.arange(40, dtype=np.float64)
    centres = (np.arange(96) + 0.5) * 40 / 96 - 0.5
    inner = slice(12, -12)  # away from the edges, where left-out taps bend a ramp
    assert np.abs((m @ ramp)[inner] - centres[inner]).max() <= RAMP_TOLERANCE[kernel]


@pytest.mark.parametrize("kernel", ["catrom", "lanczos", "spline16", "spline36"])
def test_interpolating_kernels_keep_the_samples_at_scale_one(kernel) -> None:
    assert np.allclose(weights(kernel, 17, 17), np.eye(17))


def test_mitchell_blurs_at_scale_one_by_its_definition() -> None:
    """k(0) = (6 − 2B)/6 = 8/9 and k(±1) = B/6 = 1/18 for B = ⅓."""
    assert np.allclose(weights("mitchell", 17, 17)[8, 7:10], [1 / 18, 8 / 9, 1 / 18])


# -- colour matrix --


def _planes(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        return np.stack([np.frombuffer(p, np.uint16 if "10" in f.format.name else np.uint8)
                         .reshape(f.height, -1)[:, : f.width] for p in f.planes[:3]]).astype(np.float64)  # fmt: skip


def _bt601_to_bt709(yuv8: np.ndarray) -> np.ndarray:
    """Limited-range 8-bit BT.601 Y'CbCr → limited-range 10-bit BT.709 Y'CbCr, in float64 (the definitions)."""

    def to_rgb(yuv: np.ndarray, kr: float, kb: float) -> np.ndarray:
        y, cb, cr = (yuv[0] - 16) / 219, (yuv[1] - 128) / 224, (yuv[2] - 128) / 224
        kg = 1 - kr - kb
        r = y + 2 * (1 - kr) * cr
        b = y + 2 * (1 - kb) * cb
        g = (y - kr * r - kb * b) / kg
        return np.stack([r, g, b])

    rgb = np.clip(to_rgb(yuv8, 0.299, 0.114), 0, 1)
    kr, kb = 0.2126, 0.0722
    y = kr * rgb[0] + (1 - kr - kb) * rgb[1] + kb * rgb[2]
    cb, cr = (rgb[2] - y) / (2 * (1 - kb)), (rgb[0] - y) / (2 * (1 - kr))
    return np.stack([64 + 876 * y, 512 + 896 * cb, 512 + 896 * cr])


def test_bt601_source_converted_to_bt709_values_and_tags(cli, tmp_path) -> None:
    src = bars_clip(tmp_path / "bars601.mkv")
    assert probe(src).video.colour.matrix == "smpte170m"
    outs = {}
    for target in ("bt709", "keep"):
        out = tmp_path / f"{target}.mkv"
        r = cli(
            "run", str(src), "-o", str(out), "--encoder", "ffv1-10", "--colour-matrix", target, "--progress", "none"
        )
        assert r.returncode == 0, r.stderr[-2000:]
        outs[target] = out
    c = probe(outs["bt709"]).video.colour
    assert (c.primaries, c.transfer, c.matrix, c.range, c.bit_depth) == ("bt709", "bt709", "bt709", "tv", 10)
    assert probe(outs["bt709"]).video.pix_fmt == "yuv444p10le"
    ref = _bt601_to_bt709(_planes(src))
    got = _planes(outs["bt709"])
    # through 8-bit RGB on the way: half a level of 8-bit RGB is up to ~2 levels of 10-bit Y'CbCr
    assert np.abs(got - ref).max() <= 3 and np.abs(got - ref).mean() < 1
    kept = _planes(outs["keep"])
    assert np.abs(kept - ref).max() > 40  # the bars' saturated colours: re-tagging alone would be this far off


def test_target_colour_tags() -> None:
    src = Colour(primaries="bt470bg", transfer="gamma28", matrix="bt470bg", bit_depth=8)
    assert target_colour(src, "keep") is src
    out = target_colour(src, "bt709")
    assert (out.primaries, out.transfer, out.matrix, out.range, out.bit_depth) == ("bt709", "bt709", "bt709", "tv", 8)
    with pytest.raises(UsageError, match="valid: keep, bt709"):
        target_colour(src, "rec709")


# -- mezzanine encoders --


def _write(path: Path, encoder: str, size: tuple[int, int], depth: int = 8) -> None:
    w, h = size
    spec = StreamSpec(width=w, height=h, time_base=F(1, 25), nominal_rate=F(25), bit_depth=depth)
    writer = VideoWriter(
        path, spec, Colour(bit_depth=depth), None, WriterOptions(encoder=EncoderOptions(encoder=encoder))
    )  # type: ignore[arg-type]
    dtype = torch.uint16 if depth > 8 else torch.uint8
    top = 65535 if depth > 8 else 255
    data = torch.randint(0, top, (3, 3, h, w), dtype=torch.int32).to(dtype)
    writer.write(FrameBatch(data=data, pts=[0, 1, 2], time_base=F(1, 25)))
    writer.close()


@pytest.mark.parametrize(
    ("encoder", "suffix", "codec", "profile", "pix_fmt"),
    [
        ("prores-hq", ".mov", "prores", "HQ", "yuv422p10le"),
        ("dnxhr-hqx", ".mov", "dnxhd", "DNXHR HQX", "yuv422p10le"),
        ("dnxhr-hqx", ".mxf", "dnxhd", "DNXHR HQX", "yuv422p10le"),
        ("ffv1-10", ".mkv", "ffv1", None, "yuv420p10le"),
    ],
)
def test_mezzanine_encoders_read_back(tmp_path, encoder, suffix, codec, profile, pix_fmt) -> None:
    out = tmp_path / f"m{suffix}"
    _write(out, encoder, (256, 128))
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt) == (codec, pix_fmt)
        if profile is not None:
            assert cc.profile == profile
        assert len(list(c.decode(video=0))) == 3


def test_ffv1_10_keeps_a_deeper_source_and_dnxhr_refuses_small_frames(tmp_path) -> None:
    from vidpipe.media.encoders import resolve

    deep = resolve(EncoderOptions(encoder="ffv1-10"), suffix=".mkv", source_depth=12, alpha=False,
                   source_pix_fmt="yuv422p12le")  # fmt: skip
    assert deep.pix_fmt == "yuv422p12le"
    with pytest.raises(UsageError, match="at least 256x120"):
        _write(tmp_path / "small.mov", "dnxhr-hqx", (128, 96))
