"""The scheduler inside the real pipeline (`pipeline.run`): out-of-memory errors injected at chosen model calls give
seed 001's exact sequence of batch sizes and a classified error at the end; recovered runs write the same frames as
clean ones (a stage with context included: its state is restored, never advanced twice); nothing leaves the
device; the manifest's schedule block says what was chosen and why."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from sched_helpers import tiny_sr

from framecheck import YUV420_LEVELS, assert_frames_close
from vidpipe.errors import DeviceError, DeviceOutOfMemoryError
from vidpipe.frames import FrameBatch
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.models.zoo_rife import ensure_offline_weights
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.budget import budget
from vidpipe.schedule.chain import ScheduleOptions, plan_stage
from vidpipe.schedule.costs import CostBook, CostRow, InputBucket, Provenance, cost_signature, device_name
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

CPU = torch.device("cpu")


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class FlakyUpscale(Upscale):
    """The real upscale stage; its model call raises an OOM on the chosen (1-based) calls. Records each call's
    batch size and the device of every input."""

    def __init__(self, *args: Any, oom_at: set[int], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.oom_at, self.sizes, self.devices = oom_at, [], set()

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        self.devices.add(x.device)
        if len(self.sizes) in self.oom_at:
            raise _oom()
        return super()._model(x)


class FlakyInterpolate(Interpolate):
    """The real interpolation stage (RIFE HDv3 weights); its network call raises an OOM on the chosen calls."""

    def __init__(self, *args: Any, oom_at: set[int], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.oom_at, self.calls = oom_at, 0

    def _call(self, left: torch.Tensor, right: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls in self.oom_at:
            raise _oom()
        return super()._call(left, right, timestep)


@pytest.fixture(scope="module")
def sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sr(tmp_path_factory.mktemp("sr") / "tiny-x2.safetensors")


@pytest.fixture(scope="module")
def clip16(make) -> Path:
    return make("sched-16.mkv", size=(64, 48), frames=16, rate=Fraction(25))


def _opts(sleeps: list[float], *, batch: int | None = 8, reader_batch: int = 8, **sched: Any) -> RunOptions:
    return RunOptions(
        device="cpu",
        progress="none",
        reader=ReaderOptions(batch_size=reader_batch),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(batch_size=batch, sleep=sleeps.append, **sched),
    )


@pytest.fixture(scope="module")
def clean(sr: Path, clip16: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Fraction], torch.Tensor]:
    out = tmp_path_factory.mktemp("clean") / "clean.mkv"
    run(clip16, out, [Upscale(sr, tile=0)], _opts([]))
    return decode_all(out)


@pytest.mark.parametrize(
    ("oom_at", "sizes", "events"),
    [
        (set(), [8, 8], []),
        # one OOM: the same 8 frames again at 4; the smaller size is kept for the second reader batch
        ({1}, [8, 4, 4, 4, 4], [(8, 1, 0)]),
        # two: the third and last attempt runs at batch 1, and stays there
        ({1, 2}, [8, 4] + [1] * 16, [(8, 1, 0), (4, 2, 0)]),
        # an OOM in the second reader batch re-runs only that batch's frames
        ({2}, [8, 8, 4, 4], [(8, 1, 0)]),
    ],
)
def test_injected_oom_gives_the_exact_sizes_and_the_same_frames(
    oom_at: set[int], sizes: list[int], events: list[tuple[int, int, int]], sr: Path, clip16: Path, clean, tmp_path
) -> None:
    stage = FlakyUpscale(sr, tile=0, oom_at=oom_at)
    sleeps: list[float] = []
    res = run(clip16, tmp_path / "o.mkv", [stage], _opts(sleeps))
    assert stage.sizes == sizes
    assert sleeps == [2.0] * len(oom_at)  # the seed's back-off, once per recovered OOM
    assert stage.devices == {CPU}  # every attempt on the run's device: there is no fallback path
    times, frames = decode_all(tmp_path / "o.mkv")
    assert times == clean[0]  # nothing dropped or duplicated; the frames ran at other batch sizes: see framecheck
    assert_frames_close(frames, clean[1], levels=YUV420_LEVELS, what="after OOM recovery")
    block = res.manifest["schedule"]["stages"][0]
    assert (block["stage"], block["batch_size"], block["source"]) == ("upscale", 8, "override")
    assert [(e["size"], e["attempt"], e["start"]) for e in block["oom_events"]] == events
    assert block["batch_size_at_end"] == sizes[-1]


def test_oom_at_batch_one_ends_in_a_classified_error_and_no_output(sr: Path, clip16: Path, tmp_path: Path) -> None:
    stage = FlakyUpscale(sr, tile=0, oom_at={1, 2, 3})
    sleeps: list[float] = []
    with pytest.raises(DeviceOutOfMemoryError) as info:
        run(clip16, tmp_path / "o.mkv", [stage], _opts(sleeps))
    assert stage.sizes == [8, 4, 1]
    assert sleeps == [2.0, 2.0]  # none after the last attempt
    assert info.value.exit_code == 5 and not info.value.retryable
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert list(tmp_path.iterdir()) == []  # no output, no partial file, no manifest


def test_a_frame_returned_on_another_device_is_refused(sr: Path, clip16: Path, tmp_path: Path) -> None:
    class Fallback(Upscale):
        """Pretends to recover from an OOM by computing elsewhere: what the scheduler must never allow."""

        def process(self, batch: FrameBatch) -> FrameBatch:
            return batch.with_data(torch.empty(batch.data.shape, dtype=batch.data.dtype, device="meta"))

    with pytest.raises(DeviceError, match="not allowed"):
        run(clip16, tmp_path / "o.mkv", [Fallback(sr, tile=0)], _opts([]))


@pytest.fixture(scope="module")
def rife() -> str:
    ensure_offline_weights("rife-hdv3")
    return "rife-hdv3"


@pytest.fixture(scope="module")
def clip12(make) -> Path:
    return make("sched-12.mkv", size=(64, 48), frames=12, rate=Fraction(24))


def _interp_run(rife: str, clip: Path, out: Path, oom_at: set[int], sleeps: list[float]) -> dict[str, Any]:
    stage = FlakyInterpolate(rife, multi=2, oom_at=oom_at)
    res = run(clip, out, [stage], _opts(sleeps, batch=4, reader_batch=4))
    return res.manifest


@pytest.mark.parametrize("oom_at", [{2}, {1, 3}])
def test_interpolation_re_runs_from_its_snapshot(oom_at: set[int], rife: str, clip12: Path, tmp_path: Path) -> None:
    """Interpolation holds frames and a timeline between batches: a batch that ran out of memory half-way is
    re-run from the state saved before it, so every output frame and timestamp is the clean run's."""
    clean = _interp_run(rife, clip12, tmp_path / "clean.mkv", set(), [])
    sleeps: list[float] = []
    got = _interp_run(rife, clip12, tmp_path / "oom.mkv", oom_at, sleeps)
    assert sleeps == [2.0] * len(oom_at)
    a_times, a = decode_all(tmp_path / "clean.mkv")
    b_times, b = decode_all(tmp_path / "oom.mkv")
    assert b_times == a_times
    assert_frames_close(b, a, levels=YUV420_LEVELS, what="re-run from the snapshot")  # at smaller batches
    for key in ("frames_in", "frames_out", "scene_cuts", "pairs_checked", "interpolated_frames"):
        assert got["stage_reports"]["interpolate"][key] == clean["stage_reports"]["interpolate"][key], key
    events = got["schedule"]["stages"][0]["oom_events"]
    assert [e["size"] for e in events][:1] == [4] and len(events) == len(oom_at)


