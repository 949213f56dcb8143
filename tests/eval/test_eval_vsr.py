"""`vidpipe eval vsr` / `vsr-seams` (issue 18) on a real clip with a small random BasicVSR: the degradation, the
bicubic baseline and the bookkeeping (the real-weight numbers are in docs/benchmarks.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidpipe.eval.vsr import GATE_DB, bicubic_up, clip_path, degrade, evaluate, read_frames, seams
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
