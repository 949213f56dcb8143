"""`vidpipe eval vsr` / `vsr-seams` (issue 18) on a real clip with a small random BasicVSR: the degradation, the
bicubic baseline and the bookkeeping (the real-weight numbers are in docs/benchmarks.md)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vidpipe.eval import vsr as vsr_eval
from vidpipe.eval.vsr import (
    GATE_DB,
    bicubic_up,
    clip_path,
    degrade,
    evaluate,
    influence,
    make_stage,
    quantise,
    read_frames,
    seams,
)
from vidpipe.metrics import PSNR_CAP_DB, psnr_per_frame
from vidpipe.stages.registry import random_basicvsr
from vidpipe.stages.vsr import SEAM_GATE_DB


def test_degrade_is_antialiased_bicubic_quarter_in_8_bit_levels():
    hr = read_frames(clip_path("vtest.avi"), 2, (96, 72))
    lr = degrade(hr)
    assert lr.shape == (2, 3, 18, 24)
    assert torch.equal(lr, (lr * 255).round() / 255)  # quantised
    plain = F.interpolate(hr, size=(18, 24), mode="bicubic", antialias=False)
    assert (lr - plain).abs().max() > 2 / 255  # antialiasing changes the picture
    assert bicubic_up(lr).shape == hr.shape


def test_evaluate_scores_both_against_the_ground_truth():
    res = evaluate(["vtest.avi"], random_basicvsr(), "cpu", frames=3, divisor=8, window=2, overlap=1)
    (clip,) = res.clips
    assert (clip.clip, clip.size, clip.frames) == ("vtest.avi", (96, 72), 3)
    hr = read_frames(clip_path("vtest.avi"), 3, (96, 72))
    want = psnr_per_frame(bicubic_up(degrade(hr)), hr).tolist()
    assert clip.bicubic_rgb == want  # the baseline is what it says
    assert res.passed == (res.margin_db >= GATE_DB)
    assert res.to_json()["pooled"]["bicubic_rgb"] == sum(want) / 3


def test_seams_overlap_covering_the_clip_is_exact(tmp_path):
    res = seams("vtest.avi", random_basicvsr(), "cpu", frames=5, lr_size=(24, 18), window=2, overlaps=(0, 4),
                diff_png=tmp_path / "d.png")  # fmt: skip
    assert res.psnr[4] == [PSNR_CAP_DB] * 5  # every window is the whole clip
    assert min(res.psnr[0]) < PSNR_CAP_DB  # without context the windows differ (bidirectional propagation)
    assert res.seam_frames() == [1, 2, 3, 4]
    assert res.least_passing() == min(o for o, v in res.psnr.items() if min(v) >= SEAM_GATE_DB)
    assert res.least_passing(gate=min(res.psnr[0]) + 1) == 4
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res.write_csv(tmp_path / "s.csv")
    res.write_svg(tmp_path / "s.svg")
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 6


def test_seams_with_truth_scores_every_run_against_the_ground_truth(tmp_path):
    model = random_basicvsr()
    res = seams("vtest.avi", model, "cpu", frames=4, lr_size=(24, 18), window=2, overlaps=(0, 4), truth=True)
    hr = read_frames(clip_path("vtest.avi"), 4, (96, 72))
    lr = degrade(hr)  # the input is the degraded ground truth, not the clip area-resized
    stage = make_stage(model, torch.device("cpu"), (24, 18), window=4, overlap=0, dtype="fp32")
    whole = stage.upscale(lr).float().clamp(0, 1)
    assert res.whole_truth == psnr_per_frame(quantise(whole), hr).tolist()
    assert res.truth[4] == res.whole_truth  # a window covering the clip is the whole call
    assert sorted(res.truth) == [0, 4] and len(res.truth[0]) == 4
    assert "truth mean" in res.table() and "whole" in res.table()
    res.write_csv(tmp_path / "s.csv")
    head, *rows = (tmp_path / "s.csv").read_text().splitlines()
    assert head.split(",")[-3:] == ["truth_overlap_0", "truth_overlap_4", "truth_whole"] and len(rows) == 4
    res.write_svg(tmp_path / "s.svg")
    svg = (tmp_path / "s.svg").read_text()
    assert svg.count('stroke-dasharray="1 2"') == 3 and "ground truth" in svg  # each overlap's and the whole call's


class _Cumulative:
    """A stand-in stage: output frame k = the mean of input frames 0…k (a causal, forward-only network), ×1."""

    dtype = torch.float32

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(0) / torch.arange(1, len(x) + 1).view(-1, 1, 1, 1)


def test_influence_counts_distance_from_the_perturbed_end(monkeypatch):
    monkeypatch.setattr(vsr_eval, "make_stage", lambda *a, **k: _Cumulative())
    res = influence("vtest.avi", "unused", "cpu", frames=6, lr_size=(24, 18))
    assert len(res.backward) == len(res.forward) == 5
    # the last frame reaches no earlier output of a causal network; the first reaches every later one, less and
    # less (weight 1/(d+1)): PSNR rises with d by 20·log10((d+2)/(d+1))
    assert res.backward == [PSNR_CAP_DB] * 5
    steps = [b - a for a, b in itertools.pairwise(res.forward)]
    assert steps == pytest.approx([20 * math.log10((d + 2) / (d + 1)) for d in range(1, 5)], abs=1e-3)
    assert "first perturbed" in res.table(step=2)


def test_fp32_measurements_run_without_tf32(monkeypatch):
    """The seams and the influence curve compare two runs of a network that grows a rounding difference from frame
    to frame: in fp32 they run with TF32 off (cuDNN's default is on), and the process's flags come back after."""
    seen = []

    class Spy(_Cumulative):
        def upscale(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return super().upscale(x)

    monkeypatch.setattr(vsr_eval, "make_stage", lambda *a, **k: Spy())
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    influence("vtest.avi", "unused", "cpu", frames=3, lr_size=(24, 18))
    assert seen and set(seen) == {(False, False)}
    assert torch.backends.cudnn.allow_tf32
    seen.clear()
    influence("vtest.avi", "unused", "cpu", frames=3, lr_size=(24, 18), dtype="fp16")
    assert seen and {cudnn for cudnn, _ in seen} == {True}


def test_cli_influence_prints_and_writes_the_curve(tmp_path):
    from typer.testing import CliRunner

    from vidpipe.cli import app as cli_app

    out = tmp_path / "inf.csv"
    args = ["eval", "vsr-influence", "vtest.avi", "--model", str(random_basicvsr()), "--frames", "4",
            "--size", "24x18", "--device", "cpu", "--csv", str(out)]  # fmt: skip
    r = CliRunner().invoke(cli_app.app, args)
    assert r.exit_code == 0, r.output
    assert "last perturbed" in r.output
    assert out.read_text().splitlines()[0] == "distance,last_perturbed,first_perturbed"
    assert len(out.read_text().splitlines()) == 4  # d = 1, 2, 3
    bad = CliRunner().invoke(cli_app.app, ["eval", "vsr-influence", "--size", "0x18", "--device", "cpu"])
    assert bad.exit_code != 0
