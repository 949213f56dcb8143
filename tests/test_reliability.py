"""Issue 22's reliability matrix (docs/reliability.md): the cases that no other test file covered. Each test is
named after its case number; the matrix says which tests cover the others.

Run as a script, this file is the vidpipe CLI with a CUDA error planted in the upscale model (case 15 on a GPU:
a real device-side assert cannot be provoked through a public option, and the context it poisons must die with
its own process, not with pytest's)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction as F
from pathlib import Path
from typing import Any

import pytest
import torch

from calibration import scaled
from jobspec import write_job_spec
from vidpipe.assets import opencv_clip
from vidpipe.errors import DeviceError, DiskFullError
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.writer import WriterOptions
from vidpipe.models.archs.srvgg import ARCH, SRVGGNetCompact
from vidpipe.models.loading import META_ARCH, save_safetensors
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.resize import Resize
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

#: a CLI run in this file ends well within this on 2 quiet cores (vtest.avi's 795 frames take ~30 s); scaled by
#: the load calibration like every time bound of the suite (tests/calibration.py)
RUN_TIMEOUT_S = 180
#: the tmpfs of case 29: too small for the output, large enough for the run to start writing
TINY_DISK = "4m"
PARTIAL_GLOBS = (".*vidpipe-partial*", ".*.tmp", ".*.part")


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _leftovers(root: Path) -> list[Path]:
    return [p for g in PARTIAL_GLOBS for p in root.rglob(g)]


def _ffv1(**enc: Any) -> RunOptions:
    return RunOptions(
        device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1", **enc))
    )  # type: ignore[arg-type]


# -- cases 5, 6: real clips from opencv-doc --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_case05_vtest_avi_every_frame_kept_and_stamped_by_count(cli, tmp_path):
    """vtest.avi: MS-MPEG4 in AVI, which carries no presentation times. All 795 frames come out, stamped by count
    at the header's 10 fps (architecture.md: AVI frames are stamped by count)."""
    src = opencv_clip("vtest.avi")
    out = tmp_path / "vtest.mkv"
    proc = cli("run", str(src), "-o", str(out), "--resize", "192x144", "--progress", "none", timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "vtest.mkv.json").read_text())
    assert m["frames_in"] == m["frames_out"] == probe(src).video.frames == 795 and m["corrupt_skipped"] == 0
    times, frames = decode_all(out)
    assert times == [F(k, 10) for k in range(795)]
    assert frames.shape[1:] == (3, 144, 192)


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_case06_megamind_ac3_audio_copied_and_frames_kept(cli, tmp_path):
    """Megamind.avi: MPEG-4 with AC3 audio in AVI. Into MKV every frame is kept at the exact 2997/125 rate and
    the AC3 track is stream-copied (not re-encoded, not dropped), its length within a frame of the source's."""
    src = opencv_clip("Megamind.avi")
    out = tmp_path / "mm.mkv"
    proc = cli("run", str(src), "-o", str(out), "--resize", "360x-1", "--progress", "none", timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "mm.mkv.json").read_text())
    assert m["frames_in"] == m["frames_out"] == 270 and m["corrupt_skipped"] == 0
    assert m["streams"]["copied"] == ["#1 audio ac3"] and not m["streams"]["reencoded"] and not m["streams"]["dropped"]
    src_info, out_info = probe(src), probe(out)
    assert [s.codec for s in out_info.of_type("audio")] == ["ac3"]
    assert out_info.video.rate == src_info.video.rate == F(2997, 125)
    times, _ = decode_all(out)
    # Matroska stores milliseconds: each frame within half a millisecond of k / rate
    assert len(times) == 270 and all(abs(t - k / src_info.video.rate) <= F(1, 2000) for k, t in enumerate(times))
    assert abs(out_info.duration - src_info.duration) <= 1 / src_info.video.rate


# -- case 8: HLG (PQ is covered in tests/runtime/test_contract.py) ------------------------------------------


