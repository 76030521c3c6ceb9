"""fsx's CPU kernels (fs_mlx/cpu) against MLX's own ops, one product at a time.

For each weight shape of the default model (SmolLM2-135M, Q4_1 as MLX affine
4-bit, group 32, its Q8_0 tied head as 8-bit) and of Qwen3-0.6B (float32 and
4-bit, group 64), and for 1, 4, 8 and 64 rows of x: the time of one evaluated
product, ours and MLX's, alternating, best and median of --rounds, and the
rate the weight was read at (its bytes as held / time). Wall time, so the
threads count.

    python bench/cpu_kernels.py                  # all shapes, the kernels' default threads
    python bench/cpu_kernels.py --threads 1 --rows 1,8 --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx

from fs_mlx import cpu

# (label, N, K, bits, group); bits 0: float32 weights
SHAPES = [
    ("SmolLM2 q/o 576x576", 576, 576, 4, 32),
    ("SmolLM2 gate+up 3072x576", 3072, 576, 4, 32),
    ("SmolLM2 down 576x1536", 576, 1536, 4, 32),
    ("SmolLM2 head 49152x576 (8-bit)", 49152, 576, 8, 32),
    ("Qwen3 gate 3072x1024 4-bit", 3072, 1024, 4, 64),
    ("Qwen3 gate 3072x1024 f32", 3072, 1024, 0, 0),
]


def timed(fn, reps: int) -> float:
    mx.eval(fn())
    t = time.perf_counter()
    for _ in range(reps):
        mx.eval(fn())
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,4,8,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, help="threads for fsx's kernels (default: theirs)")
    args = ap.parse_args()
    if not cpu.available():
        raise SystemExit(f"fsx's CPU kernels are not available: {cpu.STATUS}")
    if args.threads:
        cpu.set_num_threads(args.threads)
    mx.set_default_device(mx.cpu)
    print(f"{cpu.STATUS}; MLX {mx.__version__}; ms per product, best / median of {args.rounds}")
    print(f"{'shape':<32}{'rows':>5}{'fsx ms':>16}{'MLX ms':>18}{'fsx GB/s':>10}{'speed-up':>10}")
    for label, n, k, bits, group in SHAPES:
        w = mx.random.normal((n, k), key=mx.random.key(0))
        if bits:
            q, s, b = mx.quantize(w, group_size=group, bits=bits)
            mx.eval(q, s, b)
            nbytes = q.nbytes + s.nbytes + b.nbytes
        else:
            mx.eval(w)
            nbytes = w.nbytes
        for m in map(int, args.rows.split(",")):
            x = mx.random.normal((m, k), key=mx.random.key(1))
            mx.eval(x)
            if bits:
                ours = lambda: cpu.quantized_matmul(x, q, s, b, group_size=group, bits=bits)  # noqa: E731
                theirs = lambda: mx.quantized_matmul(x, q, s, b, transpose=True, group_size=group,  # noqa: E731
                                                     bits=bits)
            else:
                ours, theirs = (lambda: cpu.linear(x, w)), (lambda: x @ w.T)
            reps = max(1, int(0.05 / max(timed(ours, 1), 1e-6)))
            a, r = [], []
            for _ in range(args.rounds):
                a.append(timed(ours, reps))
                r.append(timed(theirs, max(1, reps // 10)))
            print(f"{label:<32}{m:>5}{min(a) * 1e3:>8.3f} /{statistics.median(a) * 1e3:>7.3f}"
                  f"{min(r) * 1e3:>9.2f} /{statistics.median(r) * 1e3:>8.2f}"
                  f"{nbytes / min(a) / 1e9:>10.1f}{min(r) / min(a):>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
