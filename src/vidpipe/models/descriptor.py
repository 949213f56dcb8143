"""Architectures and model descriptors: what a weights file is, told by its tensors, not by its name.

The design follows spandrel's `Architecture` / `ImageModelDescriptor` (no code taken): each architecture file
(`models/archs/*.py`) registers one `Architecture` in one place — how to recognise its state dict, how to bring
another release's layout into ours, how to build the module from tensor shapes, and what the network can do
(task, dtypes, tiling advice). Loading (`models.loading`) returns a `ModelDescriptor`: the module with those
capabilities and the scale and size multiple read from the built network. The descriptor is the source of truth
for what a model is for, so a weights file given to the wrong stage is refused whatever it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ModelError, UsageError
from .spec import Task

if TYPE_CHECKING:  # this module runs without torch; only the built modules need it
    import torch
    from torch import nn

DTypeName = Literal["fp32", "fp16", "bf16"]
ALL_DTYPES: tuple[DTypeName, ...] = ("fp32", "fp16", "bf16")
#: how to run a network on a frame larger than the memory allows (spandrel's `ModelTiling`):
#: "supported": tiles with context give the whole frame's result (local receptive field: SR nets);
#: "discouraged": the network needs the whole frame (RIFE's flow pyramid sees motion across it), never tiled;
#: "internal": the stage feeds the network a fixed input it makes itself (TransNetV2's 48×27 frames), never tiles.
Tiling = Literal["supported", "discouraged", "internal"]

StateDict = Mapping[str, "torch.Tensor"]


def _same(state: StateDict) -> dict[str, torch.Tensor]:
    return dict(state)


@dataclass(frozen=True, slots=True, kw_only=True)
class Architecture:
    """One network family, registered by its file in `models/archs/` with `register_architecture`."""

    name: str
    task: Task
    #: True for a state dict of this family, in any layout `canonical` accepts (keys without `module.`)
    detect: Callable[[StateDict], bool]
    #: the module shaped like a canonical state dict, hyper-parameters from tensor shapes; weights may be left
    #: unloaded (the loader assigns them, strictly, after `canonical`). The module exposes `scale` (1 unless
    #: super-resolution), `size_multiple` (input H and W must be multiples of it) and `hparams` (a dict)
    build: Callable[[StateDict], nn.Module]
    #: the state dict in our key layout: another release's names mapped, training-only parts dropped
    canonical: Callable[[StateDict], dict[str, torch.Tensor]] = _same
    #: compute dtypes the network runs correctly in
    dtypes: tuple[DTypeName, ...] = ALL_DTYPES
    tiling: Tiling = "supported"
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDescriptor:
    """A loaded network and what it can do. `module` holds the weights; the rest is read from it and from its
    `Architecture`, never from a registry name or a file name."""

    module: nn.Module
    architecture: Architecture
    scale: int
    size_multiple: int
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.architecture.name

    @property
    def task(self) -> Task:
        return self.architecture.task

    @property
    def dtypes(self) -> tuple[DTypeName, ...]:
        return self.architecture.dtypes

    @property
    def tiling(self) -> Tiling:
        return self.architecture.tiling

    def check_task(self, task: Task | None, what: object) -> None:
        """`what` (a file or name, for the message) must hold a model of `task` (None: any)."""
        if task is not None and self.task != task:
            valid = ", ".join(a.name for a in architectures(task)) or "none"
            raise ModelError(
                f"{what} holds a model for {self.task} ({self.arch}), not for {task}; architectures for {task}: {valid}"
            )

    def check_dtype(self, dtype: str, what: object, allowed: tuple[str, ...] = ALL_DTYPES) -> None:
        """`dtype` must be one the network supports (and `allowed`, e.g. its registry entry's `dtypes`)."""
        valid = [d for d in self.dtypes if d in allowed]
        if dtype not in valid:
            raise UsageError(f"{what} ({self.arch}) does not run in {dtype}; valid --dtype: {', '.join(valid)}")


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    if _ARCHITECTURES.get(arch.name, arch) != arch:
        raise ModelError(f"architecture {arch.name!r} registered twice with different descriptions")
    _ARCHITECTURES[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(_ARCHITECTURES)) or "(none registered)"
        raise ModelError(f"unknown architecture {name!r}; valid: {valid}") from None


def architectures(task: Task | None = None) -> list[Architecture]:
    """Registered architectures (of `task`), in registration order (the order `detect_architecture` tries)."""
    return [a for a in _ARCHITECTURES.values() if task is None or a.task == task]


def detect_architecture(state: StateDict) -> Architecture:
    found = [a for a in _ARCHITECTURES.values() if a.detect(state)]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(sorted(state)[:4])
    if found:  # two detectors claiming one file is a bug in their `detect`, not the user's
        raise ModelError(f"the keys ({keys}, …) fit several architectures: {', '.join(a.name for a in found)}")
    raise ModelError(f"cannot tell the architecture from the keys ({keys}, …); supported: {', '.join(_ARCHITECTURES)}")
