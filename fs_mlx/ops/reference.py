"""The reference twins: every op written with MLX's own primitives.

This is the implementation that runs wherever MLX runs (CPU, CUDA, Metal),
and the one each hand-written Metal kernel is tested against.
"""

from __future__ import annotations

import mlx.core as mx


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    # x: [..., D], weight: [D]
    return mx.fast.rms_norm(x, weight, eps)


def add_rms_norm(
    x: mx.array, residual: mx.array, weight: mx.array, eps: float
) -> tuple[mx.array, mx.array]:
    # The residual add, then the norm of the sum: (h, rms_norm(h)), h = x + residual
    h = x + residual
    return h, rms_norm(h, weight, eps)


def qk_norm_rope(
    q: mx.array,
    k: mx.array,
    q_weight: mx.array | None,
    k_weight: mx.array | None,
    eps: float,
    dims: int,
    *,
    traditional: bool,
    base: float | None,
    scale: float,
    offset: int | mx.array,
    freqs: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    # q: [B, L, Hq, D], k: [B, L, Hkv, D] -> q, k: [B, H, L, D]
    # Qwen3 RMS-normalises each head over head_dim (the weights); Llama passes None.
    if q_weight is not None:
        q, k = rms_norm(q, q_weight, eps), rms_norm(k, k_weight, eps)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    return tuple(
        rope(t, dims, traditional=traditional, base=base, scale=scale, offset=offset, freqs=freqs)
        for t in (q, k)
    )


def rope(
    x: mx.array,
    dims: int,
    *,
    traditional: bool,
    base: float | None,
    scale: float,
    offset: int | mx.array,
    freqs: mx.array | None = None,
) -> mx.array:
    # x: [B, H, L, D]; positions are offset, offset+1, ..., offset+L-1
    return mx.fast.rope(
        x, dims, traditional=traditional, base=base, scale=scale, offset=offset, freqs=freqs
    )


def attention(
    q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask: str | mx.array | None
) -> mx.array:
    # q: [B, Hq, L, D], k/v: [B, Hkv, S, D] with Hq % Hkv == 0 (grouped-query)
    # mask "causal": query i sees keys 0 .. S-L+i (the queries are the last L keys)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    # silu(gate) * up, computed in the input dtype
    return gate * mx.sigmoid(gate) * up


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    # x: [..., in], weight: [out, in] (PyTorch layout) -> [..., out]
    y = x @ weight.T
    return y if bias is None else y + bias


def quantized_matmul(
    x: mx.array,
    w: mx.array,
    scales: mx.array,
    biases: mx.array,
    *,
    transpose: bool = True,
    group_size: int = 64,
    bits: int = 4,
) -> mx.array:
    # x: [..., in], w: uint32 [out, in*bits/32], scales/biases: [out, in/group_size]
    return mx.quantized_matmul(
        x, w, scales, biases, transpose=transpose, group_size=group_size, bits=bits
    )


def quantized_swiglu(
    x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, *, group_size: int = 64, bits: int = 4
) -> mx.array:
    # w = [gate; up]: uint32 [2*inter, in*bits/32] -> silu(x @ gate.T) * (x @ up.T), [..., inter]
    y = quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=bits)
    gate, up = mx.split(y, 2, axis=-1)
    return swiglu(gate, up)