def test_snapshot_restore_undoes_a_batch(rife: str) -> None:
    """Directly: process(B) after restore gives what it gave the first time, and the report is not counted twice."""
    spec = StreamSpec(width=64, height=48, time_base=Fraction(1, 24), nominal_rate=Fraction(24))
    g = torch.Generator().manual_seed(1)
    base = torch.randint(0, 256, (1, 3, 48, 64), generator=g, dtype=torch.uint8)
    frames = [torch.roll(base, k, dims=3) for k in range(6)]

    def batch(i: int, n: int) -> FrameBatch:
        return FrameBatch(data=torch.cat(frames[i : i + n]), pts=list(range(i, i + n)), time_base=Fraction(1, 24))

    st = Interpolate(rife, multi=2)
    st.setup(CPU, spec)
    st.process(batch(0, 3))
    saved = st.snapshot()
    first = st.process(batch(3, 3))
    report = st.report()
    st.restore(saved)
    again = st.process(batch(3, 3))
    assert first is not None and again is not None
    assert torch.equal(first.data, again.data) and first.pts == again.pts
    assert st.report() == report


class Stateful(Upscale):
    """A stage with context and no snapshot hooks: it cannot be re-run safely."""

    context = 1

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls = 0

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.calls += 1
        raise _oom()


