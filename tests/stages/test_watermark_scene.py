"""`--dewatermark auto` finds no mark in clean footage (issue 17): an overlay is in front of everything, so a
candidate that something passing hides for a few frames, or a still edge whose strength wanders over a drifting
picture, is the scene's (`detect._in_the_scene`); and a mark at the place the scene was shown to be in another
window is that feature of the scene too (`whole.in_scene`)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from test_dewatermark import iou, logo, marked, pan
from test_matte import batch_of, real_frames

from vidpipe.errors import StorageError
from vidpipe.frames import FrameBatch
from vidpipe.stages.watermark import whole
from vidpipe.stages.watermark.detect import Detection, DetectOptions, _Candidate, _in_the_scene, detect_marks
from vidpipe.stages.watermark.marks import Mark
from vidpipe.stages.watermark.whole import in_scene

FRAMES = 32  # `pan` gives at most 37


def _walker(frames: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """A dark block 50 × 28 px crossing the logo's box (x 100–144, y 88–110) from left to right over frames
    first..last: it covers the whole logo in the middle frames."""
    out = frames.clone()
    for t in range(first, last + 1):
        x = round(60 + 80 * (t - first) / max(1, last - first))
        out[t, :, 84:112, x : x + 50] = 0.1
    return out


def test_a_still_part_that_a_passer_by_hides_is_the_scene_and_an_overlay_it_passes_under_is_a_mark() -> None:
    """Over a pan, an opaque logo that a dark block passes under (frames 12–16) is found over every frame; the
    same logo with the block passing in front of it (a still feature of the scene, as a stain on a pavement
    that a walker steps on) is found nowhere, and the window reports its place as the scene's."""
    bg, alpha = pan(FRAMES), logo(1.0)
    front = detect_marks(marked(_walker(bg, 12, 16), alpha), list(range(FRAMES)))
    assert [(m.first, m.last) for m in front.marks] == [(0, FRAMES - 1)]
    assert front.scene == []
    behind = detect_marks(_walker(marked(bg, alpha), 12, 16), list(range(FRAMES)))
    assert behind.marks == []
    assert len(behind.scene) == 1 and bool(behind.scene[0][95, 120])


def _candidate(*, plain: bool = False, drift: bool = False) -> _Candidate:
    support = torch.zeros(8, 8, dtype=torch.bool)
    strength = None if plain else torch.zeros(8, 8)
    return _Candidate(support, support, torch.zeros(6, 8, 8), 1, strength, drift=drift)


@pytest.mark.parametrize(
    ("presence", "scene"),
    [
        ([1.0] * 20 + [0.6, 0.1, 0.2, 0.7] + [1.0] * 24, True),  # hidden 4 frames: a passer-by
        ([1.0] * 20 + [0.3] + [1.0] * 27, False),  # one frame: the picture matched the edges a moment
        ([1.0] * 16 + [0.0] * 16 + [1.0] * 16, False),  # away 16 frames: a mark that left and came back
        ([0.0] * 8 + [0.5, 0.9] + [1.0] * 38, False),  # came in (a fade or a step), never hidden
        ([1.0] * 40 + [0.7, 0.3, 0.1] + [0.0] * 5, False),  # went
    ],
)
def test_a_part_of_dekels_support_hidden_for_a_few_frames_is_the_scene(presence: list[float], scene: bool) -> None:
    opts = DetectOptions()
    assert (_in_the_scene(_candidate(plain=True), presence, opts) is not None) is scene
    # marks found otherwise (steps, attenuated parts) are not judged by it
    assert _in_the_scene(_candidate(), presence, opts) is None


def test_a_drift_found_still_edge_whose_strength_wanders_is_the_scene() -> None:
    opts = DetectOptions()
    steady = [0.0] + [0.99, 1.0, 1.01] * 15 + [1.0, 1.0]  # Megamind's still logo (a black first frame)
    wandering = [0.0, 0.6, 0.9] + [1.1, 1.3, 1.5, 1.3, 1.1, 0.9] * 7 + [0.9, 0.88, 0.91]  # its dress edge
    assert _in_the_scene(_candidate(drift=True), steady, opts) is None
    assert _in_the_scene(_candidate(drift=True), wandering, opts) is not None
    assert _in_the_scene(_candidate(), wandering, opts) is None


def test_a_mark_at_the_place_another_window_showed_to_be_the_scene_is_dropped() -> None:
    """`whole.in_scene`: vtest's stain was hidden by walkers in windows 10 and 13 and found as a mark in window 16,
    where nobody stepped on it; the same place (IoU ≥ 0.5) is the scene's, a mark elsewhere is kept."""
    alpha = np.zeros((60, 80), np.float32)
    alpha[20:40, 30:50] = 1.0
    mark = Mark(100, 120, alpha)
    stain = np.zeros((60, 80), bool)
    stain[22:40, 30:52] = True
    elsewhere = np.zeros((60, 80), bool)
    elsewhere[0:20, 0:20] = True
    assert in_scene(mark, [elsewhere, stain])
    assert not in_scene(mark, [elsewhere])
    assert not in_scene(mark, [])


def test_no_mark_on_vtest_where_walkers_step_on_a_stain() -> None:
    """opencv-doc's vtest.avi (a fixed camera over a pavement, no mark) at half size, frames 480–527: a dark stain
    at about (325, 161) holds still while walkers' feet move beside it, and so passed for a mark until a walker
    stepping on it (frames 508–510) was taken as what it is: something in front of the scene (≈ 5 s)."""
    try:
        x = real_frames("vtest.avi", 48, start=480, size=(384, 288)).float() / 255
    except StorageError as e:
        pytest.skip(f"opencv-doc not available: {e}")
    det = detect_marks(x, list(range(480, 528)))
    assert det.marks == []
    assert len(det.scene) == 1


