"""Parts of one mark that detection found apart (issue 17, `--dewatermark auto`).

A word's letters over a busy picture: the attenuated held edges of some letters pass and of others not, and
what passes falls into parts a few px apart (transnet's α 0.6 text 8 px tall: its "v" and its "pip" came as two
marks, each with a presence read over its own edges and so its own span). Parts whose supports come within
`near` px of each other are one candidate: one support, one template and one presence, so one span.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .fill import dilate

if TYPE_CHECKING:
    from .detect import _Candidate


def join_near(found: list[_Candidate], near: int) -> list[_Candidate]:
    """`found` with the candidates whose supports come within `near` px of each other joined (their supports,
    edges and templates added; a strength where both have one)."""
    if near <= 0:
        return found
    out: list[_Candidate] = []
    for c in found:
        grown = dilate(c.support[None, None], near)[0, 0]
        for i, o in enumerate(out):
            if bool((grown & o.support).any()) and not bool((c.support & o.support).any()):
                strength = None if o.strength is None or c.strength is None else o.strength + c.strength
                out[i] = replace(
                    o,
                    support=o.support | c.support,
                    edges=o.edges | c.edges,
                    template=o.template + c.template,
                    windows=max(o.windows, c.windows),
                    strength=strength,
                    weak=o.weak and c.weak,
                    attenuated=o.attenuated or c.attenuated,
                    confirmed=o.confirmed or c.confirmed,
                    drift=o.drift and c.drift,
                )
                break
        else:
            out.append(c)
    return out
