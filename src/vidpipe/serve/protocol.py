"""The wire between `vidpipe run` and a resident `vidpipe serve` on this host: JSON objects, one a line (UTF-8),
over a Unix domain socket. Standard library only: the client side of `vidpipe run` must not import torch.

Client → server (each connection: one request, then at most a cancel):

    {"op": "ping"}                                             → {"t": "pong", "pid", "device", "version"}
    {"op": "run", "argv": ["run", …], "cwd", "env": {VIDPIPE_*…}, "tty": bool, "sent": float}
    {"op": "cancel", "signal": 2}                              the run stops at its next stop check (128 + signal)

Server → client, for a run:

    {"t": "info", "text"}                 the server's own line (queued, models cached or loaded)
    {"t": "out" | "err", "text"}          what the run wrote to stdout / stderr (logs, progress, the summary)
    {"t": "exit", "code", "timings"?}     the run's exit code; with --timings its phases (`timings_payload`)

Closing the connection mid-run cancels the run, as a cancel does.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Final

#: `vidpipe run --server` default, overridden by the option
ENV_SERVER: Final = "VIDPIPE_SERVER"
#: what the client forwards of its environment: vidpipe's own settings, and what the bar's look depends on
FORWARDED_ENV_PREFIX: Final = "VIDPIPE_"
FORWARDED_ENV: Final = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM")
#: a line longer than this is not a message of ours: the reader refuses it rather than buffering without end
MAX_LINE: Final = 16 << 20
#: seconds a ping may take before the socket counts as not answering (a busy server answers pings at once:
#: they are served on the connection's own thread)
PING_TIMEOUT_S: Final = 2.0


def default_socket() -> Path:
    """`$XDG_RUNTIME_DIR/vidpipe/serve.sock` (a per-user tmpfs where the session has one), else
    `~/.cache/vidpipe/serve.sock`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "vidpipe" if runtime else Path.home() / ".cache" / "vidpipe"
    return base / "serve.sock"


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class Lines:
    """The messages arriving on a socket, one JSON object a line; `next()` returns None at the end of the stream.
    Read with `recv` (no file object): a socket timeout only interrupts a wait, and the next call goes on."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def next(self) -> dict[str, Any] | None:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_LINE:
                raise ValueError("message line too long")
            chunk = self._sock.recv(1 << 16)  # TimeoutError where the socket has a timeout and nothing came
            if not chunk:
                if self._buf:
                    raise ValueError("the stream ended inside a message")
                return None
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"message must be a JSON object, got {type(message).__name__}")
        return message


def connect(path: Path, timeout: float | None = PING_TIMEOUT_S) -> socket.socket | None:
    """A connection to the server at `path`, or None where nothing listens there (no socket, a stale one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:  # FileNotFoundError, ConnectionRefusedError (stale), a path too long, a timeout
        sock.close()
        return None
    return sock


def ping(path: Path) -> dict[str, Any] | None:
    """The server's pong (pid, device, version), or None where no server answers at `path`."""
    sock = connect(path)
    if sock is None:
        return None
    try:
        send(sock, {"op": "ping"})
        answer = Lines(sock).next()
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    return answer if answer is not None and answer.get("t") == "pong" else None
