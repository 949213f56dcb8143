"""Workers sharing one device plan with their share of the seed's memory budget (`memory_budget(device, share)`),
and on a GPU (`gpu`: the lead runs these) two workers on one H100 through `--gpus 0,0`: each plans with half the
free memory, and a split upscale equals the one-process run within float rounding."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from framecheck import YUV420_LEVELS, assert_frames_close
from vidpipe.errors import UsageError
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.inputs import Job
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.budget import headroom_mb, memory_budget
from vidpipe.testing import decode_all
from vidpipe.workers import RecipeStages, run_pool, worker_slots

#: MB the host's free memory may move between two reads on a shared machine
DRIFT_MB = 256
GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}
UPSCALE = {"upscale": "realesr-animevideov3-x2"}


def test_a_share_is_the_free_memory_divided_with_its_own_headroom() -> None:
    whole = memory_budget(torch.device("cpu"))
    half = memory_budget(torch.device("cpu"), 2)
    assert half.total_mb == whole.total_mb
    assert abs(half.free_mb - whole.free_mb // 2) <= DRIFT_MB
    assert half.headroom_mb == headroom_mb(half.free_mb)
    assert half.effective_mb == max(0, half.free_mb - half.headroom_mb)
    assert half.used_mb == half.total_mb - half.free_mb
    with pytest.raises(UsageError, match="share"):
        memory_budget(torch.device("cpu"), 0)


@pytest.mark.gpu
@pytest.mark.slow
def test_two_workers_on_one_gpu_share_its_budget_and_match_one_process(make, tmp_path: Path) -> None:
    slots = worker_slots("0,0")
    assert [s.share for s in slots] == [2, 2]
    opts = RunOptions(progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))
    clips = [make(f"g-{i}.mp4", size=(640, 360), frames=50, options=GOP) for i in range(2)]
    res = run_pool([Job(c, tmp_path / f"{c.stem}.mkv") for c in clips], RecipeStages(UPSCALE), opts, slots)
    assert [v.status for v in res.videos] == ["done", "done"]
    for c in clips:
        manifest = json.loads((tmp_path / f"{c.stem}.mkv.json").read_text())
        reasons = " ".join(manifest["schedule"]["stages"][0]["reasons"])
        found = re.search(r"total (\d+) MB, used \d+ MB → free (\d+) MB", reasons)
        assert found is not None, reasons
        total, free = map(int, found.groups())
        assert 2 * free <= total, reasons  # each worker planned with at most half the device
    long = make("g-long.mp4", size=(640, 360), frames=100, options=GOP)
    out = tmp_path / "split.mkv"
    res = run_pool([Job(long, out)], RecipeStages(UPSCALE), opts, slots)
    assert res.videos[0].segments > 1
    ref = tmp_path / "ref.mkv"
    run(long, ref, RecipeStages(UPSCALE)(), RunOptions(device="cuda", progress="none", writer=opts.writer))
    (gt, got), (wt, want) = decode_all(out), decode_all(ref)
    assert gt == wt
    assert_frames_close(got, want, levels=YUV420_LEVELS, what="split over two workers on one GPU")
