"""One tile sizer and one OOM policy per stage, both the scheduler's (issue 15, item 5).

- The plans the committed H100 cost table gives the benchmark cases are pinned to what the scheduler chose
  before the stage's own VRAM probe was removed (same batch, same tile: no speed lost).
- Past batch 1, an injected OOM steps the tile down (the scheduler's policy, not the stage's): the exact sequence
  of (batch, tile) sizes, the same frames, and the classified error at the smallest tile; a tile the user fixed
  is never stepped.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from sched_helpers import frames, tiny_sr
from sched_helpers import spec as sched_spec

from vidpipe.errors import DeviceOutOfMemoryError
from vidpipe.frames import FrameBatch
from vidpipe.models.zoo_realesrgan import ensure_offline_weights
from vidpipe.schedule import costs
from vidpipe.schedule.autoconfig import Tiling, smaller_tile, tile_steps
from vidpipe.schedule.budget import budget
from vidpipe.schedule.chain import ScheduledStage, ScheduleOptions, StagePlan, plan_stage
from vidpipe.schedule.costs import TABLES_DIR, CostBook
from vidpipe.stages.base import Stage, StreamSpec
from vidpipe.stages.upscale import Upscale

CPU = torch.device("cpu")
H100 = "NVIDIA H100 80GB HBM3"
#: the committed rows of each model, by the `model_signature` docs/benchmarks.md labels them with: the H100's
#: weight files differ from this machine's (another conversion), so a stage set up here signs differently and
#: is given the table's signature instead
TABLE_SIGNATURE = {"realesr-animevideov3-x4": "d7795c67605d62b7", "realesr-animevideov3-x2": "061a90a2b08f494e"}
#: the H100's budget as `vidpipe doctor --device cuda --no-probe` reported it there (docs/benchmarks.md)
H100_MEMORY = budget(81079, 631)
#: a card with little free (e.g. shared with another job): a 1080p ×4 frame no longer fits, so the row sizes a tile
TIGHT_MEMORY = budget(4096, 2500)
#: less still: about a seventh of a 720p ×4 frame fits
TIGHTER_MEMORY = budget(2048, 900)


@pytest.fixture
def fake_h100(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """A CUDA device named as the table's rows were measured on; memory figures are passed in explicitly."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: H100)
    real = costs.cost_signature

    def signed(stage: Stage) -> str:
        model = str(stage.signature().get("model"))
        return TABLE_SIGNATURE.get(model) or real(stage)

    monkeypatch.setattr(costs, "cost_signature", signed)
    return torch.device("cuda", 0)


def _upscale(model: str, width: int, height: int) -> tuple[Upscale, StreamSpec]:
    ensure_offline_weights(model)
    spec = StreamSpec(width=width, height=height, time_base=Fraction(1, 30), nominal_rate=Fraction(30))
    stage = Upscale(model)  # tile "auto": the scheduler's to choose
    stage.setup(CPU, spec)
    stage.dtype_name = "fp16"  # what it computes in on CUDA, and the table's rows; the CPU refuses fp16
    return stage, spec


# Expected (batch, tile, source): computed at HEAD 8654f7e, before this change, by this very test (the plan of
# `plan_stage` on the committed table). x4plus has no committed row: with no probe it runs whole frames at batch 1
# (at 8654f7e the tile was the stage's own choice, whole frames where it was set up on the CPU).
@pytest.mark.parametrize(
    ("model", "size", "memory", "expected"),
    [
        ("realesr-animevideov3-x4", (1280, 720), H100_MEMORY, (8, 0, "table")),
        ("realesr-animevideov3-x4", (1920, 1080), H100_MEMORY, (8, 0, "table")),
        ("realesr-animevideov3-x2", (1920, 1080), H100_MEMORY, (8, 0, "table")),
        ("realesr-animevideov3-x4", (1920, 1080), TIGHT_MEMORY, (1, 1072, "table")),
        ("realesr-animevideov3-x4", (1280, 720), TIGHTER_MEMORY, (1, 480, "table")),
        ("realesrgan-x4plus", (1280, 720), H100_MEMORY, (1, 0, "none")),
        ("realesrgan-x4plus", (1920, 1080), H100_MEMORY, (1, 0, "none")),
    ],
)
def test_the_committed_h100_table_gives_the_plans_it_gave_before(
    fake_h100: torch.device, model: str, size: tuple[int, int], memory, expected: tuple[int, int, str]
) -> None:
    stage, spec = _upscale(model, *size)
    book = CostBook(costs.load_dir(TABLES_DIR))
    plan = plan_stage(stage, spec, fake_h100, ScheduleOptions(probe="never", memory=memory), reader_batch=8, book=book)
    assert (plan.batch_size, plan.tile, plan.source) == expected
    assert stage.tile == plan.tile  # the stage runs what the scheduler chose


def test_the_table_still_holds_the_rows_these_plans_come_from() -> None:
    rows = json.loads((TABLES_DIR / "nvidia-h100-80gb-hbm3.json").read_text())["rows"]
    signed = {(r["model_signature"], r["input_bucket"]["short_side"]) for r in rows if r["component"] == "upscale"}
    for signature in TABLE_SIGNATURE.values():
        assert {(signature, 720), (signature, 1080)} <= signed


# --- the OOM policy steps the tile down once the batch is 1 ---------------------------------------------------

