"""Cut events and their writers (JSON, CSV, CMX3600 EDL).

An analysis stage emits `Event`s, not frames. `frame` is the source frame number of the boundary: for a hard
cut the first frame of the new shot, for a soft transition (dissolve, fade) its centre, with `start`/`end` the
first and last frame of the transition. `time` is exact (`Fraction` seconds); JSON carries it as a float.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from ...errors import InputError, UsageError

Kind = Literal["hard", "soft", "motion"]
KINDS: tuple[Kind, ...] = ("hard", "soft", "motion")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    frame: int
    time: Fraction
    kind: Kind
    score: float
    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"event kind {self.kind!r} invalid; valid: {', '.join(KINDS)}")
        if (self.start is None) != (self.end is None):
            raise UsageError("an event has both start and end or neither")
        if self.start is not None and self.end is not None and not self.start <= self.frame <= self.end:
            raise UsageError(f"event frame {self.frame} outside its span {self.start}..{self.end}")

    @property
    def seconds(self) -> float:
        return float(self.time)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"frame": self.frame, "time": float(self.time), "kind": self.kind, "score": self.score}
        if self.start is not None:
            d["start"] = self.start
            d["end"] = self.end
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> Event:
        try:
            return Event(
                frame=int(d["frame"]),
                time=Fraction(d.get("time", 0.0)).limit_denominator(1_000_000),
                kind=d["kind"],
                score=float(d.get("score", 1.0)),
                start=None if d.get("start") is None else int(d["start"]),
                end=None if d.get("end") is None else int(d["end"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a cut event: {d!r} ({e})") from e


def write_json(events: list[Event], path: Path) -> None:
    path.write_text(json.dumps([e.to_json() for e in events], indent=1) + "\n")


def read_json(path: Path) -> list[Event]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read cut events ({e})") from e
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of events")
    return [Event.from_json(d) for d in data]


def write_csv(events: list[Event], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "time", "kind", "score", "start", "end"])
        for e in events:
            w.writerow([e.frame, f"{float(e.time):.6f}", e.kind, f"{e.score:.6f}", e.start or "", e.end or ""])


def _timecode(frame: int, fps: int) -> str:
    s, f = divmod(frame, fps)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{f:02d}"


def write_edl(events: list[Event], path: Path, *, rate: Fraction, frames: int, title: str = "vidpipe cuts") -> None:
    """One CMX3600 event per shot. Soft transitions become dissolves (`D` with their length); timecodes count
    frames at the rounded nominal rate (non-drop), which is what EDL readers expect."""
    fps = max(1, round(rate))
    bounds = sorted((e for e in events if e.kind in ("hard", "soft")), key=lambda e: e.frame)
    lines = [f"TITLE: {title}", "FCM: NON-DROP FRAME", ""]
    start, n = 0, 0
    for e in [*bounds, None]:
        cut = frames if e is None else e.frame
        if cut <= start:
            continue
        n += 1
        tc_in, tc_out = _timecode(start, fps), _timecode(cut, fps)
        lines.append(f"{n:03d}  AX       V     C        {tc_in} {tc_out} {tc_in} {tc_out}")
        if e is not None and e.kind == "soft" and e.start is not None and e.end is not None:
            lines.append(f"* TRANSITION: DISSOLVE {e.end - e.start + 1} FRAMES FROM {e.start} TO {e.end}")
        start = cut
    path.write_text("\n".join(lines) + "\n")
