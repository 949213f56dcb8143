"""Import ncnn models (`.param` text graph + `.bin` weights) of Real-ESRGAN's two architectures as state dicts
in the official key layout, so `archs/srvgg.py` and `archs/rrdb.py` load them like any checkpoint.

The `.param` format (ncnn wiki, "param and model file structure"): a magic line `7767517`, a line
`layer_count blob_count`, then one layer a line: `type name n_in n_out in… out… k=v…`. An id below -23300
marks an array `-(23300+id)=n,v1,…,vn`. The `.bin` holds each weighted layer's data in layer order.
Convolution weights start with a 4-byte storage tag (fp16, fp32, …); biases and PReLU slopes are raw float32.

The graph is checked, not only its weights: layer kinds, activations, residual coefficients, upsampling and
the tensor sizes must be those of the architecture, and the `.bin` must be consumed to its last byte.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import ModelError
from ..archs import rrdb, srvgg
from ..loading import META_ARCH, META_RESIZE_AFTER, META_SOURCE, build_model, models_dir, save_safetensors

PARAM_MAGIC = 7767517
#: `.bin` storage tags of flagged weight blobs (ncnn `ModelBinFromDataReader::load`, type 0)
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
TAG_FP32_RAW = 0x0002C056
TAG_INT8 = 0x000D4B38

#: layers these two graphs are made of; anything else is refused rather than silently mis-converted
_KNOWN_LAYERS = frozenset(
    {"Input", "Split", "Concat", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp", "Eltwise"}
)
# ncnn enum values used below (src/layer/*.h)
_ACT_NONE, _ACT_LEAKY = 0, 2
_INTERP_NEAREST, _INTERP_BICUBIC = 1, 3
_BINARY_ADD = 0
_ELTWISE_SUM = 1

Value = int | float | tuple[float, ...]


@dataclass(frozen=True, slots=True)
class NcnnLayer:
    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[int, Value] = field(default_factory=dict)

    def get(self, key: int, default: Value) -> Value:
        return self.params.get(key, default)

    def int_(self, key: int, default: int = 0) -> int:
        return int(self.get(key, default))  # type: ignore[arg-type]

    def float_(self, key: int, default: float = 0.0) -> float:
        return float(self.get(key, default))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class NcnnConversion:
    arch: str
    state_dict: dict[str, torch.Tensor]
    #: a bicubic resize the graph applies to the network's output (0.5 and 0.75 in animevideov3-x2/-x3)
    resize_after: float | None = None


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str) -> list[NcnnLayer]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise ModelError(f"not an ncnn text .param: the first line must be {PARAM_MAGIC}")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
        layers = []
        for ln in lines[2:]:
            tok = ln.split()
            n_in, n_out = int(tok[2]), int(tok[3])
            bottoms, tops = tuple(tok[4 : 4 + n_in]), tuple(tok[4 + n_in : 4 + n_in + n_out])
            params: dict[int, Value] = {}
            for kv in tok[4 + n_in + n_out :]:
                k_text, v_text = kv.split("=", 1)
                k = int(k_text)
                if k <= -23300:
                    n, *vals = v_text.split(",")
                    if len(vals) != int(n):
                        raise ValueError(f"array {kv} declares {n} values, has {len(vals)}")
                    params[-k - 23300] = tuple(float(v) for v in vals)
                else:
                    params[k] = _number(v_text)
            layers.append(NcnnLayer(tok[0], tok[1], bottoms, tops, params))
    except (ValueError, IndexError) as e:
        raise ModelError(f"malformed ncnn .param: {e}") from e
    if len(layers) != layer_count:
        raise ModelError(f"ncnn .param declares {layer_count} layers but has {len(layers)}")
    unknown = sorted({layer.type for layer in layers} - _KNOWN_LAYERS)
    if unknown:
        raise ModelError(f"ncnn layers {unknown} not supported; supported: {', '.join(sorted(_KNOWN_LAYERS))}")
    return layers


class _BinReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelError(f"ncnn .bin too short: needs {self.pos + n} bytes, has {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def raw_f32(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def flagged(self, count: int) -> np.ndarray:
        (tag,) = struct.unpack("<I", self._take(4))
        if tag == TAG_FP16:
            data = np.frombuffer(self._take(2 * count), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4)  # fp16 blobs are padded to 4 bytes
            return data
        if tag in (TAG_FP32, TAG_FP32_RAW):
            return self.raw_f32(count)
        kind = "int8" if tag == TAG_INT8 else "quantised (lookup table)"
        raise ModelError(f"ncnn weight storage tag 0x{tag:08X} ({kind}) not supported; valid: fp16, fp32")


@dataclass(slots=True)
class _Conv:
    layer: NcnnLayer
    weight: np.ndarray  # out × in × kh × kw
    bias: np.ndarray | None
    act: int
    act_params: tuple[float, ...]


def _read_conv(layer: NcnnLayer, rd: _BinReader) -> _Conv:
    out, kw = layer.int_(0), layer.int_(1)
    kh = layer.int_(11, kw)
    size = layer.int_(6)
    geometry = {
        "dilation": (layer.int_(2, 1), layer.int_(12, layer.int_(2, 1))),
        "stride": (layer.int_(3, 1), layer.int_(13, layer.int_(3, 1))),
        "pad": (layer.int_(4, 0), layer.int_(14, layer.int_(4, 0))),
    }
    if (kh, kw) != (3, 3) or geometry != {"dilation": (1, 1), "stride": (1, 1), "pad": (1, 1)}:
        raise ModelError(f"ncnn {layer.name}: only 3×3 stride-1 pad-1 convolutions occur here, got {geometry}")
    if layer.int_(8) or layer.int_(19):
        raise ModelError(f"ncnn {layer.name}: int8 or dynamic-weight convolutions are not supported")
    if out <= 0 or size % (out * 9):
        raise ModelError(f"ncnn {layer.name}: weight size {size} is not a multiple of {out}×3×3")
    weight = rd.flagged(size).reshape(out, size // (out * 9), 3, 3)
    bias = rd.raw_f32(out) if layer.int_(5) else None
    act_params = layer.get(10, ())
    return _Conv(layer, weight, bias, layer.int_(9), act_params if isinstance(act_params, tuple) else ())


def _read_weights(layers: Sequence[NcnnLayer], data: bytes) -> list[_Conv | tuple[NcnnLayer, np.ndarray]]:
    """Weighted layers in graph order: convolutions and (PReLU layer, slopes)."""
    rd = _BinReader(data)
    out: list[_Conv | tuple[NcnnLayer, np.ndarray]] = []
    for layer in layers:
        if layer.type == "Convolution":
            out.append(_read_conv(layer, rd))
        elif layer.type == "PReLU":
            out.append((layer, rd.raw_f32(layer.int_(0))))
    if rd.pos != len(data):
        raise ModelError(f"ncnn .bin has {len(data) - rd.pos} bytes left over: it does not belong to this .param")
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _put_conv(state: dict[str, torch.Tensor], prefix: str, conv: _Conv) -> None:
    state[f"{prefix}.weight"] = _t(conv.weight)
    if conv.bias is None:
        raise ModelError(f"ncnn {conv.layer.name}: Real-ESRGAN convolutions have a bias, this one has none")
    state[f"{prefix}.bias"] = _t(conv.bias)


def _expect_act(conv: _Conv, act: int, what: str) -> None:
    slope_ok = act != _ACT_LEAKY or (len(conv.act_params) == 1 and abs(conv.act_params[0] - rrdb.LRELU_SLOPE) < 1e-6)
    if conv.act != act or not slope_ok:
        raise ModelError(f"ncnn {conv.layer.name} ({what}): activation {conv.act} {conv.act_params}, expected {act}")


def _by_type(layers: Sequence[NcnnLayer], kind: str) -> list[NcnnLayer]:
    return [layer for layer in layers if layer.type == kind]


def _convert_srvgg(layers: Sequence[NcnnLayer], weighted: list[_Conv | tuple[NcnnLayer, np.ndarray]]) -> NcnnConversion:
    # conv, prelu, (conv, prelu) × num_conv, conv
    state: dict[str, torch.Tensor] = {}
    for i, item in enumerate(weighted):
        if (i % 2 == 0) != isinstance(item, _Conv):
            raise ModelError("ncnn graph is not SRVGGNetCompact: expected alternating Convolution and PReLU")
        if isinstance(item, _Conv):
            _expect_act(item, _ACT_NONE, "SRVGGNetCompact conv")
            _put_conv(state, f"body.{i}", item)
        else:
            state[f"body.{i}.weight"] = _t(item[1])
    if len(weighted) % 2 != 1:
        raise ModelError("ncnn graph is not SRVGGNetCompact: it must end with a Convolution")
    shuffles = _by_type(layers, "PixelShuffle")
    if len(shuffles) != 1 or shuffles[0].int_(1, 0) != 0:
        raise ModelError("ncnn graph is not SRVGGNetCompact: expected one PyTorch-order PixelShuffle")
    scale = shuffles[0].int_(0)
    interps = _by_type(layers, "Interp")
    nearest = [x for x in interps if x.int_(0) == _INTERP_NEAREST]
    if len(nearest) != 1 or (nearest[0].float_(1), nearest[0].float_(2)) != (scale, scale):
        raise ModelError(f"ncnn graph is not SRVGGNetCompact: expected one nearest ×{scale} Interp of the input")
    if nearest[0].bottoms[0] not in _input_blobs(layers):
        raise ModelError("ncnn graph is not SRVGGNetCompact: the nearest Interp must upsample the input")
    adds = [b for b in _by_type(layers, "BinaryOp") if b.int_(0) == _BINARY_ADD and not b.int_(1)]
    if len(adds) != 1 or set(adds[0].bottoms) != {shuffles[0].tops[0], nearest[0].tops[0]}:
        raise ModelError("ncnn graph is not SRVGGNetCompact: expected one Add of the shuffled and upsampled blobs")
    resize_after = _trailing_resize(layers, [x for x in interps if x is not nearest[0]])
    return NcnnConversion(arch=srvgg.ARCH, state_dict=state, resize_after=resize_after)


def _input_blobs(layers: Sequence[NcnnLayer]) -> set[str]:
    """The graph input and its copies made by Split layers."""
    blobs = {top for layer in layers if layer.type == "Input" for top in layer.tops}
    for layer in layers:
        if layer.type == "Split" and layer.bottoms[0] in blobs:
            blobs.update(layer.tops)
    return blobs


def _trailing_resize(layers: Sequence[NcnnLayer], others: list[NcnnLayer]) -> float | None:
    if not others:
        return None
    last = others[0]
    if len(others) != 1 or last is not layers[-1] or last.int_(0) != _INTERP_BICUBIC or last.int_(6):
        raise ModelError("ncnn graph: only one final bicubic Interp may follow the network")
    if last.float_(1) != last.float_(2) or last.float_(1) <= 0:
        raise ModelError(f"ncnn {last.name}: scales must be equal and positive, got {last.float_(1)}, {last.float_(2)}")
    return last.float_(1)


def _convert_rrdb(layers: Sequence[NcnnLayer], weighted: list[_Conv | tuple[NcnnLayer, np.ndarray]]) -> NcnnConversion:
    convs = [w for w in weighted if isinstance(w, _Conv)]
    if len(convs) != len(weighted):
        raise ModelError("ncnn graph is not RRDBNet: it has PReLU layers")
    up = [
        x for x in _by_type(layers, "Interp") if x.int_(0) == _INTERP_NEAREST and (x.float_(1), x.float_(2)) == (2, 2)
    ]
    if len(up) != 2 or len(_by_type(layers, "Interp")) != 2:
        raise ModelError("ncnn graph is not RRDBNet: expected exactly two nearest ×2 Interp layers")
    # conv_first + 15 per block + conv_body + conv_up1/2 + conv_hr + conv_last
    num_block, rem = divmod(len(convs) - 6, 15)
    if rem or num_block < 1:
        raise ModelError(f"ncnn graph is not RRDBNet: {len(convs)} convolutions is not 6 + 15 × blocks")
    sums = _by_type(layers, "Eltwise")
    coeffs = (rrdb.RESIDUAL_SCALE, 1.0)
    if len(sums) != 4 * num_block or any(
        e.int_(0) != _ELTWISE_SUM or not np.allclose(e.get(1, ()), coeffs) for e in sums
    ):
        raise ModelError(f"ncnn graph is not RRDBNet: expected {4 * num_block} residual sums x·0.2 + skip")
    state: dict[str, torch.Tensor] = {}
    it = iter(convs)
    first = next(it)
    _expect_act(first, _ACT_NONE, "conv_first")
    _put_conv(state, "conv_first", first)
    for b in range(num_block):
        for r in (1, 2, 3):
            for k in range(1, 6):
                conv = next(it)
                _expect_act(conv, _ACT_LEAKY if k < 5 else _ACT_NONE, f"body.{b}.rdb{r}.conv{k}")
                _put_conv(state, f"body.{b}.rdb{r}.conv{k}", conv)
    for name, act in (
        ("conv_body", _ACT_NONE),
        ("conv_up1", _ACT_LEAKY),
        ("conv_up2", _ACT_LEAKY),
        ("conv_hr", _ACT_LEAKY),
        ("conv_last", _ACT_NONE),
    ):
        conv = next(it)
        _expect_act(conv, act, name)
        _put_conv(state, name, conv)
    return NcnnConversion(arch=rrdb.ARCH, state_dict=state)


def convert_ncnn(param: Path, bin_: Path) -> NcnnConversion:
    """State dict (official key layout) of an ncnn SRVGGNetCompact or RRDBNet graph."""
    try:
        layers = parse_param(Path(param).read_text())
        data = Path(bin_).read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read ncnn model: {e}") from e
    weighted = _read_weights(layers, data)
    kinds = {layer.type for layer in layers}
    if "PReLU" in kinds and "PixelShuffle" in kinds:
        conv = _convert_srvgg(layers, weighted)
    elif {"Concat", "Eltwise"} <= kinds:
        conv = _convert_rrdb(layers, weighted)
    else:
        raise ModelError(f"ncnn graph {Path(param).name} is neither SRVGGNetCompact nor RRDBNet")
    # The arch builder re-derives every size from the tensors; a mismatch here means the graph was misread.
    build_model(conv.state_dict, arch=conv.arch)
    return conv


def import_ncnn(param: Path, bin_: Path, name: str) -> Path:
    """Convert an ncnn model into `<model cache>/<name>.safetensors` (sha256 pinned); returns its path."""
    if not name or "/" in name or name.startswith("."):
        raise ModelError(f"invalid model name {name!r}: use a plain file stem such as 'realesr-animevideov3-x4'")
    conv = convert_ncnn(param, bin_)
    meta = {
        META_ARCH: conv.arch,
        META_SOURCE: f"ncnn:{Path(param).name}+{Path(bin_).name}",
        "vidpipe.source_bin_sha256": hashlib.sha256(Path(bin_).read_bytes()).hexdigest(),
    }
    if conv.resize_after is not None:
        meta[META_RESIZE_AFTER] = repr(conv.resize_after)
    return save_safetensors(conv.state_dict, models_dir() / f"{name}.safetensors", meta)
