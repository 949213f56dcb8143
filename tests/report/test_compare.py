"""`vidpipe compare` without a browser: metrics are vidpipe.metrics' on the frames matched by time (equal to
`vidpipe eval interpolate`'s on the same frames), sizes and rates are matched, frames are picked as documented,
the page is self-contained and small, and the CLI writes what it is asked for."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from conftest import write_rgb
from vidpipe.errors import UsageError
from vidpipe.frames import from_float
from vidpipe.metrics import PSNR_CAP_DB, psnr_per_frame, ssim_per_frame
from vidpipe.report import images
from vidpipe.report.compare import MIN_SIDE, CompareOptions, bucketed, compare, grid, html, write_png
from vidpipe.report.measure import Curves, choose
from vidpipe.report.page import CSP
from vidpipe.report.plots import Plot, Series, svg
from vidpipe.testing import decode_all

RATE = Fraction(10)
SIZE = (96, 64)


@pytest.fixture(scope="module")
def source(make) -> Path:
    return make("report-src.mkv", size=SIZE, frames=9, rate=RATE, source="testsrc2")


@pytest.fixture(scope="module")
def blended(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source with every odd frame replaced by the rounded mean of its neighbours: what `vidpipe eval
    interpolate`'s blend makes, written losslessly."""
    _, x = decode_all(source, keep_alpha=False)
    out = x.clone()
    for k in range(1, len(x) - 1, 2):
        out[k] = from_float((x[k - 1].float() / 255 + x[k + 1].float() / 255) / 2, torch.uint8)
    return write_rgb(tmp_path_factory.mktemp("blend") / "blend.mkv", out, RATE)


def test_metrics_are_vidpipe_metrics_on_the_frames(source, blended):
    c = compare([source, blended], CompareOptions(cuts="off"))
    _, a = decode_all(source, keep_alpha=False)
    _, b = decode_all(blended, keep_alpha=False)
    fa, fb = a.float() / 255, b.float() / 255
    assert c.curves.frames == len(a) == 9 and c.curves.matched[1] == 9
    expect_psnr = psnr_per_frame(fb, fa).tolist()
    expect_ssim = ssim_per_frame(fb, fa).tolist()
    assert c.curves.psnr[1] == pytest.approx(expect_psnr, abs=1e-4)
    assert c.curves.ssim[1] == pytest.approx(expect_ssim, abs=1e-6)
    # even frames are the source's own: exact (the cap); odd ones blends, far below it
    assert all(v == PSNR_CAP_DB for v in c.curves.psnr[1][0::2])
    assert all(v < 40 for v in c.curves.psnr[1][1:-1:2])


def test_metrics_equal_vidpipe_eval_interpolate_blend(source, blended):
    """`vidpipe eval interpolate` scores the blend of (f2k, f2k+2) against f2k+1; the compare page of the source
    vs a file holding those blends gives the same means on those frames."""
    from vidpipe.eval.interpolate import evaluate
    from vidpipe.models.zoo_rife import ensure_offline_weights

    ensure_offline_weights("rife-hdv3")
    ev = evaluate(source, "rife-hdv3", "cpu", max_frames=9)
    c = compare([source, blended], CompareOptions(cuts="off"))
    odd_psnr = [c.curves.psnr[1][k] for k in range(1, 8, 2)]
    odd_ssim = [c.curves.ssim[1][k] for k in range(1, 8, 2)]
    assert ev.scores.frames == len(odd_psnr) == 4
    assert sum(odd_psnr) / 4 == pytest.approx(ev.scores.blend_psnr, abs=1e-4)
    assert sum(odd_ssim) / 4 == pytest.approx(ev.scores.blend_ssim, abs=1e-6)


