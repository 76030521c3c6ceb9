"""Scaled dot-product attention: a decode kernel (also for short queries) and a prefill kernel.

    attention(q, k, v, *, scale, mask, window=None)
                                           (twin: MLXBackend.attention, mx.fast.scaled_dot_product_attention)
        q [B, Hq, L, D], k/v [B, Hkv, S, D], Hq % Hkv == 0; mask None or "causal"
        (the queries are the last L of the S keys); window W: the query at
        position p among the keys sees only (p - W, p], causal -> [B, Hq, L, D]

One query token (decoding) goes to attention_decode: grouped-query heads
share each K/V read, and long contexts are split across threadgroups and
merged by a second, tiny pass (attention_decode_combine). So do up to
SHORT_QUERY tokens (a short prompt after a long context: each query row is
one more threadgroup, with its own causal limit), which in the prefill
kernel would fill 1/4 of a 32-row tile and get no key splits. More tokens
(prefill) go to attention_prefill: 32-query tiles, simdgroup-matrix scores,
online softmax. K and V are read in place through their strides — the KV
cache hands over a slice of a bigger buffer, and copying it to make it
contiguous would cost as much as the attention itself.

A sliding window (Mistral, Gemma 3's local layers) is a runtime input of
both kernels, not an array mask: the keys before the first query's band are
sliced off (a view: the kernels read through strides), so decode splits and
prefill tiles are sized by the window, and each kernel hides the keys
outside a row's own band (the prefill kernel skips whole key tiles outside
its 32 rows' bands). The model keeps building an array mask only for batched
rows, whose queries sit at different positions (model/transformer.py).

Array masks, head_dims over 256 and, for prefill (more than SHORT_QUERY
rows), head_dims that are not a multiple of 8 or above 128 go to MLX's op
(no model here needs the first two; MLX itself routes the last elsewhere). Template
parameters: output dtype, head_dim, heads per threadgroup (decode), causal
(prefill); S, L, offsets, the window and the split size are runtime values.
"""

from __future__ import annotations

import mlx.core as mx

from ..model.backends import MLXBackend
from ..model.window import window_keys
from .grid import ceil_div

MAX_D = 256
DECODE_TG = 128  # threads per decode threadgroup (4 SIMD groups)
PREFILL_TG = 128  # threads per prefill threadgroup (4 SIMD groups)
BQ = 32  # query rows per prefill threadgroup
SPLIT_FROM = 512  # keys from which decode splits them (and runs the combine pass)
MIN_KEYS_PER_SPLIT = 128  # 32 keys per SIMD group: below this a split's fixed costs outweigh its keys
TARGET_THREADGROUPS = 128  # = 512 SIMD groups: enough to fill the largest Apple GPUs (40 cores)
SHORT_QUERY = 8  # query rows up to which the decode kernel serves a call
MAX_PREFILL_D = 128  # larger head_dims would spill the prefill kernel's registers: MLX's op serves them


def heads_per_group(Hq: int, Hkv: int) -> int:
    """Query heads one decode threadgroup serves: the largest divisor of Hq / Hkv up to 8."""
    gqa = Hq // Hkv
    return max(g for g in range(1, min(gqa, 8) + 1) if gqa % g == 0)


