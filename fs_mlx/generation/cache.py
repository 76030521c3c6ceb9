"""The KV cache: keys and values of every token seen so far, per layer.

Decoding one token needs the keys and values of all previous tokens. Rather
than recompute them (O(n^2) work for n tokens) we keep them. The buffers grow
in steps of `STEP` tokens so that appending a token is a slice assignment,
not a concatenation that copies the whole cache every step.

Two kinds, one interface for the model (`offset`, `make_mask(L)`,
`update_and_fetch(k, v)`):
  KVCache       one sequence (or B sequences of equal length): `offset` is an int
  BatchKVCache  B sequences of different lengths, decoded together by the server's
                scheduler (generation/batch.py): `offset` is an int32 array [B]
"""

from __future__ import annotations

import mlx.core as mx

STEP = 256  # tokens added per growth: big enough to grow rarely, small enough to waste little


class KVCache:
    def __init__(self) -> None:
        self.keys: mx.array | None = None  # [B, Hkv, capacity, D]
        self.values: mx.array | None = None  # [B, Hkv, capacity, D]
        self.offset = 0  # tokens stored; also the RoPE position of the next token

    def make_mask(self, L: int) -> str | None:
        """The attention mask for L new tokens: causal within them, every cached key visible.
        One query token needs no mask at all."""
        return "causal" if L > 1 else None

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


def _round_up(n: int) -> int:
    return ((n + STEP - 1) // STEP) * STEP


class BatchKVCache:
    """One layer's keys and values for B sequences of different lengths.

    Row b holds sequence b's tokens at positions 0 .. lengths[b]-1; the rest of
    the row is padding on the right, zeros or stale keys that `make_mask` hides.
    Each step appends L tokens to every row, each row at its own position, so a
    sequence joining or leaving never moves the others' keys.

        keys, values  [B, Hkv, capacity, D]
        lengths       B ints: tokens stored per row; also each row's next RoPE position
    """

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.lengths: list[int] = []

    @property
    def offset(self) -> mx.array:
        """int32 [B]: the position of each row's next token (RoPE takes one offset per row)."""
        return mx.array(self.lengths, dtype=mx.int32)

    def make_mask(self, L: int) -> mx.array:
        """bool [B, 1, L, S], S = max(lengths) + L: query l of row b (at position
        lengths[b] + l) sees key j iff j <= lengths[b] + l. This hides both the
        future and row b's padding."""
        S = max(self.lengths) + L
        query_pos = self.offset[:, None] + mx.arange(L)[None, :]  # [B, L]
        return (mx.arange(S)[None, None, :] <= query_pos[:, :, None])[:, None]  # [B, 1, L, S]

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Append k, v [B, Hkv, L, D] at each row's own position; return [B, Hkv, S, D]."""
        B, H, L, D = k.shape
        end = max(self.lengths) + L
        if end > self.keys.shape[2]:
            self._resize(_round_up(end))
        positions = self.offset[:, None] + mx.arange(L)[None, :]  # [B, L]
        where = mx.broadcast_to(positions[:, None, :, None], (B, H, L, D))
        self.keys = mx.put_along_axis(self.keys, where, k, axis=2)
        self.values = mx.put_along_axis(self.values, where, v, axis=2)
        self.lengths = [n + L for n in self.lengths]
        return self.keys[..., :end, :], self.values[..., :end, :]

    def add(self, k: mx.array, v: mx.array) -> None:
        """A new row: one sequence's keys/values [1, Hkv, n, D] (from its prefill)."""
        n = k.shape[2]
        if self.keys is None:
            self.keys = mx.zeros((0, k.shape[1], _round_up(n), k.shape[3]), k.dtype)
            self.values = mx.zeros((0, v.shape[1], _round_up(n), v.shape[3]), v.dtype)
        if n > self.keys.shape[2]:
            self._resize(_round_up(n))
        pad = [(0, 0), (0, 0), (0, self.keys.shape[2] - n), (0, 0)]
        self.keys = mx.concatenate([self.keys, mx.pad(k, pad)], axis=0)
        self.values = mx.concatenate([self.values, mx.pad(v, pad)], axis=0)
        self.lengths.append(n)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order (the others' sequences have left)."""
        self.lengths = [self.lengths[r] for r in rows]
        if not rows:
            self.keys = self.values = None
            return
        capacity = _round_up(max(self.lengths))  # shrink what the longest leaver needed
        index = mx.array(rows, dtype=mx.int32)
        self.keys = self.keys[index, :, :capacity, :]
        self.values = self.values[index, :, :capacity, :]

    def row(self, b: int) -> tuple[mx.array, mx.array]:
        """Row b's stored keys and values [1, Hkv, lengths[b], D]."""
        n = self.lengths[b]
        return self.keys[b:b + 1, :, :n, :], self.values[b:b + 1, :, :n, :]

    def _resize(self, capacity: int) -> None:
        pad = [(0, 0), (0, 0), (0, capacity - self.keys.shape[2]), (0, 0)]
        self.keys, self.values = mx.pad(self.keys, pad), mx.pad(self.values, pad)

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


def make_cache(model) -> list[KVCache]:
    """One cache per layer; sliding-window layers keep only their window (window_cache.py)."""
    from .window_cache import WindowKVCache

    return [KVCache() if layer.self_attn.window is None else WindowKVCache(layer.self_attn.window)
            for layer in model.layers]
