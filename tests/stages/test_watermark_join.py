"""`--dewatermark auto`'s parts of one mark found apart (issue 17, `join.join_near`): a word's letters that came
as two candidates, each with its own presence and so its own span, are one."""

from __future__ import annotations

import torch

from vidpipe.stages.watermark.detect import _Candidate
from vidpipe.stages.watermark.join import join_near


def _part(x0: int, x1: int, strength: bool = True) -> _Candidate:
    support = torch.zeros(20, 40, dtype=torch.bool)
    support[8:14, x0:x1] = True
    template = torch.zeros(6, 20, 40)
    template[0, 8:14, x0] = 1.0
    return _Candidate(support, support.clone(), template, 1, support.float() if strength else None, attenuated=True)


def test_parts_a_few_px_apart_are_one_candidate_and_far_ones_are_not() -> None:
    a, b, far = _part(4, 10), _part(12, 20), _part(32, 38)
    joined = join_near([a, b, far], 3)
    assert len(joined) == 2
    one = joined[0]
    assert torch.equal(one.support, a.support | b.support)
    assert torch.equal(one.template, a.template + b.template)
    assert one.strength is not None and torch.equal(one.strength, a.strength + b.strength)
    assert torch.equal(joined[1].support, far.support)


def test_a_part_without_a_strength_gives_none_and_overlapping_parts_are_left_alone() -> None:
    joined = join_near([_part(4, 10), _part(12, 20, strength=False)], 3)
    assert len(joined) == 1 and joined[0].strength is None
    assert len(join_near([_part(4, 12), _part(10, 20)], 3)) == 2  # overlapping: the same mark's, merged elsewhere
    assert len(join_near([_part(4, 10), _part(12, 20)], 0)) == 2
