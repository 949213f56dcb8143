"""Fixtures of the cut-detection tests: the generated clip of `cut_clips`, written once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cut_clips import write_two_shots


@pytest.fixture(scope="session")
def two_shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """two_shots(pts_copies=False) -> path of the clip, written once per session."""
    made: dict[bool, Path] = {}

    def make(pts_copies: bool = False) -> Path:
        if pts_copies not in made:
            name = "two_shots_pts_copies.mp4" if pts_copies else "two_shots.mp4"
            made[pts_copies] = write_two_shots(tmp_path_factory.mktemp("cuts") / name, pts_copies=pts_copies)
        return made[pts_copies]

    return make
