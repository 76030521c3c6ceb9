"""The math, visible: every op of the forward pass as its formula in plain MLX ops.

No `mx.fast`, no kernels: what a learner would write from the papers, top to
bottom in the order a token meets them. It is slow and it is the truth: the
MLX backend (`mx.fast.*`, `mx.quantized_matmul`) and the Metal kernels are
both tested against these functions, and `load(model, kernels="reference")`
runs a whole model on them (tests/test_reference.py checks it against the
goldens from Hugging Face transformers).

Each function has the same signature as the backend method of the same name
(fs_mlx/model/backends.py). Everything is computed in float32 and rounded to
the input's dtype at the end.
"""

from __future__ import annotations

import math

import mlx.core as mx

from .rope import Rope, positions


def _f32(x: mx.array) -> mx.array:
    return x.astype(mx.float32)


# --- normalisation -----------------------------------------------------------------

def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """x / sqrt(mean(x^2) + eps) * weight, over the last axis.   x [..., D], weight [D]"""
    x32 = _f32(x)
    inv_rms = mx.rsqrt(mx.mean(x32 * x32, axis=-1, keepdims=True) + eps)  # [..., 1]
    return (x32 * inv_rms * _f32(weight)).astype(mx.result_type(x, weight))


def add_rms_norm(x: mx.array, residual: mx.array, weight: mx.array, eps: float):
    """(h, rms_norm(h)) with h = x + residual: a residual add and the norm that reads it."""
    h = x + residual
    return h, rms_norm(h, weight, eps)


# --- rotary position embedding -------------------------------------------------------

def rope(x: mx.array, rope: Rope, offset: int | mx.array) -> mx.array:
    """x [B, H, L, D] -> x with the first rope.dims features of position offset+l rotated."""
    B, H, L, D = x.shape
    half = rope.dims // 2
    theta = positions(offset, L)[..., None] * rope.scale * rope.inv_freq  # [L, half] or [B, L, half]
    if theta.ndim == 3:
        theta = theta[:, None]  # [B, 1, L, half]: per-row offsets
    cos, sin = mx.cos(theta) * rope.mscale, mx.sin(theta) * rope.mscale  # mscale: yarn/longrope
    x32 = _f32(x)
    rot, rest = x32[..., : rope.dims], x32[..., rope.dims:]
    if rope.traditional:  # pairs (2j, 2j+1)
        a, b = rot[..., 0::2], rot[..., 1::2]
        rotated = mx.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(B, H, L, rope.dims)
    else:  # rotate-half: pairs (j, j + dims/2)
        a, b = rot[..., :half], rot[..., half:]
        rotated = mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return mx.concatenate([rotated, rest], axis=-1).astype(x.dtype)


def qk_norm_rope(q, k, q_weight, k_weight, eps: float, rope: Rope, offset):
    """q [B, L, Hq, D], k [B, L, Hkv, D] -> RMSNorm per head (Qwen3; skipped when the
    weights are None), then RoPE, as [B, H, L, D]."""
    if q_weight is not None:
        q, k = rms_norm(q, q_weight, eps), rms_norm(k, k_weight, eps)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    return _rope(q, rope, offset), _rope(k, rope, offset)


_rope = rope  # the name `rope` is taken by the argument above


# --- attention -----------------------------------------------------------------------

def attention(q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask, window: int | None = None) -> mx.array:
    """softmax(q k^T * scale + mask) v with grouped-query heads.

    q [B, Hq, L, D], k/v [B, Hkv, S, D]; query head h reads kv head h // (Hq / Hkv).
    mask: None (every key visible), "causal" (query i sees keys 0 .. S-L+i: the
    queries are the last L positions), or an array broadcastable to
    [B, Hq, L, S] (bool: True = visible; float: added to the scores).
    window: a sliding window of W keys: query i, at position p = S-L+i, sees
    only the keys p-W+1 .. p (causal, whatever the mask says, and on top of it).
    """
    B, Hq, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    groups = Hq // Hkv
    k = mx.repeat(_f32(k), groups, axis=1)  # [B, Hq, S, D]
    v = mx.repeat(_f32(v), groups, axis=1)
    scores = (_f32(q) * scale) @ k.swapaxes(-1, -2)  # [B, Hq, L, S]
    p, s = (S - L + mx.arange(L))[:, None], mx.arange(S)[None, :]  # [L, 1], [1, S]: positions
    if window is not None:
        scores = mx.where((s <= p) & (s > p - window), scores, -mx.inf)
    if isinstance(mask, str):
        assert mask == "causal", mask
        scores = mx.where(s <= p, scores, -mx.inf)
    elif mask is not None:
        scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask
    scores = scores - mx.max(scores, axis=-1, keepdims=True)  # softmax, stably
    p = mx.exp(scores)
    p = p / mx.sum(p, axis=-1, keepdims=True)
    return (p @ v).astype(q.dtype)  # [B, Hq, L, D]


