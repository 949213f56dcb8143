"""`vidpipe serve`: the resident server `vidpipe run` hands its runs to (serve/server.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_cmd(
    socket: Annotated[
        Path | None,
        typer.Option(help="the Unix socket (default: $XDG_RUNTIME_DIR/vidpipe/serve.sock, else ~/.cache/vidpipe/)"),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto | cpu | cuda | cuda:N: the device of runs that ask for auto")
    ] = "auto",
    idle_exit: Annotated[
        float, typer.Option(min=0, help="exit after this many seconds without a request (0: never)")
    ] = 0.0,
    preload: Annotated[
        list[str] | None,
        typer.Option(
            help="load these models at start: options of `vidpipe run` ('--upscale realesr-animevideov3-x2 "
            "--tile 0') or KIND=MODEL (upscale=…, interpolate=…); repeatable"
        ),
    ] = None,
    keep: Annotated[int, typer.Option(min=1, help="stage chains kept loaded (least recently used dropped)")] = 2,
) -> None:
    """A resident process with torch imported, the device's context made and models kept loaded: `vidpipe run`
    hands it its runs (--server auto, the default, where one answers on the default socket). One run at a time,
    others queue; SIGTERM/SIGINT cancel the run in progress (no partial output) and remove the socket."""
    from ..serve.protocol import default_socket
    from ..serve.server import Server

    server = Server(socket or default_socket(), device=device, idle_exit=idle_exit, keep=keep)
    server.claim()  # refused at once where another server answers
    server.warm(preload or [])
    server.bind()
    raise typer.Exit(server.serve())
