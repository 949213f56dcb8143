"""Safe loading: official checkpoint layouts round-trip, pickles that need code are refused before they run,
hashes are checked before parsing, and loads land on the asked device and dtype."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from vidpipe.errors import ModelError
from vidpipe.models.archs.rrdb import RRDBNet
from vidpipe.models.archs.srvgg import SRVGGNetCompact
from vidpipe.models.loading import (
    import_weights,
    load_model,
    load_model_info,
    model_signature,
    read_state_dict,
    sha256_file,
)
from vidpipe.models.spec import ModelSpec

CPU = torch.device("cpu")
#: one fp32 forward pass against another over the same weights: loading may change the weights' memory format,
#: and oneDNN's kernels then sum in another order (a few ulps); the weights themselves must be bit-identical
FP32_RTOL, FP32_ATOL = 1e-4, 1e-5


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k].float(), sb[k].float()) for k in sa), "weights changed in the round trip"


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(1)
    return [
        SRVGGNetCompact(num_feat=32, num_conv=8, scale=4).eval(),
        RRDBNet(num_block=6, num_feat=16, num_grow_ch=8, scale=4).eval(),
        RRDBNet(num_block=2, num_feat=16, num_grow_ch=8, scale=2).eval(),
    ]


def _save(model: torch.nn.Module, path: Path, layout: str) -> Path:
    sd = model.state_dict()
    if layout == "params_ema":  # BasicSR: both generators saved, the EMA one is the one to use
        garbage = {k: torch.full_like(v, 7.0) for k, v in sd.items()}
        torch.save({"params_ema": sd, "params": garbage}, path)
    elif layout == "params":
        torch.save({"params": sd}, path)
    elif layout == "module":  # DataParallel
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    else:
        safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("layout", "suffix"),
    [("params_ema", ".pth"), ("params", ".pth"), ("module", ".pt"), ("safetensors", ".safetensors")],
)
def test_round_trip_gives_identical_outputs(tmp_path: Path, layout: str, suffix: str) -> None:
    x = torch.rand(1, 3, 16, 12)
    for i, model in enumerate(_models()):
        path = _save(model, tmp_path / f"m{i}{suffix}", layout)
        loaded = load_model(path, CPU, torch.float32)
        assert type(loaded) is type(model)
        assert loaded.hparams == model.hparams
        assert not loaded.training
        assert not any(p.requires_grad for p in loaded.parameters())
        _same_weights(loaded, model)
        with torch.inference_mode():
            torch.testing.assert_close(loaded(x), model(x), rtol=FP32_RTOL, atol=FP32_ATOL)


def test_load_on_explicit_dtype_and_info(tmp_path: Path) -> None:
    model = _models()[0]
    path = _save(model, tmp_path / "m.pth", "params_ema")
    info = load_model_info(str(path), CPU, torch.bfloat16)
    assert {p.dtype for p in info.module.parameters()} == {torch.bfloat16}
    assert {p.device for p in info.module.parameters()} == {CPU}
    assert (info.arch, info.scale, info.size_multiple) == ("SRVGGNetCompact", 4, 1)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.signature == model_signature(path, "SRVGGNetCompact", info.params)


# torch warns that the bare stream uses pickle protocol 4 before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    zip_pth = tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "x": Payload()}, zip_pth)
    raw_pth = tmp_path / "evil_raw.pth"  # a bare pickle stream, no torch zip container
    raw_pth.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelError, match=r"refusing .* references posix\.system"):
        load_model(zip_pth, CPU, torch.float32)
    with pytest.raises(ModelError, match="tensor-only"):  # weights-only unpickler stops at the raw stream
        load_model(raw_pth, CPU, torch.float32)
    assert not marker.exists()
    # The payload is real: full unpickling does run it (so the refusal above is what protected us).
    pickle.loads(raw_pth.read_bytes())
    assert marker.exists()


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    """Old checkpoints pickle the whole nn.Module; loading one would import and run arbitrary classes."""
    path = tmp_path / "module.pth"
    torch.save(SRVGGNetCompact(num_feat=4, num_conv=1), path)
    with pytest.raises(ModelError, match="needs full unpickling"):
        read_state_dict(path)


def test_wrong_sha256_is_refused_before_parsing(tmp_path: Path) -> None:
    model = _models()[0]
    path = _save(model, tmp_path / "m.pth", "params_ema")
    good = sha256_file(path)
    assert isinstance(load_model(path, CPU, torch.float32, sha256=good), SRVGGNetCompact)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model(path, CPU, torch.float32, sha256="0" * 64)
    # Not parsed at all: an unreadable file with a wrong hash fails on the hash, not on its content.
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        read_state_dict(junk, sha256="0" * 64)


def test_spec_sha256_checked_in_cache(model_home: Path) -> None:
    model_home.mkdir(parents=True)
    path = _save(_models()[0], model_home / "official.pth", "params_ema")
    kw = {"name": "t", "task": "upscale", "arch": "SRVGGNetCompact", "filename": "official.pth"}
    ok = ModelSpec(scale=4, sha256=sha256_file(path), **kw)
    assert load_model_info(ok, CPU, torch.float32).spec is ok
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model_info(ModelSpec(scale=4, sha256="a" * 64, **kw), CPU, torch.float32)
    with pytest.raises(ModelError, match="registered as ×2"):
        load_model_info(ModelSpec(scale=2, sha256=sha256_file(path), **kw), CPU, torch.float32)
    with pytest.raises(ModelError, match="not in the cache"):
        load_model_info(ModelSpec(scale=4, **{**kw, "filename": "absent.pth"}), CPU, torch.float32)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("m.ckpt", b"whatever", "unsupported weights format"),
        ("m.bin", b"\0" * 16, "import-ncnn"),
        ("m.pth", b"not a checkpoint at all", "tensor-only"),
        ("m.safetensors", b"\x08\0\0\0\0\0\0\0{}garbage", "cannot read"),
    ],
)
def test_other_files_are_refused(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        load_model(path, CPU, torch.float32)


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1), "epoch": 3}}, path)
    with pytest.raises(ModelError, match="not tensors"):
        read_state_dict(path)


def test_signature_tracks_weights_arch_and_params(tmp_path: Path) -> None:
    a, b = SRVGGNetCompact(num_feat=4, num_conv=1).state_dict(), SRVGGNetCompact(num_feat=4, num_conv=1).state_dict()
    params = {"scale": 4}
    s = model_signature(a, "SRVGGNetCompact", params)
    assert s == model_signature(dict(a), "SRVGGNetCompact", dict(params))
    assert s != model_signature(b, "SRVGGNetCompact", params)
    assert s != model_signature(a, "RRDBNet", params)
    assert s != model_signature(a, "SRVGGNetCompact", {"scale": 2})


def test_import_stores_safetensors_and_loads_by_name(model_home: Path, tmp_path: Path) -> None:
    model = _models()[1]
    src = _save(model, tmp_path / "community.pth", "params_ema")
    dest = import_weights(src, "community-x4")
    assert dest == model_home / "community-x4.safetensors"
    assert dest.with_name(dest.name + ".sha256").read_text().split()[0] == sha256_file(dest)
    loaded = load_model("community-x4", CPU, torch.float32)
    x = torch.rand(1, 3, 8, 8)
    _same_weights(loaded, model)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=FP32_RTOL, atol=FP32_ATOL)
    # a tampered cache file no longer matches its pin
    data = bytearray(dest.read_bytes())
    data[-1] ^= 1
    dest.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model("community-x4", CPU, torch.float32)


def test_import_under_a_registered_name_needs_the_official_file(model_home: Path, tmp_path: Path) -> None:
    src = _save(_models()[1], tmp_path / "RealESRGAN_x4plus.pth", "params_ema")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        import_weights(src)
    assert not (model_home / "RealESRGAN_x4plus.pth").exists()
