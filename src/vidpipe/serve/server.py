"""`vidpipe serve`: a resident process on this host that has imported torch and the stages, made the device's
context and keeps stage chains loaded, to which `vidpipe run` hands its command line (serve/client.py) instead of
paying for all that again (issue 24: a fresh process spends ~3.7 s on an H100 before its first frame).

One Unix domain socket (mode 0600; the messages: serve/protocol.py). Threads:

- the main thread waits and takes SIGTERM/SIGINT: the run in progress is cancelled (the pipeline's stop request:
  its partial output, a hidden temp file beside the target, is removed; the target is only ever renamed into place
  whole, media/writer.py), queued requests are refused, the socket is removed;
- the accept thread gives each connection a thread of its own: a ping is answered there, a run is queued and the
  connection then watches for a cancel or the client going away (either stops the run);
- the run thread takes requests in order, one at a time, and runs each as `vidpipe run` itself would (cli/app.py
  `invoke`: the same options, messages and exit codes), its stdout/stderr streamed to the client, its stages
  from `WarmChains` (kept loaded between requests, keyed by every stage option and the device, LRU).

The server never changes its working directory (one per process, shared by its threads): clients send absolute
paths. A request's `VIDPIPE_*` environment is the client's while it runs (one at a time). After `idle_exit`
seconds without a request the server exits (0: never).
"""

from __future__ import annotations

import fcntl
import io
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import __version__
from ..errors import ServerLostError, UsageError
from .protocol import FORWARDED_ENV, FORWARDED_ENV_PREFIX, Lines, ping, send

if TYPE_CHECKING:
    from ..runtime.pipeline import StopRequest
    from ..runtime.recipe import PipelineRecipe
    from ..stages.base import Stage
    from .worker import WarmChains

#: the modules a run imports (cli/app.py `run_cmd` and the stages of the registry), imported once at start
PRELOAD_MODULES: Final = (
    "vidpipe.runtime.pipeline",
    "vidpipe.runtime.multi",
    "vidpipe.report.run",
    "vidpipe.media.conform",
    "vidpipe.stages.upscale",
    "vidpipe.stages.interpolate",
    "vidpipe.stages.resize",
    "vidpipe.stages.crop",
    "vidpipe.stages.pad",
    "vidpipe.stages.vsr",
    "vidpipe.stages.matte",
    "vidpipe.stages.dewatermark",
    "vidpipe.stages.cuts.stage",
)
#: the accept and run threads look at the shutdown flag this often
POLL_S: Final = 0.25