def _window_of(value: int, start: int, n: int = 4) -> FrameBatch:
    """`n` frames all of grey `value`, stream frames start…start + n − 1."""
    data = torch.full((n, 3, 6, 8), value, dtype=torch.uint8)
    return FrameBatch(data=data, pts=list(range(start, start + n)), time_base=Fraction(1, 25),
                      index=list(range(start, start + n)))  # fmt: skip


def _place(y: int) -> np.ndarray:
    out = np.zeros((6, 8), bool)
    out[y : y + 2, 2:6] = True
    return out


@pytest.mark.parametrize(
    ("windows", "preview"),
    [
        # window 0's mark is at the place window 2 shows to be the scene's: window 1's frame is the preview
        ([([1], []), ([4], []), ([], [1])], 1),
        # every mark is the scene's: no preview (the caller shows the input's first frame)
        ([([1], []), ([], [1])], None),
        # a mark kept in the first window with one
        ([([], []), ([1], []), ([3], [])], 1),
        # more windows with a mark than previews held: those already shown the scene's make room
        ([([1], []), ([], [1]), *[([1], [])] * whole.PREVIEWS, ([4], [])], 2 + whole.PREVIEWS),
    ],
)
@pytest.mark.parametrize("in_flight", [1, 3])
def test_the_preview_is_a_frame_of_the_first_window_with_a_kept_mark(
    monkeypatch: pytest.MonkeyPatch, windows: list[tuple[list[int], list[int]]], preview: int | None, in_flight: int
) -> None:
    """`whole.detect_clip` shows the first frame of the first window whose marks are not all dropped as the
    scene's (window i's frames are grey i); with none kept, no preview. With windows detected concurrently (as on
    a GPU) they are folded in input order: the same preview."""

    def fake(frames: torch.Tensor, indices: list[int], opts: object = None) -> Detection:
        marks, scene = windows[indices[0] // 4]
        alpha = [_place(y).astype(np.float32) for y in marks]
        return Detection(
            [Mark(indices[0], indices[-1], a) for a in alpha], scene=[torch.from_numpy(_place(y)) for y in scene]
        )

    monkeypatch.setattr(whole, "detect_marks", fake)
    batches = [_window_of(i, 4 * i) for i in range(len(windows))]
    out = whole.detect_clip(batches, torch.device("cpu"), window=4, in_flight=in_flight)
    assert out.windows == len(windows)
    assert out.first_frame is not None and int(out.first_frame[0, 0, 0]) == 0
    if preview is None:
        assert out.preview is None
    else:
        assert out.preview is not None and out.preview.shape == (6, 8, 3) and int(out.preview[0, 0, 0]) == preview


def _batches(frames: torch.Tensor, n: int = 8) -> list[FrameBatch]:
    u8 = (frames * 255).round().to(torch.uint8)
    return [batch_of(u8[i : i + n], i) for i in range(0, len(u8), n)]


def _covered(marks: list[Mark], count: int) -> list[int]:
    return [i for i in range(count) if any(m.covers(i) for m in marks)]


@pytest.mark.parametrize(
    ("parts", "covered"),
    [
        # a logo over a pan, a still shot (no evidence either way), a pan: found in the pans, kept over the still
        (["pan", "still", "pan"], range(72)),
        # the still shot first: the mark found in the next window is looked for in it too
        (["still", "pan"], range(48)),
        # a logo over a pan, then a still shot without it: not carried there
        (["pan", "still-bare"], range(24)),
    ],
)
def test_a_mark_found_in_some_windows_covers_the_still_shots_between_them(parts: list[str], covered: range) -> None:
    """Issue 17 (the bench clip's still shots): `detect_clip` looks for a mark found in one window in the windows
    that found nothing at its place, and covers their frames that show it, and only those."""
    a = logo(0.6)
    moving = pan(24)
    still = moving[12:13].expand(24, -1, -1, -1)
    chunks = {"pan": marked(moving, a), "still": marked(still, a), "still-bare": ((still * 255).round() / 255)}
    frames = torch.cat([chunks[p] for p in parts])
    out = whole.detect_clip(_batches(frames), torch.device("cpu"), window=24)
    assert out.windows == len(parts)
    assert _covered(out.marks, len(frames)) == list(covered)
    assert all(iou(m.alpha > 0.1, a > 0) >= 0.5 for m in out.marks)


def test_a_part_of_a_larger_mark_is_not_carried_across_windows() -> None:
    """The detector also finds a logo's parts on their own in some windows; carried into the windows that did
    not find them they would be removed again over the whole logo's removal. Only the whole is carried (the
    900-frame bench clip: 22 marks, parts and 2–4-frame runs among them, before this)."""
    from vidpipe.stages.watermark.detect import gradients

    small = torch.full((10, 3, 20, 20), 0.2)
    small[:, :, 5:15, 4:16] = 0.9  # a still logo
    whole_alpha = np.zeros((20, 20), np.float32)
    whole_alpha[5:15, 4:16] = 1.0
    part_alpha = np.zeros((20, 20), np.float32)
    part_alpha[5:15, 4:9] = 1.0
    g = gradients(small[:1])[0]
    found = Detection(
        [Mark(0, 9, whole_alpha), Mark(0, 9, part_alpha)],
        templates=[g, g * torch.from_numpy(part_alpha > 0)],
        small=small,
    )
    places = whole._Places(torch.device("cpu"))
    assert places.fold(list(range(10)), found) == []
    carried = places.fold(list(range(10, 20)), Detection([], small=small))
    assert [(m.first, m.last) for m in carried] == [(10, 19)]
    assert np.array_equal(carried[0].alpha, whole_alpha)
