"""SVT-AV1, run as root (the containers users rent, and CI), switches the thread that opens it to SCHED_FIFO 99;
every process forked afterwards inherits that, and a busy one then starves the machine (an xdist worker made
real-time this way held both CI cores through its children). vidpipe puts its threads back on the normal scheduler.
Each check runs in a child process: a test process made real-time would harm the rest of the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest

from calibration import scaled
from vidpipe.media.synth import ClipSpec, make_clip

POLICY = "import os; print('policy', os.sched_getscheduler(0), flush=True)"


def _child(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(120), check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="SVT-AV1 asks for real-time scheduling only as root")
def test_svt_av1_switches_the_opening_thread_to_fifo_as_root_unless_dropped() -> None:
    """The premise (so the checks below can fail) and the remedy, on a bare PyAV encoder open."""
    code = (
        "import os, av\nfrom fractions import Fraction\n"
        "from vidpipe.media.encoders import drop_realtime_scheduling\n"
        "cc = av.codec.CodecContext.create('libsvtav1', 'w')\n"
        "cc.width, cc.height, cc.pix_fmt, cc.time_base = 64, 64, 'yuv420p', Fraction(1, 25)\n"
        "cc.open()\nprint('opened', os.sched_getscheduler(0) == os.SCHED_FIFO)\n"
        "print('moved', drop_realtime_scheduling() > 0)\n" + POLICY
    )
    out = _child(code)
    assert "opened True" in out and "moved True" in out and f"policy {os.SCHED_OTHER}" in out


def test_the_encoder_probe_leaves_the_process_on_the_normal_scheduler() -> None:
    code = "from vidpipe.media.encoders import encoder_opens\nprint('opens', encoder_opens('libsvtav1'))\n" + POLICY
    out = _child(code)
    assert "opens True" in out and f"policy {os.SCHED_OTHER}" in out


def test_an_av1_run_leaves_the_process_on_the_normal_scheduler(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mkv", ClipSpec(size=(64, 48), rate=F(25), frames=4))
    code = (
        "import sys\nfrom vidpipe.runtime.pipeline import run, RunOptions\n"
        "from vidpipe.media.writer import WriterOptions\nfrom vidpipe.media.encoders import EncoderOptions\n"
        f"run({str(clip)!r}, {str(tmp_path / 'o.mkv')!r}, [], RunOptions(device='cpu', progress='none', "
        "writer=WriterOptions(encoder=EncoderOptions(encoder='av1'))))\n" + POLICY
    )
    out = _child(code)
    assert f"policy {os.SCHED_OTHER}" in out
