"""RMSNorm and the fused residual-add + RMSNorm.

    rms_norm(x, weight, eps)                 x [..., D] -> [..., D]   (twin: mx.fast.rms_norm)
    add_rms_norm(x, residual, weight, eps)   -> (h = x + residual, rms_norm(h))

One threadgroup per row (metal/rms_norm.metal, metal/add_rms_norm.metal);
docs/kernels.md has the layout and the bytes moved. The only template
parameters are the dtypes: D, the row count and eps are runtime values.
"""

from __future__ import annotations

import mlx.core as mx

from .grid import ceil_div

N_READS = 4  # elements per thread per sweep (the kernels' N_READS)


def norm_geometry(rows: int, D: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """One threadgroup per row, D / N_READS threads rounded up to whole SIMD groups."""
    per_row = ceil_div(D, N_READS)  # threads to cover the row in one sweep
    tg = min(1024, ceil_div(per_row, 32) * 32)
    return (rows * tg, 1, 1), (tg, 1, 1)


def _check(x: mx.array, weight: mx.array) -> None:
    if weight.ndim != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"rms_norm: weight {weight.shape} does not match x {x.shape}")


def rms_norm(lib, x: mx.array, weight: mx.array, eps: float) -> mx.array:
    _check(x, weight)
    D = x.shape[-1]
    out_dtype = mx.result_type(x, weight)  # as mx.fast.rms_norm
    if x.size == 0:  # no rows (or empty rows): a grid of 0 threads is not a launch
        return mx.zeros(x.shape, out_dtype)
    grid, tg = norm_geometry(x.size // D, D)
    (out,) = lib.kernel("rms_norm", ["x", "w", "eps"], ["out"])(
        inputs=[x, weight, mx.array(eps, dtype=mx.float32)], template=[("T", out_dtype)],
        grid=grid, threadgroup=tg, output_shapes=[x.shape], output_dtypes=[out_dtype],
    )
    return out


def add_rms_norm(lib, x: mx.array, residual: mx.array, weight: mx.array, eps: float) -> tuple[mx.array, mx.array]:
    _check(x, weight)
    if residual.shape != x.shape:
        raise ValueError(f"add_rms_norm: residual {residual.shape} does not match x {x.shape}")
    D = x.shape[-1]
    h_dtype = mx.result_type(x, residual)
    out_dtype = mx.result_type(h_dtype, weight)
    if x.size == 0:
        return mx.zeros(x.shape, h_dtype), mx.zeros(x.shape, out_dtype)
    grid, tg = norm_geometry(x.size // D, D)
    h, out = lib.kernel("add_rms_norm", ["x", "r", "w", "eps"], ["h", "out"])(
        inputs=[x, residual, weight, mx.array(eps, dtype=mx.float32)],
        template=[("TH", h_dtype), ("T", out_dtype)], grid=grid, threadgroup=tg,
        output_shapes=[x.shape, x.shape], output_dtypes=[h_dtype, out_dtype],
    )
    return h, out
