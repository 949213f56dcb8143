"""`vidpipe ARGS` as a process of its own that skips the interpreter's start-up (the fast suite's CLI runs).

A fresh `python -m vidpipe` spends ~3-4 s of CPU importing torch and the CLI before it reads its arguments, and the
fast suite runs the CLI about a hundred times. Here the runs fork from multiprocessing's fork server, which imports
torch and `vidpipe.cli.app` once and never computes anything (so no thread pool or lock is copied mid-use). Each
run is still a separate process with its own exit code, stdout/stderr, environment, working directory and signal
handlers, entering the same `vidpipe.cli.app.main` that `python -m vidpipe` calls.

What only a fresh interpreter shows (the `-m` entry point, import-time behaviour, the wheel's dependencies) stays
covered by the tests that start `python -m vidpipe` themselves (interrupts, job runs) and by CI's clean-wheel step.
`VIDPIPE_TEST_CLI=subprocess` makes `run_cli` start `python -m vidpipe` for every run, as before.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_MODE = "VIDPIPE_TEST_CLI"
#: imported once by the fork server: what every CLI run would import before reading its arguments
PRELOAD = ["torch", "av", "vidpipe.cli.app", "cli_fork"]


class CLITimeout(subprocess.TimeoutExpired):
    """A forked run killed for its timeout; its message ends with the run's stderr (the thread stacks)."""

    def __str__(self) -> str:
        tail = (self.stderr or "")[-6000:]
        return f"{super().__str__()}\n--- the run's stderr (last 6000 characters) ---\n{tail}"


def forked() -> bool:
    """Whether CLI runs fork from the server (the default) rather than start `python -m vidpipe`."""
    return os.environ.get(ENV_MODE, "fork") != "subprocess" and "forkserver" in multiprocessing.get_all_start_methods()


def _server() -> multiprocessing.context.ForkServerContext:
    # one server per test process, started by the first run (the preload list is read when it starts)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _child(args: Sequence[str], env: Mapping[str, str], cwd: str, out: str, err: str, dump_after: float) -> None:
    """The CLI run, in the forked process: the caller's environment and directory, stdio onto the capture files;
    past `dump_after` seconds every thread's stack goes to stderr, so a run killed for its timeout says where it sat."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for path, fd in ((out, 1), (err, 2)):
        f = os.open(path, os.O_WRONLY)
        os.dup2(f, fd)
        os.close(f)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.argv = [sys.argv[0], *args]
    faulthandler.dump_traceback_later(dump_after, exit=False, file=sys.stderr)
    from vidpipe.cli.app import main

    main()  # SystemExit carries the exit code out of multiprocessing's bootstrap, as out of `python -m`


def run_forked(args: Sequence[str], *, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`vidpipe ARGS` forked from the server; raises subprocess.TimeoutExpired past `timeout` seconds (killed)."""
    cmd = [sys.executable, "-m", "vidpipe", *args]
    with tempfile.TemporaryDirectory(prefix="vidpipe-cli-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        dump_after = max(timeout - 3.0, 0.5 * timeout)
        proc = _server().Process(
            target=_child, args=(list(args), dict(env), os.getcwd(), str(out), str(err), dump_after)
        )
        proc.start()
        proc.join(timeout)
        timed_out = proc.exitcode is None
        if timed_out:
            proc.kill()
            proc.join()
        code = proc.exitcode
        proc.close()
        stdout, stderr = out.read_text(), err.read_text()
    if timed_out:
        raise CLITimeout(cmd, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(cmd, code, stdout, stderr)
