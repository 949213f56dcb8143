"""On a real CUDA device, through the real pipeline: a forced budget makes the scheduler pick batch 8 where the free
memory (held down by a ballast tensor) fits between 2 and 3 frames, and the run recovers by seed 001's policy
(8 → 4 → 1, two 2-s back-offs, recorded instead of slept), writing every frame; with less than one frame free it
ends in the classified error; an unknown combination is probed once and cached. Skipped without CUDA.

Memory per frame is measured first (`costs.measure` at batches 1 and 4 gives the fixed part and the part per
frame), so the ballast leaves `fixed + 2.5 × per frame`: batch 4 needs 1.5 frames more than that, batch 1 1.5
frames less (less the outputs of earlier frames of its batch, about half a frame), margins far above the
allocator's rounding."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch

from vidpipe.errors import DeviceOutOfMemoryError
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.models.archs.srvgg import ARCH, SRVGGNetCompact
from vidpipe.models.loading import META_ARCH, save_safetensors
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule import costs
from vidpipe.schedule.budget import budget
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.costs import CostBook
from vidpipe.schedule.oom import release_cached
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

pytestmark = pytest.mark.gpu

SIZE = (640, 360)
_MB = 2**20


class Recording(Upscale):
    """The real upscale stage, recording the batch size of every call the scheduler makes."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sizes: list[int] = []

    def process(self, batch: Any) -> Any:
        # recorded where the OOM runner calls the stage: an attempt can run out of memory before the model
        # itself (converting 8 frames to float already failed on the H100 with less than a frame free)
        self.sizes.append(len(batch))
        return super().process(batch)


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    release_cached(device)
    return device


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """animevideov3's architecture (64 features, 16 convolutions, ×4) with random weights: its real cost."""
    net = SRVGGNetCompact(num_feat=64, num_conv=16, scale=4)
    path = tmp_path_factory.mktemp("gpu-sr") / "srvgg-random.safetensors"
    return save_safetensors(net.state_dict(), path, {META_ARCH: ARCH})


@pytest.fixture(scope="module")
def clip(make) -> Path:
    return make("gpu-oom-360p.mkv", size=SIZE, frames=16, rate=Fraction(25))


@pytest.fixture(scope="module")
def row(weights: Path, cuda: torch.device) -> costs.CostRow:
    spec = StreamSpec(width=SIZE[0], height=SIZE[1], time_base=Fraction(1, 25), nominal_rate=Fraction(25))
    return costs.measure(
        lambda: Upscale(weights, dtype="fp16"), spec, cuda, "fp16", (1, 4), prepare=lambda s: s.set_tile(0)
    )


def _peaks(row: costs.CostRow) -> tuple[float, float]:
    """(fixed MB, MB per frame) from the row's peaks at batch 1 and 4 (its notes)."""
    peaks = [float(v) for v in row.notes.split("peak GPU MB at batch 1/4: ")[1].split("/")]
    per_frame = (peaks[1] - peaks[0]) / 3
    assert per_frame > 0
    return peaks[0] - per_frame, per_frame


def _ballast(device: torch.device, leave_mb: float) -> torch.Tensor:
    release_cached(device)
    free, _ = torch.cuda.mem_get_info(device)
    return torch.empty(max(0, free - int(leave_mb * _MB)), dtype=torch.uint8, device=device)


def _opts(sleeps: list[float], **sched: Any) -> RunOptions:
    return RunOptions(
        device=str(torch.device("cuda", torch.cuda.device_count() - 1)),
        progress="none",
        # frames cross as RGB and are converted on the CPU: the device's colour conversion of 8 output frames
        # would need more memory than the ballast leaves, outside the scheduler's reach
        colour_on_device="off",
        reader=ReaderOptions(batch_size=8),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(sleep=sleeps.append, **sched),
    )


def test_forced_budget_then_real_oom_recovers_per_policy(weights, clip, row, cuda, tmp_path: Path) -> None:
    fixed, per_frame = _peaks(row)
    clean = tmp_path / "clean.mkv"
    run(clip, clean, [Upscale(weights, dtype="fp16")], _opts([], batch_size=1))
    stage = Recording(weights, dtype="fp16")
    sleeps: list[float] = []
    # the budget claims 80 GB free, so the row gives batch 8; the ballast leaves room for 3 frames (batch 4 needs
    # 4), plus the finished outputs the runner holds on the device until the batch is whole (8 at most; measured
    # on the H100: without them, batch 1 ran out at the 7th frame; on the H200, with 2.5 frames, it still did)
    opts = _opts(sleeps, book=CostBook([row]), memory=budget(81920, 0))
    out_mb = 3 * SIZE[0] * 4 * SIZE[1] * 4 / _MB  # one ×4 uint8 RGB output frame
    ballast = _ballast(cuda, fixed + 3.0 * per_frame + 8 * out_mb)
    try:
        res = run(clip, tmp_path / "o.mkv", [stage], opts)
    finally:
        del ballast
        release_cached(cuda)
    assert stage.sizes == [8, 4] + [1] * 16
    assert sleeps == [2.0, 2.0]
    block = res.manifest["schedule"]["stages"][0]
    assert (block["batch_size"], block["source"], block["tile"]) == (8, "table", 0)
    assert [(e["size"], e["attempt"], e["device"]) for e in block["oom_events"]] == [
        (8, 1, str(cuda)),
        (4, 2, str(cuda)),
    ]
    t_clean, f_clean = decode_all(clean)
    t_got, f_got = decode_all(tmp_path / "o.mkv")
    assert t_got == t_clean and f_got.shape == f_clean.shape
    # cuDNN may pick another algorithm with less memory free: allow one level of rounding
    assert (f_got.int() - f_clean.int()).abs().max() <= 1


def test_less_than_one_frame_free_is_the_classified_error(weights, clip, row, cuda, tmp_path: Path) -> None:
    fixed, per_frame = _peaks(row)
    stage = Recording(weights, dtype="fp16", tile=0)  # whole frames: an automatic tile would make one fit
    sleeps: list[float] = []
    ballast = _ballast(cuda, fixed + 0.3 * per_frame)
    try:
        with pytest.raises(DeviceOutOfMemoryError) as info:
            run(clip, tmp_path / "o.mkv", [stage], _opts(sleeps, batch_size=8))
    finally:
        del ballast
        release_cached(cuda)
    assert stage.sizes == [8, 4, 1] and sleeps == [2.0, 2.0]
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert not (tmp_path / "o.mkv").exists()
    assert torch.ones(4, device=cuda).sum().item() == 4  # the device still works


def test_unknown_combination_is_probed_once_and_cached(weights, clip, tmp_path: Path) -> None:
    book = CostBook(cache_dir=tmp_path / "cache")
    first = run(clip, tmp_path / "a.mkv", [Upscale(weights, dtype="fp16")], _opts([], book=book))
    block = first.manifest["schedule"]["stages"][0]
    assert block["source"] == "probe" and 1 <= block["batch_size"] <= costs.DEFAULT_MAX_BATCH_SIZE
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    again = run(clip, tmp_path / "b.mkv", [Upscale(weights, dtype="fp16")], _opts([], book=book))
    assert again.manifest["schedule"]["stages"][0]["source"] == "table"
