"""A small reader of ONNX model files: the graph's nodes, inputs, outputs and initializers, as numpy arrays.

ONNX files are protobuf messages (onnx/onnx.proto). Reading the few fields a converter needs takes a page of
wire-format decoding, so neither the `onnx` package nor a protobuf runtime is a dependency (tests check this
reader against `onnx`). Wire format: each field is a varint key `number << 3 | wire type`, then a varint (0),
8 bytes (1), a varint length and that many bytes (2: strings, sub-messages, packed arrays) or 4 bytes (5).
Only what `onnx.proto` declares for the fields below is accepted; external data is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ModelError

# Field numbers of onnx.proto (IR version 3 and later)
_MODEL_IR_VERSION, _MODEL_OPSET, _MODEL_PRODUCER, _MODEL_PRODUCER_VERSION, _MODEL_GRAPH = 1, 8, 2, 3, 7
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 1, 2, 3, 4, 5, 7
_ATTR_NAME, _ATTR_F, _ATTR_I, _ATTR_S, _ATTR_T, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS, _ATTR_TYPE = (
    1, 2, 3, 4, 5, 7, 8, 9, 20,
)  # fmt: skip
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_INT32_DATA, _TENSOR_INT64_DATA = 1, 2, 4, 5, 7
_TENSOR_NAME, _TENSOR_RAW_DATA, _TENSOR_DOUBLE_DATA, _TENSOR_DATA_LOCATION = 8, 9, 10, 14
_VALUE_NAME = 1
_DATA_LOCATION_EXTERNAL = 1

#: TensorProto.DataType → numpy dtype, for the types a converter meets
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("u1"),
    3: np.dtype("i1"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    9: np.dtype("?"),
    10: np.dtype("<f2"),
    11: np.dtype("<f8"),
}
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

AttrValue = float | int | bytes | np.ndarray | tuple[float, ...] | tuple[int, ...] | tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class OnnxNode:
    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    domain: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OnnxModel:
    ir_version: int
    #: operator set versions by domain ("" is the default ONNX domain)
    opsets: dict[str, int]
    producer: str
    nodes: tuple[OnnxNode, ...]
    #: initializers by name, in file order (dicts keep insertion order)
    initializers: dict[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("malformed ONNX file: a varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelError("malformed ONNX file: a varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message: ints for varints and fixed-size
    fields (raw bits), byte views for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ModelError(f"malformed ONNX file: field {number} runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            n = 8 if wire == _FIXED64 else 4
            if pos + n > end:
                raise ModelError(f"malformed ONNX file: field {number} runs past the end of its message")
            yield number, wire, int.from_bytes(buf[pos : pos + n], "little")
            pos += n
        else:
            raise ModelError(f"malformed ONNX file: wire type {wire} (field {number}) is not protobuf 3")


def _signed(v: int) -> int:
    """int64 / int32 fields are two's complement in a 64-bit varint."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(v: int | memoryview) -> str:
    return bytes(v).decode() if isinstance(v, memoryview) else ""


def _repeated_ints(items: list[int | memoryview]) -> list[int]:
    """A repeated int64 field, packed (one length-delimited run of varints) or not (one varint a field)."""
    out: list[int] = []
    for item in items:
        if isinstance(item, int):
            out.append(_signed(item))
            continue
        pos = 0
        while pos < len(item):
            v, pos = _varint(item, pos)
            out.append(_signed(v))
    return out


def _repeated_fixed(items: list[int | memoryview], fmt: str) -> list[float]:
    """A repeated float (`fmt` "f") or double ("d") field, packed or not."""
    size = struct.calcsize(fmt)
    out: list[float] = []
    for item in items:
        raw = item.to_bytes(size, "little") if isinstance(item, int) else bytes(item)
        out.extend(struct.unpack(f"<{len(raw) // size}{fmt}", raw))
    return out


def _collect(buf: memoryview) -> dict[int, list[int | memoryview]]:
    fields: dict[int, list[int | memoryview]] = {}
    for number, _wire, value in _fields(buf):
        fields.setdefault(number, []).append(value)
    return fields


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    f = _collect(buf)
    name = _text(f.get(_TENSOR_NAME, [b""])[-1])
    if f.get(_TENSOR_DATA_LOCATION, [0])[-1] == _DATA_LOCATION_EXTERNAL:
        raise ModelError(f"ONNX tensor {name!r} keeps its data in an external file; not supported")
    dims = _repeated_ints(f.get(_TENSOR_DIMS, []))
    data_type = f.get(_TENSOR_DATA_TYPE, [0])[-1]
    dtype = DTYPES.get(int(data_type)) if isinstance(data_type, int) else None
    if dtype is None:
        raise ModelError(f"ONNX tensor {name!r}: data type {data_type} not supported; valid: {sorted(DTYPES)}")
    count = int(np.prod(dims)) if dims else 1
    if _TENSOR_RAW_DATA in f:
        raw = f[_TENSOR_RAW_DATA][-1]
        array = np.frombuffer(bytes(raw) if isinstance(raw, memoryview) else b"", dtype=dtype)
    elif dtype.kind == "f" and dtype.itemsize == 8:
        array = np.array(_repeated_fixed(f.get(_TENSOR_DOUBLE_DATA, []), "d"), dtype=dtype)
    elif dtype == np.dtype("<f4"):
        array = np.array(_repeated_fixed(f.get(_TENSOR_FLOAT_DATA, []), "f"), dtype=dtype)
    elif dtype == np.dtype("<i8"):
        array = np.array(_repeated_ints(f.get(_TENSOR_INT64_DATA, [])), dtype=dtype)
    else:  # int32_data also carries the narrower integer types, bool and (as bit patterns) float16
        ints = _repeated_ints(f.get(_TENSOR_INT32_DATA, []))
        array = np.array(ints, dtype=np.uint16).view(dtype) if dtype.kind == "f" else np.array(ints, dtype=dtype)
    if array.size != count:
        raise ModelError(f"ONNX tensor {name!r}: {array.size} values for shape {dims}")
    return name, array.reshape(dims).copy()


