"""CI step: the built wheel works in a fresh venv with nothing but its declared dependencies (issue 22, item 11).

Builds the wheel, installs it into a new venv without system site-packages and without the test extra (torch is
the CPU build `torch==2.13.0`, as the Makefile installs; pip's cache keeps this offline once cached), then, from
outside the checkout so `src/` cannot leak in, runs `vidpipe --help`, `vidpipe doctor` and a tiny `vidpipe run`.
Exits non-zero at the first command that fails.

    python .ci/clean_wheel.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the CPU build the Makefile installs where no torch is importable
TORCH = "torch==2.13.0"
#: a 12-frame 64×48 clip made by the installed package itself (synth uses only PyAV and numpy)
MAKE_CLIP = (
    "import sys; from vidpipe.media.synth import ClipSpec, make_clip; "
    "make_clip(sys.argv[1], ClipSpec(size=(64, 48), frames=12))"
)


def step(what: str, argv: list[str], cwd: Path) -> None:
    t0 = time.monotonic()
    print(f"clean-wheel: {what}", flush=True)
    done = subprocess.run(argv, cwd=cwd, check=False)
    if done.returncode:
        sys.exit(f"clean-wheel: FAILED ({done.returncode}): {what}: {' '.join(argv)}")
    print(f"clean-wheel: ok in {time.monotonic() - t0:.1f} s: {what}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vidpipe-clean-wheel-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    dist, venv = work / "dist", work / "venv"
    # no build isolation: the build backend of the running interpreter (setuptools) builds it, offline
    step("build the wheel", [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(dist), str(ROOT)], ROOT)  # fmt: skip
    wheel = next(dist.glob("vidpipe-*.whl"))
    # without pip: ensurepip costs more than the rest of the set-up; this interpreter's pip installs into it
    step("fresh venv (no system site-packages)", [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
         work)  # fmt: skip
    py, exe = venv / "bin" / "python", venv / "bin" / "vidpipe"
    # --no-compile: byte-compiling torch's thousands of modules would be most of the install's time
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-compile"]
    step(f"install {TORCH} (CPU)", [*pip, TORCH], work)
    step(f"install {wheel.name} (no extras)", [*pip, str(wheel)], work)
    step("vidpipe --help", [str(exe), "--help"], work)
    step("vidpipe doctor", [str(exe), "doctor"], work)
    step("make a tiny clip", [str(py), "-c", MAKE_CLIP, str(work / "in.mkv")], work)
    step("vidpipe run (tiny)", [str(exe), "run", str(work / "in.mkv"), "-o", str(work / "out.mkv"),
                                "--resize", "32x24", "--progress", "none"], work)  # fmt: skip
    if not (work / "out.mkv").is_file() or not (work / "out.mkv.json").is_file():
        sys.exit("clean-wheel: FAILED: vidpipe run wrote no output or no manifest")
    step("vidpipe probe the output", [str(exe), "probe", str(work / "out.mkv")], work)


if __name__ == "__main__":
    main()
