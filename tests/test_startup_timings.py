"""Issue 24, items 1 and 3: `vidpipe run --timings` (start-up phases from the process start, in the manifest too)
and the bound: which part of the pipeline limits a run, and the remedy when it is the encoder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from calibration import scaled
from vidpipe.frames import FrameBatch
from vidpipe.media.threads import Consumer, Producer
from vidpipe.runtime.device import ContextOnThread
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.runtime.timings import PHASES, Bound, Timings, process_start
from vidpipe.stages.base import Stage

CLI = Callable[..., subprocess.CompletedProcess[str]]

#: quiet-machine seconds a test worker sleeps per item (the work whose time is measured)
WORK_S = 0.05


def test_process_start_counts_the_time_before_any_code() -> None:
    """A child that sleeps before importing anything of ours sees that sleep in its age."""
    code = (
        "import time; time.sleep(0.5)\n"
        "from vidpipe.runtime.timings import process_start\n"
        "print(time.monotonic() - process_start())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60), check=True)
    age = float(r.stdout)
    assert 0.5 <= age < 0.5 + scaled(5.0)  # 10 ms ticks; the interpreter's own start-up on top
    assert process_start() is not None and process_start() <= time.monotonic()  # type: ignore[operator]


def test_phases_are_in_order_and_add_up() -> None:
    t = Timings(origin=time.monotonic())
    for name in ("probe", "device", "setup"):
        time.sleep(0.01)
        t.mark(name)
    first = t.marks["probe"]
    t.mark("probe")  # a mark is kept at its first call
    assert t.marks["probe"] == first
    rows = t.phases()
    assert [r[0] for r in rows] == ["probe", "device", "setup"]
    assert all(took >= 0.01 for _, _, took, _ in rows)
    assert rows[-1][3] == pytest.approx(sum(took for _, _, took, _ in rows))
    assert [p["phase"] for p in t.to_json()["phases"]] == ["probe", "device", "setup"]


def test_the_slowest_part_bounds_and_only_the_encoder_gets_the_remedy() -> None:
    enc = Bound(frames_out=100, wall_s=10.0, busy_s={"decode": 1.0, "model": 2.0, "encode": 9.0})
    assert enc.part == "encode"
    assert enc.rates["encode"] == pytest.approx(100 / 9.0)
    assert "encoder is the cap" in enc.summary() and "--encode-workers" in enc.remedy()
    assert "4.5× faster" in enc.remedy()  # model 50 fps vs encode 11.1 fps
    model = Bound(frames_out=100, wall_s=10.0, busy_s={"decode": 1.0, "model": 9.5, "encode": 3.0})
    assert model.part == "model" and model.remedy() == ""
    assert model.to_json()["bound_by"] == "model"


def test_worker_threads_count_work_not_waits() -> None:
    """A producer that works WORK_S per item, feeding a consumer that works 4× as long per item through queues
    of one: the producer waits most of the time, and its busy seconds are its work only."""
    items = 6

    def produce(emit: Callable[[int], None]) -> None:
        for i in range(items):
            time.sleep(WORK_S)
            emit(i)

    def consume(got: object) -> int:
        n = 0
        for _ in got:  # type: ignore[attr-defined]
            time.sleep(4 * WORK_S)
            n += 1
        return n

    sink: Consumer[int, int] = Consumer("test-encode", consume, maxsize=1)
    with Producer("test-decode", produce, maxsize=1) as source:
        for item in source:
            sink.put(item)
        assert sink.finish() == items
        assert items * WORK_S * 0.9 <= source.busy_s < items * 2 * WORK_S + scaled(0.5)
    assert items * 4 * WORK_S * 0.9 <= sink.busy_s < items * 4 * WORK_S + scaled(1.0)


class _Slow(Stage):
    """Passes frames on after WORK_S per frame: a model stage slower than decode and encode."""

    name = "slow"

    def process(self, batch: FrameBatch) -> FrameBatch:
        time.sleep(WORK_S * len(batch))
        return batch.with_data(batch.data.clone())


def test_run_records_its_phases_and_a_slow_stage_as_the_bound(make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("timings_src.mkv", size=(64, 48), frames=24, codec="ffv1")
    out = tmp_path / "o.mkv"
    t = Timings()
    res = run(clip, out, [_Slow()], RunOptions(device="cpu", progress="none"), timings=t)
    names = [p["phase"] for p in res.manifest["timings"]["phases"]]
    order = [n for n, _ in PHASES]
    assert names == sorted(names, key=order.index)  # in the order they happen
    for phase in ("probe", "device", "setup", "open", "first_decoded", "first_output", "first_encoded", "end"):
        assert phase in names
    bound = res.manifest["timings"]["bound"]
    assert bound["bound_by"] == "model"
    assert bound["busy_s"]["model"] >= 24 * WORK_S * 0.9
    assert bound["remedy"] == ""
    assert json.loads(out.with_name(out.name + ".json").read_text())["timings"]["bound"]["bound_by"] == "model"
    assert res.manifest["timings"]["steady_fps"] > 0


def test_cli_timings_table_names_the_encoder_as_the_cap(cli: CLI, make: Callable[..., Path], tmp_path: Path) -> None:
    """No stage, a lossless source and x264's slowest preset: the encoder is the cap, and the table says so."""
    clip = make("timings_enc.mkv", size=(640, 360), frames=30, codec="ffv1")
    out = tmp_path / "o.mp4"
    r = cli("run", str(clip), "-o", str(out), "--encoder", "h264", "--speed", "veryslow", "--encode-workers", "0",
            "--device", "cpu", "--progress", "none", "--timings")  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = r.stderr[r.stderr.index("timings, seconds since") :]
    for label in ("probe input", "model load", "first decoded batch", "first output batch encoded", "end"):
        assert label in table
    assert "bound by encode" in table and "the encoder is the cap" in table and "--encode-workers" in table
    manifest = json.loads(out.with_name(out.name + ".json").read_text())
    assert manifest["timings"]["bound"]["bound_by"] == "encode"


