"""`vidpipe bench matte` at a tiny size on the CPU: the model-only figure carries the stage's state from call to
call, and the end-to-end runs write real alpha through both routes (VP9 WebM, ProRes 4444). The figures that
matter are an H100's (the lead runs it there); this checks the command works anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vidpipe.bench.matte import HEADER, ROUTES, end_to_end, model_only
from vidpipe.cli import app as cli_app
from vidpipe.errors import UsageError
from vidpipe.media.probe import probe
from vidpipe.models.zoo_rvm import ensure_offline_weights

MODEL = "rvm-mobilenetv3"
TINY = (128, 72)
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def weights() -> None:
    ensure_offline_weights(MODEL)


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(("workers", "layout"), [(0, "one encoder"), (2, "2 encoders")])
def test_end_to_end_writes_alpha(route: str, workers: int, layout: str, tmp_path: Path):
    r = end_to_end(MODEL, TINY, device=CPU, frames=6, work_dir=tmp_path, route=route, batch=3, encode_workers=workers)
    pix_fmt = {"vp9": "yuva420p", "prores": "yuva444p10le"}[route]
    assert r.fps > 0 and r.route.startswith(f"e2e {route} {pix_fmt}, {layout}")
    out = next(tmp_path.glob(f"matte-out-*{ROUTES[route][1]}"))
    assert probe(out).video.alpha and probe(out).video.frames == 6


def test_cli_prints_the_model_only_row(monkeypatch, tmp_path: Path):
    from vidpipe.stages.matte import Matte

    states = []
    alpha = Matte.alpha

    def spy(self, frames, state):  # type: ignore[no-untyped-def]
        states.append(state)
        return alpha(self, frames, state)

    monkeypatch.setattr(Matte, "alpha", spy)
    args = ["bench", "matte", "--device", "cpu", "--size", "128x72", "--batch", "2", "--seconds", "0.2",
            "--work-dir", str(tmp_path)]  # fmt: skip
    res = CliRunner().invoke(cli_app.app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1:3] == HEADER.splitlines()
    row = lines[3]
    assert row.startswith("| rvm-mobilenetv3 | 128x72 | fp32 | 1 | 2 | model eager |") and row.endswith("| cpu |")
    assert float(row.split("|")[7]) > 0  # frames/s
    assert states[0] is None and all(s is not None for s in states[1:])  # recurrent, as the stage runs
    with pytest.raises(UsageError, match="batch"):
        model_only(MODEL, TINY, device=CPU, batch=0)
    with pytest.raises(UsageError, match="valid: eager, compile"):
        model_only(MODEL, TINY, device=CPU, mode="graphs")
