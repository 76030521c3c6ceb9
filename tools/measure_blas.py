#!/usr/bin/env python3
"""fp32 GEMM and matvec speed of MLX's CPU backend, with whatever BLAS fs_mlx bound.

    python tools/measure_blas.py                  # system OpenBLAS if installed
    FSX_OPENBLAS=0 python tools/measure_blas.py   # MLX's bundled BLAS
"""

import time

import fs_mlx  # noqa: F401  (first: the OpenBLAS preload)
import mlx.core as mx
from fs_mlx import openblas

print("BLAS:", openblas.STATUS)
for n in (1024, 2048):
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b, a @ b)
    t = time.perf_counter()
    for _ in range(3):
        mx.eval(a @ b)
    print(f"GEMM {n}x{n}: {2 * n**3 / ((time.perf_counter() - t) / 3) / 1e9:.1f} GFLOPS")
w, x = mx.random.normal((3072, 1024)), mx.random.normal((1, 1024))
mx.eval(w, x, x @ w.T)
t = time.perf_counter()
for _ in range(200):
    mx.eval(x @ w.T)
print(f"matvec 3072x1024: {(time.perf_counter() - t) / 200 * 1e3:.2f} ms")
