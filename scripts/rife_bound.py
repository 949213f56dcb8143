"""The arithmetic and epilogue traffic of RIFE HDv3's tc path (`models/ifnet_tc.py`) at a given size and batch,
and the frames/s they allow at stated convolution rates and memory bandwidth (issue 24's 400 frames/s target).

    PYTHONPATH=src python scripts/rife_bound.py [--size 1920x1088] [--batch 8]

Counts only the convolutions (direct arithmetic, padded widths, both directions) and one epilogue pass per
convolution (read + write its fp16 output, + the skip for a residual); every other pass (resizes, warps, the
input's build, the heads' shuffles) is taken as free, so the figure is an upper bound for this design.
"""

from __future__ import annotations

import argparse

from vidpipe.models.archs.ifnet import IFNetHDv3
from vidpipe.models.ifnet_tc import tc_levels

#: cuDNN fp16 NHWC rates measured on the H100 (docs/benchmarks.md, call 1 of session 7), TFLOP/s: the first
#: layer (16→48 stride 2), the second (48→96 stride 2), the 96→96 blocks (taken for the heads too: optimistic)
RATES = (102.0, 336.0, 576.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1088", help="padded input WxH")
    ap.add_argument("--batch", type=int, default=8, help="pairs per call")
    ap.add_argument("--bandwidth", type=float, default=3.0, help="TB/s the epilogue passes reach")
    a = ap.parse_args()
    w_in, h_in = (int(v) for v in a.size.lower().split("x"))
    levels = tc_levels(IFNetHDv3().eval())
    flop = seconds = traffic = 0.0
    for lv, scale in zip(levels, (4, 2, 1), strict=True):
        h, w = h_in // scale, w_in // scale  # the level's input
        layers = [(lv.conv0[0], False), (lv.conv0[1], False)]
        layers += [(layer, k == 1) for pair in lv.blocks for k, layer in enumerate(pair)]
        layers += [(lv.head0, False), (lv.head1, False)]
        for i, (layer, residual) in enumerate(layers):
            cout, cin = layer.weight.shape[:2]
            if layer.stride == 2:
                h, w = h // 2, w // 2
            px = 2 * a.batch * h * w  # both directions of each pair
            f = px * cout * cin * 9 * 2
            flop += f
            seconds += f / (RATES[min(i, 2)] * 1e12)
            traffic += px * cout * 2 * (3 if residual else 2)
            if layer is lv.head0:  # its ×2 shuffle
                h, w = 2 * h, 2 * w
    epilogue = traffic / (a.bandwidth * 1e12)
    total = seconds + epilogue
    print(f"{a.size}, batch {a.batch}: {flop / 1e12:.2f} TFLOP, epilogue traffic {traffic / 1e9:.1f} GB")
    print(f"convolutions at {'/'.join(f'{r:g}' for r in RATES)} TFLOP/s: {seconds * 1e3:.1f} ms")
    print(f"epilogues at {a.bandwidth:g} TB/s: {epilogue * 1e3:.1f} ms")
    print(f"bound, all other passes free: {total * 1e3:.1f} ms a batch = {a.batch / total:.0f} frames/s")


if __name__ == "__main__":
    main()
