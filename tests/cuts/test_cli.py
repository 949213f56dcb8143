"""`vidpipe eval cuts` scores a prediction file; `vidpipe cuts eval` is the same command; pooled seeds add up."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from vidpipe.cli.app import main
from vidpipe.errors import UsageError
from vidpipe.eval.cuts import Row, Score, pool
from vidpipe.stages.cuts.events import Event, write_json


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess would spend seconds importing torch): exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


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


def test_eval_cuts_scores_a_prediction_and_the_alias_agrees(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    truth, pred = _files(tmp_path)
    code, out, err = _run(capsys, "eval", "cuts", str(pred), "--truth", str(truth), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert (scores["overall"]["tp"], scores["overall"]["fp"], scores["overall"]["fn"]) == (1, 1, 1)
    assert scores["hard"]["recall"] == 1.0 and scores["soft"]["recall"] == 0.0
    code, out, err = _run(capsys, "cuts", "eval", str(pred), "--truth", str(truth), "--json")
    assert code == 0 and json.loads(out) == scores, err


def test_eval_cuts_needs_both_prediction_and_truth(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    truth, _ = _files(tmp_path)
    code, _, err = _run(capsys, "eval", "cuts", "--truth", str(truth))
    assert code == UsageError.exit_code
    assert "needs both PRED and --truth" in err


def test_pool_adds_counts_over_seeds() -> None:
    a = [Row("x", {"overall": Score(tp=10, fp=1, fn=0)}, frames=100, wall_s=1.0)]
    b = [Row("x", {"overall": Score(tp=8, fp=0, fn=2)}, frames=50, wall_s=0.5)]
    (row,) = pool([a, b])
    assert row.scores["overall"] == Score(tp=18, fp=1, fn=2)
    assert (row.frames, row.wall_s) == (150, 1.5)
