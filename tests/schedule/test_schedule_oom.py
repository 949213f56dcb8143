"""The OOM policy of seed 001 §0: injected out-of-memory errors at chosen calls give an exact sequence of batch
sizes, the same frames come out (none dropped, none twice), and nothing ever moves to another device."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import torch
from sched_helpers import frames

from vidpipe.errors import DeviceError, DeviceOutOfMemoryError, UsageError
from vidpipe.frames import FrameBatch
from vidpipe.schedule import oom
from vidpipe.schedule.oom import OomPolicy, OomRunner


class Flaky:
    """Adds 1 to every frame; raises an OOM on the chosen (1-based) calls. Records what it was given."""

    def __init__(self, oom_at: set[int], error: Callable[[], BaseException] | None = None) -> None:
        self.oom_at = oom_at
        self.error = error or (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        self.calls = 0
        self.sizes: list[int] = []
        self.done: list[int] = []  # source frame numbers processed successfully
        self.inputs: list[FrameBatch] = []

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        self.calls += 1
        self.sizes.append(len(batch))
        self.inputs.append(batch)
        if self.calls in self.oom_at:
            raise self.error()
        self.done += batch.index
        return batch.with_data(batch.data + 1)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.released: list[torch.device] = []

    def runner(self, size: int, policy: OomPolicy | None = None) -> OomRunner:
        return OomRunner(size, policy=policy or OomPolicy(), sleep=self.sleeps.append, release=self.released.append)


def _same_frames(out: FrameBatch, src: FrameBatch) -> None:
    assert out.index == src.index
    assert out.pts == src.pts
    assert torch.equal(out.data, src.data + 1)


def test_seed_constants() -> None:
    assert (oom.OOM_ATTEMPTS, oom.OOM_BACKOFF_S) == (3, 2.0)
    assert OomPolicy() == OomPolicy(attempts=3, backoff_s=2.0)


@pytest.mark.parametrize(
    ("size", "oom_at", "sizes", "sleeps"),
    [
        (16, set(), [16], 0),
        # one OOM: retry the same frames at half, then keep the smaller size for the rest
        (16, {1}, [16, 8, 8], 1),
        # two: the third and last attempt runs at 1, and the rest of the batch stays at 1
        (16, {1, 2}, [16, 8] + [1] * 16, 2),
        # an OOM later in the batch re-runs only that sub-batch
        (4, {2}, [4, 4] + [2] * 6, 1),
        # a success resets the attempt count, not the size
        (16, {1, 3}, [16, 8, 8, 4, 4], 2),
        # size 3 halves to 1 at once
        (3, {1}, [3] + [1] * 16, 1),
    ],
)
def test_exact_sizes_after_recovered_oom(size: int, oom_at: set[int], sizes: list[int], sleeps: int) -> None:
    rec = Recorder()
    runner = rec.runner(size)
    fn = Flaky(oom_at)
    src = frames(16)
    out = runner.run(src, fn)
    assert fn.sizes == sizes
    assert rec.sleeps == [2.0] * sleeps
    assert rec.released == [src.device] * sleeps
    assert len(runner.events) == sleeps
    _same_frames(out, src)
    # every frame was processed successfully exactly once: nothing dropped, nothing duplicated
    assert Counter(fn.done) == Counter(src.index)
    assert runner.size == sizes[-1]


def test_three_ooms_end_in_a_classified_error() -> None:
    rec = Recorder()
    runner = rec.runner(16)
    fn = Flaky({1, 2, 3})
    with pytest.raises(DeviceOutOfMemoryError) as info:
        runner.run(frames(16), fn)
    assert fn.sizes == [16, 8, 1]
    assert rec.sleeps == [2.0, 2.0]  # back-off between attempts, none after the last
    assert [(e.size, e.attempt, e.start, e.stop) for e in runner.events] == [(16, 1, 0, 16), (8, 2, 0, 8), (1, 3, 0, 1)]
    err = info.value
    assert isinstance(err, DeviceError) and err.exit_code == 5 and not err.retryable
    assert isinstance(err.__cause__, torch.OutOfMemoryError)
    assert "16, 8, 1" in str(err)


@pytest.mark.parametrize(("size", "oom_at", "sizes"), [(1, {1}, [1]), (2, {1, 2}, [2, 1])])
def test_oom_at_batch_one_stops_at_once(size: int, oom_at: set[int], sizes: list[int]) -> None:
    rec = Recorder()
    fn = Flaky(oom_at)
    with pytest.raises(DeviceOutOfMemoryError):
        rec.runner(size).run(frames(8), fn)
    assert fn.sizes == sizes
    assert rec.sleeps == [2.0] * (len(sizes) - 1)


def test_a_later_call_gets_its_own_three_attempts() -> None:
    rec = Recorder()
    fn = Flaky({2, 3, 4})
    runner = rec.runner(16)
    runner.run(frames(16), fn)
    with pytest.raises(DeviceOutOfMemoryError):
        runner.run(frames(16, start=16), fn)
    assert fn.sizes == [16, 16, 8, 1]
    assert fn.done == list(range(16))


def test_longer_policy_halves_then_ends_at_one() -> None:
    rec = Recorder()
    fn = Flaky({1, 2, 3, 4})
    with pytest.raises(DeviceOutOfMemoryError):
        rec.runner(16, OomPolicy(attempts=4, backoff_s=0.5)).run(frames(16), fn)
    assert fn.sizes == [16, 8, 4, 1]
    assert rec.sleeps == [0.5] * 3


def test_legacy_runtime_error_oom_is_recognised() -> None:
    rec = Recorder()
    fn = Flaky({1}, lambda: RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    src = frames(8)
    _same_frames(rec.runner(8).run(src, fn), src)
    assert fn.sizes == [8, 4, 4]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        torch.AcceleratorError("CUDA error: unspecified launch failure")
        if hasattr(torch, "AcceleratorError")
        else RuntimeError("CUDA error: unspecified launch failure"),
        ValueError("bad frame"),
    ],
)
def test_other_errors_are_not_retried(error: BaseException) -> None:
    rec = Recorder()
    fn = Flaky({1}, lambda: error)
    with pytest.raises(type(error)) as info:
        rec.runner(8).run(frames(8), fn)
    assert info.value is error  # re-raised as is
    assert fn.sizes == [8]
    assert rec.sleeps == [] and rec.released == []


def test_sub_batches_are_views_of_the_input_never_copies() -> None:
    """The only data the function sees are slices of the caller's tensor: no path copies frames elsewhere."""
    fn = Flaky({1, 3})
    src = frames(12)
    Recorder().runner(12).run(src, fn)
    ptr = src.data.untyped_storage().data_ptr()
    for sub in fn.inputs:
        assert sub.device == src.device
        assert sub.data.untyped_storage().data_ptr() == ptr