def test_case08_hlg_ten_bit_tags_and_depth_survive(make, tmp_path):
    src = make(
        "hlg.mkv",
        codec="libx265",
        pix_fmt="yuv420p10le",
        frames=4,
        size=(128, 72),
        colour_tags=("bt2020", "arib-std-b67", "bt2020nc"),
        options={"x265-params": "log-level=error"},
    )
    c_in = probe(src).video.colour
    assert (c_in.transfer, c_in.bit_depth) == ("arib-std-b67", 10) and c_in.is_hdr
    out = tmp_path / "hlg-out.mkv"
    run(
        src,
        out,
        [Resize(64, 36)],
        RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="hevc"))),
    )  # type: ignore[arg-type]
    c_out = probe(out).video.colour
    assert (c_out.primaries, c_out.transfer, c_out.matrix, c_out.bit_depth) == (
        "bt2020",
        "arib-std-b67",
        "bt2020nc",
        10,
    )
    _, frames = decode_all(out)
    assert frames.dtype == torch.uint16 and ((frames.int() >> 6) % 4 != 0).any()  # not squeezed through 8 bits


# -- case 15: a CUDA error mid-run ---------------------------------------------------------------------------


def _accelerator_error() -> BaseException:
    # what torch raises for a CUDA error (an illegal access, a device-side assert): a RuntimeError subclass
    cls = getattr(torch, "AcceleratorError", RuntimeError)
    return cls("CUDA error: an illegal memory access was encountered")


class FaultyUpscale(Upscale):
    """The real upscale stage; its model call raises a CUDA error on the chosen (1-based) call."""

    def __init__(self, *args: Any, fail_at: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fail_at, self.calls = fail_at, 0

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise _accelerator_error()
        return super()._model(x)


def _random_sr(path: Path) -> Path:
    """animevideov3's architecture, small and with random weights: a real model file, no download."""
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=16, num_conv=4, scale=2)
    return save_safetensors(net.state_dict(), path, {META_ARCH: ARCH})


