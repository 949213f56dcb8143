"""What the CLI's modules share: the stderr console and logging (made on first use: importing rich costs `vidpipe
probe` ~0.1 s it never uses) and the check of a choice among names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console


class _Stderr:
    """rich's console on stderr, made on first use: importing rich costs `vidpipe probe` ~0.1 s it never uses."""

    _console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.get().print(*args, **kwargs)

    def reset(self) -> None:
        """Made again on next use, for the `sys.stderr` of then (`vidpipe serve`: each request's client)."""
        self._console = None


err = _Stderr()


def setup_logging(quiet: bool, verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(console=err.get(), show_time=False, show_path=False, markup=False)
    root = logging.getLogger("vidpipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def choice(value: str, valid: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `valid`, else a usage error naming them."""
    if value not in valid:
        raise UsageError(f"invalid {what} {value!r}; valid: {', '.join(valid)}")
    return value
