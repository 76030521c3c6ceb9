"""`python -m fs_mlx.msl` (`fsx msl-demo`): run the project's RMSNorm kernel
through the executor and print what every thread computed on the way.

A Metal kernel cannot print, so the way to look inside one is the same here
as on a Mac: give it an extra output buffer and write intermediate values into
it, one slot per thread. The demo does that for the row reduction every
normalization kernel does (per-thread partial sums, simd_sum within each SIMD
group, a threadgroup reduce across groups) and checks the result with numpy.

    python -m fs_mlx.msl                      # 1 row of 300: 96 threads, 4 elements each
    python -m fs_mlx.msl --dim 1000 --threadgroup 128 --order random
    python -m fs_mlx.msl --show-source        # the kernel source MLX would compile
    python -m fs_mlx.msl --bench              # compile / load / run times on this machine
"""

from __future__ import annotations

import argparse

import mlx.core as mx
import numpy as np

from fs_mlx.msl import metal_kernel, settings

# The demo runs the project's own RMSNorm (metal/rms_norm.metal with its
# header metal/common.h), with a `dbg` output of 4 floats per thread added:
#   0: this thread's sum of squares   1: its SIMD group's sum (simd_sum)
#   2: the row's sum of squares       3: the 1/rms factor the thread applies
# The lines are inserted after the kernel computes `inv`; the rest is the
# kernel exactly as the model runs it.
DEBUG_ANCHOR = "float inv = "
DEBUG_LINES = """
// (msl-demo) what this thread saw, 4 floats per thread
device float* my_dbg = dbg + (size_t(row) * tg + tid) * 4;
my_dbg[0] = acc;
my_dbg[1] = simd_sum(acc);
my_dbg[2] = total;
my_dbg[3] = inv;
"""


def debug_rms_norm_source() -> tuple[str, str]:
    """(body, header): metal/rms_norm.metal with the dbg writes after its `inv` line."""
    from fs_mlx.kernels import source

    body = source("rms_norm")
    at = body.find(DEBUG_ANCHOR)
    if at < 0:
        raise RuntimeError(f"metal/rms_norm.metal has no line starting `{DEBUG_ANCHOR}` to add the demo's dbg writes after")
    end = body.index("\n", at) + 1
    return body[:end] + DEBUG_LINES + body[end:], source("common.h")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fs_mlx.msl", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--dim", type=int, default=300, help="row length D")
    p.add_argument("--threadgroup", type=int, default=None,
                   help="threads per row (<= 1024; default: the model's, D/4 rounded up to SIMD groups)")
    p.add_argument("--order", choices=["forward", "reverse", "random"], default="forward",
                   help="order the fibers run in (a cheap race detector)")
    p.add_argument("--show-source", action="store_true", help="print the generated kernel source")
    p.add_argument("--bench", action="store_true", help="measure compile, cached load and run time instead")
    args = p.parse_args(argv)
    if args.bench:
        from fs_mlx.msl.bench import bench, report

        print(report(bench()))
        return 0

    from fs_mlx.kernels.norm import norm_geometry

    rows, D = args.rows, args.dim
    tg = args.threadgroup or norm_geometry(rows, D)[1][0]
    x = mx.random.normal((rows, D), key=mx.random.key(0))
    w = mx.ones((D,))
    body, header = debug_rms_norm_source()
    kernel = metal_kernel("rms_norm_demo", ["x", "w", "eps"], ["out", "dbg"], body, header=header)
    with settings(order=args.order):
        out, dbg = kernel(
            inputs=[x, w, mx.array(1e-6, dtype=mx.float32)], template=[("T", mx.float32)], grid=(rows * tg, 1, 1), threadgroup=(tg, 1, 1),
            output_shapes=[(rows, D), (rows * tg, 4)], output_dtypes=[mx.float32, mx.float32],
            verbose=args.show_source,
        )
    dbg = np.array(dbg).reshape(rows, tg, 4)
    xs = np.array(x, np.float64)
    print(f"RMSNorm of {rows}x{D}: {rows} threadgroup(s) of {tg} threads = "
          f"{(tg + 31) // 32} SIMD group(s) each, order={args.order}\n")
    for r in range(rows):
        print(f"row {r}")
        print("  thread  simdgroup  lane  own sum(x^2)  simd_sum  row sum(x^2)  1/rms")
        for t in range(tg):
            if t < 4 or t % 32 in (0, 31) or t == tg - 1:
                a, b, c, d = dbg[r, t]
                print(f"  {t:6d}  {t // 32:9d}  {t % 32:4d}  {a:12.5f}  {b:8.4f}  {c:12.4f}  {d:.6f}")
        ref_ss = float((xs[r] ** 2).sum())
        print(f"  numpy: sum(x^2) = {ref_ss:.4f}, 1/rms = {1 / np.sqrt(ref_ss / D + 1e-6):.6f}\n")
    ref = xs / np.sqrt((xs**2).mean(axis=1, keepdims=True) + 1e-6)
    err = float(np.abs(np.array(out) - ref).max())
    print(f"max |kernel - numpy| over the output: {err:.2e}")
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
