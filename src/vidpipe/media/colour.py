"""FFmpeg's colour enums (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace) by name, both ways.

PyAV's `Colorspace` enum is swscale's matrix list, not AVColorSpace, so the stream tags are mapped here, with
FFmpeg's own names (what `ffprobe` prints). 2 = unspecified in all three.
"""

from __future__ import annotations

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
