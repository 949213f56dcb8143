"""Event writers: JSON round trip, CSV, EDL, and the evaluation's matching rules."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import pytest

from vidpipe.errors import UsageError
from vidpipe.eval.cuts import evaluate
from vidpipe.stages.cuts.events import Event, read_json, write_csv, write_edl, write_json

EVENTS = [
    Event(frame=25, time=Fraction(1), kind="hard", score=0.9),
    Event(frame=60, time=Fraction(12, 5), kind="soft", score=0.8, start=55, end=65),
]


def test_json_csv_edl(tmp_path: Path) -> None:
    write_json(EVENTS, tmp_path / "c.json")
    back = read_json(tmp_path / "c.json")
    assert [(e.frame, e.kind, e.start, e.end, float(e.time)) for e in back] == [
        (25, "hard", None, None, 1.0),
        (60, "soft", 55, 65, 2.4),
    ]
    write_csv(EVENTS, tmp_path / "c.csv")
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert rows[1]["kind"] == "soft" and rows[1]["start"] == "55"
    write_edl(EVENTS, tmp_path / "c.edl", rate=Fraction(25), frames=100)
    edl = (tmp_path / "c.edl").read_text().splitlines()
    assert edl[0].startswith("TITLE:")
    assert edl[3].startswith("001") and "00:00:00:00 00:00:01:00" in edl[3]
    assert "DISSOLVE 11 FRAMES" in edl[5]
    assert edl[6].startswith("003") and "00:00:04:00" in edl[6]


def test_event_checks() -> None:
    with pytest.raises(UsageError):
        Event(frame=5, time=Fraction(0), kind="wipe", score=1.0)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Event(frame=5, time=Fraction(0), kind="soft", score=1.0, start=6, end=9)


def test_matching_rules() -> None:
    truth = [Event(frame=100, time=Fraction(4), kind="hard", score=1), EVENTS[1]]
    pred = [
        Event(frame=102, time=Fraction(0), kind="hard", score=1),  # within tolerance 2
        Event(frame=53, time=Fraction(0), kind="soft", score=1),  # inside 55−2 .. 65+2
        Event(frame=200, time=Fraction(0), kind="hard", score=1),  # false positive
    ]
    s = evaluate(truth, pred, tolerance=2)
    assert (s["overall"].tp, s["overall"].fp, s["overall"].fn) == (2, 1, 0)
    assert s["soft"].recall == 1.0 and s["hard"].precision == 0.5
    assert evaluate(truth, pred, tolerance=1)["hard"].tp == 0