# --- the MLP -------------------------------------------------------------------------

def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up, silu(g) = g / (1 + exp(-g))."""
    g = _f32(gate)
    return (g / (1 + mx.exp(-g)) * _f32(up)).astype(mx.result_type(gate, up))


def geglu(gate: mx.array, up: mx.array) -> mx.array:
    """gelu_tanh(gate) * up, gelu_tanh(g) = g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (Gemma)."""
    g = _f32(gate)
    inner = math.sqrt(2 / math.pi) * (g + 0.044715 * g * g * g)
    return (0.5 * g * (1 + mx.tanh(inner)) * _f32(up)).astype(mx.result_type(gate, up))


# --- projections -----------------------------------------------------------------------

def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """x [..., in] @ weight.T (+ bias), weight [out, in] as checkpoints store it."""
    y = x @ weight.T
    return y if bias is None else y + bias


def dequantize(w: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int) -> mx.array:
    """MLX's affine format back to floats: W[r, c] = scales[r, g] * q[r, c] + biases[r, g], g = c // group.

    w uint32 [out, in * bits / 32]: each word holds 32 / bits values q, low bits first.
    """
    per_word = 32 // bits
    shifts = mx.arange(per_word, dtype=mx.uint32) * bits  # [per_word]
    q = (w[..., None] >> shifts) & ((1 << bits) - 1)  # [out, words, per_word]
    q = q.reshape(w.shape[0], -1).astype(mx.float32)  # [out, in]
    s = mx.repeat(_f32(scales), group_size, axis=-1)  # [out, in]
    b = mx.repeat(_f32(biases), group_size, axis=-1)
    return (s * q + b).astype(scales.dtype)


def quantized_matmul(x, w, scales, biases, *, transpose: bool = True, group_size: int = 64, bits: int = 4):
    """x [..., in] @ dequant(w).T -> [..., out]."""
    W = _f32(dequantize(w, scales, biases, group_size, bits))  # [out, in]
    y = _f32(x) @ (W.T if transpose else W)
    return y.astype(mx.result_type(x, scales))


def quantized_swiglu(x, w, scales, biases, *, group_size: int = 64, bits: int = 4):
    """w = [gate; up] quantized as one matrix: silu(x @ gate.T) * (x @ up.T)."""
    gate, up = mx.split(quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits), 2, axis=-1)
    return swiglu(gate, up)


# --- mixture of experts ----------------------------------------------------------------

def gather_linear(x: mx.array, w: mx.array, indices: mx.array) -> mx.array:
    """Each token through its chosen experts: x [N, k|1, 1, in], w [E, out, in], indices [N, k]
    -> [N, k, 1, out] with out[n, j] = x[n, j or 0] @ w[indices[n, j]].T"""
    chosen = _f32(w[indices])  # [N, k, out, in]: the experts' matrices, gathered
    return (_f32(x) @ chosen.swapaxes(-1, -2)).astype(mx.result_type(x, w))


def gather_quantized_matmul(x, w, scales, biases, indices, *, group_size: int = 64, bits: int = 4):
    """gather_linear with quantized experts: w uint32 [E, out, in * bits / 32], scales/biases [E, out, groups]."""
    E, out = w.shape[0], w.shape[1]
    W = dequantize(w.reshape(E * out, -1), scales.reshape(E * out, -1), biases.reshape(E * out, -1),
                   group_size, bits).reshape(E, out, -1)  # [E, out, in]
    return gather_linear(_f32(x), _f32(W), indices).astype(mx.result_type(x, scales))