def test_output_on_another_device_is_refused() -> None:
    """A function that 'falls back' to another device is an error, whatever it computed."""
    src = frames(4)
    with pytest.raises(DeviceError, match="not allowed"):
        Recorder().runner(4).run(src, lambda b: b.with_data(torch.empty(b.data.shape, device="meta")))


def test_device_is_kept_on_a_non_cpu_device() -> None:
    """Input on the meta device (a stand-in for a GPU here): every sub-batch and the output stay on it."""
    x = torch.empty((10, 3, 8, 8), device="meta")
    seen: list[torch.device] = []
    calls = [0]

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        seen.append(t.device)
        if calls[0] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return t * 2

    rec = Recorder()
    out = rec.runner(10).run(x, fn)
    assert out.device == x.device and out.shape == x.shape
    assert set(seen) == {torch.device("meta")}
    assert rec.released == [torch.device("meta")]


def test_tensor_batches_keep_order() -> None:
    x = torch.arange(10).view(10, 1)
    calls = [0]

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] in (1, 2):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return t * 10

    assert torch.equal(Recorder().runner(10).run(x, fn), x * 10)


def test_empty_batch_and_reset() -> None:
    runner = Recorder().runner(8)
    out = runner.run(torch.zeros((0, 3, 4, 4)), lambda t: t + 1)
    assert out.shape == (0, 3, 4, 4)
    runner.run(frames(8), Flaky({1}))
    assert runner.size == 4
    runner.reset()
    assert runner.size == 8


def test_release_empties_the_cache_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[torch.device] = []
    current: list[torch.device] = []

    class FakeDeviceContext:
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def __enter__(self) -> None:
            current.append(self.device)

        def __exit__(self, *exc: object) -> None:
            current.pop()

    monkeypatch.setattr(torch.cuda, "device", FakeDeviceContext)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(current[-1]))
    oom.release_cached(torch.device("cpu"))
    assert emptied == []
    oom.release_cached(torch.device("cuda", 1))
    assert emptied == [torch.device("cuda", 1)]


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"backoff_s": -1.0}])
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        OomPolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        OomRunner(0)
