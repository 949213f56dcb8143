"""A job whose stages make alpha (a matte) into a container that cannot keep it is refused before any frame is
processed, as `vidpipe run` refuses it; into one that can, alpha is kept (issue 16, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobspec import write_job_spec
from vidpipe.errors import UsageError
from vidpipe.jobs.runner import run_job
from vidpipe.jobs.spec import load_spec
from vidpipe.media.probe import probe
from vidpipe.stages.matte import Matte
from vidpipe.stages.registry import random_rvm


def _job(tmp: Path, clip: Path, container: str) -> Any:
    pipeline = {"matte": str(random_rvm()), "matte_output": "rgba", "device": "cpu"}
    path = write_job_spec(
        tmp, [str(clip)], pipeline, seconds=1, output={"dir": str(tmp / "out"), "container": container}
    )
    return load_spec(path, env={})


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = Matte.step

    def step(self: Matte, frames: Any, state: Any) -> Any:
        calls.append(len(frames))
        return real(self, frames, state)

    monkeypatch.setattr(Matte, "step", step)
    return calls


def test_made_alpha_into_mp4_is_refused_before_any_frame(make, tmp_path: Path, monkeypatch, caplog) -> None:
    clip = make("alpha-job.mp4", size=(64, 48), frames=40)
    calls = _counting(monkeypatch)
    caplog.set_level("INFO", logger="vidpipe")
    outcome = run_job(_job(tmp_path, clip, "mp4"), env={})
    assert not outcome.ok and outcome.exit_code == UsageError.exit_code
    assert "alpha" in outcome.errors[0]
    assert calls == []
    # refused where the input is prepared, before its segments are planned, never announced as "dropped" first
    assert "dropped" not in caplog.text and "segment(s)" not in caplog.text
    assert not list((tmp_path / "out").glob("*.mp4"))


@pytest.mark.slow  # two segments of VP9 with alpha, each pre-rolled: ~15 s on 2 quiet cores, 40 s under load
def test_made_alpha_into_webm_is_kept(make, tmp_path: Path, monkeypatch) -> None:
    clip = make("alpha-job.mp4", size=(64, 48), frames=40)
    calls = _counting(monkeypatch)
    outcome = run_job(_job(tmp_path, clip, "webm"), env={})
    assert outcome.ok, outcome.errors
    assert sum(calls) >= 40
    (out,) = outcome.outputs
    info = probe(out)
    assert info.video.alpha and info.video.frames in (None, 40)