def _say(text: str) -> None:
    """A line of the server's own (its stderr; a run's output goes to its client)."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"vidpipe serve: {text}\n")
        stream.flush()


class Request:
    """One `run` request: its connection, what it asked, and the stop request that cancels it."""

    def __init__(self, conn: socket.socket, message: Mapping[str, Any], received: float, stop: StopRequest) -> None:
        argv = message.get("argv")
        if not isinstance(argv, list) or not argv or argv[0] != "run" or not all(isinstance(a, str) for a in argv):
            raise UsageError(f"a request's argv must be a `run` command line, got {argv!r}")
        env = message.get("env") or {}
        if not isinstance(env, dict):
            raise UsageError("a request's env must be a mapping")
        self.conn = conn
        self.argv: list[str] = argv
        self.env = {str(k): str(v) for k, v in env.items()}
        self.tty = bool(message.get("tty", False))
        self.received = received
        self.stop = stop
        self.started = False
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._gone = False

    def send(self, message: dict[str, Any]) -> None:
        """To the client; a client gone (a broken pipe) cancels the run, and later output is dropped."""
        with self._lock:
            if self._gone:
                return
            try:
                send(self.conn, message)
            except OSError:
                self._gone = True
        if self._gone:
            self.cancel()

    def info(self, text: str) -> None:
        self.send({"t": "info", "text": text})

    def cancel(self, signum: int = signal.SIGINT) -> None:
        """The run stops at its next stop check (`Interrupted`, exit 128 + signum); a queued one never starts."""
        if self.stop.signum is None:
            self.stop.signum = signum


class _Stream(io.TextIOBase):
    """A run's stdout or stderr: each write goes to the client as one message. A terminal where the client's
    stderr is one (rich then draws the bar there; `COLUMNS` comes with the request's environment)."""

    def __init__(self, request: Request, kind: str) -> None:
        self._request, self._kind = request, kind

    def write(self, text: str) -> int:
        if text:
            self._request.send({"t": self._kind, "text": text})
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._request.tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


@contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """The client's `VIDPIPE_*` (and terminal) variables in place of the server's while a request runs."""

    def ours(key: str) -> bool:
        return key.startswith(FORWARDED_ENV_PREFIX) or key in FORWARDED_ENV

    saved = {k: v for k, v in os.environ.items() if ours(k)}
    for k in saved:
        del os.environ[k]
    os.environ.update({k: v for k, v in env.items() if ours(k)})
    try:
        yield
    finally:
        for k in [k for k in os.environ if ours(k)]:
            del os.environ[k]
        os.environ.update(saved)


class Server:
    def __init__(self, path: Path, *, device: str = "auto", idle_exit: float = 0.0, keep: int = 2) -> None:
        self.path = Path(path)
        self.requested_device = device
        self.device = device
        self.idle_exit = idle_exit
        self.keep = keep
        self.chains: WarmChains | None = None
        self._queue: queue.Queue[Request] = queue.Queue()
        self._current: Request | None = None
        self._queue_lock = threading.Lock()
        self._shutdown = threading.Event()
        self._last_request = time.monotonic()
        self._sock: socket.socket | None = None
        self._lock_file: int | None = None

    # -- start-up -----------------------------------------------------------------------------------------

    def claim(self) -> None:
        """The socket's path for this server alone, before anything slow: refused where another server answers
        (or is starting: it holds the lock beside the socket); a stale socket is removed."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            who = ping(self.path)
            pid = f" (pid {who.get('pid')})" if who else " (starting up)"
            raise UsageError(
                f"a vidpipe server already serves {self.path}{pid}; stop it or pick another --socket"
            ) from None
        self._lock_file = lock
        if ping(self.path) is not None:  # a server of an older version that takes no lock
            raise UsageError(f"a vidpipe server already answers at {self.path}; stop it or pick another --socket")
        if self.path.exists() or self.path.is_symlink():
            _say(f"removing the stale socket {self.path}")
            self.path.unlink()

    def warm(self, preload: list[str]) -> None:
        """Imports torch and the stages, makes the device's context, and runs each `preload` (options of `vidpipe
        run`) once on a tiny generated clip: its models are then loaded and kept."""
        import importlib

        import torch

        from ..runtime.device import describe, resolve_device
        from .worker import WarmChains

        for name in PRELOAD_MODULES:
            try:
                importlib.import_module(name)
            except ImportError as e:  # an optional dependency of one stage: that stage loads on first use
                _say(f"not preloaded: {name} ({e})")
        dev = resolve_device(self.requested_device)
        if dev.type == "cuda":
            torch.empty(1, device=dev)  # the CUDA context, now rather than in the first request
        self.device = str(dev)
        self.chains = WarmChains(keep=self.keep)
        _say(f"device {describe(dev)}")
        for spec in preload:
            self._preload(spec)

    def _preload(self, spec: str) -> None:
        import shlex

        from ..media.synth import ClipSpec, make_clip
        from .context import Served, serving

        args = shlex.split(spec)
        if args and not args[0].startswith("-") and "=" in args[0]:  # KIND=MODEL, e.g. upscale=realesr-…
            kind, _, model = args[0].partition("=")
            args = [f"--{kind}", model, *args[1:]]
        with tempfile.TemporaryDirectory(prefix="vidpipe-preload-") as tmp:
            clip = make_clip(Path(tmp) / "in.mkv", ClipSpec(size=(64, 48), frames=4))
            argv = ["run", str(clip), "-o", str(Path(tmp) / "out.mkv"), "-q", "--progress", "none", *args]
            served = Served(received=time.monotonic(), device=self.device, stages=self._chain)
            buf = io.StringIO()
            with serving(served), redirect_stdout(buf), redirect_stderr(buf):
                code, _ = _invoke(argv)
        if code:
            raise UsageError(f"--preload {spec!r} failed (exit {code}): {buf.getvalue().strip()[-500:]}")
        _say(f"preloaded {spec}")

    def bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600 from the start: no moment where another user could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(POLL_S)
        self._sock = sock

    # -- serving --------------------------------------------------------------------------------------------

    def serve(self) -> int:
        """Until SIGTERM/SIGINT or `idle_exit` seconds without a request; the exit code."""
        caught: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            if caught:  # a second signal: the user insists
                self._remove_socket()
                os._exit(128 + signum)
            caught.append(signum)
            self._shutdown.set()
            with self._queue_lock:
                if self._current is not None:
                    self._current.cancel(signum)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        threads = [
            threading.Thread(target=self._accept_loop, name="serve-accept", daemon=True),
            threading.Thread(target=self._run_loop, name="serve-run", daemon=True),
        ]
        for t in threads:
            t.start()
        _say(f"listening on {self.path} (pid {os.getpid()})")
        try:
            while not self._shutdown.wait(POLL_S):
                pass
            threads[1].join()  # the run in progress ends (cancelled) and queued requests are answered
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._remove_socket()
        _say("stopped" + (f" ({signal.Signals(caught[0]).name})" if caught else " (idle)"))
        return 0

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._shutdown.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._connection, args=(conn,), name="serve-conn", daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        """A ping, or a run: queued, then watched for a cancel or the client leaving until it is done."""
        from ..runtime.pipeline import StopRequest

        lines = Lines(conn)
        try:
            message = lines.next()
            if message is None:
                return
            if message.get("op") == "ping":
                send(conn, {"t": "pong", "pid": os.getpid(), "device": self.device, "version": __version__})
                return
            if message.get("op") != "run":
                send(conn, {"t": "err", "text": f"error: unknown request {message.get('op')!r}\n"})
                send(conn, {"t": "exit", "code": UsageError.exit_code})
                return
            try:
                request = Request(conn, message, time.monotonic(), StopRequest())
            except UsageError as e:
                send(conn, {"t": "err", "text": f"error: {e}\n"})
                send(conn, {"t": "exit", "code": e.exit_code})
                return
            self._last_request = time.monotonic()
            with self._queue_lock:
                if self._shutdown.is_set():
                    self._refuse(request)
                    return
                ahead = self._queue.qsize() + (self._current is not None)
                self._queue.put(request)
            if ahead:
                request.info(f"queued behind {ahead} run(s); runs go one at a time")
            self._watch(request, lines)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def _watch(self, request: Request, lines: Lines) -> None:
        """Reads what the client sends while its run waits or runs: a cancel, or the end of the stream (it left)."""
        while not request.done.is_set():
            try:
                message = lines.next()
            except (OSError, ValueError):
                message = None
            if message is None or message.get("op") == "cancel":
                signum = message.get("signal") if message is not None else None
                request.cancel(signum if signum in (signal.SIGINT, signal.SIGTERM) else signal.SIGINT)
                if message is None:
                    break
        request.done.wait()

    def _refuse(self, request: Request) -> None:
        request.send({"t": "err", "text": "error: the vidpipe server is shutting down; the run was not started\n"})
        request.send({"t": "exit", "code": ServerLostError.exit_code})
        request.done.set()

    def _run_loop(self) -> None:
        while True:
            try:
                request = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._shutdown.is_set():
                    return
                idle = time.monotonic() - self._last_request
                if self.idle_exit and idle > self.idle_exit and self._current is None:
                    with self._queue_lock:
                        if self._queue.empty():
                            self._shutdown.set()
                continue
            if self._shutdown.is_set():
                self._refuse(request)
                continue
            with self._queue_lock:
                self._current = request
            try:
                self._run(request)
            finally:
                with self._queue_lock:
                    self._current = None
                self._last_request = time.monotonic()
                request.done.set()

    def _run(self, request: Request) -> None:
        from ..cli.common import err
        from ..runtime.pipeline import external_stop
        from .context import Served, serving

        if request.stop.signum is not None:  # cancelled (or the client left) while queued
            request.send({"t": "err", "text": "error: cancelled before it started\n"})
            request.send({"t": "exit", "code": 128 + request.stop.signum})
            return

        def chain(recipe: PipelineRecipe) -> list[Stage]:
            return self._chain(recipe, request)

        served = Served(received=request.received, device=self.device, stages=chain)
        code, poisoned = 1, False
        out, errs = _Stream(request, "out"), _Stream(request, "err")
        with (
            _environ(request.env),
            redirect_stdout(out),
            redirect_stderr(errs),
            external_stop(request.stop),
            serving(served),
        ):
            err.reset()  # the run's console: this client's stderr
            try:
                code, poisoned = _invoke(request.argv)
            except Exception:  # a bug: the traceback goes to the client, as a local run would print it
                traceback.print_exc()
                code = 1
            finally:
                err.reset()
        timings = served.timings.served_payload() if served.timings is not None else None
        request.send({"t": "exit", "code": code, **({"timings": timings} if timings else {})})
        if poisoned:  # a CUDA fault: nothing of this process may touch the device again (cli/app.py main)
            _say("device fault; exiting")
            self._remove_socket()
            os._exit(code)

    def _chain(self, recipe: PipelineRecipe, request: Request | None = None) -> list[Stage]:
        """The recipe's stage chain on its device: the kept one (copies sharing its loaded models) or a new one."""
        assert self.chains is not None
        device = self.device if recipe.device == "auto" else recipe.device
        hit = self.chains.has(recipe, device)
        if request is not None:
            request.info(
                "stages cached from an earlier run (cache hit)"
                if hit
                else "stages built for this run (cache miss; kept for the next)"
            )
        return self.chains.factory(recipe, device)()

    def _remove_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
        with suppress(FileNotFoundError):
            self.path.unlink()


def _invoke(argv: list[str]) -> tuple[int, bool]:
    from ..cli.app import invoke

    return invoke(argv)
