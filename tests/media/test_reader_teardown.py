"""A reader closed mid-stream (the consumer gone: `--frames N` reached, a stage failed, Ctrl-C) never deadlocks.

PyAV's log callback takes the GIL for every `av_log` call of FFmpeg's threads, and freeing a decoder holds the GIL
while it joins its frame threads: a worker that logs then waits on the GIL forever, and so does the whole process
(the fast suite's 120 s hang at c86f052). The reader drains its decoder, as the end of a file would, before the
container frees it. Decoder debug output makes the workers log on every frame, so a missing drain hangs within a
few runs here (it did at the second of twenty before the fix); the runs go in a child process, since a process
stuck on its GIL cannot even be interrupted.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

from calibration import scaled
from vidpipe.media.synth import ClipSpec, make_clip

CHILD = r"""
import sys
from pathlib import Path
import av
from vidpipe.media.probe import probe
from vidpipe.media.reader import ReaderOptions, VideoReader
from vidpipe.runtime.pipeline import FFmpegLog

open_decoder = VideoReader._open_decoder

def chatty(self, vs):  # every picture's slice info is logged from the frame thread decoding it
    decode = open_decoder(self, vs)
    vs.codec_context.options = {"debug": "pict+mb_type+qp"}
    return decode

VideoReader._open_decoder = chatty
info = probe(Path(sys.argv[1]))
for run in range(int(sys.argv[2])):
    with FFmpegLog():  # the run's capture: FFmpeg's log routed into Python, as during `vidpipe run`
        reader = VideoReader(info, ReaderOptions(batch_size=2, threads=4))
        for n, batch in enumerate(reader):
            if n == 2:
                break  # the consumer stops mid-stream; the decoder has frames in flight
        reader.close()
    print(run, flush=True)
"""


def test_a_reader_closed_mid_stream_with_the_log_captured_does_not_deadlock(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", ClipSpec(size=(640, 360), rate=F(25), frames=120))
    runs = 30
    try:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(clip), str(runs)],
            capture_output=True,
            text=True,
            timeout=scaled(60),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        done = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"deadlocked after {len(done.split())} of {runs} mid-stream closes") from None
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [str(k) for k in range(runs)]
