"""Issue 24: `vidpipe serve`, a resident server that `vidpipe run` hands its runs to (serve/server.py, client.py).

One real server process per module (`vidpipe serve --device cpu --socket …`), real client processes: a served run
writes the frames a local run writes, fails with a local run's message and exit code, is cancelled by the
client's Ctrl-C without leaving an output, reuses the stages an earlier request loaded, and its client never
imports torch. No timings are asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from calibration import scaled
from vidpipe.serve.client import absolute_paths
from vidpipe.serve.protocol import ping
from vidpipe.testing import decode_all

MODEL = "realesr-animevideov3-x2"
#: quiet-machine seconds: the server imports torch and the stages before it answers
START_TIMEOUT_S = 60
CLIENT_TIMEOUT_S = 60


def _start_server(sock: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidpipe", "serve", "--device", "cpu", "--socket", str(sock), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + scaled(START_TIMEOUT_S)
    while ping(sock) is None:
        if proc.poll() is not None:
            raise AssertionError(f"vidpipe serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("vidpipe serve did not answer in time")
        time.sleep(0.1)
    return proc


def _stop_server(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read() if proc.stderr else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sock = tmp_path_factory.mktemp("srv") / "s.sock"
    proc = _start_server(sock)
    yield sock
    log = _stop_server(proc)
    assert proc.returncode == 0, log
    assert not sock.exists(), "the socket is removed on SIGTERM"


def _client(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidpipe", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=scaled(CLIENT_TIMEOUT_S),
        env={**os.environ, **(env or {})},
        check=False,
    )


def _error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error:"))


def test_served_run_writes_the_frames_of_a_local_run(
    server: Path, make: Callable[..., Path], tmp_path: Path, cli
) -> None:
    clip = make("serve-sr.mkv", size=(64, 48), frames=6)
    opts = ["--upscale", MODEL, "--encoder", "ffv1", "--device", "cpu", "--progress", "none"]
    local = cli("run", str(clip), "-o", str(tmp_path / "local.mkv"), *opts, "--server", "off")
    assert local.returncode == 0, local.stderr
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mkv").symlink_to(clip)
    # relative paths: the client makes them absolute against its own directory (the server never chdirs)
    served = _client("in/clip.mkv", "-o", "served.mkv", *opts, "--server", str(server), cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert f"running on the server at {server}" in served.stderr
    assert "wrote " in served.stderr  # the run's own summary, streamed back
    t_local, f_local = decode_all(tmp_path / "local.mkv")
    t_served, f_served = decode_all(tmp_path / "served.mkv")
    assert t_served == t_local
    assert torch.equal(f_served, f_local)
    manifest = json.loads((tmp_path / "served.mkv.json").read_text())
    assert manifest["frames_out"] == 6


def test_a_bad_option_fails_with_the_local_message_and_exit_code(
    server: Path, make: Callable[..., Path], tmp_path: Path, cli
) -> None:
    clip = make("serve-small.mkv", size=(64, 48), frames=4)
    args = [str(clip), "-o", str(tmp_path / "o.mkv"), "--resize", "notasize", "--device", "cpu"]
    local = cli("run", *args, "--server", "off")
    served = _client(*args, "--server", str(server), cwd=tmp_path)
    assert local.returncode == served.returncode == 2, (local.stderr, served.stderr)
    assert _error_line(served.stderr) == _error_line(local.stderr)
    assert "running on the server" in served.stderr  # the server gave that answer, not the client's own parser


def test_auto_with_no_server_runs_here(make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("serve-small.mkv", size=(64, 48), frames=4)
    empty = tmp_path / "run"
    empty.mkdir()

    def auto(out: str) -> subprocess.CompletedProcess[str]:
        return _client(
            str(clip), "-o", out, "--resize", "32x24", "--device", "cpu", "--server", "auto",
            cwd=tmp_path, env={"XDG_RUNTIME_DIR": str(empty)},
        )  # fmt: skip

    r = auto("o.mkv")
    assert r.returncode == 0, r.stderr
    assert "server" not in r.stderr  # no socket was ever there: nothing to say
    assert (tmp_path / "o.mkv").exists()
    stale = empty / "vidpipe" / "serve.sock"  # a server's socket left behind: it does not answer
    stale.parent.mkdir()
    stale.touch()
    r = auto("o2.mkv")
    assert r.returncode == 0, r.stderr
    assert f"no server answers at {stale}; running in this process" in r.stderr
    assert (tmp_path / "o2.mkv").exists()


def test_a_given_socket_that_does_not_answer_is_a_usage_error(make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("serve-small.mkv", size=(64, 48), frames=4)
    r = _client(str(clip), "-o", "o.mkv", "--server", str(tmp_path / "none.sock"), cwd=tmp_path)
    assert r.returncode == 2
    assert "no vidpipe server answers at" in _error_line(r.stderr)


def test_ctrl_c_in_the_client_cancels_the_served_run(server: Path, make: Callable[..., Path], tmp_path: Path) -> None:
    # seconds of work on the CPU: the interrupt lands inside the run
    clip = make("serve-long.mkv", size=(320, 240), frames=48, source="mandelbrot")
    out = tmp_path / "o.mkv"
    cmd = [sys.executable, "-m", "vidpipe", "run", str(clip), "-o", str(out), "--upscale", MODEL]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu", "--server", str(server)], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the run has started on the server once its decoder says so
        lines.append(line)
        if "decode:" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=scaled(CLIENT_TIMEOUT_S))
    stderr = "".join(lines) + (rest or "")
    assert proc.returncode == 130, stderr
    assert "error: interrupted by SIGINT; partial output removed" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no output, no partial file"


def test_a_second_request_reuses_the_loaded_stages(server: Path, make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("serve-small.mkv", size=(64, 48), frames=4)
    # an outscale no other test asks for: a chain of its own in the server's cache
    args = [str(clip), "--upscale", MODEL, "--outscale", "1.5", "--device", "cpu", "--server", str(server)]
    first = _client(*args, "-o", "a.mkv", cwd=tmp_path)
    second = _client(*args, "-o", "b.mkv", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert "(cache miss" in first.stderr
    assert "(cache hit)" in second.stderr


_NO_TORCH = """
import sys
from vidpipe.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
sys.stderr.write(f"TORCH {'torch' in sys.modules} CODE {code}\\n")
"""


def test_the_client_never_imports_torch(server: Path, make: Callable[..., Path], tmp_path: Path) -> None:
    clip = make("serve-small.mkv", size=(64, 48), frames=4)
    r = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "run", str(clip), "-o", "o.mkv", "--resize", "32x24", "--timings",
         "--server", str(server)],
        cwd=tmp_path, capture_output=True, text=True, timeout=scaled(CLIENT_TIMEOUT_S), check=False,
    )  # fmt: skip
    assert "TORCH False CODE 0" in r.stderr, r.stderr
    assert (tmp_path / "o.mkv").exists()
    # --timings: the client's start-up and connect, then the server's phases, in one table
    assert "connect to the server, request sent" in r.stderr
    assert "first output batch (stages)" in r.stderr


def test_a_second_server_on_the_same_socket_refuses(server: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vidpipe", "serve", "--device", "cpu", "--socket", str(server)],
        capture_output=True, text=True, timeout=scaled(CLIENT_TIMEOUT_S), check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "already serves" in r.stderr
    assert ping(server) is not None  # the first one is untouched


def test_a_server_that_dies_mid_run_is_a_clear_error(make: Callable[..., Path], tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    server = _start_server(sock)
    clip = make("serve-long.mkv", size=(320, 240), frames=48, source="mandelbrot")
    cmd = [sys.executable, "-m", "vidpipe", "run", str(clip), "-o", "o.mkv", "--upscale", MODEL, "--device", "cpu"]
    proc = subprocess.Popen([*cmd, "--server", str(sock)], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "decode:" in line:
            break
    server.kill()
    server.wait()
    rest = proc.communicate(timeout=scaled(CLIENT_TIMEOUT_S))[1]
    assert proc.returncode == 9, rest
    assert "closed the connection before the run ended" in rest


def test_paths_are_made_absolute_against_the_client_directory(tmp_path: Path) -> None:
    (tmp_path / "mask.png").write_bytes(b"")
    args = ["in.mkv", "@list.txt", "-o", "out/", "--dewatermark", "mask:mask.png", "--resize", "32x24", "-q"]
    got = absolute_paths(args, str(tmp_path), {"-o", "--output", "--dewatermark", "--resize"}, {"-o", "--output"})
    t = str(tmp_path)
    assert got == [f"{t}/in.mkv", f"@{t}/list.txt", "-o", f"{t}/out/", "--dewatermark", f"mask:{t}/mask.png",
                   "--resize", "32x24", "-q"]  # fmt: skip
