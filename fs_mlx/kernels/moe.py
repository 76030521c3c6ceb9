"""Mixture of experts on the kernels: gather_qmv, the chosen experts' quantized matvecs.

    gather_quantized_matmul(x, w, scales, biases, indices, *, group_size, bits)
        x [T, k|1, 1, K], w uint32 [E, N, K * bits / 32], indices [T, k]
        -> [T, k, 1, N]: slot (t, j) is x[t] (or x[t, j]) times expert indices[t, j]
        (the twin: mx.gather_qmm(..., rhs_indices=indices, transpose=True))

Decoding a token through Qwen3-MoE's k of E experts is k small matvecs per
projection. metal/gather_qmv.metal is qmv with the rows of each slot offset to
its expert's block, the expert read on the GPU from the router's output: no
host round trip, one launch per projection. Many slots (prefill) go to MLX's
gather_qmm, which groups the tokens by expert (docs/kernels.md).
"""

from __future__ import annotations

import mlx.core as mx

from .quantized import BITS, GROUP_SIZES, _out_dtype, qmv_geometry

MAX_SLOTS = 64  # token x expert slots up to which gather_qmv runs (decode: a few tokens x k)


def gather_qmv(lib, x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, indices: mx.array, *,
               group_size: int, bits: int) -> mx.array:
    """x [X, K], w [E, N, K*bits/32], indices [M] (M a multiple of X) -> y [M, N]."""
    E, N, words = w.shape
    M, X = indices.shape[0], x.shape[0]
    grid, tg = qmv_geometry(M, N)
    dtype = _out_dtype(x, scales)
    (y,) = lib.kernel("gather_qmv", ["x", "w", "scales", "biases", "indices", "group_size", "n_out", "rep"],
                      ["y"])(
        inputs=[x.astype(dtype), w.reshape(E * N, words), scales.reshape(E * N, -1),
                biases.reshape(E * N, -1), indices.astype(mx.int32), mx.array(group_size, dtype=mx.int32),
                mx.array(N, dtype=mx.int32), mx.array(M // X, dtype=mx.int32)],
        template=[("T", dtype), ("S", scales.dtype), ("BITS", bits)],
        grid=grid, threadgroup=tg, output_shapes=[(M, N)], output_dtypes=[dtype],
    )
    return y


def gather_quantized_matmul(lib, x, w, scales, biases, indices, *, group_size=64, bits=4, fallback=None):
    T, k = indices.shape
    K = x.shape[-1]
    slots = T * k
    if (bits not in BITS or group_size not in GROUP_SIZES or slots == 0 or slots > MAX_SLOTS
            or x.shape[:2] not in ((T, k), (T, 1)) or x.shape[2] != 1):
        return fallback(x, w, scales, biases, indices, group_size=group_size, bits=bits)
    y = gather_qmv(lib, x.reshape(-1, K), w, scales, biases, indices.reshape(-1),
                   group_size=group_size, bits=bits)  # [T*k, N]
    return y.reshape(T, k, 1, w.shape[1])
