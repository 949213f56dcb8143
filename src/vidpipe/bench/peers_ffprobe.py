"""Run-time stand-in for `ffprobe`, copied into a temp dir as `bin/ffprobe` (with a shebang for this Python):
imageio-ffmpeg ships an `ffmpeg` binary but no `ffprobe`, and Real-ESRGAN's video script reads the input's
size, rate and frame count with `ffmpeg.probe()` (ffmpeg-python runs `ffprobe -show_format -show_streams -of json
FILE`). Prints the subset of ffprobe's JSON that the script reads, from PyAV.

One difference: real ffprobe gives `nb_frames` only where the container stores it (MP4, not MKV); this counts
packets where it is missing, so the script also works on MKV inputs.
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from typing import Any

import av


def probe(path: str) -> dict[str, Any]:
    streams: list[dict[str, Any]] = []
    with av.open(path) as c:
        for s in c.streams:
            d: dict[str, Any] = {"index": s.index, "codec_type": s.type, "codec_name": s.codec_context.name}
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate or Fraction(0)
                d.update(
                    width=s.codec_context.width,
                    height=s.codec_context.height,
                    avg_frame_rate=f"{rate.numerator}/{rate.denominator}",
                    r_frame_rate=f"{rate.numerator}/{rate.denominator}",
                    nb_frames=str(s.frames or _count_packets(path, s.index)),
                )
            streams.append(d)
        fmt = {"filename": path, "format_name": c.format.name, "nb_streams": len(streams)}
    return {"streams": streams, "format": fmt}


def _count_packets(path: str, index: int) -> int:
    with av.open(path) as c:
        return sum(1 for p in c.demux(c.streams[index]) if p.size)


def main(argv: list[str]) -> int:
    files = [a for a in argv if not a.startswith("-") and a not in ("json", "default")]
    if not files:
        sys.stderr.write("ffprobe stand-in: no input file given\n")
        return 1
    try:
        json.dump(probe(files[-1]), sys.stdout)
    except av.error.FFmpegError as e:
        sys.stderr.write(f"{files[-1]}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
