"""Affine-quantized matmuls: qmv (decode), qmm (prefill), qmv_swiglu (fused MLP).

    quantized_matmul(x, w, scales, biases, transpose=True, group_size=64, bits=4)
        x [..., K] @ dequant(w).T -> [..., N]      (the twin: mx.quantized_matmul)
    quantized_swiglu(x, w, scales, biases, group_size=64, bits=4)
        w = [gate; up] ([2N, K]): silu(x @ gate.T) * (x @ up.T) -> [..., N]

The formats are MLX's (fs_mlx/formats/quantize.py): w uint32 [N, K * bits / 32]
packed low bits first, scales/biases [N, K / group_size]. A few rows of x
(decoding: one per sequence; fewer than qmv_row_limit) go to qmv, which
streams the matrix once per row (one row: exactly once); more rows go to qmm,
which stages tiles in threadgroup memory and reads the matrix once per 32 rows.
docs/kernels.md has the thread layouts and the bytes each one moves.

Template parameters are only what shapes the code — the dtypes and the bit
width; the group size and every size are runtime values, so a checkpoint
compiles at most a handful of pipelines and tests do not recompile per shape.
"""

from __future__ import annotations

import mlx.core as mx

from .grid import ceil_div

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)

_IN = ["x", "w", "scales", "biases", "group_size"]


# --- which kernel, and its dispatch geometry ----------------------------------------

def qmv_row_limit(K: int, N: int) -> int:
    """Rows of x from which qmm takes over: below, qmv (one threadgroup row per x row).

    qmv reads w once per row of x, qmm once per 32 rows but with tile
    overheads; for a few rows (batched decode, a short prompt) qmv's re-reads
    come from cache and it is the faster one. The limits are MLX's own
    (`get_qmv_batch_limit`, mlx/backend/metal/quantized.cpp) for the M1/M2
    GPU families: larger matrices fall out of cache sooner.
    """
    if K <= 2048 and N <= 2048:
        return 14
    if K <= 4096 and N <= 4096:
        return 10
    return 6


def uses_qmv(M: int, K: int, N: int) -> bool:
    return M < qmv_row_limit(K, N)


# --- dispatch geometry -----------------------------------------------------------
# MLX dispatches *threads* (grid counts threads, not threadgroups).

def qmv_geometry(M: int, N: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """2 SIMD groups x 4 rows = 8 output rows per threadgroup; z = the row of x."""
    return (64, ceil_div(N, 8), M), (64, 1, 1)


def qmm_geometry(M: int, N: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """One 32 x 32 tile of y per threadgroup of 4 SIMD groups; y = N tiles, z = M tiles."""
    return (128, ceil_div(N, 32), ceil_div(M, 32)), (128, 1, 1)


# --- launchers ---------------------------------------------------------------------

def _check(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int):
    if bits not in BITS or group_size not in GROUP_SIZES:
        raise ValueError(f"quantized kernels support bits {BITS} and group sizes {GROUP_SIZES}, "
                         f"not bits={bits}, group_size={group_size}")
    K = x.shape[-1]
    N = w.shape[0]
    if (w.dtype != mx.uint32 or w.shape != (N, K * bits // 32) or K % group_size
            or scales.shape != (N, K // group_size) or biases.shape != scales.shape):
        raise ValueError(f"quantized_matmul: x {x.shape}, w {w.dtype} {w.shape}, scales "
                         f"{scales.shape}, biases {biases.shape} do not fit bits={bits}, "
                         f"group_size={group_size}")


def _template(dtype: mx.Dtype, scales: mx.array, bits: int) -> list:
    return [("T", dtype), ("S", scales.dtype), ("BITS", bits)]


def _out_dtype(x: mx.array, scales: mx.array) -> mx.Dtype:
    # As mx.quantized_matmul: the promoted type of x and the scales, which for
    # two different float types among float32/float16/bfloat16 is float32.
    return x.dtype if x.dtype == scales.dtype else mx.float32


def qmv(lib, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *,
        group_size: int, bits: int, swiglu: bool = False) -> mx.array:
    """x [M, K] -> y [M, N] (or [M, N/2] with swiglu), one SIMD group per 4 rows of y."""
    M = x.shape[0]
    N = w.shape[0] // 2 if swiglu else w.shape[0]
    grid, tg = qmv_geometry(M, N)
    (y,) = lib.kernel("qmv", _IN, ["y"])(
        inputs=[x, w, scales, biases, mx.array(group_size, dtype=mx.int32)],
        template=_template(x.dtype, scales, bits) + [("SWIGLU", int(swiglu))],
        grid=grid, threadgroup=tg, output_shapes=[(M, N)], output_dtypes=[x.dtype],
    )
    return y


def qmm(lib, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *,
        group_size: int, bits: int) -> mx.array:
    """x [M, K] -> y [M, N], one 32 x 32 tile of y per threadgroup."""
    M, N = x.shape[0], w.shape[0]
    grid, tg = qmm_geometry(M, N)
    (y,) = lib.kernel("qmm", _IN, ["y"])(
        inputs=[x, w, scales, biases, mx.array(group_size, dtype=mx.int32)],
        template=_template(x.dtype, scales, bits),
        grid=grid, threadgroup=tg, output_shapes=[(M, N)], output_dtypes=[x.dtype],
    )
    return y


# --- the ops -------------------------------------------------------------------------

def quantized_matmul(lib, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *,
                     transpose: bool = True, group_size: int = 64, bits: int = 4) -> mx.array:
    """x [..., K] @ dequant(w).T -> [..., N]; qmv for one row of x, qmm for more."""
    if not transpose:
        # x @ dequant(w) with w [K, N * bits / 32]: no layer of the model does this
        # (Linear weights are stored [out, in]); MLX's own op serves it.
        return mx.quantized_matmul(x, w, scales, biases, transpose=False,
                                   group_size=group_size, bits=bits)
    _check(x, w, scales, biases, group_size, bits)
    *lead, K = x.shape
    x2 = x.reshape(-1, K).astype(_out_dtype(x, scales))  # [M, K]
    if x2.shape[0] == 0 or w.shape[0] == 0:  # no rows of x, or of w
        return mx.zeros((*lead, w.shape[0]), x2.dtype)
    if uses_qmv(x2.shape[0], K, w.shape[0]):
        y = qmv(lib, x2, w, scales, biases, group_size=group_size, bits=bits)
    else:
        y = qmm(lib, x2, w, scales, biases, group_size=group_size, bits=bits)
    return y.reshape(*lead, w.shape[0])


def quantized_swiglu(lib, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *,
                     group_size: int = 64, bits: int = 4) -> mx.array:
    """silu(x @ gate.T) * (x @ up.T) with w = [gate; up] stored as one quantized matrix."""
    _check(x, w, scales, biases, group_size, bits)
    *lead, K = x.shape
    x2 = x.reshape(-1, K).astype(_out_dtype(x, scales))
    if x2.shape[0] == 0 or w.shape[0] == 0:
        return mx.zeros((*lead, w.shape[0] // 2), x2.dtype)
    if uses_qmv(x2.shape[0], K, w.shape[0] // 2):
        y = qmv(lib, x2, w, scales, biases, group_size=group_size, bits=bits, swiglu=True)
    else:
        # Prefill: the matmul dominates; the SwiGLU is a separate elementwise pass.
        gate, up = mx.split(qmm(lib, x2, w, scales, biases, group_size=group_size, bits=bits), 2, axis=-1)
        y = lib.swiglu(gate, up)
    return y.reshape(*lead, w.shape[0] // 2)
