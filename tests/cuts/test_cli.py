"""`vidpipe cuts IN -o OUT` writes a clip's events, a bad option is one `error:` line; `vidpipe eval cuts` scores
a prediction file; pooled seeds add up."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from cut_clips import CUT, RATE, run_main

from vidpipe.errors import UsageError
from vidpipe.eval.cuts import Row, Score, pool
from vidpipe.stages.cuts.events import Event, read_json, write_json


def _files(tmp_path: Path) -> tuple[Path, Path]:
    truth = [
        Event(frame=25, time=Fraction(1), kind="hard", score=1.0),
        Event(frame=60, time=Fraction(12, 5), kind="soft", score=1.0, start=55, end=65),
    ]
    pred = [
        Event(frame=26, time=Fraction(26, 25), kind="hard", score=0.9),
        Event(frame=90, time=Fraction(18, 5), kind="hard", score=0.5),
    ]
    write_json(truth, tmp_path / "t.json")
    write_json(pred, tmp_path / "p.json")
    return tmp_path / "t.json", tmp_path / "p.json"


def test_cuts_writes_the_events_of_a_clip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, two_shots: Callable[..., Path]
) -> None:
    out, csv = tmp_path / "out.json", tmp_path / "out.csv"
    code, _, err = run_main(capsys, "cuts", str(two_shots()), "-o", str(out), "--csv", str(csv), "--device", "cpu")
    assert code == 0, err
    raw = json.loads(out.read_text())
    assert [(e["frame"], e["kind"]) for e in raw] == [(CUT, "hard")]
    assert raw[0]["time"] == pytest.approx(float(CUT / RATE))
    assert read_json(out)[0].frame == CUT
    assert csv.read_text().count("\n") == 2  # header + the one event
    assert err.strip().endswith(f"→ {out}") and "1 events in 60 frames" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--preset", "slow", "unknown cut preset 'slow'; valid: quality, default, fast"),
        ("--on-corrupt", "ignore", "invalid --on-corrupt value 'ignore'; valid: fail, skip"),
    ],
)
def test_cuts_bad_option_is_one_error_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    two_shots: Callable[..., Path],
    option: str,
    value: str,
    message: str,
) -> None:
    out = tmp_path / "out.json"
    code, _, err = run_main(capsys, "cuts", str(two_shots()), "-o", str(out), option, value)
    assert code == UsageError.exit_code
    assert err == f"error: {message}\n"
    assert not out.exists()


def test_eval_cuts_scores_a_prediction(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    truth, pred = _files(tmp_path)
    code, out, err = run_main(capsys, "eval", "cuts", str(pred), "--truth", str(truth), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert (scores["overall"]["tp"], scores["overall"]["fp"], scores["overall"]["fn"]) == (1, 1, 1)
    assert scores["hard"]["recall"] == 1.0 and scores["soft"]["recall"] == 0.0


def test_eval_cuts_needs_both_prediction_and_truth(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    truth, _ = _files(tmp_path)
    code, _, err = run_main(capsys, "eval", "cuts", "--truth", str(truth))
    assert code == UsageError.exit_code
    assert "needs both PRED and --truth" in err


def test_pool_adds_counts_over_seeds() -> None:
    a = [Row("x", {"overall": Score(tp=10, fp=1, fn=0)}, frames=100, wall_s=1.0)]
    b = [Row("x", {"overall": Score(tp=8, fp=0, fn=2)}, frames=50, wall_s=0.5)]
    (row,) = pool([a, b])
    assert row.scores["overall"] == Score(tp=18, fp=1, fn=2)
    assert (row.frames, row.wall_s) == (150, 1.5)
