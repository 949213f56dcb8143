"""The pages in a real browser (headless Chromium over the DevTools protocol): every frame loads, the slider
moves, the zoom buttons scale the crops, the plots have their points, and there is no console error and no
network request; the checks themselves are shown to catch a page that fetches something."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import chromium
import pytest
import torch

from vidpipe.assets import opencv_clip
from vidpipe.report.compare import CompareOptions, compare, write_html
from vidpipe.report.page import document
from vidpipe.report.run import RunRecorder, write_run_report
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.resize import Resize

#: the docs' screenshot is this viewport (small enough to commit)
SHOT = (1000, 1400)


def check_page(page: chromium.Page, *, picks: int, inputs: int, frames: int) -> None:
    """What every compare page must do in the browser."""
    # frames present: every <img> decoded (its data URI or the clone the script gave it)
    imgs = page.eval("[...document.images].map(i => [i.complete && i.naturalWidth > 0, i.getAttribute('src') ? 1 : 0])")
    assert imgs and all(ok for ok, _ in imgs), "an image did not load"
    assert page.eval("document.querySelectorAll('.pick').length") == picks
    assert page.eval("document.querySelectorAll('.pick .row figure img').length") == picks * (2 * inputs - 1)
    # the slider moves: an input event clips the reference at the new position
    moved = page.eval(
        """(() => { const s = document.querySelector('.slider'), r = s.querySelector('input');
        const before = s.querySelector('img.over').style.clipPath;
        r.value = 25; r.dispatchEvent(new Event('input'));
        return [before, s.querySelector('img.over').style.clipPath, s.dataset.position,
                s.querySelector('.divider').style.left]; })()"""
    )
    assert moved == ["inset(0px 50% 0px 0px)", "inset(0px 75% 0px 0px)", "25", "25%"]
    # zoom: 400 % makes the crops' images four times the reference's width
    zoom = page.eval(
        """(() => { const p = document.querySelector('.pick'), b = p.querySelector('.zoom button[data-zoom="4"]');
        b.click(); const img = p.querySelector('.crop img');
        return [Number(p.dataset.width), parseFloat(img.style.width), b.getAttribute('aria-pressed')]; })()"""
    )
    assert zoom[1] == 4 * zoom[0] and zoom[2] == "true"
    # plots have points: one per reference frame for each input's PSNR (all matched here)
    points = page.eval(
        "[...document.querySelectorAll('#plots svg.plot')].map(s => [...s.querySelectorAll('polyline')]"
        ".reduce((n, p) => n + p.points.numberOfItems, 0))"
    )
    assert len(points) == 3 and points[0] == frames * (inputs - 1) and all(n > 0 for n in points)
    assert page.console_errors == [], page.console_errors
    assert page.network == [], page.network


@pytest.fixture(scope="module")
def small(make) -> tuple[Path, Path]:
    a = make("browser-a.mkv", size=(96, 64), frames=10, rate=Fraction(10))
    b = make("browser-b.mp4", size=(96, 64), frames=10, rate=Fraction(10), options={"crf": "40"})
    return a, b


def test_compare_page_in_chromium(browser, small, tmp_path):
    c = compare(list(small), CompareOptions(cuts="off"))
    page = browser.open(write_html(c, tmp_path / "r.html"))
    check_page(page, picks=len(c.picks), inputs=2, frames=10)
    shot = page.screenshot(tmp_path / "shot.png", 600, 800)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a phone: one column, nothing wider than the screen (wide tables scroll inside themselves)
    page.viewport(390, 844, mobile=True)
    width = page.eval("[document.documentElement.scrollWidth, getComputedStyle(document.querySelector('.plots'))"
                      ".gridTemplateColumns.split(' ').length]")  # fmt: skip
    assert width == [390, 1]


def test_run_report_in_chromium(browser, small, tmp_path):
    stages = [Resize(192, 128)]
    with RunRecorder(stages, torch.device("cpu")) as rec:
        result = run(small[0], tmp_path / "o.mkv", stages, RunOptions(device="cpu", progress="none"))
    page = browser.open(write_run_report(small[0], result, rec, device="cpu"))
    check_page(page, picks=page.eval("document.querySelectorAll('.pick').length"), inputs=2, frames=10)
    text = page.eval("document.getElementById('run').innerText")
    assert "resize" in text and "no out-of-memory back-off" in text
    # over time: output fps (one window or more: a dot or a line) and memory sampled at least at start and end
    drawn = page.eval(
        "[...document.querySelectorAll('#run svg.plot')].map(s => [s.getAttribute('aria-label'), "
        "s.querySelectorAll('polyline, circle').length, [...s.querySelectorAll('polyline')]"
        ".reduce((n, p) => n + p.points.numberOfItems, 0)])"
    )
    assert [d[0] for d in drawn] == ["Output frames/s", "Memory (MB), 2 samples/s"]
    assert drawn[0][1] >= 1 and drawn[1][2] >= 2


def test_the_checks_catch_a_page_that_fetches(browser, tmp_path):
    """Our CSP blocks a fetch (the browser logs an error), and a page without it shows the request itself."""
    blocked = tmp_path / "blocked.html"
    blocked.write_text(document("t", ['<img src="http://192.0.2.1/x.png" alt="">']))
    page = browser.open(blocked)
    assert any("Content Security Policy" in e for e in page.console_errors), page.console_errors
    bare = tmp_path / "bare.html"
    bare.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png" alt="">')
    page = browser.open(bare)
    assert page.network == ["http://127.0.0.1:9/x.png"]


@pytest.mark.slow
def test_acceptance_vtest_compare_cli_in_chromium(cli, browser, tmp_path):
    """Issue 21's acceptance: `vidpipe compare in.mp4 out.mkv --html r.html` on a real clip opens with no console
    error and no network request, both frames, the slider and the plots shown."""
    vtest = opencv_clip("vtest.avi")
    src, out, html = tmp_path / "in.mp4", tmp_path / "out.mkv", tmp_path / "r.html"
    for args in (
        [str(vtest), "-o", str(src), "--frames", "12"],
        [str(src), "-o", str(out), "--resize", "1152x864"],
    ):
        res = cli("run", *args, "--progress", "none", "--device", "cpu")
        assert res.returncode == 0, res.stderr
    res = cli("compare", str(src), str(out), "--html", str(html), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert re.search(r"\(12/12 frames\)", res.stdout)
    assert html.stat().st_size < 10 * 1024 * 1024
    page = browser.open(html)
    check_page(page, picks=page.eval("document.querySelectorAll('.pick').length"), inputs=2, frames=12)
    page.screenshot(tmp_path / "vtest.png", *SHOT)
