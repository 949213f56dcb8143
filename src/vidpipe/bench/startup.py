"""`vidpipe bench startup`: process start → first output frame of `vidpipe run`, run in a process of its own
(`--server off`) against the same run handed to a resident `vidpipe serve` that already served one request
(torch imported, the device's context made, the models loaded: the warm case of issue 24).

Each figure is the run's own `--timings` mark "first output batch" (seconds since the client process started:
for a served run the client's start-up and connect, then the server's phases) and the whole process's wall time
measured here (spawn → exit); rounds alternate the two sides, medians are printed.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StageError
from ..runtime.timings import PHASES

#: the mark read from the `--timings` table
FIRST_OUTPUT = dict(PHASES)["first_output"]
SERVER_START_TIMEOUT_S = 600.0


@dataclass(slots=True)
class Side:
    name: str
    first_output_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)

    def row(self) -> str:
        first, wall = statistics.median(self.first_output_s), statistics.median(self.wall_s)
        spread = f"{min(self.first_output_s):.3f}–{max(self.first_output_s):.3f}"
        return f"| {self.name} | {first:.3f} | {spread} | {wall:.3f} | {len(self.wall_s)} |"


def first_output_at(stderr: str) -> float:
    """The "at" column of the first-output row of a `--timings` table."""
    for line in stderr.splitlines():
        if line.strip().startswith(FIRST_OUTPUT):
            return float(line.split()[-1])
    raise StageError(f"no '{FIRST_OUTPUT}' row in the run's --timings table:\n{stderr[-2000:]}")


def _listening(path: Path) -> bool:
    """Whether a server accepts connections at `path` (it binds its socket once warm). A plain connect: `bench`
    lies below `serve` (tests/test_layers.py)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _run(cmd: list[str], side: Side) -> None:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if r.returncode:
        raise StageError(f"{side.name} run failed (exit {r.returncode}): {r.stderr[-2000:]}")
    side.first_output_s.append(first_output_at(r.stderr))
    side.wall_s.append(wall)


def bench_startup(clip: Path, run_args: list[str], *, device: str, rounds: int, work_dir: Path) -> list[str]:
    """Markdown lines: the local and the warm served figures, and the served first request's (models loading)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    sock = Path(tempfile.mkdtemp(prefix="vidpipe-bench-")) / "s.sock"
    vidpipe = [sys.executable, "-m", "vidpipe"]
    server = subprocess.Popen(
        [*vidpipe, "serve", "--device", device, "--socket", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while not _listening(sock):
            if server.poll() is not None or time.monotonic() - t0 > SERVER_START_TIMEOUT_S:
                raise StageError(f"vidpipe serve did not start (exit {server.poll()})")
            time.sleep(0.1)
        server_ready = time.monotonic() - t0

        def cmd(where: str) -> list[str]:
            out = work_dir / f"startup-{'local' if where == 'off' else 'served'}.mkv"
            return [*vidpipe, "run", str(clip), "-o", str(out), *run_args, "--device", device,
                    "--timings", "--progress", "none", "-q", "--force", "--server", where]  # fmt: skip

        cold = Side("served, first request (models load)")
        _run(cmd(str(sock)), cold)
        local, served = Side("local (`--server off`)"), Side("served, warm (a later request)")
        _run(cmd("off"), Side("warm-up"))  # page cache
        for _ in range(rounds):
            _run(cmd("off"), local)
            _run(cmd(str(sock)), served)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return [
        f"`vidpipe run {clip.name} {' '.join(run_args)} --device {device} --timings --force -q` "
        f"({os.cpu_count()} cores; server ready {server_ready:.1f} s after its start)",
        "",
        "| run | first output frame, s since process start (median) | range | process wall s (median) | runs |",
        "|---|---:|---:|---:|---:|",
        local.row(),
        served.row(),
        cold.row(),
    ]
