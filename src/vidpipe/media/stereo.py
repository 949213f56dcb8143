"""Stereo (VR) frame packing: how a video packs two views into each frame, as its metadata or its name states it.

Names (`Packing`): `mono` (one view), `sbs` (left/right halves), `tb` (top/bottom halves), and the packings whose
views are not two halves of a frame: `frame_sequence` (alternate frames), `checkerboard`, `lines`, `columns`.

- **Metadata**: FFmpeg turns a container's stereo description into `STEREO3D` side data (an `AVStereo3D`, whose
  first field is the packing type, libavutil/stereo3d.h) that its decoders attach to every frame: MP4's `st3d`
  box (Google's Spherical Video V2, what VR cameras and YouTube write), Matroska's `StereoMode`, H.264/HEVC
  frame-packing SEI. PyAV 18 has no stream-level side data, so `packing_of_frame` reads a decoded frame's (the
  probe decodes one anyway). Spherical side data (`sv3d`) tells the projection, not the packing: a mono 360°
  video has it too, so it says nothing here. FFmpeg reads an MP4 that also has Apple's `vexu` box (MV-HEVC:
  the views are separate layers, not halves) as `UNSPEC`, which counts as unstated.
- **Name**: the tokens VR players read, each a separate word of the file's stem (split at `_`, `-`, `.`, spaces;
  any case): `LR`, `SBS`, `3DH` → sbs; `TB`, `OU`, `3DV` → tb. `clip_LR.mp4` and `trip.360.TB.mkv` are stereo,
  `COLOR.mp4` is not. A name with tokens of both kinds states nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Final, Literal

import av

Packing = Literal["mono", "sbs", "tb", "frame_sequence", "checkerboard", "lines", "columns"]

#: FFmpeg's `enum AVStereo3DType` (libavutil/stereo3d.h) by value. SIDEBYSIDE_QUINCUNX (5) keeps each view in
#: its half (checkerboard-subsampled), so the halves are still the eyes; UNSPEC (8) is not listed: unstated
_AV_STEREO3D: Final[dict[int, Packing]] = {
    0: "mono",
    1: "sbs",
    2: "tb",
    3: "frame_sequence",
    4: "checkerboard",
    5: "sbs",
    6: "lines",
    7: "columns",
}

#: file-name tokens (upper case) → packing
NAME_TOKENS: Final[dict[str, Packing]] = {
    "LR": "sbs",
    "SBS": "sbs",
    "3DH": "sbs",
    "TB": "tb",
    "OU": "tb",
    "3DV": "tb",
}
_WORDS = re.compile(r"[\s_.\-]+")


def packing_of_frame(frame: av.VideoFrame) -> Packing | None:
    """The packing a decoded frame's `STEREO3D` side data states; None without one (or UNSPEC)."""
    container = frame.side_data
    for item in container:
        # PyAV ≤ 18.1.0 iterates the side data themselves; 18.1.1 made the container a mapping whose
        # iteration yields the types (its values() then fails on 18.1.0), so both are read here
        sd = item if hasattr(item, "type") else container[item]
        if sd.type.name == "STEREO3D":
            data = bytes(sd)
            if len(data) >= 4:  # `type` is the struct's first member, a C int in the machine's byte order
                return _AV_STEREO3D.get(int.from_bytes(data[:4], sys.byteorder, signed=True))
    return None


def packing_of_name(path: str | Path) -> Packing | None:
    """The packing a file name's tokens state (module docstring); None when none does, or both kinds do."""
    found = {NAME_TOKENS[w.upper()] for w in _WORDS.split(Path(path).stem) if w.upper() in NAME_TOKENS}
    return found.pop() if len(found) == 1 else None


def declared_packing(metadata: str | None, path: str | Path, rotation: int = 0) -> Packing | None:
    """What a source states about the frames as shown: its metadata first (the file's own description of the
    stored frame: a quarter turn of the display matrix makes left/right halves top/bottom ones), else its name
    (read as the picture is shown); None: neither."""
    if metadata is None:
        return packing_of_name(path)
    turned: dict[str, Packing] = {"sbs": "tb", "tb": "sbs", "lines": "columns", "columns": "lines"}
    return turned.get(metadata, metadata) if rotation % 180 else metadata  # type: ignore[return-value]
