"""`vidpipe bench scaling` on CPU workers at small sizes: both cases, 1 worker then 2, the outputs compared frame by
frame, and the table it prints (the test switch maps `--gpus` onto CPU workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe.bench.scaling import HEADER, run_scaling, same_frames
from vidpipe.workers import WorkerSlot

GOP = {"g": "25", "keyint_min": "25", "sc_threshold": "0"}


def test_same_frames_tells_equal_from_different(make) -> None:
    a = make("s-a.mp4", size=(32, 24), frames=6)
    b = make("s-b.mp4", size=(32, 24), frames=6, source="mandelbrot")
    c = make("s-c.mp4", size=(32, 24), frames=5)
    assert same_frames(a, a)
    assert not same_frames(a, b)  # other pixels
    assert not same_frames(a, c) and not same_frames(c, a)  # one frame fewer, either side


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scaling_rows_on_two_cpu_workers(tmp_path: Path) -> None:
    slots = [WorkerSlot(i, "cpu", None, 2) for i in range(2)]
    rows = run_scaling(
        slots,
        {"resize": "16x12"},
        long_size=(32, 24),
        long_seconds=3.0,
        short_count=3,
        short_frames=8,
        short_sizes=[(32, 24), (48, 32)],
        encoder="ffv1",
        work_dir=tmp_path,
    )
    assert [(r.case, r.workers) for r in rows] == [("long", 1), ("long", 2), ("short", 1), ("short", 2)]
    long1, long2, short1, short2 = rows
    assert long1.frames_out == long2.frames_out == 75
    assert short1.frames_out == short2.frames_out == 3 * 8
    assert long2.identical and short2.identical
    assert long2.speedup == pytest.approx(long1.wall_s / long2.wall_s)
    assert long2.join_s > 0 and long1.join_s == 0  # only the split run joins
    assert long1.decode_s is not None and long1.decode_s > 0 and short1.decode_s is None
    assert long2.bound and long2.row().count("|") == HEADER.splitlines()[0].count("|")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_scaling_cli_prints_the_table(cli, tmp_path: Path) -> None:
    r = cli(
        "bench", "scaling", "--resize", "16x12", "--case", "short", "--short-count", "2", "--short-frames", "4",
        "--short-size", "32x24", "--encoder", "ffv1", "--work-dir", str(tmp_path), "--gpus", "cpu:2",
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = [line for line in r.stdout.splitlines() if line.startswith("| short")]
    assert len(table) == 2 and "| yes |" in table[1]
