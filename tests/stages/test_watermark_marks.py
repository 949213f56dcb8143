"""The mark contract between detection, the user's boxes and masks, removal and the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidpipe.errors import UsageError
from vidpipe.stages.watermark.marks import OPEN_END, Mark, load_marks, save_marks


def _alpha() -> np.ndarray:
    a = np.zeros((48, 64), np.float32)
    a[10:20, 30:50] = 0.4
    a[12:14, 32:34] = 1.0
    return a


def test_marks_round_trip_with_spans_colour_and_facts(tmp_path: Path) -> None:
    colour = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
    marks = [Mark(3, 40, _alpha(), colour, "auto", {"score": 0.9}), Mark(41, OPEN_END, _alpha(), source="box")]
    save_marks(marks, tmp_path / "m.json")
    back = load_marks(tmp_path / "m.json")
    assert [(m.first, m.last, m.source, m.info) for m in back] == [(3, 40, "auto", {"score": 0.9}), (41, -1, "box", {})]
    assert np.array_equal(back[0].alpha, marks[0].alpha) and np.array_equal(back[0].colour, colour)
    assert back[1].colour is None
    assert back[0].box() == (30, 10, 20, 10) and back[0].box(0.5) == (32, 12, 2, 2)
    assert back[1].covers(10**6) and not back[0].covers(41) and back[0].covers(40)


def test_a_mark_refuses_a_wrong_shape_or_an_empty_span() -> None:
    with pytest.raises(ValueError, match="H×W float32"):
        Mark(0, 1, np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="like alpha"):
        Mark(0, 1, np.zeros((4, 4), np.float32), np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        Mark(5, 4, np.zeros((4, 4), np.float32))
    assert Mark(0, 1, np.zeros((4, 4), np.float32)).box() is None


def test_a_file_that_is_not_a_marks_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"marks": [{"first": 0}]}')
    with pytest.raises(UsageError, match="not a marks file"):
        load_marks(bad)
