from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from calibration import scaled


@pytest.mark.timeout(180)
# A second SIGTERM case lands later in the run: a hang here was a deadlock between FFmpeg's decoder threads
# logging through the Python callback and the decoder being freed; different timings catch it more often.
@pytest.mark.parametrize(("sig", "delay"), [(signal.SIGTERM, 0.0), (signal.SIGINT, 0.0), (signal.SIGTERM, 0.4)])
def test_signal_mid_run_leaves_no_output_and_exits_non_zero(make, tmp_path, sig, delay):
    src = make("long.mp4", frames=600, size=(480, 270), source="mandelbrot")
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidpipe",
            "run",
            str(src),
            "-o",
            str(out),
            "--encoder",
            "hevc",
            "--speed",
            "slow",
            "--progress",
            "json",
            "--batch-size",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + scaled(120)  # quiet-machine seconds, stretched for the load
        started = False
        assert proc.stdout is not None and proc.stderr is not None
        # logs go to stderr, JSON progress alone to stdout: drain stderr throughout, or the child blocks on a
        # full pipe
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        while time.monotonic() < deadline:  # wait until frames are really flowing
            line = proc.stdout.readline()
            if not line:
                break
            if json.loads(line).get("frames", 0) > 0:
                started = True
                break
        assert started, "the run never reported progress"
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        while time.monotonic() < deadline and not list(tmp_path.glob(".out.vidpipe-partial*")):
            time.sleep(0.05)  # the muxer creates the file with its first packet (after encoder look-ahead)
        assert list(tmp_path.glob(".out.vidpipe-partial*")), "a partial file exists while running"
        time.sleep(delay)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(sig)
        rc = proc.wait(timeout=scaled(60))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + sig
    assert not out.exists()
    assert not list(tmp_path.glob(".out.vidpipe-partial*"))
