"""`watermark.through`: every part's ring statistics at once equal the per-part ones (`detect._ring`,
`detect._lets_through`), and the parts it keeps and their values are the per-part loop's, bit for bit."""

from __future__ import annotations

import pytest
import torch

from vidpipe.stages.watermark import through
from vidpipe.stages.watermark.detect import DetectOptions, _lets_through, _ring
from vidpipe.stages.watermark.regions import components, label


def _scene(seed: int, h: int = 60, w: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    """Many small parts over a changing picture; the change under some parts is held back (a mark's)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.nn.functional.max_pool2d((torch.rand(1, 1, h, w, generator=g) < 0.02).float(), 3, 1, 1)[0, 0] > 0
    change = torch.rand(h, w, generator=g) * 0.05
    for i, p in enumerate(components(mask)):
        if i % 3 == 0:
            change = torch.where(p, change * (0.1 + 0.3 * torch.rand(1, generator=g)), change)
    if seed % 2:
        change[:, : w // 3] = 0.001  # a still third: rings that hardly move
    return mask, change


@pytest.mark.parametrize("seed", range(4))
def test_ring_stats_equal_each_parts_own(seed: int) -> None:
    mask, change = _scene(seed)
    labels, ids = label(mask)
    parts = components(mask)
    mean, median, own, n = through.ring_stats(labels, ids, change, 4)
    assert len(parts) == len(ids) > 20
    for k, p in enumerate(parts):
        ring = change[_ring(p, 4)]
        assert int(n[k]) == ring.numel()
        assert float(median[k]) == float(ring.median())  # the same pixel's value
        assert float(mean[k]) == pytest.approx(float(ring.mean()), rel=1e-6)
        assert float(own[k]) == pytest.approx(float(change[p].mean()), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_lets_through_all_equals_the_loop(monkeypatch, seed: int) -> None:
    monkeypatch.setattr(through, "CPU_FEW", through.FEW)  # the batched pass, as on a GPU
    mask, change = _scene(seed)
    opts = DetectOptions()
    parts = components(mask)
    calls: list[int] = []

    def exact(p, c, o):
        calls.append(1)
        return _lets_through(p, c, o)

    got = through.lets_through_all(*label(mask), parts, change, opts, exact)
    want = [_lets_through(p, change, opts) for p in parts]
    kept = [(k, v) for k, v in enumerate(want) if v <= opts.through]
    assert [(k, v) for k, v in enumerate(got) if v <= opts.through] == kept
    assert 0 < len(kept) < len(parts) and len(calls) < len(parts) / 2  # most ruled out without the loop
