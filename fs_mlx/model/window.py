"""Sliding-window attention: which keys a local layer's query may see.

Mistral, Phi-3 and Gemma 3's local layers attend through a window of W
positions: the query at position i sees the keys at positions i - W + 1 .. i
(transformers' `sliding_window_overlay`: kv > q - W, on top of causal).

    position:   0 1 2 3 4 5 6      W = 3, causal + window
    query 4:        . x x x .      keys 2, 3, 4
    query 6:            . x x x    keys 4, 5, 6

The attention op takes the keys it is given. Whether they are the whole
context (no cache, or a full cache) or only the window's last keys (the
window cache, generation/window_cache.py), the queries are always the *last*
L of the S keys, so one formula covers both:

    key s is visible to query l  iff  S - L + l - W < s <= S - L + l

So no query sees a key before position S - L - W + 1 (the first query's
band): window_keys slices those off before the attention, which then costs
O(L * (L + W)) whatever the context, with or without a window cache.

A batched cache (generation/cache.py: BatchKVCache) is the exception: row b
keeps its keys at their absolute positions 0 .. and its queries start at
its own offset[b], so there key s is visible iff offset[b] + l - W < s.
"""

from __future__ import annotations

import mlx.core as mx


def window_mask(mask, L: int, S: int, window: int, offset=0) -> mx.array:
    """bool [L, S] (or [B, 1, L, S]): causal and within the window; combined with an incoming mask.

    mask: what the model would otherwise use ("causal", None, or an array
    broadcastable to [B, H, L, S]: bool = visible, float = added to the scores).
    offset: an int32 array [B] for a batched cache (each row's first query position,
    keys at absolute positions); otherwise unused.
    """
    if isinstance(offset, mx.array) and offset.ndim == 1:
        q = (offset[:, None] + mx.arange(L)[None, :])[:, None, :, None]  # [B, 1, L, 1]
        s = mx.arange(S)[None, None, None, :]  # [1, 1, 1, S]
    else:
        q = S - L + mx.arange(L)[:, None]  # [L, 1]: each query's index among the keys
        s = mx.arange(S)[None, :]  # [1, S]
    visible = (s <= q) & (s > q - window)  # [L, S] or [B, 1, L, S]
    if mask is None or isinstance(mask, str):  # "causal" is implied by the window mask
        return visible
    if mask.dtype == mx.bool_:
        return mask & visible
    return mx.where(visible, mask, mx.array(-mx.inf, mask.dtype))


def window_keys(k: mx.array, v: mx.array, L: int, window: int) -> tuple[mx.array, mx.array]:
    """k, v [B, Hkv, S, D] -> their last L + window - 1 keys (views): all that the last L queries see."""
    first = max(0, k.shape[2] - L - window + 1)
    return (k, v) if first == 0 else (k[:, :, first:], v[:, :, first:])