@pytest.fixture(scope="module")
def doubled(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source at twice its rate: frame 2k is the source's frame k, frame 2k+1 its negative (an in-between
    frame that is never the source's)."""
    _, x = decode_all(source, keep_alpha=False)
    both = torch.stack([x, 255 - x], dim=1).flatten(0, 1)
    return write_rgb(tmp_path_factory.mktemp("rate") / "double.mkv", both, 2 * RATE)


def test_rates_are_matched_by_timestamp(source, doubled):
    """An input at twice the rate (an interpolated output) is matched frame 2k to the source's frame k; its
    frames in between are never compared."""
    c = compare([source, doubled], CompareOptions(cuts="off", even=9, worst=0))
    assert c.curves.matched[1] == 9
    assert [p.frames[1].index for p in c.picks] == [2 * k for k in range(9)]
    assert all(v == PSNR_CAP_DB for v in c.curves.psnr[1])  # the negatives would be far below


def test_a_lower_rate_input_leaves_gaps(source, doubled):
    c = compare([doubled, source], CompareOptions(cuts="off", worst=0))
    assert c.curves.matched[1] == 9 and c.curves.frames == 18
    assert [v is None for v in c.curves.psnr[1]] == [False, True] * 9
    assert all(v == PSNR_CAP_DB for v in c.curves.psnr[1][0::2])


def test_sizes_measured_at_the_reference_size(make, source, tmp_path):
    """An upscaled input is measured after area averaging back to the reference's size, and the page says so;
    crops keep its own pixels (its image is embedded at its own size)."""
    _, x = decode_all(source, keep_alpha=False)
    up = torch.nn.functional.interpolate(x.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    big = write_rgb(tmp_path / "up.mkv", up, RATE)
    c = compare([source, big], CompareOptions(cuts="off", even=2, worst=0))
    # nearest ×2 then area ×½ gives the source back exactly
    assert all(v == PSNR_CAP_DB for v in c.curves.psnr[1])
    page = html(c)
    assert "measured at the reference's size 96×64 after resizing (area averaging down" in page
    assert c.picks[0].frames[1].data.shape[-2:] == (128, 192)


def test_choose_picks_even_cut_and_worst_frames():
    c = Curves(times=[i / 10 for i in range(20)], psnr={1: [40.0] * 20}, ssim={1: [1.0] * 20})
    c.psnr[1][7], c.psnr[1][13], c.psnr[1][3] = 20.0, 25.0, None
    picks = choose(c, ["A", "B"], [(11, "hard", 0.9), (5, "soft", 0.2)], even=3, at_cuts=1, worst=2)
    got = {p.index: p.reasons for p in picks}
    assert sorted(got) == [0, 7, 10, 11, 13, 19]
    assert got[11] == ("hard cut",) and 5 not in got  # only the strongest cut
    assert got[7] == ("worst PSNR of B",) and got[13] == ("worst PSNR of B",)


def test_page_is_self_contained(source, blended):
    c = compare([source, blended], CompareOptions(cuts="off"))
    page = html(c)
    assert CSP in page and "default-src 'none'" in CSP
    # nothing is fetched: every src is a data URI or filled in by the page's own script
    srcs = re.findall(r'\ssrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"(?:href|src)=\"(?:https?:)?//", page)
    assert page.count('class="pick"') == len(c.picks) and page.count('type="range"') == len(c.picks)


def test_alpha_inputs_get_the_checkerboard(make):
    a = make("report-rgba.mov", size=SIZE, frames=3, rate=RATE, codec="qtrle", pix_fmt="argb", alpha=True)
    c = compare([a, a], CompareOptions(cuts="off", even=1, worst=0))
    page = html(c)
    assert c.inputs[0].alpha and 'class="checker"' in page and "data:image/webp" in page


def test_images_and_heatmap():
    rgb = torch.randint(0, 255, (3, 33, 47), dtype=torch.uint8)
    mime, data = images.encode(rgb)
    assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"
    mime, data = images.encode(torch.cat([rgb, torch.full((1, 33, 47), 7, dtype=torch.uint8)]))
    assert mime == "image/webp" and data[:4] == b"RIFF" and b"ALPH" in data
    diff = torch.zeros(40, 60)
    diff[30:38, 50:58] = images.HEAT_FULL_LEVELS
    heat = images.heatmap(diff)
    assert heat[:, 0, 0].tolist() == [0, 0, 4] and heat[:, 33, 53].tolist() == [252, 253, 191]
    x, y = images.hottest(diff)
    assert 0.7 < x <= 1 and 0.6 < y <= 1
    big = torch.zeros(3, 3000, 4000, dtype=torch.uint8)
    assert images.fit_side(big).shape[-2:] == (1536, 2048)


def test_plot_points_and_gaps():
    page = svg(Plot("t", [0, 1, 2, 3, 4], [Series("s", [1.0, 2.0, None, 3.0, 4.0])], markers=[(2.0, "cut")]))
    assert re.findall(r'data-points="(\d+)"', page) == ["2", "2"] and page.count('class="marker"') == 1


def test_png_grid(source, blended, tmp_path):
    c = compare([source, blended], CompareOptions(cuts="off", even=2, worst=1))
    path = write_png(c, tmp_path / "g.png")
    with av.open(str(path)) as f:
        frame = next(f.decode(video=0))
    g = grid(c)
    assert (frame.width, frame.height) == (g.shape[-1], g.shape[-2])
    assert g.shape[-2] == len(c.picks) * (240 + 4)


def test_cli(cli, source, blended, tmp_path):
    out = cli("compare", str(source), str(blended), "--cuts", "off")
    assert out.returncode == UsageError.exit_code and "--html" in out.stderr
    page, png = tmp_path / "r.html", tmp_path / "g.png"
    out = cli("compare", str(source), str(blended), "--html", str(page), "--png", str(png), "--cuts", "off")
    assert out.returncode == 0, out.stderr
    assert page.stat().st_size > 10_000 and png.stat().st_size > 1000
    assert re.search(r"B: blend.mkv vs A: mean PSNR \d+\.\d+ dB, SSIM 0\.\d+ \(9/9 frames\)", out.stdout)


def test_a_page_over_its_image_budget_embeds_smaller_images(source, tmp_path):
    """Over the byte budget every image is embedded smaller (never fewer frames), and the page says so."""
    noise = torch.randint(0, 256, (9, 3, 512, 768), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    big = write_rgb(tmp_path / "big.mkv", noise, RATE)  # noise: JPEG bytes grow with the area
    full = compare([source, big], CompareOptions(cuts="off", even=2, worst=0))
    page_full = html(full)
    tight = dataclasses.replace(full, image_bytes=len(page_full) // 3)
    page_tight = html(tight)
    assert 'id="smaller"' not in page_full and len(full.picks) == len(tight.picks) == 2
    side = int(re.search(r"embedded at most (\d+) px long", page_tight).group(1))
    assert MIN_SIDE <= side < 768
    widths = []
    for uri in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page_tight):
        with av.open(io.BytesIO(base64.b64decode(uri))) as f:
            widths.append(next(f.decode(video=0)).width)
    assert max(widths) <= side and len(page_tight) < len(page_full)


def test_long_curves_are_bucketed_by_their_extremes():
    values = [5.0, 1.0, None, None, 3.0, 4.0, 9.0]
    assert bucketed(values, 10, min) == values
    assert bucketed(values, 3, min) == [1.0, None, 3.0]  # buckets [5, 1], [None, None], [3, 4, 9]
    assert bucketed([None, None, 2.0, 7.0], 2, max) == [None, 7.0]
