"""`vidpipe bench vsr` at a tiny size on the CPU with a small random BasicVSR: the seed's baseline is what the
seed describes (fp32, chunks with no overlap, one PNG per output frame holding that chunk's output), ours writes
every frame at ×4, RSS figures and the flags are right, and the command prints the side-by-side table. The
figures that matter are an H100's (the lead runs it there); this checks the command works anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vidpipe.bench.vsr import (
    HEADER,
    OURS_FLAGS,
    TORCH_DEFAULT_FLAGS,
    dtype_psnr,
    generated_input,
    ours,
    rss_slope,
    seed_baseline,
)
from vidpipe.cli import app as cli_app
from vidpipe.errors import UsageError
from vidpipe.media.probe import probe
from vidpipe.models.loading import load_model_info
from vidpipe.runtime.device import math_flags
from vidpipe.stages.registry import random_basicvsr

TINY = (32, 24)
CPU = torch.device("cpu")


def test_rss_slope_is_mb_per_minute_after_the_start():
    flat = [(t, 500) for t in np.arange(0, 60, 0.25)]
    assert rss_slope(flat) == pytest.approx(0.0, abs=1e-9)
    # a start-up jump in the first 10 % is not growth; 10 MB per minute after it is
    growing = [(t, (100 if t < 5 else 900) + int(10 * t / 60 * 100) / 100) for t in np.arange(0, 120, 0.25)]
    assert rss_slope(growing) == pytest.approx(10.0, abs=0.2)
    assert rss_slope([]) == 0.0 and rss_slope([(0.0, 1), (1.0, 2)]) == 0.0


def test_math_flags_are_set_in_the_block_and_restored():
    b = torch.backends
    before = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
    with math_flags(**OURS_FLAGS):
        assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark) == (True, True, True)
    with math_flags(**TORCH_DEFAULT_FLAGS):
        assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark) == (False, True, False)
    assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark) == before


def _pngs(folder: Path) -> list[np.ndarray]:
    out = []
    for p in sorted(folder.glob("*.png")):
        with av.open(str(p)) as c:
            out.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
    return out


def test_seed_baseline_writes_each_chunks_output_as_pngs(tmp_path: Path):
    src, frames = generated_input(tmp_path, TINY, 7 / 25)
    model = random_basicvsr()
    res = seed_baseline(src, model, device=CPU, out_dir=tmp_path / "png", max_seq_len=3)
    assert (res.frames, res.size, res.dtype, res.calls) == (7, TINY, "fp32", "chunk 3")
    assert res.wall_s > 0 and res.peak_mb > 0
    got = _pngs(tmp_path / "png")
    assert [p.name for p in sorted((tmp_path / "png").glob("*.png"))][:2] == ["00000000.png", "00000001.png"]
    # what the seed's runner computes: each chunk of 3 frames alone (no overlap), fp32, rounded to 8 bits
    with av.open(str(src)) as c:
        lr = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    net = load_model_info(model, CPU, torch.float32, task="vsr").module
    x = torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        want = torch.cat([net(x[k : k + 3][None])[0] for k in range(0, frames, 3)])
    want_u8 = (want.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert len(got) == frames and got[0].shape == (96, 128, 3)
    assert all(np.array_equal(g, w) for g, w in zip(got, want_u8, strict=True))
    # and not the whole sequence in one call: chunks without overlap differ at the cuts
    with torch.no_grad():
        whole = (net(x[None])[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert not np.array_equal(whole[2:4], want_u8[2:4])
    with pytest.raises(UsageError, match="baseline-seq-len"):
        seed_baseline(src, model, device=CPU, out_dir=tmp_path / "x", max_seq_len=0)


def test_ours_runs_the_stage_end_to_end(tmp_path: Path):
    src, frames = generated_input(tmp_path, TINY, 6 / 25)
    res = ours(src, random_basicvsr(), size=TINY, device=CPU, work_dir=tmp_path, window=4, overlap=1,
               encoder="ffv1")  # fmt: skip
    assert (res.frames, res.size, res.dtype, res.calls) == (frames, TINY, "fp32", "4 + 2·1")
    out = next(tmp_path.glob("vsr-ours-*.mkv"))
    info = probe(out).video
    assert (info.width, info.height, info.frames) == (128, 96, frames)
    assert res.fps == pytest.approx(frames / res.wall_s)


def test_ours_takes_the_encoder_count_asked_for(tmp_path: Path):
    """`--encode-workers`: the run's parallel chunk encoders as asked (the host RSS of a 4K output is mostly x264's)."""
    src, frames = generated_input(tmp_path, TINY, 6 / 25)
    res = ours(src, random_basicvsr(), size=TINY, device=CPU, work_dir=tmp_path, window=4, overlap=1,
               encoder="h264", encode_workers=2)  # fmt: skip
    assert res.name == "ours (h264, 2 encoders)" and res.frames == frames
    manifest = json.loads(next(tmp_path.glob("vsr-ours-*.mkv.json")).read_text())
    assert manifest["encoder"]["parallel"].startswith("2 encoders")


def test_dtype_psnr_against_fp32_leaves_out_what_the_device_cannot_run():
    q = dtype_psnr(random_basicvsr(), device=CPU, size=TINY, frames=3)
    assert list(q.psnr) == ["bf16"]  # fp16 is refused on the CPU (stages.base.resolve_dtype)
    (values,) = q.psnr.values()
    assert len(values) == 3 and all(20 < v < 100 for v in values)  # rounded, not identical, not broken
    assert "bf16: min" in "\n".join(q.lines())


def test_cli_prints_both_runs_and_the_ratio(tmp_path: Path):
    model = str(random_basicvsr())
    args = ["bench", "vsr", "--device", "cpu", "--size", "32x24", "--seconds", "0.2", "--model", model,
            "--window", "2", "--overlap", "1", "--baseline-seq-len", "2", "--encoder", "ffv1",
            "--quality-model", model, "--quality-frames", "2", "--work-dir", str(tmp_path)]  # fmt: skip
    r = CliRunner().invoke(cli_app.app, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert HEADER.splitlines()[0] in lines
    rows = [ln for ln in lines if ln.startswith("| ours") or ln.startswith("| seed baseline")]
    assert len(rows) == 2 and all("| 32x24 | 5 |" in ln for ln in rows)
    assert any(ln.startswith("ours / seed baseline: **") for ln in lines)
    assert any(ln.strip().startswith("bf16: min") for ln in lines)
    assert not list((tmp_path / "vsr-baseline-png").glob("*.png"))  # cleaned up after the run


@pytest.mark.gpu
def test_both_runs_on_cuda_with_basicvsrpp(tmp_path: Path):
    """The benchmark's own model (BasicVSR++, random weights) on the GPU at a small size: ours in fp16, the
    baseline in fp32, every frame out of both, and the ratio printed."""
    from vidpipe.bench.vsr import run_vsr_bench

    lines = list(run_vsr_bench(device=torch.device("cuda"), size=(128, 54), seconds=1.0, window=8, overlap=2,
                               baseline_seq_len=10, quality_model=None, work_dir=tmp_path))  # fmt: skip
    ours_row = next(ln for ln in lines if ln.startswith("| ours"))
    seed_row = next(ln for ln in lines if ln.startswith("| seed baseline"))
    assert "| 128x54 | 25 | fp16 | 8 + 2·2 |" in ours_row
    assert "| 128x54 | 25 | fp32 | chunk 10 |" in seed_row
    assert any(ln.startswith("ours / seed baseline: **") for ln in lines)
