"""F1 of the default preset on built clips (real footage edited with known boundaries) that the thresholds were
not set on, beside PySceneDetect's detectors on the same clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe.eval.cuts import SCENEDETECT_DETECTORS, build_clip, compare, ours, pyscenedetect, source_path
from vidpipe.stages.cuts.detector import CutDetector, CutOptions
from vidpipe.stages.cuts.run import run_detector

#: the detector's thresholds were set on dataset seed 0, whose clips are built from seeds 0–3
#: (`build_dataset`: clip i of seed s is `build_clip(seed=1000·s + i)`); these clips come from seeds 1 and 2
CLIP_SEEDS = (1000, 2001)
#: one boundary wrong out of 12 gives F1 ≈ 0.96; the whole seed 0–3 datasets (192 boundaries) measured 1.000
#: (`vidpipe eval cuts --seed 0 --seed 1 --seed 2 --seed 3`, docs/benchmarks.md)
F1_BOUND = 0.95
#: the issue's recall bars: every hard cut, ≥ 90 % of dissolves and fades
HARD_RECALL = 1.0
SOFT_RECALL = 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", CLIP_SEEDS)
def test_default_preset_on_clips_it_was_not_tuned_on(tmp_path: Path, seed: int) -> None:
    clip = build_clip(tmp_path / "c.mp4", seed=seed, boundaries=12)
    assert len(clip.events) == 12
    assert {e.kind for e in clip.events} == {"hard", "soft"}
    methods = {"default": ours("default"), **{d: pyscenedetect(d) for d in SCENEDETECT_DETECTORS}}
    rows = {r.name: r.scores for r in compare([clip], methods, tolerance=2)}
    s = rows.pop("default")
    assert s["overall"].f1 >= F1_BOUND, s
    assert s["hard_any"].recall >= HARD_RECALL, s
    assert s["soft_any"].recall >= SOFT_RECALL, s
    assert s["overall"].f1 >= max(r["overall"].f1 for r in rows.values()), rows


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "fast"])
def test_no_boundary_in_a_single_shot_clip(preset: str) -> None:
    """opencv-doc's cup.mp4 (one shot: a hand moves a dark cup before a wall) once gave a false dissolve."""
    run = run_detector(source_path("cup.mp4"), CutDetector(CutOptions(preset=preset)))
    assert run.frames == 217
    assert [e for e in run.events if e.kind in ("hard", "soft")] == []
