"""Rotary position embedding, alone and fused with Qwen3's QK-norm.

    rope(x, dims, *, traditional, base, scale, offset, freqs=None)      (twin: mx.fast.rope)
        x [B, *, L, D]; rotates the first `dims` features of row l by (offset + l) * scale
    qk_norm_rope(q, k, q_weight, k_weight, eps, dims, *, traditional, base, scale, offset, freqs=None)
        q [B, L, Hq, D], k [B, L, Hkv, D] -> q, k as [B, H, L, D]: per-head RMSNorm
        (when the weights are given), RoPE and the transpose in one launch

The frequencies are computed on the host once per (dims, base) — with the
twin's own formula, so theta is the same float — and passed to the kernels
with the offset as runtime inputs: every position, head_dim and offset runs
the same compiled pipeline. Template parameters: dtype, interleaving, norm.
"""

from __future__ import annotations

from functools import lru_cache

import mlx.core as mx
import numpy as np

from . import kernel

HPT = 4  # heads per thread in rope.metal


@lru_cache(maxsize=64)
def _base_inv_freq(dims: int, base: float) -> mx.array:
    # As the twin: exp(-u * ln(base) / (dims / 2)), u = 0 .. dims/2 - 1, in float32 —
    # ln(base) / half included (MLX computes it in float: std::log of a float base)
    half = dims // 2
    step = np.float32(np.log(np.float32(base))) / np.float32(half)
    inv = mx.exp(mx.arange(0, -half, -1, dtype=mx.float32) * mx.array(step, mx.float32))
    mx.eval(inv)
    return inv


_freq_cache: dict[int, tuple[mx.array, mx.array]] = {}


def inv_freq(dims: int, base: float | None, freqs: mx.array | None) -> mx.array:
    """float32 [dims / 2]: the angle per unit of position for each rotated pair."""
    if (base is None) == (freqs is None):
        raise ValueError("rope: exactly one of base and freqs must be given")
    if freqs is None:
        return _base_inv_freq(dims, float(base))
    if freqs.shape != (dims // 2,):
        raise ValueError(f"rope: freqs must have shape ({dims // 2},), not {freqs.shape}")
    # freqs are periods; the model holds one array for its lifetime, so cache by identity
    hit = _freq_cache.get(id(freqs))
    if hit is None or hit[0] is not freqs:
        hit = (freqs, mx.reciprocal(freqs.astype(mx.float32)))
        mx.eval(hit[1])
        _freq_cache[id(freqs)] = hit
    return hit[1]


def _offsets(offset: int | mx.array, batch: int) -> mx.array:
    """int32 [1] or [B]: the position of each batch row's first token."""
    off = mx.array(offset, dtype=mx.int32) if not isinstance(offset, mx.array) else offset.astype(mx.int32)
    off = off.reshape(-1)
    if off.size not in (1, batch):
        raise ValueError(f"rope: offset must be a scalar or have {batch} elements, not {off.shape}")
    return off


def _check_dims(dims: int, D: int) -> None:
    if dims <= 0 or dims % 2 or dims > D or D % 2:
        raise ValueError(f"rope: dims must be even and at most the (even) last axis {D}, not {dims}")


def rope_geometry(B: int, NH: int, L: int, D: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """One thread per (pair, position, batch x HPT heads)."""
    return (D // 2, L, B * -(-NH // HPT)), (32, 8, 1)


def rope(x: mx.array, dims: int, *, traditional: bool, base: float | None, scale: float,
         offset: int | mx.array, freqs: mx.array | None = None) -> mx.array:
    if x.ndim < 3:
        raise ValueError(f"rope: x must have at least 3 dimensions, not {x.shape}")
    B, L, D = x.shape[0], x.shape[-2], x.shape[-1]
    _check_dims(dims, D)
    NH = x.size // (B * L * D) if x.size else 0
    grid, tg = rope_geometry(B, NH, L, D)
    (out,) = kernel("rope", ["x", "inv_freq", "offset", "scale", "n_heads"], ["out"])(
        inputs=[x, inv_freq(dims, base, freqs), _offsets(offset, B),
                mx.array(scale, dtype=mx.float32), mx.array(NH, dtype=mx.int32)],
        template=[("T", x.dtype), ("TRADITIONAL", traditional)],
        grid=grid, threadgroup=tg, output_shapes=[x.shape], output_dtypes=[x.dtype],
    )
    return out


def qk_geometry(B: int, L: int, Hq: int, Hkv: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """One SIMD group per row of q or k; four rows per threadgroup."""
    return (32, B * L * (Hq + Hkv), 1), (32, 4, 1)


def qk_norm_rope(q: mx.array, k: mx.array, q_weight: mx.array | None, k_weight: mx.array | None,
                 eps: float, dims: int, *, traditional: bool, base: float | None, scale: float,
                 offset: int | mx.array, freqs: mx.array | None = None) -> tuple[mx.array, mx.array]:
    B, L, Hq, D = q.shape
    Hkv = k.shape[2]
    if k.shape != (B, L, Hkv, D):
        raise ValueError(f"qk_norm_rope: q {q.shape} and k {k.shape} do not match")
    _check_dims(dims, D)
    norm = q_weight is not None
    if norm != (k_weight is not None):
        raise ValueError("qk_norm_rope: give both norm weights or neither")
    if norm:
        dtype = mx.result_type(q, q_weight, k_weight)  # as rms_norm's output
        q_w, k_w = mx.contiguous(q_weight), mx.contiguous(k_weight)
    else:
        dtype = mx.result_type(q, k)
        q_w = k_w = mx.zeros((1,), dtype)  # unread placeholders
    q, k = q.astype(mx.result_type(q, k)), k.astype(mx.result_type(q, k))
    grid, tg = qk_geometry(B, L, Hq, Hkv)
    q_out, k_out = kernel(
        "qk_norm_rope", ["q", "k", "q_w", "k_w", "eps", "inv_freq", "offset", "scale"], ["q_out", "k_out"],
        row_contiguous=False,  # q and k are read through their strides (slices of a fused qkv)
    )(
        inputs=[q, k, q_w, k_w, mx.array(eps, dtype=mx.float32), inv_freq(dims, base, freqs),
                _offsets(offset, B), mx.array(scale, dtype=mx.float32)],
        template=[("T", dtype), ("TRADITIONAL", traditional), ("NORM", norm)],
        grid=grid, threadgroup=tg, output_shapes=[(B, Hq, L, D), (B, Hkv, L, D)],
        output_dtypes=[dtype, dtype],
    )
    return q_out, k_out