def _attribute(buf: memoryview) -> tuple[str, AttrValue]:
    f = _collect(buf)
    name = _text(f.get(_ATTR_NAME, [b""])[-1])
    kind = f.get(_ATTR_TYPE, [0])[-1]
    # AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, FLOATS 6, INTS 7, STRINGS 8
    if kind == 1:
        return name, struct.unpack("<f", int(f[_ATTR_F][-1]).to_bytes(4, "little"))[0]  # type: ignore[arg-type]
    if kind == 2:
        return name, _signed(int(f[_ATTR_I][-1]))  # type: ignore[arg-type]
    if kind == 3:
        return name, bytes(f[_ATTR_S][-1])  # type: ignore[arg-type]
    if kind == 4:
        return name, _tensor(f[_ATTR_T][-1])[1]  # type: ignore[arg-type]
    if kind == 6:
        return name, tuple(_repeated_fixed(f.get(_ATTR_FLOATS, []), "f"))
    if kind == 7:
        return name, tuple(_repeated_ints(f.get(_ATTR_INTS, [])))
    if kind == 8:
        return name, tuple(bytes(s) for s in f.get(_ATTR_STRINGS, []) if isinstance(s, memoryview))
    raise ModelError(f"ONNX attribute {name!r} of type {kind} (graphs, sparse tensors, …) is not supported")


def _node(buf: memoryview) -> OnnxNode:
    f = _collect(buf)
    return OnnxNode(
        op_type=_text(f.get(_NODE_OP_TYPE, [b""])[-1]),
        name=_text(f.get(_NODE_NAME, [b""])[-1]),
        inputs=tuple(_text(v) for v in f.get(_NODE_INPUT, [])),
        outputs=tuple(_text(v) for v in f.get(_NODE_OUTPUT, [])),
        attributes=dict(_attribute(a) for a in f.get(_NODE_ATTRIBUTE, []) if isinstance(a, memoryview)),
        domain=_text(f.get(_NODE_DOMAIN, [b""])[-1]),
    )


def _value_name(buf: int | memoryview) -> str:
    if not isinstance(buf, memoryview):
        raise ModelError("malformed ONNX file: a graph input or output is not a message")
    return _text(_collect(buf).get(_VALUE_NAME, [b""])[-1])


def parse_onnx(data: bytes) -> OnnxModel:
    """The model in `data` (the bytes of a `.onnx` file)."""
    model = _collect(memoryview(data))
    graphs = model.get(_MODEL_GRAPH, [])
    if len(graphs) != 1 or not isinstance(graphs[0], memoryview):
        raise ModelError("not an ONNX model: no graph (or several) at the top level")
    g = _collect(graphs[0])
    opsets: dict[str, int] = {}
    for item in model.get(_MODEL_OPSET, []):
        if isinstance(item, memoryview):
            o = _collect(item)
            opsets[_text(o.get(_OPSET_DOMAIN, [b""])[-1])] = _signed(int(o.get(_OPSET_VERSION, [0])[-1]))  # type: ignore[arg-type]
    initializers: dict[str, np.ndarray] = {}
    for item in g.get(_GRAPH_INITIALIZER, []):
        name, array = _tensor(item)  # type: ignore[arg-type]
        if name in initializers:
            raise ModelError(f"malformed ONNX file: initializer {name!r} appears twice")
        initializers[name] = array
    producer = " ".join(_text(model.get(k, [b""])[-1]) for k in (_MODEL_PRODUCER, _MODEL_PRODUCER_VERSION)).strip()
    ir_version = model.get(_MODEL_IR_VERSION, [0])[-1]
    return OnnxModel(
        ir_version=ir_version if isinstance(ir_version, int) else 0,
        opsets=opsets,
        producer=producer,
        nodes=tuple(_node(n) for n in g.get(_GRAPH_NODE, []) if isinstance(n, memoryview)),
        initializers=initializers,
        # inputs may also list initializers (IR < 4); the graph inputs proper are the others
        inputs=tuple(n for n in (_value_name(v) for v in g.get(_GRAPH_INPUT, [])) if n not in initializers),
        outputs=tuple(_value_name(v) for v in g.get(_GRAPH_OUTPUT, [])),
    )


def read_onnx(path: Path) -> OnnxModel:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read ONNX model: {e}") from e
    return parse_onnx(data)
