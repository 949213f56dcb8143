"""One tile sizer and one OOM policy per stage, both the scheduler's (issue 15, item 5).

- The plans the committed H100 cost table gives the benchmark cases are pinned to what the scheduler chose
  before the stage's own VRAM probe was removed (same batch, same tile: no speed lost).
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

from vidpipe.models.zoo_realesrgan import ensure_offline_weights
from vidpipe.schedule import costs
from vidpipe.schedule.budget import budget
from vidpipe.schedule.chain import ScheduleOptions, plan_stage
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
