"""BasicVSR++ (Chan et al., CVPR 2022; OpenMMLab mmagic, formerly mmediting; Apache-2.0): ×4 video
super-resolution, the official checkpoints of the c64n7 models (64 channels, 7 residual blocks per branch).

The files are on OpenMMLab's download server under `mmediting/restorers/basicvsr_plusplus/`. OpenMMLab names a
published checkpoint `<name>-<first 8 hex digits of its sha256>.pth` (mmcv's `publish_model`); the full digests
are not published. Those below are the ones a third-party project lists for these files (a README of weights it
converts); each begins with its file name's 8 digits, and they could not be checked here (no network beyond
package registries). A download whose digest differs is refused, as for every registered model.

We know of no PyPI wheel that ships them (`vsbasicvsrpp`, by its README, downloads them at run time), so there
is no offline source: tests use random weights in the official layout. An mmcv checkpoint is `{"meta": …,
"state_dict": {"generator.<key>": …}}`, the training wrapper's `step_counter` beside the generator's keys; the
architecture's `canonical` drops the prefix and every key without it.
"""

from __future__ import annotations

from .archs.basicvsrpp import ARCH
from .spec import ModelSpec, register_model

LICENCE = "Apache-2.0"
_BASE = "https://download.openmmlab.com/mmediting/restorers/basicvsr_plusplus"


def _spec(name: str, filename: str, sha256: str, description: str) -> ModelSpec:
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
            url=f"{_BASE}/{filename}",
            sha256=sha256,
            format="pth",
            filename=filename,
            description=description,
        )
    )


REDS4 = _spec(
    "basicvsrpp-reds4",
    "basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth",
    "db622b2fd4caae0a4c63ab5e54f1cfef7a62a0f3b8ad101aba2eae068d928549",
    "BasicVSR++ ×4 trained on REDS (bicubic ×4 degradation): 7.3 M parameters; REDS4 32.39 dB (RGB)",
)
VIMEO90K_BI = _spec(
    "basicvsrpp-vimeo90k-bi",
    "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bi_20210305-4ef437e2.pth",
    "4ef437e27e7ed468853d9bad2e7a02e50fd4582c986a5cb4231054b0021b2e81",
    "BasicVSR++ ×4 trained on Vimeo-90K, bicubic (BI) ×4 degradation",
)
VIMEO90K_BD = _spec(
    "basicvsrpp-vimeo90k-bd",
    "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bd_20210305-ab315ab1.pth",
    "ab315ab1d83d09834d43c8ba17d019282a93f0cbf40bfd49be99dfcebf4c12eb",
    "BasicVSR++ ×4 trained on Vimeo-90K, blur + downsample (BD) ×4 degradation",
)
