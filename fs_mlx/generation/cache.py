"""The KV cache: keys and values of every token seen so far, per layer.

Decoding one token needs the keys and values of all previous tokens. Rather
than recompute them (O(n^2) work for n tokens) we keep them. The buffers grow
in steps of `STEP` tokens so that appending a token is a slice assignment,
not a concatenation that copies the whole cache every step.
"""

from __future__ import annotations

import mlx.core as mx

STEP = 256  # tokens added per growth: big enough to grow rarely, small enough to waste little


class KVCache:
    def __init__(self) -> None:
        self.keys: mx.array | None = None  # [B, Hkv, capacity, D]
        self.values: mx.array | None = None  # [B, Hkv, capacity, D]
        self.offset = 0  # tokens stored; also the RoPE position of the next token

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Append k, v [B, Hkv, L, D]; return all keys/values so far [B, Hkv, offset+L, D]."""
        L = k.shape[2]
        start, end = self.offset, self.offset + L
        if self.keys is None or end > self.keys.shape[2]:
            self._grow(k, v, end)
        self.keys[..., start:end, :] = k
        self.values[..., start:end, :] = v
        self.offset = end
        return self.keys[..., :end, :], self.values[..., :end, :]

    def _grow(self, k: mx.array, v: mx.array, needed: int) -> None:
        B, H, _, D = k.shape
        capacity = ((needed + STEP - 1) // STEP) * STEP
        new_k = mx.zeros((B, H, capacity, D), k.dtype)
        new_v = mx.zeros((B, H, capacity, D), v.dtype)
        if self.keys is not None and self.offset:
            new_k[..., : self.offset, :] = self.keys[..., : self.offset, :]
            new_v[..., : self.offset, :] = self.values[..., : self.offset, :]
        self.keys, self.values = new_k, new_v

    def trim(self, n: int) -> int:
        """Forget the last n tokens (kept buffers are overwritten later)."""
        n = min(n, self.offset)
        self.offset -= n
        return n

    @property
    def state(self) -> list[mx.array]:
        """The arrays to evaluate so the cache holds no pending graph."""
        return [] if self.keys is None else [self.keys, self.values]


def make_cache(model) -> list[KVCache]:
    return [KVCache() for _ in model.layers]

