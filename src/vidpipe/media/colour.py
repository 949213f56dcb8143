"""FFmpeg's colour enums (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace) by name, both ways.

PyAV's `Colorspace` enum is swscale's matrix list, not AVColorSpace, so the stream tags are mapped here, with
FFmpeg's own names (what `ffprobe` prints). 2 = unspecified in all three.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # frames imports torch; this table module stays light
    from ..frames import Colour

PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRANSFER = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
MATRIX = {
    0: "gbr",
    1: "bt709",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    14: "ictcp",
}

UNKNOWN = "unknown"


def name_of(table: dict[int, str], value: int | None) -> str:
    return table.get(value, UNKNOWN) if value is not None else UNKNOWN


def code_of(table: dict[int, str], name: str) -> int | None:
    """The enum value for a name, None for unknown (leave the tag unset)."""
    for code, n in table.items():
        if n == name:
            return code
    return None


#: `--colour-matrix` targets: the output's YUV matrix, and the primaries and transfer it is tagged with (those of
#: the same standard). `keep`: the source's, as the reader read it
TARGETS = ("keep", "bt709", "smpte170m", "bt470bg")
_TARGET_TAGS = {
    "bt709": ("bt709", "bt709"),  # the S4 seed's -color_primaries bt709 -color_trc bt709 -colorspace bt709
    "smpte170m": ("smpte170m", "smpte170m"),  # BT.601 525-line
    "bt470bg": ("bt470bg", "smpte170m"),  # BT.601 625-line: BT.601's own transfer, which is BT.709's curve
}


def target_colour(colour: Colour, target: str) -> Colour:
    """The output's colour for a `--colour-matrix` target: the writer converts the RGB frames to YUV with the
    target matrix (the reader made them with the source's), so the matrix is converted, not just re-tagged; the
    primaries and transfer are tagged, not converted, as the seed's zscale matrixin=bt470bg:matrix=bt709 does:
    BT.601's transfer is BT.709's curve, and the 625-line primaries differ from BT.709's in green x only (0.29
    against 0.30). Range and depth stay the source's."""
    if target == "keep":
        return colour
    if target not in _TARGET_TAGS:
        raise UsageError(f"invalid --colour-matrix {target!r}; valid: {', '.join(TARGETS)}")
    primaries, transfer = _TARGET_TAGS[target]
    return replace(colour, matrix=target, primaries=primaries, transfer=transfer)