def decode_splits(B: int, Hkv: int, S: int, keys_per_split: int | None = None) -> tuple[int, int]:
    """(splits, keys per split): about TARGET_THREADGROUPS threadgroups, none empty."""
    if keys_per_split is None:
        want = max(1, ceil_div(TARGET_THREADGROUPS, B * Hkv))
        splits = max(1, min(want, S // MIN_KEYS_PER_SPLIT))
        keys_per_split = ceil_div(S, splits)
    return ceil_div(S, keys_per_split), keys_per_split


def decode_plan(B: int, Hq: int, Hkv: int, S: int, keys_per_split: int | None = None) -> tuple[int, int, int]:
    """(G query heads per threadgroup, splits, keys per split) for one decode step.

    Short contexts (S < SPLIT_FROM): one launch, no combine pass, and a
    threadgroup per query head (G = 1: B * Hq threadgroups, as MLX's
    sdpa_vector) instead of per KV head — 2x (Qwen3-0.6B) to 4x (8B) the
    threadgroups; the K/V rows the heads of a group share (at most a few MB
    per layer) are re-read from cache. Long contexts: the G heads of a group
    share every K/V read (the bandwidth is the cost there) and the keys are
    split for occupancy (decode_splits), then combined. An explicit
    keys_per_split (tests) keeps the grouped layout and splits by it.
    """
    G = heads_per_group(Hq, Hkv)
    if keys_per_split is None and S < SPLIT_FROM:
        return 1, 1, S
    splits, chunk = decode_splits(B, Hkv, S, keys_per_split)
    return G, splits, chunk


def decode_geometry(B: int, Hq: int, G: int, splits: int, L: int = 1):
    return (DECODE_TG, splits, B * Hq // G * L), (DECODE_TG, 1, 1)


def combine_geometry(B: int, Hq: int, D: int, L: int = 1):
    return (D, B * Hq * L, 1), (min(D, 256), 1, 1)


def prefill_geometry(B: int, Hq: int, L: int):
    return (ceil_div(L, BQ) * PREFILL_TG, Hq, B), (PREFILL_TG, 1, 1)


def attention_decode(lib, q: mx.array, k: mx.array, v: mx.array, *, scale: float,
                     keys_per_split: int | None = None, causal: bool = False, window: int = 0) -> mx.array:
    """q [B, Hq, L, D] (L <= SHORT_QUERY) against k/v [B, Hkv, S, D] -> [B, Hq, L, D].

    causal: query l sees keys 0 .. S - L + l (the queries are the last L keys);
    with L = 1 that is every key either way. window > 0: and none before S - L + l - window + 1.
    """
    B, Hq, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G, splits, chunk = decode_plan(B * L, Hq, Hkv, S, keys_per_split)  # a query row is one more "sequence"
    dtype = q.dtype
    grid, tg = decode_geometry(B, Hq, G, splits, L)
    inputs = [q, k, v, mx.array(scale, dtype=mx.float32), mx.array(chunk, dtype=mx.int32),
              mx.array(int(causal), dtype=mx.int32), mx.array(window, dtype=mx.int32)]
    decode = lib.kernel("attention_decode", ["q", "k", "v", "scale", "chunk", "causal", "window"],
                        ["out", "ml"], row_contiguous=False)
    if splits == 1:
        out, _ = decode(inputs=inputs, template=[("O", dtype), ("D", D), ("G", G)], grid=grid,
                        threadgroup=tg, output_shapes=[(B, Hq, L, D), (1,)],
                        output_dtypes=[dtype, mx.float32])
        return out
    o_part, ml = decode(inputs=inputs, template=[("O", mx.float32), ("D", D), ("G", G)], grid=grid,
                        threadgroup=tg, output_shapes=[(B, Hq * L, splits, D), (B, Hq * L, splits, 2)],
                        output_dtypes=[mx.float32, mx.float32])
    grid, tg = combine_geometry(B, Hq, D, L)
    (out,) = lib.kernel("attention_decode_combine", ["o_part", "ml"], ["out"])(
        inputs=[o_part, ml], template=[("O", dtype)], grid=grid, threadgroup=tg,
        output_shapes=[(B, Hq, L, D)], output_dtypes=[dtype],
    )
    return out


def attention_prefill(lib, q: mx.array, k: mx.array, v: mx.array, *, scale: float, causal: bool,
                      window: int = 0) -> mx.array:
    """q [B, Hq, L, D] against k/v [B, Hkv, S, D] -> [B, Hq, L, D] (a view of [B, L, Hq, D]).

    window > 0: query l (at position p = S - L + l) sees only keys p - window + 1 .. p.
    """
    B, Hq, L, D = q.shape
    grid, tg = prefill_geometry(B, Hq, L)
    (out,) = lib.kernel("attention_prefill", ["q", "k", "v", "scale", "window"], ["out"], row_contiguous=False)(
        inputs=[q, k, v, mx.array(scale, dtype=mx.float32), mx.array(window, dtype=mx.int32)],
        template=[("O", q.dtype), ("D", D), ("CAUSAL", causal)], grid=grid, threadgroup=tg,
        output_shapes=[(B, L, Hq, D)], output_dtypes=[q.dtype],
    )
    return out.transpose(0, 2, 1, 3)


def attention(lib, q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask: str | mx.array | None,
              window: int | None = None) -> mx.array:
    B, Hq, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if k.shape != (B, Hkv, S, D) or v.shape != k.shape or Hkv == 0 or Hq % Hkv or L > S or (S == 0 and L):
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit together")
    if window is not None and window < 1:
        raise ValueError(f"attention: a window must be at least 1 key, not {window}")
    if q.size == 0:  # no queries (L = 0, B = 0 or no heads): nothing to launch
        return mx.zeros(q.shape, mx.result_type(q, k, v))
    if (mask is not None and mask != "causal" or D > MAX_D or S * Hkv * D >= 2**31  # 32-bit offsets
            or (L > SHORT_QUERY and (D % 8 or D > MAX_PREFILL_D))):
        # what the kernels don't cover (the twin builds the window into an array mask)
        return MLXBackend().attention(q, k, v, scale=scale, mask=mask, window=window)
    dtype = mx.result_type(q, k, v)
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    causal = mask == "causal" or window is not None  # a window is causal (window.py)
    if window is not None:
        # No query sees a key before the first one's band: slice them off (a view), so
        # the decode splits and prefill tiles cover the window, not the context
        k, v = window_keys(k, v, L, window)
    if L <= SHORT_QUERY:  # decoding (one token sees every key, causal or not), or a short prompt
        return attention_decode(lib, q, k, v, scale=scale, causal=causal, window=window or 0)
    return attention_prefill(lib, q, k, v, scale=scale, causal=causal, window=window or 0)
