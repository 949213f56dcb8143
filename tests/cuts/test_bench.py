"""`vidpipe bench cuts` plumbing (no timings asserted): the detector-only PySceneDetect path numbers frames as
its own end-to-end run does, and cost rows are valid `schedule.costs` rows keyed as the scheduler looks them up,
written as the seed's tables (one file per detector set) and committed in `resource_costs/`."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidpipe.bench.cuts import (
    COST_BUCKETS,
    COST_DETECTORS,
    bgr_frames,
    cost_rows,
    cost_table_name,
    decode_batches,
    scale_clip,
    scaled_batches,
    scenedetect_detector_only,
    write_costs,
)
from vidpipe.eval.cuts import pyscenedetect
from vidpipe.schedule.costs import CostRow, CostTable, key_for
from vidpipe.stages.base import StreamSpec
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.presets import PRESET_NAMES

#: first frames of the 2nd and 3rd shot of the clip below
CUTS = [20, 45]
#: the seed's three tables (S1 §2: hard, soft, motion cuts) and the CLI's default hard+soft
SEED_TABLES = {
    ("hard",): "cut_detection_costs_v1.json",
    ("soft",): "cut_detection_soft_costs_v1.json",
    ("motion",): "cut_detection_motion_costs_v1.json",
    ("hard", "soft"): "cut_detection_hard_soft_costs_v1.json",
}
#: the committed tables (repository root)
COMMITTED = Path(__file__).parents[2] / "resource_costs"


def _shots(path: Path) -> Path:
    """Three flat-coloured shots with a little noise, cut at CUTS, H.264 at 25 fps."""
    rng = np.random.default_rng(0)
    colours = [(220, 30, 30), (20, 90, 20), (200, 200, 255)]  # hue, saturation and value all jump
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 320, 180, "yuv420p"
        for i in range(70):
            shot = sum(i >= b for b in CUTS)
            base = np.full((180, 320, 3), colours[shot], np.int16)
            img = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(st.encode(frame))
        c.mux(st.encode(None))
    return path


def test_scenedetect_detector_only_numbers_frames_like_its_own_run(tmp_path: Path) -> None:
    pytest.importorskip("scenedetect")
    clip = _shots(tmp_path / "shots.mp4")
    e2e = [e.frame for e in pyscenedetect("content", backend="pyav", threading_mode="AUTO")(clip)]
    batches = decode_batches(clip)
    assert sum(len(b) for b in batches) == 70
    only, seconds = scenedetect_detector_only(bgr_frames(batches), Fraction(25), "content")
    assert e2e == CUTS
    assert [e.frame for e in only] == CUTS
    assert seconds > 0


def test_scale_clip_keeps_every_frame(tmp_path: Path) -> None:
    clip = _shots(tmp_path / "shots.mp4")
    scale_clip(clip, tmp_path / "big.mp4", (640, 360))
    batches = decode_batches(tmp_path / "big.mp4")
    assert sum(len(b) for b in batches) == 70 and (batches[0].width, batches[0].height) == (640, 360)
    assert [e.frame for e in pyscenedetect("content")(tmp_path / "big.mp4")] == CUTS


def test_decode_batches_limit_cuts_the_last_batch(tmp_path: Path) -> None:
    clip = _shots(tmp_path / "shots.mp4")
    batches = decode_batches(clip, batch=16, limit=21)
    assert [len(b) for b in batches] == [16, 5]
    assert batches[-1].index == list(range(16, 21))


def test_cost_rows_are_scheduler_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (12, 36, 48, 3), dtype=np.uint8)
    tables = cost_rows(frames, Fraction(25), buckets=(360,), presets=("fast",), detectors=(("hard",), ("soft",)))
    assert list(tables) == [("hard",), ("soft",)]
    rows = [r for t in tables.values() for r in t]
    assert len(rows) == 4  # 2 aspects × 2 detector sets
    assert {(r.input_bucket.width, r.input_bucket.height) for r in rows} == {(640, 360), (360, 640)}
    assert all(r.unit == "frame_pair" and r.latency_ms_per_unit > 0 and r.provenance.commit for r in rows)
    # the detector's window holds at least one thumbnail per analysed frame
    assert all(r.cpu_rss_peak_mb is not None and r.cpu_rss_peak_mb * 2**20 > 12 * 96 * 54 * 3 * 4 for r in rows)
    assert len({r.model_signature for r in rows}) == 2  # detector sets differ, aspects do not
    assert all(len({r.model_signature for r in t}) == 1 for t in tables.values())
    paths = write_costs(tmp_path, tables, command="vidpipe bench cuts --costs .", source="noise")
    assert [p.name for p in paths] == [SEED_TABLES[("hard",)], SEED_TABLES[("soft",)]]
    for kinds, path in zip(tables, paths, strict=True):
        table = CostTable.load(path)
        assert table.rows == tuple(r for r in tables[kinds] if r.input_bucket.width > r.input_bucket.height)
        saved = json.loads(path.read_text())
        assert [CostRow.from_json(r) for r in saved["rows_9x16"]] == [r for r in tables[kinds] if r not in table.rows]
        assert saved["detectors"] == list(kinds)
        assert saved["command"].startswith("vidpipe bench cuts") and saved["machine"]["cores"] >= 1
        assert saved["versions"]["opencv"] and saved["input"] == "noise"
    table = CostTable.load(paths[0])

    # the row a scheduler finds for a set-up detector on 640×360 input is the one measured for it
    det = CutDetector(CutOptions(detectors=("hard",), preset="fast"))
    spec = StreamSpec(width=640, height=360, time_base=Fraction(1, 25))
    det.setup(torch.device("cpu"), spec)
    key = key_for(det, spec, torch.device("cpu"), "fp32", "inprocess")
    assert [r for r in table.rows if r.key == key] == [rows[0]]


def test_scaled_batches_look_like_reader_batches() -> None:
    frames = np.zeros((20, 30, 40, 3), np.uint8)
    batches = scaled_batches(frames, (64, 36), Fraction(30000, 1001))
    assert [len(b) for b in batches] == [16, 4]
    b = batches[1]
    assert (b.width, b.height) == (64, 36) and b.index == [16, 17, 18, 19]
    assert b.data.permute(0, 2, 3, 1).is_contiguous()  # NHWC storage, as the reader hands it over


def test_cost_table_names_are_the_seeds() -> None:
    assert {k: cost_table_name(k) for k in COST_DETECTORS} == SEED_TABLES


def test_committed_cost_tables() -> None:
    """`resource_costs/` holds one table per detector set, each a bucket × aspect (16:9 in `rows`, 9:16 beside
    them) × preset grid that `CostTable.load` reads, with provenance and the command that rebuilds it."""
    assert sorted(p.name for p in COMMITTED.glob("cut_detection_*.json")) == sorted(SEED_TABLES.values())
    for kinds, name in SEED_TABLES.items():
        path = COMMITTED / name
        saved = json.loads(path.read_text())
        landscape = CostTable.load(path).rows
        portrait = [CostRow.from_json(r) for r in saved["rows_9x16"]]
        for aspect_rows, wide in ((landscape, True), (portrait, False)):
            grid = sorted((r.input_bucket.short_side, r.notes.split(", preset ")[1].split(",")[0]) for r in aspect_rows)
            assert grid == sorted((b, p) for b in COST_BUCKETS for p in PRESET_NAMES), name
            assert all((r.input_bucket.width > r.input_bucket.height) == wide for r in aspect_rows), name
        for r in (*landscape, *portrait):
            assert r.notes.startswith(f"detectors {'+'.join(kinds)},"), name
            assert r.unit == "frame_pair" and r.latency_ms_per_unit > 0 and r.cpu_rss_peak_mb is not None
            assert r.provenance.commit and r.provenance.commit != "unknown" and r.provenance.date
        assert len({r.key for r in landscape}) == len(landscape), name  # no two rows share a scheduler key
        assert saved["detectors"] == list(kinds)
        assert saved["machine"]["cpu"] and saved["machine"]["cores"] >= 1
        assert {"torch", "opencv", "numpy", "av"} <= set(saved["versions"])
        assert saved["command"].startswith("vidpipe bench cuts") and "--costs resource_costs" in saved["command"]