def test_case15_cuda_error_mid_run_is_a_device_error_and_leaves_nothing(make, tmp_path):
    """A CUDA error is not an out-of-memory error: not retried (it may have poisoned the context), classified as
    a device error (exit 5), and the partial output removed. Injected on the CPU; the GPU test below makes a real
    one."""
    src = make("rel-cuda-err.mkv", size=(64, 48), frames=16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stage = FaultyUpscale(_random_sr(tmp_path / "sr.safetensors"), tile=0, fail_at=2)
    with pytest.raises(DeviceError) as info:
        run(src, out_dir / "o.mkv", [stage], _ffv1())
    assert info.value.exit_code == 5
    assert stage.calls == 2  # not retried
    assert list(out_dir.iterdir()) == []


def test_case15_a_device_fault_ends_the_cli_without_teardown(make, tmp_path):
    """After a CUDA fault the CLI prints its one line and exits 5 at once, skipping interpreter teardown: on an
    H100 the tensors freed in teardown threw inside CUDA destructors and aborted the process (exit -6). Shown on
    the CPU by an exit handler that teardown would run and a fault-free usage error, where it does run."""
    src = make("rel-cuda-err-cli.mkv", size=(64, 48), frames=16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    weights = _random_sr(tmp_path / "sr.safetensors")
    args = ["run", str(src), "-o", str(out_dir / "o.mkv"), "--upscale", str(weights), "--device", "cpu"]
    args += ["--batch-size", "4", "--encoder", "ffv1", "--progress", "none"]
    proc = subprocess.run([sys.executable, __file__, "cpu-fault", *args], capture_output=True, text=True,
                          timeout=scaled(RUN_TIMEOUT_S - 30), check=False)  # fmt: skip
    assert proc.returncode == DeviceError.exit_code, proc.stderr[-3000:]
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and "CUDA error" in errors[0], proc.stderr[-3000:]
    assert "teardown ran" not in proc.stdout
    assert list(out_dir.iterdir()) == []
    bad = ["run", str(src), "-o", str(tmp_path / "x.mkv"), "--encoder", "nope"]
    usage = subprocess.run([sys.executable, __file__, "cpu-fault", *bad], capture_output=True, text=True,
                           timeout=scaled(60), check=False)  # fmt: skip
    assert usage.returncode == 2 and "teardown ran" in usage.stdout  # an ordinary error ends normally


def _cpu_fault_main(argv: list[str]) -> None:
    """`python test_reliability.py cpu-fault ARGS…`: `vidpipe ARGS…` whose upscale model raises a CUDA error on
    its second call (as `FaultyUpscale`), with an exit handler that says when interpreter teardown runs."""
    import atexit

    from vidpipe.cli.app import main

    atexit.register(lambda: print("teardown ran", flush=True))
    real, calls = Upscale._model, [0]

    def faulty(self: Upscale, x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 2:
            raise _accelerator_error()
        return real(self, x)

    Upscale._model = faulty  # type: ignore[method-assign]
    main(argv)


def _cuda_error_main(argv: list[str]) -> None:
    """`python test_reliability.py CALL ARGS…`: `vidpipe ARGS…`, where the upscale model's CALL-th call indexes
    out of bounds on the device. The device-side assert fires asynchronously, so the error surfaces wherever the
    run next synchronises (a later model call, the transfer to the encoder), as a real fault would."""
    from vidpipe.cli.app import main

    fail_at = int(argv[0])
    real = Upscale._model
    calls = [0]

    def faulty(self: Upscale, x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        y = real(self, x)
        if calls[0] == fail_at:
            beyond = torch.full((1,), x.numel() + 1, dtype=torch.long, device=x.device)
            y = y + x.flatten()[beyond].to(y.dtype).sum() * 0  # no sync here: the assert is raised later
        return y

    Upscale._model = faulty  # type: ignore[method-assign]
    main(argv[1:])


@pytest.mark.gpu
@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_case15_real_cuda_error_mid_run_exits_5_and_leaves_nothing(make, tmp_path):
    src = make("rel-cuda-err-gpu.mkv", size=(320, 240), frames=48)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    weights = _random_sr(tmp_path / "sr.safetensors")
    args = ["run", str(src), "-o", str(out_dir / "o.mkv"), "--upscale", str(weights), "--device", "cuda"]
    args += ["--batch-size", "4", "--encoder", "ffv1", "--progress", "none"]
    proc = subprocess.run(
        [sys.executable, __file__, "3", *args],
        capture_output=True,
        text=True,
        timeout=scaled(RUN_TIMEOUT_S - 30),
        check=False,
    )
    errors = _errors(proc.stderr)
    assert proc.returncode == DeviceError.exit_code, proc.stderr[-3000:]
    assert len(errors) == 1 and "CUDA" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert list(out_dir.iterdir()) == []  # no output, no partial file, no manifest


# -- case 18: output-path mistakes that already held ------------------------------------------------------


def _damaged(src: Path, path: Path) -> Path:
    """`src` with random bytes written over a stretch a third of the way in: damaged packets mid-stream."""
    data = bytearray(src.read_bytes())
    rnd = random.Random(1)
    for off in range(len(data) // 3, len(data) // 3 + 4000, 97):
        data[off : off + 20] = bytes(rnd.getrandbits(8) for _ in range(20))
    path.write_bytes(bytes(data))
    return path


def test_case18_output_is_input_refused_and_a_failed_run_keeps_the_old_output(make, cli, tmp_path):
    good = make("rel-good.mp4", frames=10, size=(64, 48))
    same = tmp_path / "same.mp4"
    same.write_bytes(good.read_bytes())
    proc = cli("run", str(same), "-o", str(same), "--progress", "none")
    assert proc.returncode == 2 and "is the input" in proc.stderr, proc.stderr
    assert same.read_bytes() == good.read_bytes()
    # an earlier output stays as it was when a later run into the same path fails mid-stream
    out = tmp_path / "out.mkv"
    assert cli("run", str(good), "-o", str(out), "--progress", "none").returncode == 0
    before = out.read_bytes(), (tmp_path / "out.mkv.json").read_bytes()
    bad = _damaged(make("gop10.mkv", frames=100, source="mandelbrot", options={"g": "10"}), tmp_path / "bad.mkv")
    proc = cli("run", str(bad), "-o", str(out), "--progress", "none")
    assert proc.returncode == 3 and "damaged frame" in proc.stderr, proc.stderr
    assert (out.read_bytes(), (tmp_path / "out.mkv.json").read_bytes()) == before
    assert not _leftovers(tmp_path)


# -- case 29: a 4 MiB tmpfs ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """A 4 MiB tmpfs at tmp_path/disk; the fixture's value resizes it (`remount, size=…`: freeing space)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_DISK}", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {TINY_DISK} tmpfs here (needs root): {mounted.stderr.strip()}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True, capture_output=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture(scope="module")
def busy_clip(make) -> Path:
    """60 mandelbrot frames: ~2 MB as FFV1 at 320×240, ~6–8 MB at 640×480, more than the tiny disk holds."""
    return make("rel-disk.mkv", frames=60, size=(320, 240), source="mandelbrot")


def test_case29_full_disk_run_exits_4_and_leaves_nothing(busy_clip, tiny_disk, cli, tmp_path):
    disk = tmp_path / "disk"
    out = disk / "o.mkv"
    proc = cli("run", str(busy_clip), "-o", str(out), "--resize", "640x480", "--encoder", "ffv1", "--progress", "none")
    errors = _errors(proc.stderr)
    assert proc.returncode == DiskFullError.exit_code, proc.stderr
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in proc.stderr
    assert list(disk.iterdir()) == []  # no output, no partial file, no manifest


def test_case29_full_disk_run_raises_disk_full_error(busy_clip, tiny_disk, tmp_path):
    with pytest.raises(DiskFullError):
        run(busy_clip, tmp_path / "disk" / "o.mkv", [Resize(640, 480)], _ffv1())
    assert list((tmp_path / "disk").iterdir()) == []


@pytest.mark.timeout(RUN_TIMEOUT_S * 2)
def test_case29_full_disk_job_is_disk_full_and_resumes_once_space_is_freed(busy_clip, tiny_disk, tmp_path):
    """A job whose output folder is the tiny disk: the pre-flight estimate passes (lossy h264 is estimated at
    0.05 bytes a pixel), but CRF 0 is lossless in all but name and fills the disk in its first segment. The job
    ends DiskFullError (exit 4) with nothing partial on the disk and no sentinel; with space freed it runs."""
    disk = tmp_path / "disk"
    pipeline = {"resize": "640x480", "encoder": "h264", "crf": 0, "device": "cpu"}
    spec = write_job_spec(tmp_path, [str(busy_clip)], pipeline, out_dir=disk / "out", seconds=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "AWS_", "VIDPIPE_", "UPLOAD_RESULT"))}

    def job() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vidpipe", "job", "run", str(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=scaled(RUN_TIMEOUT_S),
            check=False,
        )

    proc = job()
    assert proc.returncode == DiskFullError.exit_code, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    error = result["inputs"][0]["error"]
    assert error["class"] == "DiskFullError" and "disk full" in error["message"], error
    assert "not enough disk space" not in error["message"]  # a real ENOSPC, not the pre-flight refusal
    assert not _leftovers(disk) and not (tmp_path / "SENTINEL").exists()
    assert [p.name for p in (disk / "out").iterdir()] == [".vidpipe-work"]  # only the checkpoint state
    tiny_disk("64m")
    proc = job()
    assert proc.returncode == 0, proc.stderr[-3000:]
    [entry] = json.loads((tmp_path / "result.json").read_text())["inputs"]
    assert entry["status"] == "ok"
    out = Path(entry["outputs"][0]["path"])
    assert probe(out).video.frames == 60 and not _leftovers(disk)


if __name__ == "__main__":
    if sys.argv[1] == "cpu-fault":
        _cpu_fault_main(sys.argv[2:])
    else:
        _cuda_error_main(sys.argv[1:])
