"""What a run executed inside `vidpipe serve` gets from the server: how `vidpipe run` (cli/app.py) tells a served run
from one of its own process. Standard library only (the CLI reads it before torch is imported)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime.recipe import PipelineRecipe
    from ..runtime.timings import Timings
    from ..stages.base import Stage


@dataclass(slots=True, kw_only=True)
class Served:
    """One request on the server's run thread."""

    #: monotonic time the server received the request: the zero of the run's timings
    received: float
    #: the server's device, for a run that asks for `--device auto`
    device: str
    #: the stage chain of a recipe on a device, kept loaded between requests (`WarmChains`)
    stages: Callable[[PipelineRecipe], list[Stage]]
    #: the run's timings, left here under `--timings` for the exit message (the client prints the table)
    timings: Timings | None = None


_CURRENT: ContextVar[Served | None] = ContextVar("vidpipe_served", default=None)


def served() -> Served | None:
    """The request this thread runs for the server, or None in a run of its own process."""
    return _CURRENT.get()


@contextmanager
def serving(request: Served) -> Iterator[Served]:
    token = _CURRENT.set(request)
    try:
        yield request
    finally:
        _CURRENT.reset(token)