# -- the CUDA context made beside model load (runtime.device.ContextOnThread) --


def test_context_is_made_on_a_thread_while_the_body_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA's context creation standing in as a sleep: the body runs while it is made (the overlap), the
    `ready` callback comes from the thread, and the thread is joined at the end of the body."""
    made: list[str] = []

    def slow_context(device: object) -> None:
        time.sleep(4 * WORK_S)
        made.append(threading.current_thread().name)

    monkeypatch.setattr(torch.cuda, "synchronize", slow_context)
    ready: list[float] = []
    with ContextOnThread(torch.device("cuda", 0), ready=lambda: ready.append(time.monotonic())):
        assert made == []  # the body did not wait for the context
        body_done = time.monotonic()
    assert made == ["cuda-context"] and ready and ready[0] >= body_done


def test_context_errors_reach_the_caller_and_cpu_makes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: object) -> None:
        raise RuntimeError("CUDA error: no device")

    monkeypatch.setattr(torch.cuda, "synchronize", broken)
    with pytest.raises(RuntimeError, match="no device"), ContextOnThread(torch.device("cuda", 0)):
        pass
    with pytest.raises(ValueError, match="body"), ContextOnThread(torch.device("cuda", 0)):
        raise ValueError("body")  # the body's own error wins
    with ContextOnThread(torch.device("cpu")) as ctx:
        assert ctx._thread is None


@pytest.mark.gpu
def test_cuda_run_marks_the_context_beside_model_load(make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("timings_src.mkv", size=(64, 48), frames=24, codec="ffv1")
    res = run(clip, tmp_path / "o.mkv", [_Slow()], RunOptions(device="cuda", progress="none"))
    names = [p["phase"] for p in res.manifest["timings"]["phases"]]
    assert "context" in names and "setup" in names
    assert res.manifest["timings"]["bound"]["bound_by"] in ("model", "encode", "decode")
