"""Run-time wrapper for the `ffmpeg` binary, copied into a temp dir as `bin/ffmpeg` (with a shebang for this
Python) ahead of the real one on the peer's PATH.

Real-ESRGAN's video script encodes with `-vcodec libx264` and no preset or quality, i.e. x264's `medium` at
crf 23; the bench compares everyone at one setting, so this adds `VIDPIPE_PEER_X264_ARGS` (e.g. `-preset veryfast
-crf 18`) right after `libx264` and then replaces itself with the real binary (`VIDPIPE_PEER_FFMPEG`). Every
other argument, and every other invocation (decoding), passes through unchanged.
"""

from __future__ import annotations

import os
import sys

_CODEC_FLAGS = ("-vcodec", "-c:v", "-codec:v")


def rewrite(args: list[str], extra: list[str]) -> list[str]:
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "libx264" and i > 0 and args[i - 1] in _CODEC_FLAGS:
            out += extra
    return out


def main() -> None:
    real = os.environ["VIDPIPE_PEER_FFMPEG"]
    args = rewrite(sys.argv[1:], os.environ.get("VIDPIPE_PEER_X264_ARGS", "").split())
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main()