def test_a_stage_with_context_and_no_snapshot_is_not_retried(sr: Path, clip16: Path, tmp_path: Path) -> None:
    stage = Stateful(sr, tile=0)
    sleeps: list[float] = []
    with pytest.raises(DeviceOutOfMemoryError, match="not retried"):
        run(clip16, tmp_path / "o.mkv", [stage], _opts(sleeps))
    assert stage.calls == 1 and sleeps == []


def _cpu_row(stage: Upscale, spec: StreamSpec, rss_mb: float) -> CostRow:
    return CostRow(
        component="upscale",
        unit="frame",
        input_bucket=InputBucket.of(spec.width, spec.height),
        runtime="inprocess",
        model_signature=cost_signature(stage),
        dtype="fp32",
        gpu_memory_per_task_mb=None,
        cpu_rss_peak_mb=rss_mb,
        latency_ms_per_unit=1.0,
        max_batch_size_component=8,
        cross_video_batching=True,
        provenance=Provenance(commit="test", date="2026-11-22T00:00:00Z", gpu=device_name(CPU), torch="t", cuda="none"),
    )


def test_batch_size_comes_from_the_cost_row_and_the_budget(sr: Path, clip16: Path, tmp_path: Path) -> None:
    """No tier list: the seed's formula on this row and a given budget picks 3, and the stage runs at 3."""
    probe_stage = Upscale(sr, tile=0)
    spec = StreamSpec(width=64, height=48, time_base=Fraction(1, 25), nominal_rate=Fraction(25))
    probe_stage.setup(CPU, spec)
    mem = budget(10_000, 5_000)  # free 5000 → headroom 1250 → budget 3750 MB
    book = CostBook([_cpu_row(probe_stage, spec, rss_mb=1200.0)])  # floor(3750 / 1200) = 3
    stage = FlakyUpscale(sr, tile=0, oom_at=set())
    res = run(clip16, tmp_path / "o.mkv", [stage], _opts([], batch=None, book=book, memory=mem))
    assert stage.sizes == [3, 3, 2, 3, 3, 2]  # each reader batch of 8 in sub-batches of at most 3
    block = res.manifest["schedule"]["stages"][0]
    assert block["source"] == "table" and block["batch_size"] == 3
    assert any("clamp(floor(3750 / 1200.0) = 3, 1, 8) = 3" in r for r in block["reasons"])


def test_the_scheduler_sets_an_automatic_tile_from_the_row(sr: Path) -> None:
    """A whole frame needing more than the budget is tiled: the tile is set on the stage, a forced one is kept."""
    spec = StreamSpec(width=640, height=360, time_base=Fraction(1, 25), nominal_rate=Fraction(25))
    auto, forced = Upscale(sr), Upscale(sr, tile=128)
    for s in (auto, forced):
        s.setup(CPU, spec)
    mem = budget(10_000, 5_000)  # budget 3750 MB
    book = CostBook([_cpu_row(auto, spec, rss_mb=15_000.0)])  # a quarter of a frame fits
    opts = ScheduleOptions(book=book, memory=mem)
    plan = plan_stage(auto, spec, CPU, opts, reader_batch=8)
    assert plan.batch_size == 1 and plan.tile is not None and 64 <= plan.tile < 360
    assert auto.tile == plan.tile and auto.signature()["tile"] == "auto"
    plan_forced = plan_stage(forced, spec, CPU, opts, reader_batch=8)
    assert forced.tile == plan_forced.tile == 128  # the user's tile is not the scheduler's to change
    assert cost_signature(auto) == cost_signature(forced)  # rows are whole-frame costs, whatever the tile


def test_without_a_row_the_cpu_runs_batches_as_read(sr: Path, clip16: Path, tmp_path: Path) -> None:
    stage = FlakyUpscale(sr, tile=0, oom_at=set())
    res = run(clip16, tmp_path / "o.mkv", [stage], _opts([], batch=None, book=CostBook()))
    assert stage.sizes == [8, 8]
    block = res.manifest["schedule"]
    assert block["stages"][0]["source"] == "none" and block["reader_batch"] == 8
    assert "not probed" in " ".join(block["stages"][0]["reasons"])
    assert block["oom_policy"] == {"attempts": 3, "backoff_s": 2.0}
    for key in ("model_signature", "settings_signature", "input_fingerprint"):
        assert res.manifest[key]
