"""Time BasicVSR++'s deformable convolution (issue 18) on a CUDA machine: torchvision's kernel, ours and the Triton
kernel, each on one 1024×432 alignment layer (128 → 64 channels, 16 deformable groups, 3×3, padding 1) in the
network's layout (channels-last features, offsets and mask as channel slices of the offset conv's output), with
CUDA events; and each one's largest error against torchvision's fp32 on the same (rounded) inputs.

    PYTHONPATH=src python scripts/bench_deform.py [--size 1024x432] [--iters 20] [--no-ours]

(`--device cpu` with TRITON_INTERPRET=1 and a tiny `--size` only checks the script itself; without torchvision the
reference is ours in fp32.)

Rows: "torchvision fp32 (raw)" is the op alone on NCHW fp32 tensors (the seed's baseline layer); "torchvision fp16"
is `deform_conv2d(backend="torchvision")` as the fp16 channels-last network calls it (the fp32 conversions
included). The first Triton call of a dtype autotunes (`TRITON_PRINT_AUTOTUNING=1` prints the configs' times).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vidpipe.models.archs import deform

CHANNELS, OUT, GROUPS, TAPS = 128, 64, 16, 9


def inputs(n: int, h: int, w: int, dev: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """x, offset, weight, bias, mask in fp32 on `dev`, the network's layout; offsets flow-sized."""
    cl = torch.channels_last
    x = torch.randn(n, CHANNELS, h, w, device=dev, generator=gen).contiguous(memory_format=cl)
    conv_out = torch.randn(n, 3 * GROUPS * TAPS, h, w, device=dev, generator=gen).contiguous(memory_format=cl)
    offset = conv_out[:, : 2 * GROUPS * TAPS].mul_(8)
    mask = torch.sigmoid(conv_out[:, 2 * GROUPS * TAPS :])
    weight = torch.randn(OUT, CHANNELS, 3, 3, device=dev, generator=gen) * 0.03
    bias = torch.randn(OUT, device=dev, generator=gen)
    return x, offset, weight, bias, mask


def timed(fn: Callable[[], torch.Tensor], iters: int, cuda: bool, warmup: int = 3) -> tuple[float, torch.Tensor]:
    """Median milliseconds of `fn` over `iters` calls (CUDA events; wall clock on CPU), and its last output."""
    out = fn()
    for _ in range(warmup):
        out = fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if not cuda:
            t0 = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x432", help="W×H of the feature map (BasicVSR++'s input size)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-ours", action="store_true", help="skip our torch implementation (slow)")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark); cpu only checks the script")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 rows as the seed ran them (PyTorch's default)
    torch.backends.cudnn.allow_tf32 = False
    tv = deform._torchvision_op()
    if tv is None and cuda:
        raise SystemExit("torchvision does not import here: the baseline needs it")
    op: Callable[..., torch.Tensor] = tv or (
        lambda x, o, wt, b, padding, mask: deform.deform_conv2d(x, o, wt, b, mask=mask, padding=padding, backend="ours")
    )
    from vidpipe.models.archs import deform_triton

    full = inputs(args.batch, h, w, dev, torch.Generator(device=dev).manual_seed(0))
    name = torch.cuda.get_device_name() if cuda else "CPU (script check only)"
    print(f"{name}, torch {torch.__version__}; {args.batch}×{CHANNELS}×{h}×{w} → {OUT}, "
          f"{GROUPS} deformable groups, 3×3; median of {args.iters}")  # fmt: skip
    print(f"| {'kernel':<28} | {'ms':>8} | {'× torchvision fp32':>18} | {'max err / max':>13} |")
    print(f"|{'-' * 30}|{'-' * 9}:|{'-' * 19}:|{'-' * 14}:|")
    reference: dict[torch.dtype, torch.Tensor] = {}
    base_ms = None

    def row(name: str, dtype: torch.dtype, fn: Callable[[], torch.Tensor]) -> None:
        nonlocal base_ms
        ms, out = timed(fn, args.iters, cuda)
        want = reference[dtype]
        err = (out.float() - want).abs().max().item() / want.abs().max().item()
        base_ms = base_ms or ms
        print(f"| {name:<28} | {ms:8.3f} | {base_ms / ms:18.2f} | {err:13.2e} |", flush=True)

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x, offset, weight, bias, mask = (t.to(dtype) for t in full)
        # torchvision's fp32 result on these (rounded) inputs, NCHW contiguous as its kernel reads them
        raw = [t.float().contiguous() for t in (x, offset, weight, bias, mask)]
        reference[dtype] = op(*raw[:4], padding=(1, 1), mask=raw[4])
        geometry = {"mask": mask, "padding": 1}
        if dtype == torch.float32:
            row("torchvision fp32 (raw)", dtype, lambda raw=raw: op(*raw[:4], padding=(1, 1), mask=raw[4]))
        label = str(dtype).removeprefix("torch.").replace("float", "fp").replace("bfp16", "bf16")
        for backend in ("torchvision", "triton", "ours"):
            if (backend == "ours" and (args.no_ours or dtype == torch.bfloat16)) or (
                backend == "torchvision" and tv is None
            ):
                continue
            row(
                f"{backend} {label}",
                dtype,
                lambda x=x, offset=offset, weight=weight, bias=bias, geometry=geometry, backend=backend: (
                    deform.deform_conv2d(x, offset, weight, bias, backend=backend, **geometry)
                ),
            )
        if dtype == torch.float32:  # the kernel's fp32 with TF32 allowed (one TF32 product, not three)
            torch.backends.cuda.matmul.allow_tf32 = True
            row("triton fp32 (tf32)", dtype, lambda x=x, offset=offset, weight=weight, bias=bias, geometry=geometry: (
                deform.deform_conv2d(x, offset, weight, bias, backend="triton", **geometry)
            ))  # fmt: skip
            torch.backends.cuda.matmul.allow_tf32 = False
    best = getattr(deform_triton._dcn_kernel, "best_config", None)
    print(f"Triton config chosen (last shape tuned): {best}")


if __name__ == "__main__":
    main()