#: the stand-in GPU's memory, in input pixels of one model call: a 64-px tile with its overlap fits (96×96 inside a
#: frame), a 128-px one (160×160) does not
ROOM = 96 * 96
SIZE = (256, 192)


class Cramped(Upscale):
    """The real upscale stage on a device with room for `ROOM` input pixels a model call; records the (batch,
    tile) of every call the scheduler makes."""

    def __init__(self, *args: Any, room: int = ROOM, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.room, self.calls = room, []

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.calls.append((len(batch), self.tile))
        return super().process(batch)

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.room:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._model(x)


@pytest.fixture(scope="module")
def sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sr(tmp_path_factory.mktemp("sr") / "tiny-x2.safetensors")


def _scheduled(
    stage: Cramped, sleeps: list[float], *, reader_batch: int = 8, **options: Any
) -> tuple[ScheduledStage, StagePlan]:
    spec = sched_spec(*SIZE)
    stage.setup(CPU, spec)
    opts = ScheduleOptions(book=CostBook(), sleep=sleeps.append, **options)
    plan = plan_stage(stage, spec, CPU, opts, reader_batch=reader_batch)
    return ScheduledStage(stage, plan, CPU, policy=opts.policy, sleep=opts.sleep), plan


def test_after_batch_one_an_oom_halves_the_tile_and_reruns_the_same_frame(sr: Path) -> None:
    stage, sleeps = Cramped(sr), []
    scheduled, plan = _scheduled(stage, sleeps, reader_batch=4)
    assert (plan.batch_size, plan.tile, plan.tile_steps) == (4, 0, (128, 64))  # no row: whole frames, as read
    x = frames(4, *SIZE)
    out = scheduled.process(x)
    # the seed's batches first (4 → 2 → 1), then the tile: whole frames → 128 → 64, which fits; kept after
    assert stage.calls == [(4, 0), (2, 0), (1, 0), (1, 128)] + [(1, 64)] * 4
    assert sleeps == [2.0] * 4
    events = [(e.size, e.tile, e.attempt, e.start) for e in scheduled.runner.events]
    assert events == [(4, 0, 1, 0), (2, 0, 2, 0), (1, 0, 3, 0), (1, 128, 4, 0)]
    report = scheduled.schedule_report()
    assert (report["tile"], report["batch_size_at_end"]) == (64, 1)
    # every frame once, as a whole-frame run gives it (a 2-layer net sees less than a tile's overlap)
    clean = Upscale(sr, tile=0)
    clean.setup(CPU, sched_spec(*SIZE))
    assert out is not None and out.pts == x.pts
    assert (out.data.int() - clean.process(x).data.int()).abs().max() <= 1


def test_an_oom_at_the_smallest_tile_is_the_classified_error(sr: Path) -> None:
    stage, sleeps = Cramped(sr, room=32 * 32), []
    scheduled, _ = _scheduled(stage, sleeps)
    with pytest.raises(DeviceOutOfMemoryError, match="even in 64px tiles") as info:
        scheduled.process(frames(8, *SIZE))
    assert stage.calls == [(8, 0), (4, 0), (1, 0), (1, 128), (1, 64)]
    assert sleeps == [2.0] * 4  # none after the last attempt
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_a_tile_the_user_fixed_is_never_stepped(sr: Path) -> None:
    stage, sleeps = Cramped(sr, tile=128), []
    scheduled, plan = _scheduled(stage, sleeps)
    assert (plan.tile, plan.tile_steps) == (128, ())
    with pytest.raises(DeviceOutOfMemoryError, match="one frame does not fit"):
        scheduled.process(frames(8, *SIZE))
    assert stage.calls == [(8, 128), (4, 128), (1, 128)]  # the seed's policy alone


def test_a_batch_size_override_runs_whole_frames_and_keeps_the_tile_steps(sr: Path) -> None:
    stage, sleeps = Cramped(sr), []
    scheduled, plan = _scheduled(stage, sleeps, batch_size=2)
    assert (plan.batch_size, plan.tile, plan.tile_steps, plan.source) == (2, 0, (128, 64), "override")
    scheduled.process(frames(2, *SIZE))
    assert stage.calls == [(2, 0), (1, 0), (1, 128), (1, 64), (1, 64)]


def test_a_probe_that_runs_out_of_memory_starts_one_tile_step_down(sr: Path) -> None:
    """No row and the probe (a copy of the stage, at whole frames) ran out of memory on one frame: the plan starts
    at the first tile step instead of a whole frame known not to fit."""
    stage, sleeps = Cramped(sr), []
    _, plan = _scheduled(stage, sleeps, probe="always")
    assert (plan.source, plan.batch_size, plan.tile, plan.tile_steps) == ("probe-oom", 1, 128, (64,))
    assert stage.tile == 128
    assert any("one step below whole frames" in r for r in plan.reasons)


def test_the_tile_steps_halve_to_the_model_multiple_and_stop_at_the_smallest_tile() -> None:
    t = Tiling(multiple=8, overlap=16, min_tile=64)
    assert tile_steps(0, 1920, 1080, t) == (960, 480, 240, 120, 64)
    assert tile_steps(1072, 1920, 1080, t) == (536, 264, 128, 64)
    assert tile_steps(0, 64, 48, t) == () and tile_steps(64, 1920, 1080, t) == ()
    assert smaller_tile(0, 100, 60, t) == 64  # never below the smallest tile
    assert tile_steps(0, 1920, 1080, Tiling(multiple=16, min_tile=64)) == (960, 480, 240, 112, 64)
