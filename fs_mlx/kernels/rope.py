"""Qwen3's QK-norm and RoPE for q and k, one launch (twin: backends.MLXBackend.qk_norm_rope).

    qk_norm_rope(q, k, q_weight, k_weight, eps, rope, offset)
        q [B, L, Hq, D], k [B, L, Hkv, D] -> q, k as [B, H, L, D]: per-head RMSNorm
        (when the weights are given), RoPE and the transpose in one launch

The frequencies come from the model's `Rope` (fs_mlx/model/rope.py), computed
once on the host with MLX's own formula, so theta is the same float as the
twin's; they, the offset and YaRN's/LongRoPE's attention factor (rope.mscale,
1.0 for the others) are runtime inputs: every position, head_dim, offset and
scaling runs the same compiled pipeline. Template parameters: dtype,
interleaving, norm.
"""

from __future__ import annotations

import mlx.core as mx

from ..model.rope import Rope


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


def qk_geometry(B: int, L: int, Hq: int, Hkv: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """One SIMD group per row of q or k; four rows per threadgroup."""
    return (32, B * L * (Hq + Hkv), 1), (32, 4, 1)


def qk_norm_rope(lib, q: mx.array, k: mx.array, q_weight: mx.array | None, k_weight: mx.array | None,
                 eps: float, rope: Rope, offset: int | mx.array) -> tuple[mx.array, mx.array]:
    B, L, Hq, D = q.shape
    Hkv = k.shape[2]
    if k.shape != (B, L, Hkv, D):
        raise ValueError(f"qk_norm_rope: q {q.shape} and k {k.shape} do not match")
    _check_dims(rope.dims, D)
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
    if q.size == 0 or k.size == 0:  # no tokens or no heads: nothing to launch
        return mx.zeros((B, Hq, L, D), dtype), mx.zeros((B, Hkv, L, D), dtype)
    grid, tg = qk_geometry(B, L, Hq, Hkv)
    q_out, k_out = lib.kernel(
        "qk_norm_rope", ["q", "k", "q_w", "k_w", "eps", "inv_freq", "offset", "scale", "mscale"],
        ["q_out", "k_out"],
        row_contiguous=False,  # q and k are read through their strides (slices of a fused qkv)
    )(
        # (with row_contiguous=False every input comes as it is: the kernel reads
        # q and k through their strides, inv_freq and offset as plain arrays)
        inputs=[q, k, q_w, k_w, mx.array(eps, dtype=mx.float32), mx.contiguous(rope.inv_freq),
                mx.contiguous(_offsets(offset, B)), mx.array(rope.scale, dtype=mx.float32),
                mx.array(rope.mscale, dtype=mx.float32)],
        template=[("T", dtype), ("TRADITIONAL", rope.traditional), ("NORM", norm)],
        grid=grid, threadgroup=tg, output_shapes=[(B, Hq, L, D), (B, Hkv, L, D)],
        output_dtypes=[dtype, dtype],
    )
    return q_out, k_out
