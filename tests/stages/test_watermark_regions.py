"""regions.label and regions.running_median: the same answers as the one-pixel-a-pass labelling and per-window
torch.median they replace (issue 17's speed gate)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidpipe.stages.watermark.detect import _ring
from vidpipe.stages.watermark.fill import dilate
from vidpipe.stages.watermark.regions import components, components_many, hosts, label, mask_box, running_median


def _propagated(mask: torch.Tensor) -> torch.Tensor:
    """The labels of the loop `label` replaced: the largest label among the neighbours, one pixel a pass."""
    h, w = mask.shape
    labels = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w) * mask
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * mask
        if torch.equal(grown, labels):
            return labels[0, 0]
        labels = grown


@pytest.mark.parametrize("seed", range(6))
def test_label_matches_propagation(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(1, 70, (2,), generator=g))
    mask = torch.rand(h, w, generator=g) < 0.2 + 0.1 * seed
    labels, ids = label(mask)
    assert torch.equal(labels, _propagated(mask))
    assert torch.equal(ids, torch.unique(labels[labels > 0]))


def test_label_follows_a_long_snake() -> None:
    mask = torch.zeros(41, 60, dtype=torch.bool)
    mask[::4] = True  # rows joined at alternating ends: one part 600 px long
    mask[1::8, -1] = mask[2::8, -1] = mask[3::8, -1] = True
    mask[5::8, 0] = mask[6::8, 0] = mask[7::8, 0] = True
    labels, ids = label(mask)
    assert ids.tolist() == [float(41 * 60)]  # the last pixel's index + 1
    assert torch.equal(labels > 0, mask)


def test_components_are_masks_in_order_of_their_last_pixel() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, 0:2] = True  # ends at index 1
    mask[4:6, 0:2] = True  # ends at index 41
    mask[1, 7] = mask[2, 6] = True  # diagonal neighbours: one part, ends at index 22
    parts = components(mask)
    assert [int(p.sum()) for p in parts] == [2, 2, 4]
    assert bool(parts[1][1, 7]) and bool(parts[1][2, 6])
    assert components(torch.zeros(5, 5, dtype=torch.bool)) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_of_many_masks_are_each_masks_own(seed: int) -> None:
    """One search over masks laid side by side: each mask's parts, in `components`' order, none crossing into the
    next mask (parts touching the right edge of one and the left edge of the next stay apart); empty masks too."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(5, 23, 31, generator=g) > 0.55
    masks[:, :, 0] = masks[:, :, -1] = True  # a column at each side: adjacent masks' parts would join if they could
    masks[2] = False
    got = components_many(masks)
    assert len(got) == 5 and got[2] == []
    for m, parts in zip(masks, got, strict=True):
        want = components(m)
        assert len(parts) == len(want) > 0 or not m.any()
        assert all(torch.equal(a, b) for a, b in zip(parts, want, strict=True))
    assert components_many(masks[:0]) == []


def test_ring_on_a_crop_equals_the_full_dilation() -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        part = torch.zeros(30, 40, dtype=torch.bool)
        y, x = (int(v) for v in torch.randint(0, 28, (2,), generator=g))
        part[y : y + 3, x : x + 5] = True  # near the edges too
        for width in (1, 3, 4):
            full = dilate(part[None, None], width)[0, 0] & ~part
            assert torch.equal(_ring(part, width), full)


def test_mask_box() -> None:
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2, 3] = mask[5, 9] = True
    assert mask_box(mask, 0) == (2, 6, 3, 10)
    assert mask_box(mask, 3) == (0, 9, 0, 12)
    with pytest.raises(ValueError):
        mask_box(torch.zeros(3, 3, dtype=torch.bool), 1)


@pytest.mark.parametrize("k", [1, 2, 5, 6, 7, 16])
def test_running_median_equals_torch_median(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = (torch.rand(k + 9, 3, 5, 4, generator=g) * 6).floor() / 6  # ties
    expected = torch.stack([x[i : i + k].median(0).values for i in range(len(x) - k + 1)])
    assert torch.equal(running_median(x, k), expected)
    with pytest.raises(ValueError):
        running_median(x[: k - 1], k)


@pytest.mark.parametrize("seed", range(5))
def test_hosts_match_one_overlap_per_pair(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(8, 60, (2,), generator=g))
    mask = torch.rand(h, w, generator=g) < 0.3
    host_mask = (torch.rand(h, w, generator=g) < 0.35) if seed else torch.zeros(h, w, dtype=torch.bool)
    parts, sizes, host_of, host_parts = hosts(mask, label(host_mask))
    assert [p.tolist() for p in parts] == [p.tolist() for p in components(mask)]
    assert [p.tolist() for p in host_parts] == [p.tolist() for p in components(host_mask)]
    assert sizes == [int(p.sum()) for p in parts]
    # what detection computed per part: the host overlapping it most, the larger of those that tie
    stacked = torch.stack(host_parts) if host_parts else None
    host_sizes = stacked.sum((1, 2)).tolist() if stacked is not None else []
    want = [
        max(zip((stacked & p).sum((1, 2)).tolist(), host_sizes, strict=True))[1] if stacked is not None else 0
        for p in parts
    ]
    assert host_of == want
    assert len(parts) > 3 and (not seed or len(set(want)) > 1)
