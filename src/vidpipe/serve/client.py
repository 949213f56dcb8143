"""`vidpipe run`'s side of a served run: hand the command line to a resident `vidpipe serve` on this host and play
its output back, or say that none answers (the run then happens in this process, as without a server).

Standard library and `runtime.timings` only: a served run must not pay for `import torch` (tests/serve check
`sys.modules`). The server never changes its working directory (its threads share one), so relative paths of
the command line are made absolute here, against this process's directory (`absolute_paths`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import ServerLostError, UsageError
from ..runtime.timings import Timings
from .protocol import FORWARDED_ENV, FORWARDED_ENV_PREFIX, Lines, connect, default_socket, send

#: `--server` values besides a socket path
AUTO: Final = "auto"
OFF: Final = "off"
#: seconds the client waits for the server to confirm a cancel (the run stops at its next stop check: a layer of
#: one tile on the CPU) before it gives up and exits anyway
CANCEL_WAIT_S: Final = 60.0
#: how often the client's wait for the next message looks at its signal flags
POLL_S: Final = 0.2


def server_path(server: str) -> tuple[Path | None, bool]:
    """(the socket to try, whether one must answer there) for `--server`: auto tries the default socket, off none,
    anything else is a socket path that must answer."""
    if server == OFF:
        return None, False
    if server == AUTO:
        return default_socket(), False
    return Path(server).expanduser(), True


def absolute_paths(
    argv: list[str], cwd: str, value_options: Collection[str], output_options: Collection[str]
) -> list[str]:
    """`argv` (the arguments of `run`) with its paths made absolute against `cwd`: every input (positional;
    `@list.txt` and glob patterns too), the output (`output_options`: it need not exist yet, a trailing `/` is
    kept) and any other option value (`value_options`: the options that take one) naming a file or folder that
    exists here, alone or after a `kind:` prefix (`--dewatermark mask:logo.png`). Flags and other values pass as
    they are."""

    def joined(path: str) -> str:
        if not path or os.path.isabs(path):
            return path
        full = os.path.join(cwd, path)
        return full + "/" if path.endswith("/") and not full.endswith("/") else full

    def maybe(value: str) -> str:
        if value and not os.path.isabs(value) and os.path.exists(os.path.join(cwd, value)):
            return joined(value)
        kind, sep, rest = value.partition(":")
        if sep and kind and rest and not os.path.isabs(rest) and os.path.exists(os.path.join(cwd, rest)):
            return f"{kind}:{joined(rest)}"
        return value

    def positional(value: str) -> str:
        return "@" + joined(value[1:]) if value.startswith("@") else joined(value)

    def value_of(option: str, value: str) -> str:
        return joined(value) if option in output_options else maybe(value)

    out: list[str] = []
    it = iter(argv)
    for token in it:
        if token == "--":
            out.append(token)
            out.extend(positional(t) for t in it)
            break
        if token.startswith("--") and "=" in token:
            name, _, value = token.partition("=")
            out.append(f"{name}={value_of(name, value)}" if name in value_options else token)
        elif token in value_options:
            out.append(token)
            value = next(it, None)
            if value is not None:
                out.append(value_of(token, value))
        elif token.startswith("-") and not token.startswith("--") and len(token) > 2 and token[:2] in value_options:
            out.append(token[:2] + value_of(token[:2], token[2:]))  # -oout.mp4
        elif token.startswith("-") and token != "-":
            out.append(token)  # a flag
        else:
            out.append(positional(token))
    return out


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_ENV_PREFIX) or k in FORWARDED_ENV}


def hand_over(
    argv: list[str],
    server: str,
    *,
    value_options: Collection[str],
    output_options: Collection[str],
    clock: Timings,
    timings: bool,
    quiet: bool,
) -> int | None:
    """Run `argv` (`run …`) on the server `--server` names and return its exit code, or None where the run is
    this process's: `--server off`, or `auto` and no server answers on the default socket. A socket path given
    that does not answer is a usage error (the user asked for that server)."""
    path, required = server_path(server)
    if path is None:
        return None
    sock = connect(path, timeout=None)
    if sock is None:
        if required:
            raise UsageError(f"no vidpipe server answers at {path} (start one with `vidpipe serve --socket {path}`)")
        return None
    cwd = os.getcwd()
    args = [argv[0], *absolute_paths(argv[1:], cwd, value_options, output_options)]  # `run`, then its arguments
    env = forwarded_env(os.environ)
    if sys.stderr.isatty() and "COLUMNS" not in env:
        env["COLUMNS"] = str(os.get_terminal_size(sys.stderr.fileno()).columns)
    try:
        send(sock, {"op": "run", "argv": args, "cwd": cwd, "env": env, "tty": sys.stderr.isatty()})
        clock.mark("connect")
        if not quiet:
            sys.stderr.write(f"vidpipe: running on the server at {path}\n")
        return _follow(sock, path, clock, timings=timings, quiet=quiet)
    finally:
        sock.close()


def _follow(sock: socket.socket, path: Path, clock: Timings, *, timings: bool, quiet: bool) -> int:
    """Plays the server's messages back until its exit message. SIGINT (Ctrl-C) or SIGTERM asks the server to
    cancel the run, and the client waits for its answer (the run's own `error: interrupted …` line and exit
    code); a second signal leaves at once. The signals only set flags: a KeyboardInterrupt raised in the middle
    of a write to stderr could lose what follows."""
    lines = Lines(sock)
    caught: list[int] = []
    asked: float | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if caught:  # a second signal: the user does not wait for the server
            os.write(2, b"error: interrupted (the server may still be stopping the run)\n")
            os._exit(128 + signum)
        caught.append(signum)

    old = _install(on_signal)
    sent_at = clock.marks.get("connect", time.monotonic())
    sock.settimeout(POLL_S)
    try:
        while True:
            if caught and asked is None:
                asked = time.monotonic()
                try:
                    send(sock, {"op": "cancel", "signal": caught[0]})
                except OSError as e:
                    sys.stderr.write(f"error: could not ask the server at {path} to cancel the run: {e}\n")
                    return 128 + caught[0]
            try:
                message = lines.next()
            except TimeoutError:
                if asked is not None and time.monotonic() - asked > CANCEL_WAIT_S:
                    sys.stderr.write(f"error: the server at {path} did not stop the run in {CANCEL_WAIT_S:.0f} s\n")
                    return 128 + caught[0]
                continue
            except (OSError, ValueError) as e:
                raise ServerLostError(f"lost the vidpipe server at {path} mid-run: {e}") from None
            if message is None:
                raise ServerLostError(
                    f"the vidpipe server at {path} closed the connection before the run ended (did it die?); "
                    "the output was not finished"
                )
            kind = message.get("t")
            if kind == "out":
                sys.stdout.write(str(message.get("text", "")))
                sys.stdout.flush()
            elif kind == "err":
                sys.stderr.write(str(message.get("text", "")))
                sys.stderr.flush()
            elif kind == "info" and not quiet:
                sys.stderr.write(f"vidpipe: server: {message.get('text', '')}\n")
            elif kind == "exit":
                payload: Any = message.get("timings")
                if timings and isinstance(payload, dict):
                    clock.adopt(payload, sent_at)
                    sys.stderr.write("\n".join(clock.table()) + "\n")
                return int(message.get("code", 1))
    finally:
        _restore(old)


def _install(handler: Any) -> dict[int, Any]:
    """`handler` for SIGINT and SIGTERM (only the main thread may set them: elsewhere, none is set)."""
    try:
        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        return {}


def _restore(old: dict[int, Any]) -> None:
    for s, h in old.items():
        signal.signal(s, h)
