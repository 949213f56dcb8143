"""Import the official RVM ONNX exports (`rvm_mobilenetv3_fp32.onnx`, `rvm_resnet50_fp32.onnx`) as state dicts in
the official PyTorch key layout, so `archs/rvm.py` loads them like `rvm_*.pth`.

The exporter folded every batch norm into the convolution before it and gave those convolutions generated names
("824", "825", …); only the convolutions without a batch norm keep their PyTorch names. So weights are matched by
layer order: the graph's Conv nodes, each weight taken once (the refiner's box filter is applied four times), in
node order, against our network's convolutions in the order its forward pass first uses them (the order the
export traced). Every pair must agree on kernel shape, stride, padding, dilation and groups, a named weight must
carry our key, and a folded convolution must have a bias. A folded convolution's bias becomes the batch norm's
bias with the norm set to identity (weight 1, mean 0, variance 1 − eps), so the network stays the official one.

The export has no segmentation head (`project_seg`): the converted model is built without it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import ModelError
from ..archs import rvm
from ..loading import META_ARCH, META_SOURCE, build_model, models_dir, save_safetensors
from .onnx import OnnxModel, read_onnx

#: graph inputs and outputs of the official export (RobustVideoMatting `onnx` branch, export_onnx.py)
INPUTS = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
#: first convolution's weight shape → backbone (MobileNetV3's 3×3 stem, ResNet-50's 7×7)
_STEMS: dict[tuple[int, ...], rvm.Backbone] = {(16, 3, 3, 3): "mobilenetv3", (64, 3, 7, 7): "resnet50"}


def _conv_weights(model: OnnxModel) -> list[tuple[str, str | None, dict]]:
    """(weight name, bias name or None, attributes) of each Conv's weight, first use first."""
    seen: set[str] = set()
    out = []
    for node in model.nodes:
        if node.op_type != "Conv":
            continue
        weight = node.inputs[1]
        if weight in seen:
            continue
        if weight not in model.initializers:
            raise ModelError(f"ONNX Conv {node.name or node.outputs[0]}: weight {weight!r} is not an initializer")
        seen.add(weight)
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        out.append((weight, bias, node.attributes))
    return out


def _check_geometry(name: str, conv: nn.Conv2d, attrs: dict) -> None:
    kernel = tuple(conv.kernel_size)
    pad = tuple(conv.padding)  # type: ignore[arg-type]
    ours = {
        "kernel_shape": kernel,
        "strides": tuple(conv.stride),
        "dilations": tuple(conv.dilation),
        "pads": pad + pad,  # ONNX: begins then ends
        "group": conv.groups,
    }
    theirs = {
        "kernel_shape": tuple(attrs.get("kernel_shape", kernel)),
        "strides": tuple(attrs.get("strides", (1, 1))),
        "dilations": tuple(attrs.get("dilations", (1, 1))),
        "pads": tuple(attrs.get("pads", (0, 0, 0, 0))),
        "group": attrs.get("group", 1),
    }
    if ours != theirs:
        raise ModelError(f"ONNX graph does not match RVM at {name}: ONNX {theirs}, ours {ours}")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def convert_rvm_onnx(model: OnnxModel) -> dict[str, torch.Tensor]:
    """The state dict (official RVM key layout, no segmentation head) of an official RVM ONNX export."""
    if model.inputs != INPUTS or model.outputs != OUTPUTS:
        raise ModelError(
            f"not an RVM export: inputs {list(model.inputs)}, outputs {list(model.outputs)}; expected"
            f" {list(INPUTS)} → {list(OUTPUTS)}"
        )
    weights = _conv_weights(model)
    stem = tuple(model.initializers[weights[0][0]].shape) if weights else ()
    if stem not in _STEMS:
        raise ModelError(f"RVM export with an unknown backbone: first convolution {stem}; valid: {list(_STEMS)}")
    net = rvm.MattingNetwork(_STEMS[stem])
    modules = dict(net.named_modules())
    order = rvm.forward_conv_order(net)
    norms = rvm.conv_norm_pairs(net)
    if len(order) != len(weights):
        raise ModelError(f"ONNX graph has {len(weights)} convolution weights; RVM {net.variant} has {len(order)}")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assigned: set[str] = set()
    for name, (w_name, b_name, attrs) in zip(order, weights, strict=True):
        conv = modules[name]
        assert isinstance(conv, nn.Conv2d)
        weight = model.initializers[w_name]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ModelError(f"ONNX weight {w_name!r} {weight.shape} does not fit {name} {tuple(conv.weight.shape)}")
        if not w_name.isdigit() and w_name != f"{name}.weight":
            raise ModelError(f"ONNX weight {w_name!r} sits where RVM has {name}.weight: layer order differs")
        _check_geometry(name, conv, attrs)
        state[f"{name}.weight"] = _t(weight)
        assigned.add(f"{name}.weight")
        bias = model.initializers.get(b_name) if b_name else None
        if b_name and bias is None:
            raise ModelError(f"ONNX Conv bias {b_name!r} of {name} is not an initializer")
        norm = norms[name]
        if conv.bias is not None:
            if bias is None:
                raise ModelError(f"ONNX convolution for {name} has no bias; RVM's has one")
            state[f"{name}.bias"] = _t(bias)
            assigned.add(f"{name}.bias")
        elif norm is not None:
            if bias is None:
                raise ModelError(f"ONNX convolution for {name} has no bias: its batch norm was not folded into it")
            bn = modules[norm]
            assert isinstance(bn, nn.BatchNorm2d)
            # identity norm: (x − 0) / sqrt(1 − eps + eps) · 1 + bias
            ones = torch.ones_like(bn.weight)
            for key, value in {
                "weight": ones,
                "bias": _t(bias),
                "running_mean": torch.zeros_like(ones),
                "running_var": ones - bn.eps,
                "num_batches_tracked": torch.zeros((), dtype=torch.long),
            }.items():
                state[f"{norm}.{key}"] = value
                assigned.add(f"{norm}.{key}")
        elif bias is not None:
            raise ModelError(f"ONNX convolution for {name} has a bias; RVM's {name} has neither bias nor batch norm")
    missing = sorted(set(state) - assigned)
    if missing:
        raise ModelError(f"the ONNX graph left RVM weights unset: {missing[:5]}")
    return state


def import_rvm_onnx(path: Path, name: str) -> Path:
    """Convert an RVM ONNX export into `<model cache>/<name>.safetensors` (sha256 pinned); returns its path."""
    if not name or "/" in name or name.startswith("."):
        raise ModelError(f"invalid model name {name!r}: use a plain file stem such as 'rvm-mobilenetv3'")
    path = Path(path)
    state = convert_rvm_onnx(read_onnx(path))
    build_model(state, arch=rvm.ARCH)  # refuse to cache anything that does not load
    meta = {
        META_ARCH: rvm.ARCH,
        META_SOURCE: f"onnx:{path.name}",
        "vidpipe.source_onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return save_safetensors(state, models_dir() / f"{name}.safetensors", meta)
